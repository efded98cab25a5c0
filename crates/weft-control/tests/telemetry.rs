//! Telemetry end to end: a control plane that scrapes every 200 ms the admin address workloads
//! register, here a small HTTP server serving Prometheus text whose counters grow with time, and
//! `GET /v1/stat/...` answering from what it scraped; and two such proxies (web calls books over
//! mTLS on a route of books' Service; books' proxy records web's identity) answering
//! `GET /v1/edges` and `GET /v1/routes`.

mod common;

use common::{http_json, LIMIT};
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A proxy's `/metrics` as a function of the seconds `t` since it started: 50 requests a
/// second, 90 % successful, half answered within 5 ms and all within 10 ms, 2 open inbound
/// connections and 1000 bytes a second read.
fn metrics(t: f64) -> String {
    let inbound = r#"direction="inbound",target_addr="127.0.0.1:8080",tls="no_identity",no_tls_reason="no_tls_from_remote""#;
    let (ok, failed) = (45.0 * t, 5.0 * t);
    let all = ok + failed;
    format!(
        "# TYPE response_total counter\n\
         response_total{{{inbound},status_code=\"200\",classification=\"success\"}} {ok}\n\
         response_total{{{inbound},status_code=\"500\",classification=\"failure\"}} {failed}\n\
         # TYPE response_latency_ms histogram\n\
         response_latency_ms_bucket{{{inbound},status_code=\"200\",le=\"5\"}} {}\n\
         response_latency_ms_bucket{{{inbound},status_code=\"200\",le=\"10\"}} {all}\n\
         response_latency_ms_bucket{{{inbound},status_code=\"200\",le=\"+Inf\"}} {all}\n\
         # TYPE tcp_open_connections gauge\n\
         tcp_open_connections{{{inbound},peer=\"src\"}} 2\n\
         # TYPE tcp_read_bytes_total counter\n\
         tcp_read_bytes_total{{{inbound},peer=\"src\"}} {}\n\
         process_start_time_seconds 1700000000\n",
        all / 2.0,
        1000.0 * t,
    )
}

/// A proxy's `/metrics` after `t` seconds.
type Metrics = Arc<dyn Fn(f64) -> String + Send + Sync>;

/// Serves what `metrics` holds (nothing while it is `None`) on 127.0.0.1, one request per
/// connection, until the test ends; counts the scrapes.
async fn fake_proxy_admin(metrics: Arc<Mutex<Option<Metrics>>>) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let scrapes = Arc::new(AtomicUsize::new(0));
    let count = scrapes.clone();
    let started = std::time::Instant::now();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let (count, metrics) = (count.clone(), metrics.clone());
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.ends_with(b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                assert!(request.starts_with(b"GET /metrics HTTP/1.1\r\n"));
                count.fetch_add(1, Ordering::SeqCst);
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
    (addr, scrapes)
}

/// An address nothing listens on: connections are refused.
async fn refusing() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    listener.local_addr().expect("addr")
}

/// A workload serving `port` (named `http`) whose proxy's admin is `admin`.
fn workload(name: &str, port: u16, admin: SocketAddr) -> String {
    serde_json::json!({
        "apiVersion": "workload.linkerd.io/v1beta1",
        "kind": "ExternalWorkload",
        "metadata": {"labels": {"app": name}},
        "spec": {
            "workloadIPs": [{"ip": admin.ip().to_string()}],
            "ports": [{"name": "http", "port": port}, {"name": "linkerd-admin", "port": admin.port()}],
        },
    })
    .to_string()
}

/// Asks for the row of `name` until `done` holds for it (or fails after [`LIMIT`]).
async fn row_when(api: SocketAddr, name: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let (status, body) = http_json(
            api,
            "GET",
            "/v1/stat/workloads?namespace=obs&window=10s",
            "",
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["kind"], "workloads");
        assert_eq!(body["window_secs"], 10);
        let row = body["rows"]
            .as_array()
            .and_then(|rows| rows.iter().find(|r| r["name"] == name))
            .cloned()
            .unwrap_or(Value::Null);
        if done(&row) {
            return row;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name}'s row never got there: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn scraped_proxies_answer_stat_and_unreachable_ones_are_stale() {
    let dir = common::temp_dir("telemetry");
    let mut config = common::config(&dir);
    config.scrape_interval = Duration::from_millis(200);
    let cp = common::start(config).await;
    let metrics_fn: Metrics = Arc::new(metrics);
    let (admin, scrapes) = fake_proxy_admin(Arc::new(Mutex::new(Some(metrics_fn)))).await;
    let dead = refusing().await;
    for (name, addr) in [("web", admin), ("db", dead)] {
        let path = format!("/v1/workloads/obs/{name}");
        let (status, body) =
            http_json(cp.api_addr, "PUT", &path, &workload(name, 8080, addr)).await;
        assert_eq!(status, 200, "{body}");
    }

    // Once two scrapes are apart, the rates are those the counters grow by.
    let web = row_when(cp.api_addr, "web", |r| {
        r["window_secs"].as_f64().is_some_and(|w| w >= 1.0)
    })
    .await;
    let near = |v: &Value, expected: f64, slack: f64| {
        v.as_f64().is_some_and(|x| (x - expected).abs() <= slack)
    };
    assert!(near(&web["rps"], 50.0, 2.5), "{web}");
    assert!(near(&web["success_rate"], 0.9, 1e-6), "{web}");
    assert!(near(&web["latency_ms_p50"], 5.0, 1e-6), "{web}");
    assert!(near(&web["latency_ms_p99"], 9.9, 1e-6), "{web}");
    assert!(near(&web["read_bytes_per_sec"], 1000.0, 50.0), "{web}");
    assert_eq!(web["tcp_connections"], 2);
    assert_eq!(
        (web["meshed"].clone(), web["total"].clone()),
        (1.into(), 1.into())
    );
    assert_eq!(
        (web["stale"].clone(), web["error"].clone()),
        (false.into(), Value::Null)
    );
    assert!(scrapes.load(Ordering::SeqCst) >= 2);

    // The refusing one: stale, with the reason.
    let db = row_when(cp.api_addr, "db", |r| r["error"].is_string()).await;
    assert_eq!(db["stale"], true, "{db}");
    let error = db["error"].as_str().expect("error");
    assert!(
        error.starts_with(&format!("connecting to {dead}: ")),
        "{error}"
    );
    assert_eq!(db["rps"], 0.0);
    assert_eq!(db["success_rate"], Value::Null);

    // The namespace sums both; a Service-less namespace has no service rows.
    let (status, ns) = http_json(cp.api_addr, "GET", "/v1/stat/namespaces?namespace=obs", "").await;
    assert_eq!(status, 200, "{ns}");
    assert_eq!(ns["rows"][0]["meshed"], 2);
    assert_eq!(ns["rows"][0]["stale"], true);
    let (status, svc) = http_json(cp.api_addr, "GET", "/v1/stat/services?namespace=obs", "").await;
    assert_eq!((status, svc["rows"].clone()), (200, serde_json::json!([])));

    // Errors.
    for (method, path, expected) in [
        ("GET", "/v1/stat/pods", 400),
        ("GET", "/v1/stat/workloads?window=1d", 400),
        ("GET", "/v1/stat/workloads?namespace=obs&name=nope", 404),
        ("POST", "/v1/stat/workloads", 405),
    ] {
        let (status, body) = http_json(cp.api_addr, method, path, "").await;
        assert_eq!(status, expected, "{method} {path}: {body}");
        assert!(body["error"].is_string(), "{body}");
    }

    // A deregistered workload is no longer listed.
    let (status, _) = http_json(cp.api_addr, "DELETE", "/v1/workloads/obs/db", "").await;
    assert_eq!(status, 200);
    let (_, body) = http_json(cp.api_addr, "GET", "/v1/stat/workloads?namespace=obs", "").await;
    assert_eq!(body["rows"].as_array().map(Vec::len), Some(1), "{body}");

    tokio::time::timeout(LIMIT, cp.shutdown())
        .await
        .expect("shuts down in time")
        .expect("clean shutdown");
    let _ = std::fs::remove_dir_all(&dir);
}

const BOOKS: &str = "\
apiVersion: v1
kind: Service
metadata: {name: books, namespace: obs}
spec: {selector: {app: books}, ports: [{port: 9090}]}
";

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
    let (web_admin, _) = fake_proxy_admin(Arc::clone(&web_metrics_slot)).await;
    let (books_admin, _) = fake_proxy_admin(Arc::clone(&books_metrics_slot)).await;
    let mut ids = Vec::new();
    for (name, admin) in [("web", web_admin), ("books", books_admin)] {
        let path = format!("/v1/workloads/obs/{name}");
        let (status, body) =
            http_json(cp.api_addr, "PUT", &path, &workload(name, 9090, admin)).await;
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
