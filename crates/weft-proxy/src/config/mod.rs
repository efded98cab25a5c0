//! `WEFT_PROXY_*` variables: one named constant per variable (with its default beside it), typed
//! parsing, and a [`ConfigError`] that lists every bad value at once.
//!
//! Values are read through the small [`Env`] trait so tests inject maps instead of touching the
//! process environment.

use std::{
    collections::HashMap, fmt, hash::BuildHasher, net::SocketAddr, ops::RangeInclusive,
    time::Duration,
};

mod identity;
mod inbound;
mod limits;
mod parse;
mod retry;
mod trace;

pub use identity::IdentityConfig;
pub use inbound::{parse_networks, Cidr, DefaultPolicy};
pub use limits::*;
use parse::{
    check_control_tls, is_dns_name, parse_addr_list, parse_bool, parse_forward_ports,
    parse_identity_list, parse_identity_name, parse_socket_addr, parse_suffixes, parse_upstreams,
    parse_workload,
};
pub use parse::{parse_duration, parse_port_set};
pub use retry::*;
pub use trace::*;

/// Control plane gRPC `host:port` serving Destination; a comma-separated list of them (control
/// plane replicas: tried in turn, the one that answered last first; a host resolving to several
/// addresses counts as all of them). Required.
pub const ENV_DESTINATION_SVC_ADDR: &str = "WEFT_PROXY_DESTINATION_SVC_ADDR";
/// The control plane's identity (Linkerd's `LINKERD2_PROXY_DESTINATION_SVC_NAME`): set, every
/// connection to [`ENV_DESTINATION_SVC_ADDR`] is TLS and the server must prove this identity
/// (chain to the trust anchors, exactly this DNS SAN); mTLS once this proxy has its certificate.
/// Unset: plaintext, allowed only when every address is a loopback one (development).
pub const ENV_DESTINATION_SVC_NAME: &str = "WEFT_PROXY_DESTINATION_SVC_NAME";
/// Control plane gRPC `host:port` list serving the policy APIs. Default: the destination address.
/// The outbound (`OutboundPolicies.Watch`) and inbound (`InboundServerPolicies.WatchPort`)
/// policy clients connect to it.
pub const ENV_POLICY_SVC_ADDR: &str = "WEFT_PROXY_POLICY_SVC_ADDR";
/// The identity of [`ENV_POLICY_SVC_ADDR`]'s server. Default: [`ENV_DESTINATION_SVC_NAME`] when
/// the policy address is the destination's.
pub const ENV_POLICY_SVC_NAME: &str = "WEFT_PROXY_POLICY_SVC_NAME";
/// `NS:NAME` of this workload. Required; NS expands short names.
pub const ENV_POLICY_WORKLOAD: &str = "WEFT_PROXY_POLICY_WORKLOAD";
/// Context token sent with `Destination.Get`. Default: `{"ns":"NS"}`.
pub const ENV_DESTINATION_CONTEXT: &str = "WEFT_PROXY_DESTINATION_CONTEXT";
/// Inbound listener (transparent mode; target port = SO_ORIGINAL_DST port).
pub const ENV_INBOUND_LISTEN_ADDR: &str = "WEFT_PROXY_INBOUND_LISTEN_ADDR";
pub const DEFAULT_INBOUND_LISTEN_ADDR: &str = "0.0.0.0:4143";
/// Outbound listener (transparent mode and `HTTP_PROXY`).
pub const ENV_OUTBOUND_LISTEN_ADDR: &str = "WEFT_PROXY_OUTBOUND_LISTEN_ADDR";
pub const DEFAULT_OUTBOUND_LISTEN_ADDR: &str = "127.0.0.1:4140";
/// Admin server (`/metrics`, `/ready`, `/live`, `/shutdown`).
pub const ENV_ADMIN_LISTEN_ADDR: &str = "WEFT_PROXY_ADMIN_LISTEN_ADDR";
pub const DEFAULT_ADMIN_LISTEN_ADDR: &str = "127.0.0.1:4191";
/// Tap server (`io.linkerd.proxy.tap.Tap/Observe` over mTLS; Linkerd's
/// `LINKERD2_PROXY_TAP_LISTEN_ADDR`). Runs only with identity and [`ENV_TAP_SVC_NAME`].
pub const ENV_TAP_LISTEN_ADDR: &str = "WEFT_PROXY_TAP_LISTEN_ADDR";
pub const DEFAULT_TAP_LISTEN_ADDR: &str = "127.0.0.1:4190";
/// The one client identity (DNS SAN of its certificate) allowed to tap this proxy (Linkerd's
/// `LINKERD2_PROXY_TAP_SVC_NAME`). Unset: no tap server.
pub const ENV_TAP_SVC_NAME: &str = "WEFT_PROXY_TAP_SVC_NAME";
/// Explicit mode: `APP_PORT[=PROXY_PORT]` list; an extra inbound listener per entry. Default empty.
pub const ENV_INBOUND_FORWARD_PORTS: &str = "WEFT_PROXY_INBOUND_FORWARD_PORTS";
/// Explicit mode: `AUTHORITY[=LOCAL_PORT]` list; a local listener bound to a logical service.
pub const ENV_OUTBOUND_UPSTREAMS: &str = "WEFT_PROXY_OUTBOUND_UPSTREAMS";
/// App ports treated as opaque TCP inbound. Default empty.
pub const ENV_INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION: &str =
    "WEFT_PROXY_INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION";
/// App ports that accept only mutually authenticated (mTLS with a client certificate) clients:
/// plaintext and TLS without a client certificate are refused, whatever the control plane's
/// policy says; their default policy is the authenticated form of
/// [`ENV_INBOUND_DEFAULT_POLICY`]. Default empty. Needs identity.
pub const ENV_INBOUND_PORTS_REQUIRE_IDENTITY: &str = "WEFT_PROXY_INBOUND_PORTS_REQUIRE_IDENTITY";
/// Gateway mode (a multicluster gateway, Linkerd's `LINKERD2_PROXY_INBOUND_GATEWAY_SUFFIXES`,
/// also read when this one is unset): comma-separated DNS suffixes (`svc.cluster.local.`). A
/// connection on the inbound listener that terminated mTLS with a client identity and whose
/// transport header names a host under one of them is forwarded through this proxy's outbound
/// path to that name; any other named connection is refused. Default empty: no gateway.
pub const ENV_INBOUND_GATEWAY_SUFFIXES: &str = "WEFT_PROXY_INBOUND_GATEWAY_SUFFIXES";
/// Linkerd's name for [`ENV_INBOUND_GATEWAY_SUFFIXES`].
pub const ENV_LINKERD_INBOUND_GATEWAY_SUFFIXES: &str = "LINKERD2_PROXY_INBOUND_GATEWAY_SUFFIXES";
/// Comma-separated identities of gateways whose `l5d-client-id` is believed: a request whose
/// TLS peer is one of them is taken to come from the identity in its `l5d-client-id` (for
/// authorization, metrics, tap and the header the application sees). Default empty: the header
/// is always replaced by the peer's own identity.
pub const ENV_INBOUND_TRUSTED_GATEWAY_IDENTITIES: &str =
    "WEFT_PROXY_INBOUND_TRUSTED_GATEWAY_IDENTITIES";
/// The inbound policy of a port while the control plane has never answered for it (no policy
/// address, unreachable, refused, or no first answer within
/// [`ENV_INBOUND_FAILFAST_TIMEOUT`]); Linkerd's `LINKERD2_PROXY_INBOUND_DEFAULT_POLICY`:
/// `all-unauthenticated`, `all-authenticated`, `cluster-unauthenticated`,
/// `cluster-authenticated`, `deny` or `audit`.
pub const ENV_INBOUND_DEFAULT_POLICY: &str = "WEFT_PROXY_INBOUND_DEFAULT_POLICY";
pub const DEFAULT_INBOUND_DEFAULT_POLICY: DefaultPolicy = DefaultPolicy::AllUnauthenticated;
/// Comma-separated CIDRs the `cluster-*` default policies admit (the control plane's
/// `--cluster-networks`): Linkerd's list plus 198.18.0.0/15, where `weft run` puts its pods.
pub const ENV_POLICY_CLUSTER_NETWORKS: &str = "WEFT_PROXY_POLICY_CLUSTER_NETWORKS";
pub const DEFAULT_POLICY_CLUSTER_NETWORKS: &str =
    "10.0.0.0/8,100.64.0.0/10,172.16.0.0/12,192.168.0.0/16,198.18.0.0/15,fd00::/8";
/// How long a connection to an application port waits for the control plane's first inbound
/// policy for that port before the default policy applies (Linkerd's inbound 1 s).
pub const ENV_INBOUND_FAILFAST_TIMEOUT: &str = "WEFT_PROXY_INBOUND_FAILFAST_TIMEOUT";
pub const DEFAULT_INBOUND_FAILFAST_TIMEOUT: Duration = Duration::from_secs(1);
/// Destination ports treated as opaque TCP outbound (server-speaks-first protocols).
pub const ENV_OUTBOUND_PORTS_DISABLE_PROTOCOL_DETECTION: &str =
    "WEFT_PROXY_OUTBOUND_PORTS_DISABLE_PROTOCOL_DETECTION";
pub const DEFAULT_OUTBOUND_PORTS_DISABLE_PROTOCOL_DETECTION: &str =
    "25,587,3306,4444,5432,6379,9300,11211";
/// How long inbound protocol detection waits before treating the connection as opaque.
pub const ENV_INBOUND_DETECT_TIMEOUT: &str = "WEFT_PROXY_INBOUND_DETECT_TIMEOUT";
pub const DEFAULT_INBOUND_DETECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long outbound protocol detection waits before treating the connection as opaque.
pub const ENV_OUTBOUND_DETECT_TIMEOUT: &str = "WEFT_PROXY_OUTBOUND_DETECT_TIMEOUT";
pub const DEFAULT_OUTBOUND_DETECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Connect timeout to the local application.
pub const ENV_INBOUND_CONNECT_TIMEOUT: &str = "WEFT_PROXY_INBOUND_CONNECT_TIMEOUT";
pub const DEFAULT_INBOUND_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Connect timeout to a remote endpoint.
pub const ENV_OUTBOUND_CONNECT_TIMEOUT: &str = "WEFT_PROXY_OUTBOUND_CONNECT_TIMEOUT";
pub const DEFAULT_OUTBOUND_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// First and largest time an endpoint no connection could be made to stays out of its balancer's
/// rotation (Linkerd's outbound connect backoff: 100 ms doubling to 500 ms, jitter 0.1).
pub const ENV_OUTBOUND_CONNECT_BACKOFF_MIN: &str = "WEFT_PROXY_OUTBOUND_CONNECT_BACKOFF_MIN";
pub const ENV_OUTBOUND_CONNECT_BACKOFF_MAX: &str = "WEFT_PROXY_OUTBOUND_CONNECT_BACKOFF_MAX";
/// A target with no endpoints fails requests (503 + `l5d-proxy-error`) after this.
pub const ENV_OUTBOUND_FAILFAST_TIMEOUT: &str = "WEFT_PROXY_OUTBOUND_FAILFAST_TIMEOUT";
pub const DEFAULT_OUTBOUND_FAILFAST_TIMEOUT: Duration = Duration::from_secs(3);
/// Comma-separated name suffixes looked up in discovery; `.` = all names, empty = none.
pub const ENV_DESTINATION_PROFILE_SUFFIXES: &str = "WEFT_PROXY_DESTINATION_PROFILE_SUFFIXES";
pub const DEFAULT_DESTINATION_PROFILE_SUFFIXES: &str = "svc.cluster.local.";
/// Cluster DNS domain used to expand short names (`web` → `web.NS.svc.CLUSTER_DOMAIN`).
pub const ENV_CLUSTER_DOMAIN: &str = "WEFT_PROXY_CLUSTER_DOMAIN";
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";
/// How long a drain waits for open connections before exiting anyway.
pub const ENV_SHUTDOWN_GRACE_PERIOD: &str = "WEFT_PROXY_SHUTDOWN_GRACE_PERIOD";
pub const DEFAULT_SHUTDOWN_GRACE_PERIOD: Duration = Duration::from_secs(30);
/// Whether the admin server serves `POST /shutdown`.
pub const ENV_SHUTDOWN_ENDPOINT_ENABLED: &str = "WEFT_PROXY_SHUTDOWN_ENDPOINT_ENABLED";
pub const DEFAULT_SHUTDOWN_ENDPOINT_ENABLED: bool = true;
/// Lower bound of the reconnect backoff to the control plane.
pub const ENV_CONTROL_BACKOFF_MIN: &str = "WEFT_PROXY_CONTROL_BACKOFF_MIN";
pub const DEFAULT_CONTROL_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Upper bound of the reconnect backoff to the control plane.
pub const ENV_CONTROL_BACKOFF_MAX: &str = "WEFT_PROXY_CONTROL_BACKOFF_MAX";
pub const DEFAULT_CONTROL_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Discovery streams with no receivers are closed after this long.
pub const ENV_DISCOVERY_IDLE_TIMEOUT: &str = "WEFT_PROXY_DISCOVERY_IDLE_TIMEOUT";
pub const DEFAULT_DISCOVERY_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Control plane gRPC `host:port` list serving `Identity.Certify`. Default: the destination
/// address.
pub const ENV_IDENTITY_SVC_ADDR: &str = "WEFT_PROXY_IDENTITY_SVC_ADDR";
/// The identity of [`ENV_IDENTITY_SVC_ADDR`]'s server. Default: [`ENV_DESTINATION_SVC_NAME`] when
/// the identity address is the destination's.
pub const ENV_IDENTITY_SVC_NAME: &str = "WEFT_PROXY_IDENTITY_SVC_NAME";
/// PEM trust anchors (one or more CERTIFICATE blocks) peers' certificates must chain to.
pub const ENV_IDENTITY_TRUST_ANCHORS: &str = "WEFT_PROXY_IDENTITY_TRUST_ANCHORS";
/// File holding the PEM trust anchors (instead of `WEFT_PROXY_IDENTITY_TRUST_ANCHORS`).
pub const ENV_IDENTITY_TRUST_ANCHORS_FILE: &str = "WEFT_PROXY_IDENTITY_TRUST_ANCHORS_FILE";
/// File holding the token sent with every `Identity.Certify` (re-read before each attempt).
/// Setting any identity variable turns identity on; without them the proxy runs without
/// identity (the transitional mode: no certificate, metrics say `tls="no_identity"`).
pub const ENV_IDENTITY_TOKEN_FILE: &str = "WEFT_PROXY_IDENTITY_TOKEN_FILE";
/// This proxy's DNS-like identity: the certificate's DNS SAN and the SNI it serves.
pub const ENV_IDENTITY_LOCAL_NAME: &str = "WEFT_PROXY_IDENTITY_LOCAL_NAME";
/// Shortest wait before renewing a certificate (renewal is at ~70% of its lifetime).
pub const ENV_IDENTITY_MIN_REFRESH: &str = "WEFT_PROXY_IDENTITY_MIN_REFRESH";
pub const DEFAULT_IDENTITY_MIN_REFRESH: Duration = Duration::from_secs(10);
/// Longest wait before renewing a certificate.
pub const ENV_IDENTITY_MAX_REFRESH: &str = "WEFT_PROXY_IDENTITY_MAX_REFRESH";
pub const DEFAULT_IDENTITY_MAX_REFRESH: Duration = Duration::from_secs(24 * 3600);
/// An idle pooled HTTP/1 connection to a remote endpoint is closed after this (Linkerd's
/// `LINKERD2_PROXY_OUTBOUND_HTTP1_CONNECTION_POOL_IDLE_TIMEOUT`).
pub const ENV_OUTBOUND_HTTP1_POOL_IDLE_TIMEOUT: &str =
    "WEFT_PROXY_OUTBOUND_HTTP1_CONNECTION_POOL_IDLE_TIMEOUT";
/// The same for connections to the local application.
pub const ENV_INBOUND_HTTP1_POOL_IDLE_TIMEOUT: &str =
    "WEFT_PROXY_INBOUND_HTTP1_CONNECTION_POOL_IDLE_TIMEOUT";
/// Default of both HTTP/1 pool idle timeouts (Linkerd's default too).
pub const DEFAULT_HTTP1_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(3);
/// Inbound HTTP access log on stderr, one line per request, apart from the diagnostic log
/// (Linkerd's `LINKERD2_PROXY_ACCESS_LOG`): unset or empty = off, `apache` or `json`.
pub const ENV_ACCESS_LOG: &str = "WEFT_PROXY_ACCESS_LOG";
/// A metric series that no connection or request holds any more and that has not changed for
/// this long is dropped from `/metrics` (Linkerd's `LINKERD2_PROXY_METRICS_RETAIN_IDLE`).
pub const ENV_METRICS_RETAIN_IDLE: &str = "WEFT_PROXY_METRICS_RETAIN_IDLE";
pub const DEFAULT_METRICS_RETAIN_IDLE: Duration = Duration::from_secs(600);

/// The format of [`ENV_ACCESS_LOG`] lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessLogFormat {
    /// Common Log Format plus extra fields.
    Apache,
    /// One JSON object per line.
    Json,
}

impl std::str::FromStr for AccessLogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "apache" => Ok(AccessLogFormat::Apache),
            "json" => Ok(AccessLogFormat::Json),
            _ => Err("expected apache or json (unset or empty: off)".into()),
        }
    }
}
/// Idle HTTP/1 connections kept per remote endpoint (Linkerd's
/// `LINKERD2_PROXY_OUTBOUND_MAX_IDLE_CONNS_PER_ENDPOINT`); 0 = none is reused.
pub const ENV_OUTBOUND_MAX_IDLE_CONNS_PER_ENDPOINT: &str =
    "WEFT_PROXY_OUTBOUND_MAX_IDLE_CONNS_PER_ENDPOINT";
/// The same for connections to the local application.
pub const ENV_INBOUND_MAX_IDLE_CONNS_PER_ENDPOINT: &str =
    "WEFT_PROXY_INBOUND_MAX_IDLE_CONNS_PER_ENDPOINT";
/// Default of both idle-connection counts: Linkerd's 10,000. Far above any steady concurrency,
/// so a connection is never closed only to be reopened by the next request; idle ones still close
/// after the idle timeout.
pub const DEFAULT_MAX_IDLE_CONNS_PER_ENDPOINT: usize = 10_000;
/// An HTTP/2 client connection that carried no new request for this long leaves its pool (not a
/// variable; kept beside the pool settings it defaults).
pub const H2_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Upper bound for the idle-connection counts (a typo guard; busy connections are never capped).
pub const MAX_IDLE_CONNS_LIMIT: usize = 100_000;
/// Worker threads of the proxy's runtime (like Linkerd's `LINKERD2_PROXY_CORES`). Unset: the CPUs
/// this process may run on (affinity and cgroup quota). 1 runs everything on one thread with no
/// work-stealing scheduler, the cheapest setting for a sidecar of a small pod.
pub const ENV_CORES: &str = "WEFT_PROXY_CORES";
/// Upper bound for [`ENV_CORES`]: a sidecar asking for more is almost surely a typo.
pub const MAX_CORES: usize = 256;
/// The scheduler slice the proxy's threads ask the kernel for (Linux 6.12+, `sched_setattr`'s
/// `sched_runtime` of a SCHED_OTHER thread; see [`crate::sys::set_sched_slice`]). `0`: the
/// kernel's default.
pub const ENV_SCHED_SLICE: &str = "WEFT_PROXY_SCHED_SLICE";
/// [`ENV_SCHED_SLICE`]'s default: the kernel's floor.
pub const DEFAULT_SCHED_SLICE: Option<Duration> = Some(Duration::from_micros(100));
/// The range the kernel accepts for a slice (it would clamp anything outside).
pub const SCHED_SLICE_RANGE: std::ops::RangeInclusive<Duration> =
    Duration::from_micros(100)..=Duration::from_millis(100);
/// `tracing` filter for the binary's stderr logs (read by the binary, kept here for the docs).
pub const ENV_LOG: &str = "WEFT_PROXY_LOG";
pub const DEFAULT_LOG: &str = "warn,weft_proxy=info";

/// Where configuration values come from.
pub trait Env {
    fn get(&self, name: &str) -> Option<String>;
}

/// The process environment.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

/// Test and embedding helper: any `HashMap<&str, &str>`.
impl<S: BuildHasher> Env for HashMap<&str, &str, S> {
    fn get(&self, name: &str) -> Option<String> {
        HashMap::get(self, name).map(|v| v.to_string())
    }
}

impl<S: BuildHasher> Env for HashMap<String, String, S> {
    fn get(&self, name: &str) -> Option<String> {
        HashMap::get(self, name).cloned()
    }
}

/// This workload's identity in the control plane.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    pub namespace: String,
    pub name: String,
}

/// A set of ports given as a list of single ports and ranges.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortSet(pub Vec<RangeInclusive<u16>>);

impl PortSet {
    pub fn contains(&self, port: &u16) -> bool {
        self.0.iter().any(|r| r.contains(port))
    }
}

/// Explicit mode inbound: listen on `proxy_port` (0 = ephemeral), forward to `127.0.0.1:app_port`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForwardPort {
    pub app_port: u16,
    pub proxy_port: u16,
}

/// Explicit mode outbound: a local port whose connections target one logical service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upstream {
    /// As configured (`catalog:9090`, `catalog.default.svc.cluster.local:9090`, `web`).
    pub authority: String,
    pub host: String,
    /// Port 80 when the authority has none.
    pub port: u16,
    /// 0 = ephemeral.
    pub local_port: u16,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// [`ENV_DESTINATION_SVC_ADDR`] as given (a validated list).
    pub destination_addr: String,
    /// [`ENV_DESTINATION_SVC_NAME`]; `None` = plaintext (loopback only).
    pub destination_name: Option<String>,
    pub policy_addr: String,
    /// [`ENV_POLICY_SVC_NAME`]; `None` = plaintext (loopback only).
    pub policy_name: Option<String>,
    pub workload: Workload,
    pub destination_context: String,
    pub inbound_listen_addr: SocketAddr,
    pub outbound_listen_addr: SocketAddr,
    pub admin_listen_addr: SocketAddr,
    /// [`ENV_TAP_LISTEN_ADDR`].
    pub tap_listen_addr: SocketAddr,
    /// [`ENV_TAP_SVC_NAME`]; `None` = no tap server.
    pub tap_svc_name: Option<String>,
    pub inbound_forward_ports: Vec<ForwardPort>,
    pub outbound_upstreams: Vec<Upstream>,
    pub inbound_opaque_ports: PortSet,
    /// `WEFT_PROXY_INBOUND_PORTS_REQUIRE_IDENTITY`.
    pub inbound_require_identity_ports: PortSet,
    /// [`ENV_INBOUND_DEFAULT_POLICY`].
    pub inbound_default_policy: DefaultPolicy,
    /// [`ENV_INBOUND_GATEWAY_SUFFIXES`], normalised as [`Config::destination_suffixes`]; empty:
    /// not a gateway.
    pub inbound_gateway_suffixes: Vec<String>,
    /// [`ENV_INBOUND_TRUSTED_GATEWAY_IDENTITIES`], lower-cased, without trailing dots.
    pub inbound_trusted_gateway_identities: Vec<String>,
    /// [`ENV_POLICY_CLUSTER_NETWORKS`].
    pub cluster_networks: Vec<Cidr>,
    /// [`ENV_INBOUND_FAILFAST_TIMEOUT`].
    pub inbound_failfast_timeout: Duration,
    pub outbound_opaque_ports: PortSet,
    pub inbound_detect_timeout: Duration,
    pub outbound_detect_timeout: Duration,
    pub inbound_connect_timeout: Duration,
    pub outbound_connect_timeout: Duration,
    /// [`ENV_OUTBOUND_CONNECT_BACKOFF_MIN`] and `_MAX` (the jitter is Linkerd's 0.1).
    pub outbound_connect_backoff: (Duration, Duration),
    pub outbound_failfast_timeout: Duration,
    /// Normalised to end with a dot; `["."]` means every name; empty means none.
    pub destination_suffixes: Vec<String>,
    pub cluster_domain: String,
    pub shutdown_grace_period: Duration,
    pub shutdown_endpoint_enabled: bool,
    pub control_backoff_min: Duration,
    pub control_backoff_max: Duration,
    pub discovery_idle_timeout: Duration,
    /// `None`: no identity variable is set (transitional mode, no certificate).
    pub identity: Option<IdentityConfig>,
    /// [`ENV_CORES`]; `None` = size from the CPUs available (see [`Config::worker_threads`]).
    pub cores: Option<usize>,
    /// [`ENV_SCHED_SLICE`]; `None` = the kernel's default slice.
    pub sched_slice: Option<Duration>,
    /// Client connection pools: towards remote endpoints and towards the application.
    pub outbound_pool: PoolLimits,
    pub inbound_pool: PoolLimits,
    /// `WEFT_PROXY_OUTBOUND_RETRY_BUDGET_*`: each retrying route's budget.
    pub outbound_retry_budget: RetryBudget,
    /// [`ENV_ACCESS_LOG`]; `None` = off.
    pub access_log: Option<AccessLogFormat>,
    /// [`ENV_METRICS_RETAIN_IDLE`].
    pub metrics_retain_idle: Duration,
    /// `WEFT_PROXY_TRACE_*`; `None` = tracing off (no collector).
    pub trace: Option<TraceConfig>,
    /// `WEFT_PROXY_INBOUND_{MAX_CONNECTIONS,SERVER_*}`: what clients of the inbound listeners
    /// may hold.
    pub inbound_limits: ServerLimits,
    /// `WEFT_PROXY_OUTBOUND_{MAX_CONNECTIONS,SERVER_*}`.
    pub outbound_limits: ServerLimits,
}

/// How long and how many idle connections a client pool keeps (per direction, from
/// [`ENV_OUTBOUND_HTTP1_POOL_IDLE_TIMEOUT`], [`ENV_INBOUND_HTTP1_POOL_IDLE_TIMEOUT`],
/// [`ENV_OUTBOUND_MAX_IDLE_CONNS_PER_ENDPOINT`] and [`ENV_INBOUND_MAX_IDLE_CONNS_PER_ENDPOINT`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolLimits {
    /// An idle pooled HTTP/1 connection is closed after this.
    pub h1_idle_timeout: Duration,
    /// At most this many idle HTTP/1 connections are kept per endpoint; more are closed when
    /// their response ends (busy connections are not limited: each is one request in flight).
    /// 0 = no HTTP/1 connection is reused.
    pub max_idle_h1_per_endpoint: usize,
    /// An HTTP/2 connection that carried no new request for this long leaves the pool.
    pub h2_idle_timeout: Duration,
}

impl Default for PoolLimits {
    fn default() -> PoolLimits {
        PoolLimits {
            h1_idle_timeout: DEFAULT_HTTP1_POOL_IDLE_TIMEOUT,
            max_idle_h1_per_endpoint: DEFAULT_MAX_IDLE_CONNS_PER_ENDPOINT,
            h2_idle_timeout: H2_POOL_IDLE_TIMEOUT,
        }
    }
}

/// One bad variable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VarError {
    pub name: &'static str,
    pub reason: String,
    /// The offending value; `None` when the variable is missing.
    pub value: Option<String>,
}

/// Every bad variable found, one per line when displayed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub errors: Vec<VarError>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            match &e.value {
                Some(v) => write!(f, "{}: {} (got {:?})", e.name, e.reason, v)?,
                None => write!(f, "{}: {}", e.name, e.reason)?,
            }
        }
        Ok(())
    }
}

/// Reads variables and remembers every failure so all of them can be reported together.
struct Reader<'a> {
    env: &'a dyn Env,
    errors: Vec<VarError>,
}

impl Reader<'_> {
    /// A backoff's bounds, `(variable, default)` each: durations, the maximum at least the
    /// minimum (else the maximum's variable is reported).
    fn backoff(
        &mut self,
        (min_name, min_default): (&'static str, Duration),
        (max_name, max_default): (&'static str, Duration),
    ) -> (Duration, Duration) {
        let min = self.parse(min_name, min_default, parse_duration);
        let max = self.parse(max_name, max_default, parse_duration);
        if min > max {
            let raw = self.scalar(max_name);
            self.fail(
                max_name,
                format!("must be at least {min_name} ({min:?})"),
                raw,
            );
        }
        (min, max)
    }

    /// The trimmed value; an empty value counts as unset for scalar variables.
    fn scalar(&self, name: &str) -> Option<String> {
        self.env
            .get(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }

    fn parse<T>(
        &mut self,
        name: &'static str,
        default: T,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> T {
        let Some(raw) = self.scalar(name) else {
            return default;
        };
        match parse(&raw) {
            Ok(v) => v,
            Err(reason) => {
                self.fail(name, reason, Some(raw));
                default
            }
        }
    }

    /// Lists: unset → the default text; set (even empty) → the given value.
    fn list<T>(
        &mut self,
        name: &'static str,
        default: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let raw = self.env.get(name);
        let text = raw.as_deref().unwrap_or(default);
        match parse(text) {
            Ok(v) => Some(v),
            Err(reason) => {
                self.fail(name, reason, raw);
                None
            }
        }
    }

    fn fail(&mut self, name: &'static str, reason: String, value: Option<String>) {
        self.errors.push(VarError {
            name,
            reason,
            value,
        });
    }
}

impl Config {
    pub fn from_env(env: &dyn Env) -> Result<Config, ConfigError> {
        let mut r = Reader {
            env,
            errors: Vec::new(),
        };

        let destination_addr = match r.scalar(ENV_DESTINATION_SVC_ADDR) {
            None => {
                r.fail(ENV_DESTINATION_SVC_ADDR, "required".into(), None);
                String::new()
            }
            Some(v) => r.parse(ENV_DESTINATION_SVC_ADDR, String::new(), |_| {
                parse_addr_list(&v).map(|_| v.clone())
            }),
        };
        let destination_name = r.parse(ENV_DESTINATION_SVC_NAME, None, parse_identity_name);
        let policy_addr = r.parse(ENV_POLICY_SVC_ADDR, destination_addr.clone(), |v| {
            parse_addr_list(v).map(|_| v.to_string())
        });
        let policy_name = match r.scalar(ENV_POLICY_SVC_ADDR) {
            Some(_) => r.parse(ENV_POLICY_SVC_NAME, None, parse_identity_name),
            None => r.parse(
                ENV_POLICY_SVC_NAME,
                destination_name.clone(),
                parse_identity_name,
            ),
        };
        let workload = match r.scalar(ENV_POLICY_WORKLOAD) {
            None => {
                r.fail(ENV_POLICY_WORKLOAD, "required (NS:NAME)".into(), None);
                None
            }
            Some(v) => r.parse(ENV_POLICY_WORKLOAD, None, |_| parse_workload(&v).map(Some)),
        };
        let ns = workload
            .as_ref()
            .map(|w| w.namespace.clone())
            .unwrap_or_default();
        let destination_context = r
            .scalar(ENV_DESTINATION_CONTEXT)
            .unwrap_or_else(|| serde_json::json!({ "ns": ns }).to_string());

        let addr = |r: &mut Reader<'_>, name, default: &str| {
            let fallback: SocketAddr = default.parse().expect("default address is valid");
            r.parse(name, fallback, parse_socket_addr)
        };
        let inbound_listen_addr =
            addr(&mut r, ENV_INBOUND_LISTEN_ADDR, DEFAULT_INBOUND_LISTEN_ADDR);
        let outbound_listen_addr = addr(
            &mut r,
            ENV_OUTBOUND_LISTEN_ADDR,
            DEFAULT_OUTBOUND_LISTEN_ADDR,
        );
        let admin_listen_addr = addr(&mut r, ENV_ADMIN_LISTEN_ADDR, DEFAULT_ADMIN_LISTEN_ADDR);
        let tap_listen_addr = addr(&mut r, ENV_TAP_LISTEN_ADDR, DEFAULT_TAP_LISTEN_ADDR);
        let tap_svc_name = r.parse(ENV_TAP_SVC_NAME, None, |v| {
            let v = v.trim_end_matches('.');
            if is_dns_name(v) {
                Ok(Some(v.to_ascii_lowercase()))
            } else {
                Err("must be a DNS-like identity".into())
            }
        });

        let inbound_forward_ports = r
            .list(ENV_INBOUND_FORWARD_PORTS, "", parse_forward_ports)
            .unwrap_or_default();
        let outbound_upstreams = r
            .list(ENV_OUTBOUND_UPSTREAMS, "", parse_upstreams)
            .unwrap_or_default();
        let inbound_opaque_ports = r
            .list(
                ENV_INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION,
                "",
                parse_port_set,
            )
            .unwrap_or_default();
        let inbound_require_identity_ports = r
            .list(ENV_INBOUND_PORTS_REQUIRE_IDENTITY, "", parse_port_set)
            .unwrap_or_default();
        let gateway_var = match r.env.get(ENV_INBOUND_GATEWAY_SUFFIXES) {
            None if r.env.get(ENV_LINKERD_INBOUND_GATEWAY_SUFFIXES).is_some() => {
                ENV_LINKERD_INBOUND_GATEWAY_SUFFIXES
            }
            _ => ENV_INBOUND_GATEWAY_SUFFIXES,
        };
        let inbound_gateway_suffixes = r.list(gateway_var, "", parse_suffixes).unwrap_or_default();
        let inbound_trusted_gateway_identities = r
            .list(
                ENV_INBOUND_TRUSTED_GATEWAY_IDENTITIES,
                "",
                parse_identity_list,
            )
            .unwrap_or_default();
        let inbound_default_policy = r.parse(
            ENV_INBOUND_DEFAULT_POLICY,
            DEFAULT_INBOUND_DEFAULT_POLICY,
            str::parse,
        );
        let cluster_networks = r
            .list(
                ENV_POLICY_CLUSTER_NETWORKS,
                DEFAULT_POLICY_CLUSTER_NETWORKS,
                parse_networks,
            )
            .unwrap_or_default();
        let outbound_opaque_ports = r
            .list(
                ENV_OUTBOUND_PORTS_DISABLE_PROTOCOL_DETECTION,
                DEFAULT_OUTBOUND_PORTS_DISABLE_PROTOCOL_DETECTION,
                parse_port_set,
            )
            .unwrap_or_default();

        let dur = |r: &mut Reader<'_>, name, default| r.parse(name, default, parse_duration);
        let inbound_detect_timeout = dur(
            &mut r,
            ENV_INBOUND_DETECT_TIMEOUT,
            DEFAULT_INBOUND_DETECT_TIMEOUT,
        );
        let outbound_detect_timeout = dur(
            &mut r,
            ENV_OUTBOUND_DETECT_TIMEOUT,
            DEFAULT_OUTBOUND_DETECT_TIMEOUT,
        );
        let inbound_connect_timeout = dur(
            &mut r,
            ENV_INBOUND_CONNECT_TIMEOUT,
            DEFAULT_INBOUND_CONNECT_TIMEOUT,
        );
        let outbound_connect_timeout = dur(
            &mut r,
            ENV_OUTBOUND_CONNECT_TIMEOUT,
            DEFAULT_OUTBOUND_CONNECT_TIMEOUT,
        );
        let default = crate::balance::DEFAULT_CONNECT_BACKOFF;
        let outbound_connect_backoff = r.backoff(
            (ENV_OUTBOUND_CONNECT_BACKOFF_MIN, default.min),
            (ENV_OUTBOUND_CONNECT_BACKOFF_MAX, default.max),
        );
        let outbound_failfast_timeout = dur(
            &mut r,
            ENV_OUTBOUND_FAILFAST_TIMEOUT,
            DEFAULT_OUTBOUND_FAILFAST_TIMEOUT,
        );
        let inbound_failfast_timeout = dur(
            &mut r,
            ENV_INBOUND_FAILFAST_TIMEOUT,
            DEFAULT_INBOUND_FAILFAST_TIMEOUT,
        );
        let destination_suffixes = r
            .list(
                ENV_DESTINATION_PROFILE_SUFFIXES,
                DEFAULT_DESTINATION_PROFILE_SUFFIXES,
                parse_suffixes,
            )
            .unwrap_or_default();
        let cluster_domain = r.parse(ENV_CLUSTER_DOMAIN, DEFAULT_CLUSTER_DOMAIN.into(), |v| {
            let v = v.trim_end_matches('.');
            if is_dns_name(v) {
                Ok(v.to_string())
            } else {
                Err("must be a DNS name".into())
            }
        });
        let shutdown_grace_period = dur(
            &mut r,
            ENV_SHUTDOWN_GRACE_PERIOD,
            DEFAULT_SHUTDOWN_GRACE_PERIOD,
        );
        let shutdown_endpoint_enabled = r.parse(
            ENV_SHUTDOWN_ENDPOINT_ENABLED,
            DEFAULT_SHUTDOWN_ENDPOINT_ENABLED,
            parse_bool,
        );
        let (control_backoff_min, control_backoff_max) = r.backoff(
            (ENV_CONTROL_BACKOFF_MIN, DEFAULT_CONTROL_BACKOFF_MIN),
            (ENV_CONTROL_BACKOFF_MAX, DEFAULT_CONTROL_BACKOFF_MAX),
        );
        let discovery_idle_timeout = dur(
            &mut r,
            ENV_DISCOVERY_IDLE_TIMEOUT,
            DEFAULT_DISCOVERY_IDLE_TIMEOUT,
        );

        let idle_conns = |r: &mut Reader<'_>, name| {
            r.parse(name, DEFAULT_MAX_IDLE_CONNS_PER_ENDPOINT, |v| {
                match v.parse::<usize>() {
                    Ok(n) if n <= MAX_IDLE_CONNS_LIMIT => Ok(n),
                    _ => Err(format!(
                        "must be a whole number from 0 to {MAX_IDLE_CONNS_LIMIT}"
                    )),
                }
            })
        };
        let outbound_pool = PoolLimits {
            h1_idle_timeout: dur(
                &mut r,
                ENV_OUTBOUND_HTTP1_POOL_IDLE_TIMEOUT,
                DEFAULT_HTTP1_POOL_IDLE_TIMEOUT,
            ),
            max_idle_h1_per_endpoint: idle_conns(&mut r, ENV_OUTBOUND_MAX_IDLE_CONNS_PER_ENDPOINT),
            ..PoolLimits::default()
        };
        let inbound_pool = PoolLimits {
            h1_idle_timeout: dur(
                &mut r,
                ENV_INBOUND_HTTP1_POOL_IDLE_TIMEOUT,
                DEFAULT_HTTP1_POOL_IDLE_TIMEOUT,
            ),
            max_idle_h1_per_endpoint: idle_conns(&mut r, ENV_INBOUND_MAX_IDLE_CONNS_PER_ENDPOINT),
            ..PoolLimits::default()
        };
        let cores = r.parse(ENV_CORES, None, |v| match v.parse::<usize>() {
            Ok(n) if (1..=MAX_CORES).contains(&n) => Ok(Some(n)),
            _ => Err(format!("must be a whole number from 1 to {MAX_CORES}")),
        });
        let sched_slice = r.parse(
            ENV_SCHED_SLICE,
            DEFAULT_SCHED_SLICE,
            |v| match parse_duration(v)? {
                Duration::ZERO => Ok(None),
                d if SCHED_SLICE_RANGE.contains(&d) => Ok(Some(d)),
                _ => Err("must be 0 (the kernel's default) or from 100us to 100ms".into()),
            },
        );

        let access_log = r.parse(ENV_ACCESS_LOG, None, |v| v.parse().map(Some));
        let metrics_retain_idle = dur(&mut r, ENV_METRICS_RETAIN_IDLE, DEFAULT_METRICS_RETAIN_IDLE);

        let outbound_retry_budget = RetryBudget::from_env(env).unwrap_or_else(|errors| {
            r.errors.extend(errors);
            RetryBudget::default()
        });

        let mut limits = |read: fn(&dyn Env) -> Result<ServerLimits, Vec<VarError>>,
                          default: ServerLimits| {
            read(env).unwrap_or_else(|errors| {
                r.errors.extend(errors);
                default
            })
        };
        let inbound_limits = limits(ServerLimits::inbound_from_env, ServerLimits::default());
        let outbound_limits = limits(
            ServerLimits::outbound_from_env,
            ServerLimits::outbound_default(),
        );

        let workload_name = workload.as_ref().map(|w| w.name.as_str());
        let trace = TraceConfig::from_env(env, workload_name).unwrap_or_else(|errors| {
            r.errors.extend(errors);
            None
        });

        let identity = match IdentityConfig::from_env(env, &destination_addr, &destination_name) {
            Ok(identity) => {
                // Without identity no client can ever be authenticated: the ports would refuse
                // everything, which is a configuration mistake, not a policy.
                if identity.is_none() && !inbound_require_identity_ports.0.is_empty() {
                    let raw = r.scalar(ENV_INBOUND_PORTS_REQUIRE_IDENTITY);
                    r.fail(
                        ENV_INBOUND_PORTS_REQUIRE_IDENTITY,
                        "needs identity (WEFT_PROXY_IDENTITY_*): without it no client can be authenticated".into(),
                        raw,
                    );
                }
                identity
            }
            Err(errors) => {
                r.errors.extend(errors);
                None
            }
        };

        // TLS or loopback, for each control-plane service; one that shares the destination's
        // address and name passes or fails with it (one error, on the variable to fix).
        let has_identity = identity.is_some();
        let own = |addr: &str, name: &str| r.scalar(addr).is_some() || r.scalar(name).is_some();
        let mut control = vec![(
            ENV_DESTINATION_SVC_ADDR,
            &destination_addr,
            ENV_DESTINATION_SVC_NAME,
            &destination_name,
        )];
        if own(ENV_POLICY_SVC_ADDR, ENV_POLICY_SVC_NAME) {
            control.push((
                ENV_POLICY_SVC_ADDR,
                &policy_addr,
                ENV_POLICY_SVC_NAME,
                &policy_name,
            ));
        }
        if let Some(i) = identity
            .as_ref()
            .filter(|_| own(ENV_IDENTITY_SVC_ADDR, ENV_IDENTITY_SVC_NAME))
        {
            control.push((
                ENV_IDENTITY_SVC_ADDR,
                &i.svc_addr,
                ENV_IDENTITY_SVC_NAME,
                &i.svc_name,
            ));
        }
        for (addr_var, addrs, name_var, name) in control {
            if let Err((var, reason)) =
                check_control_tls(addr_var, addrs, name_var, name.as_deref(), has_identity)
            {
                let raw = r.scalar(var);
                r.fail(var, reason, raw);
            }
        }

        match workload {
            Some(workload) if r.errors.is_empty() => Ok(Config {
                destination_addr,
                destination_name,
                policy_addr,
                policy_name,
                workload,
                destination_context,
                inbound_listen_addr,
                outbound_listen_addr,
                admin_listen_addr,
                tap_listen_addr,
                tap_svc_name,
                inbound_forward_ports,
                outbound_upstreams,
                inbound_opaque_ports,
                inbound_require_identity_ports,
                inbound_default_policy,
                inbound_gateway_suffixes,
                inbound_trusted_gateway_identities,
                cluster_networks,
                inbound_failfast_timeout,
                outbound_opaque_ports,
                inbound_detect_timeout,
                outbound_detect_timeout,
                inbound_connect_timeout,
                outbound_connect_timeout,
                outbound_connect_backoff,
                outbound_failfast_timeout,
                destination_suffixes,
                cluster_domain,
                shutdown_grace_period,
                shutdown_endpoint_enabled,
                control_backoff_min,
                control_backoff_max,
                discovery_idle_timeout,
                identity,
                cores,
                sched_slice,
                outbound_pool,
                inbound_pool,
                outbound_retry_budget,
                access_log,
                metrics_retain_idle,
                trace,
                inbound_limits,
                outbound_limits,
            }),
            _ => Err(ConfigError { errors: r.errors }),
        }
    }
}

impl Config {
    /// Worker threads the runtime gets: [`ENV_CORES`], else the CPUs this process may use.
    pub fn worker_threads(&self) -> usize {
        self.cores.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
    }

    /// The proxy's main runtime: one thread, without the work-stealing scheduler (no
    /// cross-thread wake-ups or stealing bookkeeping on the request path). With
    /// [`Config::worker_threads`] above 1, `runtime::start` adds that many less one worker
    /// threads of the same kind and spreads connections over them ([`crate::workers`]).
    pub fn runtime(&self) -> std::io::Result<tokio::runtime::Runtime> {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    }
}

#[cfg(test)]
mod tests;
