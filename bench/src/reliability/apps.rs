//! The applications of the pool pods, run inside this process with sockets made in the pods'
//! namespaces (the pod's sidecar forwards to them as to any program in the pod): one listener
//! answering HTTP/1.1, h2c and unary gRPC with the backend's name in `x-backend`, and a TCP echo
//! for the opaque stream. In-process so the figures of memory and descriptors are those of the
//! mesh's processes alone, and so a backend's received count is exact.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::BodyExt as _;
use hyper::body::{Body, Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::AsyncWriteExt as _;
use weft_testbed::NamedNetns;

/// The workload port names and numbers of a pool pod.
pub const HTTP_PORT: u16 = 8080;
pub const TCP_PORT: u16 = 7000;

/// A task aborted when dropped (a backend dies with its handle).
pub struct Task(pub tokio::task::JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One pool pod's application.
pub struct PodBackend {
    pub name: String,
    received: Arc<AtomicU64>,
    _tasks: Vec<Task>,
}

impl PodBackend {
    /// Binds `0.0.0.0:8080` (HTTP) and `0.0.0.0:7000` (TCP echo) in `netns` and serves them.
    pub fn start(netns: &NamedNetns, name: &str) -> std::io::Result<PodBackend> {
        let http = netns.bind(SocketAddr::from(([0, 0, 0, 0], HTTP_PORT)))?;
        let tcp = netns.bind(SocketAddr::from(([0, 0, 0, 0], TCP_PORT)))?;
        let received = Arc::new(AtomicU64::new(0));
        let (n, r) = (name.to_string(), received.clone());
        let http_task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = http.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let (name, received) = (n.clone(), r.clone());
                conns.spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        received.fetch_add(1, Ordering::Relaxed);
                        answer(req, name.clone())
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
                while conns.try_join_next().is_some() {}
            }
        });
        let tcp_task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((mut stream, _)) = tcp.accept().await else {
                    continue;
                };
                conns.spawn(async move {
                    let (mut r, mut w) = stream.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                    let _ = w.shutdown().await;
                });
                while conns.try_join_next().is_some() {}
            }
        });
        Ok(PodBackend {
            name: name.to_string(),
            received,
            _tasks: vec![Task(http_task), Task(tcp_task)],
        })
    }

    /// HTTP requests (and gRPC calls) received so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

/// 200 with `x-backend: NAME`; a gRPC call (`content-type: application/grpc...`) gets its
/// request message back and `grpc-status: 0` in the trailers; anything else gets the name.
async fn answer(req: Request<Incoming>, name: String) -> Result<Response<OneShot>, Infallible> {
    let grpc = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    // The whole request is read: a request counts as delivered once it is in.
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut resp = Response::builder()
        .status(200)
        .header("x-backend", name.as_str());
    let body = if grpc {
        resp = resp.header(http::header::CONTENT_TYPE, "application/grpc");
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        OneShot::new(body, Some(trailers))
    } else {
        OneShot::new(Bytes::from(name), None)
    };
    Ok(resp
        .body(body)
        .unwrap_or_else(|_| Response::new(OneShot::new(Bytes::new(), None))))
}

/// A body of one data frame and optional trailers (what a unary gRPC answer is).
pub struct OneShot {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl OneShot {
    pub fn new(data: Bytes, trailers: Option<HeaderMap>) -> OneShot {
        OneShot {
            data: (!data.is_empty()).then_some(data),
            trailers,
        }
    }
}

impl Body for OneShot {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(data) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }
}
