//! Retries: a route's [`RetryPolicy`] (from the proxy API's `HttpRoute.Retry` /
//! `GrpcRoute.Retry`), and [`send`], the loop the request path calls at its one "send an attempt"
//! seam.
//!
//! An answer is retried while it matches the policy's conditions (HTTP status ranges, or gRPC
//! codes of a trailers-only answer), the request body can be replayed ([`body`]: at most
//! `max_request_bytes`, 64 KiB by default, a larger body is sent exactly once), fewer than
//! `1 + max_retries` attempts were made, and the route's [`Budget`] allows one more. Between
//! attempts the policy's backoff (exponential with jitter) is waited, never past the request's
//! deadline. The last answer is returned as it came.

use crate::{
    backoff::{Backoff, BackoffConfig},
    http::{self, pool::Head, Body},
};
use futures_util::future::BoxFuture;
use hyper::{header, HeaderMap, Request, Response, StatusCode};
use linkerd2_proxy_api::outbound as api;
use std::{
    ops::RangeInclusive,
    sync::atomic::{AtomicU64, Ordering::Relaxed},
    time::Duration,
};
use tokio::time::Instant;

pub mod body;
pub mod budget;

pub use body::{Replay, ReplayBody};
pub use budget::Budget;

/// Linkerd's bound on a retried request's body.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 64 * 1024;

/// What a policy says about retrying one route's requests.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Attempts after the first.
    pub max_retries: u32,
    /// A request whose body is larger is never retried.
    pub max_request_bytes: usize,
    pub conditions: Conditions,
    /// Each attempt's own timeout (`retry.linkerd.io/timeout`); a timed-out attempt is retried.
    pub timeout: Option<Duration>,
    /// The wait between attempts; `None` retries at once.
    pub backoff: Option<BackoffConfig>,
}

/// Which answers are retried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Conditions {
    /// HTTP status ranges (inclusive).
    Http(Vec<RangeInclusive<u16>>),
    /// gRPC status codes.
    Grpc(GrpcCodes),
}

/// The gRPC codes a policy can retry (the proxy API's `GrpcRoute.Retry.Conditions`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GrpcCodes {
    pub cancelled: bool,
    pub deadline_exceeded: bool,
    pub resource_exhausted: bool,
    pub internal: bool,
    pub unavailable: bool,
}

/// gRPC `UNAVAILABLE`: what an HTTP 429/502/503/504 without `grpc-status` means to a gRPC
/// client (the gRPC spec's HTTP-to-gRPC status mapping).
const GRPC_UNAVAILABLE: u32 = 14;

impl GrpcCodes {
    pub fn contains(&self, code: u32) -> bool {
        match code {
            1 => self.cancelled,
            4 => self.deadline_exceeded,
            8 => self.resource_exhausted,
            13 => self.internal,
            GRPC_UNAVAILABLE => self.unavailable,
            _ => false,
        }
    }
}

/// Why a policy's `Retry` cannot be used (the route is then served without retries).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum Error {
    #[error("retry status range {start}-{end} is not within 100-599 in order")]
    StatusRange { start: u32, end: u32 },
    #[error("retry timeout is negative")]
    NegativeTimeout,
    #[error("retry backoff: {0}")]
    Backoff(#[from] crate::backoff::Error),
}

impl RetryPolicy {
    /// From an HTTP route rule's `retry`. No conditions or no status range means 5xx
    /// (Linkerd's default); a range without an end (proto3's 0) is its start alone.
    pub fn from_http_proto(r: &api::http_route::Retry) -> Result<RetryPolicy, Error> {
        let ranges_in = r
            .conditions
            .as_ref()
            .map_or(&[][..], |c| &c.status_ranges[..]);
        let mut ranges = Vec::with_capacity(ranges_in.len());
        for range in ranges_in {
            let start = range.start;
            let end = if range.end == 0 { start } else { range.end };
            if !(100..=599).contains(&start) || !(start..=599).contains(&end) {
                return Err(Error::StatusRange { start, end });
            }
            // Checked just above: both fit in u16.
            ranges.push(start as u16..=end as u16);
        }
        if ranges.is_empty() {
            ranges.push(500..=599);
        }
        RetryPolicy::common(
            r.max_retries,
            r.max_request_bytes,
            Conditions::Http(ranges),
            r.timeout,
            r.backoff.as_ref(),
        )
    }

    /// From a gRPC route rule's `retry`. No conditions means Linkerd's default set: all five.
    pub fn from_grpc_proto(r: &api::grpc_route::Retry) -> Result<RetryPolicy, Error> {
        let codes = match &r.conditions {
            None => GrpcCodes {
                cancelled: true,
                deadline_exceeded: true,
                resource_exhausted: true,
                internal: true,
                unavailable: true,
            },
            Some(c) => GrpcCodes {
                cancelled: c.cancelled,
                deadline_exceeded: c.deadine_exceeded,
                resource_exhausted: c.resource_exhausted,
                internal: c.internal,
                unavailable: c.unavailable,
            },
        };
        RetryPolicy::common(
            r.max_retries,
            r.max_request_bytes,
            Conditions::Grpc(codes),
            r.timeout,
            r.backoff.as_ref(),
        )
    }

    fn common(
        max_retries: u32,
        max_request_bytes: u32,
        conditions: Conditions,
        timeout: Option<prost_types::Duration>,
        backoff: Option<&api::ExponentialBackoff>,
    ) -> Result<RetryPolicy, Error> {
        let timeout = match timeout {
            None => None,
            Some(t) => {
                let t = Duration::try_from(t).map_err(|_| Error::NegativeTimeout)?;
                (!t.is_zero()).then_some(t)
            }
        };
        Ok(RetryPolicy {
            max_retries,
            max_request_bytes: match max_request_bytes {
                0 => DEFAULT_MAX_REQUEST_BYTES,
                n => n as usize,
            },
            conditions,
            timeout,
            backoff: backoff.map(BackoffConfig::from_proto).transpose()?,
        })
    }

    /// Does this answer call for a retry? A response by its status (gRPC: the `grpc-status`
    /// of a trailers-only answer, or 429/502/503/504 as `UNAVAILABLE`); an error when it is safe to
    /// send again (the request never reached the application) or its status matches.
    pub fn wants_retry(&self, answer: &Result<Response<Body>, Failure>) -> bool {
        match answer {
            Ok(rsp) => self.matches(rsp.status(), rsp.headers()),
            Err(Failure::Timeout(_)) => true,
            Err(Failure::Http(e)) => e.retry_safe() || self.matches(e.status(), &HeaderMap::new()),
        }
    }

    fn matches(&self, status: StatusCode, headers: &HeaderMap) -> bool {
        match &self.conditions {
            Conditions::Http(ranges) => ranges.iter().any(|r| r.contains(&status.as_u16())),
            Conditions::Grpc(codes) => match grpc_status(headers) {
                Some(code) => codes.contains(code),
                None => {
                    matches!(status.as_u16(), 429 | 502..=504) && codes.contains(GRPC_UNAVAILABLE)
                }
            },
        }
    }
}

fn grpc_status(headers: &HeaderMap) -> Option<u32> {
    http::grpc_status(headers).and_then(|c| u32::try_from(c).ok())
}

/// How an attempt failed without an answer.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error(transparent)]
    Http(#[from] http::Error),
    /// The policy's per-attempt timeout passed before the response head.
    #[error("no response within the retry timeout of {0:?}")]
    Timeout(Duration),
}

/// Why [`send`] returned the answer it did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// An answer the conditions do not retry (a success, or a failure not listed).
    Answered,
    /// `1 + max_retries` attempts were made.
    LimitExceeded,
    /// The route's retry budget had no room.
    Budget,
    /// The request body is over `max_request_bytes` (or failed), or the request is an upgrade:
    /// it cannot be sent again.
    BodyNotReplayable,
    /// Waiting the backoff would pass the request's deadline.
    Deadline,
}

/// What [`send`] did: retries made and why it stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryOutcome {
    pub retries: u32,
    pub stop: Stop,
}

/// `outbound_{http,grpc}_route_retry_*_total` for one route: the route metrics render
/// [`RetryCounters::counts`] with the route's labels.
#[derive(Debug, Default)]
pub struct RetryCounters {
    requests: AtomicU64,
    successes: AtomicU64,
    limit_exceeded: AtomicU64,
    overflow: AtomicU64,
}

/// A snapshot of [`RetryCounters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetryCounts {
    /// Retries sent (attempts after the first).
    pub requests: u64,
    /// Requests answered without a retryable failure after at least one retry.
    pub successes: u64,
    /// Retryable answers returned because the retry limit (or the request's deadline) was
    /// reached.
    pub limit_exceeded: u64,
    /// Retryable answers returned because the budget was exhausted or the body could not be
    /// replayed (over `max_request_bytes`).
    pub overflow: u64,
}

impl RetryCounters {
    pub fn counts(&self) -> RetryCounts {
        RetryCounts {
            requests: self.requests.load(Relaxed),
            successes: self.successes.load(Relaxed),
            limit_exceeded: self.limit_exceeded.load(Relaxed),
            overflow: self.overflow.load(Relaxed),
        }
    }

    fn record(&self, outcome: RetryOutcome) {
        let counter = match outcome.stop {
            Stop::Answered if outcome.retries > 0 => &self.successes,
            Stop::Answered => return,
            Stop::LimitExceeded | Stop::Deadline => &self.limit_exceeded,
            Stop::Budget | Stop::BodyNotReplayable => &self.overflow,
        };
        counter.fetch_add(1, Relaxed);
    }
}

/// Is the body known to be over `max` before it is read?
fn too_large(req: &Request<Body>, max: usize) -> bool {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let lower = http_body::Body::size_hint(req.body()).lower();
    declared.unwrap_or(lower).max(lower) > max as u64
}

async fn one<'a>(
    timeout: Option<Duration>,
    sent: BoxFuture<'a, Result<Response<Body>, http::Error>>,
) -> Result<Response<Body>, Failure> {
    match timeout {
        None => Ok(sent.await?),
        Some(t) => match tokio::time::timeout(t, sent).await {
            Ok(answer) => Ok(answer?),
            Err(_) => Err(Failure::Timeout(t)),
        },
    }
}

/// Sends `req` with `attempt`, retrying as `policy` says; returns the last answer and what
/// happened. `deadline`: the request's own timeout (the caller enforces it around this call;
/// here it only stops a backoff that would outlast it). Counts the route's `counters` and takes
/// retries from its `budget`.
pub async fn send<'a, F>(
    policy: &RetryPolicy,
    budget: &Budget,
    counters: &RetryCounters,
    deadline: Option<Instant>,
    req: Request<Body>,
    mut attempt: F,
) -> (Result<Response<Body>, Failure>, RetryOutcome)
where
    F: FnMut(Request<Body>) -> BoxFuture<'a, Result<Response<Body>, http::Error>>,
{
    budget.deposit();
    let done = |answer, retries, stop| {
        let outcome = RetryOutcome { retries, stop };
        counters.record(outcome);
        (answer, outcome)
    };

    if too_large(&req, policy.max_request_bytes) || http::is_upgrade(&req) {
        // Never kept, so never replayed: one attempt, as it came. (An upgrade's connection
        // cannot be asked for twice either.)
        let answer = one(policy.timeout, attempt(req)).await;
        let stop = if policy.wants_retry(&answer) {
            Stop::BodyNotReplayable
        } else {
            Stop::Answered
        };
        return done(answer, 0, stop);
    }

    // Each retry repeats the head (not the extensions: they may hold one-shot state).
    let head = Head::of(&req);
    let (parts, body) = req.into_parts();
    let (first, replay) = Replay::new(body, policy.max_request_bytes);
    let mut req = Request::from_parts(parts, http::boxed(first));
    let mut backoff = policy.backoff.map(Backoff::with_config);
    let mut retries = 0;
    loop {
        let answer = one(policy.timeout, attempt(req)).await;
        if !policy.wants_retry(&answer) {
            return done(answer, retries, Stop::Answered);
        }
        if retries >= policy.max_retries {
            return done(answer, retries, Stop::LimitExceeded);
        }
        if !replay.can_replay() {
            return done(answer, retries, Stop::BodyNotReplayable);
        }
        let delay = backoff.as_mut().map_or(Duration::ZERO, Backoff::next_delay);
        if deadline.is_some_and(|d| Instant::now() + delay >= d) {
            return done(answer, retries, Stop::Deadline);
        }
        if !budget.withdraw() {
            return done(answer, retries, Stop::Budget);
        }
        // The failed answer (and its connection's hold on the old body copy) goes before the
        // wait.
        drop(answer);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        retries += 1;
        counters.requests.fetch_add(1, Relaxed);
        req = head.rebuild(http::boxed(replay.next()));
    }
}

#[cfg(test)]
mod tests;
