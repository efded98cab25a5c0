//! The snapshots kept of one proxy, and the figures over a window computed from them.
//!
//! Every scrape of the last [`RECENT`] (at most [`MAX_RECENT`] of them), then the oldest scrape
//! of each minute up to [`HORIZON`], plus the newest scrape past the horizon so that a window of
//! a whole hour still has a start: at most `MAX_RECENT + HORIZON in minutes + 2` snapshots
//! ([`MAX_LEN`]).

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use super::snapshot::Snapshot;

/// Every scrape this young is kept.
pub const RECENT: Duration = Duration::from_secs(120);
/// At most this many of them (a scrape interval under 1 s would otherwise keep hundreds): older
/// ones are thinned like any past [`RECENT`].
pub const MAX_RECENT: usize = 120;
/// One snapshot per minute is kept up to this age (the longest window the API answers).
pub const HORIZON: Duration = Duration::from_secs(3600);
/// The most snapshots a history holds: the recent ones, one per minute of the horizon (a
/// stretch of the horizon spans one minute bucket more than its length), and the one past it.
pub const MAX_LEN: usize = MAX_RECENT + (HORIZON.as_secs() / 60) as usize + 2;

/// A proxy's snapshots, oldest first.
#[derive(Debug, Default)]
pub struct History {
    entries: VecDeque<(Instant, Snapshot)>,
    /// When the first snapshot was taken: minutes are counted from here.
    origin: Option<Instant>,
}

/// What a proxy did over a window.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    /// The span the figures cover: from the window's first snapshot to its last. Shorter than
    /// asked when the history does not reach back that far; 0 with a single snapshot.
    pub seconds: f64,
    /// Counters over that span, the connection gauge at its end.
    pub delta: Snapshot,
}

impl History {
    /// Adds a scrape taken at `at` (not before the previous one) and thins the older ones.
    pub fn push(&mut self, at: Instant, snapshot: Snapshot) {
        if self.entries.back().is_some_and(|(last, _)| *last > at) {
            return;
        }
        let origin = *self.origin.get_or_insert(at);
        self.entries.push_back((at, snapshot));
        self.thin(at, origin);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The newest snapshot and when it was taken.
    pub fn newest(&self) -> Option<(Instant, &Snapshot)> {
        self.entries.back().map(|(at, s)| (*at, s))
    }

    /// Keeps the recent scrapes, the oldest of each minute past them, and, of those older than
    /// the horizon, only the newest.
    fn thin(&mut self, now: Instant, origin: Instant) {
        let len = self.entries.len();
        let minute = |at: Instant| at.duration_since(origin).as_secs() / 60;
        let mut last_minute = None;
        let mut kept = VecDeque::with_capacity(len);
        for (i, (at, snapshot)) in self.entries.drain(..).enumerate() {
            let recent = now.duration_since(at) <= RECENT && len - i <= MAX_RECENT;
            if !recent {
                if last_minute == Some(minute(at)) {
                    continue;
                }
                last_minute = Some(minute(at));
            }
            kept.push_back((at, snapshot));
        }
        while kept
            .get(1)
            .is_some_and(|(at, _)| now.duration_since(*at) > HORIZON)
        {
            kept.pop_front();
        }
        self.entries = kept;
    }

    /// The figures over `window` as of `now`: the newest snapshot minus the newest one at least
    /// `window` older than it, or minus the oldest kept (then [`Window::seconds`] is shorter).
    /// `None` when the newest snapshot is itself older than `window`: nothing is known about
    /// that span.
    pub fn window(&self, now: Instant, window: Duration) -> Option<Window> {
        let (end_at, end) = self.entries.back()?;
        if now.saturating_duration_since(*end_at) > window {
            return None;
        }
        let (start_at, start) = self
            .entries
            .iter()
            .rev()
            .find(|(at, _)| end_at.duration_since(*at) >= window)
            .or(self.entries.front())?;
        Some(Window {
            seconds: end_at.duration_since(*start_at).as_secs_f64(),
            delta: end.since(start),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::stats::Stats;

    /// A snapshot whose inbound request counter is `requests`.
    fn requests(requests: f64) -> Snapshot {
        Snapshot {
            inbound: Stats {
                requests,
                successes: requests,
                ..Stats::default()
            },
            ..Snapshot::default()
        }
    }

    /// A history of one scrape every `every` for `span`, 10 requests per second, as of the end.
    fn scraped(every: Duration, span: Duration) -> (History, Instant) {
        let start = Instant::now();
        let mut h = History::default();
        let mut t = Duration::ZERO;
        while t <= span {
            h.push(start + t, requests(10.0 * t.as_secs_f64()));
            assert!(h.len() <= MAX_LEN, "{} snapshots at {t:?}", h.len());
            t += every;
        }
        (h, start + t - every)
    }

    /// The most snapshots a history held, scraped every `every` for two hours.
    fn most(every: Duration) -> usize {
        let start = Instant::now();
        let mut h = History::default();
        let mut most = 0;
        let mut t = Duration::ZERO;
        while t <= Duration::from_secs(7200) {
            h.push(start + t, requests(0.0));
            most = most.max(h.len());
            t += every;
        }
        most
    }

    #[test]
    fn the_memory_bound_the_docs_give() {
        assert_eq!(MAX_LEN, 182);
        assert!(
            most(Duration::from_secs(10)) <= 73,
            "{}",
            most(Duration::from_secs(10))
        );
        assert!(
            most(Duration::from_secs(2)) <= 121,
            "{}",
            most(Duration::from_secs(2))
        );
        assert!(most(Duration::from_millis(500)) <= MAX_LEN);
    }

    fn ages(h: &History, now: Instant) -> Vec<u64> {
        h.entries
            .iter()
            .map(|(at, _)| now.duration_since(*at).as_secs())
            .collect()
    }

    #[test]
    fn recent_scrapes_are_all_kept_then_one_a_minute_up_to_the_hour() {
        let (h, now) = scraped(Duration::from_secs(10), Duration::from_secs(2 * 3600));
        let ages = ages(&h, now);
        // The last two minutes: every scrape.
        let recent: Vec<u64> = ages.iter().copied().filter(|a| *a <= 120).collect();
        assert_eq!(recent, (0..=12).rev().map(|i| i * 10).collect::<Vec<_>>());
        // Before that, 60 s apart, back to the first one past the hour.
        let older: Vec<u64> = ages.iter().copied().filter(|a| *a > 120).collect();
        for pair in older.windows(2) {
            assert_eq!(pair[0] - pair[1], 60, "{older:?}");
        }
        assert!(older[0] > 3600 && older[1] <= 3600, "{older:?}");
        assert!(h.len() <= MAX_LEN);
    }

    #[test]
    fn fast_scrapes_are_capped() {
        let (h, now) = scraped(Duration::from_millis(200), Duration::from_secs(600));
        let ages = ages(&h, now);
        let young = ages.iter().filter(|a| **a < 60).count();
        // 120 recent scrapes cover the last 24 s; the rest is one a minute.
        assert!(young <= MAX_RECENT + 1, "{young}");
        assert!(h.len() <= MAX_RECENT + 11, "{}", h.len());
        assert_eq!(
            h.window(now, Duration::from_secs(10)).expect("w").seconds,
            10.0
        );
    }

    #[test]
    fn a_window_reaches_back_to_the_newest_snapshot_old_enough() {
        let (h, now) = scraped(Duration::from_secs(10), Duration::from_secs(3 * 3600));
        let w = h.window(now, Duration::from_secs(60)).expect("window");
        assert_eq!(w.seconds, 60.0);
        assert_eq!(w.delta.inbound.requests, 600.0);
        // Past the recent scrapes the window starts at a minute snapshot: at least as long as
        // asked, less than a minute longer.
        let w = h.window(now, Duration::from_secs(300)).expect("window");
        assert!((300.0..360.0).contains(&w.seconds), "{}", w.seconds);
        assert_eq!(w.delta.inbound.requests, 10.0 * w.seconds);
        let w = h.window(now, HORIZON).expect("hour");
        assert!((3600.0..3660.0).contains(&w.seconds), "{}", w.seconds);
    }

    #[test]
    fn a_short_history_gives_a_shorter_window() {
        let (h, now) = scraped(Duration::from_secs(10), Duration::from_secs(30));
        let w = h.window(now, Duration::from_secs(60)).expect("window");
        assert_eq!(w.seconds, 30.0);
        assert_eq!(w.delta.inbound.requests, 300.0);
        // One snapshot: a window of nothing, but the gauges are known.
        let mut one = History::default();
        let mut s = requests(50.0);
        s.tcp.open = 4.0;
        one.push(now, s);
        let w = one.window(now, Duration::from_secs(60)).expect("window");
        assert_eq!(
            (w.seconds, w.delta.inbound.requests, w.delta.tcp.open),
            (0.0, 0.0, 4.0)
        );
    }

    #[test]
    fn nothing_is_known_of_a_window_after_the_last_snapshot() {
        let (h, end) = scraped(Duration::from_secs(10), Duration::from_secs(300));
        let later = end + Duration::from_secs(90);
        assert!(h.window(later, Duration::from_secs(60)).is_none());
        // A longer window still covers the last snapshot.
        let w = h.window(later, Duration::from_secs(120)).expect("window");
        assert_eq!(w.seconds, 120.0);
        assert!(History::default().window(end, HORIZON).is_none());
    }

    #[test]
    fn a_restart_in_the_window_counts_from_the_restart() {
        let start = Instant::now();
        let mut h = History::default();
        h.push(start, requests(1000.0));
        h.push(start + Duration::from_secs(30), requests(1300.0));
        // The proxy restarted: its counter starts again from zero.
        h.push(start + Duration::from_secs(60), requests(200.0));
        let w = h
            .window(start + Duration::from_secs(60), Duration::from_secs(60))
            .expect("window");
        assert_eq!((w.seconds, w.delta.inbound.requests), (60.0, 200.0));
    }

    #[test]
    fn out_of_order_scrapes_are_ignored() {
        let start = Instant::now();
        let mut h = History::default();
        h.push(start + Duration::from_secs(10), requests(10.0));
        h.push(start, requests(5.0));
        assert_eq!(h.len(), 1);
    }
}
