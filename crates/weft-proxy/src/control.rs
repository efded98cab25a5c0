//! What every per-target control-plane stream shares (Destination.Get in [`crate::discovery`],
//! OutboundPolicies.Watch in [`crate::policy::client`], InboundServerPolicies.WatchPort in
//! [`crate::policy::inbound::client`]): the gRPC endpoint settings, waiting for the next message
//! (or the reconnect backoff) while watching the idle clock that closes a stream nobody listens
//! to, and the sweep of remembered refusals.

pub mod connect;

use std::{collections::HashMap, hash::Hash, sync::Mutex, time::Duration};
use tokio::time::Instant;

pub use connect::{Connector, ControlTls};

/// A lazily connecting gRPC endpoint for a control-plane service at `addrs` (a comma-separated
/// `host:port` list, [`connect`]): TLS as `tls` says, a connect timeout per address no shorter
/// than the reconnect backoff's cap, `TCP_NODELAY` (first answers wait on no delayed ACK),
/// keep-alive so a dead control plane is noticed while a stream idles.
pub fn endpoint(
    addrs: &str,
    tls: Option<ControlTls>,
    backoff_max: Duration,
) -> Result<ControlEndpoint, tonic::transport::Error> {
    let connector = Connector::new(addrs, tls, backoff_max.max(Duration::from_secs(1)));
    let endpoint =
        tonic::transport::Endpoint::from_shared(format!("http://{}", connector.authority()))?
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_while_idle(true);
    Ok(ControlEndpoint {
        endpoint,
        connector,
    })
}

/// TLS towards a control-plane service that must prove `name`, with this proxy's `identity`
/// (the configuration never gives a name without identity); `None`: plaintext.
pub fn tls(name: Option<&str>, identity: Option<&crate::identity::Identity>) -> Option<ControlTls> {
    Some(identity?.control_tls(name?))
}

/// [`endpoint`]'s answer: settings plus the connector every connection goes through.
#[derive(Clone)]
pub struct ControlEndpoint {
    endpoint: tonic::transport::Endpoint,
    connector: Connector,
}

impl ControlEndpoint {
    /// Each call (not each stream) gives up after `timeout`.
    pub fn request_timeout(mut self, timeout: Duration) -> ControlEndpoint {
        self.endpoint = self.endpoint.timeout(timeout);
        self
    }

    /// A channel connected now (to the first address that answers).
    pub async fn connect(&self) -> Result<tonic::transport::Channel, tonic::transport::Error> {
        self.endpoint
            .connect_with_connector(self.connector.clone())
            .await
    }

    /// A channel that connects on its first request and reconnects (through the connector, so
    /// to the next address that answers) when its connection breaks.
    pub fn connect_lazy(&self) -> tonic::transport::Channel {
        self.endpoint
            .connect_with_connector_lazy(self.connector.clone())
    }
}

/// How often a stream checks whether anyone still listens: twice per idle timeout.
pub fn idle_check_interval(idle_timeout: Duration) -> Duration {
    (idle_timeout / 2).max(Duration::from_millis(10))
}

/// Measures how long a stream has had no receivers.
#[derive(Debug, Default)]
pub struct IdleClock {
    since: Option<Instant>,
}

impl IdleClock {
    /// True once there have been no receivers for a whole `timeout` (counted from the first
    /// check that saw none). Call it under the lock of the map the stream lives in, so a
    /// concurrent subscriber either counted or finds the entry gone.
    pub fn expired(&mut self, receivers: usize, timeout: Duration) -> bool {
        if receivers > 0 {
            self.since = None;
            return false;
        }
        let now = Instant::now();
        now.duration_since(*self.since.get_or_insert(now)) >= timeout
    }
}

/// Why a per-target stream stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamEnd {
    /// The control plane refused the target (a code in the caller's `refused` list): stop and
    /// remember it.
    Refused,
    /// The stream broke or ended: reconnect after a backoff, keeping the last state.
    Retry,
    /// Nobody has listened for the idle timeout: close the stream.
    Idle,
}

/// What a per-target stream's error means: `refused` codes end it for good, anything else is
/// retried (logged, the last state stays in use).
pub fn stream_error(
    status: &tonic::Status,
    refused: &[tonic::Code],
    what: &str,
    target: &(dyn std::fmt::Display + Sync),
) -> StreamEnd {
    if refused.contains(&status.code()) {
        return StreamEnd::Refused;
    }
    tracing::debug!(%target, error = %status, "{what} stream failed; keeping the last state");
    StreamEnd::Retry
}

/// The next message of `stream`, checking every `interval` whether anyone still listens
/// (`idle`); why the stream stops otherwise (errors read by [`stream_error`]).
pub async fn next_unless_idle<T>(
    stream: &mut tonic::Streaming<T>,
    interval: Duration,
    mut idle: impl FnMut() -> bool,
    refused: &[tonic::Code],
    what: &str,
    target: &(dyn std::fmt::Display + Sync),
) -> Result<T, StreamEnd> {
    loop {
        tokio::select! {
            msg = stream.message() => return match msg {
                Ok(Some(m)) => Ok(m),
                Ok(None) => {
                    tracing::debug!(%target, "{what} stream ended");
                    Err(StreamEnd::Retry)
                }
                Err(status) => Err(stream_error(&status, refused, what, target)),
            },
            _ = tokio::time::sleep(interval) => if idle() {
                return Err(StreamEnd::Idle);
            },
        }
    }
}

/// Sleeps `delay` (a reconnect backoff), checking every `interval` whether anyone still listens
/// (`idle`, given a clock started here); true if the stream went idle meanwhile.
pub async fn sleep_unless_idle(
    delay: Duration,
    interval: Duration,
    mut idle: impl FnMut(&mut IdleClock) -> bool,
) -> bool {
    let mut clock = IdleClock::default();
    let end = Instant::now() + delay;
    while Instant::now() < end {
        tokio::time::sleep_until(end.min(Instant::now() + interval)).await;
        if idle(&mut clock) {
            return true;
        }
    }
    false
}

/// Past this many remembered targets, each new refusal also forgets expired ones.
pub const SWEEP_ABOVE: usize = 1024;

/// A per-key stream's idleness check: true, and `key` removed from `streams`, once its channel
/// has had no receivers for a whole `timeout`. Done under the map's lock, so a concurrent
/// subscriber either counted as a receiver or finds no entry (and starts afresh).
pub fn remove_if_idle<K: Hash + Eq, V>(
    streams: &Mutex<HashMap<K, V>>,
    key: &K,
    clock: &mut IdleClock,
    receivers: impl FnOnce() -> usize,
    timeout: Duration,
) -> bool {
    let mut streams = streams.lock().unwrap_or_else(|p| p.into_inner());
    if clock.expired(receivers(), timeout) {
        streams.remove(key);
        return true;
    }
    false
}

/// Forgets entries `refused_at` says are older than `ttl`, once the map is large (amortised
/// over insertions, so a transparent proxy talking to many outside addresses stays bounded).
pub fn sweep_expired<K: Hash + Eq, V>(
    map: &mut HashMap<K, V>,
    now: Instant,
    ttl: Duration,
    refused_at: impl Fn(&V) -> Option<Instant>,
) {
    if map.len() > SWEEP_ABOVE {
        map.retain(|_, v| refused_at(v).is_none_or(|at| now.duration_since(at) < ttl));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_clock_expires_after_a_whole_timeout_without_receivers() {
        let timeout = Duration::from_secs(10);
        let mut clock = IdleClock::default();
        assert!(!clock.expired(0, timeout));
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert!(!clock.expired(0, timeout));
        // A receiver came and went: the clock starts over.
        assert!(!clock.expired(1, timeout));
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert!(!clock.expired(0, timeout));
        tokio::time::sleep(Duration::from_secs(9)).await;
        assert!(!clock.expired(0, timeout));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(clock.expired(0, timeout));
    }
}
