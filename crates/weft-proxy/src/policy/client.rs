//! The `OutboundPolicies.Watch` client: one stream per target, shared by every caller through a
//! `watch` channel, kept by a background task that reconnects with backoff and keeps the last
//! policy while the control plane is away; the stream closes once nobody has used the target
//! for `WEFT_PROXY_DISCOVERY_IDLE_TIMEOUT`.
//!
//! "No policy" never breaks traffic: a control plane that answers `NotFound`,
//! `InvalidArgument` or `Unimplemented` (one that does not serve policy), one that cannot be
//! reached before the first policy, or no first answer within the fail-fast timeout, all leave
//! the target on the path it had before policies existed (Destination.Get, or passthrough). A
//! refusal is remembered for [`REFUSAL_TTL`] (at most the idle timeout), then asked again: a
//! policy that appears later for the target (an EgressNetwork written for an outside address)
//! applies within that time.

use super::{convert, Policy};
use crate::{backoff::Backoff, control, discovery::Target};
use linkerd2_proxy_api::outbound::{
    self as api, outbound_policies_client::OutboundPoliciesClient, traffic_spec,
};
use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock, Weak},
    time::Duration,
};
use tokio::{sync::watch, time::Instant};
use tonic::{transport::Channel, Code};

/// Codes that mean "no policy for this target" (the target keeps the path without policy).
const REFUSED_CODES: &[Code] = &[Code::NotFound, Code::InvalidArgument, Code::Unimplemented];

/// How long a refused target is not asked again. Short enough that a policy created for an
/// address the proxy already talks to (an EgressNetwork) applies soon; long enough that a proxy
/// talking to many outside addresses asks about each at most once per interval.
pub const REFUSAL_TTL: Duration = Duration::from_secs(5);

/// What the control plane said about a target so far.
#[derive(Clone, Debug, Default)]
pub enum PolicyState {
    /// No answer yet.
    #[default]
    Pending,
    /// No policy (refused, or unreachable before any policy arrived): today's path.
    NoPolicy,
    /// The current policy. Kept while the control plane is away.
    Policy(Arc<Policy>),
}

/// The outcome of [`PolicyClient::lookup`].
#[derive(Clone, Debug)]
pub enum Lookup {
    /// Use the target's path without policy.
    NoPolicy,
    /// A live view of the target's policy; the current value is a [`PolicyState::Policy`].
    /// Later values may be `NoPolicy` (the control plane dropped the target): holders keep
    /// using the last policy they saw until they finish.
    Policy(watch::Receiver<PolicyState>),
}

/// The policy client. Cheap to clone; clones share targets and the connection.
#[derive(Clone)]
pub struct PolicyClient {
    inner: Arc<Inner>,
}

/// How the client reaches the control plane and how long it waits.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `WEFT_PROXY_POLICY_SVC_ADDR`.
    pub addr: String,
    /// TLS to it (`WEFT_PROXY_POLICY_SVC_NAME`); `None`: plaintext.
    pub tls: Option<control::ControlTls>,
    /// `WEFT_PROXY_POLICY_WORKLOAD` as `NS:NAME`.
    pub workload: String,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// The longest a caller waits for the first answer.
    pub failfast: Duration,
    pub idle_timeout: Duration,
}

impl Settings {
    /// `identity`: this proxy's, for TLS to the control plane when
    /// `WEFT_PROXY_POLICY_SVC_NAME` names it.
    pub fn from_config(
        cfg: &crate::config::Config,
        identity: Option<&crate::identity::Identity>,
    ) -> Settings {
        Settings {
            addr: cfg.policy_addr.clone(),
            tls: control::tls(cfg.policy_name.as_deref(), identity),
            workload: format!("{}:{}", cfg.workload.namespace, cfg.workload.name),
            backoff_min: cfg.control_backoff_min,
            backoff_max: cfg.control_backoff_max,
            failfast: cfg.outbound_failfast_timeout,
            idle_timeout: cfg.discovery_idle_timeout,
        }
    }
}

struct Inner {
    settings: Settings,
    endpoint: Option<control::ControlEndpoint>,
    /// Built on first use so `PolicyClient::new` works outside a Tokio runtime.
    client: OnceLock<OutboundPoliciesClient<Channel>>,
    targets: Mutex<HashMap<Target, Entry>>,
}

enum Entry {
    /// Refused at this instant (no policy); asked again once older than the idle timeout.
    Refused(Instant),
    Active(watch::Sender<PolicyState>),
}

impl Inner {
    fn refusal_ttl(&self) -> Duration {
        REFUSAL_TTL.min(self.settings.idle_timeout)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn refused_at(e: &Entry) -> Option<Instant> {
    match e {
        Entry::Refused(at) => Some(*at),
        Entry::Active(_) => None,
    }
}

impl PolicyClient {
    /// Lazy: nothing connects until the first `lookup`.
    pub fn new(settings: Settings) -> PolicyClient {
        let endpoint =
            control::endpoint(&settings.addr, settings.tls.clone(), settings.backoff_max)
                .map_err(
                    |e| tracing::error!(addr = %settings.addr, error = %e, "bad policy address"),
                )
                .ok();
        PolicyClient {
            inner: Arc::new(Inner {
                settings,
                endpoint,
                client: OnceLock::new(),
                targets: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The target's policy, waiting for the first answer at most the fail-fast timeout.
    pub async fn lookup(&self, target: &Target) -> Lookup {
        let mut rx = {
            let mut targets = lock(&self.inner.targets);
            if let Some(Entry::Refused(at)) = targets.get(target) {
                if at.elapsed() < self.inner.refusal_ttl() {
                    return Lookup::NoPolicy;
                }
                targets.remove(target);
            }
            match targets.get(target) {
                Some(Entry::Active(tx)) => tx.subscribe(),
                _ => {
                    let Some(client) = self.client() else {
                        return Lookup::NoPolicy;
                    };
                    let (tx, rx) = watch::channel(PolicyState::Pending);
                    targets.insert(target.clone(), Entry::Active(tx.clone()));
                    let task = TargetTask {
                        inner: Arc::downgrade(&self.inner),
                        client,
                        target: target.clone(),
                        tx,
                    };
                    tokio::spawn(task.run());
                    rx
                }
            }
        };
        let wait = rx.wait_for(|s| !matches!(s, PolicyState::Pending));
        let answered = tokio::time::timeout(self.inner.settings.failfast, wait)
            .await
            .map(|r| r.is_ok());
        if answered.is_err() {
            tracing::debug!(%target, "no policy answer within the fail-fast timeout");
        }
        let has_policy = matches!(*rx.borrow(), PolicyState::Policy(_));
        if has_policy {
            Lookup::Policy(rx)
        } else {
            Lookup::NoPolicy
        }
    }

    fn client(&self) -> Option<OutboundPoliciesClient<Channel>> {
        let endpoint = self.inner.endpoint.as_ref()?;
        Some(
            self.inner
                .client
                .get_or_init(|| OutboundPoliciesClient::new(endpoint.connect_lazy()))
                .clone(),
        )
    }

    /// `WEFT_PROXY_DISCOVERY_IDLE_TIMEOUT`: how long an unused target's stream is kept.
    pub fn idle_timeout(&self) -> Duration {
        self.inner.settings.idle_timeout
    }

    /// Targets with a live stream (tests).
    #[cfg(test)]
    pub fn active(&self) -> usize {
        lock(&self.inner.targets)
            .values()
            .filter(|e| matches!(e, Entry::Active(_)))
            .count()
    }
}

/// The background task owning one target's stream.
struct TargetTask {
    inner: Weak<Inner>,
    client: OutboundPoliciesClient<Channel>,
    target: Target,
    tx: watch::Sender<PolicyState>,
}

impl TargetTask {
    fn spec(&self, workload: String) -> api::TrafficSpec {
        let target = match &self.target {
            Target::Addr(a) => traffic_spec::Target::Addr((*a).into()),
            Target::Name { host, port } => {
                traffic_spec::Target::Authority(format!("{host}:{port}"))
            }
        };
        api::TrafficSpec {
            source_workload: workload,
            target: Some(target),
        }
    }

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
                control::StreamEnd::Refused => {
                    tracing::debug!(target = %self.target, "no outbound policy for the target");
                    self.tx.send_replace(PolicyState::NoPolicy);
                    if let Some(inner) = self.inner.upgrade() {
                        let mut targets = lock(&inner.targets);
                        let now = Instant::now();
                        targets.insert(self.target.clone(), Entry::Refused(now));
                        control::sweep_expired(&mut targets, now, inner.refusal_ttl(), refused_at);
                    }
                    return;
                }
                control::StreamEnd::Idle => return,
                control::StreamEnd::Retry => {
                    // Unreachable before any policy: callers use today's path meanwhile.
                    self.tx.send_if_modified(|s| {
                        if matches!(s, PolicyState::Pending) {
                            *s = PolicyState::NoPolicy;
                            true
                        } else {
                            false
                        }
                    });
                    let delay = backoff.next_delay();
                    // Keep checking idleness while waiting to reconnect.
                    if self.sleep_unless_idle(delay).await {
                        return;
                    }
                }
            }
        }
    }

    /// Sleeps `delay`; true if the target went idle meanwhile (and was removed).
    async fn sleep_unless_idle(&self, delay: Duration) -> bool {
        control::sleep_unless_idle(delay, self.idle_check_interval(), |clock| {
            self.is_idle(clock)
        })
        .await
    }

    async fn stream_once(&mut self, backoff: &mut Backoff) -> control::StreamEnd {
        let Some(workload) = self.inner.upgrade().map(|i| i.settings.workload.clone()) else {
            return control::StreamEnd::Idle;
        };
        let spec = self.spec(workload);
        let mut stream = match self.client.watch(spec).await {
            Ok(r) => r.into_inner(),
            Err(status) => {
                return control::stream_error(&status, REFUSED_CODES, "policy", &self.target)
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
                "policy",
                &self.target,
            )
            .await
            {
                Ok(u) => u,
                Err(end) => return end,
            };
            backoff.reset();
            match convert::policy(update) {
                Ok(policy) => {
                    self.tx.send_replace(PolicyState::Policy(Arc::new(policy)));
                }
                Err(e) => {
                    // Keep the last good policy; without one, today's path.
                    tracing::warn!(target = %self.target, error = %e, "ignoring an unusable policy update");
                    self.tx.send_if_modified(|s| {
                        if matches!(s, PolicyState::Pending) {
                            *s = PolicyState::NoPolicy;
                            true
                        } else {
                            false
                        }
                    });
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

    /// Removal happens under the targets lock, so a concurrent `lookup` either subscribed
    /// before (not idle) or finds no entry (starts afresh).
    fn is_idle(&self, clock: &mut control::IdleClock) -> bool {
        let Some(inner) = self.inner.upgrade() else {
            return true;
        };
        let receivers = || self.tx.receiver_count();
        let timeout = inner.settings.idle_timeout;
        let idle = control::remove_if_idle(&inner.targets, &self.target, clock, receivers, timeout);
        if idle {
            tracing::debug!(target = %self.target, "dropping idle policy target");
        }
        idle
    }
}
