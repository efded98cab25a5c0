//! Linkerd's multicluster documents: the `Link` (`multicluster.linkerd.io`) an east cluster
//! keeps for each west it mirrors, and the credentials `Secret` (`type:
//! mirror.linkerd.io/remote-kubeconfig`) it names, plus the labels and annotations the export
//! and the mirror read and write. Following a link is `crate::multicluster`'s business.

use super::authz::{label_selector, LabelSelector};
use super::policy::parse_duration;
use super::route::{object, opt_str};
use super::{req_str, spec_of, type_name, Ctx, Meta, Resource};
use base64::Engine;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

pub const LINK_KIND: &str = "Link";
pub const MULTICLUSTER_GROUP: &str = "multicluster.linkerd.io";
pub const SECRET_KIND: &str = "Secret";
/// The only `Secret` type the store takes: a Link's credentials.
pub const CREDENTIALS_SECRET_TYPE: &str = "mirror.linkerd.io/remote-kubeconfig";
/// Where `weft multicluster link` puts Links and their Secrets (Linkerd's `linkerd-multicluster`).
pub const DEFAULT_LINK_NAMESPACE: &str = "weft-multicluster";

/// On a Service in west: `"true"` exports it through the gateway, `remote-discovery` pod to pod.
pub const EXPORTED_LABEL: &str = "mirror.linkerd.io/exported";
pub const EXPORTED_GATEWAY: &str = "true";
pub const EXPORTED_REMOTE_DISCOVERY: &str = "remote-discovery";
/// On a Service in any cluster: `member` makes it a member of `<name>-federated`.
pub const FEDERATED_LABEL: &str = "mirror.linkerd.io/federated";
pub const FEDERATED_MEMBER: &str = "member";
/// On every document the mirror generates.
pub const MIRRORED_SERVICE_LABEL: &str = "mirror.linkerd.io/mirrored-service";
/// On every document the mirror generates: the Link it came through.
pub const CLUSTER_NAME_LABEL: &str = "mirror.linkerd.io/cluster-name";
/// On a mirror Service: the remote Service's `NAME.NS.svc.DOMAIN`.
pub const REMOTE_SVC_FQ_NAME_ANNOTATION: &str = "mirror.linkerd.io/remote-svc-fq-name";
/// On a gateway-mode mirror Service: the remote gateway's identity. Its endpoints are the
/// gateway, reached with `authority_override` (Linkerd puts it on the mirror's Endpoints).
pub const REMOTE_GATEWAY_IDENTITY_ANNOTATION: &str = "mirror.linkerd.io/remote-gateway-identity";
/// On a `<name>-federated` Service: the local member, whose endpoints it also answers.
pub const LOCAL_DISCOVERY_ANNOTATION: &str = "multicluster.linkerd.io/local-discovery";
/// On a `<name>-federated` Service: its remote members, `<name>@<link>,...`.
pub const REMOTE_DISCOVERY_ANNOTATION: &str = "multicluster.linkerd.io/remote-discovery";
/// West's gateway workloads carry both labels (Linkerd's gateway pod labels).
pub const GATEWAY_EXTENSION_LABEL: (&str, &str) = ("linkerd.io/extension", "multicluster");
pub const GATEWAY_COMPONENT_LABEL: (&str, &str) = ("component", "gateway");
/// The gateway workload's ports, by name, and their defaults.
pub const GATEWAY_PORT_NAME: &str = "mc-gateway";
pub const DEFAULT_GATEWAY_PORT: u16 = 4143;
pub const PROBE_PORT_NAME: &str = "mc-probe";
pub const DEFAULT_PROBE_PORT: u16 = 4191;
pub const DEFAULT_PROBE_PATH: &str = "/ready";
/// The gateway workload's name (its service account): `weft run --multicluster-gateway` runs it
/// as `weft-gateway` in [`DEFAULT_LINK_NAMESPACE`], Linkerd's `linkerd-gateway` in
/// `linkerd-multicluster`.
pub const GATEWAY_NAME: &str = "weft-gateway";

/// The identity of a cluster's multicluster gateway,
/// `weft-gateway.weft-multicluster.serviceaccount.identity.<control-ns>.<trust-domain>`: every
/// sidecar trusts the `l5d-client-id` it forwards (`WEFT_PROXY_INBOUND_TRUSTED_GATEWAY_IDENTITIES`).
pub fn gateway_identity(d: &super::Defaults) -> String {
    format!(
        "{GATEWAY_NAME}.{DEFAULT_LINK_NAMESPACE}.serviceaccount.identity.{}.{}",
        d.control_namespace, d.trust_domain
    )
}

/// A validated `Link`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub name: String,
    pub namespace: String,
    pub target_cluster_name: String,
    /// Default `cluster.local`.
    pub target_cluster_domain: String,
    /// Default `weft`.
    pub target_cluster_namespace: String,
    /// The credentials Secret's name, in the Link's namespace.
    pub credentials_secret: String,
    /// The remote gateway; `None` for a link without one (remote discovery only).
    pub gateway: Option<Gateway>,
    pub probe: ProbeSpec,
    /// Default `mirror.linkerd.io/exported: "true"`.
    pub selector: LabelSelector,
    /// Default `mirror.linkerd.io/exported: remote-discovery`.
    pub remote_discovery_selector: LabelSelector,
    /// Default `mirror.linkerd.io/federated: member`.
    pub federated_selector: LabelSelector,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gateway {
    pub address: IpAddr,
    /// `gatewayPort`, default 4143.
    pub port: u16,
    pub identity: String,
}

/// `probeSpec`, with the defaults `linkerd multicluster link` writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeSpec {
    /// Default `/ready`.
    pub path: String,
    /// Default 4191.
    pub port: u16,
    /// Default 3 s.
    pub period: Duration,
    /// Default 3.
    pub failure_threshold: u32,
    /// Default 30 s.
    pub timeout: Duration,
}

impl Default for ProbeSpec {
    fn default() -> Self {
        ProbeSpec {
            path: DEFAULT_PROBE_PATH.into(),
            port: DEFAULT_PROBE_PORT,
            period: Duration::from_secs(3),
            failure_threshold: 3,
            timeout: Duration::from_secs(30),
        }
    }
}

fn selector_of(key: &str, value: &str) -> LabelSelector {
    LabelSelector {
        match_labels: BTreeMap::from([(key.to_string(), value.to_string())]),
        match_expressions: Vec::new(),
    }
}

/// The selectors a Link without them has (what `linkerd multicluster link` writes).
pub fn default_selectors() -> [LabelSelector; 3] {
    [
        selector_of(EXPORTED_LABEL, EXPORTED_GATEWAY),
        selector_of(EXPORTED_LABEL, EXPORTED_REMOTE_DISCOVERY),
        selector_of(FEDERATED_LABEL, FEDERATED_MEMBER),
    ]
}

/// A validated credentials `Secret`: where west's API is and the link token it minted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CredentialsSecret {
    pub name: String,
    pub namespace: String,
    /// The current context's cluster `server`: west's HTTP API URL (`http://HOST:PORT`).
    pub server: String,
    /// The current context's user `token`.
    pub token: String,
    /// The current context's user name: the name west knows the credential by (what
    /// `weft multicluster unlink --revoke` revokes).
    pub user: String,
}

/// An `apiVersion` error unless the table of kinds lists the version for `kind`.
fn check_api_version(group: &str, kind: &str, api_version: Option<&str>, ctx: &mut Ctx) {
    let row = super::kinds::find(group, kind);
    if let Some(Err(e)) = row.zip(api_version).map(|(r, av)| r.check_api_version(av)) {
        ctx.err("apiVersion", e);
    }
}

/// Validates a `Link` document.
pub(super) fn validate_link(
    api_version: Option<&str>,
    obj: &Map<String, Value>,
    ctx: &mut Ctx,
) -> Option<Resource> {
    check_api_version(MULTICLUSTER_GROUP, LINK_KIND, api_version, ctx);
    let meta = Meta::parse(obj, ctx);
    let spec = spec_of(obj, ctx);
    let (meta, spec) = (meta?, spec?);
    let target_cluster_name = req_str(spec, "targetClusterName", "spec.targetClusterName", ctx);
    if let Some(n) = &target_cluster_name {
        if let Err(e) = super::dns_label(n) {
            ctx.err("spec.targetClusterName", e);
        }
    }
    let domain = opt_str(spec, "targetClusterDomain", "spec.targetClusterDomain", ctx)
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "cluster.local".into());
    if !super::dns_name(domain.trim_end_matches('.')) {
        ctx.err(
            "spec.targetClusterDomain",
            format!("must be a DNS name, got {domain:?}"),
        );
    }
    let control_ns = opt_str(
        spec,
        "targetClusterLinkerdNamespace",
        "spec.targetClusterLinkerdNamespace",
        ctx,
    )
    .filter(|s| !s.is_empty())
    .unwrap_or_else(|| "weft".into());
    if let Err(e) = super::dns_label(&control_ns) {
        ctx.err("spec.targetClusterLinkerdNamespace", e);
    }
    let credentials = req_str(
        spec,
        "clusterCredentialsSecret",
        "spec.clusterCredentialsSecret",
        ctx,
    );
    if let Some(n) = &credentials {
        if let Err(e) = super::dns_label(n) {
            ctx.err("spec.clusterCredentialsSecret", e);
        }
    }
    let gateway = gateway(spec, ctx);
    let probe = probe_spec(spec.get("probeSpec"), ctx);
    let [d_selector, d_remote, d_federated] = default_selectors();
    let mut selector = |key: &str, default: LabelSelector| match spec.get(key) {
        None | Some(Value::Null) => default,
        Some(v) => label_selector(v, &format!("spec.{key}"), ctx).unwrap_or(default),
    };
    let selector_ = selector("selector", d_selector);
    let remote_discovery_selector = selector("remoteDiscoverySelector", d_remote);
    let federated_selector = selector("federatedServiceSelector", d_federated);
    Some(Resource::Link(Link {
        name: meta.name,
        namespace: meta.namespace,
        target_cluster_name: target_cluster_name?,
        target_cluster_domain: domain.trim_end_matches('.').to_string(),
        target_cluster_namespace: control_ns,
        credentials_secret: credentials?,
        gateway,
        probe,
        selector: selector_,
        remote_discovery_selector,
        federated_selector,
    }))
}

/// A port written as a string (Linkerd's `gatewayPort: "4143"`) or a number.
fn string_port(v: Option<&Value>, field: &str, default: u16, ctx: &mut Ctx) -> u16 {
    let parsed = match v {
        None | Some(Value::Null) => return default,
        Some(Value::String(s)) if s.is_empty() => return default,
        Some(Value::String(s)) => s.trim().parse::<u16>().ok(),
        Some(Value::Number(n)) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
        Some(_) => None,
    };
    match parsed.filter(|p| *p > 0) {
        Some(p) => p,
        None => {
            let got = v.unwrap_or(&Value::Null);
            ctx.err(field, format!("must be a port 1..65535, got {got}"));
            default
        }
    }
}

/// `gatewayAddress`, `gatewayPort`, `gatewayIdentity`: all or none (a link without a gateway
/// mirrors only remote-discovery and federated services).
fn gateway(spec: &Map<String, Value>, ctx: &mut Ctx) -> Option<Gateway> {
    let address =
        opt_str(spec, "gatewayAddress", "spec.gatewayAddress", ctx).filter(|s| !s.is_empty());
    let port = string_port(
        spec.get("gatewayPort"),
        "spec.gatewayPort",
        DEFAULT_GATEWAY_PORT,
        ctx,
    );
    let identity =
        opt_str(spec, "gatewayIdentity", "spec.gatewayIdentity", ctx).filter(|s| !s.is_empty());
    let address = match address?.parse::<IpAddr>() {
        Ok(ip) => ip,
        Err(_) => {
            let got = &spec["gatewayAddress"];
            ctx.err(
                "spec.gatewayAddress",
                format!(
                    "must be an IP address (Weft does not resolve gateway host names), got {got}"
                ),
            );
            return None;
        }
    };
    let Some(identity) = identity else {
        ctx.err(
            "spec.gatewayIdentity",
            "required with spec.gatewayAddress (the identity the gateway's TLS proves)",
        );
        return None;
    };
    if !super::dns_name(&identity) {
        ctx.err(
            "spec.gatewayIdentity",
            format!("must be a DNS-like identity, got {identity:?}"),
        );
    }
    Some(Gateway {
        address,
        port,
        identity,
    })
}

fn probe_spec(v: Option<&Value>, ctx: &mut Ctx) -> ProbeSpec {
    let mut probe = ProbeSpec::default();
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return probe;
    };
    let Some(m) = object(v, "spec.probeSpec", ctx) else {
        return probe;
    };
    if let Some(path) = opt_str(m, "path", "spec.probeSpec.path", ctx).filter(|s| !s.is_empty()) {
        if path.starts_with('/') {
            probe.path = path;
        } else {
            ctx.err(
                "spec.probeSpec.path",
                format!("must start with '/', got {path:?}"),
            );
        }
    }
    probe.port = string_port(
        m.get("port"),
        "spec.probeSpec.port",
        DEFAULT_PROBE_PORT,
        ctx,
    );
    let mut duration = |key: &str, default: Duration| {
        let field = format!("spec.probeSpec.{key}");
        match opt_str(m, key, &field, ctx).filter(|s| !s.is_empty()) {
            None => default,
            Some(s) => match parse_duration(&s, false) {
                Ok(d) if !d.is_zero() => d,
                Ok(_) => {
                    ctx.err(&field, "must be more than 0");
                    default
                }
                Err(e) => {
                    ctx.err(&field, e);
                    default
                }
            },
        }
    };
    probe.period = duration("period", probe.period);
    probe.timeout = duration("timeout", probe.timeout);
    let threshold = match m.get("failureThreshold") {
        None | Some(Value::Null) => Some(probe.failure_threshold),
        Some(Value::String(s)) => s.trim().parse::<u32>().ok(),
        Some(Value::Number(n)) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        Some(_) => None,
    };
    match threshold.filter(|t| *t > 0) {
        Some(t) => probe.failure_threshold = t,
        None => ctx.err(
            "spec.probeSpec.failureThreshold",
            format!(
                "must be a whole number of at least 1, got {}",
                m["failureThreshold"]
            ),
        ),
    }
    probe
}

/// Validates a `Secret` document: only a Link's credentials (`type:
/// mirror.linkerd.io/remote-kubeconfig`) are taken.
pub(super) fn validate_secret(
    api_version: Option<&str>,
    obj: &Map<String, Value>,
    ctx: &mut Ctx,
) -> Option<Resource> {
    check_api_version(super::kinds::CORE_GROUP, SECRET_KIND, api_version, ctx);
    let meta = Meta::parse(obj, ctx);
    match obj.get("type") {
        Some(Value::String(t)) if t == CREDENTIALS_SECRET_TYPE => {}
        other => {
            let got = other.unwrap_or(&Value::Null);
            ctx.err(
                "type",
                format!("must be {CREDENTIALS_SECRET_TYPE:?} (the store keeps no other Secrets), got {got}"),
            );
            return None;
        }
    }
    let kubeconfig = match obj.get("data").map(|d| (d, d.get("kubeconfig"))) {
        Some((Value::Object(_), Some(Value::String(b64)))) => {
            match base64::engine::general_purpose::STANDARD.decode(b64.trim()) {
                Ok(bytes) => match String::from_utf8(bytes) {
                    Ok(text) => Some(text),
                    Err(_) => {
                        ctx.err("data.kubeconfig", "is not UTF-8 text once decoded");
                        None
                    }
                },
                Err(e) => {
                    ctx.err("data.kubeconfig", format!("not base64: {e}"));
                    None
                }
            }
        }
        Some((Value::Object(_), None | Some(Value::Null))) | None => {
            ctx.err("data.kubeconfig", "required (base64 of a kubeconfig)");
            None
        }
        Some((Value::Object(_), Some(other))) => {
            ctx.err(
                "data.kubeconfig",
                format!("expected a base64 string, got {}", type_name(other)),
            );
            None
        }
        Some((other, _)) => {
            ctx.err(
                "data",
                format!("expected a mapping, got {}", type_name(other)),
            );
            None
        }
    };
    let (server, token, user) = kubeconfig_credentials(&kubeconfig?, ctx)?;
    let meta = meta?;
    Some(Resource::Secret(CredentialsSecret {
        name: meta.name,
        namespace: meta.namespace,
        server,
        token,
        user,
    }))
}

/// The current context's cluster `server`, user `token` and user name of a kubeconfig.
fn kubeconfig_credentials(text: &str, ctx: &mut Ctx) -> Option<(String, String, String)> {
    let f = "data.kubeconfig";
    let v: Value = match yaml_serde::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            ctx.err(f, format!("not a kubeconfig (invalid YAML: {e})"));
            return None;
        }
    };
    let Some(current) = v.get("current-context").and_then(Value::as_str) else {
        ctx.err(&format!("{f}: current-context"), "required");
        return None;
    };
    let named = |list: &str, name: &str, inner: &str| {
        v.get(list)?
            .as_array()?
            .iter()
            .find(|e| e.get("name").and_then(Value::as_str) == Some(name))?
            .get(inner)
            .cloned()
    };
    let Some(context) = named("contexts", current, "context") else {
        ctx.err(
            &format!("{f}: contexts"),
            format!("no context named {current:?}"),
        );
        return None;
    };
    let cluster = context.get("cluster").and_then(Value::as_str).unwrap_or("");
    let user = context.get("user").and_then(Value::as_str).unwrap_or("");
    let server = named("clusters", cluster, "cluster")
        .and_then(|c| c.get("server")?.as_str().map(str::to_string));
    let token =
        named("users", user, "user").and_then(|u| u.get("token")?.as_str().map(str::to_string));
    let server = match server {
        Some(s) if s.starts_with("http://") || s.starts_with("https://") => Some(s),
        Some(s) => {
            ctx.err(
                &format!("{f}: clusters[{cluster:?}].cluster.server"),
                format!("must be an http:// URL of the remote control plane's API, got {s:?}"),
            );
            None
        }
        None => {
            ctx.err(
                &format!("{f}: clusters[{cluster:?}].cluster.server"),
                "required (the remote control plane's API URL)",
            );
            None
        }
    };
    let token = token.filter(|t| !t.is_empty());
    if token.is_none() {
        ctx.err(
            &format!("{f}: users[{user:?}].user.token"),
            "required (the link token the remote control plane minted)",
        );
    }
    Some((server?, token?, user.to_string()))
}

/// A kubeconfig holding west's API URL and a link token (the credentials Secret's
/// `data.kubeconfig`, before base64).
pub fn kubeconfig(cluster: &str, user: &str, server: &str, token: &str) -> String {
    let v = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": cluster,
        "clusters": [{"name": cluster, "cluster": {"server": server}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": cluster, "context": {"cluster": cluster, "user": user}}],
    });
    yaml_serde::to_string(&v).unwrap_or_default()
}

/// The credentials Secret document for a Link (what `weft multicluster link` writes).
pub fn credentials_secret_document(name: &str, namespace: &str, kubeconfig: &str) -> Value {
    let data = base64::engine::general_purpose::STANDARD.encode(kubeconfig);
    serde_json::json!({
        "apiVersion": "v1",
        "kind": SECRET_KIND,
        "type": CREDENTIALS_SECRET_TYPE,
        "metadata": {"name": name, "namespace": namespace},
        "data": {"kubeconfig": data},
    })
}

/// The `Link` and credentials `Secret` documents for linking to a cluster whose API at
/// `server` (`http://HOST:PORT`) answered `credentials` (`POST /v1/multicluster/credentials`
/// for the credential named `credential`): what `weft multicluster link --name NAME` writes. The Link's gateway is the first one listed
/// (none: a link for remote discovery only); its Secret is `cluster-credentials-NAME`.
pub fn link_documents(
    name: &str,
    namespace: &str,
    server: &str,
    credential: &str,
    credentials: &Value,
) -> Result<[Value; 2], String> {
    let token = credentials["token"]
        .as_str()
        .ok_or("the credentials have no token")?;
    let cluster = &credentials["cluster"];
    let secret_name = format!("cluster-credentials-{name}");
    let mut spec = serde_json::json!({
        "targetClusterName": name,
        "targetClusterDomain": cluster["domain"].as_str().unwrap_or("cluster.local"),
        "targetClusterLinkerdNamespace": cluster["controlNamespace"].as_str().unwrap_or("weft"),
        "clusterCredentialsSecret": secret_name,
    });
    if let Some(g) = credentials["gateways"].as_array().and_then(|g| g.first()) {
        let text = |v: &Value| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        spec["gatewayAddress"] = Value::String(text(&g["address"]));
        spec["gatewayPort"] = Value::String(text(&g["port"]));
        spec["gatewayIdentity"] = g["identity"].clone();
        spec["probeSpec"] = serde_json::json!({
            "path": g["probePath"].as_str().unwrap_or(DEFAULT_PROBE_PATH),
            "port": text(&g["probePort"]),
            "period": "3s",
            "failureThreshold": "3",
            "timeout": "30s",
        });
    }
    let link = serde_json::json!({
        "apiVersion": format!("{MULTICLUSTER_GROUP}/v1alpha2"),
        "kind": LINK_KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    });
    let secret = credentials_secret_document(
        &secret_name,
        namespace,
        &kubeconfig(name, credential, server, token),
    );
    Ok([link, secret])
}

/// Which export mode a Service's labels ask for, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExportMode {
    Gateway,
    RemoteDiscovery,
}

/// The export mode of a Service with `labels`.
pub fn export_mode(labels: &BTreeMap<String, String>) -> Option<ExportMode> {
    match labels.get(EXPORTED_LABEL).map(String::as_str) {
        Some(EXPORTED_GATEWAY) => Some(ExportMode::Gateway),
        Some(EXPORTED_REMOTE_DISCOVERY) => Some(ExportMode::RemoteDiscovery),
        _ => None,
    }
}

/// Whether a Service with `labels` is a federated member.
pub fn is_federated(labels: &BTreeMap<String, String>) -> bool {
    labels.get(FEDERATED_LABEL).map(String::as_str) == Some(FEDERATED_MEMBER)
}

#[cfg(test)]
#[path = "multicluster_tests.rs"]
mod tests;
