//! What `GET /v1/tap/{ns}/{workload}` asks and answers: its query string, the `ObserveRequest`
//! sent to the proxy, each `TapEvent` as one JSON line, and the `max_rps` limiter that drops
//! requests (with all their later events) beyond the rate the client asked for.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use linkerd2_proxy_api::http_types::{self, HttpMethod};
use linkerd2_proxy_api::net::TcpAddress;
use linkerd2_proxy_api::tap::observe_request::{extract, r#match, Extract, Match};
use linkerd2_proxy_api::tap::tap_event::{self, http::Event as HttpEvent, ProxyDirection};
use linkerd2_proxy_api::tap::{eos, ObserveRequest, TapEvent};
use serde_json::{json, Map, Value};
use tokio::time::Instant;

use crate::resource;

/// Linkerd's default `max_rps` of a tap.
pub const DEFAULT_MAX_RPS: u32 = 100;

/// What the destination filter `to` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ToKind {
    Workload,
    Service,
}

/// A parsed `GET /v1/tap/...` query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    /// `to=NS/NAME`: only requests to that destination.
    pub to: Option<(String, String)>,
    pub to_kind: ToKind,
    /// Path prefix.
    pub path: Option<String>,
    pub method: Option<http::Method>,
    /// Exact authority.
    pub authority: Option<String>,
    pub max_rps: u32,
    /// Requests to tap; 0: as many as the proxy allows.
    pub limit: u32,
    pub headers: bool,
}

impl Default for Query {
    fn default() -> Self {
        Query {
            to: None,
            to_kind: ToKind::Workload,
            path: None,
            method: None,
            authority: None,
            max_rps: DEFAULT_MAX_RPS,
            limit: 0,
            headers: false,
        }
    }
}

const PARAMS: &[&str] = &[
    "to",
    "to_kind",
    "path",
    "method",
    "authority",
    "max_rps",
    "limit",
    "headers",
];

/// Parses the query string; the error is the 400's message.
pub fn parse_query(query: Option<&str>) -> Result<Query, String> {
    let mut q = Query::default();
    let mut seen = HashSet::new();
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (key, raw) = pair.split_once('=').unwrap_or((pair, ""));
        if !PARAMS.contains(&key) {
            return Err(format!(
                "unknown query parameter {key:?}: expected one of {}",
                PARAMS.join(", ")
            ));
        }
        if !seen.insert(key) {
            return Err(format!("query parameter {key} given twice"));
        }
        let value = percent_decode(raw).map_err(|e| format!("{key}: {e}"))?;
        match key {
            "to" => {
                let (ns, name) = value
                    .split_once('/')
                    .ok_or_else(|| format!("to: expected NAMESPACE/NAME, got {value:?}"))?;
                resource::dns_label(ns).map_err(|e| format!("to: namespace: {e}"))?;
                resource::dns_label(name).map_err(|e| format!("to: name: {e}"))?;
                q.to = Some((ns.to_string(), name.to_string()));
            }
            "to_kind" => {
                q.to_kind = match value.as_str() {
                    "workload" => ToKind::Workload,
                    "service" => ToKind::Service,
                    other => {
                        return Err(format!(
                            "to_kind: expected workload or service, got {other:?}"
                        ))
                    }
                }
            }
            "path" => {
                if !value.starts_with('/') {
                    return Err(format!("path: must start with /, got {value:?}"));
                }
                q.path = Some(value);
            }
            "method" => {
                let m = http::Method::from_bytes(value.to_ascii_uppercase().as_bytes())
                    .map_err(|_| format!("method: not an HTTP method: {value:?}"))?;
                q.method = Some(m);
            }
            "authority" => {
                if value.is_empty() {
                    return Err("authority: must not be empty".into());
                }
                q.authority = Some(value);
            }
            "max_rps" => {
                q.max_rps = value.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                    format!("max_rps: expected a positive integer, got {value:?}")
                })?;
            }
            "limit" => {
                q.limit = value.parse().map_err(|_| {
                    format!("limit: expected a non-negative integer, got {value:?}")
                })?;
            }
            "headers" => {
                q.headers = match value.as_str() {
                    "true" | "" => true,
                    "false" => false,
                    other => return Err(format!("headers: expected true or false, got {other:?}")),
                }
            }
            _ => unreachable!("checked against PARAMS"),
        }
    }
    if q.to.is_none() && seen.contains("to_kind") {
        return Err("to_kind: given without to".into());
    }
    Ok(q)
}

/// `%XX` and `+` decoding of a query value.
fn percent_decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = b
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("bad percent-encoding in {s:?}"))?;
                out.push(hex);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} is not UTF-8"))
}

/// The proxy's request: every filter of the query, all of which must hold.
pub fn observe_request(q: &Query) -> ObserveRequest {
    use r#match::http::{string_match, Match as HttpMatch, StringMatch};
    use r#match::Match as M;
    let mut all = Vec::new();
    let label = |key: &str, value: &str| Match {
        r#match: Some(M::DestinationLabel(r#match::Label {
            key: key.into(),
            value: value.into(),
        })),
    };
    let http = |m: HttpMatch| Match {
        r#match: Some(M::Http(r#match::Http { r#match: Some(m) })),
    };
    if let Some((ns, name)) = &q.to {
        all.push(label("namespace", ns));
        // The keys the Destination service gives the endpoint's metric labels.
        let key = match q.to_kind {
            ToKind::Workload => "external_workload",
            ToKind::Service => "service",
        };
        all.push(label(key, name));
    }
    if let Some(p) = &q.path {
        all.push(http(HttpMatch::Path(StringMatch {
            r#match: Some(string_match::Match::Prefix(p.clone())),
        })));
    }
    if let Some(m) = &q.method {
        all.push(http(HttpMatch::Method(HttpMethod::from(m.clone()))));
    }
    if let Some(a) = &q.authority {
        all.push(http(HttpMatch::Authority(StringMatch {
            r#match: Some(string_match::Match::Exact(a.clone())),
        })));
    }
    ObserveRequest {
        limit: q.limit,
        r#match: (!all.is_empty()).then_some(Match {
            r#match: Some(M::All(r#match::Seq { matches: all })),
        }),
        extract: q.headers.then_some(Extract {
            extract: Some(extract::Extract::Http(extract::Http {
                extract: Some(extract::http::Extract::Headers(extract::http::Headers {})),
            })),
        }),
    }
}

/// `BASE:STREAM` of an event, if it has one.
pub fn event_id(ev: &TapEvent) -> Option<(u32, u64)> {
    let tap_event::Event::Http(h) = ev.event.as_ref()?;
    let id = match h.event.as_ref()? {
        HttpEvent::RequestInit(e) => e.id.as_ref(),
        HttpEvent::ResponseInit(e) => e.id.as_ref(),
        HttpEvent::ResponseEnd(e) => e.id.as_ref(),
    }?;
    Some((id.base, id.stream))
}

fn addr(a: &Option<TcpAddress>) -> Value {
    let Some(a) = a else { return Value::Null };
    let ip = a.ip.and_then(|ip| IpAddr::try_from(ip).ok());
    match (ip, u16::try_from(a.port)) {
        (Some(ip), Ok(port)) => json!(SocketAddr::new(ip, port).to_string()),
        _ => Value::Null,
    }
}

fn labels(l: Option<&HashMap<String, String>>) -> Value {
    let sorted: BTreeMap<_, _> = l.into_iter().flatten().collect();
    json!(sorted)
}

fn micros(d: &Option<prost_types::Duration>) -> Value {
    match d {
        Some(d) => {
            let d = Duration::try_from(*d).unwrap_or_default();
            json!(d.as_micros() as u64)
        }
        None => Value::Null,
    }
}

fn headers(h: &Option<http_types::Headers>) -> Value {
    let list: Vec<Value> = (h.iter().flat_map(|h| &h.headers))
        .map(|h| json!([h.name, String::from_utf8_lossy(&h.value)]))
        .collect();
    Value::Array(list)
}

fn method(m: &Option<HttpMethod>) -> Value {
    match m.clone().map(http::Method::try_from) {
        Some(Ok(m)) => json!(m.as_str()),
        _ => Value::Null,
    }
}

fn scheme(s: &Option<http_types::Scheme>) -> Value {
    let t = s.as_ref().and_then(|s| s.r#type.as_ref());
    match t.map(|t| -> Result<std::borrow::Cow<'static, str>, _> { t.try_into() }) {
        Some(Ok(s)) => json!(s),
        _ => Value::Null,
    }
}

/// One event as the API's JSON object; `None` for an event that is not an HTTP event (the
/// proxy sends no other kind today). `with_headers`: the query asked for them.
pub fn to_json(ev: &TapEvent, with_headers: bool) -> Option<Value> {
    let tap_event::Event::Http(h) = ev.event.as_ref()?;
    let direction = match ProxyDirection::try_from(ev.proxy_direction) {
        Ok(ProxyDirection::Inbound) => "inbound",
        Ok(ProxyDirection::Outbound) => "outbound",
        _ => "unknown",
    };
    let (base, stream) = event_id(ev).unwrap_or_default();
    let mut o = Map::new();
    o.insert("direction".into(), json!(direction));
    o.insert("source".into(), addr(&ev.source));
    o.insert("destination".into(), addr(&ev.destination));
    o.insert(
        "source_meta".into(),
        labels(ev.source_meta.as_ref().map(|m| &m.labels)),
    );
    o.insert(
        "destination_meta".into(),
        labels(ev.destination_meta.as_ref().map(|m| &m.labels)),
    );
    o.insert(
        "route_meta".into(),
        labels(ev.route_meta.as_ref().map(|m| &m.labels)),
    );
    o.insert("id".into(), json!(format!("{base}:{stream}")));
    let hdrs = match h.event.as_ref()? {
        HttpEvent::RequestInit(e) => {
            o.insert("type".into(), json!("request_init"));
            o.insert("method".into(), method(&e.method));
            o.insert("scheme".into(), scheme(&e.scheme));
            o.insert("authority".into(), json!(e.authority));
            o.insert("path".into(), json!(e.path));
            &e.headers
        }
        HttpEvent::ResponseInit(e) => {
            o.insert("type".into(), json!("response_init"));
            o.insert("status".into(), json!(e.http_status));
            o.insert("latency_us".into(), micros(&e.since_request_init));
            &e.headers
        }
        HttpEvent::ResponseEnd(e) => {
            o.insert("type".into(), json!("response_end"));
            o.insert("duration_us".into(), micros(&e.since_request_init));
            o.insert("response_bytes".into(), json!(e.response_bytes));
            let end = e.eos.as_ref().and_then(|eos| eos.end.as_ref());
            let (grpc, reset) = match end {
                Some(eos::End::GrpcStatusCode(c)) => (json!(c), Value::Null),
                Some(eos::End::ResetErrorCode(c)) => (Value::Null, json!(c)),
                None => (Value::Null, Value::Null),
            };
            o.insert("grpc_status".into(), grpc);
            o.insert("reset_code".into(), reset);
            &e.trailers
        }
    };
    if with_headers {
        o.insert("headers".into(), headers(hdrs));
    }
    Some(Value::Object(o))
}

/// Lets at most `max_rps` requests start per second (a fixed one-second window, as Linkerd's tap
/// API does); a request it refuses has every later event dropped too.
#[derive(Debug)]
pub struct Limiter {
    max_rps: u32,
    window: Instant,
    in_window: u32,
    dropped: HashSet<(u32, u64)>,
    /// Requests dropped so far.
    pub dropped_total: u64,
}

impl Limiter {
    pub fn new(max_rps: u32, now: Instant) -> Limiter {
        Limiter {
            max_rps,
            window: now,
            in_window: 0,
            dropped: HashSet::new(),
            dropped_total: 0,
        }
    }

    /// Whether `ev` goes to the client.
    pub fn admit(&mut self, ev: &TapEvent, now: Instant) -> bool {
        let Some(id) = event_id(ev) else { return true };
        let is = |f: fn(&HttpEvent) -> bool| match ev.event.as_ref() {
            Some(tap_event::Event::Http(h)) => h.event.as_ref().is_some_and(f),
            None => false,
        };
        if is(|e| matches!(e, HttpEvent::RequestInit(_))) {
            if now.duration_since(self.window) >= Duration::from_secs(1) {
                self.window = now;
                self.in_window = 0;
            }
            if self.in_window >= self.max_rps {
                self.dropped.insert(id);
                self.dropped_total += 1;
                return false;
            }
            self.in_window += 1;
            return true;
        }
        if is(|e| matches!(e, HttpEvent::ResponseEnd(_))) {
            return !self.dropped.remove(&id);
        }
        !self.dropped.contains(&id)
    }
}

#[cfg(test)]
#[path = "event_tests.rs"]
mod tests;
