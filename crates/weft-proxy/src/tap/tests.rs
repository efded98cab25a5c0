use std::{collections::BTreeMap, sync::Arc};

use linkerd2_proxy_api::{
    http_types,
    tap::{
        observe_request::{
            self,
            r#match::{self as m, http::string_match, tcp},
        },
        tap_event,
    },
};

use super::*;
use crate::metrics::{Direction, Labels, Metrics, TlsLabel};

fn peers() -> Peers {
    let mut dst = BTreeMap::new();
    dst.insert("namespace".to_string(), "shop".to_string());
    dst.insert("service".to_string(), "web".to_string());
    let labels = Labels {
        direction: Direction::Outbound,
        authority: None,
        target_addr: "10.1.2.3:8080".parse().unwrap(),
        tls: TlsLabel::Established {
            peer_id: Some("web.shop.serviceaccount.identity.weft.cluster.local".into()),
        },
        dst: Arc::new(dst),
    };
    let route = Meta {
        group: "gateway.networking.k8s.io".into(),
        kind: "HTTPRoute".into(),
        namespace: "shop".into(),
        name: "web-route".into(),
        section: String::new(),
        port: 0,
    };
    Peers::of(&labels, "127.0.0.1:40000".parse().unwrap(), Some(&route))
}

fn head<'a>(method: &'a http::Method, path: &'a str) -> Head<'a> {
    Head {
        method,
        scheme: "http",
        authority: "Web.Shop.svc.cluster.local:8080",
        path,
    }
}

fn wrap(inner: m::Match) -> observe_request::Match {
    observe_request::Match {
        r#match: Some(inner),
    }
}

fn http(h: m::http::Match) -> observe_request::Match {
    wrap(m::Match::Http(m::Http { r#match: Some(h) }))
}

fn string(exact: bool, v: &str) -> m::http::StringMatch {
    m::http::StringMatch {
        r#match: Some(if exact {
            string_match::Match::Exact(v.into())
        } else {
            string_match::Match::Prefix(v.into())
        }),
    }
}

fn net(ip: [u8; 4], mask: u32) -> m::Tcp {
    m::Tcp {
        r#match: Some(tcp::Match::Netmask(tcp::Netmask {
            ip: Some(std::net::IpAddr::from(ip).into()),
            mask,
        })),
    }
}

fn ports(min: u32, max: u32) -> m::Tcp {
    m::Tcp {
        r#match: Some(tcp::Match::Ports(tcp::PortRange { min, max })),
    }
}

fn label(k: &str, v: &str) -> m::Label {
    m::Label {
        key: k.into(),
        value: v.into(),
    }
}

/// Compiles and evaluates against [`peers`] and a GET (or `method`) of `/api/items`.
fn eval(m: observe_request::Match) -> bool {
    let compiled = Match::new(Some(m)).expect("valid match");
    compiled.matches(&peers(), &head(&http::Method::GET, "/api/items"))
}

#[test]
fn every_match_variant() {
    // No match: everything.
    let all = Match::new(None).unwrap();
    assert!(all.matches(&peers(), &head(&http::Method::GET, "/")));

    // Source / destination netmask and port range.
    assert!(eval(wrap(m::Match::Source(net([127, 0, 0, 0], 8)))));
    assert!(!eval(wrap(m::Match::Source(net([10, 0, 0, 0], 8)))));
    assert!(eval(wrap(m::Match::Destination(net([10, 1, 2, 3], 32)))));
    assert!(!eval(wrap(m::Match::Destination(net([10, 1, 2, 4], 32)))));
    assert!(eval(wrap(m::Match::Destination(net([0, 0, 0, 0], 0)))));
    assert!(eval(wrap(m::Match::Destination(ports(8000, 8999)))));
    assert!(eval(wrap(m::Match::Destination(ports(8080, 0)))));
    assert!(!eval(wrap(m::Match::Destination(ports(9000, 9999)))));
    assert!(eval(wrap(m::Match::Source(ports(40000, 40000)))));

    // HTTP scheme, method, authority (case-insensitive), path (exact / prefix).
    assert!(eval(http(m::http::Match::Scheme(
        http_types::Scheme::from("http")
    ))));
    assert!(!eval(http(m::http::Match::Scheme(
        http_types::Scheme::from("https")
    ))));
    assert!(eval(http(m::http::Match::Method(http::Method::GET.into()))));
    assert!(!eval(http(m::http::Match::Method(
        http::Method::POST.into()
    ))));
    assert!(eval(http(m::http::Match::Authority(string(
        true,
        "web.shop.svc.cluster.local:8080"
    )))));
    assert!(eval(http(m::http::Match::Authority(string(
        false, "WEB.shop"
    )))));
    assert!(!eval(http(m::http::Match::Authority(string(true, "web")))));
    assert!(eval(http(m::http::Match::Path(string(true, "/api/items")))));
    assert!(eval(http(m::http::Match::Path(string(false, "/api/")))));
    assert!(!eval(http(m::http::Match::Path(string(false, "/API")))));
    assert!(!eval(http(m::http::Match::Path(string(true, "/api")))));

    // Destination labels (discovery labels, tls, server_id) and route labels.
    assert!(eval(wrap(m::Match::DestinationLabel(label(
        "namespace",
        "shop"
    )))));
    assert!(eval(wrap(m::Match::DestinationLabel(label(
        "service", "web"
    )))));
    assert!(eval(wrap(m::Match::DestinationLabel(label("tls", "true")))));
    assert!(!eval(wrap(m::Match::DestinationLabel(label(
        "service", "db"
    )))));
    assert!(eval(wrap(m::Match::RouteLabel(label("name", "web-route")))));
    assert!(eval(wrap(m::Match::RouteLabel(label("kind", "HTTPRoute")))));
    assert!(!eval(wrap(m::Match::RouteLabel(label("name", "other")))));

    // All / Any / Not.
    let yes = || wrap(m::Match::DestinationLabel(label("service", "web")));
    let no = || wrap(m::Match::DestinationLabel(label("service", "db")));
    let seq = |ms: Vec<observe_request::Match>| m::Seq { matches: ms };
    assert!(eval(wrap(m::Match::All(seq(vec![yes(), yes()])))));
    assert!(!eval(wrap(m::Match::All(seq(vec![yes(), no()])))));
    assert!(eval(wrap(m::Match::Any(seq(vec![no(), yes()])))));
    assert!(!eval(wrap(m::Match::Any(seq(vec![no(), no()])))));
    assert!(eval(wrap(m::Match::Not(Box::new(no())))));
    assert!(!eval(wrap(m::Match::Not(Box::new(yes())))));
}

#[test]
fn invalid_matches_are_refused() {
    assert_eq!(
        Match::new(Some(observe_request::Match { r#match: None })),
        Err(MatchError::Empty)
    );
    assert!(matches!(
        Match::new(Some(wrap(m::Match::Source(net([10, 0, 0, 0], 33))))),
        Err(MatchError::Netmask(_))
    ));
    assert_eq!(
        Match::new(Some(wrap(m::Match::Source(ports(9000, 80))))),
        Err(MatchError::Ports(9000, 80))
    );
    assert_eq!(
        Match::new(Some(wrap(m::Match::Source(ports(70000, 0))))),
        Err(MatchError::Ports(70000, 0))
    );
}

#[test]
fn peers_labels_follow_direction() {
    let p = peers();
    assert_eq!(
        p.destination_labels.get("server_id").map(String::as_str),
        Some("web.shop.serviceaccount.identity.weft.cluster.local")
    );
    assert_eq!(
        p.source_labels.get("tls").map(String::as_str),
        Some("loopback")
    );
    let inbound = Labels {
        direction: Direction::Inbound,
        authority: None,
        target_addr: "10.0.0.5:8080".parse().unwrap(),
        tls: TlsLabel::Established {
            peer_id: Some("client.ns.serviceaccount.identity.weft.cluster.local".into()),
        },
        dst: Arc::new(BTreeMap::new()),
    };
    let p = Peers::of(&inbound, "10.0.0.9:5555".parse().unwrap(), None);
    assert_eq!(
        p.source_labels.get("client_id").map(String::as_str),
        Some("client.ns.serviceaccount.identity.weft.cluster.local")
    );
    assert_eq!(p.source_labels.get("tls").map(String::as_str), Some("true"));
    assert!(p.route_labels.is_empty());
}

fn request(path: &str) -> Request<()> {
    Request::get(format!("http://web.shop:8080{path}"))
        .body(())
        .unwrap()
}

#[tokio::test]
async fn nobody_tapping_is_one_load_and_no_event() {
    let taps = Taps::new(Metrics::new());
    assert!(!taps.is_active());
    let (reg, mut rx) = taps.register(Match::new(None).unwrap(), 0, false);
    assert!(taps.is_active());
    drop(reg);
    // The registration's end makes the fast path answer "nobody" again.
    assert!(!taps.is_active());
    assert!(taps.request(peers(), &request("/")).is_none());
    assert!(rx.try_recv().is_err());
}

#[tokio::test]
async fn events_and_limit() {
    let taps = Taps::new(Metrics::new());
    let path = Match::new(Some(http(m::http::Match::Path(string(false, "/api/"))))).unwrap();
    let (_reg, mut rx) = taps.register(path, 2, true);

    // Not matching: nothing claimed.
    assert!(taps.request(peers(), &request("/health")).is_none());

    let first = taps.request(peers(), &request("/api/a")).expect("tapped");
    let ev = rx.recv().await.unwrap();
    assert_eq!(
        ev.proxy_direction,
        tap_event::ProxyDirection::Outbound as i32
    );
    let Some(tap_event::Event::Http(tap_event::Http {
        event: Some(tap_event::http::Event::RequestInit(init)),
    })) = ev.event
    else {
        panic!("not a RequestInit: {ev:?}")
    };
    assert_eq!(init.path, "/api/a");
    assert_eq!(init.authority, "web.shop:8080");
    assert_eq!(init.id.as_ref().unwrap().stream, 0);
    assert!(init.headers.is_some(), "headers were asked for");

    let resp = first.response(Response::new(crate::http::boxed(
        http_body_util::Full::new(bytes::Bytes::from_static(b"hello")),
    )));
    let ev = rx.recv().await.unwrap();
    assert!(matches!(
        ev.event,
        Some(tap_event::Event::Http(tap_event::Http {
            event: Some(tap_event::http::Event::ResponseInit(ref r)),
        })) if r.http_status == 200
    ));
    let collected = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap();
    assert_eq!(collected.to_bytes().len(), 5);
    let ev = rx.recv().await.unwrap();
    let Some(tap_event::Event::Http(tap_event::Http {
        event: Some(tap_event::http::Event::ResponseEnd(end)),
    })) = ev.event
    else {
        panic!("not a ResponseEnd: {ev:?}")
    };
    assert_eq!(end.response_bytes, 5);
    assert_eq!(end.eos, None);

    // The second request is the last the limit allows: the tap leaves the registry, and its
    // stream ends once that request's response is gone.
    let second = taps.request(peers(), &request("/api/b")).expect("tapped");
    assert!(!taps.is_active());
    assert!(taps.request(peers(), &request("/api/c")).is_none());
    drop(second);
    let mut rest = 0;
    while rx.recv().await.is_some() {
        rest += 1;
    }
    assert_eq!(rest, 1, "only the second request's RequestInit");
}

#[tokio::test]
async fn a_full_channel_drops_the_request_and_counts() {
    let metrics = Metrics::new();
    let taps = Taps::new(metrics.clone());
    let (_reg, _rx) = taps.register(Match::new(None).unwrap(), 0, false);
    let mut held = Vec::new();
    for _ in 0..CHANNEL_CAPACITY + 3 {
        held.push(taps.request(peers(), &request("/")).expect("tapped"));
    }
    assert_eq!(metrics.counter_sum(TAP_EVENTS_DROPPED, &[]), 3);

    // A tap whose client went away while a request was tapped: its later events are not drops.
    held.clear();
    let taps = Taps::new(metrics.clone());
    let (reg, rx) = taps.register(Match::new(None).unwrap(), 0, false);
    let tapped = taps.request(peers(), &request("/")).expect("tapped");
    drop((reg, rx));
    drop(tapped.response(Response::new(crate::http::boxed(
        http_body_util::Empty::new(),
    ))));
    assert_eq!(metrics.counter_sum(TAP_EVENTS_DROPPED, &[]), 3);
}

/// The `ResponseEnd` of the next request tapped by a fresh tap, whose response body is `body`.
async fn end_of(body: Body, consume: bool) -> tap_event::http::ResponseEnd {
    let taps = Taps::new(Metrics::new());
    let (_reg, mut rx) = taps.register(Match::new(None).unwrap(), 0, true);
    let tapped = taps
        .request(peers(), &request("/svc/Method"))
        .expect("tapped");
    let resp = tapped.response(Response::new(body));
    if consume {
        let _ = http_body_util::BodyExt::collect(resp.into_body()).await;
    } else {
        drop(resp);
    }
    let mut last = None;
    while let Ok(ev) = rx.try_recv() {
        last = Some(ev);
    }
    match last.and_then(|e| e.event) {
        Some(tap_event::Event::Http(tap_event::Http {
            event: Some(tap_event::http::Event::ResponseEnd(end)),
        })) => end,
        other => panic!("not a ResponseEnd: {other:?}"),
    }
}

#[tokio::test]
async fn response_end_carries_grpc_status_trailers_and_resets() {
    use http_body_util::{BodyExt as _, Full, StreamBody};
    use linkerd2_proxy_api::tap::eos;

    // gRPC: the status from the trailers, which are included when headers were asked for.
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", "5".parse().unwrap());
    let body = Full::new(bytes::Bytes::from_static(b"abc"))
        .with_trailers(async move { Some(Ok::<_, std::convert::Infallible>(trailers)) });
    let end = end_of(crate::http::boxed(body), true).await;
    assert_eq!(end.response_bytes, 3);
    assert_eq!(
        end.eos.and_then(|e| e.end),
        Some(eos::End::GrpcStatusCode(5))
    );
    assert!(end
        .trailers
        .unwrap()
        .headers
        .iter()
        .any(|h| h.name == "grpc-status"));

    // A body that fails: the HTTP/2 reason when there is one, else INTERNAL_ERROR.
    let frames: Vec<Result<http_body::Frame<bytes::Bytes>, crate::http::BoxError>> = vec![
        Ok(http_body::Frame::data(bytes::Bytes::from_static(b"ab"))),
        Err(Box::new(h2::Error::from(h2::Reason::REFUSED_STREAM))),
    ];
    let body = StreamBody::new(futures_util::stream::iter(frames));
    let end = end_of(crate::http::boxed(body), true).await;
    assert_eq!(end.response_bytes, 2);
    assert_eq!(
        end.eos.and_then(|e| e.end),
        Some(eos::End::ResetErrorCode(u32::from(
            h2::Reason::REFUSED_STREAM
        )))
    );

    // Abandoned before its end: CANCEL.
    let body = StreamBody::new(futures_util::stream::pending::<
        Result<http_body::Frame<bytes::Bytes>, crate::http::BoxError>,
    >());
    let end = end_of(crate::http::boxed(body), false).await;
    assert_eq!(
        end.eos.and_then(|e| e.end),
        Some(eos::End::ResetErrorCode(u32::from(h2::Reason::CANCEL)))
    );
}
