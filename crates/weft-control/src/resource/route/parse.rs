//! Validation of route documents: parent and backend references, matches, rule timeouts,
//! and the field helpers the filters share.

use super::filters::{fault, filters};
use super::*;
use crate::resource::policy;
use crate::resource::{dns_label, req_str, type_name, Ctx, Meta};
use serde_json::{Map, Value};

/// Validates a route or FaultInjection document (`kind` is known to be one of them).
pub(in crate::resource) fn validate(
    kind: &str,
    api_version: Option<&str>,
    obj: &Map<String, Value>,
    ctx: &mut Ctx,
) -> Option<crate::resource::Resource> {
    if kind == FAULT_INJECTION_KIND {
        let row = crate::resource::kinds::find(super::WEFT_EXTENSIONS_GROUP, kind)?;
        if let Some(Err(e)) = api_version.map(|av| row.check_api_version(av)) {
            ctx.err("apiVersion", e);
        }
        let meta = Meta::parse(obj, ctx);
        let spec = crate::resource::spec_of(obj, ctx);
        return fault(meta?, spec?, ctx).map(crate::resource::Resource::Fault);
    }
    let route_kind = match RouteKind::of(kind, api_version?) {
        Some(Ok(k)) => Some(k),
        Some(Err(expected)) => {
            ctx.err(
                "apiVersion",
                format!(
                    "must be {expected} for kind {kind}, got {:?}",
                    api_version.unwrap_or_default()
                ),
            );
            None
        }
        None => None,
    };
    let meta = Meta::parse(obj, ctx);
    let created = creation_timestamp(obj, ctx);
    let spec = crate::resource::spec_of(obj, ctx);
    let (route_kind, meta, spec) = (route_kind?, meta?, spec?);
    let route = route(route_kind, meta, created, spec, ctx)?;
    // TLSRoute v1alpha3 made `hostnames` required: SNI names are all a TLSRoute matches.
    if route_kind == RouteKind::Tls
        && api_version.is_some_and(|v| v.ends_with("/v1alpha3"))
        && match spec.get("hostnames") {
            None | Some(Value::Null) => true,
            Some(Value::Array(items)) => items.is_empty(),
            Some(_) => false,
        }
    {
        ctx.err(
            "spec.hostnames",
            "required in gateway.networking.k8s.io/v1alpha3 (at least one SNI name; a TCPRoute takes every connection)",
        );
    }
    Some(crate::resource::Resource::Route(route))
}

pub(in crate::resource) fn creation_timestamp(
    obj: &Map<String, Value>,
    ctx: &mut Ctx,
) -> Option<i64> {
    let v = obj.get("metadata")?.get("creationTimestamp")?;
    if v.is_null() {
        return None;
    }
    match v.as_str().map(parse_rfc3339) {
        Some(Ok(t)) => Some(t),
        Some(Err(e)) => {
            ctx.err("metadata.creationTimestamp", e);
            None
        }
        None => {
            ctx.err(
                "metadata.creationTimestamp",
                format!("expected a string, got {}", type_name(v)),
            );
            None
        }
    }
}

/// `2024-05-01T12:00:00Z` (optionally with fractional seconds), what Kubernetes writes, as Unix
/// seconds.
pub(in crate::resource) fn parse_rfc3339(s: &str) -> Result<i64, String> {
    let bad = || format!("must be an RFC 3339 UTC time like 2024-05-01T12:00:00Z, got {s:?}");
    let b = s.as_bytes();
    if !s.is_ascii()
        || b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
    {
        return Err(bad());
    }
    if b[16] != b':' || !s.ends_with('Z') {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| -> Result<u32, String> {
        let part = s.get(r).ok_or_else(bad)?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        part.parse().map_err(|_| bad())
    };
    let frac = &s[19..s.len() - 1];
    let fraction_ok = frac.is_empty()
        || (frac.len() > 1
            && frac.starts_with('.')
            && frac[1..].bytes().all(|c| c.is_ascii_digit()));
    if !fraction_ok {
        return Err(bad());
    }
    let month = time::Month::try_from(num(5..7)? as u8).map_err(|_| bad())?;
    let date = time::Date::from_calendar_date(num(0..4)? as i32, month, num(8..10)? as u8)
        .map_err(|_| bad())?;
    let t = time::Time::from_hms(num(11..13)? as u8, num(14..16)? as u8, num(17..19)? as u8)
        .map_err(|_| bad())?;
    Ok(time::PrimitiveDateTime::new(date, t)
        .assume_utc()
        .unix_timestamp())
}

fn route(
    kind: RouteKind,
    meta: Meta,
    created: Option<i64>,
    spec: &Map<String, Value>,
    ctx: &mut Ctx,
) -> Option<Route> {
    // Linkerd reads no timeout or retry annotations on TLSRoutes and TCPRoutes: ignored.
    let (timeouts, retry) = if kind.is_connection() {
        (None, None)
    } else {
        policy::route_annotations(&meta.annotations, kind.is_grpc(), ctx)
    };
    let mut parents = Vec::new();
    for (i, item) in list(spec.get("parentRefs"), "spec.parentRefs", ctx) {
        let f = format!("spec.parentRefs[{i}]");
        if let Some(p) = parent_ref(item, &f, &meta.namespace, ctx) {
            if parents.contains(&p) {
                ctx.err(&f, "duplicate parentRef");
            }
            parents.push(p);
        }
    }
    let mut hostnames = Vec::new();
    if kind == RouteKind::Tcp {
        not_a_field(
            kind,
            spec,
            "hostnames",
            "spec.hostnames",
            "use a TLSRoute to match SNI names",
            ctx,
        );
    }
    for (i, item) in list(spec.get("hostnames"), "spec.hostnames", ctx) {
        let f = format!("spec.hostnames[{i}]");
        match item.as_str() {
            Some(h) if hostname(h, true) => hostnames.push(h.to_ascii_lowercase()),
            _ => ctx.err(
                &f,
                format!("must be a DNS name, optionally starting with '*.' (no IP addresses), got {item}"),
            ),
        }
    }
    let mut rules = Vec::new();
    let items = list(spec.get("rules"), "spec.rules", ctx);
    if kind.is_connection() && items.len() != 1 {
        // The Gateway API allows up to 16; Linkerd reads exactly one (the proxy API's TLS and
        // opaque routes apply their first rule).
        ctx.err(
            "spec.rules",
            format!(
                "a {} must have exactly one rule (as in Linkerd), got {}",
                kind.kind(),
                items.len()
            ),
        );
    } else if items.is_empty() && ctx.errors.is_empty() {
        // Gateway API defaults `rules` to one rule matching everything, to the parent.
        rules.push(Rule {
            matches: default_matches(kind),
            filters: Vec::new(),
            backends: Vec::new(),
            request_timeout: None,
            backend_request_timeout: None,
        });
    }
    for (i, item) in items {
        let f = format!("spec.rules[{i}]");
        let Some(r) = item.as_object() else {
            ctx.err(&f, format!("expected a mapping, got {}", type_name(item)));
            continue;
        };
        if let Some(rule) = rule(kind, r, &f, &meta.namespace, ctx) {
            rules.push(rule);
        }
    }
    Some(Route {
        kind,
        name: meta.name,
        namespace: meta.namespace,
        created,
        parents,
        hostnames,
        rules,
        timeouts,
        retry,
    })
}

fn default_matches(kind: RouteKind) -> Matches {
    match kind.protocol() {
        RouteProtocol::Grpc => Matches::Grpc(vec![GrpcMatch::default()]),
        RouteProtocol::Http => Matches::Http(vec![HttpMatch::all()]),
        RouteProtocol::Tls | RouteProtocol::Tcp => Matches::Connection,
    }
}

/// Reports `key` of `m` if present: a field the Gateway API does not define for `kind`
/// (`hint` says what to do instead).
fn not_a_field(
    kind: RouteKind,
    m: &Map<String, Value>,
    key: &str,
    field: &str,
    hint: &str,
    ctx: &mut Ctx,
) {
    if let Some(v) = m.get(key).filter(|v| !v.is_null()) {
        ctx.err(
            field,
            format!("not a {} field ({hint}), got {v}", kind.kind()),
        );
    }
}

/// `parse` of every item of an optional list field (`FIELD[i]`), keeping the valid ones.
fn each<T>(
    v: Option<&Value>,
    field: &str,
    parse: fn(&Value, &str, &mut Ctx) -> Option<T>,
    ctx: &mut Ctx,
) -> Vec<T> {
    let mut out = Vec::new();
    for (i, item) in list(v, field, ctx) {
        out.extend(parse(item, &format!("{field}[{i}]"), ctx));
    }
    out
}

/// The items of an optional list field, with their index.
pub(in crate::resource) fn list<'a>(
    v: Option<&'a Value>,
    field: &str,
    ctx: &mut Ctx,
) -> Vec<(usize, &'a Value)> {
    match v {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items.iter().enumerate().collect(),
        Some(other) => {
            ctx.err(field, format!("expected a list, got {}", type_name(other)));
            Vec::new()
        }
    }
}

pub(in crate::resource) fn object<'a>(
    v: &'a Value,
    field: &str,
    ctx: &mut Ctx,
) -> Option<&'a Map<String, Value>> {
    match v.as_object() {
        Some(m) => Some(m),
        None => {
            ctx.err(field, format!("expected a mapping, got {}", type_name(v)));
            None
        }
    }
}

/// An optional string field (absent or null: `None`).
pub(in crate::resource) fn opt_str(
    m: &Map<String, Value>,
    key: &str,
    field: &str,
    ctx: &mut Ctx,
) -> Option<String> {
    match m.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            ctx.err(
                field,
                format!("expected a string, got {}", type_name(other)),
            );
            None
        }
    }
}

pub(super) fn opt_port(
    m: &Map<String, Value>,
    key: &str,
    field: &str,
    ctx: &mut Ctx,
) -> Option<u16> {
    match m.get(key) {
        None | Some(Value::Null) => None,
        some => crate::resource::req_port(some, field, ctx),
    }
}

fn parent_ref(v: &Value, f: &str, route_ns: &str, ctx: &mut Ctx) -> Option<ParentRef> {
    let m = object(v, f, ctx)?;
    let group =
        opt_str(m, "group", &format!("{f}.group"), ctx).unwrap_or_else(|| GATEWAY_GROUP.into());
    let kind = opt_str(m, "kind", &format!("{f}.kind"), ctx).unwrap_or_else(|| "Gateway".into());
    let name = req_str(m, "name", &format!("{f}.name"), ctx);
    let namespace =
        opt_str(m, "namespace", &format!("{f}.namespace"), ctx).unwrap_or_else(|| route_ns.into());
    if let Err(e) = dns_label(&namespace) {
        ctx.err(&format!("{f}.namespace"), e);
    }
    let port = opt_port(m, "port", &format!("{f}.port"), ctx);
    Some(ParentRef {
        group,
        kind,
        namespace,
        name: name?,
        port,
    })
}

fn rule(
    kind: RouteKind,
    r: &Map<String, Value>,
    f: &str,
    route_ns: &str,
    ctx: &mut Ctx,
) -> Option<Rule> {
    let errors_before = ctx.errors.len();
    if kind.is_connection() {
        let rule = connection_rule(kind, r, f, route_ns, ctx);
        return (ctx.errors.len() == errors_before).then_some(rule);
    }
    let matches = if kind.is_grpc() {
        let mut out = each(r.get("matches"), &format!("{f}.matches"), grpc_match, ctx);
        if out.is_empty() {
            out.push(GrpcMatch::default());
        }
        Matches::Grpc(out)
    } else {
        let mut out = each(r.get("matches"), &format!("{f}.matches"), http_match, ctx);
        if out.is_empty() {
            out.push(HttpMatch::all());
        }
        Matches::Http(out)
    };
    // ReplacePrefixMatch needs every match to be a path prefix (the proto's rule).
    let all_prefix = match &matches {
        Matches::Http(ms) => ms.iter().all(|m| matches!(m.path, PathMatch::Prefix(_))),
        Matches::Grpc(_) | Matches::Connection => false,
    };
    let filters = filters(
        kind,
        r.get("filters"),
        &format!("{f}.filters"),
        all_prefix,
        ctx,
    );
    let mut backends = Vec::new();
    for (i, item) in list(r.get("backendRefs"), &format!("{f}.backendRefs"), ctx) {
        let bf = format!("{f}.backendRefs[{i}]");
        if let Some(b) = backend_ref(kind, item, &bf, route_ns, all_prefix, ctx) {
            backends.push(b);
        }
    }
    let (mut request_timeout, mut backend_request_timeout) = (None, None);
    match r.get("timeouts") {
        None | Some(Value::Null) => {}
        Some(_) if kind.is_grpc() => not_a_field(
            kind,
            r,
            "timeouts",
            &format!("{f}.timeouts"),
            "use the timeout.linkerd.io annotations",
            ctx,
        ),
        Some(v) => {
            if let Some(t) = object(v, &format!("{f}.timeouts"), ctx) {
                request_timeout =
                    gateway_duration(t, "request", &format!("{f}.timeouts.request"), ctx);
                let field = format!("{f}.timeouts.backendRequest");
                backend_request_timeout = gateway_duration(t, "backendRequest", &field, ctx);
                if let (Some(req), Some(be)) = (request_timeout, backend_request_timeout) {
                    if be > req {
                        ctx.err(
                            &field,
                            format!("must not exceed timeouts.request ({be:?} > {req:?})"),
                        );
                    }
                }
            }
        }
    }
    (ctx.errors.len() == errors_before).then_some(Rule {
        matches,
        filters,
        backends,
        request_timeout,
        backend_request_timeout,
    })
}

/// A TLSRoute or TCPRoute rule: only `backendRefs`, without filters.
fn connection_rule(
    kind: RouteKind,
    r: &Map<String, Value>,
    f: &str,
    route_ns: &str,
    ctx: &mut Ctx,
) -> Rule {
    let hint = "a connection route takes every connection to its parent port";
    for key in ["matches", "filters", "timeouts"] {
        not_a_field(kind, r, key, &format!("{f}.{key}"), hint, ctx);
    }
    let mut backends = Vec::new();
    for (i, item) in list(r.get("backendRefs"), &format!("{f}.backendRefs"), ctx) {
        let bf = format!("{f}.backendRefs[{i}]");
        backends.extend(backend_ref(kind, item, &bf, route_ns, false, ctx));
    }
    Rule {
        matches: Matches::Connection,
        filters: Vec::new(),
        backends,
        request_timeout: None,
        backend_request_timeout: None,
    }
}

/// A Gateway API duration field; `0s` (no timeout) is `None`.
fn gateway_duration(
    m: &Map<String, Value>,
    key: &str,
    field: &str,
    ctx: &mut Ctx,
) -> Option<Duration> {
    let s = opt_str(m, key, field, ctx)?;
    match policy::parse_duration(&s, true) {
        Ok(d) if d.is_zero() => None,
        Ok(d) => Some(d),
        Err(e) => {
            ctx.err(field, e);
            None
        }
    }
}

fn http_match(v: &Value, f: &str, ctx: &mut Ctx) -> Option<HttpMatch> {
    let m = object(v, f, ctx)?;
    let path = match m.get("path") {
        None | Some(Value::Null) => PathMatch::Prefix("/".into()),
        Some(p) => {
            let pf = format!("{f}.path");
            let p = object(p, &pf, ctx)?;
            let ty = opt_str(p, "type", &format!("{pf}.type"), ctx)
                .unwrap_or_else(|| "PathPrefix".into());
            let value =
                opt_str(p, "value", &format!("{pf}.value"), ctx).unwrap_or_else(|| "/".into());
            let vf = format!("{pf}.value");
            match ty.as_str() {
                "Exact" | "PathPrefix" => {
                    if !value.starts_with('/') {
                        ctx.err(&vf, format!("must start with '/', got {value:?}"));
                    } else if value.contains("//")
                        || value.contains("/./")
                        || value.contains("/../")
                    {
                        ctx.err(
                            &vf,
                            format!("must not contain '//', '/./' or '/../', got {value:?}"),
                        );
                    }
                    if ty == "Exact" {
                        PathMatch::Exact(value)
                    } else {
                        PathMatch::Prefix(value)
                    }
                }
                "RegularExpression" => {
                    check_regex(&value, &vf, ctx);
                    PathMatch::Regex(value)
                }
                other => {
                    ctx.err(
                        &format!("{pf}.type"),
                        format!("must be Exact, PathPrefix or RegularExpression, got {other:?}"),
                    );
                    return None;
                }
            }
        }
    };
    let headers = value_matches(m.get("headers"), &format!("{f}.headers"), true, ctx);
    let query_params = value_matches(
        m.get("queryParams"),
        &format!("{f}.queryParams"),
        false,
        ctx,
    );
    let method = match opt_str(m, "method", &format!("{f}.method"), ctx) {
        Some(s) if METHODS.contains(&s.as_str()) => Some(s),
        Some(s) => {
            ctx.err(
                &format!("{f}.method"),
                format!("must be one of {}, got {s:?}", METHODS.join(", ")),
            );
            None
        }
        None => None,
    };
    Some(HttpMatch {
        path,
        headers,
        query_params,
        method,
    })
}

const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// Header (`header` true) or query parameter matches.
fn value_matches(v: Option<&Value>, f: &str, header: bool, ctx: &mut Ctx) -> Vec<HeaderMatch> {
    let mut out: Vec<HeaderMatch> = Vec::new();
    for (i, item) in list(v, f, ctx) {
        let f = format!("{f}[{i}]");
        let Some(m) = object(item, &f, ctx) else {
            continue;
        };
        let Some(name) = req_str(m, "name", &format!("{f}.name"), ctx) else {
            continue;
        };
        if header && !header_name(&name) {
            ctx.err(
                &format!("{f}.name"),
                format!("not an HTTP header name: {name:?}"),
            );
            continue;
        }
        if name.len() > 256 {
            ctx.err(&format!("{f}.name"), "must be at most 256 characters");
            continue;
        }
        let same = |a: &str, b: &str| {
            if header {
                a.eq_ignore_ascii_case(b)
            } else {
                a == b
            }
        };
        if out.iter().any(|h| same(&h.name, &name)) {
            ctx.err(&format!("{f}.name"), format!("duplicate match on {name:?}"));
        }
        let ty = opt_str(m, "type", &format!("{f}.type"), ctx).unwrap_or_else(|| "Exact".into());
        let Some(value) = req_str_allow_empty(m, "value", &format!("{f}.value"), ctx) else {
            continue;
        };
        let value = match ty.as_str() {
            "Exact" => {
                if header && !header_value(&value) {
                    ctx.err(
                        &format!("{f}.value"),
                        format!("not a valid header value: {value:?}"),
                    );
                }
                ValueMatch::Exact(value)
            }
            "RegularExpression" => {
                check_regex(&value, &format!("{f}.value"), ctx);
                ValueMatch::Regex(value)
            }
            other => {
                ctx.err(
                    &format!("{f}.type"),
                    format!("must be Exact or RegularExpression, got {other:?}"),
                );
                continue;
            }
        };
        let name = if header {
            name.to_ascii_lowercase()
        } else {
            name
        };
        out.push(HeaderMatch { name, value });
    }
    out
}

pub(super) fn req_str_allow_empty(
    m: &Map<String, Value>,
    key: &str,
    f: &str,
    ctx: &mut Ctx,
) -> Option<String> {
    match m.get(key) {
        Some(Value::String(s)) => Some(s.clone()),
        None | Some(Value::Null) => {
            ctx.err(f, "required");
            None
        }
        Some(other) => {
            ctx.err(f, format!("expected a string, got {}", type_name(other)));
            None
        }
    }
}

/// Compiles a pattern the way the proxy will (`regex` semantics and size limits).
pub(super) fn check_regex(pattern: &str, field: &str, ctx: &mut Ctx) {
    if let Err(e) = regex_automata::meta::Regex::new(pattern) {
        // The error's Display spans several lines (pattern, caret, reason): keep it on one.
        let msg = e
            .to_string()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        ctx.err(
            field,
            format!("invalid regular expression {pattern:?}: {msg}"),
        );
    }
}

fn grpc_match(v: &Value, f: &str, ctx: &mut Ctx) -> Option<GrpcMatch> {
    let m = object(v, f, ctx)?;
    let mut out = GrpcMatch {
        headers: value_matches(m.get("headers"), &format!("{f}.headers"), true, ctx),
        ..Default::default()
    };
    if let Some(method) = m.get("method").filter(|v| !v.is_null()) {
        let mf = format!("{f}.method");
        let mm = object(method, &mf, ctx)?;
        let ty = opt_str(mm, "type", &format!("{mf}.type"), ctx).unwrap_or_else(|| "Exact".into());
        match ty.as_str() {
            "Exact" => {}
            "RegularExpression" => ctx.err(
                &format!("{mf}.type"),
                "RegularExpression is not supported: the proxy API matches gRPC services and methods exactly (use Exact, or leave service or method out to match any)",
            ),
            other => ctx.err(
                &format!("{mf}.type"),
                format!("must be Exact, got {other:?}"),
            ),
        }
        out.service =
            opt_str(mm, "service", &format!("{mf}.service"), ctx).filter(|s| !s.is_empty());
        out.method = opt_str(mm, "method", &format!("{mf}.method"), ctx).filter(|s| !s.is_empty());
        if out.service.is_none() && out.method.is_none() {
            ctx.err(&mf, "must name a service, a method or both");
        }
        for (key, value) in [("service", &out.service), ("method", &out.method)] {
            if let Some(s) = value {
                let ok = s
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'.' || c == b'_');
                if !ok || (key == "method" && s.contains('.')) {
                    ctx.err(
                        &format!("{mf}.{key}"),
                        format!("not a gRPC {key} name: {s:?}"),
                    );
                }
            }
        }
    }
    Some(out)
}

fn backend_ref(
    kind: RouteKind,
    v: &Value,
    f: &str,
    route_ns: &str,
    all_prefix: bool,
    ctx: &mut Ctx,
) -> Option<BackendRef> {
    let m = object(v, f, ctx)?;
    let group = opt_str(m, "group", &format!("{f}.group"), ctx).unwrap_or_default();
    let bkind = opt_str(m, "kind", &format!("{f}.kind"), ctx).unwrap_or_else(|| "Service".into());
    let name = req_str(m, "name", &format!("{f}.name"), ctx);
    let namespace =
        opt_str(m, "namespace", &format!("{f}.namespace"), ctx).unwrap_or_else(|| route_ns.into());
    if let Err(e) = dns_label(&namespace) {
        ctx.err(&format!("{f}.namespace"), e);
    }
    let port = opt_port(m, "port", &format!("{f}.port"), ctx);
    let weight = match m.get("weight") {
        None | Some(Value::Null) => 1,
        Some(Value::Number(n)) => match n.as_u64() {
            Some(w) if w <= u64::from(MAX_WEIGHT) => w as u32,
            _ => {
                ctx.err(
                    &format!("{f}.weight"),
                    format!("must be 0..{MAX_WEIGHT}, got {n}"),
                );
                1
            }
        },
        Some(other) => {
            ctx.err(
                &format!("{f}.weight"),
                format!("must be 0..{MAX_WEIGHT}, got {other}"),
            );
            1
        }
    };
    let filters = if kind.is_connection() {
        let hint = "a connection route's backends have no filters";
        not_a_field(kind, m, "filters", &format!("{f}.filters"), hint, ctx);
        Vec::new()
    } else {
        filters(
            kind,
            m.get("filters"),
            &format!("{f}.filters"),
            all_prefix,
            ctx,
        )
    };
    let b = BackendRef {
        group,
        kind: bkind,
        namespace,
        name: name?,
        port,
        weight,
        filters,
    };
    if b.is_service() && b.port.is_none() {
        ctx.err(
            &format!("{f}.port"),
            "required when the backend is a Service",
        );
    }
    Some(b)
}

/// RFC 7230 token: what an HTTP header name may be.
pub(super) fn header_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

pub(super) fn header_value(s: &str) -> bool {
    s.len() <= 4096 && s.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

/// RFC 1123 host name; `wildcard` allows one leading `*.` label.
pub(super) fn hostname(s: &str, wildcard: bool) -> bool {
    let rest = match s.strip_prefix("*.") {
        Some(r) if wildcard => r,
        _ => s,
    };
    let lower = rest.to_ascii_lowercase();
    !lower.is_empty()
        && lower.len() <= 253
        && lower.parse::<std::net::IpAddr>().is_err()
        && lower.split('.').all(|l| dns_label(l).is_ok())
}
