//! A balancer's settings as plain values, from a policy's backend (`BalanceP2c.load`,
//! `FailureAccrual`, `Queue`) or the defaults used without a policy (Linkerd's).

use crate::{
    backoff::{self, BackoffConfig},
    discovery::Target,
    metrics::balancer::BackendLabels,
};
use linkerd2_proxy_api::outbound::{self as api, backend::balance_p2c};
use std::{sync::Arc, time::Duration};

/// Linkerd's peak-EWMA defaults: an unmeasured endpoint costs 30 ms; samples age over 10 s.
pub const DEFAULT_RTT: Duration = Duration::from_millis(30);
pub const DEFAULT_DECAY: Duration = Duration::from_secs(10);
/// Linkerd's outbound HTTP queue: 10 000 waiting requests, 3 s fail-fast.
pub const DEFAULT_QUEUE_CAPACITY: usize = 10_000;
pub const DEFAULT_FAILFAST: Duration = Duration::from_secs(3);
/// Linkerd's ejection backoff, for a failure accrual that gives none: 1 s to 60 s, jitter 0.5.
pub const DEFAULT_ACCRUAL_BACKOFF: BackoffConfig = BackoffConfig {
    min: Duration::from_secs(1),
    max: Duration::from_secs(60),
    jitter_ratio: 0.5,
};

/// Linkerd's outbound connect backoff: an endpoint no connection could be made to is out of
/// rotation for 100 ms, doubling to 500 ms while its probe's connects keep failing, jitter 0.1.
pub const DEFAULT_CONNECT_BACKOFF: BackoffConfig = BackoffConfig {
    min: Duration::from_millis(100),
    max: Duration::from_millis(500),
    jitter_ratio: 0.1,
};

/// Why part of a policy's balancer settings cannot be used.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("{0} is negative")]
    Negative(&'static str),
    #[error("{0} must not be zero")]
    Zero(&'static str),
    #[error("success_rate_threshold {0} is outside [0, 1]")]
    Threshold(f64),
    #[error("failure accrual backoff: {0}")]
    Backoff(#[from] backoff::Error),
}

fn duration(
    field: &'static str,
    d: Option<prost_types::Duration>,
) -> Result<Option<Duration>, ConfigError> {
    d.map(|d| Duration::try_from(d).map_err(|_| ConfigError::Negative(field)))
        .transpose()
}

/// Peak-EWMA load estimation (`BalanceP2c.load`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadConfig {
    /// The RTT an endpoint is assumed to have until it answers.
    pub default_rtt: Duration,
    /// How fast a lower sample pulls the estimate down: weight `exp(-elapsed / decay)`.
    pub decay: Duration,
}

impl Default for LoadConfig {
    fn default() -> LoadConfig {
        LoadConfig {
            default_rtt: DEFAULT_RTT,
            decay: DEFAULT_DECAY,
        }
    }
}

impl LoadConfig {
    /// Absent fields take the defaults; a zero decay is refused (it would forget every
    /// sample at once).
    pub fn from_proto(p: &balance_p2c::PeakEwma) -> Result<LoadConfig, ConfigError> {
        LoadConfig::from_parts(p.default_rtt, p.decay)
    }

    /// `PenaltyPeakEwma`: its base peak-EWMA; the 429 penalties are not applied (yet).
    pub fn from_penalty_proto(p: &balance_p2c::PenaltyPeakEwma) -> Result<LoadConfig, ConfigError> {
        LoadConfig::from_parts(p.default_rtt, p.decay)
    }

    /// The load of a `BalanceP2c`: peak-EWMA with the defaults when none is given.
    pub fn from_load(load: Option<&balance_p2c::Load>) -> Result<LoadConfig, ConfigError> {
        match load {
            None => Ok(LoadConfig::default()),
            Some(balance_p2c::Load::PeakEwma(p)) => LoadConfig::from_proto(p),
            Some(balance_p2c::Load::PenaltyPeakEwma(p)) => LoadConfig::from_penalty_proto(p),
        }
    }

    fn from_parts(
        default_rtt: Option<prost_types::Duration>,
        decay: Option<prost_types::Duration>,
    ) -> Result<LoadConfig, ConfigError> {
        let default_rtt = duration("default_rtt", default_rtt)?.unwrap_or(DEFAULT_RTT);
        let decay = duration("decay", decay)?.unwrap_or(DEFAULT_DECAY);
        if decay.is_zero() {
            return Err(ConfigError::Zero("decay"));
        }
        Ok(LoadConfig { default_rtt, decay })
    }
}

/// When an endpoint is taken out of rotation (`FailureAccrual`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct AccrualConfig {
    pub policy: Accrual,
    /// Never eject an endpoint when that would leave fewer than this many ready (0 = no floor).
    pub min_ready_endpoints: u32,
}

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Accrual {
    /// No ejection (no failure accrual in the policy, or none without a policy).
    #[default]
    None,
    /// `max_failures` failures in a row eject the endpoint for `backoff`.
    ConsecutiveFailures {
        max_failures: u32,
        backoff: BackoffConfig,
    },
    /// A success-rate EWMA below `success_rate_threshold` (after `min_requests`), or
    /// `max_consecutive_failures` in a row, ejects the endpoint for `backoff`. Zero disables
    /// either trigger.
    Unified {
        success_rate_threshold: f64,
        decay: Duration,
        min_requests: u32,
        max_consecutive_failures: u32,
        backoff: BackoffConfig,
    },
}

impl AccrualConfig {
    pub fn from_proto(p: &api::FailureAccrual) -> Result<AccrualConfig, ConfigError> {
        use api::failure_accrual::Kind;
        // The proto says a backoff must be set; without one, Linkerd's default rather than no
        // ejection at all.
        let backoff = |b: Option<&api::ExponentialBackoff>| match b {
            None => Ok(DEFAULT_ACCRUAL_BACKOFF),
            Some(b) => Ok::<_, ConfigError>(BackoffConfig::from_proto(b)?),
        };
        let policy = match &p.kind {
            None => Accrual::None,
            Some(Kind::ConsecutiveFailures(c)) if c.max_failures == 0 => Accrual::None,
            Some(Kind::ConsecutiveFailures(c)) => Accrual::ConsecutiveFailures {
                max_failures: c.max_failures,
                backoff: backoff(c.backoff.as_ref())?,
            },
            Some(Kind::Unified(u)) => {
                let t = u.success_rate_threshold;
                if !(0.0..=1.0).contains(&t) {
                    return Err(ConfigError::Threshold(t));
                }
                if t == 0.0 && u.max_consecutive_failures == 0 {
                    Accrual::None
                } else {
                    let decay = duration("decay", u.decay)?.unwrap_or(DEFAULT_DECAY);
                    if decay.is_zero() {
                        return Err(ConfigError::Zero("decay"));
                    }
                    Accrual::Unified {
                        success_rate_threshold: t,
                        decay,
                        min_requests: u.min_requests,
                        max_consecutive_failures: u.max_consecutive_failures,
                        backoff: backoff(u.backoff.as_ref())?,
                    }
                }
            }
        };
        Ok(AccrualConfig {
            policy,
            min_ready_endpoints: p.ejection.map_or(0, |e| e.min_ready_endpoints),
        })
    }

    /// The ejection backoff, if the policy ejects at all.
    pub fn backoff(&self) -> Option<BackoffConfig> {
        match self.policy {
            Accrual::None => None,
            Accrual::ConsecutiveFailures { backoff, .. } | Accrual::Unified { backoff, .. } => {
                Some(backoff)
            }
        }
    }
}

/// Requests waiting for an endpoint (`Queue`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueConfig {
    /// More waiting requests than this fail at once (503).
    pub capacity: usize,
    /// A request waits at most this long for an endpoint.
    pub failfast: Duration,
}

impl Default for QueueConfig {
    fn default() -> QueueConfig {
        QueueConfig {
            capacity: DEFAULT_QUEUE_CAPACITY,
            failfast: DEFAULT_FAILFAST,
        }
    }
}

impl QueueConfig {
    /// A zero capacity or absent fail-fast takes the default (proto3 cannot tell zero from
    /// unset, and a queue that holds nothing would fail every request during a rollout).
    pub fn from_proto(p: &api::Queue) -> Result<QueueConfig, ConfigError> {
        Ok(QueueConfig {
            capacity: match p.capacity {
                0 => DEFAULT_QUEUE_CAPACITY,
                n => n as usize,
            },
            failfast: duration("failfast_timeout", p.failfast_timeout)?.unwrap_or(DEFAULT_FAILFAST),
        })
    }
}

/// Everything one balancer is configured with.
#[derive(Clone, Debug, PartialEq)]
pub struct BalancerConfig {
    pub load: LoadConfig,
    pub accrual: AccrualConfig,
    pub queue: QueueConfig,
    /// `backend_*` labels of `outbound_http_balancer_endpoints`.
    pub labels: Arc<BackendLabels>,
}

impl BalancerConfig {
    /// Without a policy: peak-EWMA defaults, no ejection, Linkerd's queue, labels from the
    /// target alone.
    pub fn for_target(target: &Target) -> BalancerConfig {
        BalancerConfig {
            load: LoadConfig::default(),
            accrual: AccrualConfig::default(),
            queue: QueueConfig::default(),
            labels: Arc::new(BackendLabels::for_target(target)),
        }
    }
}
