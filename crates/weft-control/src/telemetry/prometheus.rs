//! `--prometheus-url`: golden metrics from a Prometheus instead of the embedded scrape window,
//! as Linkerd viz's metrics API asks its Prometheus.
//!
//! The Prometheus is expected to scrape the proxies with the target labels of
//! [`super::file_sd`] (`namespace`, `workload`): the queries group by them. For one answer the
//! API sends a handful of instant queries (requests by classification, three
//! `histogram_quantile`s, inbound TCP, `up`) at once, all evaluated at the same time, under one
//! time limit ([`TIMEOUT`]); any failure fails the whole answer, never a row of zeros.
//!
//! Plain HTTP/1 over a fresh connection per query (hyper, as the scraper does); `https` is not
//! spoken.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::str::FromStr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use serde_json::Value;

use super::file_sd::{LABEL_NAMESPACE, LABEL_WORKLOAD};
use super::Key;

/// Every query of one answer must be answered within this long.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// Largest answer read from Prometheus.
pub const MAX_BODY: usize = 16 << 20;
/// The quantiles the rows report.
pub const QUANTILES: [f64; 3] = [0.5, 0.95, 0.99];

/// Where Prometheus's HTTP API is: `http://HOST[:PORT][/PREFIX]` (`--web.route-prefix`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prometheus {
    host: String,
    port: u16,
    /// Path prefix without a trailing `/` (empty for none).
    prefix: String,
}

impl FromStr for Prometheus {
    type Err = String;

    fn from_str(url: &str) -> Result<Self, String> {
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            format!("{url:?}: expected http://HOST[:PORT][/PREFIX] (https is not supported)")
        })?;
        let (authority, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if prefix.contains(['?', '#']) {
            return Err(format!("{url:?}: a query or fragment has no place here"));
        }
        let uri: http::uri::Authority = authority
            .parse()
            .map_err(|e| format!("{url:?}: bad host: {e}"))?;
        let port = match uri.port_u16() {
            Some(port) => port,
            None if authority == uri.host() => 80,
            None => return Err(format!("{url:?}: bad port")),
        };
        if uri.host().is_empty() || authority.contains('@') {
            return Err(format!("{url:?}: expected http://HOST[:PORT][/PREFIX]"));
        }
        Ok(Prometheus {
            host: uri.host().trim_matches(['[', ']']).to_string(),
            port,
            prefix: prefix.to_string(),
        })
    }
}

impl std::fmt::Display for Prometheus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        write!(f, "http://{host}:{}{}", self.port, self.prefix)
    }
}

/// Why Prometheus gave no answer (the API's 502 says it in these words).
#[derive(Debug, thiserror::Error)]
pub enum PromError {
    #[error("connecting to Prometheus at {url}: {source}")]
    Connect { url: String, source: std::io::Error },
    #[error("Prometheus at {url} did not answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error("asking Prometheus at {url}: {source}")]
    Http { url: String, source: hyper::Error },
    #[error("Prometheus at {url} answered {status} to {query:?}: {message}")]
    Refused {
        url: String,
        query: String,
        status: StatusCode,
        message: String,
    },
    #[error("Prometheus at {url} answered {query:?} with something unexpected: {message}")]
    Unreadable {
        url: String,
        query: String,
        message: String,
    },
}

/// What a row is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grouping {
    /// Per workload, inbound.
    Workloads,
    /// Per namespace, inbound.
    Namespaces,
    /// Per destination Service, the clients' outbound.
    Services,
}

/// Which rows: a namespace, and in it a name (both DNS labels, checked by the API).
#[derive(Debug, Clone, Copy, Default)]
pub struct Scope<'a> {
    pub namespace: Option<&'a str>,
    pub name: Option<&'a str>,
}

/// The PromQL of one answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Queries {
    /// Requests per second by row key and `classification`.
    pub requests: String,
    /// One `histogram_quantile` per [`QUANTILES`].
    pub latency: [String; 3],
    /// Inbound TCP: open connections, read and written bytes per second (not for Services).
    pub tcp: Option<[String; 3]>,
    /// Whether Prometheus's last scrape of each proxy worked, by `namespace`, `workload`.
    pub up: String,
}

/// A row's figures as Prometheus computed them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Golden {
    /// Requests per second.
    pub requests: f64,
    /// Successful requests per second.
    pub successes: f64,
    /// Latency quantiles in ms ([`QUANTILES`]); `None` where Prometheus answered NaN (no
    /// requests) or nothing.
    pub latency_ms: [Option<f64>; 3],
    /// Inbound TCP (`None` without series, and for Services).
    pub tcp: Option<Tcp>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Tcp {
    pub open: f64,
    pub read_per_sec: f64,
    pub write_per_sec: f64,
}

/// Everything one answer needs, folded per row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Answer {
    /// Per row: `(namespace, name)`; a namespace row's name is the namespace.
    pub rows: BTreeMap<Key, Golden>,
    /// Per workload: Prometheus's `up` (`false`: its last scrape failed).
    pub up: BTreeMap<Key, bool>,
    /// Per Service row: the client workloads whose requests it counts.
    pub clients: BTreeMap<Key, BTreeSet<Key>>,
}

/// The queries for `grouping` in `scope` over `window` (whole seconds).
pub fn queries(grouping: Grouping, scope: Scope<'_>, window: Duration) -> Queries {
    let w = format!("{}s", window.as_secs().max(1));
    let mut sel = String::new();
    let (ns_label, name_label) = match grouping {
        Grouping::Services => {
            sel.push_str(r#"direction="outbound",dst_service!="""#);
            ("dst_namespace", "dst_service")
        }
        Grouping::Workloads | Grouping::Namespaces => {
            sel.push_str(r#"direction="inbound""#);
            (LABEL_NAMESPACE, LABEL_WORKLOAD)
        }
    };
    if let Some(ns) = scope.namespace {
        let _ = write!(sel, r#",{ns_label}="{ns}""#);
    }
    if let (Some(name), false) = (scope.name, grouping == Grouping::Namespaces) {
        let _ = write!(sel, r#",{name_label}="{name}""#);
    }
    let by = match grouping {
        Grouping::Workloads => "namespace, workload",
        Grouping::Namespaces => "namespace",
        Grouping::Services => "dst_namespace, dst_service",
    };
    // A Service's requests are also split by client, to know whose scrapes they rest on.
    let requests_by = match grouping {
        Grouping::Services => format!("namespace, workload, {by}, classification"),
        _ => format!("{by}, classification"),
    };
    let requests = format!("sum by ({requests_by}) (rate(response_total{{{sel}}}[{w}]))");
    let latency = QUANTILES.map(|q| {
        format!(
            "histogram_quantile({q}, sum by (le, {by}) \
             (rate(response_latency_ms_bucket{{{sel}}}[{w}])))"
        )
    });
    let tcp = (grouping != Grouping::Services).then(|| {
        let tcp_sel = format!(r#"{sel},peer="src""#);
        [
            format!("sum by ({by}) (tcp_open_connections{{{tcp_sel}}})"),
            format!("sum by ({by}) (rate(tcp_read_bytes_total{{{tcp_sel}}}[{w}]))"),
            format!("sum by ({by}) (rate(tcp_write_bytes_total{{{tcp_sel}}}[{w}]))"),
        ]
    });
    // A Service's clients may live in any namespace.
    let up = match (grouping, scope.namespace) {
        (Grouping::Services, _) | (_, None) => "min by (namespace, workload) (up)".to_string(),
        (_, Some(ns)) => format!(r#"min by (namespace, workload) (up{{namespace="{ns}"}})"#),
    };
    Queries {
        requests,
        latency,
        tcp,
        up,
    }
}

/// One element of an instant vector: its labels and its value (NaN and infinities kept).
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    fn label(&self, name: &str) -> Option<&str> {
        self.labels.get(name).map(String::as_str)
    }

    fn key(&self, ns: &str, name: &str) -> Option<Key> {
        Some((self.label(ns)?.to_string(), self.label(name)?.to_string()))
    }
}

/// Reads an `/api/v1/query` answer: the samples of a `vector`, or Prometheus's own error.
pub fn parse_vector(body: &[u8]) -> Result<Vec<Sample>, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    if v["status"] != "success" {
        return Err(error_message(&v).unwrap_or_else(|| format!("status {}", v["status"])));
    }
    let data = &v["data"];
    if data["resultType"] != "vector" {
        return Err(format!(
            "resultType {}, expected vector",
            data["resultType"]
        ));
    }
    let result = data["result"].as_array().ok_or("no data.result array")?;
    result
        .iter()
        .map(|s| {
            let labels = s["metric"]
                .as_object()
                .ok_or("a sample without metric")?
                .iter()
                .map(|(k, v)| Ok((k.clone(), v.as_str().ok_or("a non-string label")?.into())))
                .collect::<Result<_, &str>>()?;
            // Prometheus writes values as strings: "1.5", "NaN", "+Inf".
            let text = s["value"][1]
                .as_str()
                .ok_or("a sample without [time, value]")?;
            let value = text
                .parse()
                .map_err(|_| format!("value {text:?} is not a number"))?;
            Ok(Sample { labels, value })
        })
        .collect()
}

/// `errorType: error` of a Prometheus error answer.
fn error_message(v: &Value) -> Option<String> {
    let error = v["error"].as_str()?;
    Some(match v["errorType"].as_str() {
        Some(kind) => format!("{kind}: {error}"),
        None => error.to_string(),
    })
}

/// The samples of each query of [`Queries`], in its order.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    pub requests: Vec<Sample>,
    pub latency: [Vec<Sample>; 3],
    pub tcp: Option<[Vec<Sample>; 3]>,
    pub up: Vec<Sample>,
}

/// Which figure of [`Tcp`] a query fills.
type TcpField = fn(&mut Tcp) -> &mut f64;

/// Folds the samples into rows.
pub fn fold(grouping: Grouping, samples: &Samples) -> Answer {
    let row_key = |s: &Sample| match grouping {
        Grouping::Workloads => s.key(LABEL_NAMESPACE, LABEL_WORKLOAD),
        Grouping::Namespaces => s.key(LABEL_NAMESPACE, LABEL_NAMESPACE),
        Grouping::Services => s.key("dst_namespace", "dst_service"),
    };
    // A rate is finite and not negative; anything else is no figure.
    let finite = |v: f64| (v.is_finite() && v >= 0.0).then_some(v);
    let mut answer = Answer::default();
    for s in &samples.requests {
        let (Some(key), Some(value)) = (row_key(s), finite(s.value)) else {
            continue;
        };
        let row = answer.rows.entry(key.clone()).or_default();
        row.requests += value;
        if s.label("classification") == Some("success") {
            row.successes += value;
        }
        if grouping == Grouping::Services && value > 0.0 {
            if let Some(client) = s.key(LABEL_NAMESPACE, LABEL_WORKLOAD) {
                answer.clients.entry(key).or_default().insert(client);
            }
        }
    }
    for (i, quantile) in samples.latency.iter().enumerate() {
        for s in quantile {
            if let (Some(key), Some(ms)) = (row_key(s), finite(s.value)) {
                answer.rows.entry(key).or_default().latency_ms[i] = Some(ms);
            }
        }
    }
    if let Some([open, read, write]) = &samples.tcp {
        let fields: [(&Vec<Sample>, TcpField); 3] = [
            (open, |t| &mut t.open),
            (read, |t| &mut t.read_per_sec),
            (write, |t| &mut t.write_per_sec),
        ];
        for (series, field) in fields {
            for s in series {
                if let (Some(key), Some(v)) = (row_key(s), finite(s.value)) {
                    let tcp = answer
                        .rows
                        .entry(key)
                        .or_default()
                        .tcp
                        .get_or_insert_default();
                    *field(tcp) += v;
                }
            }
        }
    }
    for s in &samples.up {
        if let Some(key) = s.key(LABEL_NAMESPACE, LABEL_WORKLOAD) {
            answer.up.insert(key, s.value == 1.0);
        }
    }
    answer
}

/// What is wrong with Prometheus's view of a proxy whose `up` is `up` (`None`: no such target);
/// `None` when its last scrape worked.
pub fn scrape_problem(up: Option<bool>) -> Option<&'static str> {
    match up {
        Some(true) => None,
        Some(false) => Some("Prometheus's last scrape of its proxy failed (up == 0)"),
        None => Some(
            "Prometheus has no target for it (does its scrape configuration read the control \
             plane's --prometheus-sd-file?)",
        ),
    }
}

impl Prometheus {
    /// The figures of `grouping` in `scope` over `window`, as of now.
    pub async fn golden(
        &self,
        grouping: Grouping,
        scope: Scope<'_>,
        window: Duration,
    ) -> Result<Answer, PromError> {
        let q = queries(grouping, scope, window);
        let mut promql: Vec<&str> = vec![
            &q.requests,
            &q.latency[0],
            &q.latency[1],
            &q.latency[2],
            &q.up,
        ];
        promql.extend(q.tcp.iter().flatten().map(String::as_str));
        let mut answers = self.instant(&promql).await?.into_iter();
        let mut next = || answers.next().unwrap_or_default();
        let (requests, latency, up) = (next(), [next(), next(), next()], next());
        let tcp = q.tcp.is_some().then(|| [next(), next(), next()]);
        let samples = Samples {
            requests,
            latency,
            tcp,
            up,
        };
        Ok(fold(grouping, &samples))
    }

    /// Instant queries, all evaluated at the same instant (so their answers agree with each
    /// other) and all answered within [`TIMEOUT`]; their samples in `promql`'s order.
    pub async fn instant(&self, promql: &[&str]) -> Result<Vec<Vec<Sample>>, PromError> {
        let time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| format!("{:.3}", d.as_secs_f64()))
            .unwrap_or_default();
        let all = futures_util::future::try_join_all(promql.iter().map(|p| self.query(p, &time)));
        tokio::time::timeout(TIMEOUT, all)
            .await
            .unwrap_or_else(|_| {
                Err(PromError::Timeout {
                    url: self.to_string(),
                    timeout: TIMEOUT,
                })
            })
    }

    /// The path and query string of an instant query.
    pub fn query_path(&self, promql: &str, time: &str) -> String {
        let mut path = format!("{}/api/v1/query?query=", self.prefix);
        percent_encode(promql, &mut path);
        if !time.is_empty() {
            path.push_str("&time=");
            percent_encode(time, &mut path);
        }
        path
    }

    /// One instant query.
    async fn query(&self, promql: &str, time: &str) -> Result<Vec<Sample>, PromError> {
        let url = || self.to_string();
        let (status, body) = self.get(&self.query_path(promql, time)).await?;
        let refused = |message| PromError::Refused {
            url: url(),
            query: promql.to_string(),
            status,
            message,
        };
        if !status.is_success() {
            let message = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| error_message(&v))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(200).collect());
            return Err(refused(message));
        }
        parse_vector(&body).map_err(|message| PromError::Unreadable {
            url: url(),
            query: promql.to_string(),
            message,
        })
    }

    async fn get(&self, path: &str) -> Result<(StatusCode, Bytes), PromError> {
        let url = self.to_string();
        let http = |source| PromError::Http {
            url: url.clone(),
            source,
        };
        let stream = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|source| PromError::Connect {
                url: url.clone(),
                source,
            })?;
        let _ = stream.set_nodelay(true);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(http)?;
        // The connection is driven beside the exchange and dropped with it.
        let conn = async move {
            if let Err(e) = conn.await {
                tracing::debug!("prometheus connection: {e}");
            }
        };
        let host = match self.port {
            80 => self.host.clone(),
            port => format!("{}:{port}", self.host),
        };
        let exchange = async {
            let request = Request::get(path)
                .header(http::header::HOST, host)
                .header(http::header::ACCEPT, "application/json")
                .body(Empty::<Bytes>::new())
                .map_err(|e| PromError::Unreadable {
                    url: url.clone(),
                    query: path.to_string(),
                    message: e.to_string(),
                })?;
            let response = sender.send_request(request).await.map_err(http)?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| PromError::Unreadable {
                    url: url.clone(),
                    query: path.to_string(),
                    message: format!("reading the body: {e}"),
                })?
                .to_bytes();
            Ok((status, body))
        };
        tokio::select! {
            result = exchange => result,
            () = async { conn.await; std::future::pending::<()>().await } => unreachable!(),
        }
    }
}

/// Appends `text` with every byte but RFC 3986's unreserved ones percent-encoded.
fn percent_encode(text: &str, out: &mut String) {
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

#[cfg(test)]
#[path = "prometheus_tests.rs"]
mod tests;
