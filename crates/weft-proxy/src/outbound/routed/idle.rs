//! A route's idle timeout (`timeouts.idle`, Linkerd's `timeout.linkerd.io/idle`): a request whose
//! stream carries no frame in either direction — request body, response headers, response body —
//! for that long is cancelled. Before the response headers it answers 504 like the other route
//! timeouts; afterwards the response body ends with an error (the client sees the stream reset,
//! or an HTTP/1.1 connection closed before the body's end), since its headers have already gone.

use crate::http::{self, Body, BoxError, Error};
use bytes::Bytes;
use http_body::Frame;
use hyper::{Request, Response};
use std::future::Future as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

const WHAT: &str = "route idle";

/// The last frame of one request's stream, either way.
#[derive(Clone)]
pub(in crate::outbound) struct Idle {
    timeout: Duration,
    activity: Arc<Activity>,
}

struct Activity {
    start: Instant,
    /// Nanoseconds from `start` to the last frame.
    last: AtomicU64,
}

impl Idle {
    /// Starts the idle clock of a request (the request itself is its first activity).
    pub(in crate::outbound) fn start(timeout: Duration) -> Idle {
        Idle {
            timeout,
            activity: Arc::new(Activity {
                start: Instant::now(),
                last: AtomicU64::new(0),
            }),
        }
    }

    fn touch(&self) {
        let nanos = self.activity.start.elapsed().as_nanos();
        self.activity
            .last
            .fetch_max(u64::try_from(nanos).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// When the stream goes idle if nothing happens before.
    fn deadline(&self) -> Instant {
        let last = Duration::from_nanos(self.activity.last.load(Ordering::Relaxed));
        self.activity.start + last + self.timeout
    }

    fn error(&self) -> Error {
        Error::Timeout {
            what: WHAT,
            timeout: self.timeout,
        }
    }

    /// The request with a body that counts its frames as activity.
    pub(in crate::outbound) fn watch_request(&self, req: Request<Body>) -> Request<Body> {
        req.map(|inner| self.body(inner, false))
    }

    /// `inner` counting its frames as activity; `enforce`: also failing once idle too long.
    fn body(&self, inner: Body, enforce: bool) -> Body {
        http::boxed(IdleBody {
            inner,
            idle: self.clone(),
            sleep: None,
            enforce,
        })
    }

    /// Runs `fut` (the exchange until the response headers) until it answers or the stream has
    /// been idle for the timeout; then the headers count as activity and the response body is
    /// bounded the same way.
    pub(in crate::outbound) async fn bound<F>(
        &self,
        mut fut: Pin<Box<F>>,
    ) -> Result<Response<Body>, Error>
    where
        F: std::future::Future<Output = Result<Response<Body>, Error>> + ?Sized,
    {
        loop {
            tokio::select! {
                answered = &mut fut => {
                    self.touch();
                    return answered.map(|resp| resp.map(|inner| self.body(inner, true)));
                }
                () = tokio::time::sleep_until(self.deadline()) => {
                    // Request frames may have moved the deadline while this slept.
                    if Instant::now() >= self.deadline() {
                        return Err(self.error());
                    }
                }
            }
        }
    }
}

/// `fut` bounded by the idle timeout, if the route has one (see [`Idle::bound`]). Without one,
/// `fut` itself; with one, `fut` is boxed so that the bound does not hold a second copy of it.
pub(in crate::outbound) fn bounded<'a, F>(
    idle: Option<&'a Idle>,
    fut: F,
) -> impl std::future::Future<Output = Result<Response<Body>, Error>> + 'a
where
    F: std::future::Future<Output = Result<Response<Body>, Error>> + 'a,
{
    use futures_util::future::Either;
    match idle {
        Some(idle) => Either::Left(idle.bound(Box::pin(fut))),
        None => Either::Right(fut),
    }
}

/// A body whose frames count as the stream's activity; `enforce`: it also fails once the stream
/// has been idle for the timeout (the response body; the request body only reports).
struct IdleBody {
    inner: Body,
    idle: Idle,
    sleep: Option<Pin<Box<Sleep>>>,
    enforce: bool,
}

impl http_body::Body for IdleBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.idle.touch();
                Poll::Ready(frame)
            }
            Poll::Pending if !this.enforce => Poll::Pending,
            Poll::Pending => loop {
                let deadline = this.idle.deadline();
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if sleep.deadline() != deadline {
                    sleep.as_mut().reset(deadline);
                }
                match sleep.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(()) if Instant::now() >= this.idle.deadline() => {
                        return Poll::Ready(Some(Err(this.idle.error().into())));
                    }
                    // Activity moved the deadline meanwhile: wait for the new one.
                    Poll::Ready(()) => {}
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt as _, StreamBody};

    fn streaming() -> (
        tokio::sync::mpsc::Sender<Result<Frame<Bytes>, BoxError>>,
        Body,
    ) {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let stream = tokio_stream_from(rx);
        (tx, http::boxed(StreamBody::new(stream)))
    }

    /// A receiver as a stream, without another dependency.
    fn tokio_stream_from(
        mut rx: tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, BoxError>>,
    ) -> impl futures_util::Stream<Item = Result<Frame<Bytes>, BoxError>> {
        futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
    }

    #[tokio::test(start_paused = true)]
    async fn no_answer_within_the_idle_timeout_is_a_504() {
        let idle = Idle::start(Duration::from_millis(100));
        let started = Instant::now();
        let err = idle
            .bound(Box::pin(std::future::pending()))
            .await
            .expect_err("idle");
        assert_eq!(started.elapsed(), Duration::from_millis(100));
        assert_eq!(err.status(), hyper::StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(err.to_string(), "route idle timeout of 100ms expired");
    }

    #[tokio::test(start_paused = true)]
    async fn request_frames_keep_the_stream_alive_until_the_answer() {
        let idle = Idle::start(Duration::from_millis(100));
        let (tx, body) = streaming();
        let mut req = idle.watch_request(Request::new(body));
        // The request streams a frame every 60 ms for 300 ms; the answer comes at 400 ms.
        let answer = async move {
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_millis(60)).await;
                tx.send(Ok(Frame::data(Bytes::from_static(b"x"))))
                    .await
                    .unwrap();
                req.body_mut().frame().await.unwrap().unwrap();
            }
            tokio::time::sleep(Duration::from_millis(90)).await;
            Ok(Response::new(http::empty()))
        };
        let resp = idle
            .bound(Box::pin(answer))
            .await
            .expect("answered in time");
        assert!(resp.into_body().collect().await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_response_body_idle_for_the_timeout_fails_and_frames_keep_it_alive() {
        let idle = Idle::start(Duration::from_millis(100));
        let (tx, body) = streaming();
        let resp = idle
            .bound(Box::pin(async { Ok(Response::new(body)) }))
            .await
            .expect("headers");
        let mut body = resp.into_body();
        let started = Instant::now();
        tokio::spawn(async move {
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_millis(80)).await;
                let _ = tx.send(Ok(Frame::data(Bytes::from_static(b"x")))).await;
            }
            // Then nothing, with the sender kept open.
            tokio::time::sleep(Duration::from_secs(10)).await;
            drop(tx);
        });
        for _ in 0..3 {
            body.frame().await.unwrap().expect("a frame in time");
        }
        let err = body.frame().await.unwrap().expect_err("idle");
        assert_eq!(started.elapsed(), Duration::from_millis(340));
        assert!(err.to_string().contains("route idle timeout"), "{err}");
    }
}
