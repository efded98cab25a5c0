//! Telemetry end to end: a control plane that scrapes every 200 ms the admin address workloads
//! register, here a small HTTP server serving Prometheus text whose counters grow with time, and
//! `GET /v1/stat/...` answering from what it scraped.

mod common;

use common::{http_json, LIMIT};
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
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

/// Serves [`metrics`] on 127.0.0.1 (one request per connection); counts the scrapes.
async fn fake_proxy_admin() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let scrapes = Arc::new(AtomicUsize::new(0));
    let count = scrapes.clone();
    let started = std::time::Instant::now();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let count = count.clone();
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
                let body = metrics(started.elapsed().as_secs_f64());
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

fn workload(name: &str, admin: SocketAddr) -> String {
    serde_json::json!({
        "apiVersion": "workload.linkerd.io/v1beta1",
        "kind": "ExternalWorkload",
        "metadata": {"labels": {"app": name}},
        "spec": {
            "workloadIPs": [{"ip": admin.ip().to_string()}],
            "ports": [{"name": "http", "port": 8080}, {"name": "linkerd-admin", "port": admin.port()}],
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
    let (admin, scrapes) = fake_proxy_admin().await;
    let dead = refusing().await;
    for (name, addr) in [("web", admin), ("db", dead)] {
        let path = format!("/v1/workloads/obs/{name}");
        let (status, body) = http_json(cp.api_addr, "PUT", &path, &workload(name, addr)).await;
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
