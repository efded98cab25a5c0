//! Protocol detection metrics (Weft's own, beyond Linkerd's families):
//! `protocol_detection_total{direction,result}` counts how each accepted connection's protocol
//! was decided, and `protocol_detection_duration_seconds{direction,result}` how long the proxy
//! waited for the connection's first bytes to decide it.
//!
//! Both are fixed arrays of atomics (two directions × [`DetectResult::ALL`]): one add per
//! connection, no lock, no per-target series.

use super::{header, Direction};
use std::{
    fmt::Write as _,
    sync::atomic::{AtomicU64, Ordering::Relaxed},
    time::Duration,
};

pub const PROTOCOL_DETECTION: &str = "protocol_detection_total";
pub const PROTOCOL_DETECTION_DURATION: &str = "protocol_detection_duration_seconds";

/// Upper bounds (seconds) of the wait histogram: a client that speaks first decides within a
/// millisecond or so; a silent one waits the whole detect timeout (1 s by default).
const BUCKETS: [f64; 10] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 10.0];

/// How a connection's protocol was decided (the `result` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DetectResult {
    /// An HTTP/1 request line.
    Http1,
    /// The HTTP/2 prior-knowledge preface.
    Http2,
    /// The first bytes are neither (nor a TLS ClientHello where one was looked for): opaque.
    Opaque,
    /// A TLS ClientHello (inbound: terminated or relayed; outbound: a TLS route's SNI).
    Tls,
    /// Nothing decisive arrived within the detect timeout: opaque.
    Timeout,
    /// The peer closed before the protocol was known.
    Closed,
    /// Reading the first bytes failed.
    Error,
    /// Not read: the port is configured opaque (`*_PORTS_DISABLE_PROTOCOL_DETECTION`).
    OpaquePort,
    /// Not read: the policy (or discovery's opaque hint) says opaque.
    OpaquePolicy,
    /// Not read: the transport header or the policy (HTTP/2, gRPC) named the protocol.
    Known,
}

impl DetectResult {
    pub const ALL: [DetectResult; 10] = [
        DetectResult::Http1,
        DetectResult::Http2,
        DetectResult::Opaque,
        DetectResult::Tls,
        DetectResult::Timeout,
        DetectResult::Closed,
        DetectResult::Error,
        DetectResult::OpaquePort,
        DetectResult::OpaquePolicy,
        DetectResult::Known,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DetectResult::Http1 => "http1",
            DetectResult::Http2 => "http2",
            DetectResult::Opaque => "opaque",
            DetectResult::Tls => "tls",
            DetectResult::Timeout => "timeout",
            DetectResult::Closed => "closed",
            DetectResult::Error => "error",
            DetectResult::OpaquePort => "opaque_port",
            DetectResult::OpaquePolicy => "opaque_policy",
            DetectResult::Known => "known",
        }
    }
}

const N: usize = DetectResult::ALL.len();

/// One (direction, result) series: the count and the wait histogram.
#[derive(Default)]
struct Series {
    /// Non-cumulative bucket counts, the last one `+Inf`; their sum is the count.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_us: AtomicU64,
}

#[derive(Default)]
pub(super) struct Detections {
    series: [[Series; N]; 2],
}

impl Detections {
    pub(super) fn record(&self, direction: Direction, result: DetectResult, waited: Duration) {
        let s = &self.series[direction as usize][result as usize];
        let secs = waited.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        s.buckets[i].fetch_add(1, Relaxed);
        let us = u64::try_from(waited.as_micros()).unwrap_or(u64::MAX);
        s.sum_us.fetch_add(us, Relaxed);
    }

    #[cfg(test)]
    pub(super) fn count(&self, direction: Direction, result: DetectResult) -> u64 {
        let s = &self.series[direction as usize][result as usize];
        s.buckets.iter().map(|b| b.load(Relaxed)).sum()
    }

    /// Writes both families, with the (direction, result) pairs that happened.
    pub(super) fn render(&self, out: &mut String) {
        let mut seen = Vec::new();
        for direction in [Direction::Inbound, Direction::Outbound] {
            for result in DetectResult::ALL {
                let s = &self.series[direction as usize][result as usize];
                let buckets: Vec<u64> = s.buckets.iter().map(|b| b.load(Relaxed)).collect();
                if buckets.iter().any(|n| *n > 0) {
                    let labels = format!(
                        "direction=\"{}\",result=\"{}\"",
                        direction.label(),
                        result.as_str()
                    );
                    seen.push((labels, buckets, s.sum_us.load(Relaxed)));
                }
            }
        }
        if seen.is_empty() {
            return;
        }
        header(
            out,
            PROTOCOL_DETECTION,
            "counter",
            "Accepted connections by how their protocol was decided (detected from the first bytes, or known without reading).",
        );
        for (labels, buckets, _) in &seen {
            let n: u64 = buckets.iter().sum();
            let _ = writeln!(out, "{PROTOCOL_DETECTION}{{{labels}}} {n}");
        }
        let name = PROTOCOL_DETECTION_DURATION;
        header(
            out,
            name,
            "histogram",
            "How long protocol detection waited for a connection's first bytes, in seconds.",
        );
        for (labels, buckets, sum_us) in &seen {
            let mut cumulative = 0;
            for (i, n) in buckets.iter().enumerate() {
                cumulative += n;
                match BUCKETS.get(i) {
                    Some(le) => {
                        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
                    }
                    None => {
                        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {cumulative}");
                    }
                }
            }
            let _ = writeln!(out, "{name}_sum{{{labels}}} {}", *sum_us as f64 / 1e6);
            let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
        }
    }
}
