//! Servers and clients that live in a `weft run` pod's network namespace but run inside the test
//! process: a socket keeps the namespace it was made in, so a listener bound there is the pod's
//! application (its sidecar forwards to it) and a connection made there goes through the pod's
//! iptables rules and outbound proxy, exactly as an unmodified program in the pod. The test keeps
//! full control: a [`Backend`] can be told to fail a share of requests or answer slowly, and counts
//! what it received; [`PodClient`] sends many requests over keep-alive connections and tallies
//! which backend answered.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fs::File;
use std::net::SocketAddr;
use std::os::fd::AsRawFd as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::apps::AbortOnDrop;
use super::BoxError;

/// An open handle on a named network namespace (`/run/netns/NAME`).
pub struct PodNet {
    fd: File,
}

impl PodNet {
    pub fn open(name: &str) -> PodNet {
        let fd = File::open(format!("/run/netns/{name}"))
            .unwrap_or_else(|e| panic!("opening namespace {name}: {e}"));
        PodNet { fd }
    }

    pub fn bind(&self, addr: SocketAddr) -> tokio::net::TcpListener {
        let l = weft_sys::in_netns(self.fd.as_raw_fd(), || {
            let l = std::net::TcpListener::bind(addr)?;
            l.set_nonblocking(true)?;
            Ok(l)
        })
        .unwrap_or_else(|e| panic!("binding {addr} in the pod: {e}"));
        tokio::net::TcpListener::from_std(l).expect("tokio listener")
    }

    /// A TCP connection made from inside the namespace (so it is intercepted by the pod's rules).
    pub async fn connect(&self, addr: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
        // A non-blocking socket made in the namespace, connected by tokio: no thread blocks on it.
        let socket = weft_sys::in_netns(self.fd.as_raw_fd(), || {
            let s = tokio::net::TcpSocket::new_v4()?;
            Ok(s)
        })?;
        let stream = tokio::time::timeout(Duration::from_secs(5), socket.connect(addr))
            .await
            .map_err(|_| std::io::Error::other(format!("connecting to {addr} timed out")))??;
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}

/// What a [`Backend`] does with each request; changed while it runs.
#[derive(Default)]
pub struct Knobs {
    /// Out of every 100 requests, how many answer 500 (spread evenly: request n fails when
    /// `n * fail / 100` steps up).
    pub fail_percent: AtomicU64,
    /// Extra delay before every answer, in milliseconds.
    pub delay_ms: AtomicU64,
}

/// An HTTP/1.1 and HTTP/2 (prior knowledge, as gRPC) server in a pod: answers every request
/// with its name (body and `x-backend`; the `l5d-client-id` its proxy gave it as `x-client-id`),
/// after `delay_ms`, or 500 for `fail_percent` of
/// requests. A path starting with `/sleep/MS`, or an `x-delay-ms: MS` header (gRPC paths are
/// fixed), answers MS milliseconds later.
pub struct Backend {
    pub name: String,
    pub knobs: Arc<Knobs>,
    received: Arc<AtomicU64>,
    bodies: Arc<AtomicU64>,
    /// The accept loop and every connection task: all aborted on drop, like a killed process.
    tasks: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
    _task: AbortOnDrop,
}

impl Drop for Backend {
    fn drop(&mut self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

impl Backend {
    pub fn start(pod: &PodNet, port: u16, name: &str) -> Backend {
        let listener = pod.bind(SocketAddr::from(([0, 0, 0, 0], port)));
        let knobs = Arc::new(Knobs::default());
        let received = Arc::new(AtomicU64::new(0));
        let bodies = Arc::new(AtomicU64::new(0));
        let state = (
            name.to_string(),
            knobs.clone(),
            received.clone(),
            bodies.clone(),
        );
        let tasks = Arc::new(std::sync::Mutex::new(Vec::new()));
        let conns = tasks.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let state = state.clone();
                let conn = tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (name, knobs, received, bodies) = state.clone();
                        async move {
                            let n = received.fetch_add(1, Ordering::SeqCst);
                            let path = req.uri().path().to_string();
                            let client_id = req.headers().get("l5d-client-id").cloned();
                            let asked_delay = req
                                .headers()
                                .get("x-delay-ms")
                                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                                .unwrap_or(0);
                            // Read the whole body: a request counts as delivered once it is in.
                            let body = req.into_body().collect().await.map(|b| b.to_bytes());
                            if body.as_ref().is_ok_and(|b| !b.is_empty()) {
                                bodies.fetch_add(1, Ordering::SeqCst);
                            }
                            let mut delay = knobs.delay_ms.load(Ordering::Relaxed) + asked_delay;
                            if let Some(ms) = path.strip_prefix("/sleep/") {
                                delay += ms.parse::<u64>().unwrap_or(0);
                            }
                            if delay > 0 {
                                tokio::time::sleep(Duration::from_millis(delay)).await;
                            }
                            let fail = knobs.fail_percent.load(Ordering::Relaxed);
                            let failing = (n + 1) * fail / 100 != n * fail / 100;
                            let status = if failing {
                                StatusCode::INTERNAL_SERVER_ERROR
                            } else {
                                StatusCode::OK
                            };
                            let mut resp = Response::builder()
                                .status(status)
                                .header("x-backend", name.as_str())
                                .body(Full::new(Bytes::from(name.clone())))
                                .expect("response");
                            if let Some(id) = client_id {
                                resp.headers_mut().insert("x-client-id", id);
                            }
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    // HTTP/2 with prior knowledge starts with the connection preface.
                    let mut first = [0u8; 3];
                    let h2 = matches!(stream.peek(&mut first).await, Ok(3) if &first == b"PRI");
                    if h2 {
                        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    } else {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    }
                });
                let mut conns = conns.lock().unwrap();
                conns.retain(|t: &tokio::task::AbortHandle| !t.is_finished());
                conns.push(conn.abort_handle());
            }
        });
        Backend {
            name: name.to_string(),
            knobs,
            received,
            bodies,
            tasks,
            _task: AbortOnDrop(task),
        }
    }

    /// Requests received so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::SeqCst)
    }

    /// Requests received with a non-empty body.
    pub fn bodies(&self) -> u64 {
        self.bodies.load(Ordering::SeqCst)
    }
}

/// One answer as the client saw it.
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: u16,
    /// `x-backend` (which backend answered), empty for proxy-generated answers.
    pub backend: String,
    /// `l5d-proxy-error`, empty when absent.
    pub proxy_error: String,
    /// `x-client-id`: the client identity the backend's proxy told it, empty when none.
    pub client_id: String,
    /// `grpc-status` of the response head (a trailers-only gRPC answer), empty when absent.
    pub grpc_status: String,
    pub elapsed: Duration,
    /// When the request was sent.
    pub sent: Instant,
}

impl Answer {
    fn failed(e: impl std::fmt::Display, sent: Instant) -> Answer {
        Answer {
            status: 0,
            backend: String::new(),
            proxy_error: format!("client error: {e}"),
            client_id: String::new(),
            grpc_status: String::new(),
            elapsed: sent.elapsed(),
            sent,
        }
    }
}

/// A tally of answers.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    pub answers: Vec<Answer>,
}

impl Tally {
    pub fn total(&self) -> usize {
        self.answers.len()
    }

    /// Answers per backend name (proxy-generated answers under `""`).
    pub fn by_backend(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for a in &self.answers {
            *m.entry(a.backend.clone()).or_default() += 1;
        }
        m
    }

    pub fn count(&self, f: impl Fn(&Answer) -> bool) -> usize {
        self.answers.iter().filter(|a| f(a)).count()
    }

    /// Answers that were not 200, with a few examples.
    pub fn failures(&self) -> (usize, Vec<Answer>) {
        let failed: Vec<_> = self
            .answers
            .iter()
            .filter(|a| a.status != 200)
            .cloned()
            .collect();
        (failed.len(), failed.into_iter().take(5).collect())
    }
}

/// An HTTP/1.1 client in a pod.
pub struct PodClient {
    pod: Arc<PodNet>,
}

impl PodClient {
    pub fn new(pod: PodNet) -> PodClient {
        PodClient { pod: Arc::new(pod) }
    }

    async fn open(
        pod: &PodNet,
        addr: SocketAddr,
    ) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, BoxError> {
        let stream = pod.connect(addr).await?;
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(send)
    }

    /// Sends one request on a fresh connection.
    pub async fn send(&self, addr: SocketAddr, req: Request<Full<Bytes>>) -> Answer {
        let started = Instant::now();
        let mut send = match Self::open(&self.pod, addr).await {
            Ok(s) => s,
            Err(e) => return Answer::failed(e, started),
        };
        exchange(&mut send, req, started).await
    }

    /// Sends one request over HTTP/2 with prior knowledge (as a gRPC client does) on a fresh
    /// connection.
    pub async fn send_h2(&self, addr: SocketAddr, req: Request<Full<Bytes>>) -> Answer {
        let started = Instant::now();
        let stream = match self.pod.connect(addr).await {
            Ok(s) => s,
            Err(e) => return Answer::failed(e, started),
        };
        let (mut send, conn) =
            match hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
            {
                Ok(h) => h,
                Err(e) => return Answer::failed(e, started),
            };
        tokio::spawn(async move {
            let _ = conn.await;
        });
        match send.send_request(req).await {
            Ok(resp) => answer(resp, started).await,
            Err(e) => Answer::failed(e, started),
        }
    }

    /// Sends `total` requests made by `make(i)` over `conns` keep-alive connections, as fast as
    /// the answers come. A connection that breaks is reopened (its request counts as failed).
    pub async fn run(
        &self,
        addr: SocketAddr,
        conns: usize,
        total: usize,
        make: impl Fn(usize) -> Request<Full<Bytes>> + Send + Sync + 'static,
    ) -> Tally {
        let make = Arc::new(make);
        let next = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for _ in 0..conns {
            let (pod, make, next) = (self.pod.clone(), make.clone(), next.clone());
            tasks.push(tokio::spawn(async move {
                let mut answers = Vec::new();
                let mut conn = None;
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst) as usize;
                    if i >= total {
                        return answers;
                    }
                    let started = Instant::now();
                    if conn
                        .as_ref()
                        .is_none_or(|c: &hyper::client::conn::http1::SendRequest<_>| c.is_closed())
                    {
                        match Self::open(&pod, addr).await {
                            Ok(c) => conn = Some(c),
                            Err(e) => {
                                answers.push(Answer::failed(e, started));
                                continue;
                            }
                        }
                    }
                    let send = conn.as_mut().expect("connection");
                    let answer = exchange(send, make(i), started).await;
                    if answer.status == 0 {
                        conn = None;
                    }
                    answers.push(answer);
                }
            }));
        }
        let mut tally = Tally::default();
        for t in tasks {
            tally.answers.extend(t.await.expect("client task"));
        }
        tally
    }
}

impl PodClient {
    /// Sends `total` requests made by `make(i)` at `per_sec` over one keep-alive connection (a
    /// steady, low rate: what a retry budget's floor covers).
    pub async fn run_paced(
        &self,
        addr: SocketAddr,
        total: usize,
        per_sec: u32,
        make: impl Fn(usize) -> Request<Full<Bytes>>,
    ) -> Tally {
        let mut tally = Tally::default();
        let mut tick = tokio::time::interval(Duration::from_secs(1) / per_sec);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut conn = None;
        for i in 0..total {
            tick.tick().await;
            let started = Instant::now();
            if conn
                .as_ref()
                .is_none_or(|c: &hyper::client::conn::http1::SendRequest<_>| c.is_closed())
            {
                match Self::open(&self.pod, addr).await {
                    Ok(c) => conn = Some(c),
                    Err(e) => {
                        tally.answers.push(Answer::failed(e, started));
                        continue;
                    }
                }
            }
            let answer = exchange(conn.as_mut().expect("connection"), make(i), started).await;
            if answer.status == 0 {
                conn = None;
            }
            tally.answers.push(answer);
        }
        tally
    }
}

async fn exchange(
    send: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    req: Request<Full<Bytes>>,
    started: Instant,
) -> Answer {
    if let Err(e) = send.ready().await {
        return Answer::failed(e, started);
    }
    match send.send_request(req).await {
        Ok(resp) => answer(resp, started).await,
        Err(e) => Answer::failed(e, started),
    }
}

/// Reads a response to its end into an [`Answer`].
async fn answer(resp: Response<Incoming>, started: Instant) -> Answer {
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let (status, backend, proxy_error, client_id, grpc_status) = (
        resp.status().as_u16(),
        header("x-backend"),
        header("l5d-proxy-error"),
        header("x-client-id"),
        header("grpc-status"),
    );
    if let Err(e) = resp.into_body().collect().await {
        return Answer::failed(e, started);
    }
    Answer {
        status,
        backend,
        proxy_error,
        client_id,
        grpc_status,
        elapsed: started.elapsed(),
        sent: started,
    }
}

/// A GET of `path` on `authority` (`Host` names the service, as a client in a pod sends it).
pub fn get(authority: &str, path: &str) -> Request<Full<Bytes>> {
    Request::get(path)
        .header(hyper::header::HOST, authority)
        .body(Full::new(Bytes::new()))
        .expect("request")
}

/// A unary gRPC call `POST /SERVICE/METHOD` to `authority` with an empty message, with
/// `grpc-timeout` when given (gRPC's `200m`, `2S` form).
pub fn grpc(authority: &str, path: &str, timeout: Option<&str>) -> Request<Full<Bytes>> {
    let mut req = Request::post(format!("http://{authority}{path}"))
        .header(hyper::header::CONTENT_TYPE, "application/grpc")
        .header("te", "trailers");
    if let Some(t) = timeout {
        req = req.header("grpc-timeout", t);
    }
    // A length-prefixed empty message: not compressed, length 0.
    req.body(Full::new(Bytes::from_static(&[0, 0, 0, 0, 0])))
        .expect("request")
}
