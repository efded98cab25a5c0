//! The `InboundServerPolicies.WatchPort` client: one stream per application port, shared by
//! every connection to the port through a `watch` channel, kept by a background task that
//! reconnects with backoff and keeps the last policy while the control plane is away; the
//! stream closes once no connection has used the port for `WEFT_PROXY_DISCOVERY_IDLE_TIMEOUT`.
//!
//! Until the control plane has answered for a port (no policy address, unreachable, any error
//! status, or no first answer within `WEFT_PROXY_INBOUND_FAILFAST_TIMEOUT`) the port has the
//! configured default policy ([`Defaults`]). Errors are never "no policy" here: an inbound port
//! always has one, so every failure is retried with backoff.
//!
//! The port's task also keeps its rate limiter across updates that leave the limit unchanged
//! ([`ServerPolicy::keep_rate_limiter`]).

use super::{proto, ServerPolicy};
use crate::{
    backoff::Backoff,
    config::{Cidr, Config, DefaultPolicy, PortSet},
    control,
};
use linkerd2_proxy_api::inbound::{
    self as api, inbound_server_policies_client::InboundServerPoliciesClient,
};
use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock, Weak},
    time::Duration,
};
use tokio::sync::watch;
use tonic::transport::Channel;

/// No code means "no policy": a port always has one (the default until the first answer).
const REFUSED_CODES: &[tonic::Code] = &[];

/// What the control plane said about a port so far.
#[derive(Clone, Debug, Default)]
pub enum PortState {
    /// No answer yet.
    #[default]
    Pending,
    /// Never answered (unreachable, error, unusable update): the default policy applies.
    Unavailable,
    /// The current policy. Kept while the control plane is away.
    Policy(Arc<ServerPolicy>),
}

/// The policy of a port while the control plane has never answered for it.
#[derive(Clone, Debug)]
pub struct Defaults {
    /// `WEFT_PROXY_INBOUND_DEFAULT_POLICY`.
    pub policy: DefaultPolicy,
    /// `WEFT_PROXY_POLICY_CLUSTER_NETWORKS`.
    pub cluster_networks: Arc<[Cidr]>,
    /// `WEFT_PROXY_INBOUND_PORTS_REQUIRE_IDENTITY`: these ports get the authenticated form.
    pub require_identity: PortSet,
    /// `WEFT_PROXY_INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION`: these ports are opaque.
    pub opaque_ports: PortSet,
}

impl Default for Defaults {
    fn default() -> Defaults {
        Defaults {
            policy: crate::config::DEFAULT_INBOUND_DEFAULT_POLICY,
            cluster_networks: Arc::from(Vec::new()),
            require_identity: PortSet::default(),
            opaque_ports: PortSet::default(),
        }
    }
}

impl Defaults {
    pub fn for_port(&self, port: u16) -> ServerPolicy {
        let policy = if self.require_identity.contains(&port) {
            self.policy.authenticated()
        } else {
            self.policy
        };
        ServerPolicy::default_for(
            policy,
            &self.cluster_networks,
            self.opaque_ports.contains(&port),
        )
    }
}

/// How the client reaches the control plane and how long it waits.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `WEFT_PROXY_POLICY_SVC_ADDR`; `None`: every port has its default policy.
    pub addr: Option<String>,
    /// TLS to it (`WEFT_PROXY_POLICY_SVC_NAME`); `None`: plaintext.
    pub tls: Option<control::ControlTls>,
    /// `WEFT_PROXY_POLICY_WORKLOAD` as `NS:NAME`.
    pub workload: String,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// The longest a connection waits for the port's first answer.
    pub failfast: Duration,
    pub idle_timeout: Duration,
    pub defaults: Defaults,
}

impl Settings {
    /// `identity`: this proxy's, for TLS to the control plane when
    /// `WEFT_PROXY_POLICY_SVC_NAME` names it.
    pub fn from_config(cfg: &Config, identity: Option<&crate::identity::Identity>) -> Settings {
        Settings {
            addr: Some(cfg.policy_addr.clone()).filter(|a| !a.is_empty()),
            tls: control::tls(cfg.policy_name.as_deref(), identity),
            workload: format!("{}:{}", cfg.workload.namespace, cfg.workload.name),
            backoff_min: cfg.control_backoff_min,
            backoff_max: cfg.control_backoff_max,
            failfast: cfg.inbound_failfast_timeout,
            idle_timeout: cfg.discovery_idle_timeout,
            defaults: Defaults {
                policy: cfg.inbound_default_policy,
                cluster_networks: cfg.cluster_networks.clone().into(),
                require_identity: cfg.inbound_require_identity_ports.clone(),
                opaque_ports: cfg.inbound_opaque_ports.clone(),
            },
        }
    }

    /// No control plane: every port has its default policy.
    pub fn defaults_only(defaults: Defaults) -> Settings {
        Settings {
            addr: None,
            tls: None,
            workload: String::new(),
            backoff_min: crate::config::DEFAULT_CONTROL_BACKOFF_MIN,
            backoff_max: crate::config::DEFAULT_CONTROL_BACKOFF_MAX,
            failfast: crate::config::DEFAULT_INBOUND_FAILFAST_TIMEOUT,
            idle_timeout: crate::config::DEFAULT_DISCOVERY_IDLE_TIMEOUT,
            defaults,
        }
    }
}

/// The inbound policy client. Cheap to clone; clones share ports and the connection.
#[derive(Clone)]
pub struct InboundPolicies {
    inner: Arc<Inner>,
}

struct Inner {
    settings: Settings,
    endpoint: Option<control::ControlEndpoint>,
    /// Built on first use so `InboundPolicies::new` works outside a Tokio runtime.
    client: OnceLock<InboundServerPoliciesClient<Channel>>,
    ports: Mutex<HashMap<u16, watch::Sender<PortState>>>,
    /// Each port's default policy, built once (ports are few: the application's).
    defaults: Mutex<HashMap<u16, Arc<ServerPolicy>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A connection's live view of its port's policy.
#[derive(Clone, Debug)]
pub struct PortPolicy {
    rx: Option<watch::Receiver<PortState>>,
    default: Arc<ServerPolicy>,
}

impl PortPolicy {
    /// Always `policy` (no control plane).
    pub fn fixed(policy: Arc<ServerPolicy>) -> PortPolicy {
        PortPolicy {
            rx: None,
            default: policy,
        }
    }

    /// The policy in force now: the control plane's latest, else the default. Read per request
    /// (a reference count, no allocation), so an update applies to the next request.
    pub fn current(&self) -> Arc<ServerPolicy> {
        if let Some(rx) = &self.rx {
            if let PortState::Policy(p) = &*rx.borrow() {
                return p.clone();
            }
        }
        self.default.clone()
    }
}

impl InboundPolicies {
    /// Lazy: nothing connects until the first `port`.
    pub fn new(settings: Settings) -> InboundPolicies {
        let endpoint = settings.addr.as_ref().and_then(|addr| {
            control::endpoint(addr, settings.tls.clone(), settings.backoff_max)
                .map_err(|e| tracing::error!(%addr, error = %e, "bad policy address"))
                .ok()
        });
        InboundPolicies {
            inner: Arc::new(Inner {
                settings,
                endpoint,
                client: OnceLock::new(),
                ports: Mutex::new(HashMap::new()),
                defaults: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Every port has its default policy; nothing is asked.
    pub fn defaults_only(defaults: Defaults) -> InboundPolicies {
        InboundPolicies::new(Settings::defaults_only(defaults))
    }

    /// The port's policy, waiting for the control plane's first answer at most the fail-fast
    /// timeout (later connections to the port do not wait once it answered or failed).
    pub async fn port(&self, port: u16) -> PortPolicy {
        let default = self.default_for(port);
        let Some(client) = self.client() else {
            return PortPolicy { rx: None, default };
        };
        let mut rx = {
            let mut ports = lock(&self.inner.ports);
            match ports.get(&port) {
                Some(tx) => tx.subscribe(),
                None => {
                    let (tx, rx) = watch::channel(PortState::Pending);
                    ports.insert(port, tx.clone());
                    let task = PortTask {
                        inner: Arc::downgrade(&self.inner),
                        client,
                        port,
                        tx,
                    };
                    tokio::spawn(task.run());
                    rx
                }
            }
        };
        let wait = rx.wait_for(|s| !matches!(s, PortState::Pending));
        if tokio::time::timeout(self.inner.settings.failfast, wait)
            .await
            .is_err()
        {
            tracing::info!(
                port,
                default = %default.meta.name,
                "no inbound policy within the fail-fast timeout; the default policy applies meanwhile"
            );
        }
        PortPolicy {
            rx: Some(rx),
            default,
        }
    }

    fn default_for(&self, port: u16) -> Arc<ServerPolicy> {
        lock(&self.inner.defaults)
            .entry(port)
            .or_insert_with(|| Arc::new(self.inner.settings.defaults.for_port(port)))
            .clone()
    }

    fn client(&self) -> Option<InboundServerPoliciesClient<Channel>> {
        let endpoint = self.inner.endpoint.as_ref()?;
        Some(
            self.inner
                .client
                .get_or_init(|| InboundServerPoliciesClient::new(endpoint.connect_lazy()))
                .clone(),
        )
    }

    /// Ports with a live stream (tests).
    #[cfg(test)]
    pub fn active(&self) -> usize {
        lock(&self.inner.ports).len()
    }
}

/// The background task owning one port's stream.
struct PortTask {
    inner: Weak<Inner>,
    client: InboundServerPoliciesClient<Channel>,
    port: u16,
    tx: watch::Sender<PortState>,
}

impl PortTask {
    async fn run(mut self) {
        let Some((min, max)) = self
            .inner
            .upgrade()
            .map(|i| (i.settings.backoff_min, i.settings.backoff_max))
        else {
            return;
        };
        let mut backoff = Backoff::new(min, max);
        loop {
            match self.stream_once(&mut backoff).await {
                control::StreamEnd::Idle => return,
                control::StreamEnd::Refused | control::StreamEnd::Retry => {
                    // Never answered: the default policy meanwhile. A policy stays.
                    self.unavailable_if_pending();
                    let delay = backoff.next_delay();
                    let interval = self.idle_check_interval();
                    if control::sleep_unless_idle(delay, interval, |c| self.is_idle(c)).await {
                        return;
                    }
                }
            }
        }
    }

    fn unavailable_if_pending(&self) {
        self.tx.send_if_modified(|s| {
            let pending = matches!(s, PortState::Pending);
            if pending {
                *s = PortState::Unavailable;
            }
            pending
        });
    }

    async fn stream_once(&mut self, backoff: &mut Backoff) -> control::StreamEnd {
        let Some(workload) = self.inner.upgrade().map(|i| i.settings.workload.clone()) else {
            return control::StreamEnd::Idle;
        };
        let spec = api::PortSpec {
            workload,
            port: u32::from(self.port),
        };
        let target = Port(self.port);
        let mut stream = match self.client.watch_port(spec).await {
            Ok(r) => r.into_inner(),
            Err(status) => {
                return control::stream_error(&status, REFUSED_CODES, "inbound policy", &target)
            }
        };
        let idle_check = self.idle_check_interval();
        let mut idle = control::IdleClock::default();
        loop {
            let update = match control::next_unless_idle(
                &mut stream,
                idle_check,
                || self.is_idle(&mut idle),
                REFUSED_CODES,
                "inbound policy",
                &target,
            )
            .await
            {
                Ok(u) => u,
                Err(end) => return end,
            };
            backoff.reset();
            match proto::server(update) {
                Ok(mut policy) => {
                    tracing::debug!(port = self.port, server = %policy.meta, "inbound policy");
                    // The same rate limit keeps its buckets (a re-sent policy must not refill
                    // them): this task is the one writer of the port's policy.
                    if let PortState::Policy(previous) = &*self.tx.borrow() {
                        policy.keep_rate_limiter(previous);
                    }
                    self.tx.send_replace(PortState::Policy(Arc::new(policy)));
                }
                Err(e) => {
                    // Keep the last good policy; without one, the default.
                    tracing::warn!(port = self.port, error = %e, "ignoring an unusable inbound policy update");
                    self.unavailable_if_pending();
                }
            }
        }
    }

    fn idle_check_interval(&self) -> Duration {
        control::idle_check_interval(
            self.inner
                .upgrade()
                .map_or(Duration::from_secs(2), |i| i.settings.idle_timeout),
        )
    }

    /// Removal happens under the ports lock, so a concurrent `port` either subscribed before
    /// (not idle) or finds no entry (starts afresh).
    fn is_idle(&self, clock: &mut control::IdleClock) -> bool {
        let Some(inner) = self.inner.upgrade() else {
            return true;
        };
        let receivers = || self.tx.receiver_count();
        let timeout = inner.settings.idle_timeout;
        let idle = control::remove_if_idle(&inner.ports, &self.port, clock, receivers, timeout);
        if idle {
            tracing::debug!(port = self.port, "dropping idle inbound policy port");
        }
        idle
    }
}

/// A port as a log target.
struct Port(u16);

impl std::fmt::Display for Port {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "port {}", self.0)
    }
}
