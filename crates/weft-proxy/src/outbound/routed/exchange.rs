//! The exchange with the chosen backend: the timeouts that bound it ([`Limit`], [`within`],
//! the client's `grpc-timeout`) and the record of its outcome in the route metrics
//! ([`RouteEnd`]).

use super::outcome_of;
use crate::{
    http::{self, Body, Error, OnEnd},
    metrics::route::{BackendMetrics, ErrorLabel, Outcome, RouteMetrics},
};
use hyper::{HeaderMap, Response};
use std::time::Duration;
use tokio::time::Instant;

/// A named bound on part of the exchange.
#[derive(Clone, Copy, Debug)]
pub(in crate::outbound) struct Limit {
    pub(in crate::outbound) what: &'static str,
    pub(in crate::outbound) timeout: Duration,
}

/// Runs `fut` within `limit`; past it, [`Error::Timeout`] (the future is dropped, which cancels
/// the request to the endpoint). A plain combinator, not an `async fn`: an `async fn` would keep
/// both its argument and the future it awaits, doubling the size of what it wraps at every level
/// (and hyper keeps one request future per connection, idle or not).
pub(in crate::outbound) fn within<F>(
    limit: Option<Limit>,
    fut: F,
) -> impl std::future::Future<Output = Result<Response<Body>, Error>>
where
    F: std::future::Future<Output = Result<Response<Body>, Error>>,
{
    use futures_util::future::{Either, FutureExt as _};
    match limit {
        None => Either::Left(fut),
        Some(l) => Either::Right(tokio::time::timeout(l.timeout, fut).map(move |r| {
            r.unwrap_or(Err(Error::Timeout {
                what: l.what,
                timeout: l.timeout,
            }))
        })),
    }
}

/// A gRPC client's `grpc-timeout` (`1-8 digits` + `H`/`M`/`S`/`m`/`u`/`n`).
pub(in crate::outbound) fn grpc_timeout(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(crate::http::GRPC_TIMEOUT)?.to_str().ok()?;
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Records a routed request's outcome in the route and backend families when the response
/// ends (dropped with the response body: carried in the in-flight hold for HTTP, as the body's
/// end observer for gRPC, where the status arrives in trailers).
pub(in crate::outbound) struct RouteEnd {
    pub(super) route: RouteMetrics,
    pub(super) backend: BackendMetrics,
    pub(super) started: Instant,
    pub(super) dispatched: Instant,
    pub(super) grpc: bool,
    pub(super) status: Option<u32>,
    pub(super) error: ErrorLabel,
}

impl RouteEnd {
    /// The response headers arrived.
    pub(in crate::outbound) fn headers(&mut self, resp: &Response<Body>) {
        self.status = outcome_of(resp, self.grpc, ErrorLabel::None).status;
    }

    /// The proxy answers with this error instead (then [`RouteEnd::headers`] of its response).
    pub(in crate::outbound) fn failed(&mut self, e: &Error) {
        self.error = match e {
            Error::Timeout { .. } => ErrorLabel::Timeout,
            Error::Unavailable { .. } => ErrorLabel::FailFast,
            _ => ErrorLabel::Unexpected,
        };
    }

    pub(in crate::outbound) fn is_grpc(&self) -> bool {
        self.grpc
    }

    /// Wraps a gRPC response's body so its trailers' status is the one recorded.
    pub(in crate::outbound) fn observe(self, resp: Response<Body>) -> Response<Body> {
        resp.map(|b| http::boxed(OnEnd::new(b, self)))
    }
}

impl http::EndObserver for RouteEnd {
    fn trailers(&mut self, trailers: &HeaderMap) {
        if let Some(g) = http::grpc_status(trailers).and_then(|g| u32::try_from(g).ok()) {
            self.status = Some(g);
        }
    }

    fn end(mut self, stream_error: bool) {
        if stream_error && self.error == ErrorLabel::None {
            self.error = ErrorLabel::Unexpected;
        }
        // Recorded on drop.
    }
}

impl Drop for RouteEnd {
    fn drop(&mut self) {
        let outcome = Outcome {
            status: self.status,
            error: self.error,
        };
        self.backend.done(outcome, self.dispatched.elapsed());
        self.route.done(outcome, self.started.elapsed());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_units() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert("grpc-timeout", v.parse().unwrap());
            grpc_timeout(&m)
        };
        assert_eq!(h("100m"), Some(Duration::from_millis(100)));
        assert_eq!(h("2S"), Some(Duration::from_secs(2)));
        assert_eq!(h("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(h("5u"), Some(Duration::from_micros(5)));
        assert_eq!(h("m"), None);
        assert_eq!(h("123456789m"), None);
        assert_eq!(h("10x"), None);
        assert_eq!(h("-1S"), None);
    }
}
