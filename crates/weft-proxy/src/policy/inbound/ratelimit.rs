//! HTTP local rate limits (`HTTPLocalRateLimitPolicy`): a server's limits as a plain value
//! ([`RateLimit`]) and the token buckets enforcing them ([`RateLimiter`]).
//!
//! One limiter serves every connection of a port: it travels inside the port's
//! [`ServerPolicy`](super::ServerPolicy), and the policy client hands a new policy the previous
//! limiter when the limit did not change ([`RateLimiter::same_limit`]), so a re-sent policy does
//! not refill the buckets.
//!
//! A request is checked against its client's bucket — the override naming its identity, else
//! the `identity` bucket of its identity (clients without one share a bucket) — then the shared
//! `total` bucket. It takes a token from each only when every one has a token: a limited request
//! takes none, so a client flooding past its own limit does not drain `total` for the others.
//! Buckets refill continuously at their rate and hold one second's worth (burst = rps), counted
//! in billionths of a token so the arithmetic is exact.

use crate::policy::Meta;
use std::{
    collections::HashMap,
    fmt,
    num::NonZeroU32,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};
use tokio::time::Instant;

/// The most client identities with their own `identity` bucket. A new identity beyond it first
/// makes the map forget every bucket that is full again (idle long enough to have refilled: a
/// new bucket starts full, so forgetting it changes nothing); when none is (that many clients
/// active within the last second), the least recently used one is forgotten and its client
/// starts again with a full burst (still under `total`).
pub const MAX_IDENTITIES: usize = 10_000;

/// One token, in the buckets' unit.
const TOKEN: u64 = 1_000_000_000;

/// A bucket refills completely within this (burst = one second's worth).
const REFILL: Duration = Duration::from_secs(1);

/// A server's HTTP local rate limit (an `HttpLocalRateLimit` message, validated).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// The policy: `ratelimit_group`, `ratelimit_kind`, `ratelimit_name` labels.
    pub meta: Arc<Meta>,
    /// Every request of the server, together.
    pub total: Option<NonZeroU32>,
    /// Each client identity on its own (clients without one together).
    pub identity: Option<NonZeroU32>,
    /// Clients named here use the override's bucket instead of `identity`'s.
    pub overrides: Vec<Override>,
}

/// Requests per second for the identities it names, together (one bucket per override, as
/// Linkerd's proxy).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Override {
    pub rps: NonZeroU32,
    /// Lower case, without a trailing dot.
    pub identities: Vec<String>,
}

/// Which bucket refused a request: the `ratelimit_scope` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    Total,
    Identity,
    Override,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Total => "total",
            Scope::Identity => "identity",
            Scope::Override => "override",
        }
    }
}

/// A refused request: the bucket that had no token, and its rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limited {
    pub scope: Scope,
    pub rps: NonZeroU32,
}

/// The token buckets of one [`RateLimit`], shared by every connection of the port.
pub struct RateLimiter {
    limit: RateLimit,
    total: Option<Mutex<Tokens>>,
    /// A client identity (lower case) → its override (index into `limit.overrides`, and into
    /// `override_buckets`); the first override naming an identity wins.
    overrides: HashMap<String, usize>,
    override_buckets: Vec<Mutex<Tokens>>,
    /// `Some` when `limit.identity` is.
    identities: Option<Mutex<IdentityBuckets>>,
}

impl fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RateLimiter").field(&self.limit).finish()
    }
}

/// A bucket's content at `at`, in billionths of a token.
#[derive(Clone, Copy, Debug)]
struct Tokens {
    nanos: u64,
    at: Instant,
}

/// The `identity` buckets: one per client identity, one for clients without.
struct IdentityBuckets {
    anonymous: Tokens,
    by_id: HashMap<String, Tokens>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Tokens {
    fn full(rps: NonZeroU32, now: Instant) -> Tokens {
        Tokens {
            nanos: capacity(rps),
            at: now,
        }
    }

    /// Adds what flowed in since the last look (`rps` tokens a second, up to the burst).
    fn refill(&mut self, rps: NonZeroU32, now: Instant) {
        // At most a second counts (a whole burst): no overflow (4.3e9 rps × 1e9 ns < 2^64).
        let elapsed = now.saturating_duration_since(self.at).min(REFILL);
        let added = elapsed.as_nanos() as u64 * u64::from(rps.get());
        self.nanos = (self.nanos + added).min(capacity(rps));
        self.at = self.at.max(now);
    }

    fn has_one(&self) -> bool {
        self.nanos >= TOKEN
    }

    fn take(&mut self) {
        self.nanos -= TOKEN;
    }

    /// Full again by `now` (a new bucket would be the same).
    fn refilled_by(&self, rps: NonZeroU32, now: Instant) -> bool {
        let mut t = *self;
        t.refill(rps, now);
        t.nanos == capacity(rps)
    }
}

/// A full bucket: one second's worth of tokens.
fn capacity(rps: NonZeroU32) -> u64 {
    u64::from(rps.get()) * TOKEN
}

impl IdentityBuckets {
    /// The bucket of `id` (`None`: clients without an identity), a full one if new.
    fn bucket(&mut self, id: Option<&str>, rps: NonZeroU32, now: Instant) -> &mut Tokens {
        let Some(id) = id else {
            return &mut self.anonymous;
        };
        // Two lookups for a new identity, none of them allocating for a known one.
        if !self.by_id.contains_key(id) {
            if self.by_id.len() >= MAX_IDENTITIES {
                self.make_room(rps, now);
            }
            self.by_id.insert(id.to_string(), Tokens::full(rps, now));
        }
        self.by_id.get_mut(id).expect("inserted above")
    }

    /// See [`MAX_IDENTITIES`].
    fn make_room(&mut self, rps: NonZeroU32, now: Instant) {
        self.by_id.retain(|_, t| !t.refilled_by(rps, now));
        if self.by_id.len() < MAX_IDENTITIES {
            return;
        }
        let oldest = self
            .by_id
            .iter()
            .min_by_key(|(_, t)| t.at)
            .map(|(id, _)| id.clone());
        if let Some(id) = oldest {
            self.by_id.remove(&id);
        }
    }
}

impl RateLimiter {
    /// Buckets for `limit`, full.
    pub fn new(limit: RateLimit) -> RateLimiter {
        let now = Instant::now();
        let mut overrides = HashMap::new();
        for (i, o) in limit.overrides.iter().enumerate() {
            for id in &o.identities {
                overrides.entry(id.clone()).or_insert(i);
            }
        }
        RateLimiter {
            total: limit.total.map(|rps| Mutex::new(Tokens::full(rps, now))),
            override_buckets: limit
                .overrides
                .iter()
                .map(|o| Mutex::new(Tokens::full(o.rps, now)))
                .collect(),
            overrides,
            identities: limit.identity.map(|rps| {
                Mutex::new(IdentityBuckets {
                    anonymous: Tokens::full(rps, now),
                    by_id: HashMap::new(),
                })
            }),
            limit,
        }
    }

    pub fn limit(&self) -> &RateLimit {
        &self.limit
    }

    /// Enforces the same limit as `other` (so `other`'s buckets can stand for this one's).
    pub fn same_limit(&self, other: &RateLimiter) -> bool {
        self.limit == other.limit
    }

    /// Takes a token for one request of a client (its verified identity, if any), or says
    /// which bucket had none (then no bucket lost a token).
    pub fn check(&self, id: Option<&str>) -> Result<(), Limited> {
        let now = Instant::now();
        // The client's own bucket first (locked while `total` is: always in this order).
        if let Some(i) = id.and_then(|id| self.override_of(id)) {
            let rps = self.limit.overrides[i].rps;
            let mut own = lock(&self.override_buckets[i]);
            return Self::take_both(&mut own, rps, Scope::Override, || self.take_total(now), now);
        }
        match (&self.identities, self.limit.identity) {
            (Some(buckets), Some(rps)) => {
                let mut buckets = lock(buckets);
                let own = buckets.bucket(id, rps, now);
                Self::take_both(own, rps, Scope::Identity, || self.take_total(now), now)
            }
            _ => self.take_total(now),
        }
    }

    /// A token from `own` if it has one and `total` gives one too.
    fn take_both(
        own: &mut Tokens,
        rps: NonZeroU32,
        scope: Scope,
        total: impl FnOnce() -> Result<(), Limited>,
        now: Instant,
    ) -> Result<(), Limited> {
        own.refill(rps, now);
        if !own.has_one() {
            return Err(Limited { scope, rps });
        }
        total()?;
        own.take();
        Ok(())
    }

    fn take_total(&self, now: Instant) -> Result<(), Limited> {
        let (Some(bucket), Some(rps)) = (&self.total, self.limit.total) else {
            return Ok(());
        };
        let mut tokens = lock(bucket);
        tokens.refill(rps, now);
        if !tokens.has_one() {
            return Err(Limited {
                scope: Scope::Total,
                rps,
            });
        }
        tokens.take();
        Ok(())
    }

    /// The override naming `id` (identities compare ASCII case-insensitively).
    fn override_of(&self, id: &str) -> Option<usize> {
        if self.overrides.is_empty() {
            return None;
        }
        let id = id.trim_end_matches('.');
        if id.bytes().any(|b| b.is_ascii_uppercase()) {
            return self.overrides.get(&id.to_ascii_lowercase()).copied();
        }
        self.overrides.get(id).copied()
    }

    /// Client identities with an `identity` bucket (tests).
    #[cfg(test)]
    pub fn identities(&self) -> usize {
        self.identities.as_ref().map_or(0, |b| lock(b).by_id.len())
    }
}

#[cfg(test)]
#[path = "ratelimit_tests.rs"]
mod tests;
