//! Who a proxy talked to, from one scrape: its outbound side per destination workload and how
//! that traffic was secured (`dst_namespace`, `dst_external_workload`, `tls`, `server_id`,
//! `no_tls_reason`), and its inbound side per client identity (`tls`, `client_id`). Counts only,
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
    /// `dst_external_workload`: the workload of the endpoint, as discovery labelled it.
    pub workload: String,
    pub tls: Tls,
}

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
                let (Some(namespace), Some(workload)) =
                    (s.label("dst_namespace"), s.label("dst_external_workload"))
                else {
                    continue;
                };
                let key = EdgeKey {
                    namespace: namespace.to_string(),
                    workload: workload.to_string(),
                    tls: Tls::of(s, "server_id"),
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
        };
        let legacy = EdgeKey {
            namespace: "demo".into(),
            workload: "legacy".into(),
            tls: Tls::Plain("not_provided_by_service_discovery".into()),
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
