//! Service discovery client (Destination.Get, GetProfile).
//!
//! What the data path relies on: `Discovery::resolve` returns a `watch::Receiver<EndpointSet>` per target, shared by every caller
//! of the same target, kept current by one background stream per target that reconnects with
//! backoff and keeps the last received state while the control plane is away.
//!
//! One task per target owns the `Destination.Get` stream and publishes on a `watch::Sender`.
//! After every (re)connect the first message replaces the whole set (a full resync); later
//! messages are `add`/`remove` diffs. `InvalidArgument`/`FailedPrecondition` means "not a mesh
//! name": the target is remembered as rejected and callers forward to the original destination.

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex, OnceLock, Weak},
    time::Duration,
};

use crate::{backoff::Backoff, control};
use linkerd2_proxy_api::destination::{
    self as api, destination_client::DestinationClient, protocol_hint, tls_identity, update,
};
use tokio::sync::watch;
use tonic::{transport::Channel, Code};

/// Codes that mean "not a mesh target": callers forward to the original destination.
const REJECTED_CODES: &[Code] = &[Code::InvalidArgument, Code::FailedPrecondition];

/// What a client asked to reach: a logical name (FQDN without trailing dot) or an address.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    Name { host: String, port: u16 },
    Addr(SocketAddr),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Name { host, port } => write!(f, "{host}:{port}"),
            Target::Addr(a) => write!(f, "{a}"),
        }
    }
}

/// How the peer at an endpoint wants to be spoken to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProtocolHint {
    /// Unknown (not meshed): speak the application's protocol as-is.
    Unknown,
    /// A meshed proxy: HTTP/1 may be carried over HTTP/2 with `l5d-orig-proto`.
    H2,
    /// Opaque TCP.
    Opaque,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub weight: u32,
    pub hint: ProtocolHint,
    /// Expected TLS identity (DNS-like) from discovery, if any (shared: every pick copies the
    /// endpoint).
    pub identity: Option<Arc<str>>,
    /// `protocol_hint.opaque_transport.inbound_port`: the peer's proxy takes opaque traffic on this
    /// port, inside mTLS with ALPN `transport.l5d.io/v1` and a transport header naming the
    /// endpoint's port.
    pub opaque_transport_port: Option<u16>,
    /// `authority_override`: the endpoint is a gateway (a mirrored service of a linked cluster)
    /// that forwards to this name. It is reached on [`Endpoint::opaque_transport_port`] with a
    /// transport header naming the override, and HTTP requests carry it as their authority.
    pub authority_override: Option<Arc<AuthorityOverride>>,
    /// Per-endpoint metric labels (set-level labels merged in), without the `dst_` prefix.
    pub labels: Arc<BTreeMap<String, String>>,
}

/// The name and port a gateway endpoint forwards to (`web.ns.svc.cluster.local:8080`, the
/// service in the linked cluster), with what each request and connection to it needs made once,
/// when discovery delivers the endpoint: the authority and `Host` requests carry, and the pool
/// key's peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthorityOverride {
    /// Lower-cased, without a trailing dot.
    pub host: String,
    pub port: u16,
    /// `host:port`, as requests to the gateway carry it (URI authority and `Host`).
    pub authority: ::http::uri::Authority,
    pub host_header: ::http::HeaderValue,
    /// The pool key's peer for this endpoint: the gateway's identity and the override
    /// (`ID\nHOST:PORT`; one gateway serves many names, their connections never mix).
    pub pool_peer: Arc<str>,
}

impl AuthorityOverride {
    /// `host:port` of a gateway whose TLS identity is `identity`; `None` for anything else (no
    /// port, an IP address, not a DNS name).
    pub fn parse(s: &str, identity: &str) -> Option<AuthorityOverride> {
        let authority: ::http::uri::Authority = s.trim().parse().ok()?;
        let port = authority.port_u16().filter(|p| *p != 0)?;
        let host = authority.host().trim_end_matches('.').to_ascii_lowercase();
        let dns = !host.is_empty()
            && host.parse::<IpAddr>().is_err()
            && !host.starts_with('[')
            && host.split('.').all(|l| {
                !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !dns {
            return None;
        }
        let text = format!("{host}:{port}");
        Some(AuthorityOverride {
            authority: text.parse().ok()?,
            host_header: ::http::HeaderValue::from_str(&text).ok()?,
            pool_peer: format!("{identity}\n{text}").into(),
            host,
            port,
        })
    }
}

impl AuthorityOverride {
    /// The transport header a connection to the gateway starts with: the override, and the
    /// session protocol inside (`None`: opaque bytes).
    pub fn transport_header(
        &self,
        protocol: Option<crate::mtls::SessionProtocol>,
    ) -> crate::mtls::TransportHeader {
        crate::mtls::TransportHeader {
            port: self.port,
            name: Some(self.host.clone()),
            protocol,
            client_id: None,
        }
    }
}

impl fmt::Display for AuthorityOverride {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// The current state of one target.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndpointSet {
    /// False until the first answer arrives.
    pub resolved: bool,
    /// `no_endpoints{exists}` / any add: the service is known to the control plane.
    pub exists: bool,
    /// The service's connections are opaque TCP (profile `opaque_protocol` or endpoint hints).
    pub opaque: bool,
    /// Fully-qualified service name from the profile, if any.
    pub fqn: Option<String>,
    pub endpoints: Vec<Endpoint>,
}

/// The outcome of resolving a target.
#[derive(Clone, Debug)]
pub enum Resolution {
    /// The control plane refused the name (InvalidArgument / FailedPrecondition), or it is outside
    /// the discovery suffixes: forward to the original destination without balancing.
    Rejected,
    /// A live, shared view of the endpoints.
    Endpoints(watch::Receiver<EndpointSet>),
}

/// The discovery client. Cheap to clone; clones share targets and the connection.
#[derive(Clone)]
pub struct Discovery {
    inner: Arc<Inner>,
}

struct Inner {
    endpoint: Option<control::ControlEndpoint>,
    /// Built on first use so `Discovery::new` works outside a Tokio runtime.
    client: OnceLock<DestinationClient<Channel>>,
    context_token: String,
    namespace: String,
    cluster_domain: String,
    suffixes: Vec<String>,
    backoff_min: Duration,
    backoff_max: Duration,
    failfast: Duration,
    idle_timeout: Duration,
    /// Flips to true on the first answer or successful connection.
    ready: watch::Sender<bool>,
    targets: Mutex<HashMap<Target, Entry>>,
}

enum Entry {
    /// Rejected at this instant; asked again once the rejection is older than the idle timeout
    /// (the control plane may learn the name later), and swept then so that a transparent proxy
    /// talking to many outside addresses does not grow without bound.
    Rejected(tokio::time::Instant),
    Active {
        endpoints: watch::Sender<EndpointSet>,
        rejected: watch::Receiver<bool>,
    },
}

/// What the profile stream told us; merged into every published set.
#[derive(Default, Clone)]
struct ProfileInfo {
    opaque: bool,
    fqn: Option<String>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Discovery {
    /// Lazy: nothing connects until the first `resolve` (or `probe_readiness`). `identity`:
    /// this proxy's, for TLS to the control plane when `WEFT_PROXY_DESTINATION_SVC_NAME` names it.
    pub fn new(
        cfg: &crate::config::Config,
        identity: Option<&crate::identity::Identity>,
    ) -> Discovery {
        let tls = control::tls(cfg.destination_name.as_deref(), identity);
        let endpoint = control::endpoint(&cfg.destination_addr, tls, cfg.control_backoff_max)
            .map_err(|e| tracing::error!(addr = %cfg.destination_addr, error = %e, "bad destination address"))
            .ok();
        Discovery {
            inner: Arc::new(Inner {
                endpoint,
                client: OnceLock::new(),
                context_token: cfg.destination_context.clone(),
                namespace: cfg.workload.namespace.clone(),
                cluster_domain: cfg.cluster_domain.clone(),
                suffixes: cfg.destination_suffixes.clone(),
                backoff_min: cfg.control_backoff_min,
                backoff_max: cfg.control_backoff_max,
                failfast: cfg.outbound_failfast_timeout,
                idle_timeout: cfg.discovery_idle_timeout,
                ready: watch::Sender::new(false),
                targets: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// True once the control plane answered (or a connection to it succeeded) at least once.
    pub fn is_ready(&self) -> bool {
        *self.inner.ready.borrow()
    }

    /// Resolves once [`Discovery::is_ready`] is true.
    pub async fn wait_ready(&self) {
        let mut rx = self.inner.ready.subscribe();
        let _ = rx.wait_for(|r| *r).await;
    }

    /// Connects to the control plane (with backoff) until one connection succeeds, so `/ready`
    /// turns green before any target is resolved. Spawns a task; call inside a Tokio runtime.
    pub fn probe_readiness(&self) {
        let Some(endpoint) = self.inner.endpoint.clone() else {
            return;
        };
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let (min, max) = upgrade_cfg(&weak);
            let mut backoff = Backoff::new(min, max);
            loop {
                let Some(inner) = weak.upgrade() else { return };
                if *inner.ready.borrow() {
                    return;
                }
                drop(inner);
                match endpoint.connect().await {
                    Ok(_) => {
                        if let Some(inner) = weak.upgrade() {
                            inner.ready.send_replace(true);
                        }
                        tracing::info!("connected to the control plane");
                        return;
                    }
                    Err(e) => tracing::debug!(error = %e, "control plane not reachable yet"),
                }
                backoff.sleep().await;
            }
        });
    }

    /// Short names → FQDN in the workload's namespace; IP literals → `Target::Addr`.
    /// `None` when the name is outside the discovery suffixes.
    ///
    /// `web` → `web.NS.svc.DOMAIN`, `web.other` → `web.other.svc.DOMAIN`,
    /// `web.other.svc` → `web.other.svc.DOMAIN`; longer names are taken as written.
    pub fn canonicalize(&self, host: &str, port: u16) -> Option<Target> {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Some(Target::Addr(SocketAddr::new(ip, port)));
        }
        if host.is_empty() {
            return None;
        }
        let domain = &self.inner.cluster_domain;
        let labels = host.split('.').count();
        let fqdn = match labels {
            1 => format!("{host}.{}.svc.{domain}", self.inner.namespace),
            2 => format!("{host}.svc.{domain}"),
            3 if host.ends_with(".svc") => format!("{host}.{domain}"),
            _ => host,
        };
        self.in_suffixes(&fqdn)
            .then_some(Target::Name { host: fqdn, port })
    }

    fn in_suffixes(&self, fqdn: &str) -> bool {
        under_suffixes(&self.inner.suffixes, fqdn)
    }

    /// A live view of `target`'s endpoints, or `Rejected`. Waits for the first answer at most the
    /// outbound fail-fast timeout, then returns the (still unresolved) view.
    pub async fn resolve(&self, target: &Target) -> Resolution {
        if let Target::Name { host, .. } = target {
            if !self.in_suffixes(host) {
                return Resolution::Rejected;
            }
        }
        let (mut rx, mut rejected) = {
            let mut targets = lock(&self.inner.targets);
            let idle = self.inner.idle_timeout;
            if let Some(Entry::Rejected(at)) = targets.get(target) {
                if at.elapsed() < idle {
                    return Resolution::Rejected;
                }
                targets.remove(target);
            }
            match targets.get(target) {
                Some(Entry::Rejected(_)) => return Resolution::Rejected,
                Some(Entry::Active {
                    endpoints,
                    rejected,
                }) => (endpoints.subscribe(), rejected.clone()),
                None => {
                    let Some(client) = self.client() else {
                        return Resolution::Rejected;
                    };
                    let (tx, rx) = watch::channel(EndpointSet::default());
                    let (rej_tx, rej_rx) = watch::channel(false);
                    targets.insert(
                        target.clone(),
                        Entry::Active {
                            endpoints: tx.clone(),
                            rejected: rej_rx.clone(),
                        },
                    );
                    let task = TargetTask {
                        inner: Arc::downgrade(&self.inner),
                        client,
                        target: target.clone(),
                        tx,
                        rejected: rej_tx,
                        profile: Arc::new(Mutex::new(ProfileInfo::default())),
                    };
                    tokio::spawn(task.run());
                    (rx, rej_rx)
                }
            }
        };

        let wait = async {
            loop {
                if *rejected.borrow_and_update() {
                    return true;
                }
                if rx.borrow_and_update().resolved {
                    return false;
                }
                tokio::select! {
                    r = rx.changed() => if r.is_err() { return *rejected.borrow() },
                    r = rejected.changed() => if r.is_err() { return false },
                }
            }
        };
        match tokio::time::timeout(self.inner.failfast, wait).await {
            Ok(true) => Resolution::Rejected,
            Ok(false) | Err(_) => Resolution::Endpoints(rx),
        }
    }

    fn client(&self) -> Option<DestinationClient<Channel>> {
        let endpoint = self.inner.endpoint.as_ref()?;
        Some(
            self.inner
                .client
                .get_or_init(|| DestinationClient::new(endpoint.connect_lazy()))
                .clone(),
        )
    }
}

/// Is `fqdn` (no trailing dot) under one of `suffixes` (each ending with a dot; `.` = any)?
/// Discovery's suffixes and the inbound gateway's read the same way.
pub(crate) fn under_suffixes(suffixes: &[String], fqdn: &str) -> bool {
    let dotted = format!("{fqdn}.");
    suffixes
        .iter()
        .any(|s| s == "." || dotted.ends_with(&format!(".{s}")) || dotted == *s)
}

fn upgrade_cfg(weak: &Weak<Inner>) -> (Duration, Duration) {
    weak.upgrade()
        .map_or((Duration::from_millis(100), Duration::from_secs(5)), |i| {
            (i.backoff_min, i.backoff_max)
        })
}

/// The background task owning one target's streams.
struct TargetTask {
    inner: Weak<Inner>,
    client: DestinationClient<Channel>,
    target: Target,
    tx: watch::Sender<EndpointSet>,
    rejected: watch::Sender<bool>,
    profile: Arc<Mutex<ProfileInfo>>,
}

impl TargetTask {
    fn request(&self) -> Option<api::GetDestination> {
        let inner = self.inner.upgrade()?;
        Some(api::GetDestination {
            scheme: "k8s".into(),
            path: self.target.to_string(),
            context_token: inner.context_token.clone(),
        })
    }

    async fn run(mut self) {
        let Some(cfg) = self.inner.upgrade().map(|i| (i.backoff_min, i.backoff_max)) else {
            return;
        };
        let mut backoff = Backoff::new(cfg.0, cfg.1);
        // The profile stream lives as long as this task: dropping `_alive` stops it.
        let (_alive, alive) = tokio::sync::oneshot::channel::<()>();
        self.spawn_profile(alive);
        loop {
            match self.stream_once(&mut backoff).await {
                control::StreamEnd::Refused => {
                    tracing::debug!(target = %self.target, "discovery rejected the target");
                    let _ = self.rejected.send(true);
                    if let Some(inner) = self.inner.upgrade() {
                        let mut targets = lock(&inner.targets);
                        let now = tokio::time::Instant::now();
                        targets.insert(self.target.clone(), Entry::Rejected(now));
                        control::sweep_expired(&mut targets, now, inner.idle_timeout, rejected_at);
                    }
                    return;
                }
                control::StreamEnd::Idle => return,
                control::StreamEnd::Retry => backoff.sleep().await,
            }
        }
    }

    /// One `Destination.Get` stream, from request to error or end.
    async fn stream_once(&mut self, backoff: &mut Backoff) -> control::StreamEnd {
        let Some(req) = self.request() else {
            return control::StreamEnd::Idle;
        };
        let mut stream = match self.client.get(req).await {
            Ok(r) => r.into_inner(),
            Err(status) => {
                return control::stream_error(&status, REJECTED_CODES, "discovery", &self.target)
            }
        };
        // The state is rebuilt from the first message of every stream (full resync).
        let mut endpoints: Option<BTreeMap<SocketAddr, Endpoint>> = None;
        let mut exists = false;
        let idle_check = self.idle_check_interval();
        let mut idle = control::IdleClock::default();
        loop {
            let update = match control::next_unless_idle(
                &mut stream,
                idle_check,
                || self.is_idle(&mut idle),
                REJECTED_CODES,
                "discovery",
                &self.target,
            )
            .await
            {
                Ok(u) => u,
                Err(end) => return end,
            };
            if let Some(inner) = self.inner.upgrade() {
                inner
                    .ready
                    .send_if_modified(|r| !std::mem::replace(r, true));
            }
            backoff.reset();
            let set = endpoints.get_or_insert_with(BTreeMap::new);
            match update.update {
                Some(update::Update::Add(add)) => {
                    exists = true;
                    for wa in add.addrs {
                        if let Some(ep) = endpoint(wa, &add.metric_labels) {
                            set.insert(ep.addr, ep);
                        }
                    }
                }
                Some(update::Update::Remove(remove)) => {
                    for a in remove.addrs {
                        if let Ok(addr) = SocketAddr::try_from(a) {
                            set.remove(&addr);
                        }
                    }
                }
                Some(update::Update::NoEndpoints(ne)) => {
                    exists = ne.exists;
                    set.clear();
                }
                None => continue,
            }
            self.publish(set, exists);
        }
    }

    fn idle_check_interval(&self) -> Duration {
        control::idle_check_interval(
            self.inner
                .upgrade()
                .map_or(Duration::from_secs(2), |i| i.idle_timeout),
        )
    }

    /// Idle = no receivers for a whole idle timeout. Removal happens under the targets lock, so a
    /// concurrent `resolve` either subscribed before (not idle) or finds no entry (starts afresh).
    fn is_idle(&self, clock: &mut control::IdleClock) -> bool {
        let Some(inner) = self.inner.upgrade() else {
            return true;
        };
        let receivers = || self.tx.receiver_count();
        let idle = control::remove_if_idle(
            &inner.targets,
            &self.target,
            clock,
            receivers,
            inner.idle_timeout,
        );
        if idle {
            tracing::debug!(target = %self.target, "dropping idle discovery target");
        }
        idle
    }

    fn publish(&self, set: &BTreeMap<SocketAddr, Endpoint>, exists: bool) {
        let profile = lock(&self.profile).clone();
        let endpoints: Vec<Endpoint> = set.values().cloned().collect();
        let opaque = profile.opaque
            || (!endpoints.is_empty() && endpoints.iter().all(|e| e.hint == ProtocolHint::Opaque));
        self.tx.send_replace(EndpointSet {
            resolved: true,
            exists,
            opaque,
            fqn: profile.fqn,
            endpoints,
        });
    }

    /// `GetProfile` once per target: learns `opaque_protocol` and the FQN without delaying the
    /// endpoint answer. Rejections and errors just leave the profile empty.
    fn spawn_profile(&self, mut alive: tokio::sync::oneshot::Receiver<()>) {
        let Some(req) = self.request() else { return };
        let mut client = self.client.clone();
        let profile = self.profile.clone();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let Ok(resp) = client.get_profile(req).await else {
                return;
            };
            let mut stream = resp.into_inner();
            loop {
                let msg = tokio::select! {
                    m = stream.message() => m,
                    // Stop when the endpoint task is gone (rejected or idle).
                    _ = &mut alive => return,
                };
                let Ok(Some(p)) = msg else { return };
                let info = ProfileInfo {
                    opaque: p.opaque_protocol,
                    fqn: Some(p.fully_qualified_name.trim_end_matches('.').to_string())
                        .filter(|f| !f.is_empty()),
                };
                *lock(&profile) = info.clone();
                tx.send_if_modified(|s| {
                    let opaque = info.opaque
                        || (!s.endpoints.is_empty()
                            && s.endpoints.iter().all(|e| e.hint == ProtocolHint::Opaque));
                    let changed = s.opaque != opaque || s.fqn != info.fqn;
                    s.opaque = opaque;
                    s.fqn = info.fqn.clone();
                    // Don't wake waiters for a profile that arrives before any endpoint answer.
                    changed && s.resolved
                });
            }
        });
    }
}

/// One endpoint from a `WeightedAddr` (also a policy's `Forward` backend); `None` without a
/// usable address.
pub(crate) fn endpoint(
    wa: api::WeightedAddr,
    set_labels: &HashMap<String, String>,
) -> Option<Endpoint> {
    let addr = SocketAddr::try_from(wa.addr?).ok()?;
    let (protocol, opaque_transport) = wa
        .protocol_hint
        .map_or((None, None), |h| (h.protocol, h.opaque_transport));
    let hint = match protocol {
        Some(protocol_hint::Protocol::H2(_)) => ProtocolHint::H2,
        Some(protocol_hint::Protocol::Opaque(_)) => ProtocolHint::Opaque,
        None => ProtocolHint::Unknown,
    };
    // A port that does not fit is not a port: ignore the hint (plain mTLS to the endpoint).
    let opaque_transport_port = opaque_transport
        .and_then(|t| u16::try_from(t.inbound_port).ok())
        .filter(|p| *p != 0);
    let identity = wa.tls_identity.and_then(|t| match t.strategy {
        Some(tls_identity::Strategy::DnsLikeIdentity(d)) => Some(d.name),
        Some(tls_identity::Strategy::UriLikeIdentity(u)) => Some(u.uri),
        None => None,
    });
    let authority_override = wa.authority_override.and_then(|o| {
        let parsed =
            AuthorityOverride::parse(&o.authority_override, identity.as_deref().unwrap_or(""));
        if parsed.is_none() {
            tracing::info!(%addr, authority_override = o.authority_override, "ignoring an authority override that is not host:port");
        }
        parsed.map(Arc::new)
    });
    let mut labels: BTreeMap<String, String> = set_labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    labels.extend(wa.metric_labels);
    Some(Endpoint {
        addr,
        weight: wa.weight,
        hint,
        identity: identity.map(Arc::from),
        opaque_transport_port,
        authority_override,
        labels: Arc::new(labels),
    })
}

fn rejected_at(e: &Entry) -> Option<tokio::time::Instant> {
    match e {
        Entry::Rejected(at) => Some(*at),
        Entry::Active { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `protocol_hint.opaque_transport.inbound_port` reaches the endpoint; 0 or a number past
    /// 65535 is no port.
    #[test]
    fn opaque_transport_port_comes_from_the_protocol_hint() {
        let wa = |inbound_port: Option<u32>| api::WeightedAddr {
            addr: Some(SocketAddr::from(([198, 18, 0, 2], 8080)).into()),
            weight: 1,
            protocol_hint: Some(api::ProtocolHint {
                protocol: Some(protocol_hint::Protocol::Opaque(protocol_hint::Opaque {})),
                opaque_transport: inbound_port
                    .map(|inbound_port| protocol_hint::OpaqueTransport { inbound_port }),
            }),
            ..Default::default()
        };
        let port = |p| {
            endpoint(wa(p), &HashMap::new())
                .expect("endpoint")
                .opaque_transport_port
        };
        assert_eq!(port(Some(4143)), Some(4143));
        assert_eq!(port(None), None);
        assert_eq!(port(Some(0)), None);
        assert_eq!(port(Some(70_000)), None);
        let ep = endpoint(wa(Some(4143)), &HashMap::new()).expect("endpoint");
        assert_eq!(ep.hint, ProtocolHint::Opaque);
        assert_eq!(ep.addr, SocketAddr::from(([198, 18, 0, 2], 8080)));
    }

    /// `authority_override.authority_override` reaches the endpoint when it is `host:port`.
    #[test]
    fn authority_override_comes_from_the_weighted_addr() {
        let wa = |o: &str| api::WeightedAddr {
            addr: Some(SocketAddr::from(([198, 18, 0, 2], 4143)).into()),
            weight: 1,
            authority_override: Some(api::AuthorityOverride {
                authority_override: o.into(),
            }),
            ..Default::default()
        };
        let parsed = |o| {
            endpoint(wa(o), &HashMap::new())
                .expect("endpoint")
                .authority_override
                .map(|a| a.to_string())
        };
        assert_eq!(
            parsed("web.default.svc.cluster.local:8080").as_deref(),
            Some("web.default.svc.cluster.local:8080")
        );
        assert_eq!(
            parsed("Web.Default.svc.cluster.local.:80").as_deref(),
            Some("web.default.svc.cluster.local:80")
        );
        for bad in [
            "web.default.svc.cluster.local",
            "10.0.0.1:80",
            ":80",
            "web:0",
            "a b:80",
            "",
        ] {
            assert_eq!(parsed(bad), None, "{bad:?}");
        }
        let plain = api::WeightedAddr {
            authority_override: None,
            ..wa("x:1")
        };
        assert_eq!(
            endpoint(plain, &HashMap::new()).unwrap().authority_override,
            None
        );
    }

    #[test]
    fn names_under_suffixes() {
        let suffixes = ["svc.cluster.local.".to_string()];
        assert!(under_suffixes(&suffixes, "web.ns.svc.cluster.local"));
        assert!(under_suffixes(&suffixes, "svc.cluster.local"));
        assert!(!under_suffixes(&suffixes, "web.ns.svc.cluster.localx"));
        assert!(!under_suffixes(&suffixes, "web.ns.xsvc.cluster.local"));
        assert!(!under_suffixes(&suffixes, "example.com"));
        assert!(!under_suffixes(&[], "web.ns.svc.cluster.local"));
        assert!(under_suffixes(&[".".to_string()], "example.com"));
    }

    fn insert_rejected(targets: &mut HashMap<Target, Entry>, n: u16, at: tokio::time::Instant) {
        for port in 0..n {
            let addr = SocketAddr::from(([198, 18, 0, 1], port));
            targets.insert(Target::Addr(addr), Entry::Rejected(at));
        }
    }

    #[test]
    fn old_rejections_are_swept_once_the_map_is_large() {
        let ttl = Duration::from_secs(60);
        let now = tokio::time::Instant::now() + Duration::from_secs(3600);
        let mut targets = HashMap::new();
        insert_rejected(&mut targets, 2000, now - ttl * 2);
        let fresh = Target::Addr(SocketAddr::from(([198, 18, 0, 2], 80)));
        targets.insert(fresh.clone(), Entry::Rejected(now));
        control::sweep_expired(&mut targets, now, ttl, rejected_at);
        assert_eq!(targets.len(), 1);
        assert!(targets.contains_key(&fresh));
    }

    #[test]
    fn small_maps_are_left_alone() {
        let ttl = Duration::from_secs(60);
        let now = tokio::time::Instant::now() + Duration::from_secs(3600);
        let mut targets = HashMap::new();
        insert_rejected(&mut targets, 10, now - ttl * 2);
        control::sweep_expired(&mut targets, now, ttl, rejected_at);
        assert_eq!(targets.len(), 10);
    }
}
