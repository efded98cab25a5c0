//! The proxy's one exponential backoff: exponential from `min`, doubling to `max`, with random
//! jitter added (never past `max`), reset after a success. Reconnects (discovery streams, identity
//! renewal) use it with 50 % jitter; the policy's `ExponentialBackoff` (failure-accrual ejection,
//! the wait between retries) sets its own bounds and jitter ratio ([`BackoffConfig`]).

use linkerd2_proxy_api::outbound as api;
use std::time::Duration;

/// The jitter reconnects use: up to half the base delay.
pub const RECONNECT_JITTER: f64 = 0.5;

/// The largest jitter ratio accepted from a policy (Linkerd documents 0.0 to 100.0).
pub const MAX_JITTER_RATIO: f64 = 100.0;

/// Bounds and jitter of an exponential backoff, as a policy's `ExponentialBackoff` gives them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BackoffConfig {
    pub min: Duration,
    pub max: Duration,
    /// Up to `jitter_ratio × base` is added to each delay (0 = none), in `[0, 100]`.
    pub jitter_ratio: f64,
}

/// Why a policy's `ExponentialBackoff` cannot be used.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum Error {
    #[error("{0} is negative")]
    Negative(&'static str),
    #[error("max_backoff is missing")]
    NoMax,
    #[error("min_backoff {min:?} exceeds max_backoff {max:?}")]
    MinOverMax { min: Duration, max: Duration },
    #[error("jitter_ratio {0} is outside [0, 100]")]
    Jitter(f32),
}

impl BackoffConfig {
    /// `min_backoff` may be absent (zero); `max_backoff` must be set and at least `min`.
    pub fn from_proto(p: &api::ExponentialBackoff) -> Result<BackoffConfig, Error> {
        let min = match p.min_backoff {
            None => Duration::ZERO,
            Some(d) => Duration::try_from(d).map_err(|_| Error::Negative("min_backoff"))?,
        };
        let max = Duration::try_from(p.max_backoff.ok_or(Error::NoMax)?)
            .map_err(|_| Error::Negative("max_backoff"))?;
        if min > max {
            return Err(Error::MinOverMax { min, max });
        }
        let jitter = f64::from(p.jitter_ratio);
        if !(0.0..=MAX_JITTER_RATIO).contains(&jitter) {
            return Err(Error::Jitter(p.jitter_ratio));
        }
        Ok(BackoffConfig {
            min,
            max,
            jitter_ratio: jitter,
        })
    }
}

#[derive(Clone, Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    jitter_ratio: f64,
    failures: u32,
}

impl Backoff {
    /// A reconnect backoff: 50 % jitter.
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff::with_config(BackoffConfig {
            min,
            max,
            jitter_ratio: RECONNECT_JITTER,
        })
    }

    pub fn with_config(cfg: BackoffConfig) -> Backoff {
        Backoff {
            min: cfg.min,
            max: cfg.max,
            jitter_ratio: cfg.jitter_ratio.clamp(0.0, MAX_JITTER_RATIO),
            failures: 0,
        }
    }

    /// After a success: the next failure waits `min` again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// The wait before the next attempt: `min * 2^failures` capped at `max`, plus up to
    /// `jitter_ratio` of that as jitter (still capped at `max`). Counts one more failure.
    pub fn next_delay(&mut self) -> Duration {
        let base = self
            .min
            .saturating_mul(1u32 << self.failures.min(20))
            .min(self.max);
        self.failures = self.failures.saturating_add(1);
        base.mul_f64(1.0 + fastrand::f64() * self.jitter_ratio)
            .min(self.max)
    }

    /// Sleeps [`Backoff::next_delay`].
    pub async fn sleep(&mut self) {
        tokio::time::sleep(self.next_delay()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_min_to_max_with_bounded_jitter_and_resets() {
        let (min, max) = (Duration::from_millis(100), Duration::from_millis(1000));
        let mut b = Backoff::new(min, max);
        for base in [100u64, 200, 400, 800, 1000, 1000] {
            let d = b.next_delay();
            let base = Duration::from_millis(base);
            assert!(
                d >= base && d <= base.mul_f64(1.5).min(max),
                "{d:?} for {base:?}"
            );
        }
        b.reset();
        let d = b.next_delay();
        assert!(d >= min && d <= min.mul_f64(1.5), "{d:?} after reset");
    }

    #[test]
    fn policy_jitter_ratio_bounds_the_added_delay() {
        let cfg = BackoffConfig {
            min: Duration::from_millis(10),
            max: Duration::from_secs(10),
            jitter_ratio: 0.0,
        };
        let mut exact = Backoff::with_config(cfg);
        let delays: Vec<_> = (0..4).map(|_| exact.next_delay()).collect();
        assert_eq!(
            delays,
            [10, 20, 40, 80].map(Duration::from_millis).to_vec(),
            "no jitter: exactly doubling"
        );
        let mut wide = Backoff::with_config(BackoffConfig {
            jitter_ratio: 2.0,
            ..cfg
        });
        let mut max_seen = Duration::ZERO;
        for _ in 0..200 {
            wide.reset();
            let d = wide.next_delay();
            assert!(d >= cfg.min && d <= cfg.min * 3, "{d:?}");
            max_seen = max_seen.max(d);
        }
        assert!(
            max_seen > cfg.min * 2,
            "jitter 2.0 reaches past 2x: {max_seen:?}"
        );
    }

    #[test]
    fn from_proto_checks_every_field() {
        let d = |ms: i32| prost_types::Duration {
            seconds: 0,
            nanos: ms * 1_000_000,
        };
        let ok = api::ExponentialBackoff {
            min_backoff: Some(d(100)),
            max_backoff: Some(d(900)),
            jitter_ratio: 0.5,
            respect_retry_after_hint: false,
        };
        assert_eq!(
            BackoffConfig::from_proto(&ok),
            Ok(BackoffConfig {
                min: Duration::from_millis(100),
                max: Duration::from_millis(900),
                jitter_ratio: 0.5
            })
        );
        let no_max = api::ExponentialBackoff {
            max_backoff: None,
            ..ok
        };
        assert_eq!(BackoffConfig::from_proto(&no_max), Err(Error::NoMax));
        let reversed = api::ExponentialBackoff {
            min_backoff: Some(d(901)),
            ..ok
        };
        assert!(matches!(
            BackoffConfig::from_proto(&reversed),
            Err(Error::MinOverMax { .. })
        ));
        let negative = api::ExponentialBackoff {
            min_backoff: Some(d(-1)),
            ..ok
        };
        assert_eq!(
            BackoffConfig::from_proto(&negative),
            Err(Error::Negative("min_backoff"))
        );
        let jitter = api::ExponentialBackoff {
            jitter_ratio: -0.1,
            ..ok
        };
        assert_eq!(BackoffConfig::from_proto(&jitter), Err(Error::Jitter(-0.1)));
        let nan = api::ExponentialBackoff {
            jitter_ratio: f32::NAN,
            ..ok
        };
        assert!(BackoffConfig::from_proto(&nan).is_err());
    }
}
