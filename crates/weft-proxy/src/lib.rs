//! Weft data plane: the sidecar proxy.
//!
//! Module map (each module owns one idea):
//! - [`config`]: every `WEFT_PROXY_*` variable, its default and its parsing (reports every bad
//!   value); a leaf: it imports nothing else of the proxy.
//! - [`discovery`]: Destination.Get / GetProfile client: per-target endpoint snapshots, reconnects.
//! - [`policy`]: OutboundPolicies.Watch client, the policy model (routes, filters, backends,
//!   timeouts, retries) and route matching; [`policy::inbound`]: InboundServerPolicies.WatchPort
//!   client, the server/route/authorization model and the authorization decision.
//! - [`control`]: what every per-target control-plane stream shares (endpoint, idle clock).
//! - [`identity`]: the in-memory key, certificate renewal through `Identity.Certify`, and the
//!   rustls configurations built from the certificate ([`identity::tls`]).
//! - [`metrics`]: Linkerd-named Prometheus metrics.
//! - [`admin`]: `/metrics`, `/ready`, `/live`, `/shutdown`.
//! - [`access_log`]: the inbound HTTP access log (`WEFT_PROXY_ACCESS_LOG`), apart from the
//!   diagnostic log.
//! - [`trace`]: W3C/B3 trace context propagation and a span per proxy hop, exported over
//!   OTLP/gRPC (`WEFT_PROXY_TRACE_*`); nothing on the request path when it is off.
//! - [`detect`]: protocol detection (HTTP/1, HTTP/2 prior knowledge, opaque).
//! - [`outbound`] / [`inbound`]: the two request paths, read top to bottom.
//! - [`mtls`]: TLS on the data path: client and server configurations per identity, ClientHello
//!   peek, transport header.
//! - [`http`]: serving, the body type, errors as responses (`l5d-proxy-error`), the client pool.
//! - [`relay`]: byte relay with half-close, and the metered stream.
//! - [`connect`]: opening a connection to an endpoint (TCP, TLS, transport header) with one
//!   timeout, and errors that say why it failed.
//! - [`backoff`]: the one exponential backoff (reconnects, failure-accrual ejection, retries).
//! - [`balance`]: P2C endpoint choice over peak-EWMA latency, failure accrual, and the
//!   per-target balancer cache.
//! - [`retry`]: route retry policies, the replayable request body, the retry budget and the
//!   retry loop.
//! - [`accept`]: what a listener hands a request path ([`accept::Accepted`]).
//! - [`runtime`]: wiring: binds listeners, starts tasks, drains on shutdown.
//! - [`sys`]: the only libc calls (`SO_ORIGINAL_DST`, `getifaddrs`, `sysconf`).
//! - [`fuzzing`]: fuzz harnesses over the parsers of peer and operator input (`fuzz/`).

pub mod accept;
pub mod access_log;
pub mod admin;
pub mod backoff;
pub mod balance;
pub mod config;
pub mod connect;
pub mod control;
pub mod detect;
pub mod discovery;
#[doc(hidden)]
pub mod fuzzing;
pub mod fxhash;
pub mod http;
pub mod identity;
pub mod inbound;
pub mod limits;
pub mod metrics;
pub mod mtls;
pub mod outbound;
pub mod policy;
pub mod relay;
pub mod retry;
pub mod runtime;
pub mod sys;
pub mod tap;
pub mod trace;
pub mod workers;

pub use config::{Config, ConfigError, Env, ProcessEnv};
pub use runtime::run;
