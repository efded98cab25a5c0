//! Who a proxy talked to, from one scrape: its outbound side per destination workload and how
//! that traffic was secured (`dst_namespace`, `dst_external_workload`, `tls`, `server_id`,
//! `no_tls_reason`), and its inbound side per client identity (`tls`, `client_id`). A
//! destination in a linked cluster (`dst_target_cluster_name`, which Destination sets on the
//! multicluster mirror's endpoints) is the mirror Service (`dst_service`) in that cluster: the
//! remote workload behind a gateway is not known here. Counts only,
//! no histograms: an edge says who and how, `/v1/stat` says how well. `GET /v1/edges` joins the
//! two sides.

use super::stats::Sample;

/// How the proxy labelled the TLS of a request or connection.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tls {
    /// `tls="true"`: mutual TLS, with the peer's identity as the proxy verified it
    /// (`server_id` outbound, `client_id` inbound; empty when the series names none).
    Secured(String),
    /// `tls="no_identity"` (or no `tls` label), with its `no_tls_reason` (possibly empty).
    Plain(String),
    /// `tls="opaque"`: TLS the proxy relayed without terminating it.
    Passthrough,
}

impl Tls {
    /// The TLS of `sample`, whose peer identity is in label `peer_id`.
    fn of(sample: &Sample, peer_id: &str) -> Tls {
        match sample.label("tls") {
            Some("true") => Tls::Secured(sample.label(peer_id).unwrap_or_default().to_string()),
            Some("opaque") => Tls::Passthrough,
            _ => Tls::Plain(
                sample
                    .label("no_tls_reason")
                    .unwrap_or_default()
                    .to_string(),
            ),
        }
    }
}

/// Traffic on one key: two counters and a gauge.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Traffic {
    /// `response_total`: responses (one per attempt).
    pub requests: f64,
    /// `tcp_open_total`: connections opened.
    pub connections: f64,
    /// `tcp_open_connections`: connections open now (not cumulative).
    pub open: f64,
}

impl Traffic {
    /// What happened between `older` and `self`; a counter that went down counts alone (a
    /// restart), the gauge is `self`'s.
    pub fn since(&self, older: &Traffic) -> Traffic {
        let counter = |newer: f64, older: f64| if newer < older { newer } else { newer - older };
        Traffic {
            requests: counter(self.requests, older.requests),
            connections: counter(self.connections, older.connections),
            open: self.open,
        }
    }

    /// [`Traffic::since`] for two scrapes of the same process: a counter that went down lost
    /// expired idle series (see [`Stats::since_same_process`](super::stats::Stats)) and counts 0.
    pub fn since_same_process(&self, older: &Traffic) -> Traffic {
        Traffic {
            requests: (self.requests - older.requests).max(0.0),
            connections: (self.connections - older.connections).max(0.0),
            open: self.open,
        }
    }

    pub fn add(&mut self, other: &Traffic) {
        self.requests += other.requests;
        self.connections += other.connections;
        self.open += other.open;
    }

    /// No request, no connection opened, none open.
    pub fn is_idle(&self) -> bool {
        self.requests <= 0.0 && self.connections <= 0.0 && self.open <= 0.0
    }

    /// A single figure to rank variants of one edge by.
    pub fn weight(&self) -> f64 {
        self.requests + self.connections + self.open
    }
}

/// A destination workload of the outbound side, and the TLS its traffic had.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct EdgeKey {
    /// `dst_namespace`.
    pub namespace: String,
    /// `dst_external_workload`: the workload of the endpoint, as discovery labelled it; for a
    /// destination in a linked cluster, the mirror Service (`dst_service`).
    pub workload: String,
    pub tls: Tls,
    /// `dst_target_cluster_name`: the linked cluster of the destination; `None`: this one.
    pub cluster: Option<Box<str>>,
}

impl EdgeKey {
    /// The destination of an outbound sample: its workload here, or the mirror Service and the
    /// linked cluster it is in; `None` for a sample without one (a call to a bare IP).
    fn of(s: &Sample) -> Option<EdgeKey> {
        let namespace = s.label("dst_namespace")?.to_string();
        let tls = Tls::of(s, "server_id");
        let key = match s.label(DST_CLUSTER_LABEL) {
            Some(cluster) => EdgeKey {
                namespace,
                workload: s
                    .label("dst_service")
                    .or(s.label("dst_external_workload"))?
                    .to_string(),
                tls,
                cluster: Some(cluster.into()),
            },
            None => EdgeKey {
                namespace,
                workload: s.label("dst_external_workload")?.to_string(),
                tls,
                cluster: None,
            },
        };
        Some(key)
    }
}

/// The proxy's name (`dst_`-prefixed) for the `target_cluster_name` label Destination puts on
/// the multicluster mirror's endpoints.
pub const DST_CLUSTER_LABEL: &str = "dst_target_cluster_name";

/// Outbound traffic per destination workload and TLS, sorted by key.
pub type Edges = Vec<(EdgeKey, Traffic)>;
/// Inbound traffic per client TLS (identity), sorted by key.
pub type Clients = Vec<(Tls, Traffic)>;

/// Which field of [`Traffic`] a sample feeds, if any.
fn field(name: &str) -> Option<fn(&mut Traffic) -> &mut f64> {
    Some(match name {
        "response_total" => |t| &mut t.requests,
        "tcp_open_total" => |t| &mut t.connections,
        "tcp_open_connections" => |t| &mut t.open,
        _ => return None,
    })
}

/// Folds a scrape's samples into its edges and its clients. Outbound: requests and the
/// connections the proxy opened (`peer="dst"`) labelled with a destination workload; inbound:
/// requests and the connections clients opened (`peer="src"`), by client identity.
pub fn fold(samples: &[Sample]) -> (Edges, Clients) {
    let mut edges: std::collections::BTreeMap<EdgeKey, Traffic> = Default::default();
    let mut clients: std::collections::BTreeMap<Tls, Traffic> = Default::default();
    for s in samples {
        let Some(field) = field(&s.name) else {
            continue;
        };
        let tcp = s.name != "response_total";
        match s.label("direction") {
            Some("outbound") => {
                if tcp && s.label("peer") != Some("dst") {
                    continue;
                }
                let Some(key) = EdgeKey::of(s) else {
                    continue;
                };
                *field(edges.entry(key).or_default()) += s.value;
            }
            Some("inbound") => {
                if tcp && s.label("peer") != Some("src") {
                    continue;
                }
                *field(clients.entry(Tls::of(s, "client_id")).or_default()) += s.value;
            }
            _ => {}
        }
    }
    (edges.into_iter().collect(), clients.into_iter().collect())
}

/// `newer` minus `older` key by key (both sorted by key); a key only in `newer` counts whole.
pub(crate) fn since_by_key<K: Ord + Clone, V: Default>(
    newer: &[(K, V)],
    older: &[(K, V)],
    since: impl Fn(&V, &V) -> V,
) -> Vec<(K, V)> {
    let none = V::default();
    newer
        .iter()
        .map(|(k, v)| {
            let before = older
                .binary_search_by(|(o, _)| o.cmp(k))
                .map_or(&none, |i| &older[i].1);
            (k.clone(), since(v, before))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::stats::parse;

    /// Web's proxy: mTLS to books (requests and a pooled connection), plaintext to legacy,
    /// called by traffic over mTLS and by a plaintext client.
    const TEXT: &str = r#"
response_total{direction="outbound",authority="books.demo.svc.cluster.local:9090",target_addr="127.0.0.1:41001",tls="true",server_id="books.demo.serviceaccount.identity.weft.cluster.local",dst_namespace="demo",dst_service="books",dst_external_workload="books",status_code="200",classification="success"} 7
response_total{direction="outbound",authority="books.demo.svc.cluster.local:9090",target_addr="127.0.0.1:41001",tls="true",server_id="books.demo.serviceaccount.identity.weft.cluster.local",dst_namespace="demo",dst_service="books",dst_external_workload="books",status_code="503",classification="failure"} 1
response_total{direction="outbound",authority="legacy.demo.svc.cluster.local:80",target_addr="198.18.0.12:80",tls="no_identity",no_tls_reason="not_provided_by_service_discovery",dst_namespace="demo",dst_service="legacy",dst_external_workload="legacy",status_code="200",classification="success"} 3
response_total{direction="outbound",authority="198.51.100.7:80",target_addr="198.51.100.7:80",tls="no_identity",no_tls_reason="not_provided_by_service_discovery",status_code="200",classification="success"} 4
tcp_open_total{direction="outbound",target_addr="127.0.0.1:41001",tls="true",server_id="books.demo.serviceaccount.identity.weft.cluster.local",dst_namespace="demo",dst_service="books",dst_external_workload="books",peer="dst"} 1
tcp_open_connections{direction="outbound",target_addr="127.0.0.1:41001",tls="true",server_id="books.demo.serviceaccount.identity.weft.cluster.local",dst_namespace="demo",dst_service="books",dst_external_workload="books",peer="dst"} 1
tcp_open_total{direction="outbound",target_addr="127.0.0.1:4140",tls="no_identity",no_tls_reason="loopback",peer="src"} 9
response_total{direction="inbound",authority="web.demo.svc.cluster.local:8080",target_addr="127.0.0.1:8080",tls="true",client_id="traffic.demo.serviceaccount.identity.weft.cluster.local",status_code="200",classification="success"} 20
response_total{direction="inbound",authority="web.demo.svc.cluster.local:8080",target_addr="127.0.0.1:8080",tls="no_identity",no_tls_reason="no_tls_from_remote",status_code="200",classification="success"} 2
tcp_open_total{direction="inbound",target_addr="127.0.0.1:8080",tls="true",client_id="traffic.demo.serviceaccount.identity.weft.cluster.local",peer="src"} 2
tcp_open_total{direction="inbound",target_addr="127.0.0.1:8080",tls="true",client_id="traffic.demo.serviceaccount.identity.weft.cluster.local",peer="dst"} 5
"#;

    #[test]
    fn outbound_by_destination_workload_inbound_by_client_identity() {
        let (edges, clients) = fold(&parse(TEXT));
        let books = EdgeKey {
            namespace: "demo".into(),
            workload: "books".into(),
            tls: Tls::Secured("books.demo.serviceaccount.identity.weft.cluster.local".into()),
            cluster: None,
        };
        let legacy = EdgeKey {
            namespace: "demo".into(),
            workload: "legacy".into(),
            tls: Tls::Plain("not_provided_by_service_discovery".into()),
            cluster: None,
        };
        // The bare IP has no destination workload; the app's connection (peer="src") is not an
        // edge.
        assert_eq!(
            edges,
            [
                (
                    books,
                    Traffic {
                        requests: 8.0,
                        connections: 1.0,
                        open: 1.0
                    }
                ),
                (
                    legacy,
                    Traffic {
                        requests: 3.0,
                        ..Traffic::default()
                    }
                ),
            ]
        );
        // Clients: the proxy's own connections to the app (peer="dst") are not clients.
        assert_eq!(
            clients,
            [
                (
                    Tls::Secured("traffic.demo.serviceaccount.identity.weft.cluster.local".into()),
                    Traffic {
                        requests: 20.0,
                        connections: 2.0,
                        open: 0.0
                    }
                ),
                (
                    Tls::Plain("no_tls_from_remote".into()),
                    Traffic {
                        requests: 2.0,
                        ..Traffic::default()
                    }
                ),
            ]
        );
    }

    /// East's frontend proxy: web-west through west's gateway, api-west to west's pod directly
    /// (remote discovery), db-federated to the local member and to west's.
    const EAST: &str = r#"
response_total{direction="outbound",authority="web-west.default.svc.cluster.local:80",target_addr="10.1.0.1:4143",tls="true",server_id="gateway.weft-multicluster.serviceaccount.identity.weft.cluster.local",dst_namespace="default",dst_service="web-west",dst_external_workload="west-gateway",dst_target_cluster_name="west",status_code="200",classification="success"} 5
tcp_open_total{direction="outbound",target_addr="10.1.0.1:4143",tls="true",server_id="gateway.weft-multicluster.serviceaccount.identity.weft.cluster.local",dst_namespace="default",dst_service="web-west",dst_external_workload="west-gateway",dst_target_cluster_name="west",peer="dst"} 1
response_total{direction="outbound",authority="api-west.default.svc.cluster.local:80",target_addr="10.1.0.21:8080",tls="true",server_id="api-1.default.serviceaccount.identity.weft.cluster.local",dst_namespace="default",dst_service="api-west",dst_external_workload="api-west-west-api-1",dst_target_cluster_name="west",status_code="200",classification="success"} 3
response_total{direction="outbound",authority="db-federated.default.svc.cluster.local:5432",target_addr="10.2.0.31:5432",tls="true",server_id="db-east.default.serviceaccount.identity.weft.cluster.local",dst_namespace="default",dst_service="db-federated",dst_external_workload="db-east",status_code="200",classification="success"} 2
response_total{direction="outbound",authority="db-federated.default.svc.cluster.local:5432",target_addr="10.1.0.31:5432",tls="true",server_id="db-1.default.serviceaccount.identity.weft.cluster.local",dst_namespace="default",dst_service="db-federated",dst_external_workload="db-federated-west-db-1",dst_target_cluster_name="west",status_code="200",classification="success"} 4
"#;

    #[test]
    fn a_destination_in_a_linked_cluster_is_its_mirror_service_there() {
        let (edges, _) = fold(&parse(EAST));
        let id =
            |sa: &str, ns: &str| format!("{sa}.{ns}.serviceaccount.identity.weft.cluster.local");
        let key = |workload: &str, server: String, cluster: Option<&str>| EdgeKey {
            namespace: "default".into(),
            workload: workload.into(),
            tls: Tls::Secured(server),
            cluster: cluster.map(Into::into),
        };
        let requests = |r: f64, c: f64| Traffic {
            requests: r,
            connections: c,
            open: 0.0,
        };
        assert_eq!(
            edges,
            [
                (
                    key("api-west", id("api-1", "default"), Some("west")),
                    requests(3.0, 0.0)
                ),
                (
                    key("db-east", id("db-east", "default"), None),
                    requests(2.0, 0.0)
                ),
                (
                    key("db-federated", id("db-1", "default"), Some("west")),
                    requests(4.0, 0.0)
                ),
                (
                    key("web-west", id("gateway", "weft-multicluster"), Some("west")),
                    requests(5.0, 1.0)
                ),
            ]
        );
    }

    #[test]
    fn since_by_key_subtracts_and_counts_new_keys_whole() {
        let t = |requests| Traffic {
            requests,
            connections: 1.0,
            open: 2.0,
        };
        let older = vec![("a", t(10.0)), ("b", t(5.0))];
        let newer = vec![("a", t(15.0)), ("c", t(4.0))];
        let d = since_by_key(&newer, &older, Traffic::since);
        assert_eq!(
            d,
            [
                (
                    "a",
                    Traffic {
                        requests: 5.0,
                        connections: 0.0,
                        open: 2.0
                    }
                ),
                ("c", t(4.0))
            ]
        );
        // A counter that went down: a restart, the newer value alone.
        assert_eq!(t(3.0).since(&t(10.0)).requests, 3.0);
    }
}
