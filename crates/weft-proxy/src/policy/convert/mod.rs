//! `OutboundPolicy` protobuf → [`Policy`], validated once per update.
//!
//! An update is never rejected as a whole for one bad part: a bad match drops that match
//! (with a log line; a rule left without valid matches never matches), a bad filter becomes
//! [`Filter::Invalid`] and a bad backend [`BackendKind::Invalid`], so the requests that would
//! have used them fail with a precise `l5d-proxy-error` and every other route keeps working.
//! Only a policy without a protocol is refused ([`Error`]): the client then treats the
//! target as having no policy.
//!
//! The deprecated `request_timeout` fields are still read: older control planes set only them.
#![allow(deprecated)]

use super::*;
use crate::discovery;
use opaque::{opaque_routes, tls_routes};
use routes::{grpc_routes, http_routes};
pub(crate) use routes::{grpc_rule_matches, http_rule_matches};

mod opaque;
mod routes;
use linkerd2_proxy_api::{
    grpc_route as grpc_api, http_route as http_api, http_types, meta as meta_api,
    outbound::{self as api, proxy_protocol},
};

/// Why a whole update cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("the policy has no protocol")]
    NoProtocol,
}

pub fn policy(p: api::OutboundPolicy) -> Result<Policy, Error> {
    let parent = Arc::new(meta(p.metadata));
    let kind = p.protocol.and_then(|p| p.kind).ok_or(Error::NoProtocol)?;
    let protocol = match kind {
        proxy_protocol::Kind::Detect(d) => Protocol::Detect {
            timeout: d
                .timeout
                .and_then(|t| duration(t).ok())
                .unwrap_or(Duration::from_secs(10)),
            http1: d
                .http1
                .map(|h| http_routes(h.routes, h.failure_accrual))
                .unwrap_or_default(),
            http2: d
                .http2
                .map(|h| http_routes(h.routes, h.failure_accrual))
                .unwrap_or_default(),
            opaque: d
                .opaque
                .map(|o| opaque_routes(o.routes))
                .unwrap_or_default(),
        },
        proxy_protocol::Kind::Opaque(o) => Protocol::Opaque(opaque_routes(o.routes)),
        proxy_protocol::Kind::Http1(h) => Protocol::Http1(http_routes(h.routes, h.failure_accrual)),
        proxy_protocol::Kind::Http2(h) => Protocol::Http2(http_routes(h.routes, h.failure_accrual)),
        proxy_protocol::Kind::Grpc(g) => Protocol::Grpc(grpc_routes(g.routes, g.failure_accrual)),
        proxy_protocol::Kind::Tls(t) => Protocol::Tls(tls_routes(t.routes)),
    };
    Ok(Policy { parent, protocol })
}

pub fn meta(m: Option<meta_api::Metadata>) -> Meta {
    match m.and_then(|m| m.kind) {
        Some(meta_api::metadata::Kind::Default(name)) => Meta::default_named(&name),
        Some(meta_api::metadata::Kind::Resource(r)) => Meta {
            group: r.group,
            kind: r.kind,
            namespace: r.namespace,
            name: r.name,
            section: r.section,
            port: u16::try_from(r.port).unwrap_or(0),
        },
        None => Meta::default_named("unknown"),
    }
}

/// A protobuf duration as a `Duration`; negative or out-of-range durations are errors.
pub fn duration(d: prost_types::Duration) -> Result<Duration, String> {
    Duration::try_from(d).map_err(|e| format!("invalid duration: {e}"))
}

fn opt_duration(d: Option<prost_types::Duration>, what: &str) -> Result<Option<Duration>, String> {
    d.map(duration)
        .transpose()
        .map_err(|e| format!("{what}: {e}"))
        // Zero means "no timeout" in Gateway API and the proto.
        .map(|d| d.filter(|d| !d.is_zero()))
}

/// A rule (or a TLS route's SNI list) whose every match was invalid must not turn into a
/// match-all one.
fn never_if_all_invalid<M: Never>(matches: Vec<M>, had: bool) -> Vec<M> {
    if had && matches.is_empty() {
        vec![M::never()]
    } else {
        matches
    }
}

/// A match no request satisfies (stands in for a rule whose matches were all invalid).
pub trait Never {
    fn never() -> Self;
}

impl Never for HttpMatch {
    fn never() -> Self {
        HttpMatch {
            // A path always starts with `/`: an exact empty path never matches.
            path: Some(PathMatch::Exact(String::new())),
            ..HttpMatch::default()
        }
    }
}

impl Never for HostMatch {
    /// A name is never empty (selection treats an empty SNI as none).
    fn never() -> Self {
        HostMatch::Exact(String::new())
    }
}

impl Never for GrpcMatch {
    fn never() -> Self {
        GrpcMatch {
            service: Some(String::new()),
            ..GrpcMatch::default()
        }
    }
}

fn header_match(h: http_api::HeaderMatch) -> Result<HeaderMatch, String> {
    let name = HeaderName::from_bytes(h.name.as_bytes())
        .map_err(|_| format!("invalid header name {:?}", h.name))?;
    let value = match h.value {
        Some(http_api::header_match::Value::Exact(v)) => ValueMatch::Exact(v),
        Some(http_api::header_match::Value::Regex(r)) => ValueMatch::Regex(
            Regex::new(&r).map_err(|e| format!("header {name} regex {r:?}: {e}"))?,
        ),
        None => return Err(format!("header {name} has no value match")),
    };
    Ok(HeaderMatch { name, value })
}

fn method(m: http_types::HttpMethod) -> Result<Method, String> {
    use http_types::http_method::{Registered, Type};
    match m.r#type {
        Some(Type::Registered(n)) => {
            let r = Registered::try_from(n).map_err(|_| format!("unknown method number {n}"))?;
            Method::from_bytes(r.as_str_name().as_bytes()).map_err(|e| e.to_string())
        }
        Some(Type::Unregistered(s)) => {
            Method::from_bytes(s.as_bytes()).map_err(|_| format!("invalid method {s:?}"))
        }
        None => Err("method match without a method".into()),
    }
}

pub(crate) fn hosts(hosts: Vec<http_api::HostMatch>, route: &Meta) -> Vec<HostMatch> {
    hosts
        .into_iter()
        .filter_map(|h| match h.r#match {
            Some(http_api::host_match::Match::Exact(e)) => Some(HostMatch::Exact(
                e.trim_end_matches('.').to_ascii_lowercase(),
            )),
            Some(http_api::host_match::Match::Suffix(s)) if !s.reverse_labels.is_empty() => {
                let mut suffix = String::new();
                for label in s.reverse_labels.iter().rev() {
                    suffix.push('.');
                    suffix.push_str(&label.to_ascii_lowercase());
                }
                Some(HostMatch::Suffix(suffix))
            }
            _ => {
                tracing::warn!(%route, "policy: dropping an empty host or SNI match");
                None
            }
        })
        .collect()
}

fn ratio(r: Option<http_api::Ratio>) -> Result<Ratio, String> {
    match r {
        None => Ok(Ratio::ALWAYS),
        Some(r) if r.denominator == 0 => {
            Err("failure injector ratio has a zero denominator".into())
        }
        Some(r) => Ok(Ratio {
            numerator: r.numerator.min(r.denominator),
            denominator: r.denominator,
        }),
    }
}

fn header_modifier(
    add: Option<http_types::Headers>,
    set: Option<http_types::Headers>,
    remove: Vec<String>,
) -> Result<HeaderModifier, String> {
    let pairs = |h: Option<http_types::Headers>| -> Result<Vec<(HeaderName, HeaderValue)>, String> {
        h.map(|h| h.headers)
            .unwrap_or_default()
            .into_iter()
            .map(|h| {
                let name = HeaderName::from_bytes(h.name.as_bytes())
                    .map_err(|_| format!("header modifier: invalid header name {:?}", h.name))?;
                let value = HeaderValue::from_bytes(&h.value)
                    .map_err(|_| format!("header modifier: invalid value for {name}"))?;
                Ok((name, value))
            })
            .collect()
    };
    Ok(HeaderModifier {
        add: pairs(add)?,
        set: pairs(set)?,
        remove: remove
            .into_iter()
            .map(|n| {
                HeaderName::from_bytes(n.as_bytes())
                    .map_err(|_| format!("header modifier: invalid header name {n:?}"))
            })
            .collect::<Result<_, _>>()?,
    })
}

fn redirect(r: http_api::RequestRedirect) -> Result<Filter, String> {
    use http_types::scheme::{Registered, Type};
    let scheme = match r.scheme.and_then(|s| s.r#type) {
        None => None,
        Some(Type::Registered(n)) => match Registered::try_from(n) {
            Ok(Registered::Http) => Some(http::uri::Scheme::HTTP),
            Ok(Registered::Https) => Some(http::uri::Scheme::HTTPS),
            Err(_) => return Err(format!("redirect: unknown scheme number {n}")),
        },
        Some(Type::Unregistered(s)) => Some(
            s.parse()
                .map_err(|_| format!("redirect: invalid scheme {s:?}"))?,
        ),
    };
    let status = match r.status {
        0 => StatusCode::MOVED_PERMANENTLY,
        s @ 300..=399 => StatusCode::from_u16(s as u16).map_err(|e| e.to_string())?,
        s => return Err(format!("redirect status {s} is not a 3xx")),
    };
    let port = match r.port {
        0 => None,
        p => Some(u16::try_from(p).map_err(|_| format!("redirect port {p} is out of range"))?),
    };
    let path = match r.path.and_then(|p| p.replace) {
        None => None,
        Some(http_api::path_modifier::Replace::Full(p)) => Some(PathModifier::Full(p)),
        Some(http_api::path_modifier::Replace::Prefix(p)) => Some(PathModifier::Prefix(p)),
    };
    Ok(Filter::Redirect(Redirect {
        scheme,
        host: Some(r.host).filter(|h| !h.is_empty()),
        path,
        port,
        status,
    }))
}

/// The rule's timeouts; an invalid one is reported (and the rule made to fail) rather than
/// silently dropped.
fn timeouts(
    t: Option<http_api::Timeouts>,
    request_timeout: Option<prost_types::Duration>,
) -> (Timeouts, Option<String>) {
    let t = t.unwrap_or_default();
    let result = (|| {
        let legacy = opt_duration(request_timeout, "request_timeout")?;
        Ok::<_, String>(Timeouts {
            request: opt_duration(t.request, "timeouts.request")?.or(legacy),
            response: opt_duration(t.response, "timeouts.response")?,
            idle: opt_duration(t.idle, "timeouts.idle")?,
        })
    })();
    match result {
        Ok(t) => (t, None),
        Err(e) => (Timeouts::default(), Some(e)),
    }
}

/// A protocol's failure accrual for its backends' balancers. An invalid one does not eject
/// (failing every request for a bad accrual setting would be worse).
fn failure_accrual(f: Option<api::FailureAccrual>) -> AccrualConfig {
    f.map_or(Ok(AccrualConfig::default()), |f| {
        AccrualConfig::from_proto(&f)
    })
    .unwrap_or_else(|e| {
        tracing::warn!(error = %e, "policy: invalid failure accrual; endpoints are not ejected");
        AccrualConfig::default()
    })
}

fn missing(route: &Meta) -> RouteBackend {
    RouteBackend {
        backend: Arc::new(Backend {
            meta: Arc::new(Meta::default_named("invalid")),
            queue: QueueConfig::default(),
            kind: BackendKind::Invalid(format!("{route}: a weighted backend without a backend")),
        }),
        filters: Vec::new(),
        request_timeout: None,
    }
}

fn weighted(backends: Vec<(RouteBackend, u32)>) -> Distribution {
    let mut total = 0u64;
    let cumulative = backends
        .iter()
        .map(|(_, w)| {
            total += u64::from(*w);
            total
        })
        .collect();
    Distribution::RandomAvailable {
        backends: backends.into_iter().map(|(b, _)| b).collect(),
        cumulative,
    }
}

fn route_backend(
    b: Option<api::Backend>,
    mut filters: Vec<Filter>,
    request_timeout: Result<Option<Duration>, String>,
    route: &Meta,
) -> RouteBackend {
    let request_timeout = match request_timeout {
        Ok(t) => t,
        Err(e) => {
            filters.push(Filter::Invalid(e));
            None
        }
    };
    match b {
        Some(b) => RouteBackend {
            backend: Arc::new(backend(b)),
            filters,
            request_timeout,
        },
        None => missing(route),
    }
}

pub fn backend(b: api::Backend) -> Backend {
    use api::backend::{endpoint_discovery, Kind};
    let meta = Arc::new(meta(b.metadata));
    // A bad queue keeps the defaults: it only bounds waiting, the backend still works.
    let queue = b
        .queue
        .map_or(Ok(QueueConfig::default()), |q| QueueConfig::from_proto(&q))
        .unwrap_or_else(|e| {
            tracing::warn!(backend = %meta, error = %e, "policy: invalid queue; using the defaults");
            QueueConfig::default()
        });
    let kind = match b.kind {
        None => BackendKind::Invalid(format!("backend {meta} has no kind")),
        Some(Kind::Forward(wa)) => match discovery::endpoint(wa, &Default::default()) {
            Some(ep) => BackendKind::Forward(ep),
            None => {
                BackendKind::Invalid(format!("backend {meta}: forward without a valid address"))
            }
        },
        Some(Kind::Balancer(p2c)) => {
            let path = p2c
                .discovery
                .and_then(|d| d.kind)
                .map(|endpoint_discovery::Kind::Dst(d)| d.path);
            let load = LoadConfig::from_load(p2c.load.as_ref());
            match (path, load) {
                (Some(path), Ok(load)) if !path.is_empty() => BackendKind::Balancer { path, load },
                (_, Err(e)) => BackendKind::Invalid(format!("backend {meta}: {e}")),
                _ => BackendKind::Invalid(format!(
                    "backend {meta}: balancer without a discovery path"
                )),
            }
        }
    };
    Backend { meta, queue, kind }
}

#[cfg(test)]
mod tests;
