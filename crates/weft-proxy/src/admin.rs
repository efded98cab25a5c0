//! The admin server: `GET /metrics`, `GET /ready`, `GET /live`, `POST /shutdown`.
//!
//! Plain HTTP/1 on its own listener; it keeps serving while the proxy drains so the last metrics
//! can still be scraped. In a pod it listens on every address (the control plane scrapes it on
//! the pod IP), so `POST /shutdown` answers only loopback peers, as Linkerd's does.

use std::{convert::Infallible, net::SocketAddr, sync::Arc};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::{net::TcpListener, sync::Notify};

use crate::{discovery::Discovery, identity::Identity, metrics::Metrics};

/// What the admin endpoints read and trigger.
pub struct Admin {
    pub metrics: Metrics,
    pub discovery: Discovery,
    /// `Some` when identity is configured: `/ready` also waits for the first certificate.
    pub identity: Option<Identity>,
    /// `Some` when `POST /shutdown` is enabled: notified to start the drain.
    pub shutdown: Option<Arc<Notify>>,
}

/// Serves until the task is dropped or aborted.
pub async fn serve(listener: TcpListener, admin: Arc<Admin>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // Usually fd exhaustion: let other tasks release some before trying again.
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        // As on the proxy's other sockets: a scrape must not wait for a delayed ACK.
        let _ = stream.set_nodelay(true);
        let admin = admin.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let admin = admin.clone();
                async move { Ok::<_, Infallible>(route(&admin, req, peer)) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                tracing::debug!(%peer, error = %e, "admin connection error");
            }
        });
    }
}

/// Answers one request from `peer` (only the method and path are read).
fn route<B>(admin: &Admin, req: Request<B>, peer: SocketAddr) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => respond(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            admin.metrics.render(),
        ),
        (&Method::GET, "/ready") if is_ready(admin) => text(StatusCode::OK, "ready\n"),
        (&Method::GET, "/ready") => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        (&Method::GET, "/live") => text(StatusCode::OK, "live\n"),
        (&Method::POST, "/shutdown") => match &admin.shutdown {
            // The admin may be reachable from other hosts; only the pod itself may stop it.
            Some(_) if !peer.ip().to_canonical().is_loopback() => {
                tracing::info!(%peer, "shutdown refused: not a loopback peer");
                text(
                    StatusCode::FORBIDDEN,
                    "shutdown is only allowed from localhost\n",
                )
            }
            Some(n) => {
                tracing::info!("shutdown requested through the admin endpoint");
                n.notify_one();
                text(StatusCode::OK, "shutdown\n")
            }
            None => text(StatusCode::NOT_FOUND, "shutdown endpoint disabled\n"),
        },
        (_, "/metrics" | "/ready" | "/live" | "/shutdown") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// Ready = the control plane answered once and, with identity, the first certificate arrived.
fn is_ready(admin: &Admin) -> bool {
    admin.discovery.is_ready() && admin.identity.as_ref().is_none_or(Identity::is_ready)
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    respond(status, "text/plain", body.to_string())
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut rsp = Response::new(Full::new(Bytes::from(body)));
    *rsp.status_mut() = status;
    rsp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    rsp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::{collections::HashMap, net::SocketAddr, time::Duration};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// One HTTP/1.0-style exchange on a fresh connection: (status, body).
    async fn call(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let req =
            format!("{method} {path} HTTP/1.1\r\nHost: admin\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.expect("write");
        let mut buf = String::new();
        s.read_to_string(&mut buf).await.expect("read");
        let status = buf
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .expect("status line");
        let body = buf
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    }

    async fn start(shutdown: Option<Arc<Notify>>) -> (SocketAddr, Metrics) {
        // Nothing listens on port 1: discovery is never ready in these tests.
        let cfg = Config::from_env(&HashMap::from([
            ("WEFT_PROXY_DESTINATION_SVC_ADDR", "127.0.0.1:1"),
            ("WEFT_PROXY_POLICY_WORKLOAD", "default:web-1"),
        ]))
        .expect("config");
        let metrics = Metrics::new();
        let admin = Arc::new(Admin {
            metrics: metrics.clone(),
            discovery: Discovery::new(&cfg, None),
            identity: None,
            shutdown,
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(serve(listener, admin));
        (addr, metrics)
    }

    #[tokio::test]
    async fn endpoints() {
        let notify = Arc::new(Notify::new());
        let (addr, metrics) = start(Some(notify.clone())).await;
        let labels = crate::metrics::Labels {
            direction: crate::metrics::Direction::Inbound,
            authority: Some("web".into()),
            target_addr: "127.0.0.1:80".parse().expect("addr"),
            tls: crate::metrics::TlsLabel::NoIdentity(crate::metrics::NO_TLS_FROM_REMOTE),
            dst: Arc::default(),
        };
        metrics.http(&labels).request();

        let (status, body) = call(addr, "GET", "/metrics").await;
        assert_eq!(status, 200);
        assert!(
            body.contains("request_total{direction=\"inbound\""),
            "{body}"
        );
        assert_eq!(call(addr, "GET", "/live").await, (200, "live\n".into()));
        assert_eq!(call(addr, "GET", "/ready").await.0, 503);
        assert_eq!(call(addr, "GET", "/nope").await.0, 404);
        assert_eq!(call(addr, "GET", "/shutdown").await.0, 405);

        assert_eq!(call(addr, "POST", "/shutdown").await.0, 200);
        tokio::time::timeout(Duration::from_secs(5), notify.notified())
            .await
            .expect("shutdown notified");
    }

    #[tokio::test]
    async fn shutdown_only_from_loopback() {
        let notify = Arc::new(Notify::new());
        let cfg = Config::from_env(&HashMap::from([
            ("WEFT_PROXY_DESTINATION_SVC_ADDR", "127.0.0.1:1"),
            ("WEFT_PROXY_POLICY_WORKLOAD", "default:web-1"),
        ]))
        .expect("config");
        let admin = Admin {
            metrics: Metrics::new(),
            discovery: Discovery::new(&cfg, None),
            identity: None,
            shutdown: Some(notify.clone()),
        };
        let shutdown = || Request::post("/shutdown").body(()).expect("request");
        for peer in [
            "198.18.0.20:40000",
            "[2001:db8::1]:40000",
            "[::ffff:10.0.0.1]:1",
        ] {
            let rsp = route(&admin, shutdown(), peer.parse().expect("peer"));
            assert_eq!(rsp.status(), StatusCode::FORBIDDEN, "{peer}");
        }
        // Still served to anyone: the metrics.
        let metrics = Request::get("/metrics").body(()).expect("request");
        let rsp = route(&admin, metrics, "198.18.0.20:40000".parse().expect("peer"));
        assert_eq!(rsp.status(), StatusCode::OK);
        for peer in ["127.0.0.1:40000", "[::1]:40000", "[::ffff:127.0.0.1]:1"] {
            let rsp = route(&admin, shutdown(), peer.parse().expect("peer"));
            assert_eq!(rsp.status(), StatusCode::OK, "{peer}");
        }
        tokio::time::timeout(Duration::from_secs(5), notify.notified())
            .await
            .expect("shutdown notified");
    }

    #[tokio::test]
    async fn shutdown_disabled() {
        let (addr, _) = start(None).await;
        assert_eq!(call(addr, "POST", "/shutdown").await.0, 404);
    }
}
