//! HTTP/2 server connections, on the `h2` crate directly.
//!
//! hyper's HTTP/2 server spawned a task per stream, moved each request and its service future
//! through its own stream type, and polled its keep-alive bookkeeping on every poll of the
//! connection. Here a connection's streams are futures of the connection's own task (a
//! [`FuturesUnordered`]: a stream is polled only when it was woken), so a request costs no spawn,
//! and the frames its response queued are written by the connection poll that follows in the same
//! turn. What hyper did around `h2` and we do here:
//! - hyper's server SETTINGS (1 MiB windows, 16 KiB frames and header lists, 400 KiB send
//!   buffer), with the stream limit of [`ServerLimits`](crate::config::limits::ServerLimits);
//! - a request's body with its `content-length` as size hint; a stream the client resets before
//!   its response drops the service's future (the request it forwarded is cancelled);
//! - responses without connection-specific headers, with `content-length` from an exact body
//!   size and a `Date` when they have none; bodies streamed with flow control, trailers last;
//! - `CONNECT`: once the service answers 2xx, the stream is the tunnel ([`super::upgrade_on`]);
//! - a panic while handling a request resets that stream only, as when it was a task of its own;
//! - keep-alive PINGs; a graceful shutdown (drain, idle) that the client never answers ends
//!   when an idle timeout finds no stream open, and the handshake is bounded by the idle timeout
//!   (hyper waited on such a client until its keep-alive gave up).

use super::{
    drain_started,
    h2common::{self, pipe, strip_connection_headers, KeepAlive, KeepAliveError, RecvBody},
    Body, BoxError, RequestBody, WhenWoken,
};
use crate::limits::{Limit, Limits};
use bytes::{Buf as _, Bytes};
use futures_util::{
    stream::{FuturesUnordered, StreamExt as _},
    FutureExt as _,
};
use http::{header, HeaderValue, Method, Request, Response};
use http_body::Body as _;
use hyper::service::Service;
use std::{
    cell::RefCell,
    convert::Infallible,
    future::{poll_fn, Future},
    io,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    task::{ready, Context, Poll},
    time::SystemTime,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    sync::watch,
};

/// hyper's server defaults (hyper 1.x `proto/h2/server.rs`): clients see the same SETTINGS.
const CONN_WINDOW: u32 = 1024 * 1024;
const STREAM_WINDOW: u32 = 1024 * 1024;
const MAX_FRAME_SIZE: u32 = 16 * 1024;
const MAX_SEND_BUFFER: usize = 400 * 1024;
const MAX_HEADER_LIST: u32 = 16 * 1024;
const MAX_LOCAL_ERROR_RESETS: usize = 1024;

/// Serves one HTTP/2 connection until it ends: the client closed it, it failed, a keep-alive
/// PING went unanswered, or — after `drained` resolved or no stream started for the idle
/// timeout — its last stream finished after a graceful GOAWAY.
pub(super) async fn serve<I, S>(
    io: I,
    svc: S,
    drain: &mut watch::Receiver<bool>,
    keep_alive: KeepAlive,
    limits: &Limits,
) -> Result<(), BoxError>
where
    I: AsyncRead + AsyncWrite + Unpin,
    S: Service<Request<RequestBody>, Response = Response<Body>, Error = Infallible>,
{
    let settings = &limits.settings;
    let mut drained = std::pin::pin!(drain_started(drain));
    let handshake = h2::server::Builder::new()
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONN_WINDOW)
        .max_frame_size(MAX_FRAME_SIZE)
        .max_header_list_size(MAX_HEADER_LIST)
        .max_send_buffer_size(MAX_SEND_BUFFER)
        .max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESETS))
        .max_concurrent_streams(settings.http2_max_concurrent_streams)
        .handshake::<_, Bytes>(io);
    let mut conn = tokio::select! {
        conn = handshake => conn?,
        _ = drained.as_mut() => return Ok(()),
        _ = tokio::time::sleep(settings.idle_timeout) => {
            limits.count(Limit::IdleTimeout);
            return Ok(());
        }
    };
    let mut pinging = conn
        .ping_pong()
        .map(|ping| WhenWoken::new(h2common::keep_alive(ping, keep_alive)));
    // Why the connection starts closing: the drain, or no stream started within an idle
    // timeout (a count, compared once per timeout). One future, polled only when its own
    // timer or the drain signal woke it.
    let started = AtomicU64::new(0);
    let mut close = WhenWoken::new(async {
        let idle = async {
            let mut seen = 0;
            loop {
                tokio::time::sleep(settings.idle_timeout).await;
                let now = started.load(Ordering::Relaxed);
                if now == seen {
                    return;
                }
                seen = now;
            }
        };
        tokio::select! {
            _ = drained => Close::Drain,
            _ = idle => Close::Idle,
        }
    });
    // Once closing: h2 closes after the client answers the GOAWAY's PING and the last stream
    // ends; a client that never answers is closed when an idle timeout finds no stream left
    // (none of ours, none open in h2: a CONNECT tunnel outlives its stream's future).
    let mut closing: Option<Pin<Box<tokio::time::Sleep>>> = None;
    let mut streams = FuturesUnordered::new();
    poll_fn(|cx| {
        if let Some(p) = pinging.as_mut() {
            if let Poll::Ready(e) = Pin::new(p).poll(cx) {
                return Poll::Ready(Err(match e {
                    KeepAliveError::H2(e) => e.into(),
                    KeepAliveError::Unanswered(why) => why.into(),
                }));
            }
        }
        if closing.is_none() {
            if let Poll::Ready(why) = Pin::new(&mut close).poll(cx) {
                if why == Close::Idle {
                    limits.count(Limit::IdleTimeout);
                }
                conn.graceful_shutdown();
                closing = Some(Box::pin(tokio::time::sleep(settings.idle_timeout)));
            }
        }
        if let Some(linger) = closing.as_mut() {
            while linger.as_mut().poll(cx).is_ready() {
                if streams.is_empty() && !conn.has_streams() {
                    return Poll::Ready(Ok(()));
                }
                let next = tokio::time::Instant::now() + settings.idle_timeout;
                linger.as_mut().reset(next);
            }
        }
        loop {
            // The streams first: what they queue is written by the connection's poll below.
            while let Poll::Ready(Some(())) = streams.poll_next_unpin(cx) {}
            let mut accepted = false;
            loop {
                match conn.poll_accept(cx) {
                    Poll::Ready(Some(Ok((req, respond)))) => {
                        started.fetch_add(1, Ordering::Relaxed);
                        streams.push(stream(&svc, req, respond));
                        accepted = true;
                    }
                    Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e.into())),
                    Poll::Ready(None) => return Poll::Ready(Ok(())),
                    Poll::Pending => break,
                }
            }
            if !accepted {
                return Poll::Pending;
            }
        }
    })
    .await
}

/// Why a connection starts its graceful shutdown.
#[derive(PartialEq)]
enum Close {
    Drain,
    Idle,
}

/// The limit an HTTP/2 connection's error says it was closed by.
pub(super) fn limit_of(e: &(dyn std::error::Error + 'static)) -> Option<Limit> {
    let h2 = e.downcast_ref::<h2::Error>()?;
    (h2.is_go_away() && h2.reason() == Some(h2::Reason::ENHANCE_YOUR_CALM))
        .then_some(Limit::Http2Flood)
}

/// One stream: the service's answer to its request, sent back with its body.
fn stream<S>(
    svc: &S,
    req: Request<h2::RecvStream>,
    respond: h2::server::SendResponse<Bytes>,
) -> impl Future<Output = ()>
where
    S: Service<Request<RequestBody>, Response = Response<Body>, Error = Infallible>,
{
    let (parts, recv) = req.into_parts();
    let (req, tunnel) = if parts.method == Method::CONNECT {
        // The stream is the tunnel; the request itself has no body.
        let (opened, opening) = tokio::sync::oneshot::channel();
        let mut req = Request::from_parts(parts, RequestBody::Empty);
        req.extensions_mut()
            .insert(PendingTunnel(Arc::new(Mutex::new(Some(opening)))));
        (req, Some((recv, opened)))
    } else {
        let content_length = h2common::content_length(&parts.headers);
        let body = RequestBody::Http2(RecvBody::new(recv, content_length));
        (Request::from_parts(parts, body), None)
    };
    // Boxed: the service's future is the request's whole state (kilobytes); a stream's future
    // is moved into the set of streams, a pointer is cheaper to move than that.
    let answered = answer(Box::pin(svc.call(req)), respond, tunnel);
    // A bug that panics while handling one request costs that stream (reset as its handle is
    // dropped), not every stream of the connection, as when each stream was a task.
    std::panic::AssertUnwindSafe(answered)
        .catch_unwind()
        .map(|r| {
            if r.is_err() {
                tracing::error!("handling a request panicked: its stream was reset");
            }
        })
}

async fn answer<F>(
    response: F,
    mut respond: h2::server::SendResponse<Bytes>,
    tunnel: Option<(h2::RecvStream, tokio::sync::oneshot::Sender<Tunnel>)>,
) where
    F: Future<Output = Result<Response<Body>, Infallible>>,
{
    // The response, unless the client resets the stream first (then the service's future,
    // and the request it forwarded, are dropped).
    let mut response = std::pin::pin!(response);
    let response = poll_fn(|cx| {
        if let Poll::Ready(Ok(resp)) = response.as_mut().poll(cx) {
            return Poll::Ready(Some(resp));
        }
        respond.poll_reset(cx).map(|_| None)
    })
    .await;
    let Some(response) = response else { return };
    let (mut head, body) = response.into_parts();
    strip_connection_headers(&mut head.headers);
    if !head.headers.contains_key(header::DATE) {
        head.headers.insert(header::DATE, date());
    }
    if let Some((recv, opened)) = tunnel {
        if head.status.is_success() {
            // A tunnel has no content-length (RFC 9110 §15.3.1).
            head.headers.remove(header::CONTENT_LENGTH);
            if let Ok(send) = respond.send_response(Response::from_parts(head, ()), false) {
                let _ = opened.send(Tunnel {
                    send,
                    recv,
                    read: Bytes::new(),
                });
            }
            return;
        }
    }
    let eos = body.is_end_stream();
    if !eos {
        if let Some(len) = body.size_hint().exact() {
            head.headers
                .entry(header::CONTENT_LENGTH)
                .or_insert_with(|| len.into());
        }
    }
    match respond.send_response(Response::from_parts(head, ()), eos) {
        Ok(stream) if !eos => pipe(body, stream, None).await,
        Ok(_) => {}
        Err(e) => {
            tracing::debug!(error = %e, "sending a response head failed");
            respond.send_reset(h2::Reason::INTERNAL_ERROR);
        }
    }
}

/// The `Date` of a response (RFC 9110 §6.6.1: an origin server's responses carry one; hyper's
/// server added it too): formatted once per second per thread.
fn date() -> HeaderValue {
    thread_local! {
        static CACHED: RefCell<(u64, HeaderValue)> =
            const { RefCell::new((0, HeaderValue::from_static(""))) };
    }
    let now = SystemTime::now();
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    CACHED.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != secs {
            let text = httpdate::fmt_http_date(now);
            *c = (
                secs,
                HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("")),
            );
        }
        c.1.clone()
    })
}

/// In an HTTP/2 CONNECT request's extensions: its tunnel, once the response has gone out.
/// (Extensions are `Clone`: a clone shares the one wait, which the first to take it has.)
#[derive(Clone)]
pub(super) struct PendingTunnel(Arc<Mutex<Option<tokio::sync::oneshot::Receiver<Tunnel>>>>);

impl PendingTunnel {
    pub(super) fn take(&self) -> Option<tokio::sync::oneshot::Receiver<Tunnel>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// An HTTP/2 CONNECT stream as a byte stream: DATA frames in and out, with flow control; shut
/// down, it ends its side of the stream.
pub struct Tunnel {
    send: h2::SendStream<Bytes>,
    recv: h2::RecvStream,
    /// What was received and not yet read.
    read: Bytes,
}

fn h2_io_error(e: h2::Error) -> io::Error {
    if e.is_io() {
        e.into_io()
            .unwrap_or_else(|| io::Error::other("HTTP/2 I/O error"))
    } else {
        io::Error::other(e)
    }
}

impl AsyncRead for Tunnel {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        while self.read.is_empty() {
            match ready!(self.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    self.read = data;
                }
                Some(Err(e)) => return Poll::Ready(Err(h2_io_error(e))),
                None => return Poll::Ready(Ok(())),
            }
        }
        let n = buf.remaining().min(self.read.len());
        buf.put_slice(&self.read[..n]);
        self.read.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Tunnel {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        self.send.reserve_capacity(buf.len());
        let mut granted = self.send.capacity();
        while granted == 0 {
            match ready!(self.send.poll_capacity(cx)) {
                Some(Ok(n)) => granted = n,
                Some(Err(e)) => return Poll::Ready(Err(h2_io_error(e))),
                None => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
            }
        }
        let n = granted.min(buf.len());
        self.send
            .send_data(Bytes::copy_from_slice(&buf[..n]), false)
            .map_err(h2_io_error)?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // h2 writes what is queued as the connection is driven.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.send.reserve_capacity(0);
        Poll::Ready(self.send.send_data(Bytes::new(), true).map_err(h2_io_error))
    }
}

#[cfg(test)]
#[path = "h2server_tests.rs"]
mod tests;
