//! Route filters (header modifiers, redirects, `ExtensionRef`) and Weft's `FaultInjection`
//! resource that an `ExtensionRef` names.

use super::parse::{
    header_name, header_value, hostname, list, object, opt_port, opt_str, req_str_allow_empty,
};
use super::*;
use crate::resource::{dns_label, req_str, Ctx, Meta};
use serde_json::{Map, Value};

pub(super) fn filters(
    kind: RouteKind,
    v: Option<&Value>,
    f: &str,
    all_prefix: bool,
    ctx: &mut Ctx,
) -> Vec<Filter> {
    let mut out: Vec<Filter> = Vec::new();
    let mut seen: Vec<&'static str> = Vec::new();
    for (i, item) in list(v, f, ctx) {
        let f = format!("{f}[{i}]");
        let Some(m) = object(item, &f, ctx) else {
            continue;
        };
        let Some(ty) = req_str(m, "type", &format!("{f}.type"), ctx) else {
            continue;
        };
        let (name, filter) = match ty.as_str() {
            "RequestHeaderModifier" => (
                "RequestHeaderModifier",
                modifier(m, "requestHeaderModifier", &f, ctx).map(Filter::RequestHeaders),
            ),
            "ResponseHeaderModifier" if !kind.is_grpc() => (
                "ResponseHeaderModifier",
                modifier(m, "responseHeaderModifier", &f, ctx).map(Filter::ResponseHeaders),
            ),
            "RequestRedirect" if !kind.is_grpc() => (
                "RequestRedirect",
                redirect(m, &f, ctx).map(Filter::Redirect),
            ),
            "ExtensionRef" => ("ExtensionRef", extension_ref(m, &f, ctx).map(Filter::Fault)),
            "ResponseHeaderModifier" | "RequestMirror" | "URLRewrite" | "CORS" => {
                ctx.err(
                    &format!("{f}.type"),
                    format!(
                        "{ty} is not supported on a {}: the proxy API has no such filter",
                        kind.kind()
                    ),
                );
                continue;
            }
            other => {
                let allowed = if kind.is_grpc() {
                    "RequestHeaderModifier or ExtensionRef"
                } else {
                    "RequestHeaderModifier, ResponseHeaderModifier, RequestRedirect or ExtensionRef"
                };
                ctx.err(
                    &format!("{f}.type"),
                    format!("must be {allowed}, got {other:?}"),
                );
                continue;
            }
        };
        if name != "ExtensionRef" && seen.contains(&name) {
            ctx.err(&format!("{f}.type"), format!("{name} may appear only once"));
        }
        if let Some(Filter::Redirect(Redirect {
            path: Some(PathModifier::Prefix(_)),
            ..
        })) = &filter
        {
            if !all_prefix {
                ctx.err(
                    &format!("{f}.requestRedirect.path"),
                    "ReplacePrefixMatch needs every match of the rule to be a PathPrefix match",
                );
            }
        }
        seen.push(name);
        if let Some(filter) = filter {
            out.push(filter);
        }
    }
    out
}

fn modifier(m: &Map<String, Value>, key: &str, f: &str, ctx: &mut Ctx) -> Option<HeaderModifier> {
    let f = format!("{f}.{key}");
    let Some(v) = m.get(key).filter(|v| !v.is_null()) else {
        ctx.err(&f, "required for this filter type");
        return None;
    };
    let mm = object(v, &f, ctx)?;
    let mut out = HeaderModifier::default();
    for (list_key, target) in [("add", &mut out.add), ("set", &mut out.set)] {
        let lf = format!("{f}.{list_key}");
        for (i, item) in list(mm.get(list_key), &lf, ctx) {
            let ef = format!("{lf}[{i}]");
            let Some(e) = object(item, &ef, ctx) else {
                continue;
            };
            let name = req_str(e, "name", &format!("{ef}.name"), ctx);
            let value = req_str_allow_empty(e, "value", &format!("{ef}.value"), ctx);
            let (Some(name), Some(value)) = (name, value) else {
                continue;
            };
            if !header_name(&name) {
                ctx.err(
                    &format!("{ef}.name"),
                    format!("not an HTTP header name: {name:?}"),
                );
            } else if !header_value(&value) {
                ctx.err(
                    &format!("{ef}.value"),
                    format!("not a valid header value: {value:?}"),
                );
            } else if target.iter().any(|(n, _)| n.eq_ignore_ascii_case(&name)) {
                ctx.err(&format!("{ef}.name"), format!("duplicate header {name:?}"));
            } else {
                target.push((name.to_ascii_lowercase(), value));
            }
        }
    }
    let rf = format!("{f}.remove");
    for (i, item) in list(mm.get("remove"), &rf, ctx) {
        match item.as_str() {
            Some(n) if header_name(n) => out.remove.push(n.to_ascii_lowercase()),
            _ => ctx.err(
                &format!("{rf}[{i}]"),
                format!("not an HTTP header name: {item}"),
            ),
        }
    }
    Some(out)
}

fn redirect(m: &Map<String, Value>, f: &str, ctx: &mut Ctx) -> Option<Redirect> {
    let f = format!("{f}.requestRedirect");
    let Some(v) = m.get("requestRedirect").filter(|v| !v.is_null()) else {
        ctx.err(&f, "required for this filter type");
        return None;
    };
    let r = object(v, &f, ctx)?;
    let scheme = opt_str(r, "scheme", &format!("{f}.scheme"), ctx);
    if let Some(s) = scheme.as_deref().filter(|s| *s != "http" && *s != "https") {
        ctx.err(
            &format!("{f}.scheme"),
            format!("must be http or https, got {s:?}"),
        );
    }
    let hostname = opt_str(r, "hostname", &format!("{f}.hostname"), ctx);
    if let Some(h) = hostname.as_deref().filter(|h| !self::hostname(h, false)) {
        ctx.err(
            &format!("{f}.hostname"),
            format!("must be a DNS name, got {h:?}"),
        );
    }
    let port = opt_port(r, "port", &format!("{f}.port"), ctx);
    let status = match r.get("statusCode") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) if [301, 302, 303, 307, 308].contains(&n.as_u64().unwrap_or(0)) => {
            n.as_u64().map(|s| s as u16)
        }
        Some(other) => {
            ctx.err(
                &format!("{f}.statusCode"),
                format!("must be 301, 302, 303, 307 or 308, got {other}"),
            );
            None
        }
    };
    let path = match r.get("path").filter(|v| !v.is_null()) {
        None => None,
        Some(p) => {
            let pf = format!("{f}.path");
            let p = object(p, &pf, ctx)?;
            let ty = req_str(p, "type", &format!("{pf}.type"), ctx)?;
            let (key, make): (&str, fn(String) -> PathModifier) = match ty.as_str() {
                "ReplaceFullPath" => ("replaceFullPath", PathModifier::Full),
                "ReplacePrefixMatch" => ("replacePrefixMatch", PathModifier::Prefix),
                other => {
                    ctx.err(
                        &format!("{pf}.type"),
                        format!("must be ReplaceFullPath or ReplacePrefixMatch, got {other:?}"),
                    );
                    return None;
                }
            };
            let value = req_str(p, key, &format!("{pf}.{key}"), ctx)?;
            if !value.starts_with('/') {
                ctx.err(
                    &format!("{pf}.{key}"),
                    format!("must start with '/', got {value:?}"),
                );
            }
            Some(make(value))
        }
    };
    Some(Redirect {
        scheme,
        hostname,
        path,
        port,
        status,
    })
}

/// An `ExtensionRef` filter: only Weft's `FaultInjection` is known.
fn extension_ref(m: &Map<String, Value>, f: &str, ctx: &mut Ctx) -> Option<String> {
    let f = format!("{f}.extensionRef");
    let Some(v) = m.get("extensionRef").filter(|v| !v.is_null()) else {
        ctx.err(&f, "required for this filter type");
        return None;
    };
    let r = object(v, &f, ctx)?;
    let group = opt_str(r, "group", &format!("{f}.group"), ctx).unwrap_or_default();
    let kind = opt_str(r, "kind", &format!("{f}.kind"), ctx).unwrap_or_default();
    let name = req_str(r, "name", &format!("{f}.name"), ctx)?;
    if group != WEFT_EXTENSIONS_GROUP || kind != FAULT_INJECTION_KIND {
        ctx.err(
            &f,
            format!("unknown extension {group:?}/{kind:?} (the only one is {WEFT_EXTENSIONS_GROUP:?}/{FAULT_INJECTION_KIND:?})"),
        );
        return None;
    }
    if let Err(e) = dns_label(&name) {
        ctx.err(&format!("{f}.name"), e);
        return None;
    }
    Some(name)
}

pub(super) fn fault(
    meta: Meta,
    spec: &Map<String, Value>,
    ctx: &mut Ctx,
) -> Option<FaultInjection> {
    let status = match spec.get("status") {
        None | Some(Value::Null) => DEFAULT_FAULT_STATUS,
        Some(Value::Number(n)) if (100..=599).contains(&n.as_u64().unwrap_or(0)) => {
            n.as_u64().unwrap_or(500) as u16
        }
        Some(other) => {
            ctx.err(
                "spec.status",
                format!("must be an HTTP status 100..599, got {other}"),
            );
            DEFAULT_FAULT_STATUS
        }
    };
    let grpc_code = match spec.get("grpcCode") {
        None | Some(Value::Null) => DEFAULT_FAULT_GRPC_CODE,
        Some(Value::Number(n)) if (1..=16).contains(&n.as_u64().unwrap_or(0)) => {
            n.as_u64().unwrap_or(13) as u32
        }
        Some(other) => {
            ctx.err(
                "spec.grpcCode",
                format!("must be a gRPC error code 1..16, got {other}"),
            );
            DEFAULT_FAULT_GRPC_CODE
        }
    };
    let message = opt_str(spec, "message", "spec.message", ctx).unwrap_or_default();
    let ratio = match spec.get("ratio").filter(|v| !v.is_null()) {
        None => None,
        Some(v) => {
            let r = object(v, "spec.ratio", ctx)?;
            let int = |key: &str, ctx: &mut Ctx| match r.get(key) {
                Some(Value::Number(n)) if n.as_u64().is_some_and(|x| x <= u64::from(u32::MAX)) => {
                    n.as_u64().map(|x| x as u32)
                }
                None | Some(Value::Null) if key == "denominator" => Some(100),
                other => {
                    ctx.err(
                        &format!("spec.ratio.{key}"),
                        format!(
                            "must be a non-negative integer, got {}",
                            other.unwrap_or(&Value::Null)
                        ),
                    );
                    None
                }
            };
            let (n, d) = (int("numerator", ctx)?, int("denominator", ctx)?);
            if d == 0 || n > d {
                ctx.err(
                    "spec.ratio",
                    format!("needs 0 <= numerator <= denominator and denominator > 0, got {n}/{d}"),
                );
                return None;
            }
            Some((n, d))
        }
    };
    Some(FaultInjection {
        name: meta.name,
        namespace: meta.namespace,
        status,
        grpc_code,
        message,
        ratio,
    })
}
