//! The proxy's one reconnect backoff (discovery streams, identity renewal): exponential from
//! `min`, doubling to `max`, with up to 50 % jitter (never past `max`), reset after a success.

use std::time::Duration;

#[derive(Clone, Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max,
            failures: 0,
        }
    }

    /// After a success: the next failure waits `min` again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// The wait before the next attempt: `min * 2^failures` capped at `max`, plus up to 50 %
    /// jitter (still capped at `max`). Counts one more failure.
    pub fn next_delay(&mut self) -> Duration {
        let base = self
            .min
            .saturating_mul(1u32 << self.failures.min(20))
            .min(self.max);
        self.failures = self.failures.saturating_add(1);
        base.mul_f64(1.0 + fastrand::f64() * 0.5).min(self.max)
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
}
