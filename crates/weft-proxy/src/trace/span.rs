//! One hop's span while its request is in flight: the ids, the start time, and attributes
//! gathered as the request path learns them (the route, the endpoint and its identity), turned
//! into an OTLP span at the response head.

use std::{
    net::SocketAddr,
    sync::Mutex,
    time::{SystemTime, UNIX_EPOCH},
};

use http::{Request, Response};

use super::{
    otlp::{self, KeyValue},
    propagation::{SpanId, TraceId},
};
use crate::{metrics::TlsLabel, policy::Meta};

/// Which side of the proxy the span is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A request from a peer to the local application: an OTLP SERVER span.
    Inbound,
    /// A request from the local application to a service: an OTLP CLIENT span.
    Outbound,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Inbound => "inbound",
            Kind::Outbound => "outbound",
        }
    }
}

/// A span in flight. Shared by reference with the steps that add attributes (hence the lock:
/// only sampled requests have a span, and nothing else contends for it).
#[derive(Debug)]
pub struct Span {
    pub kind: Kind,
    pub trace_id: TraceId,
    pub span_id: SpanId,
    /// The caller's span; `None` for a trace this proxy started.
    pub parent: Option<SpanId>,
    /// W3C `tracestate`, as it came.
    pub trace_state: String,
    name: String,
    start: SystemTime,
    attributes: Mutex<Vec<KeyValue>>,
}

/// Attribute names beyond the OpenTelemetry semantic conventions'.
pub mod attr {
    pub const DIRECTION: &str = "weft.direction";
    pub const TLS: &str = "weft.tls";
    pub const CLIENT_ID: &str = "weft.client.id";
    pub const SERVER_ID: &str = "weft.server.id";
    pub const ROUTE_GROUP: &str = "weft.route.group";
    pub const ROUTE_KIND: &str = "weft.route.kind";
    pub const ROUTE_NAME: &str = "weft.route.name";
    pub const PROXY_ERROR: &str = "weft.proxy_error";
}

impl Span {
    /// A span starting now for `req`: its method, path, authority and protocol version.
    pub fn start<B>(
        kind: Kind,
        ids: (TraceId, SpanId, Option<SpanId>),
        trace_state: String,
        req: &Request<B>,
    ) -> Span {
        let (trace_id, span_id, parent) = ids;
        let method = req.method().as_str();
        let path = req.uri().path();
        let mut attributes = vec![
            KeyValue::string(attr::DIRECTION, kind.as_str()),
            KeyValue::string("http.request.method", method),
            KeyValue::string("url.path", path),
            KeyValue::string("network.protocol.version", version(req.version())),
        ];
        if let Some(authority) = crate::http::authority_of(req) {
            attributes.push(KeyValue::string("server.address", authority));
        }
        Span {
            kind,
            trace_id,
            span_id,
            parent,
            trace_state,
            name: format!("{method} {path}"),
            start: SystemTime::now(),
            attributes: Mutex::new(attributes),
        }
    }

    fn push(&self, more: impl IntoIterator<Item = KeyValue>) {
        self.attributes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(more);
    }

    /// This proxy's identity: the server's on an inbound span, the client's on an outbound one.
    pub fn local_identity(&self, id: &str) {
        let key = match self.kind {
            Kind::Inbound => attr::SERVER_ID,
            Kind::Outbound => attr::CLIENT_ID,
        };
        self.push([KeyValue::string(key, id)]);
    }

    /// Inbound: who called (`peer`: its address; `tls`: the connection's TLS, with the client's
    /// verified identity).
    pub fn client(&self, peer: SocketAddr, tls: &TlsLabel) {
        let mut kv = vec![
            KeyValue::string("client.address", peer.ip().to_string()),
            KeyValue::int("client.port", i64::from(peer.port())),
            KeyValue::bool(attr::TLS, matches!(tls, TlsLabel::Established { .. })),
        ];
        if let TlsLabel::Established { peer_id: Some(id) } = tls {
            kv.push(KeyValue::string(attr::CLIENT_ID, &**id));
        }
        self.push(kv);
    }

    /// Outbound: the endpoint an attempt went to and its TLS (with the server's identity). A
    /// retried request keeps the last attempt's endpoint.
    pub fn endpoint(&self, addr: SocketAddr, tls: &TlsLabel) {
        let mut kv = vec![
            KeyValue::string("network.peer.address", addr.ip().to_string()),
            KeyValue::int("network.peer.port", i64::from(addr.port())),
            KeyValue::bool(attr::TLS, matches!(tls, TlsLabel::Established { .. })),
        ];
        if let TlsLabel::Established { peer_id: Some(id) } = tls {
            kv.push(KeyValue::string(attr::SERVER_ID, &**id));
        }
        let mut attrs = self.attributes.lock().unwrap_or_else(|p| p.into_inner());
        // A retry's endpoint replaces the previous attempt's.
        let keys: Vec<&str> = kv.iter().map(|k| k.key.as_str()).collect();
        attrs.retain(|a| !keys.contains(&a.key.as_str()));
        attrs.extend(kv);
    }

    /// The route that took the request, as the route metrics label it.
    pub fn route(&self, route: &Meta) {
        self.push([
            KeyValue::string(attr::ROUTE_GROUP, route.group.as_str()),
            KeyValue::string(attr::ROUTE_KIND, route.kind.as_str()),
            KeyValue::string(attr::ROUTE_NAME, route.name.as_str()),
        ]);
    }

    /// Ends the span at `resp`'s head: its status code; ERROR for a 5xx or an error the proxy
    /// answered (`l5d-proxy-error`, whose text becomes the status message).
    pub fn finish<B>(self, resp: &Response<B>) -> otlp::Span {
        let end = SystemTime::now();
        let code = resp.status().as_u16();
        let proxy_error = resp
            .headers()
            .get(crate::http::L5D_PROXY_ERROR)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let mut attributes = self
            .attributes
            .into_inner()
            .unwrap_or_else(|p| p.into_inner());
        attributes.push(KeyValue::int("http.response.status_code", i64::from(code)));
        let status = match (&proxy_error, code >= 500) {
            (None, false) => None,
            (message, _) => {
                attributes.push(KeyValue::string("error.type", code.to_string()));
                if let Some(e) = message {
                    attributes.push(KeyValue::string(attr::PROXY_ERROR, e.as_str()));
                }
                Some(otlp::Status {
                    message: message.clone().unwrap_or_default(),
                    code: otlp::StatusCode::Error as i32,
                })
            }
        };
        otlp::Span {
            trace_id: self.trace_id.to_vec(),
            span_id: self.span_id.to_vec(),
            trace_state: self.trace_state,
            parent_span_id: self.parent.map(|p| p.to_vec()).unwrap_or_default(),
            name: self.name,
            kind: match self.kind {
                Kind::Inbound => otlp::SpanKind::Server,
                Kind::Outbound => otlp::SpanKind::Client,
            } as i32,
            start_time_unix_nano: unix_nanos(self.start),
            end_time_unix_nano: unix_nanos(end.max(self.start)),
            attributes,
            status,
            // Sampled; the parent's remoteness is known (bit 8) and, when there is one, it is
            // remote (bit 9): the caller is always another process.
            flags: 0x01 | 0x100 | if self.parent.is_some() { 0x200 } else { 0 },
        }
    }
}

fn version(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_09 => "0.9",
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_11 => "1.1",
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_3 => "3",
        _ => "",
    }
}

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}
