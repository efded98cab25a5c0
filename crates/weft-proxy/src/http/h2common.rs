//! What the HTTP/2 client ([`super::h2client`]) and server ([`super::h2server`]) connections
//! share, both on the `h2` crate directly: keep-alive PINGs, bodies in (a [`RecvBody`]) and out
//! ([`pipe`]) with flow control, and the connection-specific headers HTTP/2 forbids.

use super::{Body, BoxError};
use bytes::Bytes;
use http::{header, HeaderMap};
use http_body::{Body as _, Frame, SizeHint};
use std::{
    future::{poll_fn, Future},
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

/// Keep-alive: a PING every `interval`; no answer within `timeout` closes the connection.
#[derive(Clone, Copy, Debug)]
pub struct KeepAlive {
    pub interval: Duration,
    pub timeout: Duration,
}

/// Why keep-alive ended a connection.
pub(super) enum KeepAliveError {
    H2(h2::Error),
    /// A PING went unanswered (the text says for how long).
    Unanswered(String),
}

/// Sends a PING every `interval` and waits `timeout` for each answer; resolves only when one
/// goes unanswered or cannot be sent. Polled beside its connection (which reads the PONGs), in a
/// [`super::WhenWoken`] so that only its own timer and PONG wake it.
pub(super) async fn keep_alive(mut ping: h2::PingPong, keep_alive: KeepAlive) -> KeepAliveError {
    loop {
        tokio::time::sleep(keep_alive.interval).await;
        if let Err(e) = ping.send_ping(h2::Ping::opaque()) {
            return KeepAliveError::H2(e);
        }
        match tokio::time::timeout(keep_alive.timeout, poll_fn(|cx| ping.poll_pong(cx))).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return KeepAliveError::H2(e),
            Err(_) => {
                return KeepAliveError::Unanswered(format!(
                    "no answer to a keep-alive PING within {:?}",
                    keep_alive.timeout
                ))
            }
        }
    }
}

/// The `content-length` a head states, if it states one number.
pub(super) fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// RFC 9113 §8.2.2: connection-specific headers are malformed in HTTP/2 (`h2` refuses to send
/// them): removed, with the headers `Connection` names; `TE` stays only as `trailers`.
pub(super) fn strip_connection_headers(headers: &mut HeaderMap) {
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

/// Streams a body onto its HTTP/2 stream, with flow control: each chunk is handed to `h2` as it
/// comes (the first, still queued behind the head, goes out in the same write), and the next is
/// read only once the stream can take more than what is buffered. Stops when the peer resets the
/// stream; resets it (CANCEL) when the body fails or, while `cancelled` is there, when that fires.
pub(super) async fn pipe(
    body: Body,
    mut stream: h2::SendStream<Bytes>,
    mut cancelled: Option<tokio::sync::oneshot::Receiver<()>>,
) {
    let mut body = std::pin::pin!(body);
    loop {
        // The next frame, unless the peer reset the stream or the caller gave up first.
        let frame = poll_fn(|cx| {
            if let Some(c) = cancelled.as_mut() {
                match Pin::new(c).poll(cx) {
                    Poll::Ready(Ok(())) => return Poll::Ready(Err(Some(h2::Reason::CANCEL))),
                    Poll::Ready(Err(_)) => cancelled = None,
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
                tracing::debug!(error = %e, "body failed: resetting the stream");
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

/// A received body: data as it arrives (its flow-control capacity released as it is read, so the
/// peer may send more), then trailers.
pub struct RecvBody {
    recv: h2::RecvStream,
    data_done: bool,
    /// What `content-length` says is left, for an exact size hint (as hyper's body gives).
    remaining: Option<u64>,
}

impl RecvBody {
    /// The body of a message whose head states `content_length`.
    pub(super) fn new(recv: h2::RecvStream, content_length: Option<u64>) -> RecvBody {
        RecvBody {
            recv,
            data_done: false,
            remaining: content_length,
        }
    }
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
#[path = "h2common_tests.rs"]
pub(super) mod testing;
