//! Test applications the mesh carries traffic to, all in-process on 127.0.0.1 (or on a listener
//! the caller bound, e.g. inside a network namespace):
//! - [`EchoServer`]: HTTP/1.1 and h2c (prior knowledge) on one port; echoes method, path, version
//!   and every request header as `x-echo-*` response headers and streams the body back.
//! - [`WsEchoServer`]: a WebSocket echo server (tokio-tungstenite).
//! - [`Greeter`]: a server-speaks-first TCP server (greeting on accept, then line echo).
//! - [`GrpcServer`]: the `linkerd2-proxy-api` Identity (unary: `Certify` echoes its request) and
//!   Destination (server streaming: `Get` streams N updates) services, so no protoc is needed.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use linkerd2_proxy_api::destination as dst;
use linkerd2_proxy_api::identity as id;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Aborts the task when dropped, so a test's servers stop with the test.
pub struct AbortOnDrop(pub JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn bind_local() -> TcpListener {
    TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0")
}

/// Counts served requests and lets tests await a count.
#[derive(Clone)]
pub struct Counter {
    tx: Arc<watch::Sender<u64>>,
}

impl Counter {
    fn new() -> Counter {
        Counter {
            tx: Arc::new(watch::channel(0).0),
        }
    }

    fn incr(&self) {
        self.tx.send_modify(|c| *c += 1);
    }

    pub fn get(&self) -> u64 {
        *self.tx.borrow()
    }

    /// Waits until at least `n` have been counted; `false` on timeout.
    pub async fn wait_for(&self, n: u64, timeout: Duration) -> bool {
        let mut rx = self.tx.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|c| *c >= n))
            .await
            .map(|r| r.is_ok())
            .unwrap_or(false)
    }
}

/// HTTP/1.1 + h2c echo server.
pub struct EchoServer {
    pub addr: SocketAddr,
    pub name: String,
    pub requests: Counter,
    /// TCP connections accepted (the proxies' connection reuse towards the app shows here).
    pub connections: Counter,
    /// Requests that arrived carrying `l5d-orig-proto` (must stay 0: the proxy strips it).
    pub orig_proto_seen: Arc<AtomicU64>,
    _task: AbortOnDrop,
}

impl EchoServer {
    pub async fn start(name: &str) -> EchoServer {
        EchoServer::serve(name, bind_local().await)
    }

    /// Serves on a listener the caller bound (e.g. inside a network namespace).
    pub fn serve(name: &str, listener: TcpListener) -> EchoServer {
        let addr = listener.local_addr().expect("echo addr");
        let requests = Counter::new();
        let connections = Counter::new();
        let accepted = connections.clone();
        let orig_proto_seen = Arc::new(AtomicU64::new(0));
        let state = EchoState {
            name: name.to_string(),
            requests: requests.clone(),
            orig_proto_seen: orig_proto_seen.clone(),
        };
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                accepted.incr();
                let state = state.clone();
                tokio::spawn(async move {
                    let _ = serve_echo_conn(stream, state).await;
                });
            }
        });
        EchoServer {
            addr,
            name: name.to_string(),
            requests,
            connections,
            orig_proto_seen,
            _task: AbortOnDrop(task),
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// How many requests arrived carrying `l5d-orig-proto`.
    pub fn orig_protos(&self) -> u64 {
        self.orig_proto_seen.load(Ordering::Relaxed)
    }
}

/// A TCP app that echoes every byte back until the client half-closes.
pub async fn tcp_echo() -> (SocketAddr, AbortOnDrop) {
    let listener = bind_local().await;
    let addr = listener.local_addr().expect("tcp echo addr");
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = stream.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    (addr, AbortOnDrop(task))
}

#[derive(Clone)]
struct EchoState {
    name: String,
    requests: Counter,
    orig_proto_seen: Arc<AtomicU64>,
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Peeks at the first bytes: the HTTP/2 preface means h2c prior knowledge, anything else HTTP/1.
async fn is_h2_prior_knowledge(stream: &TcpStream) -> std::io::Result<bool> {
    let mut buf = [0u8; 24];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 || buf[..n] != H2_PREFACE[..n] {
            return Ok(false);
        }
        if n == H2_PREFACE.len() {
            return Ok(true);
        }
        if tokio::time::Instant::now() > deadline {
            return Ok(false);
        }
        // A partial preface is already buffered: peek would return at once, so back off a little.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn serve_echo_conn(stream: TcpStream, state: EchoState) -> Result<(), super::BoxError> {
    let h2 = is_h2_prior_knowledge(&stream).await?;
    let io = TokioIo::new(stream);
    let service = hyper::service::service_fn(move |req| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(echo(req, &state)) }
    });
    if h2 {
        hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(io, service)
            .await?;
    } else {
        hyper::server::conn::http1::Builder::new()
            .serve_connection(io, service)
            .await?;
    }
    Ok(())
}

type EchoBody = http_body_util::combinators::BoxBody<bytes::Bytes, hyper::Error>;

fn echo(req: Request<Incoming>, state: &EchoState) -> Response<EchoBody> {
    state.requests.incr();
    if req.headers().contains_key("l5d-orig-proto") {
        state.orig_proto_seen.fetch_add(1, Ordering::Relaxed);
    }
    let status = req
        .headers()
        .get("x-echo-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u16>().ok())
        .unwrap_or(200);
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let mut resp = Response::builder()
        .status(status)
        .header("x-echo-method", req.method().as_str())
        .header("x-echo-path", path)
        .header("x-echo-version", format!("{:?}", req.version()))
        .header("x-echo-server", state.name.as_str());
    for (name, value) in req.headers() {
        resp = resp.header(format!("x-echo-hdr-{name}"), value.clone());
    }
    let body = http_body_util::BodyExt::boxed(req.into_body());
    resp.body(body).unwrap_or_else(|e| {
        let text = http_body_util::Full::new(bytes::Bytes::from(format!("echo: {e}")));
        let mut resp = Response::new(http_body_util::BodyExt::boxed(
            http_body_util::BodyExt::map_err(text, |never| match never {}),
        ));
        *resp.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
        resp
    })
}

/// WebSocket echo server.
pub struct WsEchoServer {
    pub addr: SocketAddr,
    pub connections: Counter,
    _task: AbortOnDrop,
}

impl WsEchoServer {
    pub async fn start() -> WsEchoServer {
        let listener = bind_local().await;
        let addr = listener.local_addr().expect("ws addr");
        let connections = Counter::new();
        let counter = connections.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let counter = counter.clone();
                tokio::spawn(async move {
                    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                        return;
                    };
                    counter.incr();
                    while let Some(Ok(msg)) = ws.next().await {
                        if msg.is_close() {
                            let _ = ws.close(None).await;
                            break;
                        }
                        if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        WsEchoServer {
            addr,
            connections,
            _task: AbortOnDrop(task),
        }
    }
}

/// Server-speaks-first TCP server: writes [`Greeter::GREETING`] on accept, then echoes.
pub struct Greeter {
    pub addr: SocketAddr,
    _task: AbortOnDrop,
}

impl Greeter {
    pub const GREETING: &'static [u8] = b"220 weft-greeter ready\r\n";

    pub async fn start() -> Greeter {
        let listener = bind_local().await;
        let addr = listener.local_addr().expect("greeter addr");
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    if stream.write_all(Greeter::GREETING).await.is_err() {
                        return;
                    }
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if stream.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                });
            }
        });
        Greeter {
            addr,
            _task: AbortOnDrop(task),
        }
    }
}

/// gRPC server implementing Identity (unary) and Destination (server streaming).
pub struct GrpcServer {
    pub addr: SocketAddr,
    pub calls: Counter,
    /// Released by the test to let a `gated:N` stream send its messages after the first.
    pub gate: Arc<tokio::sync::Notify>,
    _task: AbortOnDrop,
}

#[derive(Clone)]
struct GrpcApp {
    name: String,
    calls: Counter,
    gate: Arc<tokio::sync::Notify>,
}

impl GrpcServer {
    pub async fn start(name: &str) -> GrpcServer {
        let listener = bind_local().await;
        let addr = listener.local_addr().expect("grpc addr");
        let calls = Counter::new();
        let gate = Arc::new(tokio::sync::Notify::new());
        let app = GrpcApp {
            name: name.to_string(),
            calls: calls.clone(),
            gate: gate.clone(),
        };
        let task = tokio::spawn(async move {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            let _ = tonic::transport::Server::builder()
                .add_service(id::identity_server::IdentityServer::new(app.clone()))
                .add_service(dst::destination_server::DestinationServer::new(app))
                .serve_with_incoming(incoming)
                .await;
        });
        GrpcServer {
            addr,
            calls,
            gate,
            _task: AbortOnDrop(task),
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

#[tonic::async_trait]
impl id::identity_server::Identity for GrpcApp {
    /// Echo: the leaf certificate is the CSR sent, the intermediates are the identity and token,
    /// plus the server's name.
    async fn certify(
        &self,
        request: tonic::Request<id::CertifyRequest>,
    ) -> Result<tonic::Response<id::CertifyResponse>, tonic::Status> {
        self.calls.incr();
        if request.metadata().contains_key("l5d-orig-proto") {
            return Err(tonic::Status::internal("l5d-orig-proto reached the app"));
        }
        let req = request.into_inner();
        if req.identity == "fail" {
            return Err(tonic::Status::permission_denied("asked to fail"));
        }
        Ok(tonic::Response::new(id::CertifyResponse {
            leaf_certificate: req.certificate_signing_request,
            intermediate_certificates: vec![
                req.identity.into_bytes(),
                req.token,
                self.name.clone().into_bytes(),
            ],
            valid_until: None,
        }))
    }
}

type UpdateStream =
    Pin<Box<dyn futures_util::Stream<Item = Result<dst::Update, tonic::Status>> + Send>>;
type ProfileStream = Pin<
    Box<dyn futures_util::Stream<Item = Result<dst::DestinationProfile, tonic::Status>> + Send>,
>;

/// One streamed update carrying its sequence number in the set's metric labels.
pub fn seq_of(update: &dst::Update) -> Option<u64> {
    match update.update.as_ref()? {
        dst::update::Update::Add(set) => set.metric_labels.get("seq")?.parse().ok(),
        _ => None,
    }
}

#[tonic::async_trait]
impl dst::destination_server::Destination for GrpcApp {
    type GetStream = UpdateStream;
    type GetProfileStream = ProfileStream;

    /// `path` = `N` streams N updates; `gated:N` sends the first, waits for the test's gate,
    /// then sends the rest (proving the proxy streams instead of buffering).
    async fn get(
        &self,
        request: tonic::Request<dst::GetDestination>,
    ) -> Result<tonic::Response<Self::GetStream>, tonic::Status> {
        self.calls.incr();
        let path = request.into_inner().path;
        let (gated, count) = match path.strip_prefix("gated:") {
            Some(n) => (true, n),
            None => (false, path.as_str()),
        };
        let count: u64 = count
            .parse()
            .map_err(|_| tonic::Status::invalid_argument(format!("bad count {path:?}")))?;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let gate = self.gate.clone();
        let name = self.name.clone();
        tokio::spawn(async move {
            for seq in 0..count {
                if gated && seq == 1 {
                    gate.notified().await;
                }
                let set = dst::WeightedAddrSet {
                    addrs: Vec::new(),
                    metric_labels: [
                        ("seq".to_string(), seq.to_string()),
                        ("server".to_string(), name.clone()),
                    ]
                    .into_iter()
                    .collect(),
                };
                let update = dst::Update {
                    update: Some(dst::update::Update::Add(set)),
                };
                if tx.send(Ok(update)).await.is_err() {
                    return;
                }
            }
        });
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        Ok(tonic::Response::new(Box::pin(stream)))
    }

    /// Always an error status, to check that non-OK statuses cross the mesh intact.
    async fn get_profile(
        &self,
        _request: tonic::Request<dst::GetDestination>,
    ) -> Result<tonic::Response<Self::GetProfileStream>, tonic::Status> {
        self.calls.incr();
        Err(tonic::Status::not_found("no profile here"))
    }
}
