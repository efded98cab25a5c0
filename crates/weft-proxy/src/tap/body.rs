//! The response body of a tapped request: counts its bytes and sends `ResponseEnd` once, when it
//! ends, fails (the HTTP/2 reset code, else `INTERNAL_ERROR`), or is dropped unfinished
//! (`CANCEL`). Only tapped requests are wrapped.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Body as _, Frame};
use linkerd2_proxy_api::tap::Eos;

use super::Tapped;
use crate::http::{Body, BoxError};

pub struct TapBody {
    inner: Body,
    bytes: u64,
    tapped: Option<Box<Tapped>>,
}

impl TapBody {
    pub(super) fn new(inner: Body, tapped: Box<Tapped>) -> TapBody {
        TapBody {
            inner,
            bytes: 0,
            tapped: Some(tapped),
        }
    }

    fn end(&mut self, trailers: Option<&http::HeaderMap>, eos: Option<Eos>) {
        if let Some(t) = self.tapped.take() {
            t.end(self.bytes, trailers, eos);
        }
    }
}

/// The reset code of a failed body: its HTTP/2 reason when it has one.
fn reset_of(e: &BoxError) -> Eos {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e.as_ref());
    while let Some(err) = source {
        if let Some(h2) = err.downcast_ref::<h2::Error>() {
            if let Some(reason) = h2.reason() {
                return Eos::from(reason);
            }
        }
        source = err.source();
    }
    Eos::from(h2::Reason::INTERNAL_ERROR)
}

impl http_body::Body for TapBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes += data.len() as u64;
                }
                if let Some(trailers) = frame.trailers_ref() {
                    let trailers = trailers.clone();
                    self.end(Some(&trailers), None);
                } else if self.inner.is_end_stream() {
                    self.end(None, None);
                }
            }
            Poll::Ready(Some(Err(e))) => {
                let eos = reset_of(e);
                self.end(None, Some(eos));
            }
            Poll::Ready(None) => self.end(None, None),
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

impl Drop for TapBody {
    fn drop(&mut self) {
        if self.tapped.is_some() {
            // Never polled to its end: an empty body (HEAD, 204) hyper did not poll, or the
            // client went away.
            let eos = if self.inner.is_end_stream() {
                None
            } else {
                Some(Eos::from(h2::Reason::CANCEL))
            };
            self.end(None, eos);
        }
    }
}
