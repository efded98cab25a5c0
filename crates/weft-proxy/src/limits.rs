//! What the proxy allows the clients of its listeners ([`ServerLimits`], from
//! `WEFT_PROXY_{INBOUND,OUTBOUND}_*`), and the counter of what a limit closed
//! (`connections_limited_total{direction, limit}`).
//!
//! Where each limit holds: the connection count at accept (`runtime`'s accept loop, through
//! [`Slots`]); the HTTP/1 head size and idle/head timeout, and the HTTP/2 stream limit and idle
//! timeout, in `http::serve`; the first bytes (TLS ClientHello, protocol detection) within the
//! detect timeout, where they are read.

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc,
};

use crate::{
    config::ServerLimits,
    metrics::{self as m, Counter, Direction, Metrics},
};

/// Why a connection was closed by a limit (the `limit` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    MaxConnections,
    HeaderSize,
    IdleTimeout,
    Http2Flood,
}

impl Limit {
    pub const ALL: [Limit; 4] = [
        Limit::MaxConnections,
        Limit::HeaderSize,
        Limit::IdleTimeout,
        Limit::Http2Flood,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Limit::MaxConnections => "max_connections",
            Limit::HeaderSize => "header_size",
            Limit::IdleTimeout => "idle_timeout",
            Limit::Http2Flood => "http2_flood",
        }
    }
}

/// One direction's limits and their counters (held here, so the series are never swept).
#[derive(Debug)]
pub struct Limits {
    pub settings: ServerLimits,
    /// One counter per [`Limit::ALL`]; `None`: not counted (tests without a registry).
    counters: Option<[Counter; 4]>,
}

impl Limits {
    pub fn new(settings: ServerLimits, metrics: &Metrics, direction: Direction) -> Limits {
        let counter = |l: Limit| {
            metrics.counter(
                m::CONNECTIONS_LIMITED,
                None,
                &[("direction", direction.label()), ("limit", l.label())],
            )
        };
        Limits {
            settings,
            counters: Some(Limit::ALL.map(counter)),
        }
    }

    /// Not counted anywhere.
    pub fn unmetered(settings: ServerLimits) -> Limits {
        Limits {
            settings,
            counters: None,
        }
    }

    pub fn count(&self, limit: Limit) {
        if let Some(c) = &self.counters {
            c[limit as usize].inc();
        }
    }
}

/// The open connections of one listener, against its [`ServerLimits::max_connections`].
#[derive(Debug, Default)]
pub struct Slots {
    open: Arc<AtomicUsize>,
}

/// Held while a connection is open; frees its slot when dropped.
#[derive(Debug)]
pub struct Slot(Arc<AtomicUsize>);

impl Slots {
    /// A slot for one more connection, or `None` when `max` are open.
    pub fn take(&self, max: usize) -> Option<Slot> {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(self.open.clone()))
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_refuse_over_max_and_free_on_drop() {
        let slots = Slots::default();
        let a = slots.take(2).expect("first");
        let _b = slots.take(2).expect("second");
        assert!(slots.take(2).is_none(), "a third over 2");
        drop(a);
        assert_eq!(slots.open(), 1);
        assert!(
            slots.take(2).is_some(),
            "a slot freed by a close is taken again"
        );
    }

    #[test]
    fn counts_by_direction_and_limit() {
        let metrics = Metrics::default();
        let limits = Limits::new(ServerLimits::default(), &metrics, Direction::Outbound);
        limits.count(Limit::HeaderSize);
        limits.count(Limit::HeaderSize);
        limits.count(Limit::MaxConnections);
        let sum = |l: &str| {
            metrics.counter_sum(
                m::CONNECTIONS_LIMITED,
                &[("direction", "outbound"), ("limit", l)],
            )
        };
        assert_eq!(sum("header_size"), 2);
        assert_eq!(sum("max_connections"), 1);
        assert_eq!(sum("idle_timeout"), 0);
        let text = metrics.render();
        assert!(
            text.contains(
                "connections_limited_total{direction=\"outbound\",limit=\"header_size\"} 2"
            ),
            "{text}"
        );
    }
}
