//! Tap: live request events for `io.linkerd.proxy.tap.Tap/Observe` (Linkerd's tap API).
//!
//! [`Taps`] is the registry the request paths consult once per HTTP request (inbound: after the
//! request is authorized; outbound: once an endpoint is picked, per attempt). Nobody tapping
//! costs one relaxed atomic load ([`Taps::is_active`]) and nothing else. A tap is a compiled
//! [`Match`], a count of requests still to tap, and a bounded channel; events go in with
//! `try_send` (the request path never waits on a tap client): a full channel drops the rest of
//! that request's events and counts them (`tap_events_dropped_total`).
//!
//! Per tapped request: `RequestInit` when it is sent, `ResponseInit` at the response head,
//! `ResponseEnd` when the response body ends (bytes, `grpc-status`, or the reset code).
//! A tap ends when its client goes away (the registration drops) or once `limit` requests were
//! tapped (the last of them ends the stream when its response ends).
//!
//! The gRPC server and its mTLS listener live in [`server`].

pub mod body;
mod matcher;
pub mod server;

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed},
        Arc, Mutex,
    },
    time::Instant,
};

use http::{HeaderMap, Request, Response};
use linkerd2_proxy_api::{
    http_types,
    tap::{
        tap_event::{self, http::StreamId, EndpointMeta, ProxyDirection, RouteMeta},
        Eos, TapEvent,
    },
};
use tokio::sync::mpsc;

use crate::{
    http::Body,
    metrics::{Direction, Labels, Metrics, TlsLabel, TAP_EVENTS_DROPPED},
    policy::Meta,
};

pub use matcher::{Match, MatchError, StrMatch, TcpMatch};

/// `limit = 0` asks for the proxy's maximum (Linkerd's semantics).
pub const MAX_LIMIT: u64 = 10_000;
/// Events a tap buffers for its client before later requests' events are dropped.
pub const CHANNEL_CAPACITY: usize = 1024;

/// Every active tap of this proxy. Cheap to share (`Arc`).
pub struct Taps {
    /// Number of registered taps: the request path's only read when nobody taps.
    active: AtomicUsize,
    taps: Mutex<Vec<Arc<Tap>>>,
    next_id: AtomicU64,
    /// `StreamId.base`: one per tap.
    next_base: AtomicU32,
    metrics: Metrics,
}

/// One `Observe` call.
pub struct Tap {
    id: u64,
    matcher: Match,
    headers: bool,
    base: u32,
    /// Requests still to tap.
    remaining: AtomicU64,
    next_stream: AtomicU64,
    tx: mpsc::Sender<TapEvent>,
}

/// Removes its tap from the registry when dropped (the tap client went away).
pub struct Registration {
    taps: Arc<Taps>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.taps.remove(self.id);
    }
}

/// What a request's events say about where it came from and went (built only when tapping).
#[derive(Clone, Debug)]
pub struct Peers {
    pub direction: Direction,
    pub source: SocketAddr,
    pub destination: SocketAddr,
    pub source_labels: HashMap<String, String>,
    pub destination_labels: HashMap<String, String>,
    pub route_labels: HashMap<String, String>,
}

impl Peers {
    /// From a request's metric labels: `tls` (and `client_id` inbound, `server_id` outbound),
    /// the endpoint's discovery labels (the names the metrics put after `dst_`), and the route.
    pub fn of(labels: &Labels, source: SocketAddr, route: Option<&Meta>) -> Peers {
        let mut tls = HashMap::new();
        let peer_id = match &labels.tls {
            TlsLabel::Established { peer_id } => {
                tls.insert("tls".to_string(), "true".to_string());
                peer_id.clone()
            }
            TlsLabel::NoIdentity(reason) => {
                tls.insert("tls".to_string(), (*reason).to_string());
                None
            }
            TlsLabel::Passthru => {
                tls.insert("tls".to_string(), "opaque".to_string());
                None
            }
        };
        let mut source_labels = HashMap::new();
        let mut destination_labels: HashMap<String, String> = labels
            .dst
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        match labels.direction {
            Direction::Inbound => {
                source_labels.extend(tls.clone());
                if let Some(id) = peer_id {
                    source_labels.insert("client_id".into(), id.to_string());
                }
                destination_labels.extend(tls);
            }
            Direction::Outbound => {
                source_labels.insert("tls".into(), crate::metrics::NO_TLS_LOOPBACK.into());
                destination_labels.extend(tls);
                if let Some(id) = peer_id {
                    destination_labels.insert("server_id".into(), id.to_string());
                }
            }
        }
        let route_labels = route
            .map(|m| {
                [
                    ("group", &m.group),
                    ("kind", &m.kind),
                    ("namespace", &m.namespace),
                    ("name", &m.name),
                ]
                .into_iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect()
            })
            .unwrap_or_default();
        Peers {
            direction: labels.direction,
            source,
            destination: labels.target_addr,
            source_labels,
            destination_labels,
            route_labels,
        }
    }
}

/// A request's HTTP head as the matcher sees it.
pub struct Head<'a> {
    pub method: &'a http::Method,
    /// Lowercase; `http` when the request line names none.
    pub scheme: &'a str,
    pub authority: &'a str,
    pub path: &'a str,
}

impl Taps {
    pub fn new(metrics: Metrics) -> Arc<Taps> {
        Arc::new(Taps {
            active: AtomicUsize::new(0),
            taps: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(0),
            next_base: AtomicU32::new(0),
            metrics,
        })
    }

    /// Whether any tap is registered: the one read a request pays when nobody taps.
    #[inline]
    pub fn is_active(&self) -> bool {
        self.active.load(Relaxed) != 0
    }

    /// Starts a tap: `limit` requests (0 = [`MAX_LIMIT`]); its events arrive on the receiver,
    /// which ends once the registration dropped or the limit was reached and the last tapped
    /// request ended.
    pub fn register(
        self: &Arc<Self>,
        matcher: Match,
        limit: u64,
        headers: bool,
    ) -> (Registration, mpsc::Receiver<TapEvent>) {
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let limit = if limit == 0 {
            MAX_LIMIT
        } else {
            limit.min(MAX_LIMIT)
        };
        let id = self.next_id.fetch_add(1, Relaxed);
        let tap = Arc::new(Tap {
            id,
            matcher,
            headers,
            base: self.next_base.fetch_add(1, Relaxed),
            remaining: AtomicU64::new(limit),
            next_stream: AtomicU64::new(0),
            tx,
        });
        let mut taps = self.taps.lock().unwrap_or_else(|e| e.into_inner());
        taps.push(tap);
        self.active.store(taps.len(), Relaxed);
        drop(taps);
        (
            Registration {
                taps: self.clone(),
                id,
            },
            rx,
        )
    }

    fn remove(&self, id: u64) {
        let mut taps = self.taps.lock().unwrap_or_else(|e| e.into_inner());
        taps.retain(|t| t.id != id);
        self.active.store(taps.len(), Relaxed);
    }

    /// The taps `req` matches (each claims one of its remaining requests) and their
    /// `RequestInit`s sent; `None` when no tap wants it. Call only when [`Taps::is_active`].
    pub fn request<B>(&self, peers: Peers, req: &Request<B>) -> Option<Box<Tapped>> {
        let authority = crate::http::authority_of(req).unwrap_or_default();
        let scheme = req
            .uri()
            .scheme_str()
            .map(str::to_ascii_lowercase)
            .unwrap_or_else(|| "http".into());
        let head = Head {
            method: req.method(),
            scheme: &scheme,
            authority: &authority,
            path: req.uri().path(),
        };
        let mut claimed = Vec::new();
        {
            let mut taps = self.taps.lock().unwrap_or_else(|e| e.into_inner());
            let mut ended = false;
            for tap in taps.iter() {
                if !tap.matcher.matches(&peers, &head) {
                    continue;
                }
                let left = tap
                    .remaining
                    .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1));
                match left {
                    Ok(1) => {
                        ended = true;
                        claimed.push(tap.clone());
                    }
                    Ok(_) => claimed.push(tap.clone()),
                    Err(_) => ended = true,
                }
            }
            if ended {
                // Limit reached: no new requests; its channel closes with its last request.
                taps.retain(|t| t.remaining.load(Relaxed) > 0);
                self.active.store(taps.len(), Relaxed);
            }
        }
        if claimed.is_empty() {
            return None;
        }
        let streams: Vec<Stream> = claimed
            .into_iter()
            .map(|tap| Stream {
                id: StreamId {
                    base: tap.base,
                    stream: tap.next_stream.fetch_add(1, Relaxed),
                },
                tap,
                dropped: false,
            })
            .collect();
        let mut tapped = Box::new(Tapped {
            peers,
            streams,
            request_init: Instant::now(),
            response_init: None,
            grpc_status: None,
            metrics: self.metrics.clone(),
        });
        let method = http_types::HttpMethod::from(req.method().clone());
        let scheme = http_types::Scheme::from(scheme.as_str());
        tapped.emit(|id, headers| {
            tap_event::http::Event::RequestInit(tap_event::http::RequestInit {
                id: Some(id),
                method: Some(method.clone()),
                scheme: Some(scheme.clone()),
                authority: authority.clone(),
                path: req.uri().path().to_string(),
                headers: headers.then(|| to_headers(req.headers())),
            })
        });
        Some(tapped)
    }
}

/// One tapped request: its taps and what its later events need.
pub struct Tapped {
    peers: Peers,
    streams: Vec<Stream>,
    request_init: Instant,
    response_init: Option<Instant>,
    grpc_status: Option<u32>,
    metrics: Metrics,
}

struct Stream {
    tap: Arc<Tap>,
    id: StreamId,
    /// The channel was full once: the request's later events are not sent.
    dropped: bool,
}

impl Tapped {
    /// `ResponseInit` now, and the body wrapped to send `ResponseEnd` when it ends.
    pub fn response(mut self: Box<Self>, resp: Response<Body>) -> Response<Body> {
        let now = Instant::now();
        self.response_init = Some(now);
        self.grpc_status = grpc_status(resp.headers());
        let since = prost_duration(now - self.request_init);
        let status = resp.status().as_u16() as u32;
        let headers = resp.headers().clone();
        self.emit(|id, with_headers| {
            tap_event::http::Event::ResponseInit(tap_event::http::ResponseInit {
                id: Some(id),
                since_request_init: Some(since),
                http_status: status,
                headers: with_headers.then(|| to_headers(&headers)),
            })
        });
        resp.map(|b| crate::http::boxed(body::TapBody::new(b, self)))
    }

    /// The request failed in the proxy, which answers `status` with no body.
    pub fn failed(self: Box<Self>, status: http::StatusCode) {
        let mut empty = Response::new(crate::http::boxed(http_body_util::Empty::new()));
        *empty.status_mut() = status;
        // Dropping the (empty) body sends `ResponseEnd`.
        drop(self.response(empty));
    }

    /// The response body ended: `ResponseEnd` with what it carried.
    pub(crate) fn end(
        mut self: Box<Self>,
        bytes: u64,
        trailers: Option<&HeaderMap>,
        eos: Option<Eos>,
    ) {
        if let Some(g) = trailers.and_then(grpc_status) {
            self.grpc_status = Some(g);
        }
        let now = Instant::now();
        let since_request = prost_duration(now - self.request_init);
        let since_response = prost_duration(now - self.response_init.unwrap_or(now));
        let eos = eos.or_else(|| self.grpc_status.map(Eos::from_grpc_status));
        let trailers = trailers.cloned();
        self.emit(|id, with_headers| {
            tap_event::http::Event::ResponseEnd(tap_event::http::ResponseEnd {
                id: Some(id),
                since_request_init: Some(since_request),
                since_response_init: Some(since_response),
                response_bytes: bytes,
                eos,
                trailers: if with_headers {
                    trailers.as_ref().map(to_headers)
                } else {
                    None
                },
            })
        });
    }

    /// Sends one event to every tap of the request (skipping those that dropped it).
    fn emit(&mut self, event: impl Fn(StreamId, bool) -> tap_event::http::Event) {
        let Tapped {
            peers,
            streams,
            metrics,
            ..
        } = self;
        for s in streams.iter_mut().filter(|s| !s.dropped) {
            let ev = TapEvent {
                source: Some(peers.source.into()),
                source_meta: Some(EndpointMeta {
                    labels: peers.source_labels.clone(),
                }),
                route_meta: Some(RouteMeta {
                    labels: peers.route_labels.clone(),
                }),
                destination: Some(peers.destination.into()),
                destination_meta: Some(EndpointMeta {
                    labels: peers.destination_labels.clone(),
                }),
                proxy_direction: match peers.direction {
                    Direction::Inbound => ProxyDirection::Inbound,
                    Direction::Outbound => ProxyDirection::Outbound,
                } as i32,
                event: Some(tap_event::Event::Http(tap_event::Http {
                    event: Some(event(s.id, s.tap.headers)),
                })),
            };
            match s.tap.tx.try_send(ev) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    s.dropped = true;
                    metrics.count(TAP_EVENTS_DROPPED, None, &[]);
                }
                // The tap client went away: nothing is lost that anyone waits for.
                Err(mpsc::error::TrySendError::Closed(_)) => s.dropped = true,
            }
        }
    }
}

fn grpc_status(headers: &HeaderMap) -> Option<u32> {
    crate::http::grpc_status(headers).and_then(|g| u32::try_from(g).ok())
}

fn prost_duration(d: std::time::Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

fn to_headers(h: &HeaderMap) -> http_types::Headers {
    http_types::Headers {
        headers: h
            .iter()
            .map(|(k, v)| http_types::headers::Header {
                name: k.as_str().to_string(),
                value: v.as_bytes().to_vec(),
            })
            .collect(),
    }
}

#[cfg(test)]
#[path = "tap/tests.rs"]
mod tests;
