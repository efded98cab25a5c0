//! HTTP plumbing shared by the outbound and inbound paths: the body type, proxy errors and the one
//! place they become responses (`l5d-proxy-error`), serving an accepted connection (HTTP/1 with
//! hyper, HTTP/2 on `h2` directly), protocol conversion (`l5d-orig-proto`), upgrades, and response
//! metrics. The client connection pool (lifetimes, retries) is the submodule [`pool`].

use crate::{
    connect::ConnectError,
    detect::Protocol,
    limits::{Limit, Limits},
};
use bytes::Bytes;
use http::{
    header, HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, Version,
};
use http_body::Frame;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Empty, Full};
use hyper::{body::Incoming, server::conn::http1 as server1, service::Service};
use hyper_util::rt::TokioIo;
use std::{
    convert::Infallible,
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    task::{Context, Poll, Wake, Waker},
    time::{Duration, Instant},
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    sync::watch,
};

pub use crate::metrics::{HttpMetrics, Metrics, Peer};
pub use pool::{Dst, Pool, PoolLimits, Tagged, Wire};

mod h2client;
mod h2common;
mod h2server;
pub mod pool;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Every body the proxy handles: streamed request/response bodies and its own small ones.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

// Header names as `HeaderName`s: a lookup by `&str` parses the name again on every call (a few
// hundred instructions each, several times per request).
pub const L5D_ORIG_PROTO: HeaderName = HeaderName::from_static("l5d-orig-proto");
pub const L5D_PROXY_ERROR: HeaderName = HeaderName::from_static("l5d-proxy-error");
pub const L5D_CLIENT_ID: HeaderName = HeaderName::from_static("l5d-client-id");
pub const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
pub const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

pub fn boxed<B>(body: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

pub fn empty() -> Body {
    boxed(Empty::<Bytes>::new())
}

/// Where an error happened (the distinction pingora's errors make): what a retry policy, a log
/// line or a metric needs to know about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The client or its request (no authority, no identity on a port that requires one).
    Downstream,
    /// The endpoint or the way to it (connect, TLS, HTTP handshake, the request itself, DNS).
    Upstream,
    /// The proxy's own decision: no endpoints in time, a request loop.
    Internal,
}

/// What can go wrong forwarding one request, in either direction; each variant has its status
/// code, its [`Side`] and whether a retry is safe ([`Error::retry_safe`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no endpoints for {target} after {timeout:?}")]
    Unavailable { target: String, timeout: Duration },
    /// No connection to the endpoint (refused, no route, timed out, TLS refused or failed).
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// Relaying an opaque stream or a tunnel failed after the connection was made.
    #[error("relaying to {addr}: {source}")]
    Relay { addr: SocketAddr, source: io::Error },
    /// The HTTP/1 (hyper) or HTTP/2 (`h2`) handshake failed.
    #[error("HTTP handshake with {addr}: {}", chain(source.as_ref()))]
    Handshake { addr: SocketAddr, source: BoxError },
    #[error("request to {addr} failed: {}", chain(source.as_ref()))]
    Upstream {
        addr: SocketAddr,
        source: BoxError,
        /// The endpoint provably did not process the request (it never left, or the HTTP/2
        /// peer refused the stream): sending it again cannot repeat its effects.
        unprocessed: bool,
    },
    #[error("cannot resolve {host}: {reason}")]
    Dns { host: String, reason: String },
    #[error("request has no authority to route on")]
    NoAuthority,
    /// The destination is one of this proxy's own outbound listeners: forwarding would loop.
    #[error(
        "refusing to forward to {addr}: it is this proxy's own outbound listener (a request loop)"
    )]
    Loop { addr: SocketAddr },
    /// This proxy has identity but had no certificate by the fail-fast deadline: a meshed
    /// peer is never called in plaintext instead.
    #[error(
        "no certificate for this proxy yet after {timeout:?}: the request to {peer} is not sent \
         (a meshed peer is never called in plaintext); is the workload registered and the \
         identity service reachable?"
    )]
    NoCertificate { peer: String, timeout: Duration },
    /// Inbound: the port requires a mutually authenticated client and this one is not.
    #[error("port {port} requires a client identity (mTLS); this connection has none: {why}")]
    IdentityRequired { port: u16, why: &'static str },
    /// Inbound policy: no authorization of the route (HTTP) or server (opaque) admits the
    /// client. `client` and `target` are phrased for the reader: `client ID` or
    /// `unauthenticated client from IP`; `route NAME on server KIND:NAME`.
    #[error("{client} is not authorized to access {target}")]
    Unauthorized { client: String, target: String },
    /// Inbound policy: the server's HTTP local rate limit has no token for this authorized
    /// request (429, `Retry-After`; gRPC RESOURCE_EXHAUSTED). `server` is `KIND:NAME`, `scope`
    /// the bucket (`total`, `identity`, `override`), `policy` the rate limit policy.
    #[error(
        "rate limit exceeded on server {server}: the {scope} limit of {rps} requests per second \
         ({policy})"
    )]
    RateLimited {
        server: String,
        scope: &'static str,
        rps: u32,
        policy: String,
    },
    /// Policy: no route of the target's (outbound) or server's (inbound) policy matches the
    /// request.
    #[error("no route found for request to {target}")]
    NoRoute { target: String },
    /// Outbound policy: a failure injector answered instead of the backend.
    #[error("injected failure: {message}")]
    Injected {
        status: StatusCode,
        /// The gRPC status answered to a gRPC request.
        grpc: Option<u32>,
        message: String,
    },
    /// Outbound policy: the route's request timeout (or the client's `grpc-timeout`, or the
    /// backend's request timeout) expired before the response headers.
    #[error("{what} timeout of {timeout:?} expired")]
    Timeout {
        what: &'static str,
        timeout: Duration,
    },
    /// Outbound policy: part of the policy this request needs could not be used.
    #[error("invalid policy: {reason}")]
    BadPolicy { reason: String },
    /// Outbound policy: the opaque or TLS route's `Forbidden` filter refuses the connection
    /// (an `EgressNetwork` under `Deny`), or no TLS route takes it. `by`: the policy's parent
    /// and the route (or why no route took it).
    #[error("connection to {target} forbidden by policy ({by})")]
    Forbidden { target: String, by: String },
    /// Inbound gateway mode: the connection's transport header names a target this gateway
    /// does not forward to (why: not a gateway, outside its suffixes, no client identity, a
    /// loop back to itself).
    #[error("the gateway refuses to forward to {name}: {why}")]
    GatewayRefused { name: String, why: &'static str },
}

/// An error and its causes, `a: b: c` (hyper's own message is often just "http2 error"; the
/// cause says which, e.g. a keep-alive timeout).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.ends_with(&text) {
            out += ": ";
            out += &text;
        }
        source = s.source();
    }
    out
}

impl Error {
    pub fn side(&self) -> Side {
        match self {
            Error::NoAuthority
            | Error::IdentityRequired { .. }
            | Error::Unauthorized { .. }
            | Error::RateLimited { .. }
            | Error::GatewayRefused { .. } => Side::Downstream,
            Error::Connect(_)
            | Error::Relay { .. }
            | Error::Handshake { .. }
            | Error::Upstream { .. }
            | Error::Dns { .. } => Side::Upstream,
            Error::Unavailable { .. }
            | Error::Loop { .. }
            | Error::NoCertificate { .. }
            | Error::NoRoute { .. }
            | Error::Injected { .. }
            | Error::Timeout { .. }
            | Error::BadPolicy { .. }
            | Error::Forbidden { .. } => Side::Internal,
        }
    }

    /// Can the request be sent again without repeating its effects? Only when it never reached
    /// the application: no connection (or no HTTP handshake) was made, or the endpoint provably
    /// did not process it.
    /// No connection to the endpoint could be made (TCP, TLS or the HTTP handshake failed):
    /// the request never left, so it may go to another endpoint whatever it is.
    pub fn not_connected(&self) -> bool {
        matches!(self, Error::Connect(_) | Error::Handshake { .. })
    }

    pub fn retry_safe(&self) -> bool {
        match self {
            Error::Connect(_) | Error::Handshake { .. } | Error::NoCertificate { .. } => true,
            Error::Upstream { unprocessed, .. } => *unprocessed,
            _ => false,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Error::Unavailable { .. } | Error::NoCertificate { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Error::NoAuthority => StatusCode::BAD_REQUEST,
            Error::Loop { .. } => StatusCode::LOOP_DETECTED,
            Error::IdentityRequired { .. }
            | Error::Unauthorized { .. }
            | Error::Forbidden { .. }
            | Error::GatewayRefused { .. } => StatusCode::FORBIDDEN,
            Error::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::Connect(_)
            | Error::Relay { .. }
            | Error::Handshake { .. }
            | Error::Upstream { .. }
            | Error::Dns { .. } => StatusCode::BAD_GATEWAY,
            Error::NoRoute { .. } => StatusCode::NOT_FOUND,
            Error::Injected { status, .. } => *status,
            Error::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Error::BadPolicy { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `grpc-status` a gRPC client gets for this error (Linkerd's choices; a timeout is
    /// DEADLINE_EXCEEDED, the gRPC meaning of an expired deadline).
    pub fn grpc_code(&self) -> u32 {
        match self {
            Error::NoRoute { .. } => 5,
            Error::Injected { grpc, .. } => grpc.unwrap_or(2),
            Error::Timeout { .. } => 4,
            Error::BadPolicy { .. } => 13,
            Error::Loop { .. } => 10,
            Error::NoAuthority => 3,
            Error::IdentityRequired { .. }
            | Error::Unauthorized { .. }
            | Error::Forbidden { .. }
            | Error::GatewayRefused { .. } => 7,
            Error::RateLimited { .. } => 8,
            _ => 14,
        }
    }

    /// `Retry-After` (seconds) of a refusal that passes with time: a rate limit's buckets
    /// refill within a second.
    fn retry_after(&self) -> Option<HeaderValue> {
        matches!(self, Error::RateLimited { .. }).then(|| HeaderValue::from_static("1"))
    }

    /// Logs a refusal: at info level, except rate limiting, which a flood would turn into as
    /// many lines as requests (counted in its metric instead).
    fn log(&self, reason: &str, what: &str) {
        if matches!(self, Error::RateLimited { .. }) {
            tracing::debug!(error = %reason, "{what}");
        } else {
            tracing::info!(error = %reason, "{what}");
        }
    }

    /// The single place proxy errors become responses.
    pub fn into_response(self) -> Response<Body> {
        let reason = self.to_string();
        self.log(&reason, "proxy error response");
        let value = header_text(&reason);
        let mut resp = Response::new(boxed(Full::new(Bytes::from(reason + "\n"))));
        *resp.status_mut() = self.status();
        resp.headers_mut().insert(L5D_PROXY_ERROR, value);
        if let Some(after) = self.retry_after() {
            resp.headers_mut().insert(header::RETRY_AFTER, after);
        }
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        resp
    }

    /// The same for a gRPC request: trailers-only (HTTP 200, `grpc-status`, `grpc-message`,
    /// `l5d-proxy-error`, no body), as Linkerd answers gRPC clients.
    pub fn into_grpc_response(self) -> Response<Body> {
        let reason = self.to_string();
        self.log(&reason, "proxy error response (gRPC)");
        let value = header_text(&reason);
        let mut resp = Response::new(empty());
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        h.insert(GRPC_STATUS, HeaderValue::from(self.grpc_code()));
        h.insert("grpc-message", value.clone());
        h.insert(L5D_PROXY_ERROR, value);
        resp
    }

    /// [`Error::into_grpc_response`] for gRPC requests, [`Error::into_response`] otherwise.
    pub fn into_response_for(self, grpc: bool) -> Response<Body> {
        if grpc {
            self.into_grpc_response()
        } else {
            self.into_response()
        }
    }
}

/// A reason as a header value (non-ASCII and control characters become spaces).
fn header_text(reason: &str) -> HeaderValue {
    HeaderValue::from_str(&reason.replace(|c: char| !c.is_ascii() || c.is_ascii_control(), " "))
        .unwrap_or_else(|_| HeaderValue::from_static("proxy error"))
}

/// Is this a gRPC request (HTTP/2 with `content-type: application/grpc...`)? Errors answer it
/// with trailers-only gRPC responses.
pub fn is_grpc<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_2
        && req
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// Serves one accepted connection as HTTP/1 (with upgrades, hyper's server) or HTTP/2 (on `h2`
/// directly, [`h2server`]) until it closes; when `drain` flips, stops taking new requests and
/// lets in-flight ones finish.
///
/// `limits` hold here: an HTTP/1 request head over its size is answered 431 and the connection
/// closed; an HTTP/1 connection whose next request head has not fully arrived within the idle
/// timeout (idle between requests, or dribbling its head) is closed; an HTTP/2 connection
/// announces the stream limit (h2 refuses streams beyond it with REFUSED_STREAM), is shut down
/// gracefully once no stream started for an idle timeout, and closed when its handshake takes
/// longer than that. Each closing is counted.
///
/// Memory per connection: the connection's state is boxed at its own protocol's size (the
/// caller's future does not carry the larger of HTTP/1 and HTTP/2 inline), and an HTTP/1
/// request's service future is boxed per request, so an idle keep-alive connection does not keep
/// a slot as large as a whole request in flight (hyper allocates that slot once per connection).
pub async fn serve<I, S>(
    io: I,
    protocol: Protocol,
    svc: S,
    mut drain: watch::Receiver<bool>,
    limits: &Limits,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<RequestBody>, Response = Response<Body>, Error = Infallible>
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    if protocol == Protocol::Http2 {
        // Keep-alive both ways: a client that went silent (partition, crash without FIN) is
        // noticed and its connection closed instead of lingering until a drain waits on it.
        let keep_alive = h2common::KeepAlive {
            interval: pool::H2_KEEPALIVE_INTERVAL,
            timeout: pool::H2_KEEPALIVE_TIMEOUT,
        };
        let result = Box::pin(h2server::serve(io, svc, &mut drain, keep_alive, limits)).await;
        if let Err(e) = result {
            if let Some(limit) = h2server::limit_of(&*e) {
                limits.count(limit);
            }
            tracing::debug!(error = %e, "client connection ended with an error");
        }
        return;
    }
    let settings = &limits.settings;
    let io = TokioIo::new(io);
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        Box::pin(svc.call(req.map(RequestBody::Http1)))
    });
    // hyper's head timeout runs from the moment it waits for a request head, so it is also the
    // idle timeout between requests.
    let mut conn = Box::pin(
        server1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(settings.idle_timeout)
            .max_header_size(settings.http1_max_header_size)
            .serve_connection(io, svc)
            .with_upgrades(),
    );
    let result = tokio::select! {
        r = conn.as_mut() => r,
        // Polled again only when the drain signal woke the task, not on each of the
        // connection's wake-ups.
        _ = WhenWoken::new(drain_started(&mut drain)) => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        if e.is_parse_too_large() {
            limits.count(Limit::HeaderSize);
        } else if e.is_timeout() {
            limits.count(Limit::IdleTimeout);
        }
        tracing::debug!(error = %e, "client connection ended with an error");
    }
}

/// A request body as a server connection received it.
pub enum RequestBody {
    /// From hyper's HTTP/1 server.
    Http1(Incoming),
    /// From an HTTP/2 stream ([`h2server`]).
    Http2(h2common::RecvBody),
    /// None: an HTTP/2 CONNECT request (its stream is the tunnel).
    Empty,
}

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            RequestBody::Http1(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            RequestBody::Http2(b) => Pin::new(b).poll_frame(cx),
            RequestBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Http1(b) => b.is_end_stream(),
            RequestBody::Http2(b) => b.is_end_stream(),
            RequestBody::Empty => true,
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            RequestBody::Http1(b) => b.size_hint(),
            RequestBody::Http2(b) => b.size_hint(),
            RequestBody::Empty => http_body::SizeHint::with_exact(0),
        }
    }
}

/// A connection taken over by an upgrade: an HTTP/1 upgrade or CONNECT (hyper's), or an HTTP/2
/// CONNECT stream.
pub type Upgraded = tokio_util::either::Either<TokioIo<hyper::upgrade::Upgraded>, h2server::Tunnel>;

/// The connection `req` (an upgrade or CONNECT request, as served) turns into once its 2xx or 101
/// response has gone out.
pub fn upgrade_on<B>(req: &mut Request<B>) -> OnUpgrade {
    match req
        .extensions_mut()
        .remove::<h2server::PendingTunnel>()
        .and_then(|t| t.take())
    {
        Some(tunnel) => OnUpgrade::Http2(tunnel),
        None => OnUpgrade::Http1(hyper::upgrade::on(req)),
    }
}

/// The wait for [`upgrade_on`]'s connection.
pub enum OnUpgrade {
    Http1(hyper::upgrade::OnUpgrade),
    Http2(tokio::sync::oneshot::Receiver<h2server::Tunnel>),
}

impl Future for OnUpgrade {
    type Output = Result<Upgraded, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            OnUpgrade::Http1(u) => Pin::new(u)
                .poll(cx)
                .map(|r| Ok(Upgraded::Left(TokioIo::new(r?)))),
            OnUpgrade::Http2(t) => Pin::new(t).poll(cx).map(|r| match r {
                Ok(tunnel) => Ok(Upgraded::Right(tunnel)),
                Err(_) => Err("the HTTP/2 CONNECT stream ended before its tunnel opened".into()),
            }),
        }
    }
}

/// Resolves when draining starts; never if the runtime went away without draining.
async fn drain_started(drain: &mut watch::Receiver<bool>) {
    if drain.wait_for(|d| *d).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// A future polled only on its first poll and after it woke its task itself. Beside another
/// future in a `select!` that wakes often (a connection: every read and write), re-polling a
/// future that is waiting on a channel costs a lock on the channel's waiters each time, several
/// times per request.
pub(crate) struct WhenWoken<F> {
    inner: Pin<Box<F>>,
    flag: Arc<WakeFlag>,
    first: bool,
}

#[derive(Default)]
struct WakeFlag {
    woken: AtomicBool,
    task: futures_util::task::AtomicWaker,
}

impl Wake for WakeFlag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<F: Future> WhenWoken<F> {
    pub(crate) fn new(inner: F) -> WhenWoken<F> {
        WhenWoken {
            inner: Box::pin(inner),
            flag: Arc::default(),
            first: true,
        }
    }
}

impl<F: Future> Future for WhenWoken<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        // Registered before the flag is read: a wake in between wakes this task again.
        this.flag.task.register(cx.waker());
        let woken = this.flag.woken.swap(false, Ordering::AcqRel);
        if !(woken || std::mem::take(&mut this.first)) {
            return Poll::Pending;
        }
        let waker = Waker::from(this.flag.clone());
        this.inner.as_mut().poll(&mut Context::from_waker(&waker))
    }
}

/// Is this an HTTP/1 protocol upgrade (WebSocket) or a CONNECT tunnel?
pub fn is_upgrade<B>(req: &Request<B>) -> bool {
    if req.method() == Method::CONNECT {
        return true;
    }
    req.version() <= Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && req
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// The authority a request names: the URI's (absolute-form, HTTP/2 `:authority`) or `Host`.
pub fn authority_of<B>(req: &Request<B>) -> Option<String> {
    authority_str(req).map(str::to_string)
}

/// [`authority_of`], borrowed from the request.
pub fn authority_str<B>(req: &Request<B>) -> Option<&str> {
    if let Some(a) = req.uri().authority() {
        return Some(a.as_str());
    }
    let host = req.headers().get(header::HOST)?.to_str().ok()?;
    (!host.is_empty()).then_some(host)
}

/// A hop-by-hop field [`strip_hop_by_hop`] removes (standard names compare as enum tags).
pub(crate) fn is_hop_by_hop(n: &HeaderName) -> bool {
    n == header::CONNECTION
        || n == header::UPGRADE
        || n == header::TRANSFER_ENCODING
        || n == KEEP_ALIVE
        || n == PROXY_CONNECTION
}

/// Removes hop-by-hop headers (RFC 9110 §7.6.1) before a request or response goes to the next
/// hop; `Upgrade`/`Connection` are kept on upgrade requests, which need them end to end.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // Mostly there are none: one pass over the names costs less than five removals that each
    // hash a name and probe.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    if !keep_upgrade {
        let named: Vec<String> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|t| t.trim().to_ascii_lowercase())
            .filter(|t| !t.is_empty())
            .collect();
        for name in named {
            headers.remove(name.as_str());
        }
        headers.remove(header::CONNECTION);
        headers.remove(header::UPGRADE);
    }
    headers.remove(KEEP_ALIVE);
    headers.remove(PROXY_CONNECTION);
    headers.remove(header::TRANSFER_ENCODING);
}

/// Rewrites an HTTP/1 request to travel as HTTP/2 between proxies: absolute URI with the original
/// Host as `:authority`, marked `l5d-orig-proto: HTTP/1.1`. `Host` itself stays on the request
/// (equal to `:authority`): a peer that downgrades by forwarding the request as received — as
/// Linkerd's inbound does — must still hand the application a `Host`.
pub fn upgrade_to_h2(req: &mut Request<Body>) {
    // The authority is taken as it is (a shared `Bytes`), not copied into a string and parsed
    // again.
    let (authority, host) = match req.uri().authority() {
        // RFC 9110 §7.2: a proxy replaces Host with the request target's authority.
        Some(a) => (Some(a.clone()), HeaderValue::from_str(a.as_str()).ok()),
        None => match req.headers().get(header::HOST).filter(|h| !h.is_empty()) {
            Some(h) => (
                ::http::uri::Authority::try_from(h.as_bytes()).ok(),
                // The first `Host` is the one that stays (a second one would reach the app).
                Some(h.clone()),
            ),
            None => (None, None),
        },
    };
    if let Some(a) = authority {
        // From parts, not from text: `OPTIONS *` keeps its asterisk-form target (`:path: *`,
        // RFC 9113 §8.3.1), which `http://{host}*` would have turned into the host `host*`.
        let mut parts = ::http::uri::Parts::default();
        parts.scheme = Some(::http::uri::Scheme::HTTP);
        parts.authority = Some(a);
        parts.path_and_query = Some(
            req.uri()
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| ::http::uri::PathAndQuery::from_static("/")),
        );
        if let Ok(uri) = Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
    if let Some(host) = host {
        req.headers_mut().insert(header::HOST, host);
    }
    strip_hop_by_hop(req.headers_mut(), false);
    req.headers_mut()
        .insert(L5D_ORIG_PROTO, HeaderValue::from_static("HTTP/1.1"));
    *req.version_mut() = Version::HTTP_2;
}

/// A request a peer proxy carried over HTTP/2 for an HTTP/1 client (`l5d-orig-proto:
/// HTTP/1.1`, the header removed here) goes on as the HTTP/1.1 request it was; true if so.
#[inline]
pub fn take_orig_http1(req: &mut Request<Body>) -> bool {
    let orig_http1 = req.version() == Version::HTTP_2
        && req
            .headers_mut()
            .remove(L5D_ORIG_PROTO)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"HTTP/1.1"));
    if orig_http1 {
        to_http1(req, false);
    }
    orig_http1
}

/// A request to a gateway endpoint takes the endpoint's authority override as its authority
/// (URI and `Host`), as Linkerd's outbound does: the linked cluster's workload, its routes and
/// its authorizations see the service's own name there (`web.ns.svc.cluster.local:8080`), not
/// the mirror's (`web-west`).
pub fn override_authority(req: &mut Request<Body>, to: &crate::discovery::AuthorityOverride) {
    let mut parts = std::mem::take(req.uri_mut()).into_parts();
    parts.scheme = Some(::http::uri::Scheme::HTTP);
    parts.authority = Some(to.authority.clone());
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(::http::uri::PathAndQuery::from_static("/"));
    }
    if let Ok(uri) = Uri::from_parts(parts) {
        *req.uri_mut() = uri;
    }
    req.headers_mut()
        .insert(header::HOST, to.host_header.clone());
}

/// Rewrites a request for an HTTP/1 hop: origin-form URI and exactly one `Host`. When the request
/// names an authority (absolute-form, HTTP/2 `:authority`) that is the Host (RFC 9110 §7.2,
/// RFC 9113 §8.3.1), replacing whatever `Host` came along, so a request upgraded by a peer that
/// kept `Host` (ours, Linkerd's) does not reach the application with two.
pub fn to_http1(req: &mut Request<Body>, keep_upgrade: bool) {
    if let Some(v) = req
        .uri()
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    {
        // `insert` replaces every value already there.
        req.headers_mut().insert(header::HOST, v);
    }
    // CONNECT keeps its authority-form target; a URI already in origin form stays as it is.
    if req.method() != Method::CONNECT
        && (req.uri().scheme().is_some() || req.uri().authority().is_some())
    {
        let uri = match req.uri().path_and_query() {
            // `http://web?q` has the path-and-query `?q`: its origin form is `/?q`.
            Some(p) if !p.as_str().starts_with(['/', '*']) => {
                Uri::try_from(format!("/{}", p.as_str())).ok()
            }
            // The path-and-query is shared, not parsed again.
            Some(p) => Uri::from_parts({
                let mut parts = ::http::uri::Parts::default();
                parts.path_and_query = Some(p.clone());
                parts
            })
            .ok(),
            None => Some(Uri::from_static("/")),
        };
        if let Some(uri) = uri {
            *req.uri_mut() = uri;
        }
    }
    strip_hop_by_hop(req.headers_mut(), keep_upgrade);
    *req.version_mut() = Version::HTTP_11;
}

/// Wraps a response so `response_total` / `response_latency_ms` are recorded once, when the body
/// ends (so gRPC trailers and stream errors classify it). `hold` lives until then too (the
/// balancer's in-flight guard: a streaming response still loads its endpoint).
pub fn metered_response<B>(
    resp: Response<B>,
    metrics: HttpMetrics,
    started: Instant,
    hold: Option<Box<dyn std::any::Any + Send>>,
) -> Response<Body>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let status = resp.status().as_u16();
    let grpc_status = grpc_status(resp.headers());
    let latency = started.elapsed();
    resp.map(|body| {
        let record = Record {
            metrics,
            status,
            grpc_status,
            latency,
            _hold: hold,
        };
        boxed(OnEnd::new(boxed(body), record))
    })
}

/// A `grpc-status` header or trailer, if any.
pub fn grpc_status(headers: &HeaderMap) -> Option<i32> {
    headers.get(GRPC_STATUS)?.to_str().ok()?.trim().parse().ok()
}

struct Record {
    metrics: HttpMetrics,
    status: u16,
    grpc_status: Option<i32>,
    latency: Duration,
    _hold: Option<Box<dyn std::any::Any + Send>>,
}

impl EndObserver for Record {
    fn trailers(&mut self, trailers: &HeaderMap) {
        if let Some(g) = grpc_status(trailers) {
            self.grpc_status = Some(g);
        }
    }

    fn end(self, stream_error: bool) {
        self.metrics
            .response(self.status, self.grpc_status, stream_error, self.latency);
    }
}

/// Told once when a body ends; see [`OnEnd`].
pub trait EndObserver: Send + Unpin + 'static {
    /// A trailers frame went by.
    fn trailers(&mut self, _trailers: &HeaderMap) {}
    /// The body ended (`stream_error`: with an error) or was dropped unfinished.
    fn end(self, stream_error: bool);
}

/// A body that tells its [`EndObserver`] once when it ends, fails, or is dropped (bodies that are
/// never polled, HEAD or 204, or that the client abandons, still end). The one "on body end"
/// wrapper: response metrics use it, and the pool returns HTTP/1 connections with it.
pub struct OnEnd<O: EndObserver> {
    inner: Body,
    observer: Option<O>,
}

impl<O: EndObserver> OnEnd<O> {
    pub fn new(inner: Body, observer: O) -> OnEnd<O> {
        OnEnd {
            inner,
            observer: Some(observer),
        }
    }

    fn end(&mut self, stream_error: bool) {
        if let Some(o) = self.observer.take() {
            o.end(stream_error);
        }
    }
}

impl<O: EndObserver> http_body::Body for OnEnd<O> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(trailers), Some(o)) = (frame.trailers_ref(), self.observer.as_mut()) {
                    o.trailers(trailers);
                }
                if self.inner.is_end_stream() {
                    self.end(false);
                }
            }
            Poll::Ready(Some(Err(_))) => self.end(true),
            Poll::Ready(None) => self.end(false),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl<O: EndObserver> Drop for OnEnd<O> {
    fn drop(&mut self) {
        self.end(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connect::ConnectError;

    /// `WhenWoken` polls its future once, then only after that future woke the task: the other
    /// branch of a `select!` waking the task a hundred times costs it no poll, and the signal it
    /// waits for still ends it.
    #[tokio::test]
    async fn a_when_woken_future_is_polled_only_after_its_own_wake() {
        let polls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let notify = Arc::new(tokio::sync::Notify::new());
        let (p, n) = (polls.clone(), notify.clone());
        let mut signal = std::pin::pin!(WhenWoken::new(async move {
            let mut notified = std::pin::pin!(n.notified());
            std::future::poll_fn(|cx| {
                p.fetch_add(1, Ordering::Relaxed);
                notified.as_mut().poll(cx)
            })
            .await
        }));
        for _ in 0..100 {
            tokio::select! {
                biased;
                _ = signal.as_mut() => panic!("resolved before its signal"),
                _ = tokio::task::yield_now() => {}
            }
        }
        assert_eq!(
            polls.load(Ordering::Relaxed),
            1,
            "polled on the other branch's wakes"
        );
        notify.notify_one();
        tokio::time::timeout(Duration::from_secs(5), signal)
            .await
            .expect("the signal ends it");
        assert_eq!(polls.load(Ordering::Relaxed), 2);
    }

    /// RFC 9110 §7.6.1: the hop-by-hop headers, and those `Connection` names, go; the rest
    /// stays; an upgrade keeps `Connection` and `Upgrade`; a map without any is left alone.
    #[test]
    fn hop_by_hop_headers_are_stripped() {
        let map = |pairs: &[(&str, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.append(
                    HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    v.parse().unwrap(),
                );
            }
            h
        };
        let names = |h: &HeaderMap| {
            let mut n: Vec<String> = h.keys().map(|k| k.to_string()).collect();
            n.sort();
            n
        };
        let all = [
            ("host", "web"),
            ("connection", "X-Foo, keep-alive"),
            ("connection", "upgrade"),
            ("x-foo", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("x-bar", "2"),
        ];
        let mut h = map(&all);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(names(&h), ["host", "x-bar"]);
        let mut h = map(&all);
        strip_hop_by_hop(&mut h, true);
        assert_eq!(
            names(&h),
            ["connection", "host", "upgrade", "x-bar", "x-foo"]
        );
        let plain = [("host", "web"), ("x-bar", "2"), ("te", "trailers")];
        let mut h = map(&plain);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h, map(&plain));
    }

    /// Where an error happened and whether a retry is safe come with the error, for the retry
    /// policies to come; the pool's own "never processed" retry reads the same answer.
    #[test]
    fn errors_say_where_they_happened_and_whether_a_retry_is_safe() {
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let refused = Error::from(ConnectError::Refused { addr });
        assert_eq!(refused.side(), Side::Upstream);
        assert!(refused.retry_safe());
        assert_eq!(refused.status(), StatusCode::BAD_GATEWAY);

        assert_eq!(Error::NoAuthority.side(), Side::Downstream);
        assert!(!Error::NoAuthority.retry_safe());

        let unavailable = Error::Unavailable {
            target: "web".into(),
            timeout: Duration::from_secs(3),
        };
        assert_eq!(unavailable.side(), Side::Internal);
        assert!(!unavailable.retry_safe());
        assert_eq!(unavailable.status(), StatusCode::SERVICE_UNAVAILABLE);

        let relay = Error::Relay {
            addr,
            source: io::Error::from(io::ErrorKind::ConnectionReset),
        };
        assert_eq!(relay.side(), Side::Upstream);
        assert!(!relay.retry_safe(), "bytes may have reached the app");
    }

    /// Found by the `http1_head` fuzz target: `OPTIONS *` crossed the proxies as `OPTIONS /`
    /// with `Host: web*` (the asterisk was pasted onto the host).
    #[test]
    fn asterisk_form_survives_the_hop_between_proxies() {
        let mut req = Request::options("*").body(empty()).unwrap();
        req.headers_mut()
            .insert(header::HOST, HeaderValue::from_static("web:8080"));
        upgrade_to_h2(&mut req);
        assert_eq!(req.uri().authority().map(|a| a.as_str()), Some("web:8080"));
        assert_eq!(req.uri().path_and_query().map(|p| p.as_str()), Some("*"));
        assert!(take_orig_http1(&mut req));
        assert_eq!(req.uri(), "*");
        assert_eq!(req.headers()[header::HOST], "web:8080");
    }

    /// Found by the `http1_head` fuzz target: `GET http://web?q` went to the application in
    /// absolute form (its path-and-query `?q` is not an origin-form target by itself).
    #[test]
    fn an_empty_path_with_a_query_becomes_origin_form() {
        let mut req = Request::get("http://web?q=1").body(empty()).unwrap();
        to_http1(&mut req, false);
        assert_eq!(req.uri(), "/?q=1");
        assert_eq!(req.headers()[header::HOST], "web");
    }
}
