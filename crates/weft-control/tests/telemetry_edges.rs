//! Edges and routes end to end: a control plane scraping every 200 ms two fake proxies' admin
//! servers (web calls books over mTLS on a route of books' Service; books' proxy records web's
//! identity) and answering `GET /v1/edges` and `GET /v1/routes` from what it scraped.

mod common;

use common::{http_json, LIMIT};
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A proxy's `/metrics` after `t` seconds.
type Metrics = Arc<dyn Fn(f64) -> String + Send + Sync>;

const BOOKS: &str = "\
apiVersion: v1
kind: Service
metadata: {name: books, namespace: obs}
spec: {selector: {app: books}, ports: [{port: 9090}]}
";

/// Serves `metrics` on 127.0.0.1, one request per connection, until the test ends.
async fn fake_proxy_admin(metrics: Arc<Mutex<Option<Metrics>>>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let started = std::time::Instant::now();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.ends_with(b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let t = started.elapsed().as_secs_f64();
                let body = metrics
                    .lock()
                    .unwrap()
                    .as_ref()
                    .map(|m| m(t))
                    .unwrap_or_default();
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(response.as_bytes()).await;
            });
        }
    });
    addr
}

fn workload(name: &str, admin: SocketAddr) -> String {
    serde_json::json!({
        "apiVersion": "workload.linkerd.io/v1beta1",
        "kind": "ExternalWorkload",
        "metadata": {"labels": {"app": name}},
        "spec": {
            "workloadIPs": [{"ip": admin.ip().to_string()}],
            "ports": [{"name": "http", "port": 9090}, {"name": "linkerd-admin", "port": admin.port()}],
        },
    })
    .to_string()
}

/// Web's proxy: 20 requests a second to books over mTLS (books' identity verified), all on
/// books' `books-read` HTTPRoute, one connection open.
fn web_metrics(books_id: String) -> Metrics {
    Arc::new(move |t| {
        let out = format!(
            r#"direction="outbound",target_addr="127.0.0.1:9090",tls="true",server_id="{books_id}",dst_namespace="obs",dst_service="books",dst_external_workload="books""#
        );
        let route = r#"parent_group="core",parent_kind="Service",parent_namespace="obs",parent_name="books",parent_port="9090",parent_section_name="",route_group="gateway.networking.k8s.io",route_kind="HTTPRoute",route_namespace="obs",route_name="books-read""#;
        let n = (20.0 * t).floor();
        format!(
            "response_total{{{out},status_code=\"200\",classification=\"success\"}} {n}\n\
             tcp_open_total{{{out},peer=\"dst\"}} 1\n\
             tcp_open_connections{{{out},peer=\"dst\"}} 1\n\
             outbound_http_route_request_statuses_total{{{route},http_status=\"200\",error=\"\"}} {n}\n\
             outbound_http_route_request_duration_seconds_bucket{{{route},le=\"0.05\"}} {n}\n\
             outbound_http_route_request_duration_seconds_bucket{{{route},le=\"+Inf\"}} {n}\n\
             process_start_time_seconds 1700000000\n"
        )
    })
}

/// Books' proxy: the same requests, from web's identity.
fn books_metrics(web_id: String) -> Metrics {
    Arc::new(move |t| {
        let n = (20.0 * t).floor();
        format!(
            "response_total{{direction=\"inbound\",target_addr=\"127.0.0.1:9090\",tls=\"true\",client_id=\"{web_id}\",status_code=\"200\",classification=\"success\"}} {n}\n\
             process_start_time_seconds 1700000001\n"
        )
    })
}

/// `GET path` until `done` holds for its body (or fails after [`LIMIT`]).
async fn json_when(api: SocketAddr, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let (status, body) = http_json(api, "GET", path, "").await;
        assert_eq!(status, 200, "{body}");
        if done(&body) {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "GET {path} never got there: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn scraped_proxies_answer_edges_and_routes() {
    let dir = common::temp_dir("telemetry-edges");
    std::fs::write(dir.join("books.yaml"), BOOKS).expect("write");
    let mut config = common::config(&dir);
    config.scrape_interval = Duration::from_millis(200);
    let cp = common::start(config).await;
    let (web_metrics_slot, books_metrics_slot) = (Arc::default(), Arc::default());
    let web_admin = fake_proxy_admin(Arc::clone(&web_metrics_slot)).await;
    let books_admin = fake_proxy_admin(Arc::clone(&books_metrics_slot)).await;
    let mut ids = Vec::new();
    for (name, admin) in [("web", web_admin), ("books", books_admin)] {
        let path = format!("/v1/workloads/obs/{name}");
        let (status, body) = http_json(cp.api_addr, "PUT", &path, &workload(name, admin)).await;
        assert_eq!(status, 200, "{body}");
        ids.push(body["identity"].as_str().expect("identity").to_string());
    }
    let (web_id, books_id) = (ids[0].clone(), ids[1].clone());
    *web_metrics_slot.lock().unwrap() = Some(web_metrics(books_id.clone()));
    *books_metrics_slot.lock().unwrap() = Some(books_metrics(web_id.clone()));

    // The edge, once both proxies were scraped twice: secured, both identities.
    let body = json_when(cp.api_addr, "/v1/edges?namespace=obs&window=10s", |b| {
        b["rows"][0]["client_id"].is_string() && b["rows"][0]["rps"].as_f64() > Some(0.0)
    })
    .await;
    assert_eq!(body["window_secs"], 10);
    let rows = body["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 1, "{body}");
    let edge = &rows[0];
    assert_eq!(
        (
            edge["src"].clone(),
            edge["dst"].clone(),
            edge["secured"].clone()
        ),
        ("web".into(), "books".into(), true.into()),
        "{edge}"
    );
    assert_eq!(edge["client_id"], web_id.as_str(), "{edge}");
    assert_eq!(edge["server_id"], books_id.as_str(), "{edge}");
    assert_eq!(edge["no_tls_reason"], Value::Null);
    assert_eq!(edge["tcp_connections"], 1);

    // The route: web's requests on it, all successful, all within 50 ms.
    let body = json_when(
        cp.api_addr,
        "/v1/routes?namespace=obs&service=books&window=10s",
        |b| b["rows"][0]["requests"].as_u64() > Some(0),
    )
    .await;
    let route = &body["rows"][0];
    assert_eq!(route["route"], "books-read", "{route}");
    assert_eq!(route["route_kind"], "HTTPRoute");
    assert_eq!(route["port"], 9090);
    assert_eq!(route["success_rate"], 1.0);
    assert_eq!(route["latency_ms_p99"], 50.0);

    // Errors.
    for (method, path, expected) in [
        ("GET", "/v1/edges?window=1d", 400),
        ("GET", "/v1/edges?namespace=nope", 404),
        ("GET", "/v1/routes?service=books", 400),
        ("GET", "/v1/routes?namespace=obs&service=nope", 404),
        ("POST", "/v1/edges", 405),
        ("DELETE", "/v1/routes", 405),
    ] {
        let (status, body) = http_json(cp.api_addr, method, path, "").await;
        assert_eq!(status, expected, "{method} {path}: {body}");
        assert!(body["error"].is_string(), "{body}");
    }

    tokio::time::timeout(LIMIT, cp.shutdown())
        .await
        .expect("shuts down in time")
        .expect("clean shutdown");
    let _ = std::fs::remove_dir_all(&dir);
}
