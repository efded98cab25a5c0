//! Linkerd's `HTTPLocalRateLimitPolicy` (`policy.linkerd.io/v1alpha1`), validated into a typed
//! value with Linkerd's admission rules: a `Server` target, every `requestsPerSecond` at least 1,
//! `identity` and each override at most `total` when `total` is set, `ServiceAccount` clients
//! only. Which policy rate-limits a Server (the oldest of those targeting it) is the index's
//! business (`index::inbound`).
//!
//! As for `AuthorizationPolicy` (see [`super::authz`]), an override's `ServiceAccount`
//! references are resolved to mesh identities here, at validation, so the index needs no
//! [`Defaults`].

use super::authz::service_account_identity;
use super::route::{creation_timestamp, list, object, opt_str, POLICY_GROUP};
use super::{dns_label, req_str, spec_of, type_name, Ctx, Defaults, Meta, Resource};
use serde_json::{Map, Value};

pub const RATE_LIMIT_KIND: &str = "HTTPLocalRateLimitPolicy";

/// A validated `HTTPLocalRateLimitPolicy`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimitPolicy {
    pub name: String,
    pub namespace: String,
    /// Unix seconds of `metadata.creationTimestamp`; in a [`super::State`] a policy without one
    /// carries the time the store first saw it (the oldest policy of a Server wins).
    pub created: Option<i64>,
    /// The name of the `Server` it limits (in the policy's namespace).
    pub server: String,
    /// Requests per second of the whole Server, shared by every client.
    pub total: Option<u32>,
    /// Requests per second of each client identity (unauthenticated clients share one).
    pub identity: Option<u32>,
    pub overrides: Vec<Override>,
}

impl RateLimitPolicy {
    /// The precedence of policies targeting the same Server: oldest first, then name.
    pub fn precedence(&self) -> (i64, &str) {
        (self.created.unwrap_or(i64::MAX), &self.name)
    }
}

/// `spec.overrides[]`: a per-identity limit for the named clients, instead of `identity`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Override {
    pub requests_per_second: u32,
    /// The identities of `clientRefs`, in order, never empty (validated).
    pub identities: Vec<String>,
}

/// Validates an `HTTPLocalRateLimitPolicy` document.
pub(super) fn validate(
    api_version: Option<&str>,
    obj: &Map<String, Value>,
    d: &Defaults,
    ctx: &mut Ctx,
) -> Option<Resource> {
    let row = super::kinds::find(POLICY_GROUP, RATE_LIMIT_KIND)?;
    if let Some(Err(e)) = api_version.map(|av| row.check_api_version(av)) {
        ctx.err("apiVersion", e);
    }
    let meta = Meta::parse(obj, ctx);
    let created = creation_timestamp(obj, ctx);
    let spec = spec_of(obj, ctx);
    let (meta, spec) = (meta?, spec?);
    let server = match spec.get("targetRef") {
        None | Some(Value::Null) => {
            ctx.err("spec.targetRef", "required");
            None
        }
        Some(v) => target_ref(v, ctx),
    };
    let total = opt_limit(spec, "total", ctx);
    let identity = opt_limit(spec, "identity", ctx);
    if let (Some(t), Some(i)) = (total, identity) {
        if i > t {
            ctx.err(
                "spec.identity.requestsPerSecond",
                format!("must not exceed spec.total.requestsPerSecond ({t}), got {i}"),
            );
        }
    }
    let mut overrides = Vec::new();
    for (i, item) in list(spec.get("overrides"), "spec.overrides", ctx) {
        let f = format!("spec.overrides[{i}]");
        let Some(m) = object(item, &f, ctx) else {
            continue;
        };
        let field = format!("{f}.requestsPerSecond");
        let rps = requests_per_second(m.get("requestsPerSecond"), &field, ctx);
        if let (Some(t), Some(rps)) = (total, rps) {
            if rps > t {
                ctx.err(
                    &field,
                    format!("must not exceed spec.total.requestsPerSecond ({t}), got {rps}"),
                );
            }
        }
        let refs_field = format!("{f}.clientRefs");
        let refs = list(m.get("clientRefs"), &refs_field, ctx);
        let listed = match m.get("clientRefs") {
            None | Some(Value::Null) => false,
            Some(Value::Array(items)) => !items.is_empty(),
            // Not a list: reported by `list`.
            Some(_) => true,
        };
        if !listed {
            ctx.err(&refs_field, "must list at least one client");
        }
        let identities: Vec<String> = refs
            .into_iter()
            .filter_map(|(j, r)| {
                client_ref(r, &format!("{refs_field}[{j}]"), &meta.namespace, d, ctx)
            })
            .collect();
        if let Some(requests_per_second) = rps.filter(|_| !identities.is_empty()) {
            overrides.push(Override {
                requests_per_second,
                identities,
            });
        }
    }
    Some(Resource::RateLimit(RateLimitPolicy {
        name: meta.name,
        namespace: meta.namespace,
        created,
        server: server?,
        total,
        identity,
        overrides,
    }))
}

/// `spec.targetRef`: a `policy.linkerd.io` `Server` (of the policy's namespace), its name.
fn target_ref(v: &Value, ctx: &mut Ctx) -> Option<String> {
    let m = object(v, "spec.targetRef", ctx)?;
    let group = opt_str(m, "group", "spec.targetRef.group", ctx).unwrap_or_default();
    let kind = req_str(m, "kind", "spec.targetRef.kind", ctx);
    let name = req_str(m, "name", "spec.targetRef.name", ctx);
    let (kind, name) = (kind?, name?);
    if !group.eq_ignore_ascii_case(POLICY_GROUP) || !kind.eq_ignore_ascii_case("server") {
        let group = if group.is_empty() { "core" } else { &group };
        ctx.err(
            "spec.targetRef",
            format!("must be a policy.linkerd.io/Server, got {group}/{kind}"),
        );
        return None;
    }
    Some(name)
}

/// `spec.total` or `spec.identity`: `{requestsPerSecond: N}`, optional.
fn opt_limit(spec: &Map<String, Value>, key: &str, ctx: &mut Ctx) -> Option<u32> {
    let v = spec.get(key).filter(|v| !v.is_null())?;
    let m = object(v, &format!("spec.{key}"), ctx)?;
    let field = format!("spec.{key}.requestsPerSecond");
    requests_per_second(m.get("requestsPerSecond"), &field, ctx)
}

/// A required `requestsPerSecond`: an integer of at least 1 (a `uint32` on the wire).
fn requests_per_second(v: Option<&Value>, field: &str, ctx: &mut Ctx) -> Option<u32> {
    match v {
        None | Some(Value::Null) => {
            ctx.err(field, "required");
            None
        }
        Some(Value::Number(n)) => match n.as_u64().and_then(|n| u32::try_from(n).ok()) {
            Some(rps) if rps >= 1 => Some(rps),
            _ => {
                ctx.err(
                    field,
                    format!("must be an integer 1..{}, got {n}", u32::MAX),
                );
                None
            }
        },
        Some(other) => {
            ctx.err(
                field,
                format!(
                    "must be an integer 1..{}, got {}",
                    u32::MAX,
                    type_name(other)
                ),
            );
            None
        }
    }
}

/// One `clientRefs[]` entry: a core `ServiceAccount`, namespace defaulted to the policy's,
/// resolved to its identity.
fn client_ref(v: &Value, f: &str, policy_ns: &str, d: &Defaults, ctx: &mut Ctx) -> Option<String> {
    let m = object(v, f, ctx)?;
    let group = opt_str(m, "group", &format!("{f}.group"), ctx).unwrap_or_default();
    let kind = req_str(m, "kind", &format!("{f}.kind"), ctx);
    let name = req_str(m, "name", &format!("{f}.name"), ctx);
    let namespace =
        opt_str(m, "namespace", &format!("{f}.namespace"), ctx).unwrap_or_else(|| policy_ns.into());
    let kind = kind?;
    let core = group.is_empty() || group.eq_ignore_ascii_case("core");
    if !core || !kind.eq_ignore_ascii_case("ServiceAccount") {
        let group = if group.is_empty() { "core" } else { &group };
        ctx.err(
            &format!("{f}.kind"),
            format!("must be a core ServiceAccount, got {group}/{kind}"),
        );
        return None;
    }
    let mut ok = true;
    if let Err(e) = dns_label(&namespace) {
        ctx.err(&format!("{f}.namespace"), e);
        ok = false;
    }
    let name = name?;
    if let Err(e) = dns_label(&name) {
        ctx.err(&format!("{f}.name"), e);
        ok = false;
    }
    ok.then(|| service_account_identity(&name, &namespace, d))
}

#[cfg(test)]
#[path = "ratelimit_tests.rs"]
mod tests;
