//! The HTTP API's limits against hostile or broken clients, and the counters of what each
//! refused (`control_api_refused_total{reason}` on `GET /metrics`).
//!
//! Every connection takes a slot out of `max_connections` and must finish its request head (line
//! and headers, at most `max_head` bytes) within `header_read_timeout` of being accepted or of its
//! previous response (an idle keep-alive connection is closed then). A body is at most
//! `max_body` bytes. Requests that change the store (every one with a body) run at most
//! `max_changes_in_flight` at a time, which also bounds the bodies held in memory, and a
//! registration is refused once the index holds `max_workloads` workloads.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Connections served at once; one more is answered `503` and closed.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// How long a client has to send a request head (and an idle keep-alive connection may wait).
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head (request line and headers); larger is answered `431`.
pub const DEFAULT_MAX_HEAD: usize = 64 * 1024;
/// Largest request body; larger is answered `413`.
pub const DEFAULT_MAX_BODY: usize = 1 << 20;
/// Requests with a body (changes to the store) handled at once; more are answered `429`.
pub const DEFAULT_MAX_CHANGES_IN_FLIGHT: usize = 64;
/// Workloads in the index (registered and file-defined) past which a registration of a new one
/// is refused (`403`).
pub const DEFAULT_MAX_WORKLOADS: usize = 10_000;

/// The API's limits (defaults above).
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub max_head: usize,
    pub max_body: usize,
    pub max_changes_in_flight: usize,
    pub max_workloads: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            max_head: DEFAULT_MAX_HEAD,
            max_body: DEFAULT_MAX_BODY,
            max_changes_in_flight: DEFAULT_MAX_CHANGES_IN_FLIGHT,
            max_workloads: DEFAULT_MAX_WORKLOADS,
        }
    }
}

/// Why the API refused something: the `reason` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// A connection past `max_connections` (answered `503`).
    Connections,
    /// A request head not finished within `header_read_timeout` (closed).
    HeaderTimeout,
    /// A request head over `max_head` (answered `431`).
    HeaderTooLarge,
    /// A body over `max_body` (answered `413`).
    BodyTooLarge,
    /// A change past `max_changes_in_flight` (answered `429`).
    ChangesInFlight,
    /// A registration past `max_workloads` (answered `403`).
    Workloads,
}

const REASONS: [Reason; 6] = [
    Reason::Connections,
    Reason::HeaderTimeout,
    Reason::HeaderTooLarge,
    Reason::BodyTooLarge,
    Reason::ChangesInFlight,
    Reason::Workloads,
];

impl Reason {
    pub fn label(self) -> &'static str {
        match self {
            Reason::Connections => "connections",
            Reason::HeaderTimeout => "header_timeout",
            Reason::HeaderTooLarge => "header_too_large",
            Reason::BodyTooLarge => "body_too_large",
            Reason::ChangesInFlight => "changes_in_flight",
            Reason::Workloads => "workloads",
        }
    }
}

/// What the limits refused, per reason, since start.
#[derive(Clone, Default)]
pub struct Refused(Arc<[AtomicU64; 6]>);

impl Refused {
    pub fn count(&self, reason: Reason) {
        self.0[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, reason: Reason) -> u64 {
        self.0[reason as usize].load(Ordering::Relaxed)
    }

    /// The counter family in Prometheus text format 0.0.4 (every reason, zeros included).
    pub fn render(&self) -> String {
        let mut out = String::from(
            "# HELP control_api_refused_total What the HTTP API's limits refused, by reason.\n\
             # TYPE control_api_refused_total counter\n",
        );
        for r in REASONS {
            let _ = writeln!(
                out,
                "control_api_refused_total{{reason=\"{}\"}} {}",
                r.label(),
                self.get(r)
            );
        }
        out
    }
}

/// Answers a connection past `max_connections` with `503` and closes it. Bounded: the answer
/// is written within a second, and what the client sent meanwhile is read (so closing does not
/// reset the connection before the client reads the answer) for at most a second more.
pub async fn refuse_connection(mut stream: tokio::net::TcpStream, max_connections: usize) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const BOUND: Duration = Duration::from_secs(1);
    let body = serde_json::json!({
        "error": format!("{max_connections} connections are open (the API's limit); retry")
    })
    .to_string();
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let written = tokio::time::timeout(BOUND, async {
        stream.write_all(answer.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
    if matches!(written, Ok(Ok(()))) {
        let mut sink = [0u8; 4096];
        let _ = tokio::time::timeout(BOUND, async {
            let mut left: usize = 64 * 1024;
            while left > 0 {
                match stream.read(&mut sink).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => left = left.saturating_sub(n),
                }
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_its_own_counter_and_line() {
        let refused = Refused::default();
        refused.count(Reason::BodyTooLarge);
        refused.count(Reason::BodyTooLarge);
        refused.count(Reason::Workloads);
        for (i, r) in REASONS.iter().enumerate() {
            assert_eq!(*r as usize, i, "REASONS is in declaration order");
        }
        let text = refused.render();
        assert!(text.contains("control_api_refused_total{reason=\"body_too_large\"} 2\n"));
        assert!(text.contains("control_api_refused_total{reason=\"workloads\"} 1\n"));
        assert!(text.contains("control_api_refused_total{reason=\"connections\"} 0\n"));
        assert_eq!(text.lines().count(), 2 + REASONS.len());
    }
}
