//! `WEFT_PROXY_{INBOUND,OUTBOUND}_*` limits on what clients of the proxy's listeners may hold:
//! open connections, HTTP/1 request head size, HTTP/2 concurrent streams, idle time. The
//! first-bytes timeout is the detect timeout (`WEFT_PROXY_*_DETECT_TIMEOUT`), not a variable of
//! its own. Linkerd names the HTTP/2 stream limit `LINKERD2_PROXY_*_SERVER_HTTP2_MAX_CONCURRENT_STREAMS`
//! (read when ours is unset); it has no connection, header size or idle variable.

use std::time::Duration;

use super::{parse::parse_duration, Env, VarError};

/// Connections one inbound listener (the inbound port and each forward port) holds open at
/// once; one more is closed as soon as it is accepted, and counted.
pub const ENV_INBOUND_MAX_CONNECTIONS: &str = "WEFT_PROXY_INBOUND_MAX_CONNECTIONS";
/// The same for one outbound listener (the outbound port and each upstream port).
pub const ENV_OUTBOUND_MAX_CONNECTIONS: &str = "WEFT_PROXY_OUTBOUND_MAX_CONNECTIONS";
/// Default of both: far above a sidecar's steady load, low enough that a flood of connections
/// stops before the process runs out of file descriptors (each proxied one holds two).
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Upper bound of the connection limits (a typo guard).
pub const MAX_MAX_CONNECTIONS: usize = 1_000_000;
/// Bytes of an HTTP/1 request head (request line and headers) a client of the inbound
/// listeners may send; a larger head is answered 431 and its connection closed, and counted.
pub const ENV_INBOUND_HTTP1_MAX_HEADER_SIZE: &str =
    "WEFT_PROXY_INBOUND_SERVER_HTTP1_MAX_HEADER_SIZE";
/// The same for the outbound listeners.
pub const ENV_OUTBOUND_HTTP1_MAX_HEADER_SIZE: &str =
    "WEFT_PROXY_OUTBOUND_SERVER_HTTP1_MAX_HEADER_SIZE";
/// Default of both: 64 KiB (nginx allows 32 KiB, Envoy 60 KiB).
pub const DEFAULT_HTTP1_MAX_HEADER_SIZE: usize = 64 * 1024;
/// Bounds of the header size; the upper one stays under hyper's read buffer (~400 KiB), which
/// would otherwise refuse the head first.
pub const MIN_HTTP1_MAX_HEADER_SIZE: usize = 1024;
pub const MAX_HTTP1_MAX_HEADER_SIZE: usize = 256 * 1024;
/// HTTP/2 streams a client of the inbound listeners may have open on one connection (the
/// `SETTINGS_MAX_CONCURRENT_STREAMS` the proxy announces); a stream beyond it is refused with
/// `RST_STREAM(REFUSED_STREAM)`.
pub const ENV_INBOUND_HTTP2_MAX_CONCURRENT_STREAMS: &str =
    "WEFT_PROXY_INBOUND_SERVER_HTTP2_MAX_CONCURRENT_STREAMS";
/// Linkerd's name for [`ENV_INBOUND_HTTP2_MAX_CONCURRENT_STREAMS`].
pub const ENV_LINKERD_INBOUND_HTTP2_MAX_CONCURRENT_STREAMS: &str =
    "LINKERD2_PROXY_INBOUND_SERVER_HTTP2_MAX_CONCURRENT_STREAMS";
/// The same for the outbound listeners.
pub const ENV_OUTBOUND_HTTP2_MAX_CONCURRENT_STREAMS: &str =
    "WEFT_PROXY_OUTBOUND_SERVER_HTTP2_MAX_CONCURRENT_STREAMS";
/// Linkerd's name for [`ENV_OUTBOUND_HTTP2_MAX_CONCURRENT_STREAMS`].
pub const ENV_LINKERD_OUTBOUND_HTTP2_MAX_CONCURRENT_STREAMS: &str =
    "LINKERD2_PROXY_OUTBOUND_SERVER_HTTP2_MAX_CONCURRENT_STREAMS";
/// Default of both: Envoy's and the HTTP/2 RFC's recommended minimum.
pub const DEFAULT_HTTP2_MAX_CONCURRENT_STREAMS: u32 = 100;
/// Upper bound of the stream limit (a typo guard).
pub const MAX_HTTP2_MAX_CONCURRENT_STREAMS: u32 = 100_000;
/// A client connection to an inbound listener with no request in flight is closed after this:
/// HTTP/1 between requests or while its request head has not fully arrived (slowloris), HTTP/2
/// when no stream started for this long (closed gracefully with GOAWAY: open streams finish).
pub const ENV_INBOUND_IDLE_TIMEOUT: &str = "WEFT_PROXY_INBOUND_SERVER_IDLE_TIMEOUT";
/// The same for the outbound listeners.
pub const ENV_OUTBOUND_IDLE_TIMEOUT: &str = "WEFT_PROXY_OUTBOUND_SERVER_IDLE_TIMEOUT";
/// Inbound default: well above every client pool's idle time (ours keep HTTP/1 connections 3 s
/// and HTTP/2 ones 60 s, Go's 90 s, nginx's upstream 60 s), so a pooled connection is not closed
/// under a request being sent, and short enough that a slowloris client holds a slot minutes,
/// not hours.
pub const DEFAULT_INBOUND_IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Outbound default: the local application's clients may keep idle connections long (some
/// client libraries never time them out), and a connection closed under a request being sent
/// fails it; one hour, Envoy's downstream default. Slowloris from the pod's own application is
/// not what this limit is for.
pub const DEFAULT_OUTBOUND_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
/// Bounds of the idle timeout: under 100 ms a request head rarely arrives in time; a day is a
/// typo guard (no idle timeout at all is what these limits exist to prevent).
pub const MIN_IDLE_TIMEOUT: Duration = Duration::from_millis(100);
pub const MAX_IDLE_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// What one direction's listeners allow their clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerLimits {
    pub max_connections: usize,
    pub http1_max_header_size: usize,
    pub http2_max_concurrent_streams: u32,
    pub idle_timeout: Duration,
}

/// The inbound defaults (the stricter ones).
impl Default for ServerLimits {
    fn default() -> ServerLimits {
        ServerLimits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            http1_max_header_size: DEFAULT_HTTP1_MAX_HEADER_SIZE,
            http2_max_concurrent_streams: DEFAULT_HTTP2_MAX_CONCURRENT_STREAMS,
            idle_timeout: DEFAULT_INBOUND_IDLE_TIMEOUT,
        }
    }
}

impl ServerLimits {
    /// The outbound defaults.
    pub fn outbound_default() -> ServerLimits {
        ServerLimits {
            idle_timeout: DEFAULT_OUTBOUND_IDLE_TIMEOUT,
            ..ServerLimits::default()
        }
    }
}

/// The variables of one direction.
struct Names {
    max_connections: &'static str,
    header_size: &'static str,
    streams: &'static str,
    linkerd_streams: &'static str,
    idle: &'static str,
    defaults: fn() -> ServerLimits,
}

const INBOUND: Names = Names {
    max_connections: ENV_INBOUND_MAX_CONNECTIONS,
    header_size: ENV_INBOUND_HTTP1_MAX_HEADER_SIZE,
    streams: ENV_INBOUND_HTTP2_MAX_CONCURRENT_STREAMS,
    linkerd_streams: ENV_LINKERD_INBOUND_HTTP2_MAX_CONCURRENT_STREAMS,
    idle: ENV_INBOUND_IDLE_TIMEOUT,
    defaults: ServerLimits::default,
};

const OUTBOUND: Names = Names {
    max_connections: ENV_OUTBOUND_MAX_CONNECTIONS,
    header_size: ENV_OUTBOUND_HTTP1_MAX_HEADER_SIZE,
    streams: ENV_OUTBOUND_HTTP2_MAX_CONCURRENT_STREAMS,
    linkerd_streams: ENV_LINKERD_OUTBOUND_HTTP2_MAX_CONCURRENT_STREAMS,
    idle: ENV_OUTBOUND_IDLE_TIMEOUT,
    defaults: ServerLimits::outbound_default,
};

impl ServerLimits {
    /// The inbound listeners' limits; every bad variable is reported.
    pub fn inbound_from_env(env: &dyn Env) -> Result<ServerLimits, Vec<VarError>> {
        Self::from_env(env, &INBOUND)
    }

    /// The outbound listeners' limits; every bad variable is reported.
    pub fn outbound_from_env(env: &dyn Env) -> Result<ServerLimits, Vec<VarError>> {
        Self::from_env(env, &OUTBOUND)
    }

    fn from_env(env: &dyn Env, names: &Names) -> Result<ServerLimits, Vec<VarError>> {
        let mut errors = Vec::new();
        let mut limits = (names.defaults)();
        let read = |name: &'static str| {
            env.get(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .map(|v| (name, v))
        };
        let mut bad = |name: &'static str, reason: String, value: String| {
            errors.push(VarError {
                name,
                reason,
                value: Some(value),
            })
        };
        if let Some((name, v)) = read(names.max_connections) {
            match v.parse::<usize>() {
                Ok(n) if (1..=MAX_MAX_CONNECTIONS).contains(&n) => limits.max_connections = n,
                _ => bad(
                    name,
                    format!("must be a whole number from 1 to {MAX_MAX_CONNECTIONS}"),
                    v,
                ),
            }
        }
        if let Some((name, v)) = read(names.header_size) {
            match v.parse::<usize>() {
                Ok(n) if (MIN_HTTP1_MAX_HEADER_SIZE..=MAX_HTTP1_MAX_HEADER_SIZE).contains(&n) => {
                    limits.http1_max_header_size = n
                }
                _ => bad(
                    name,
                    format!(
                        "must be a number of bytes from {MIN_HTTP1_MAX_HEADER_SIZE} to {MAX_HTTP1_MAX_HEADER_SIZE}"
                    ),
                    v,
                ),
            }
        }
        if let Some((name, v)) = read(names.streams).or_else(|| read(names.linkerd_streams)) {
            match v.parse::<u32>() {
                Ok(n) if (1..=MAX_HTTP2_MAX_CONCURRENT_STREAMS).contains(&n) => {
                    limits.http2_max_concurrent_streams = n
                }
                _ => bad(
                    name,
                    format!("must be a whole number from 1 to {MAX_HTTP2_MAX_CONCURRENT_STREAMS}"),
                    v,
                ),
            }
        }
        if let Some((name, v)) = read(names.idle) {
            match parse_duration(&v) {
                Ok(d) if (MIN_IDLE_TIMEOUT..=MAX_IDLE_TIMEOUT).contains(&d) => {
                    limits.idle_timeout = d
                }
                Ok(_) => bad(
                    name,
                    format!("must be from {MIN_IDLE_TIMEOUT:?} to {MAX_IDLE_TIMEOUT:?}"),
                    v,
                ),
                Err(reason) => bad(name, reason, v),
            }
        }
        if errors.is_empty() {
            Ok(limits)
        } else {
            Err(errors)
        }
    }
}
