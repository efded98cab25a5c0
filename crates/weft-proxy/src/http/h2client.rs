//! The pool's HTTP/2 client connections, on the `h2` crate directly.
//!
//! hyper's HTTP/2 client spawns a task per request to wait for its response (and another to send
//! its body) and passes each request through two channels to the connection's task; without it
//! the outbound proxy runs 8,200 fewer instructions per HTTP/1.1 request (67,000 → 58,800,
//! callgrind, bench/RESULTS.md "Issue 17: the HTTP/2 client on h2 directly"). Here a
//! request opens its stream from the caller's own task and awaits the response there; only a
//! request whose body is not all there at once gets a task, to stream it while the response is
//! awaited and read (as a bidirectional gRPC call needs); a body that is (most are) goes out with
//! the head, in the same write. What hyper did around `h2` and we do here:
//! - the settings hyper's client uses (windows, frame, header-list and send-buffer sizes, no
//!   push), so the wire is what it was;
//! - connection-specific headers removed before a request goes out (RFC 9113 §8.2.2; `h2`
//!   refuses to send them), `content-length` set from an exact body size when missing;
//! - the request body streamed with flow control: it waits for send capacity, stops at a reset
//!   from the peer, resets the stream (CANCEL) when its body fails or the caller gives up
//!   before the response;
//! - the response body releases flow-control capacity as it is read, and ends with trailers;
//! - keep-alive PINGs ([`KeepAlive`]), the connection closed when one goes unanswered; the
//!   requests it fails say so.

use super::{boxed, Body, BoxError};
use bytes::Bytes;
use http::{header, HeaderMap, Request, Response};
use http_body::{Body as _, Frame, SizeHint};
use std::{
    future::{poll_fn, Future},
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};
use tokio::io::{AsyncRead, AsyncWrite};

/// hyper's client defaults (hyper 1.x `proto/h2/client.rs`): the peer sees the same SETTINGS.
const CONN_WINDOW: u32 = 5 * 1024 * 1024;
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
const MAX_FRAME_SIZE: u32 = 16 * 1024;
const MAX_SEND_BUFFER: usize = 1024 * 1024;
const MAX_HEADER_LIST: u32 = 16 * 1024;
const INITIAL_MAX_SEND_STREAMS: usize = 100;
const MAX_LOCAL_ERROR_RESETS: usize = 1024;

/// The handle requests are sent on. Cheap to clone.
#[derive(Clone)]
pub struct Sender {
    tx: h2::client::SendRequest<Bytes>,
    ended: Arc<Ended>,
}

/// Set by the connection's driver when the connection has ended, with why when it was not the
/// peer's doing (an unanswered keep-alive PING).
#[derive(Default)]
struct Ended {
    flag: AtomicBool,
    why: std::sync::OnceLock<String>,
}

/// Why a request failed, and whether it can be sent again.
pub struct SendError {
    pub source: h2::Error,
    /// The request never left: the connection was already unusable (GOAWAY received, closed).
    pub unsent: bool,
    /// Why this side ended the connection the request was on, if it did.
    pub ended: Option<String>,
    /// The connection had ended by the time the request failed.
    pub closed: bool,
}

impl SendError {
    fn new(source: h2::Error, unsent: bool) -> SendError {
        SendError {
            source,
            unsent,
            ended: None,
            closed: false,
        }
    }

    /// The error for the request's caller: `source`, after why the connection ended if this side
    /// ended it (in-flight streams only see the connection go).
    pub fn into_error(self) -> BoxError {
        match self.ended {
            Some(why) => format!("{why}: {}", self.source).into(),
            None => self.source.into(),
        }
    }
}

/// The connection: drive it with [`Connection::run`] on its own task.
pub struct Connection<T> {
    conn: h2::client::Connection<T, Bytes>,
    ended: Arc<Ended>,
}

/// The HTTP/2 handshake on `io` (the client preface and SETTINGS).
pub async fn handshake<T>(io: T) -> Result<(Sender, Connection<T>), h2::Error>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let (tx, conn) = h2::client::Builder::new()
        .initial_max_send_streams(INITIAL_MAX_SEND_STREAMS)
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONN_WINDOW)
        .max_frame_size(MAX_FRAME_SIZE)
        .max_header_list_size(MAX_HEADER_LIST)
        .max_send_buffer_size(MAX_SEND_BUFFER)
        .max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESETS))
        .enable_push(false)
        .handshake(io)
        .await?;
    let ended = Arc::new(Ended::default());
    Ok((
        Sender {
            tx,
            ended: ended.clone(),
        },
        Connection { conn, ended },
    ))
}

/// Keep-alive: a PING every `interval`; no answer within `timeout` closes the connection.
#[derive(Clone, Copy, Debug)]
pub struct KeepAlive {
    pub interval: Duration,
    pub timeout: Duration,
}

impl<T> Connection<T>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    /// Drives the connection until it ends: the peer closed it, it failed, a keep-alive PING
    /// went unanswered, or it was idle with no handle and no stream left. `Ok` for a clean end.
    pub async fn run(mut self, keep_alive: KeepAlive) -> Result<(), BoxError> {
        let result = keep_alive_loop(&mut self.conn, keep_alive).await;
        if let Err(KeepAliveError::Unanswered(why)) = &result {
            let _ = self.ended.why.set(why.clone());
        }
        self.ended.flag.store(true, Ordering::Release);
        result.map_err(|e| match e {
            KeepAliveError::H2(e) => e.into(),
            KeepAliveError::Unanswered(why) => why.into(),
        })
    }
}

enum KeepAliveError {
    H2(h2::Error),
    Unanswered(String),
}

impl From<h2::Error> for KeepAliveError {
    fn from(e: h2::Error) -> KeepAliveError {
        KeepAliveError::H2(e)
    }
}

async fn keep_alive_loop<T>(
    conn: &mut h2::client::Connection<T, Bytes>,
    keep_alive: KeepAlive,
) -> Result<(), KeepAliveError>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let Some(mut ping) = conn.ping_pong() else {
        // Only a second call returns None.
        return Ok(conn.await?);
    };
    let timer = tokio::time::sleep(keep_alive.interval);
    tokio::pin!(timer);
    let mut awaiting_pong = false;
    loop {
        tokio::select! {
            biased;
            r = &mut *conn => return Ok(r?),
            pong = poll_fn(|cx| ping.poll_pong(cx)), if awaiting_pong => {
                pong?;
                awaiting_pong = false;
                timer.as_mut().reset(tokio::time::Instant::now() + keep_alive.interval);
            }
            _ = timer.as_mut() => {
                if awaiting_pong {
                    return Err(KeepAliveError::Unanswered(format!(
                        "no answer to a keep-alive PING within {:?}",
                        keep_alive.timeout
                    )));
                }
                ping.send_ping(h2::Ping::opaque())?;
                awaiting_pong = true;
                timer.as_mut().reset(tokio::time::Instant::now() + keep_alive.timeout);
            }
        }
    }
}

impl Sender {
    /// The connection has ended: it takes no new requests.
    pub fn is_closed(&self) -> bool {
        self.ended.flag.load(Ordering::Acquire)
    }

    /// Sends `req` (at once, when called) and returns the wait for the response head. Takes the
    /// handle by value: the pool hands each request its own clone, so no second one is made.
    pub fn send(
        self,
        req: Request<Body>,
    ) -> impl Future<Output = Result<Response<Body>, SendError>> {
        let Sender { tx, ended } = self;
        // The request goes out before the caller first awaits: the future holds only what the
        // response needs, not the request.
        let sent = open(tx, req);
        async move {
            let response = match sent {
                Ok(sent) => sent.response().await,
                Err(e) => Err(e),
            };
            response.map_err(|mut e| {
                e.ended = ended.why.get().cloned();
                e.closed = ended.flag.load(Ordering::Acquire);
                e
            })
        }
    }
}

/// A request on its way: its stream is open, its body going out. Dropped before the response
/// arrives (the caller gave up), it tells the body's task to reset the stream.
struct Sent {
    response: h2::client::ResponseFuture,
    cancel: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Sent {
    fn drop(&mut self) {
        if let Some(c) = self.cancel.take() {
            let _ = c.send(());
        }
    }
}

/// Opens the request's stream on `tx` and starts its body.
fn open(mut tx: h2::client::SendRequest<Bytes>, req: Request<Body>) -> Result<Sent, SendError> {
    // A handle with no stream of its own waiting to open never waits here (h2 waits only on a
    // handle's previous stream); this is the check that the connection is still usable.
    if let Poll::Ready(Err(source)) =
        tx.poll_ready(&mut Context::from_waker(std::task::Waker::noop()))
    {
        return Err(SendError::new(source, true));
    }
    let (mut parts, body) = req.into_parts();
    strip_connection_headers(&mut parts.headers);
    if let Some(len) = body.size_hint().exact() {
        if len != 0 || has_payload_semantics(&parts.method) {
            parts
                .headers
                .entry(header::CONTENT_LENGTH)
                .or_insert_with(|| len.into());
        }
    }
    let eos = body.is_end_stream();
    let (response, stream) = match tx.send_request(Request::from_parts(parts, ()), eos) {
        Ok(sent) => sent,
        // A user error (a malformed head) is this request's; anything else is the
        // connection's, found unusable before the request left.
        Err(source) => {
            let unsent = source.is_io() || source.reason().is_some();
            return Err(SendError::new(source, unsent));
        }
    };
    let cancel = match eos {
        true => None,
        false => {
            let (cancel, cancelled) = tokio::sync::oneshot::channel();
            let mut pipe = Box::pin(pipe(body, stream, cancelled));
            // Most bodies are whole already: their data is queued now, behind the head (the
            // same write), and needs no task.
            let waker = std::task::Waker::noop();
            if pipe
                .as_mut()
                .poll(&mut Context::from_waker(waker))
                .is_pending()
            {
                tokio::spawn(pipe);
            }
            Some(cancel)
        }
    };
    Ok(Sent { response, cancel })
}

impl Sent {
    async fn response(mut self) -> Result<Response<Body>, SendError> {
        let response = (&mut self.response)
            .await
            .map_err(|source| SendError::new(source, false))?;
        // The response is here: the body goes on streaming, whatever the caller does next.
        self.cancel = None;
        let content_length = response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        Ok(response.map(|recv| {
            boxed(RecvBody {
                recv,
                data_done: false,
                remaining: content_length,
            })
        }))
    }
}

/// RFC 9110 §8.6: a request with an empty body states `content-length: 0` only where its method
/// gives a body meaning (hyper's rule).
fn has_payload_semantics(method: &http::Method) -> bool {
    !matches!(
        *method,
        http::Method::GET
            | http::Method::HEAD
            | http::Method::DELETE
            | http::Method::CONNECT
            | http::Method::OPTIONS
            | http::Method::TRACE
    )
}

/// RFC 9113 §8.2.2: connection-specific headers are malformed in HTTP/2 (`h2` refuses to send
/// them): removed, with the headers `Connection` names; `TE` stays only as `trailers`.
fn strip_connection_headers(headers: &mut HeaderMap) {
    // Mostly there are none: one pass over the names first.
    if !headers
        .keys()
        .any(|n| n == header::TE || super::is_hop_by_hop(n))
    {
        return;
    }
    if headers.get(header::TE).is_some_and(|te| te != "trailers") {
        headers.remove(header::TE);
    }
    super::strip_hop_by_hop(headers, false);
}

/// Streams a request body onto its HTTP/2 stream, with flow control: each chunk is handed to `h2`
/// as it comes (the first, still queued behind the head, goes out in the same write), and the
/// next is read only once the stream can take more than what is buffered.
async fn pipe(
    body: Body,
    mut stream: h2::SendStream<Bytes>,
    mut cancelled: tokio::sync::oneshot::Receiver<()>,
) {
    let mut body = std::pin::pin!(body);
    // Until the response arrives, the caller may give up: then the stream is reset.
    let mut watch_cancel = true;
    loop {
        // The next frame, unless the peer reset the stream or the caller gave up first.
        let frame = poll_fn(|cx| {
            if watch_cancel {
                match Pin::new(&mut cancelled).poll(cx) {
                    Poll::Ready(Ok(())) => return Poll::Ready(Err(Some(h2::Reason::CANCEL))),
                    Poll::Ready(Err(_)) => watch_cancel = false,
                    Poll::Pending => {}
                }
            }
            if stream.poll_reset(cx).is_ready() {
                return Poll::Ready(Err(None));
            }
            body.as_mut().poll_frame(cx).map(Ok)
        })
        .await;
        let frame = match frame {
            Ok(Some(Ok(frame))) => frame,
            Ok(None) => {
                let _ = stream.send_data(Bytes::new(), true);
                return;
            }
            Ok(Some(Err(e))) => {
                tracing::debug!(error = %e, "request body failed: resetting the stream");
                stream.send_reset(h2::Reason::CANCEL);
                return;
            }
            Err(reset) => {
                if let Some(reason) = reset {
                    stream.send_reset(reason);
                }
                return;
            }
        };
        let frame = match frame.into_data() {
            Ok(data) => {
                let eos = body.is_end_stream();
                if stream.send_data(data, eos).is_err() || eos {
                    return;
                }
                match capacity(&mut stream).await {
                    Ok(()) => continue,
                    Err(()) => return,
                }
            }
            Err(frame) => frame,
        };
        if let Ok(trailers) = frame.into_trailers() {
            stream.reserve_capacity(0);
            let _ = stream.send_trailers(trailers);
            return;
        }
    }
}

/// Waits until the stream can take more than it has buffered (`Err`: it was reset or closed).
async fn capacity(stream: &mut h2::SendStream<Bytes>) -> Result<(), ()> {
    // One byte beyond what is buffered (h2 counts the buffered data in).
    stream.reserve_capacity(1);
    poll_fn(|cx| loop {
        if stream.capacity() > 0 {
            return Poll::Ready(Ok(()));
        }
        if stream.poll_reset(cx).is_ready() {
            return Poll::Ready(Err(()));
        }
        match stream.poll_capacity(cx) {
            Poll::Ready(Some(Ok(_))) => continue,
            Poll::Ready(Some(Err(_)) | None) => return Poll::Ready(Err(())),
            Poll::Pending => return Poll::Pending,
        }
    })
    .await
}

/// A response body: data as it arrives (its flow-control capacity released as it is read, so the
/// peer may send more), then trailers.
struct RecvBody {
    recv: h2::RecvStream,
    data_done: bool,
    /// What `content-length` says is left, for an exact size hint (as hyper's body gives).
    remaining: Option<u64>,
}

impl http_body::Body for RecvBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if !self.data_done {
            match self.recv.poll_data(cx) {
                Poll::Ready(Some(Ok(data))) => {
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    if let Some(left) = self.remaining.as_mut() {
                        *left = left.saturating_sub(data.len() as u64);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
                Poll::Ready(None) => self.data_done = true,
                Poll::Pending => return Poll::Pending,
            }
        }
        match self.recv.poll_trailers(cx) {
            Poll::Ready(Ok(Some(trailers))) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Poll::Ready(Ok(None)) => Poll::Ready(None),
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e.into()))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match self.remaining {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

#[cfg(test)]
#[path = "h2client_tests.rs"]
mod tests;
