//! One endpoint's state in a balancer: requests pending on it, its peak-EWMA RTT estimate, and
//! its health (ready, ejected until a time, or on probation with one probe request out) under
//! failure accrual and connect failures.

use super::config::{Accrual, AccrualConfig, LoadConfig};
use crate::backoff::Backoff;
use std::time::Duration;
use tokio::time::Instant;

/// How a request on an endpoint ended, for load and failure accrual.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A response head that is not a failure.
    Success,
    /// A response head that is a failure: HTTP 5xx, or a non-OK `grpc-status` in the headers
    /// (a trailers-only gRPC answer).
    Failure,
    /// No response head: the connection or the exchange failed.
    Error,
}

impl Outcome {
    /// Classifies a response head (see [`Outcome::Failure`]).
    pub fn of_response(status: http::StatusCode, headers: &http::HeaderMap) -> Outcome {
        let grpc_failed = headers
            .get(crate::http::GRPC_STATUS)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0");
        if status.is_server_error() || grpc_failed {
            Outcome::Failure
        } else {
            Outcome::Success
        }
    }

    fn failed(self) -> bool {
        self != Outcome::Success
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Health {
    Ready,
    /// Out of rotation until then; afterwards it takes one probe request.
    Ejected {
        until: Instant,
    },
    /// The probe request is out; nothing else is sent until it answers.
    Probing,
    /// No connection could be made to it: out of rotation, no request probes it, until a
    /// reconnect in the background succeeds ([`Stats::reconnected`]).
    Reconnecting,
}

pub(super) struct Stats {
    pub pending: usize,
    /// Peak-EWMA RTT estimate, nanoseconds.
    rtt_ns: f64,
    rtt_at: Instant,
    pub health: Health,
    consecutive_failures: u32,
    /// Success-rate EWMA (unified accrual) and the requests it has seen since admission.
    success_rate: f64,
    rate_at: Instant,
    requests: u32,
    /// Ejection backoff, created at the first ejection.
    backoff: Option<Backoff>,
}

/// What an outcome did to the endpoint's health.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Change {
    None,
    /// Tripped: wants to leave rotation (the balancer checks the ready floor).
    Trip,
    /// A probe succeeded (or a reconnect): back in rotation.
    Readmitted,
    /// A probe failed: ejected again for a longer backoff.
    Reejected,
    /// A probe found no connection (without an accrual backoff to eject it for): now
    /// reconnecting in the background.
    Reconnecting,
}

impl Stats {
    pub fn new(load: &LoadConfig, now: Instant) -> Stats {
        Stats {
            pending: 0,
            rtt_ns: load.default_rtt.as_nanos() as f64,
            rtt_at: now,
            health: Health::Ready,
            consecutive_failures: 0,
            success_rate: 1.0,
            rate_at: now,
            requests: 0,
            backoff: None,
        }
    }

    /// `RTT estimate × (pending + 1) / weight`: lower is better. The estimate decays towards zero
    /// while no answer comes (as tower's and Linkerd's peak-EWMA do), so an endpoint that has not
    /// been tried, or not for long (a new one at the default RTT, a slow one that recovered),
    /// is tried again instead of starving behind a measured fast one.
    pub fn cost(&self, weight: u32, now: Instant, decay: Duration) -> f64 {
        self.estimate(now, decay) * (self.pending as f64 + 1.0) / f64::from(weight.max(1))
    }

    /// The RTT estimate decayed by `exp(-elapsed / decay)` since the last update.
    fn estimate(&self, now: Instant, decay: Duration) -> f64 {
        self.rtt_ns * self.keep(now, decay)
    }

    fn keep(&self, now: Instant, decay: Duration) -> f64 {
        let elapsed = now.saturating_duration_since(self.rtt_at).as_secs_f64();
        (-elapsed / decay.as_secs_f64().max(f64::MIN_POSITIVE)).exp()
    }

    /// Can a pick take it now (ready, or ejected with its backoff over: the probe)?
    pub fn available(&self, now: Instant) -> bool {
        match self.health {
            Health::Ready => true,
            Health::Ejected { until } => until <= now,
            Health::Probing | Health::Reconnecting => false,
        }
    }

    pub fn is_ready(&self) -> bool {
        self.health == Health::Ready
    }

    /// A peak: a sample above the (decayed) estimate replaces it; a lower one pulls it down with
    /// weight `1 - exp(-elapsed / decay)`, so an endpoint not heard from for long is judged by
    /// its latest answer.
    pub fn observe_rtt(&mut self, rtt: Duration, now: Instant, decay: Duration) {
        let sample = rtt.as_nanos() as f64;
        let keep = self.keep(now, decay);
        let current = self.rtt_ns * keep;
        self.rtt_ns = if sample > current {
            sample
        } else {
            current + sample * (1.0 - keep)
        };
        self.rtt_at = now;
    }

    /// Accrues one outcome. `probe`: this request was the probation probe (only its answer
    /// decides probation; answers to requests sent before an ejection are ignored).
    pub fn accrue(
        &mut self,
        outcome: Outcome,
        probe: bool,
        now: Instant,
        accrual: &AccrualConfig,
    ) -> Change {
        match self.health {
            // Before the policy check: a probe always resolves probation (a policy updated to
            // no accrual meanwhile readmits whatever the answer).
            Health::Probing if probe => {
                if outcome.failed() && accrual.backoff().is_some() {
                    self.eject(now, accrual);
                    Change::Reejected
                } else {
                    self.readmit(now);
                    Change::Readmitted
                }
            }
            _ if accrual.policy == Accrual::None => Change::None,
            Health::Probing | Health::Ejected { .. } | Health::Reconnecting => Change::None,
            Health::Ready => {
                if outcome.failed() {
                    self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                } else {
                    self.consecutive_failures = 0;
                }
                let tripped = match accrual.policy {
                    Accrual::None => false,
                    Accrual::ConsecutiveFailures { max_failures, .. } => {
                        self.consecutive_failures >= max_failures
                    }
                    Accrual::Unified {
                        success_rate_threshold,
                        decay,
                        min_requests,
                        max_consecutive_failures,
                        ..
                    } => {
                        let elapsed = now.saturating_duration_since(self.rate_at).as_secs_f64();
                        let keep = (-elapsed / decay.as_secs_f64()).exp();
                        let x = if outcome.failed() { 0.0 } else { 1.0 };
                        self.success_rate = self.success_rate * keep + x * (1.0 - keep);
                        self.rate_at = now;
                        self.requests = self.requests.saturating_add(1);
                        (max_consecutive_failures > 0
                            && self.consecutive_failures >= max_consecutive_failures)
                            || (success_rate_threshold > 0.0
                                && self.requests >= min_requests
                                && self.success_rate < success_rate_threshold)
                    }
                };
                if tripped {
                    Change::Trip
                } else {
                    Change::None
                }
            }
        }
    }

    /// Out of rotation for the next backoff (`min` first, growing with each failed probe).
    pub fn eject(&mut self, now: Instant, accrual: &AccrualConfig) {
        let Some(cfg) = accrual.backoff() else {
            return;
        };
        let backoff = self
            .backoff
            .get_or_insert_with(|| Backoff::with_config(cfg));
        self.health = Health::Ejected {
            until: now + backoff.next_delay(),
        };
    }

    /// No connection could be made to it. A ready endpoint leaves rotation to reconnect in the
    /// background (`Trip`); a failure accrual probe is ejected for its next backoff
    /// (`Reejected`), or reconnects when the policy has no backoff any more (`Reconnecting`);
    /// requests picked before it left rotation change nothing.
    pub fn connect_failed(&mut self, now: Instant, accrual: &AccrualConfig) -> Change {
        match self.health {
            Health::Ejected { .. } | Health::Reconnecting => Change::None,
            Health::Probing if accrual.backoff().is_some() => {
                self.eject(now, accrual);
                Change::Reejected
            }
            Health::Probing => {
                self.health = Health::Reconnecting;
                Change::Reconnecting
            }
            Health::Ready => {
                self.health = Health::Reconnecting;
                Change::Trip
            }
        }
    }

    /// A connection was made in the background: a reconnecting endpoint is back in rotation.
    pub fn reconnected(&mut self, now: Instant) -> Change {
        if self.health == Health::Reconnecting {
            self.readmit(now);
            Change::Readmitted
        } else {
            Change::None
        }
    }

    fn readmit(&mut self, now: Instant) {
        self.health = Health::Ready;
        self.consecutive_failures = 0;
        self.success_rate = 1.0;
        self.rate_at = now;
        self.requests = 0;
        if let Some(b) = &mut self.backoff {
            b.reset();
        }
    }

    /// The probe was cancelled (no answer): the endpoint may be probed again at once.
    pub fn probe_cancelled(&mut self, now: Instant) {
        if self.health == Health::Probing {
            self.health = Health::Ejected { until: now };
        }
    }
}
