//! A stand-in for the control plane's API for `tests/dashboard.rs`: the real dashboard files
//! (`weft_control::api::dashboard::handle`) beside fixed answers the demo never gives.

use std::net::SocketAddr;

use serde_json::Value;

/// A stand-in for the control plane's API that serves the real dashboard files
/// (`weft_control::api::dashboard`) beside fixed answers the demo never gives: a plaintext
/// edge to an unmeshed, stale workload; a failing Service query (Prometheus away); no routes;
/// a workload without a tap port.
pub async fn serve() -> SocketAddr {
    use http_body_util::Full;
    use hyper::body::Bytes;

    fn answer(path: &str) -> (u16, Value) {
        let rows = |rows: Value| serde_json::json!({"rows": rows, "window_secs": 60});
        match path {
            "/v1/stat/namespaces" => (200, rows(serde_json::json!([{"name": "shop"}]))),
            "/v1/stat/workloads" => (
                200,
                rows(serde_json::json!([
                    {"namespace": "shop", "name": "front", "meshed": 1, "total": 1,
                     "success_rate": 0.8, "rps": 5.0, "latency_ms_p50": 12.0,
                     "latency_ms_p95": 40.0, "latency_ms_p99": 80.0, "tcp_connections": 2,
                     "stale": false, "error": null},
                    {"namespace": "shop", "name": "legacy", "meshed": 0, "total": 1,
                     "success_rate": null, "rps": 0.0, "latency_ms_p50": null,
                     "latency_ms_p95": null, "latency_ms_p99": null, "tcp_connections": null,
                     "stale": true, "error": "connecting to 10.0.0.9:4191: Connection refused"},
                ])),
            ),
            "/v1/stat/services" => (
                502,
                serde_json::json!({"error": "Prometheus at http://127.0.0.1:9 did not answer within 5s"}),
            ),
            "/v1/edges" => (
                200,
                rows(serde_json::json!([
                    {"src_namespace": "shop", "src": "front", "dst_namespace": "shop",
                     "dst": "legacy", "secured": false, "server_id": null, "client_id": null,
                     "no_tls_reason": "not_provided_by_service_discovery", "requests": 300,
                     "rps": 5.0, "tcp_connections": 1, "stale": false, "error": null},
                ])),
            ),
            "/v1/routes" => (200, rows(serde_json::json!([]))),
            "/v1/workloads" => (200, serde_json::json!([])),
            "/v1/tap/shop/front" => (
                404,
                serde_json::json!({"error": "workload shop/front has no linkerd-tap port"}),
            ),
            _ => (
                404,
                serde_json::json!({"error": format!("no such endpoint: {path}")}),
            ),
        }
    }

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind stub");
    let addr = listener.local_addr().expect("stub addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let svc = hyper::service::service_fn(
                |req: hyper::Request<hyper::body::Incoming>| async move {
                    let path = req.uri().path().to_string();
                    let rsp = if weft_control::api::dashboard::owns(&path) {
                        weft_control::api::dashboard::handle(req.method(), &path)
                    } else {
                        let (status, body) = answer(&path);
                        hyper::Response::builder()
                            .status(status)
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from(body.to_string())))
                            .expect("response")
                    };
                    Ok::<_, std::convert::Infallible>(rsp)
                },
            );
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc),
            );
        }
    });
    addr
}
