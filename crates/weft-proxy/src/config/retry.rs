//! `WEFT_PROXY_OUTBOUND_RETRY_BUDGET_*`: how many retries a route's requests may add (Linkerd's
//! `retryBudget`: a ratio of the original requests plus a floor per second, over a window).

use std::time::Duration;

use super::{parse::parse_duration, Env, VarError};

/// Retries may add at most this fraction of the route's original requests (within the window).
/// Linkerd's `retryRatio`.
pub const ENV_OUTBOUND_RETRY_BUDGET_RATIO: &str = "WEFT_PROXY_OUTBOUND_RETRY_BUDGET_RATIO";
pub const DEFAULT_OUTBOUND_RETRY_BUDGET_RATIO: f64 = 0.2;
/// Retries always allowed per second on top of the ratio, so a quiet route can still retry.
/// Linkerd's `minRetriesPerSecond`.
pub const ENV_OUTBOUND_RETRY_BUDGET_MIN_PER_SECOND: &str =
    "WEFT_PROXY_OUTBOUND_RETRY_BUDGET_MIN_PER_SECOND";
pub const DEFAULT_OUTBOUND_RETRY_BUDGET_MIN_PER_SECOND: u32 = 10;
/// The window over which requests and retries are counted. Linkerd's `ttl`.
pub const ENV_OUTBOUND_RETRY_BUDGET_TTL: &str = "WEFT_PROXY_OUTBOUND_RETRY_BUDGET_TTL";
pub const DEFAULT_OUTBOUND_RETRY_BUDGET_TTL: Duration = Duration::from_secs(10);
/// Upper bound of the ratio (a typo guard: 1000 retries per request is never a budget).
pub const MAX_RETRY_BUDGET_RATIO: f64 = 1000.0;
/// Bounds of the window: long enough to count a few requests, short enough to recover.
pub const MIN_RETRY_BUDGET_TTL: Duration = Duration::from_secs(1);
pub const MAX_RETRY_BUDGET_TTL: Duration = Duration::from_secs(60);

/// One budget's settings; every route with a retry policy gets its own budget with them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryBudget {
    pub ratio: f64,
    pub min_per_second: u32,
    pub ttl: Duration,
}

// `Config` is `Eq`; the ratio is checked to be a number (never NaN), so equality is total.
impl Eq for RetryBudget {}

impl Default for RetryBudget {
    fn default() -> RetryBudget {
        RetryBudget {
            ratio: DEFAULT_OUTBOUND_RETRY_BUDGET_RATIO,
            min_per_second: DEFAULT_OUTBOUND_RETRY_BUDGET_MIN_PER_SECOND,
            ttl: DEFAULT_OUTBOUND_RETRY_BUDGET_TTL,
        }
    }
}

impl RetryBudget {
    /// Every bad variable is reported (the defaults stand in for them).
    pub fn from_env(env: &dyn Env) -> Result<RetryBudget, Vec<VarError>> {
        let mut errors = Vec::new();
        let read = |name: &'static str| {
            env.get(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .map(|v| (name, v))
        };
        let mut budget = RetryBudget::default();
        if let Some((name, v)) = read(ENV_OUTBOUND_RETRY_BUDGET_RATIO) {
            match v.parse::<f64>() {
                Ok(r) if (0.0..=MAX_RETRY_BUDGET_RATIO).contains(&r) => budget.ratio = r,
                _ => errors.push(bad(
                    name,
                    format!("must be a number from 0 to {MAX_RETRY_BUDGET_RATIO} (e.g. 0.2)"),
                    v,
                )),
            }
        }
        if let Some((name, v)) = read(ENV_OUTBOUND_RETRY_BUDGET_MIN_PER_SECOND) {
            match v.parse::<u32>() {
                Ok(n) => budget.min_per_second = n,
                Err(_) => errors.push(bad(name, "must be a whole number (e.g. 10)".into(), v)),
            }
        }
        if let Some((name, v)) = read(ENV_OUTBOUND_RETRY_BUDGET_TTL) {
            match parse_duration(&v) {
                Ok(d) if (MIN_RETRY_BUDGET_TTL..=MAX_RETRY_BUDGET_TTL).contains(&d) => {
                    budget.ttl = d
                }
                Ok(_) => errors.push(bad(
                    name,
                    format!("must be from {MIN_RETRY_BUDGET_TTL:?} to {MAX_RETRY_BUDGET_TTL:?}"),
                    v,
                )),
                Err(reason) => errors.push(bad(name, reason, v)),
            }
        }
        if errors.is_empty() {
            Ok(budget)
        } else {
            Err(errors)
        }
    }
}

fn bad(name: &'static str, reason: String, value: String) -> VarError {
    VarError {
        name,
        reason,
        value: Some(value),
    }
}
