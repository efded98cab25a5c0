//! TCP connection families, per connection label set and `peer`: `tcp_open_total`,
//! `tcp_open_connections`, `tcp_read_bytes_total`, `tcp_write_bytes_total`, and per close
//! classification (`errno`: empty for a clean close, else the name of the socket error that ended
//! the connection, as Linkerd labels them) `tcp_close_total` and `tcp_connection_duration_ms`.
//!
//! Everything here is recorded once per connection (open, close) or per socket read/write: the
//! HTTP request path records nothing in these families.

use super::{header, lock, render_labels, sample, Histogram, Idle, Labels, Peer};
use std::{
    borrow::Cow,
    collections::BTreeMap,
    io,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc, Mutex,
    },
};
use tokio::time::Instant;

/// One TCP series (labels + peer).
#[derive(Default)]
pub(super) struct TcpStats {
    opened: AtomicU64,
    closed: AtomicU64,
    read_bytes: AtomicU64,
    write_bytes: AtomicU64,
    /// Closed connections' lifetimes by errno (0: a clean close); a histogram's count is that
    /// class's `tcp_close_total`.
    closes: Mutex<BTreeMap<i32, Histogram>>,
    pub(super) idle: Idle,
}

impl TcpStats {
    /// Changes whenever anything is recorded in the series (for idle expiry).
    pub(super) fn fingerprint(&self) -> u64 {
        [
            &self.opened,
            &self.closed,
            &self.read_bytes,
            &self.write_bytes,
        ]
        .iter()
        .fold(0u64, |acc, n| acc.wrapping_add(n.load(Relaxed)))
    }
}

/// One open TCP connection's metrics: created by [`super::Metrics::tcp_open`] (counting the open),
/// counts the close when dropped, classified by the first socket error seen
/// ([`TcpConnMetrics::failed`]) and observing the connection's lifetime.
pub struct TcpConnMetrics {
    stats: Arc<TcpStats>,
    opened: Instant,
    /// The first OS error a read or write of this connection returned.
    errno: Option<i32>,
}

impl TcpConnMetrics {
    pub(super) fn open(stats: Arc<TcpStats>) -> TcpConnMetrics {
        stats.opened.fetch_add(1, Relaxed);
        TcpConnMetrics {
            stats,
            opened: Instant::now(),
            errno: None,
        }
    }

    /// Bytes read from this peer.
    pub fn read(&self, n: u64) {
        self.stats.read_bytes.fetch_add(n, Relaxed);
    }

    /// Bytes written to this peer.
    pub fn write(&self, n: u64) {
        self.stats.write_bytes.fetch_add(n, Relaxed);
    }

    /// The connection really started at `at` (it was accepted before its labels were known).
    pub fn opened_at(&mut self, at: Instant) {
        self.opened = at;
    }

    /// A read or write failed: the first OS error classifies the close. (Errors without an OS
    /// error code, such as a TLS alert, leave the close clean from the socket's point of view.)
    pub fn failed(&mut self, e: &io::Error) {
        if let Some(errno) = e.raw_os_error() {
            self.errno(errno);
        }
    }

    /// [`TcpConnMetrics::failed`] with the OS error code.
    pub fn errno(&mut self, errno: i32) {
        self.errno.get_or_insert(errno);
    }
}

impl Drop for TcpConnMetrics {
    fn drop(&mut self) {
        let lifetime = self.opened.elapsed();
        lock(&self.stats.closes)
            .entry(self.errno.unwrap_or(0))
            .or_default()
            .observe(lifetime);
        // After the histogram: a scrape never sees more closes than close observations.
        self.stats.closed.fetch_add(1, Relaxed);
    }
}

/// The `errno` label: empty for a clean close, the symbolic name for the errors a proxied
/// connection meets, else the number.
pub fn errno_label(errno: i32) -> Cow<'static, str> {
    let name = match errno {
        0 => "",
        libc::ECONNRESET => "ECONNRESET",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::EPIPE => "EPIPE",
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::ECONNABORTED => "ECONNABORTED",
        libc::EHOSTUNREACH => "EHOSTUNREACH",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::ENETDOWN => "ENETDOWN",
        libc::ENETRESET => "ENETRESET",
        libc::EHOSTDOWN => "EHOSTDOWN",
        libc::ENOTCONN => "ENOTCONN",
        libc::ESHUTDOWN => "ESHUTDOWN",
        libc::EADDRNOTAVAIL => "EADDRNOTAVAIL",
        libc::EPROTO => "EPROTO",
        libc::EIO => "EIO",
        libc::EINVAL => "EINVAL",
        libc::ENOBUFS => "ENOBUFS",
        libc::ENOMEM => "ENOMEM",
        libc::EMFILE => "EMFILE",
        libc::ENFILE => "ENFILE",
        n => return Cow::Owned(n.to_string()),
    };
    Cow::Borrowed(name)
}

/// Writes the TCP families for `series`.
pub(super) fn render(out: &mut String, series: &[((Labels, Peer), Arc<TcpStats>)]) {
    let labels: Vec<String> = series
        .iter()
        .map(|((labels, peer), _)| {
            let peer = match peer {
                Peer::Src => "src",
                Peer::Dst => "dst",
            };
            render_labels(labels, &[("peer", peer)])
        })
        .collect();
    type Value = fn(&TcpStats) -> u64;
    let simple: [(&str, &str, &str, Value); 4] = [
        (
            "tcp_open_total",
            "counter",
            "Total TCP connections opened.",
            |t| t.opened.load(Relaxed),
        ),
        (
            "tcp_open_connections",
            "gauge",
            "TCP connections currently open.",
            |t| {
                let opened = t.opened.load(Relaxed);
                opened.saturating_sub(t.closed.load(Relaxed))
            },
        ),
        (
            "tcp_read_bytes_total",
            "counter",
            "Bytes read from peers.",
            |t| t.read_bytes.load(Relaxed),
        ),
        (
            "tcp_write_bytes_total",
            "counter",
            "Bytes written to peers.",
            |t| t.write_bytes.load(Relaxed),
        ),
    ];
    for (name, kind, help, value) in simple {
        header(out, name, kind, help);
        for ((_, t), l) in series.iter().zip(&labels) {
            sample(out, name, l, value(t));
        }
    }

    // Copied out under the lock, rendered after it.
    let closes: Vec<Vec<(i32, Histogram)>> = series
        .iter()
        .map(|(_, t)| {
            lock(&t.closes)
                .iter()
                .map(|(e, h)| (*e, h.clone()))
                .collect()
        })
        .collect();
    let close_labels = |l: &str, errno: i32| format!("{l},errno=\"{}\"", errno_label(errno));
    header(
        out,
        "tcp_close_total",
        "counter",
        "Total TCP connections closed, by errno (empty: closed cleanly).",
    );
    for (l, closes) in labels.iter().zip(&closes) {
        for (errno, h) in closes {
            sample(out, "tcp_close_total", &close_labels(l, *errno), h.count);
        }
    }
    header(
        out,
        "tcp_connection_duration_ms",
        "histogram",
        "Lifetimes of closed TCP connections, in milliseconds, by errno.",
    );
    for (l, closes) in labels.iter().zip(&closes) {
        for (errno, h) in closes {
            h.render(out, "tcp_connection_duration_ms", &close_labels(l, *errno));
        }
    }
}
