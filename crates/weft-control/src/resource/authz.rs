//! Linkerd's inbound authorization resources, with Linkerd's YAML: `Server`,
//! `AuthorizationPolicy`, `MeshTLSAuthentication` and `NetworkAuthentication`
//! (`policy.linkerd.io`), and core `Namespace` documents (for their
//! `config.linkerd.io/default-inbound-policy` annotation), validated into typed values. Which
//! Server decides a workload port, and what each policy authorizes once its references are
//! resolved, is the index's business (`index::inbound`).
//!
//! Two Weft-specific readings of the Kubernetes shapes:
//! - In Weft's store every workload is an `ExternalWorkload` standing for a pod, so a Server's
//!   `podSelector` and `externalWorkloadSelector` both select the workloads of its namespace.
//! - A workload's name is its service account: a `ServiceAccount` reference names the identity
//!   `{sa}.{ns}.serviceaccount.identity.{control namespace}.{trust domain}`, derived as a
//!   workload's default `server_name` is. Identities are resolved here, at validation, so the
//!   index needs no [`Defaults`].

use super::route::POLICY_GROUP;
use super::route::{creation_timestamp, list, object, opt_str, RouteKind, GATEWAY_GROUP};
use super::{dns_label, port_name, req_str, spec_of, string_map, type_name, Ctx, Defaults, Meta};
use super::{ExternalWorkload, Resource};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Annotation on a `Namespace` or an `ExternalWorkload`: the default inbound policy of its ports
/// that no Server selects (the workload's wins over its namespace's).
pub const DEFAULT_INBOUND_POLICY_ANNOTATION: &str = "config.linkerd.io/default-inbound-policy";
/// Linkerd's cluster networks plus 198.18.0.0/15, where `weft run` puts its pods.
pub const DEFAULT_CLUSTER_NETWORKS: &str =
    "10.0.0.0/8,100.64.0.0/10,172.16.0.0/12,192.168.0.0/16,198.18.0.0/15,fd00::/8";

pub const SERVER_KIND: &str = "Server";
pub const AUTHORIZATION_POLICY_KIND: &str = "AuthorizationPolicy";
pub const MESH_TLS_KIND: &str = "MeshTLSAuthentication";
pub const NETWORK_KIND: &str = "NetworkAuthentication";
pub const NAMESPACE_KIND: &str = "Namespace";

/// The default inbound policies (Linkerd's names), for ports no Server selects and for a
/// Server's `accessPolicy`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DefaultPolicy {
    #[default]
    AllUnauthenticated,
    AllAuthenticated,
    ClusterUnauthenticated,
    ClusterAuthenticated,
    Deny,
    /// Allows everything, but the proxy logs and labels what it allows.
    Audit,
}

impl DefaultPolicy {
    pub const ALL: [DefaultPolicy; 6] = [
        DefaultPolicy::AllUnauthenticated,
        DefaultPolicy::AllAuthenticated,
        DefaultPolicy::ClusterUnauthenticated,
        DefaultPolicy::ClusterAuthenticated,
        DefaultPolicy::Deny,
        DefaultPolicy::Audit,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DefaultPolicy::AllUnauthenticated => "all-unauthenticated",
            DefaultPolicy::AllAuthenticated => "all-authenticated",
            DefaultPolicy::ClusterUnauthenticated => "cluster-unauthenticated",
            DefaultPolicy::ClusterAuthenticated => "cluster-authenticated",
            DefaultPolicy::Deny => "deny",
            DefaultPolicy::Audit => "audit",
        }
    }

    /// The valid value of [`DEFAULT_INBOUND_POLICY_ANNOTATION`] in `annotations`, if any
    /// (validation has reported an invalid one).
    pub fn from_annotations(annotations: &BTreeMap<String, String>) -> Option<DefaultPolicy> {
        annotations
            .get(DEFAULT_INBOUND_POLICY_ANNOTATION)
            .and_then(|v| v.parse().ok())
    }
}

impl std::str::FromStr for DefaultPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        DefaultPolicy::ALL
            .into_iter()
            .find(|p| p.name() == s.trim())
            .ok_or_else(|| {
                let names: Vec<_> = DefaultPolicy::ALL.iter().map(|p| p.name()).collect();
                format!("must be one of {}, got {s:?}", names.join(", "))
            })
    }
}

impl std::fmt::Display for DefaultPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// An IPv4 or IPv6 network. Host bits are cleared on parsing (`10.1.2.3/8` is `10.0.0.0/8`);
/// a bare address is a /32 (/128).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// `addr/prefix`, host bits cleared; `None` if the prefix is too long for the family.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Cidr> {
        let addr = match addr {
            IpAddr::V4(a) if prefix <= 32 => {
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) if prefix <= 128 => {
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
            }
            _ => return None,
        };
        Some(Cidr { addr, prefix })
    }

    /// `0.0.0.0/0` and `::/0`: every address.
    pub fn everything() -> [Cidr; 2] {
        [
            Cidr::new(Ipv4Addr::UNSPECIFIED.into(), 0).expect("valid"),
            Cidr::new(Ipv6Addr::UNSPECIFIED.into(), 0).expect("valid"),
        ]
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        Cidr::new(ip, self.prefix).is_some_and(|c| c.addr == self.addr)
    }

    /// Whether `other` lies inside this network.
    pub fn covers(&self, other: &Cidr) -> bool {
        other.prefix >= self.prefix && self.contains(other.addr)
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let bad = || format!("not a CIDR (like 10.0.0.0/8 or fd00::/8): {s:?}");
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let prefix = match prefix {
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u8>().map_err(|_| bad())?
            }
            Some(_) => return Err(bad()),
            None if addr.is_ipv4() => 32,
            None => 128,
        };
        Cidr::new(addr, prefix).ok_or_else(bad)
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Parses a comma-separated list of CIDRs (`--cluster-networks`), reporting every bad entry.
pub fn parse_cidr_list(s: &str) -> Result<Vec<Cidr>, String> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.parse() {
            Ok(c) => out.push(c),
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return Err(errors.join("; "));
    }
    if out.is_empty() {
        return Err("must list at least one CIDR".into());
    }
    Ok(out)
}

/// A Kubernetes label selector. Empty selects every workload (of the Server's namespace).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector {
    pub match_labels: BTreeMap<String, String>,
    pub match_expressions: Vec<Requirement>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requirement {
    pub key: String,
    pub operator: Operator,
    /// Non-empty for `In`/`NotIn`, empty otherwise (validated).
    pub values: BTreeSet<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

impl LabelSelector {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| {
                let value = labels.get(&r.key);
                match r.operator {
                    Operator::In => value.is_some_and(|v| r.values.contains(v)),
                    // Kubernetes: NotIn also matches objects without the label.
                    Operator::NotIn => value.is_none_or(|v| !r.values.contains(v)),
                    Operator::Exists => value.is_some(),
                    Operator::DoesNotExist => value.is_none(),
                }
            })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerPort {
    Number(u16),
    /// Resolved against the workload's named ports.
    Name(String),
}

/// `spec.proxyProtocol`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ProxyProtocol {
    /// Detect HTTP, else opaque.
    #[default]
    Unknown,
    Http1,
    Http2,
    Grpc,
    Opaque,
    Tls,
}

impl ProxyProtocol {
    const NAMES: [(&'static str, ProxyProtocol); 6] = [
        ("unknown", ProxyProtocol::Unknown),
        ("HTTP/1", ProxyProtocol::Http1),
        ("HTTP/2", ProxyProtocol::Http2),
        ("gRPC", ProxyProtocol::Grpc),
        ("opaque", ProxyProtocol::Opaque),
        ("TLS", ProxyProtocol::Tls),
    ];
}

/// A validated `Server`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Server {
    pub name: String,
    pub namespace: String,
    /// Unix seconds of `metadata.creationTimestamp`; in a [`super::State`] a Server without one
    /// carries the time the store first saw it (the oldest Server wins a contested port).
    pub created: Option<i64>,
    /// `podSelector` or `externalWorkloadSelector` (they select the same workloads in Weft).
    pub selector: LabelSelector,
    pub port: ServerPort,
    pub protocol: ProxyProtocol,
    /// `spec.accessPolicy` (v1beta3); `Deny` when absent and for older versions.
    pub access_policy: DefaultPolicy,
}

impl Server {
    /// The port of `w` this Server selects, if it selects `w` at all.
    pub fn port_of(&self, w: &ExternalWorkload) -> Option<u16> {
        if w.namespace != self.namespace || !self.selector.matches(&w.labels) {
            return None;
        }
        match &self.port {
            ServerPort::Number(n) => Some(*n),
            ServerPort::Name(name) => w
                .ports
                .iter()
                .find(|p| p.name.as_deref() == Some(name))
                .map(|p| p.port),
        }
    }

    /// The precedence of Servers selecting the same workload port: oldest first, then name.
    pub fn precedence(&self) -> (i64, &str) {
        (self.created.unwrap_or(i64::MAX), &self.name)
    }
}

/// What an `AuthorizationPolicy` applies to (always in its own namespace).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PolicyTarget {
    /// A `policy.linkerd.io` `Server` of this name.
    Server(String),
    /// An `HTTPRoute` or `GRPCRoute` of this kind and name.
    Route(RouteKind, String),
    /// Every Server of the policy's namespace.
    Namespace,
}

/// `spec.requiredAuthenticationRefs[]`, namespace defaulted to the policy's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthnRef {
    MeshTls {
        namespace: String,
        name: String,
    },
    Network {
        namespace: String,
        name: String,
    },
    /// A core `ServiceAccount`: exactly this identity.
    ServiceAccount {
        namespace: String,
        name: String,
        identity: String,
    },
}

/// A validated `AuthorizationPolicy`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthorizationPolicy {
    pub name: String,
    pub namespace: String,
    pub target: PolicyTarget,
    /// At most one MeshTLS-or-ServiceAccount and one Network ref (validated). Empty: any client.
    pub authentications: Vec<AuthnRef>,
}

/// A validated `MeshTLSAuthentication`, its identity references resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeshTlsAuthentication {
    pub name: String,
    pub namespace: String,
    /// Exact identities.
    pub identities: Vec<String>,
    /// Identity suffixes without the leading `*.` (`ns.serviceaccount.identity.weft.cluster.local`);
    /// the empty string matches any authenticated identity (`*`).
    pub suffixes: Vec<String>,
}

/// One `spec.networks[]` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Network {
    pub net: Cidr,
    /// Each inside `net` (validated).
    pub except: Vec<Cidr>,
}

/// A validated `NetworkAuthentication`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkAuthentication {
    pub name: String,
    pub namespace: String,
    pub networks: Vec<Network>,
}

/// A core `Namespace` document: only its annotations matter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Namespace {
    pub name: String,
    pub annotations: BTreeMap<String, String>,
}

impl Namespace {
    pub fn default_policy(&self) -> Option<DefaultPolicy> {
        DefaultPolicy::from_annotations(&self.annotations)
    }
}

/// Reports an invalid [`DEFAULT_INBOUND_POLICY_ANNOTATION`].
pub(super) fn check_default_policy_annotation(
    annotations: &BTreeMap<String, String>,
    ctx: &mut Ctx,
) {
    if let Some(v) = annotations.get(DEFAULT_INBOUND_POLICY_ANNOTATION) {
        if let Err(e) = v.parse::<DefaultPolicy>() {
            ctx.err(
                &format!("metadata.annotations[{DEFAULT_INBOUND_POLICY_ANNOTATION:?}]"),
                e,
            );
        }
    }
}

/// Whether `kind` is one of this module's kinds.
pub(crate) fn is_kind(kind: &str) -> bool {
    [
        SERVER_KIND,
        AUTHORIZATION_POLICY_KIND,
        MESH_TLS_KIND,
        NETWORK_KIND,
        NAMESPACE_KIND,
    ]
    .contains(&kind)
}

/// Validates a document of one of this module's kinds ([`is_kind`]).
pub(super) fn validate(
    kind: &str,
    api_version: Option<&str>,
    obj: &Map<String, Value>,
    d: &Defaults,
    ctx: &mut Ctx,
) -> Option<Resource> {
    let group = if kind == NAMESPACE_KIND {
        ""
    } else {
        POLICY_GROUP
    };
    let row = super::kinds::find(group, kind)?;
    if let Some(Err(e)) = api_version.map(|av| row.check_api_version(av)) {
        ctx.err("apiVersion", e);
    }
    let meta = Meta::parse(obj, ctx);
    if kind == NAMESPACE_KIND {
        let meta = meta?;
        check_default_policy_annotation(&meta.annotations, ctx);
        return Some(Resource::Namespace(Namespace {
            name: meta.name,
            annotations: meta.annotations,
        }));
    }
    let created = creation_timestamp(obj, ctx);
    let spec = spec_of(obj, ctx);
    let (meta, spec) = (meta?, spec?);
    match kind {
        SERVER_KIND => {
            let v1beta3 = api_version == Some("policy.linkerd.io/v1beta3");
            server(meta, created, spec, v1beta3, ctx).map(Resource::Server)
        }
        AUTHORIZATION_POLICY_KIND => {
            authorization_policy(meta, spec, d, ctx).map(Resource::AuthorizationPolicy)
        }
        MESH_TLS_KIND => mesh_tls(meta, spec, d, ctx).map(Resource::MeshTls),
        _ => network_authentication(meta, spec, ctx).map(Resource::NetworkAuthentication),
    }
}

fn server(
    meta: Meta,
    created: Option<i64>,
    spec: &Map<String, Value>,
    v1beta3: bool,
    ctx: &mut Ctx,
) -> Option<Server> {
    let present = |k: &str| spec.get(k).is_some_and(|v| !v.is_null());
    let selector = match (present("podSelector"), present("externalWorkloadSelector")) {
        (true, true) => {
            ctx.err(
                "spec.externalWorkloadSelector",
                "cannot be set together with spec.podSelector (set exactly one)",
            );
            None
        }
        (false, false) => {
            ctx.err(
                "spec.podSelector",
                "required (or spec.externalWorkloadSelector)",
            );
            None
        }
        (true, false) => label_selector(&spec["podSelector"], "spec.podSelector", ctx),
        (false, true) => label_selector(
            &spec["externalWorkloadSelector"],
            "spec.externalWorkloadSelector",
            ctx,
        ),
    };
    let port = match spec.get("port") {
        None | Some(Value::Null) => {
            ctx.err("spec.port", "required");
            None
        }
        Some(Value::String(s)) => match port_name(s) {
            Ok(()) => Some(ServerPort::Name(s.clone())),
            Err(e) => {
                ctx.err("spec.port", e);
                None
            }
        },
        Some(Value::Number(n)) => match n.as_u64() {
            Some(p @ 1..=65535) => Some(ServerPort::Number(p as u16)),
            _ => {
                ctx.err(
                    "spec.port",
                    format!("must be 1..65535 or a port name, got {n}"),
                );
                None
            }
        },
        Some(other) => {
            ctx.err(
                "spec.port",
                format!("must be 1..65535 or a port name, got {}", type_name(other)),
            );
            None
        }
    };
    let protocol = match spec.get("proxyProtocol") {
        None | Some(Value::Null) => ProxyProtocol::Unknown,
        Some(v) => match ProxyProtocol::NAMES
            .iter()
            .find(|(n, _)| v.as_str() == Some(n))
        {
            Some((_, p)) => *p,
            None => {
                ctx.err(
                    "spec.proxyProtocol",
                    format!("must be one of unknown, HTTP/1, HTTP/2, gRPC, opaque, TLS; got {v}"),
                );
                ProxyProtocol::Unknown
            }
        },
    };
    let access_policy = match spec.get("accessPolicy") {
        None | Some(Value::Null) => DefaultPolicy::Deny,
        Some(_) if !v1beta3 => {
            ctx.err(
                "spec.accessPolicy",
                "requires apiVersion policy.linkerd.io/v1beta3",
            );
            DefaultPolicy::Deny
        }
        Some(v) => match v.as_str().map(str::parse::<DefaultPolicy>) {
            Some(Ok(p)) => p,
            Some(Err(e)) => {
                ctx.err("spec.accessPolicy", e);
                DefaultPolicy::Deny
            }
            None => {
                ctx.err(
                    "spec.accessPolicy",
                    format!("expected a string, got {}", type_name(v)),
                );
                DefaultPolicy::Deny
            }
        },
    };
    Some(Server {
        name: meta.name,
        namespace: meta.namespace,
        created,
        selector: selector?,
        port: port?,
        protocol,
        access_policy,
    })
}

pub(super) fn label_selector(v: &Value, f: &str, ctx: &mut Ctx) -> Option<LabelSelector> {
    let m = object(v, f, ctx)?;
    let match_labels = string_map(m.get("matchLabels"), &format!("{f}.matchLabels"), ctx);
    let mut match_expressions = Vec::new();
    let field = format!("{f}.matchExpressions");
    for (i, item) in list(m.get("matchExpressions"), &field, ctx) {
        let f = format!("{field}[{i}]");
        let Some(e) = object(item, &f, ctx) else {
            continue;
        };
        let key = req_str(e, "key", &format!("{f}.key"), ctx);
        let operator = match e.get("operator").and_then(Value::as_str) {
            Some("In") => Some(Operator::In),
            Some("NotIn") => Some(Operator::NotIn),
            Some("Exists") => Some(Operator::Exists),
            Some("DoesNotExist") => Some(Operator::DoesNotExist),
            _ => {
                let got = e.get("operator").unwrap_or(&Value::Null);
                ctx.err(
                    &format!("{f}.operator"),
                    format!("must be one of In, NotIn, Exists, DoesNotExist; got {got}"),
                );
                None
            }
        };
        let mut values = BTreeSet::new();
        for (j, v) in list(e.get("values"), &format!("{f}.values"), ctx) {
            match v {
                Value::String(s) => {
                    values.insert(s.clone());
                }
                Value::Number(n) => {
                    values.insert(n.to_string());
                }
                Value::Bool(b) => {
                    values.insert(b.to_string());
                }
                other => ctx.err(
                    &format!("{f}.values[{j}]"),
                    format!("expected a string, got {}", type_name(other)),
                ),
            }
        }
        match operator {
            Some(Operator::In | Operator::NotIn) if values.is_empty() => ctx.err(
                &format!("{f}.values"),
                "must list at least one value for operator In or NotIn",
            ),
            Some(Operator::Exists | Operator::DoesNotExist) if !values.is_empty() => ctx.err(
                &format!("{f}.values"),
                "must be empty for operator Exists or DoesNotExist",
            ),
            _ => {}
        }
        if let (Some(key), Some(operator)) = (key, operator) {
            match_expressions.push(Requirement {
                key,
                operator,
                values,
            });
        }
    }
    Some(LabelSelector {
        match_labels,
        match_expressions,
    })
}

fn is_core(group: &str) -> bool {
    group.is_empty() || group.eq_ignore_ascii_case("core")
}

fn identity_suffix(namespace: &str, d: &Defaults) -> String {
    format!(
        "{namespace}.serviceaccount.identity.{}.{}",
        d.control_namespace, d.trust_domain
    )
}

pub(super) fn service_account_identity(name: &str, namespace: &str, d: &Defaults) -> String {
    format!("{name}.{}", identity_suffix(namespace, d))
}

fn authorization_policy(
    meta: Meta,
    spec: &Map<String, Value>,
    d: &Defaults,
    ctx: &mut Ctx,
) -> Option<AuthorizationPolicy> {
    let target = match spec.get("targetRef") {
        None | Some(Value::Null) => {
            ctx.err("spec.targetRef", "required");
            None
        }
        Some(v) => target_ref(v, &meta.namespace, ctx),
    };
    let mut authentications: Vec<(usize, AuthnRef)> = Vec::new();
    let field = "spec.requiredAuthenticationRefs";
    for (i, item) in list(spec.get("requiredAuthenticationRefs"), field, ctx) {
        let f = format!("{field}[{i}]");
        if let Some(r) = authn_ref(item, &f, &meta.namespace, d, ctx) {
            authentications.push((i, r));
        }
    }
    // Linkerd's rule: one identity requirement and one network requirement at most.
    let mut identity_ref = None;
    let mut network_ref = None;
    for (i, r) in &authentications {
        let (slot, what) = match r {
            AuthnRef::Network { .. } => (&mut network_ref, "NetworkAuthentication"),
            _ => (&mut identity_ref, "MeshTLSAuthentication or ServiceAccount"),
        };
        match slot {
            Some(first) => ctx.err(
                &format!("{field}[{i}]"),
                format!("at most one {what} reference is allowed (the first is {field}[{first}])"),
            ),
            None => *slot = Some(*i),
        }
    }
    Some(AuthorizationPolicy {
        name: meta.name,
        namespace: meta.namespace,
        target: target?,
        authentications: authentications.into_iter().map(|(_, r)| r).collect(),
    })
}

fn target_ref(v: &Value, namespace: &str, ctx: &mut Ctx) -> Option<PolicyTarget> {
    let f = "spec.targetRef";
    let m = object(v, f, ctx)?;
    let group = opt_str(m, "group", "spec.targetRef.group", ctx).unwrap_or_default();
    let kind = req_str(m, "kind", "spec.targetRef.kind", ctx);
    let name = req_str(m, "name", "spec.targetRef.name", ctx);
    let (kind, name) = (kind?, name?);
    let g = group.to_ascii_lowercase();
    let k = kind.to_ascii_lowercase();
    let target = match (g.as_str(), k.as_str()) {
        (POLICY_GROUP, "server") => PolicyTarget::Server(name),
        (POLICY_GROUP, "httproute") => PolicyTarget::Route(RouteKind::LinkerdHttp, name),
        (GATEWAY_GROUP, "httproute") => PolicyTarget::Route(RouteKind::GatewayHttp, name),
        (GATEWAY_GROUP, "grpcroute") => PolicyTarget::Route(RouteKind::Grpc, name),
        (g, "namespace") if is_core(g) => {
            if name != namespace {
                ctx.err(
                    "spec.targetRef.name",
                    format!("a Namespace target must be the policy's own namespace {namespace:?}, got {name:?}"),
                );
                return None;
            }
            PolicyTarget::Namespace
        }
        _ => {
            ctx.err(
                "spec.targetRef",
                format!(
                    "must be policy.linkerd.io/Server, an HTTPRoute (policy.linkerd.io or gateway.networking.k8s.io), a gateway.networking.k8s.io/GRPCRoute or a core Namespace; got {}/{kind}",
                    if group.is_empty() { "core" } else { &group }
                ),
            );
            return None;
        }
    };
    Some(target)
}

fn authn_ref(v: &Value, f: &str, policy_ns: &str, d: &Defaults, ctx: &mut Ctx) -> Option<AuthnRef> {
    let m = object(v, f, ctx)?;
    let group = opt_str(m, "group", &format!("{f}.group"), ctx).unwrap_or_default();
    let kind = req_str(m, "kind", &format!("{f}.kind"), ctx);
    let name = req_str(m, "name", &format!("{f}.name"), ctx);
    let namespace =
        opt_str(m, "namespace", &format!("{f}.namespace"), ctx).unwrap_or_else(|| policy_ns.into());
    if let Err(e) = dns_label(&namespace) {
        ctx.err(&format!("{f}.namespace"), e);
        return None;
    }
    let (kind, name) = (kind?, name?);
    let g = group.to_ascii_lowercase();
    let r = match (g.as_str(), kind.to_ascii_lowercase().as_str()) {
        (POLICY_GROUP, "meshtlsauthentication") => AuthnRef::MeshTls { namespace, name },
        (POLICY_GROUP, "networkauthentication") => AuthnRef::Network { namespace, name },
        (g, "serviceaccount") if is_core(g) => {
            if let Err(e) = dns_label(&name) {
                ctx.err(&format!("{f}.name"), e);
                return None;
            }
            AuthnRef::ServiceAccount {
                identity: service_account_identity(&name, &namespace, d),
                namespace,
                name,
            }
        }
        _ => {
            ctx.err(
                &format!("{f}.kind"),
                format!(
                    "must be policy.linkerd.io MeshTLSAuthentication or NetworkAuthentication, or a core ServiceAccount; got {}/{kind}",
                    if group.is_empty() { "core" } else { &group }
                ),
            );
            return None;
        }
    };
    Some(r)
}

fn mesh_tls(
    meta: Meta,
    spec: &Map<String, Value>,
    d: &Defaults,
    ctx: &mut Ctx,
) -> Option<MeshTlsAuthentication> {
    let present = |k: &str| spec.get(k).is_some_and(|v| !v.is_null());
    let mut identities = Vec::new();
    let mut suffixes = Vec::new();
    match (present("identities"), present("identityRefs")) {
        (true, true) => ctx.err(
            "spec.identityRefs",
            "cannot be set together with spec.identities (set exactly one)",
        ),
        (false, false) => ctx.err("spec.identities", "required (or spec.identityRefs)"),
        (true, false) => {
            let items = list(spec.get("identities"), "spec.identities", ctx);
            if items.is_empty() {
                ctx.err("spec.identities", "must list at least one identity");
            }
            for (i, item) in items {
                let f = format!("spec.identities[{i}]");
                match item.as_str() {
                    Some("*") => suffixes.push(String::new()),
                    Some(s) if !s.is_empty() && !s.contains('*') => identities.push(s.to_string()),
                    Some(s)
                        if s.strip_prefix("*.")
                            .is_some_and(|x| !x.is_empty() && !x.contains('*')) =>
                    {
                        suffixes.push(s[2..].to_string())
                    }
                    _ => ctx.err(
                        &f,
                        format!("must be an identity, \"*\" (any) or \"*.SUFFIX\"; got {item}"),
                    ),
                }
            }
        }
        (false, true) => {
            let items = list(spec.get("identityRefs"), "spec.identityRefs", ctx);
            if items.is_empty() {
                ctx.err("spec.identityRefs", "must list at least one reference");
            }
            for (i, item) in items {
                let f = format!("spec.identityRefs[{i}]");
                let Some(m) = object(item, &f, ctx) else {
                    continue;
                };
                let group = opt_str(m, "group", &format!("{f}.group"), ctx).unwrap_or_default();
                let kind = req_str(m, "kind", &format!("{f}.kind"), ctx);
                let name = req_str(m, "name", &format!("{f}.name"), ctx);
                let namespace = opt_str(m, "namespace", &format!("{f}.namespace"), ctx)
                    .unwrap_or_else(|| meta.namespace.clone());
                if !is_core(&group) {
                    ctx.err(
                        &format!("{f}.group"),
                        format!("must be empty or core (ServiceAccount, Namespace), got {group:?}"),
                    );
                    continue;
                }
                let (Some(kind), Some(name)) = (kind, name) else {
                    continue;
                };
                match kind.as_str() {
                    "ServiceAccount" => {
                        if let Err(e) = dns_label(&namespace) {
                            ctx.err(&format!("{f}.namespace"), e);
                        } else if name == "*" {
                            suffixes.push(identity_suffix(&namespace, d));
                        } else if let Err(e) = dns_label(&name) {
                            ctx.err(&format!("{f}.name"), e);
                        } else {
                            identities.push(service_account_identity(&name, &namespace, d));
                        }
                    }
                    "Namespace" => match dns_label(&name) {
                        Ok(()) => suffixes.push(identity_suffix(&name, d)),
                        Err(e) => ctx.err(&format!("{f}.name"), e),
                    },
                    other => ctx.err(
                        &format!("{f}.kind"),
                        format!("must be ServiceAccount or Namespace, got {other:?}"),
                    ),
                }
            }
        }
    }
    Some(MeshTlsAuthentication {
        name: meta.name,
        namespace: meta.namespace,
        identities,
        suffixes,
    })
}

fn network_authentication(
    meta: Meta,
    spec: &Map<String, Value>,
    ctx: &mut Ctx,
) -> Option<NetworkAuthentication> {
    let listed = matches!(spec.get("networks"), Some(Value::Array(items)) if !items.is_empty());
    let networks = networks(spec.get("networks"), "spec.networks", ctx);
    if !listed {
        ctx.err("spec.networks", "must list at least one network");
    }
    Some(NetworkAuthentication {
        name: meta.name,
        namespace: meta.namespace,
        networks,
    })
}

/// A `networks` list (`[{cidr, except?}]`), as `NetworkAuthentication` and `EgressNetwork`
/// write it; each `except` must lie inside its `cidr`.
pub(super) fn networks(v: Option<&Value>, field: &str, ctx: &mut Ctx) -> Vec<Network> {
    let cidr = |v: &Value, f: &str, ctx: &mut Ctx| -> Option<Cidr> {
        match v.as_str().map(str::parse::<Cidr>) {
            Some(Ok(c)) => Some(c),
            Some(Err(e)) => {
                ctx.err(f, e);
                None
            }
            None => {
                ctx.err(f, format!("expected a string, got {}", type_name(v)));
                None
            }
        }
    };
    let mut networks = Vec::new();
    for (i, item) in list(v, field, ctx) {
        let f = format!("{field}[{i}]");
        let Some(m) = object(item, &f, ctx) else {
            continue;
        };
        let net = match m.get("cidr") {
            None | Some(Value::Null) => {
                ctx.err(&format!("{f}.cidr"), "required");
                None
            }
            Some(v) => cidr(v, &format!("{f}.cidr"), ctx),
        };
        let mut except = Vec::new();
        for (j, e) in list(m.get("except"), &format!("{f}.except"), ctx) {
            let fe = format!("{f}.except[{j}]");
            if let Some(c) = cidr(e, &fe, ctx) {
                match net {
                    Some(n) if !n.covers(&c) => {
                        ctx.err(&fe, format!("{c} does not lie inside cidr {n}"))
                    }
                    _ => except.push(c),
                }
            }
        }
        if let Some(net) = net {
            networks.push(Network { net, except });
        }
    }
    networks
}

impl Network {
    /// Inside `net` and outside every `except`.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.net.contains(ip) && !self.except.iter().any(|e| e.contains(ip))
    }
}

#[cfg(test)]
#[path = "authz_tests.rs"]
mod tests;
