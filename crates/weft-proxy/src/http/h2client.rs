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

use super::{
    boxed,
    h2common::{self, pipe, strip_connection_headers, KeepAlive, KeepAliveError, RecvBody},
    Body, BoxError,
};
use bytes::Bytes;
use http::{header, Request, Response};
use http_body::Body as _;
use std::{
    future::Future,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    task::{Context, Poll},
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

impl<T> Connection<T>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    /// Drives the connection until it ends: the peer closed it, it failed, a keep-alive PING
    /// went unanswered, or it was idle with no handle and no stream left. `Ok` for a clean end.
    pub async fn run(mut self, keep_alive: KeepAlive) -> Result<(), BoxError> {
        let result = drive(&mut self.conn, keep_alive).await;
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

async fn drive<T>(
    conn: &mut h2::client::Connection<T, Bytes>,
    keep_alive: KeepAlive,
) -> Result<(), KeepAliveError>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let Some(ping) = conn.ping_pong() else {
        // Only a second call returns None.
        return conn.await.map_err(KeepAliveError::H2);
    };
    let pinging = super::WhenWoken::new(h2common::keep_alive(ping, keep_alive));
    tokio::select! {
        biased;
        r = &mut *conn => r.map_err(KeepAliveError::H2),
        e = pinging => Err(e),
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
            let mut pipe = Box::pin(pipe(body, stream, Some(cancelled)));
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
        let content_length = h2common::content_length(response.headers());
        Ok(response.map(|recv| boxed(RecvBody::new(recv, content_length))))
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

#[cfg(test)]
#[path = "h2client_tests.rs"]
mod tests;
