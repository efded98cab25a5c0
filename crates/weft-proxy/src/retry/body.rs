//! A request body that can be sent again: the first attempt streams the original body while a
//! copy of its data (reference-counted `Bytes`, not a byte copy) is kept up to a bound; a later
//! attempt replays the kept data, then continues reading the original where the previous attempt
//! stopped (a server may answer before it has read the whole body). Trailers are kept too.
//!
//! Once more than the bound went by (or the original failed), nothing is kept and no copy can
//! replay it: [`Replay::can_replay`] says so before a retry is attempted. Only the newest copy
//! may read: an abandoned attempt's connection that still polls its copy gets an error, so two
//! attempts never interleave the original's frames.

use crate::http::{Body, BoxError};
use bytes::Bytes;
use http::HeaderMap;
use http_body::{Frame, SizeHint};
use std::{
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard},
    task::{Context, Poll},
};

/// The state every copy shares.
struct Shared {
    /// The original body, read by whichever copy is current; `None` once it ended.
    source: Option<Body>,
    chunks: Vec<Bytes>,
    kept: usize,
    max: usize,
    trailers: Option<HeaderMap>,
    ended: bool,
    /// More than `max` bytes went by, or the original failed: no replay possible.
    capped: bool,
    /// The generation of the copy allowed to read.
    current: u32,
}

/// Makes the copies of one request's body.
pub struct Replay {
    shared: Arc<Mutex<Shared>>,
}

/// One attempt's copy of the body.
pub struct ReplayBody {
    shared: Arc<Mutex<Shared>>,
    generation: u32,
    next_chunk: usize,
    trailers_sent: bool,
}

/// An older attempt's copy was polled after a newer attempt started.
#[derive(Debug, thiserror::Error)]
#[error("request body superseded by a retry")]
pub struct Superseded;

fn lock(m: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Replay {
    /// The first attempt's copy, and the handle that makes the next ones. At most `max` bytes
    /// are kept.
    pub fn new(body: Body, max: usize) -> (ReplayBody, Replay) {
        let ended = http_body::Body::is_end_stream(&body);
        let shared = Arc::new(Mutex::new(Shared {
            source: if ended { None } else { Some(body) },
            chunks: Vec::new(),
            kept: 0,
            max,
            trailers: None,
            ended,
            capped: false,
            current: 0,
        }));
        let first = ReplayBody {
            shared: shared.clone(),
            generation: 0,
            next_chunk: 0,
            trailers_sent: false,
        };
        (first, Replay { shared })
    }

    /// Can another attempt be given the whole body?
    pub fn can_replay(&self) -> bool {
        !lock(&self.shared).capped
    }

    /// A copy for the next attempt (from the start); the previous copies stop reading.
    pub fn next(&self) -> ReplayBody {
        let mut s = lock(&self.shared);
        s.current = s.current.wrapping_add(1);
        ReplayBody {
            shared: self.shared.clone(),
            generation: s.current,
            next_chunk: 0,
            trailers_sent: false,
        }
    }
}

impl http_body::Body for ReplayBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let mut s = lock(&this.shared);
        if s.current != this.generation {
            return Poll::Ready(Some(Err(Superseded.into())));
        }
        if let Some(chunk) = s.chunks.get(this.next_chunk) {
            this.next_chunk += 1;
            return Poll::Ready(Some(Ok(Frame::data(chunk.clone()))));
        }
        if s.ended {
            if !this.trailers_sent {
                this.trailers_sent = true;
                if let Some(t) = s.trailers.clone() {
                    return Poll::Ready(Some(Ok(Frame::trailers(t))));
                }
            }
            return Poll::Ready(None);
        }
        let s = &mut *s;
        let Some(source) = s.source.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(source).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    if !s.capped {
                        if s.kept + data.len() > s.max {
                            // Past the bound: this request will not be retried, keep nothing.
                            s.capped = true;
                            s.chunks = Vec::new();
                        } else {
                            s.kept += data.len();
                            s.chunks.push(data.clone());
                            this.next_chunk += 1;
                        }
                    }
                } else if let Some(t) = frame.trailers_ref() {
                    s.trailers = Some(t.clone());
                    this.trailers_sent = true;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                s.ended = true;
                s.source = None;
                this.trailers_sent = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                // A body that failed part-way cannot be replayed whole.
                s.capped = true;
                s.chunks = Vec::new();
                Poll::Ready(Some(Err(e)))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        let s = lock(&self.shared);
        if s.current != self.generation {
            return false;
        }
        if self.next_chunk < s.chunks.len() {
            return false;
        }
        let trailers_left = s.trailers.is_some() && !self.trailers_sent;
        if s.ended {
            return !trailers_left;
        }
        !trailers_left && s.source.as_ref().is_some_and(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let s = lock(&self.shared);
        let replayed: u64 = s
            .chunks
            .get(self.next_chunk..)
            .map_or(0, |c| c.iter().map(|b| b.len() as u64).sum());
        match &s.source {
            None => SizeHint::with_exact(replayed),
            Some(source) => {
                let rest = source.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(replayed + rest.lower());
                if let Some(upper) = rest.upper() {
                    hint.set_upper(replayed + upper);
                }
                hint
            }
        }
    }
}
