//! `GET /v1/stat/...` rows from a Prometheus: a stand-in HTTP server answers each PromQL query
//! with the answer a real Prometheus gave to it (`telemetry/prometheus_answers/`), and the rows
//! come out with the index's meshed/total and Prometheus's figures, or an error, never zeros.

use super::*;
use crate::documents::state_of;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// The demo's workloads as recorded, plus `legacy` (no proxy) and `ghost` (a proxy Prometheus
/// has no target for).
const STATE: &str = "\
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: demo}
spec: {selector: {app: ratings}, ports: [{port: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: demo}
spec: {selector: {app: web}, ports: [{port: 8080}]}
";

fn workload(name: &str, admin: Option<u16>) -> String {
    let admin = admin.map_or(String::new(), |p| {
        format!(", {{name: linkerd-admin, port: {p}}}")
    });
    format!(
        "---\napiVersion: workload.linkerd.io/v1beta1\nkind: ExternalWorkload\n\
         metadata: {{name: {name}, namespace: demo, labels: {{app: {name}}}}}\n\
         spec: {{workloadIPs: [{{ip: 127.0.0.1}}], ports: [{{name: http, port: 8080}}{admin}]}}\n"
    )
}

fn state() -> State {
    let mut text = STATE.to_string();
    for (i, name) in ["books", "books-v2", "ratings", "web", "traffic", "ghost"]
        .iter()
        .enumerate()
    {
        text += &workload(name, Some(40000 + i as u16));
    }
    text += &workload("legacy", None);
    state_of(&text)
}

fn recorded(name: &str) -> String {
    let path = format!(
        "{}/src/telemetry/prometheus_answers/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).expect("hex"));
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).expect("utf-8")
}

/// The recorded answer to a query (an empty vector for those not recorded).
fn answer_to(promql: &str) -> String {
    let empty = r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
    let outbound = promql.contains(r#"direction="outbound""#);
    let file = match () {
        _ if promql.starts_with("min by (namespace, workload) (up") => "up.json",
        _ if promql.starts_with("sum by (namespace, workload, dst_namespace") => {
            "outbound_requests.json"
        }
        _ if promql.starts_with("sum by (namespace, workload, classification)") => {
            "inbound_requests.json"
        }
        _ if promql.starts_with("histogram_quantile(0.5,") && !outbound => "nan.json",
        _ if promql.starts_with("histogram_quantile(0.95,") && !outbound => "inbound_p95.json",
        _ if promql.starts_with("histogram_quantile(0.99,") && outbound => "outbound_p99.json",
        _ if promql.contains("tcp_open_connections") => "tcp_open.json",
        _ => return empty.to_string(),
    };
    recorded(file)
}

/// A stand-in Prometheus on a free port: one recorded answer per connection.
async fn recorded_prometheus() -> (Prometheus, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 << 10];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).to_string();
                let target = head.split(' ').nth(1).unwrap_or("");
                let promql = target
                    .split_once("query=")
                    .map(|(_, q)| percent_decode(q.split('&').next().unwrap_or("")))
                    .unwrap_or_default();
                let body = answer_to(&promql);
                let rsp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(rsp.as_bytes()).await;
            });
        }
    });
    let url = format!("http://{addr}").parse().expect("url");
    (url, server)
}

fn row<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["rows"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["name"] == name))
        .unwrap_or_else(|| panic!("no row {name}: {v}"))
}

#[tokio::test]
async fn workload_rows_come_from_prometheus_with_the_index_rows() {
    let (prometheus, server) = recorded_prometheus().await;
    let q = parse_query("workloads", Some("namespace=demo&window=30s")).expect("query");
    let v = stat_prometheus(&state(), &prometheus, &q)
        .await
        .expect("answer");
    assert_eq!(v["source"], "prometheus");
    let names: Vec<&str> = v["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| r["name"].as_str().expect("name"))
        .collect();
    assert_eq!(
        names,
        ["books", "books-v2", "ghost", "legacy", "ratings", "traffic", "web"]
    );
    let ratings = row(&v, "ratings");
    assert_eq!(ratings["source"], "prometheus");
    assert_eq!(
        (ratings["meshed"].clone(), ratings["total"].clone()),
        (json!(1), json!(1))
    );
    assert!(
        (ratings["rps"].as_f64().expect("rps") - 18.857).abs() < 1e-3,
        "{ratings}"
    );
    assert!(
        (ratings["success_rate"].as_f64().expect("sr") - 18.0 / 18.857_142_857).abs() < 1e-6,
        "{ratings}"
    );
    // p50 answered NaN: no figure; p95 a number; p99 not answered: none.
    assert_eq!(ratings["latency_ms_p50"], Value::Null);
    assert!((ratings["latency_ms_p95"].as_f64().expect("p95") - 1.596).abs() < 1e-3);
    assert_eq!(ratings["latency_ms_p99"], Value::Null);
    assert_eq!(ratings["tcp_connections"], 1);
    assert_eq!(ratings["window_secs"], 30.0);
    assert_eq!(
        (ratings["stale"].clone(), ratings["error"].clone()),
        (json!(false), Value::Null)
    );
    // traffic serves nothing but is scraped: zeros where the embedded source has them.
    let traffic = row(&v, "traffic");
    assert_eq!(traffic["rps"], 0.0);
    assert_eq!(traffic["success_rate"], Value::Null);
    assert_eq!(traffic["tcp_connections"], 0);
    assert_eq!(traffic["stale"], false);
    // Prometheus has no target for ghost: stale, saying why, and no figures.
    let ghost = row(&v, "ghost");
    assert_eq!(ghost["stale"], true);
    assert!(
        ghost["error"]
            .as_str()
            .is_some_and(|e| e.contains("no target") && e.contains("--prometheus-sd-file")),
        "{ghost}"
    );
    assert_eq!(ghost["tcp_connections"], Value::Null);
    assert_eq!(ghost["window_secs"], 0.0);
    // No proxy: 0/1, never stale.
    let legacy = row(&v, "legacy");
    assert_eq!(
        (legacy["meshed"].clone(), legacy["stale"].clone()),
        (json!(0), json!(false))
    );
    server.abort();
}

#[tokio::test]
async fn service_and_namespace_rows_from_prometheus() {
    let (prometheus, server) = recorded_prometheus().await;
    let q = parse_query("services", Some("namespace=demo&window=30s")).expect("query");
    let v = stat_prometheus(&state(), &prometheus, &q)
        .await
        .expect("answer");
    // Only the Services of the state are rows, whatever Prometheus knows of.
    assert_eq!(v["rows"].as_array().expect("rows").len(), 2);
    let ratings = row(&v, "ratings");
    assert!((ratings["success_rate"].as_f64().expect("sr") - 0.954_545).abs() < 1e-4);
    assert!((ratings["latency_ms_p99"].as_f64().expect("p99") - 3.567).abs() < 1e-3);
    assert_eq!(ratings["tcp_connections"], Value::Null);
    assert_eq!(ratings["stale"], false);
    assert_eq!(row(&v, "web")["rps"], 20.0);

    let q = parse_query("namespaces", Some("namespace=demo&window=30s")).expect("query");
    let v = stat_prometheus(&state(), &prometheus, &q)
        .await
        .expect("answer");
    let demo = row(&v, "demo");
    assert_eq!(
        (demo["meshed"].clone(), demo["total"].clone()),
        (json!(6), json!(7))
    );
    // ghost makes the namespace stale, named.
    assert_eq!(demo["stale"], true);
    assert!(
        demo["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("demo/ghost: ")),
        "{demo}"
    );
    server.abort();
}

#[tokio::test]
async fn prometheus_down_is_an_error_not_zeros_and_404s_still_come_first() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let prometheus: Prometheus = format!("http://127.0.0.1:{port}").parse().expect("url");
    let q = parse_query("workloads", Some("namespace=demo")).expect("query");
    let e = stat_prometheus(&state(), &prometheus, &q)
        .await
        .expect_err("nobody listens");
    assert!(
        matches!(&e, StatError::Prometheus(m) if m.starts_with("connecting to Prometheus at ")),
        "{e}"
    );
    let q = parse_query("workloads", Some("namespace=demo&name=nope")).expect("query");
    assert_eq!(
        stat_prometheus(&state(), &prometheus, &q).await,
        Err(StatError::NotFound("no workload demo/nope".into()))
    );
}
