//! The resource model: Kubernetes-shaped `Service` and `ExternalWorkload` documents, and the
//! validator that turns raw YAML/JSON documents into checked values.
//!
//! Validation works on `serde_json::Value` (YAML is parsed into it too) so every error can name
//! the exact field path: `FILE: document I: spec.ports[0].port: must be 1..65535, got 70000`.
//! All errors of a document set are collected, not only the first. Routes and the Weft
//! `FaultInjection` filter are in [`route`]; the Linkerd policy annotations in [`policy`]; the
//! inbound authorization resources (`Server`, `AuthorizationPolicy`, ...) in [`authz`]; the
//! `HTTPLocalRateLimitPolicy` in [`ratelimit`]; the `EgressNetwork` in [`egress`]; the
//! multicluster `Link` and its credentials `Secret` in [`multicluster`]. Every kind's names,
//! group and versions are in one table, [`kinds`].

pub mod authz;
pub mod egress;
pub mod kinds;
pub mod multicluster;
pub mod policy;
pub mod ratelimit;
pub mod route;
pub mod workload_status;

use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

pub const SERVICE_API_VERSION: &str = "v1";
pub const WORKLOAD_API_VERSION: &str = "workload.linkerd.io/v1beta1";
/// Annotation listing opaque ports (`"6379,5432-5433"`) on a Service or an ExternalWorkload.
pub const OPAQUE_PORTS_ANNOTATION: &str = "config.linkerd.io/opaque-ports";
/// Annotation on an ExternalWorkload (Linkerd's proxy-config name): the port of its sidecar's
/// inbound listener on the workload IP. Set, it makes the workload's opaque endpoints carry
/// `opaque_transport` (peers connect there with the transport header); see `docs/control-plane.md`.
pub const INBOUND_PORT_ANNOTATION: &str = "config.linkerd.io/inbound-port";
/// The ExternalWorkload port naming its proxy's admin server (`/metrics`) on the workload's first
/// IP: Linkerd's name for the proxy container's admin port. A workload with it is meshed, and
/// the control plane scrapes it (`docs/observability.md`).
pub const ADMIN_PORT_NAME: &str = "linkerd-admin";
/// The ExternalWorkload port naming its proxy's tap server on the workload's first IP (Linkerd's
/// name for the proxy container's tap port): `GET /v1/tap/...` dials it (`docs/observability.md`).
pub const TAP_PORT_NAME: &str = "linkerd-tap";
/// The Service port `appProtocol`s Weft acts on (any other is refused in a document).
pub const APP_PROTOCOLS: &[&str] = &["http", "kubernetes.io/h2c", "grpc", "tcp", "opaque"];

/// The identity allowed to tap proxies, which the control plane presents when it dials their tap
/// servers: `tap.NS.serviceaccount.identity.NS.TD` with NS the control namespace (Linkerd's
/// `tap.linkerd-viz.serviceaccount.identity.linkerd.cluster.local`). Sidecars get it as
/// `WEFT_PROXY_TAP_SVC_NAME`.
pub fn tap_identity(d: &Defaults) -> String {
    let ns = &d.control_namespace;
    format!("tap.{ns}.serviceaccount.identity.{ns}.{}", d.trust_domain)
}

/// The control plane's own identity, which its gRPC server (the proxy API) proves to proxies:
/// `weft-control.<control-ns>.serviceaccount.identity.<control-ns>.<trust-domain>` (Linkerd's
/// `linkerd-destination`/`linkerd-identity` service accounts, as one).
pub fn control_identity(d: &Defaults) -> String {
    let ns = &d.control_namespace;
    format!(
        "weft-control.{ns}.serviceaccount.identity.{ns}.{}",
        d.trust_domain
    )
}

/// Values the validator needs to derive defaults (the workload's mesh identity).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Defaults {
    pub trust_domain: String,
    pub control_namespace: String,
}

/// The control plane's defaults: trust domain `cluster.local`, control namespace `weft`.
impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            trust_domain: "cluster.local".into(),
            control_namespace: "weft".into(),
        }
    }
}

/// A validated `Service`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    pub name: String,
    pub namespace: String,
    /// `metadata.labels` (what the multicluster export reads).
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub selector: BTreeMap<String, String>,
    pub cluster_ip: Option<IpAddr>,
    pub ports: Vec<ServicePort>,
    /// Service ports named by the opaque-ports annotation.
    pub opaque_ports: BTreeSet<u16>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    pub name: Option<String>,
    pub port: u16,
    pub target_port: TargetPort,
    pub app_protocol: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetPort {
    Number(u16),
    Name(String),
}

impl Service {
    /// The canonical document (what `GET /v1/services` returns).
    pub fn to_document(&self) -> Value {
        let ports: Vec<Value> = self
            .ports
            .iter()
            .map(|p| {
                let mut port = json!({"port": p.port});
                if let Some(n) = &p.name {
                    port["name"] = json!(n);
                }
                port["targetPort"] = match &p.target_port {
                    TargetPort::Number(n) => json!(n),
                    TargetPort::Name(n) => json!(n),
                };
                if let Some(proto) = &p.app_protocol {
                    port["appProtocol"] = json!(proto);
                }
                port
            })
            .collect();
        let mut metadata = json!({"name": self.name, "namespace": self.namespace});
        if !self.labels.is_empty() {
            metadata["labels"] = json!(self.labels);
        }
        if !self.annotations.is_empty() {
            metadata["annotations"] = json!(self.annotations);
        }
        let mut spec = json!({"selector": self.selector, "ports": ports});
        if let Some(ip) = self.cluster_ip {
            spec["clusterIP"] = json!(ip.to_string());
        }
        json!({"apiVersion": "v1", "kind": "Service", "metadata": metadata, "spec": spec})
    }
}

/// A validated `ExternalWorkload`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExternalWorkload {
    pub name: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// meshTLS.identity (SPIFFE URI by default).
    pub identity: String,
    /// meshTLS.serverName: the DNS-like identity, also the TLS SNI.
    pub server_name: String,
    /// workloadIPs, never empty; the first one is the address peers use.
    pub ips: Vec<IpAddr>,
    pub ports: Vec<WorkloadPort>,
    /// Workload ports named by the opaque-ports annotation.
    pub opaque_ports: BTreeSet<u16>,
    /// The sidecar's inbound listener port on the workload IP (the inbound-port annotation);
    /// None when the document does not say (its ports are then the sidecar's forward ports).
    pub inbound_port: Option<u16>,
    /// `status.conditions`; the `Ready` one decides whether it is an endpoint ([`Self::ready`]).
    pub conditions: Vec<workload_status::Condition>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadPort {
    pub name: Option<String>,
    pub port: u16,
}

/// One validated document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resource {
    Service(Service),
    Workload(ExternalWorkload),
    Route(route::Route),
    Fault(route::FaultInjection),
    Server(authz::Server),
    AuthorizationPolicy(authz::AuthorizationPolicy),
    MeshTls(authz::MeshTlsAuthentication),
    NetworkAuthentication(authz::NetworkAuthentication),
    Namespace(authz::Namespace),
    RateLimit(ratelimit::RateLimitPolicy),
    EgressNetwork(egress::EgressNetwork),
    Link(multicluster::Link),
    Secret(multicluster::CredentialsSecret),
}

/// The whole validated configuration: what the index serves.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct State {
    /// Keyed by (namespace, name).
    pub services: BTreeMap<(String, String), Service>,
    pub workloads: BTreeMap<(String, String), ExternalWorkload>,
    /// Every route, whatever its parents; each has `created` set (see [`route::Route`]).
    pub routes: BTreeMap<route::RouteKey, route::Route>,
    /// `FaultInjection` filters, keyed by (namespace, name).
    pub faults: BTreeMap<(String, String), route::FaultInjection>,
    /// `Server`s, keyed by (namespace, name); each has `created` set, as routes do.
    pub servers: BTreeMap<(String, String), authz::Server>,
    pub authorization_policies: BTreeMap<(String, String), authz::AuthorizationPolicy>,
    pub mesh_tls_authentications: BTreeMap<(String, String), authz::MeshTlsAuthentication>,
    pub network_authentications: BTreeMap<(String, String), authz::NetworkAuthentication>,
    /// `Namespace` documents by name (a namespace needs none to exist).
    pub namespaces: BTreeMap<String, authz::Namespace>,
    /// `HTTPLocalRateLimitPolicy`s, keyed by (namespace, name); each has `created` set, as
    /// Servers do.
    pub rate_limit_policies: BTreeMap<(String, String), ratelimit::RateLimitPolicy>,
    /// `EgressNetwork`s, keyed by (namespace, name); each has `created` set, as Servers do.
    pub egress_networks: BTreeMap<(String, String), egress::EgressNetwork>,
    /// Multicluster `Link`s, keyed by (namespace, name).
    pub links: BTreeMap<(String, String), multicluster::Link>,
    /// Links' credentials `Secret`s, keyed by (namespace, name).
    pub secrets: BTreeMap<(String, String), multicluster::CredentialsSecret>,
}

impl Service {
    /// Whether traffic to this service port must be treated as opaque TCP.
    pub fn is_opaque(&self, port: u16) -> bool {
        self.opaque_ports.contains(&port)
            || self.ports.iter().any(|p| {
                p.port == port && matches!(p.app_protocol.as_deref(), Some("opaque" | "tcp"))
            })
    }

    pub fn port(&self, port: u16) -> Option<&ServicePort> {
        self.ports.iter().find(|p| p.port == port)
    }

    /// Kubernetes selector semantics: every selector label must be present with the same value.
    pub fn selects(&self, w: &ExternalWorkload) -> bool {
        // An empty selector selects nothing, as in Kubernetes (endpoints would be managed by hand).
        !self.selector.is_empty()
            && w.namespace == self.namespace
            && self
                .selector
                .iter()
                .all(|(k, v)| w.labels.get(k) == Some(v))
    }
}

impl ExternalWorkload {
    pub fn ip(&self) -> IpAddr {
        self.ips[0]
    }

    /// Whether Services hand it out as an endpoint: its `Ready` condition is `True`, or it has
    /// none ([`workload_status`]).
    pub fn ready(&self) -> bool {
        workload_status::is_ready(&self.conditions)
    }

    /// Where its proxy's admin server listens: the first IP and the port named
    /// [`ADMIN_PORT_NAME`]; `None` for a workload registered without a proxy.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.ports
            .iter()
            .find(|p| p.name.as_deref() == Some(ADMIN_PORT_NAME))
            .map(|p| SocketAddr::new(self.ip(), p.port))
    }

    /// Where its proxy's tap server listens: the first IP and the port named [`TAP_PORT_NAME`].
    pub fn tap_addr(&self) -> Option<SocketAddr> {
        self.ports
            .iter()
            .find(|p| p.name.as_deref() == Some(TAP_PORT_NAME))
            .map(|p| SocketAddr::new(self.ip(), p.port))
    }

    /// Resolves a service targetPort against this workload's ports. A number always resolves
    /// (like a pod's containerPort-less target); a name must be declared.
    pub fn resolve(&self, target: &TargetPort) -> Option<u16> {
        match target {
            TargetPort::Number(n) => Some(*n),
            TargetPort::Name(name) => self
                .ports
                .iter()
                .find(|p| p.name.as_deref() == Some(name))
                .map(|p| p.port),
        }
    }

    /// The canonical document (what `GET /v1/workloads` returns and registration persists).
    pub fn to_document(&self) -> Value {
        let ports: Vec<Value> = self
            .ports
            .iter()
            .map(|p| match &p.name {
                Some(n) => json!({"name": n, "port": p.port}),
                None => json!({"port": p.port}),
            })
            .collect();
        let mut metadata = json!({"name": self.name, "namespace": self.namespace});
        if !self.labels.is_empty() {
            metadata["labels"] = json!(self.labels);
        }
        if !self.annotations.is_empty() {
            metadata["annotations"] = json!(self.annotations);
        }
        let mut doc = json!({
            "apiVersion": WORKLOAD_API_VERSION,
            "kind": "ExternalWorkload",
            "metadata": metadata,
            "spec": {
                "meshTLS": {"identity": self.identity, "serverName": self.server_name},
                "workloadIPs": self.ips.iter().map(|ip| json!({"ip": ip.to_string()})).collect::<Vec<_>>(),
                "ports": ports,
            }
        });
        if let Some(status) = workload_status::to_value(&self.conditions) {
            doc["status"] = status;
        }
        doc
    }
}

/// Validates one document (e.g. a registration request body). `prefix` starts every error.
pub fn validate_one(
    value: &Value,
    prefix: &str,
    defaults: &Defaults,
) -> Result<Resource, Vec<String>> {
    let mut ctx = Ctx::new(prefix.to_string());
    match validate_document(value, defaults, &mut ctx) {
        Some(r) if ctx.errors.is_empty() => Ok(r),
        _ => Err(ctx.errors),
    }
}

/// Collects errors for one document under a `FILE: document I` prefix.
pub(crate) struct Ctx {
    prefix: String,
    pub(crate) errors: Vec<String>,
}

impl Ctx {
    pub(crate) fn new(prefix: String) -> Self {
        Self {
            prefix,
            errors: Vec::new(),
        }
    }
    fn err(&mut self, field: &str, msg: impl std::fmt::Display) {
        self.errors.push(format!("{}: {field}: {msg}", self.prefix));
    }
}

pub(crate) fn validate_document(v: &Value, defaults: &Defaults, ctx: &mut Ctx) -> Option<Resource> {
    let Some(obj) = v.as_object() else {
        ctx.err(
            "(root)",
            format!("expected a mapping, got {}", type_name(v)),
        );
        return None;
    };
    let kind = req_str(obj, "kind", "kind", ctx)?;
    let api_version = req_str(obj, "apiVersion", "apiVersion", ctx);
    let row = match kind.as_str() {
        "Service" => kinds::find(kinds::CORE_GROUP, "Service"),
        "ExternalWorkload" => kinds::find(kinds::WORKLOAD_GROUP, "ExternalWorkload"),
        k if route::RouteKind::is_route_kind(k) || k == route::FAULT_INJECTION_KIND => {
            return route::validate(k, api_version.as_deref(), obj, ctx);
        }
        k if authz::is_kind(k) => {
            return authz::validate(k, api_version.as_deref(), obj, defaults, ctx);
        }
        ratelimit::RATE_LIMIT_KIND => {
            return ratelimit::validate(api_version.as_deref(), obj, defaults, ctx);
        }
        egress::EGRESS_NETWORK_KIND => {
            return egress::validate(api_version.as_deref(), obj, ctx);
        }
        multicluster::LINK_KIND => {
            return multicluster::validate_link(api_version.as_deref(), obj, ctx);
        }
        multicluster::SECRET_KIND => {
            return multicluster::validate_secret(api_version.as_deref(), obj, ctx);
        }
        other => {
            let mut known: Vec<&str> = Vec::new();
            for k in kinds::KINDS.iter().filter(|k| k.is_document()) {
                if !known.contains(&k.kind) {
                    known.push(k.kind);
                }
            }
            let (last, rest) = known.split_last().unwrap_or((&"", &[]));
            ctx.err(
                "kind",
                format!(
                    "unknown kind {other:?} (expected {} or {last})",
                    rest.join(", ")
                ),
            );
            return None;
        }
    };
    if let Some(Err(e)) = api_version
        .as_deref()
        .zip(row)
        .map(|(av, row)| row.check_api_version(av))
    {
        ctx.err("apiVersion", e);
    }
    // A workload may be named as Kubernetes names pods (a DNS subdomain: a static pod's
    // mirror is `<name>-<node name>`, dots and all); a Service's name is a DNS label.
    let meta = match kind.as_str() {
        "Service" => Meta::parse(obj, ctx),
        _ => Meta::parse_named(obj, ctx, dns_subdomain),
    };
    let spec = spec_of(obj, ctx);
    let (meta, spec) = (meta?, spec?);
    if kind == "Service" {
        service(meta, spec, ctx).map(Resource::Service)
    } else {
        let conditions = workload_status::parse(obj.get("status"), ctx);
        workload(meta, spec, defaults, ctx)
            .map(|w| Resource::Workload(ExternalWorkload { conditions, ..w }))
    }
}

/// The document's `spec` mapping (required).
fn spec_of<'a>(obj: &'a Map<String, Value>, ctx: &mut Ctx) -> Option<&'a Map<String, Value>> {
    match obj.get("spec") {
        Some(Value::Object(m)) => Some(m),
        Some(other) => {
            ctx.err(
                "spec",
                format!("expected a mapping, got {}", type_name(other)),
            );
            None
        }
        None => {
            ctx.err("spec", "required");
            None
        }
    }
}

struct Meta {
    name: String,
    namespace: String,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    opaque_ports: BTreeSet<u16>,
}

impl Meta {
    /// The metadata of a document whose name must be a DNS label.
    fn parse(obj: &Map<String, Value>, ctx: &mut Ctx) -> Option<Meta> {
        Meta::parse_named(obj, ctx, dns_label)
    }

    /// The metadata of a document whose name must pass `name_rule`.
    fn parse_named(
        obj: &Map<String, Value>,
        ctx: &mut Ctx,
        name_rule: fn(&str) -> Result<(), String>,
    ) -> Option<Meta> {
        let Some(m) = obj.get("metadata") else {
            ctx.err("metadata", "required");
            return None;
        };
        let Some(m) = m.as_object() else {
            ctx.err(
                "metadata",
                format!("expected a mapping, got {}", type_name(m)),
            );
            return None;
        };
        let name = req_str(m, "name", "metadata.name", ctx);
        if let Some(n) = &name {
            if let Err(e) = name_rule(n) {
                ctx.err("metadata.name", e);
            }
        }
        let namespace = match m.get("namespace") {
            None | Some(Value::Null) => Some("default".to_string()),
            Some(_) => req_str(m, "namespace", "metadata.namespace", ctx),
        };
        if let Some(n) = &namespace {
            if let Err(e) = dns_label(n) {
                ctx.err("metadata.namespace", e);
            }
        }
        let labels = string_map(m.get("labels"), "metadata.labels", ctx);
        let annotations = string_map(m.get("annotations"), "metadata.annotations", ctx);
        let opaque_ports = match annotations.get(OPAQUE_PORTS_ANNOTATION) {
            Some(s) => match parse_port_list(s) {
                Ok(p) => p,
                Err(e) => {
                    ctx.err(
                        &format!("metadata.annotations[{OPAQUE_PORTS_ANNOTATION:?}]"),
                        e,
                    );
                    BTreeSet::new()
                }
            },
            None => BTreeSet::new(),
        };
        Some(Meta {
            name: name?,
            namespace: namespace?,
            labels,
            annotations,
            opaque_ports,
        })
    }
}

fn service(meta: Meta, spec: &Map<String, Value>, ctx: &mut Ctx) -> Option<Service> {
    // Timeouts, retries and failure accrual: checked here, read by the index.
    policy::service_policy(&meta.annotations, ctx);
    let selector = match spec.get("selector") {
        None | Some(Value::Null) => {
            ctx.err("spec.selector", "required");
            BTreeMap::new()
        }
        some => string_map(some, "spec.selector", ctx),
    };
    let cluster_ip = match spec.get("clusterIP") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s == "None" || s.is_empty() => None,
        Some(Value::String(s)) => match s.parse::<IpAddr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                ctx.err("spec.clusterIP", format!("not an IP address: {s:?}"));
                None
            }
        },
        Some(other) => {
            ctx.err(
                "spec.clusterIP",
                format!("expected a string, got {}", type_name(other)),
            );
            None
        }
    };
    let mut ports = Vec::new();
    match spec.get("ports") {
        Some(Value::Array(items)) if !items.is_empty() => {
            for (i, item) in items.iter().enumerate() {
                let f = format!("spec.ports[{i}]");
                let Some(p) = item.as_object() else {
                    ctx.err(&f, format!("expected a mapping, got {}", type_name(item)));
                    continue;
                };
                let name = opt_name(p, &format!("{f}.name"), ctx);
                let port = req_port(p.get("port"), &format!("{f}.port"), ctx);
                let target_port = match p.get("targetPort") {
                    None | Some(Value::Null) => port.map(TargetPort::Number),
                    Some(Value::String(s)) => match port_name(s) {
                        Ok(()) => Some(TargetPort::Name(s.clone())),
                        Err(e) => {
                            ctx.err(&format!("{f}.targetPort"), e);
                            None
                        }
                    },
                    some => req_port(some, &format!("{f}.targetPort"), ctx).map(TargetPort::Number),
                };
                let app_protocol = match p.get("appProtocol") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(s)) if APP_PROTOCOLS.contains(&s.as_str()) => {
                        Some(s.clone())
                    }
                    Some(other) => {
                        ctx.err(
                            &format!("{f}.appProtocol"),
                            format!("must be one of {}; got {other}", APP_PROTOCOLS.join(", ")),
                        );
                        None
                    }
                };
                if let (Some(port), Some(target_port)) = (port, target_port) {
                    if ports.iter().any(|x: &ServicePort| x.port == port) {
                        ctx.err(&format!("{f}.port"), format!("duplicate port {port}"));
                    }
                    ports.push(ServicePort {
                        name,
                        port,
                        target_port,
                        app_protocol,
                    });
                }
            }
        }
        Some(Value::Array(_)) => ctx.err("spec.ports", "must list at least one port"),
        None | Some(Value::Null) => ctx.err("spec.ports", "required"),
        Some(other) => ctx.err(
            "spec.ports",
            format!("expected a list, got {}", type_name(other)),
        ),
    }
    Some(Service {
        name: meta.name,
        namespace: meta.namespace,
        labels: meta.labels,
        annotations: meta.annotations,
        selector,
        cluster_ip,
        ports,
        opaque_ports: meta.opaque_ports,
    })
}

fn workload(
    meta: Meta,
    spec: &Map<String, Value>,
    d: &Defaults,
    ctx: &mut Ctx,
) -> Option<ExternalWorkload> {
    let Meta {
        name,
        namespace,
        labels,
        annotations,
        opaque_ports,
    } = meta;
    authz::check_default_policy_annotation(&annotations, ctx);
    let inbound_port = annotations.get(INBOUND_PORT_ANNOTATION).and_then(|v| {
        let port = v.trim().parse::<u16>().ok().filter(|p| *p > 0);
        if port.is_none() {
            let field = format!("metadata.annotations[{INBOUND_PORT_ANNOTATION:?}]");
            ctx.err(&field, format!("{v:?} is not a port 1..65535"));
        }
        port
    });
    let mut identity = format!("spiffe://{}/ns/{namespace}/sa/{name}", d.trust_domain);
    let mut server_name = format!(
        "{name}.{namespace}.serviceaccount.identity.{}.{}",
        d.control_namespace, d.trust_domain
    );
    match spec.get("meshTLS") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            if let Some(v) = m.get("identity").filter(|v| !v.is_null()) {
                match v.as_str() {
                    Some(s) if !s.is_empty() => identity = s.to_string(),
                    _ => ctx.err("spec.meshTLS.identity", "must be a non-empty string"),
                }
            }
            if let Some(v) = m.get("serverName").filter(|v| !v.is_null()) {
                match v.as_str() {
                    Some(s) if dns_name(s) => server_name = s.to_string(),
                    _ => ctx.err(
                        "spec.meshTLS.serverName",
                        format!("must be a DNS name, got {v}"),
                    ),
                }
            }
        }
        Some(other) => ctx.err(
            "spec.meshTLS",
            format!("expected a mapping, got {}", type_name(other)),
        ),
    }
    let mut ips = Vec::new();
    match spec.get("workloadIPs") {
        Some(Value::Array(items)) if !items.is_empty() => {
            for (i, item) in items.iter().enumerate() {
                let f = format!("spec.workloadIPs[{i}].ip");
                match item
                    .get("ip")
                    .and_then(Value::as_str)
                    .map(str::parse::<IpAddr>)
                {
                    Some(Ok(ip)) => ips.push(ip),
                    Some(Err(_)) => ctx.err(&f, format!("not an IP address: {}", item["ip"])),
                    None => ctx.err(&f, "required"),
                }
            }
        }
        Some(Value::Array(_)) => ctx.err("spec.workloadIPs", "must list at least one address"),
        None | Some(Value::Null) => ctx.err("spec.workloadIPs", "required"),
        Some(other) => ctx.err(
            "spec.workloadIPs",
            format!("expected a list, got {}", type_name(other)),
        ),
    }
    let mut ports = Vec::new();
    match spec.get("ports") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let f = format!("spec.ports[{i}]");
                let Some(p) = item.as_object() else {
                    ctx.err(&f, format!("expected a mapping, got {}", type_name(item)));
                    continue;
                };
                let pname = opt_name(p, &format!("{f}.name"), ctx);
                if let Some(port) = req_port(p.get("port"), &format!("{f}.port"), ctx) {
                    if pname.is_some() && ports.iter().any(|x: &WorkloadPort| x.name == pname) {
                        ctx.err(
                            &format!("{f}.name"),
                            format!(
                                "duplicate port name {:?}",
                                pname.as_deref().unwrap_or_default()
                            ),
                        );
                    }
                    ports.push(WorkloadPort { name: pname, port });
                }
            }
        }
        Some(other) => ctx.err(
            "spec.ports",
            format!("expected a list, got {}", type_name(other)),
        ),
    }
    if ips.is_empty() {
        return None;
    }
    Some(ExternalWorkload {
        name,
        namespace,
        labels,
        annotations,
        identity,
        server_name,
        ips,
        ports,
        opaque_ports,
        inbound_port,
        conditions: Vec::new(),
    })
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

fn req_str(m: &Map<String, Value>, key: &str, field: &str, ctx: &mut Ctx) -> Option<String> {
    match m.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        None | Some(Value::Null) => {
            ctx.err(field, "required");
            None
        }
        Some(other) => {
            ctx.err(field, format!("expected a non-empty string, got {other}"));
            None
        }
    }
}

fn opt_name(m: &Map<String, Value>, field: &str, ctx: &mut Ctx) -> Option<String> {
    match m.get("name") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => match port_name(s) {
            Ok(()) => Some(s.clone()),
            Err(e) => {
                ctx.err(field, e);
                None
            }
        },
        Some(other) => {
            ctx.err(
                field,
                format!("expected a string, got {}", type_name(other)),
            );
            None
        }
    }
}

fn req_port(v: Option<&Value>, field: &str, ctx: &mut Ctx) -> Option<u16> {
    match v {
        None | Some(Value::Null) => {
            ctx.err(field, "required");
            None
        }
        Some(Value::Number(n)) => match n.as_u64() {
            Some(p @ 1..=65535) => Some(p as u16),
            _ => {
                ctx.err(field, format!("must be 1..65535, got {n}"));
                None
            }
        },
        Some(other) => {
            ctx.err(field, format!("must be 1..65535, got {other}"));
            None
        }
    }
}

fn string_map(v: Option<&Value>, field: &str, ctx: &mut Ctx) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    match v {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            for (k, v) in m {
                match v {
                    Value::String(s) => {
                        out.insert(k.clone(), s.clone());
                    }
                    // Kubernetes requires strings; accept scalars people write unquoted.
                    Value::Number(n) => {
                        out.insert(k.clone(), n.to_string());
                    }
                    Value::Bool(b) => {
                        out.insert(k.clone(), b.to_string());
                    }
                    other => ctx.err(
                        &format!("{field}.{k}"),
                        format!("expected a string, got {}", type_name(other)),
                    ),
                }
            }
        }
        Some(other) => ctx.err(
            field,
            format!("expected a mapping, got {}", type_name(other)),
        ),
    }
    out
}

/// RFC 1123 label: what Kubernetes requires of names and namespaces.
pub fn dns_label(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "must be a DNS label (1-63 characters a-z, 0-9, '-', starting and ending with a letter or digit), got {s:?}"
        ))
    }
}

/// A DNS subdomain (dot-separated DNS labels, at most 253 characters), what Kubernetes
/// requires of most object names (pods, ExternalWorkloads).
pub fn dns_subdomain(s: &str) -> Result<(), String> {
    if dns_name(s) {
        Ok(())
    } else {
        Err(format!(
            "must be a DNS subdomain (at most 253 characters of dot-separated DNS labels: a-z, 0-9, '-'), got {s:?}"
        ))
    }
}

fn dns_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(|l| dns_label(l).is_ok())
}

/// IANA service name, what Kubernetes requires of port names.
fn port_name(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 15
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.bytes().any(|b| b.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--");
    if ok {
        Ok(())
    } else {
        Err(format!("must be a port name (1-15 characters a-z, 0-9, '-', with at least one letter), got {s:?}"))
    }
}

/// Parses `"25,3306,5000-5010"`.
pub fn parse_port_list(s: &str) -> Result<BTreeSet<u16>, String> {
    let mut out = BTreeSet::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let parse = |x: &str| match x.trim().parse::<u16>() {
            Ok(p) if p > 0 => Ok(p),
            _ => Err(format!("{x:?} is not a port 1..65535")),
        };
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (parse(a)?, parse(b)?);
                if a > b {
                    return Err(format!("range {part:?} is reversed"));
                }
                out.extend(a..=b);
            }
            None => {
                out.insert(parse(part)?);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
#[path = "resource_tests.rs"]
mod tests;
