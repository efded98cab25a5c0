//! The retry budget (Linkerd's `retryBudget`): over a sliding window of `ttl`, retries may number
//! at most `ratio × original requests + min_per_second × ttl`. Under total failure the requests
//! reaching the backends are therefore bounded by `(1 + ratio)` times the original load plus a
//! small constant, however many retries each request's policy would allow.
//!
//! The window is ten slots of `ttl / 10`; a slot older than the window is reset when reused, so
//! the budget needs no timer and takes one short lock per original request and per retry.

use crate::config::RetryBudget;
use std::{sync::Mutex, time::Duration};
use tokio::time::Instant;

const SLOTS: usize = 10;

/// One route's budget, shared by its requests (`Arc` it).
pub struct Budget {
    settings: RetryBudget,
    slot: Duration,
    origin: Instant,
    window: Mutex<[Slot; SLOTS]>,
}

#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    epoch: u64,
    requests: u64,
    retries: u64,
}

impl std::fmt::Debug for Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Budget")
            .field("settings", &self.settings)
            .finish()
    }
}

impl Budget {
    pub fn new(settings: RetryBudget) -> Budget {
        // A zero window would divide by zero below; config refuses it, a caller might not.
        let ttl = settings.ttl.max(Duration::from_millis(SLOTS as u64));
        Budget {
            settings: RetryBudget { ttl, ..settings },
            slot: ttl / SLOTS as u32,
            origin: Instant::now(),
            window: Mutex::new([Slot::default(); SLOTS]),
        }
    }

    pub fn settings(&self) -> RetryBudget {
        self.settings
    }

    fn epoch(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.origin).as_nanos();
        u64::try_from(since / self.slot.as_nanos().max(1)).unwrap_or(u64::MAX)
    }

    fn with_slot<T>(&self, f: impl FnOnce(&mut [Slot; SLOTS], u64) -> T) -> T {
        let epoch = self.epoch(Instant::now());
        let mut window = self.window.lock().unwrap_or_else(|e| e.into_inner());
        let slot = &mut window[(epoch % SLOTS as u64) as usize];
        if slot.epoch != epoch {
            *slot = Slot {
                epoch,
                ..Slot::default()
            };
        }
        f(&mut window, epoch)
    }

    /// An original request (not a retry) started: it earns `ratio` of a retry.
    pub fn deposit(&self) {
        self.with_slot(|w, epoch| w[(epoch % SLOTS as u64) as usize].requests += 1);
    }

    /// Takes one retry from the budget if the window allows it.
    pub fn withdraw(&self) -> bool {
        let floor = f64::from(self.settings.min_per_second) * self.settings.ttl.as_secs_f64();
        self.with_slot(|w, epoch| {
            let live = w
                .iter()
                .filter(|s| s.epoch + SLOTS as u64 > epoch && s.epoch <= epoch);
            let (requests, retries) =
                live.fold((0, 0), |(q, r), s| (q + s.requests, r + s.retries));
            let allowed = self.settings.ratio * requests as f64 + floor;
            if (retries + 1) as f64 <= allowed {
                w[(epoch % SLOTS as u64) as usize].retries += 1;
                true
            } else {
                false
            }
        })
    }
}
