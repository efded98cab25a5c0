//! PromQL building, and reading answers recorded from a real Prometheus (2.42, Debian's package)
//! scraping `weft demo`'s proxies through the targets file, every 2 s, 30 s windows.
//! `prometheus_answers/` holds them: the queries [`queries`] builds (with `[30s]`), a
//! `histogram_quantile` over zero rates (NaN), and a query Prometheus refused (`bad.json`).

use super::*;

fn answer(name: &str) -> Vec<Sample> {
    let path = format!(
        "{}/src/telemetry/prometheus_answers/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let body = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    parse_vector(&body).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn key(ns: &str, name: &str) -> Key {
    (ns.to_string(), name.to_string())
}

const MINUTE: Duration = Duration::from_secs(60);

#[test]
fn workload_queries_group_inbound_series_by_namespace_and_workload() {
    let q = queries(
        Grouping::Workloads,
        Scope {
            namespace: Some("demo"),
            name: Some("web"),
        },
        MINUTE,
    );
    let sel = r#"direction="inbound",namespace="demo",workload="web""#;
    assert_eq!(
        q.requests,
        format!(
            "sum by (namespace, workload, classification) (rate(response_total{{{sel}}}[60s]))"
        )
    );
    assert_eq!(
        q.latency[1],
        format!(
            "histogram_quantile(0.95, sum by (le, namespace, workload) \
             (rate(response_latency_ms_bucket{{{sel}}}[60s])))"
        )
    );
    assert!(q.latency[0].starts_with("histogram_quantile(0.5, "));
    assert!(q.latency[2].starts_with("histogram_quantile(0.99, "));
    let tcp = q.tcp.expect("inbound rows have TCP figures");
    assert_eq!(
        tcp[0],
        format!(r#"sum by (namespace, workload) (tcp_open_connections{{{sel},peer="src"}})"#)
    );
    assert_eq!(
        tcp[2],
        format!(
            r#"sum by (namespace, workload) (rate(tcp_write_bytes_total{{{sel},peer="src"}}[60s]))"#
        )
    );
    assert_eq!(
        q.up,
        r#"min by (namespace, workload) (up{namespace="demo"})"#
    );
}

#[test]
fn namespace_and_service_queries() {
    let q = queries(Grouping::Namespaces, Scope::default(), MINUTE * 5);
    assert_eq!(
        q.requests,
        r#"sum by (namespace, classification) (rate(response_total{direction="inbound"}[300s]))"#
    );
    assert_eq!(q.up, "min by (namespace, workload) (up)");
    // A Service: what meshed clients sent it, split by client; no TCP; clients of any namespace.
    let q = queries(
        Grouping::Services,
        Scope {
            namespace: Some("demo"),
            name: Some("books"),
        },
        MINUTE,
    );
    let sel = r#"direction="outbound",dst_service!="",dst_namespace="demo",dst_service="books""#;
    assert_eq!(
        q.requests,
        format!(
            "sum by (namespace, workload, dst_namespace, dst_service, classification) \
             (rate(response_total{{{sel}}}[60s]))"
        )
    );
    assert_eq!(
        q.latency[2],
        format!(
            "histogram_quantile(0.99, sum by (le, dst_namespace, dst_service) \
             (rate(response_latency_ms_bucket{{{sel}}}[60s])))"
        )
    );
    assert_eq!(q.tcp, None);
    assert_eq!(q.up, "min by (namespace, workload) (up)");
}

#[test]
fn recorded_answers_parse_with_labels_and_values() {
    let requests = answer("inbound_requests.json");
    assert_eq!(requests.len(), 6);
    let ratings_failures = requests
        .iter()
        .find(|s| {
            s.label("workload") == Some("ratings") && s.label("classification") == Some("failure")
        })
        .expect("ratings' failures");
    assert!((ratings_failures.value - 0.857_142_857).abs() < 1e-6);
    // NaN (a quantile without requests) is a value, kept as such.
    let nan = answer("nan.json");
    assert_eq!(nan.len(), 4);
    assert!(nan.iter().all(|s| s.value.is_nan()));
    // Prometheus's own refusal comes back in its words.
    let bad = std::fs::read(format!(
        "{}/src/telemetry/prometheus_answers/bad.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("read");
    assert_eq!(
        parse_vector(&bad),
        Err(r#"bad_data: invalid parameter "query": 1:10: parse error: missing unit character in duration"#.into())
    );
    assert!(parse_vector(b"<html>").is_err_and(|e| e.starts_with("not JSON")));
    assert!(
        parse_vector(br#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#)
            .is_err_and(|e| e.contains("matrix"))
    );
    // Infinities parse too (a quantile in the +Inf bucket of a histogram without finite bounds).
    let inf = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"+Inf"]}]}}"#;
    assert_eq!(parse_vector(inf).expect("parsed")[0].value, f64::INFINITY);
}

#[test]
fn recorded_workload_answers_fold_into_rows() {
    let samples = Samples {
        requests: answer("inbound_requests.json"),
        latency: [answer("nan.json"), answer("inbound_p95.json"), vec![]],
        tcp: Some([answer("tcp_open.json"), vec![], vec![]]),
        up: answer("up.json"),
    };
    let a = fold(Grouping::Workloads, &samples);
    let ratings = &a.rows[&key("demo", "ratings")];
    assert!(
        (ratings.requests - 18.857_142_857).abs() < 1e-6,
        "{ratings:?}"
    );
    assert_eq!(ratings.successes, 18.0);
    // NaN: no figure; a number: milliseconds.
    assert_eq!(ratings.latency_ms[0], None);
    assert!((ratings.latency_ms[1].expect("p95") - 1.596).abs() < 1e-3);
    assert_eq!(
        ratings.tcp,
        Some(Tcp {
            open: 1.0,
            read_per_sec: 0.0,
            write_per_sec: 0.0
        })
    );
    let web = &a.rows[&key("demo", "web")];
    assert_eq!((web.requests, web.successes), (20.0, 20.0));
    // traffic serves nothing: no inbound series, no row, but Prometheus scrapes it.
    assert!(!a.rows.contains_key(&key("demo", "traffic")));
    assert_eq!(a.up.len(), 5);
    assert!(a.up.values().all(|up| *up));
    assert!(a.clients.is_empty());
}

#[test]
fn recorded_service_answers_fold_per_destination_with_their_clients() {
    let samples = Samples {
        requests: answer("outbound_requests.json"),
        latency: [vec![], vec![], answer("outbound_p99.json")],
        tcp: None,
        up: answer("up.json"),
    };
    let a = fold(Grouping::Services, &samples);
    assert_eq!(
        a.rows.keys().map(|(_, n)| n.as_str()).collect::<Vec<_>>(),
        ["books", "books-v2", "ratings", "web"]
    );
    let ratings = &a.rows[&key("demo", "ratings")];
    assert!((ratings.successes / ratings.requests - 0.954_545).abs() < 1e-4);
    assert!((ratings.latency_ms[2].expect("p99") - 3.567).abs() < 1e-3);
    assert_eq!(ratings.tcp, None);
    assert_eq!(
        a.clients[&key("demo", "ratings")],
        BTreeSet::from([key("demo", "web")])
    );
    assert_eq!(
        a.clients[&key("demo", "web")],
        BTreeSet::from([key("demo", "traffic")])
    );
}

#[test]
fn a_namespace_row_sums_its_workloads_and_down_targets_are_not_up() {
    let requests = answer("inbound_requests.json")
        .into_iter()
        .map(|mut s| {
            s.labels.remove("workload");
            s
        })
        .collect();
    let mut up = answer("up.json");
    up[0].value = 0.0;
    let a = fold(
        Grouping::Namespaces,
        &Samples {
            requests,
            up,
            ..Samples::default()
        },
    );
    let demo = &a.rows[&key("demo", "demo")];
    assert!((demo.requests - 58.928_571).abs() < 1e-5, "{demo:?}");
    assert!(!a.up[&key("demo", "ratings")]);
    assert!(a.up[&key("demo", "web")]);
}

#[test]
fn urls_and_query_paths() {
    let p: Prometheus = "http://127.0.0.1:9090".parse().expect("url");
    assert_eq!(p.to_string(), "http://127.0.0.1:9090");
    assert_eq!(
        p.query_path(r#"up{namespace="demo"}"#, "1796523998.543"),
        "/api/v1/query?query=up%7Bnamespace%3D%22demo%22%7D&time=1796523998.543"
    );
    let p: Prometheus = "http://prometheus.example/prom/".parse().expect("url");
    assert_eq!(p.to_string(), "http://prometheus.example:80/prom");
    assert!(p
        .query_path("up", "")
        .starts_with("/prom/api/v1/query?query=up"));
    let p: Prometheus = "http://[::1]:9090".parse().expect("url");
    assert_eq!(p.to_string(), "http://[::1]:9090");
    for bad in [
        "https://p:9090",
        "p:9090",
        "http://",
        "http://u@p:9090",
        "http://p:x",
        "http://p/?q",
    ] {
        assert!(bad.parse::<Prometheus>().is_err(), "{bad} parsed");
    }
}

#[tokio::test]
async fn nobody_listening_is_a_connect_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let p: Prometheus = format!("http://127.0.0.1:{port}").parse().expect("url");
    let e = p
        .golden(Grouping::Workloads, Scope::default(), MINUTE)
        .await
        .expect_err("nobody listens");
    assert!(matches!(e, PromError::Connect { .. }), "{e}");
    assert!(
        e.to_string()
            .starts_with(&format!("connecting to Prometheus at {p}: ")),
        "{e}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_prometheus_that_never_answers_times_out() {
    // Connections complete in the backlog, but nobody ever reads them.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let p: Prometheus = format!("http://{addr}").parse().expect("url");
    let e = p
        .golden(Grouping::Services, Scope::default(), MINUTE)
        .await
        .expect_err("no answer");
    assert!(matches!(e, PromError::Timeout { .. }), "{e}");
    drop(listener);
}

#[tokio::test]
async fn an_error_answer_is_refused_with_prometheus_words() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let body = r#"{"status":"error","errorType":"unavailable","error":"TSDB not ready"}"#;
    let server = tokio::spawn(async move {
        // One answer per connection, as many as the client opens.
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let rsp = format!(
                "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
                 content-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(rsp.as_bytes()).await;
        }
    });
    let p: Prometheus = format!("http://{addr}").parse().expect("url");
    let e = p
        .golden(Grouping::Namespaces, Scope::default(), MINUTE)
        .await
        .expect_err("refused");
    assert!(
        matches!(e, PromError::Refused { status, .. } if status == StatusCode::SERVICE_UNAVAILABLE),
        "{e}"
    );
    assert!(
        e.to_string().ends_with("unavailable: TSDB not ready"),
        "{e}"
    );
    server.abort();
}
