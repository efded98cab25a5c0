use super::*;
use linkerd2_proxy_api::tap::tap_event::http::{RequestInit, ResponseEnd, ResponseInit, StreamId};
use linkerd2_proxy_api::tap::tap_event::{EndpointMeta, Http};
use linkerd2_proxy_api::tap::Eos;

fn id(stream: u64) -> Option<StreamId> {
    Some(StreamId { base: 7, stream })
}

fn http_event(e: HttpEvent) -> TapEvent {
    TapEvent {
        source: Some(TcpAddress::from(
            "10.0.0.1:40000".parse::<SocketAddr>().unwrap(),
        )),
        destination: Some(TcpAddress::from(
            "10.0.0.2:8080".parse::<SocketAddr>().unwrap(),
        )),
        source_meta: Some(EndpointMeta {
            labels: HashMap::from([("tls".into(), "true".into())]),
        }),
        destination_meta: Some(EndpointMeta {
            labels: HashMap::from([
                ("tls".into(), "true".into()),
                ("namespace".into(), "demo".into()),
            ]),
        }),
        route_meta: None,
        proxy_direction: ProxyDirection::Outbound as i32,
        event: Some(tap_event::Event::Http(Http { event: Some(e) })),
    }
}

pub(crate) fn req(stream: u64) -> TapEvent {
    http_event(HttpEvent::RequestInit(RequestInit {
        id: id(stream),
        method: Some(http::Method::GET.into()),
        scheme: Some("http".into()),
        authority: "books.demo.svc.cluster.local:8080".into(),
        path: "/books".into(),
        headers: Some(http_types::Headers {
            headers: vec![http_types::headers::Header {
                name: "user-agent".into(),
                value: b"curl".to_vec(),
            }],
        }),
    }))
}

fn dur(micros: i32) -> Option<prost_types::Duration> {
    Some(prost_types::Duration {
        seconds: 0,
        nanos: micros * 1000,
    })
}

pub(crate) fn rsp(stream: u64) -> TapEvent {
    http_event(HttpEvent::ResponseInit(ResponseInit {
        id: id(stream),
        since_request_init: dur(1500),
        http_status: 200,
        headers: None,
    }))
}

pub(crate) fn end(stream: u64) -> TapEvent {
    http_event(HttpEvent::ResponseEnd(ResponseEnd {
        id: id(stream),
        since_request_init: dur(2500),
        since_response_init: dur(1000),
        response_bytes: 42,
        eos: Some(Eos::from_grpc_status(0)),
        trailers: None,
    }))
}

#[test]
fn queries_parse_with_defaults_and_reject_what_is_wrong() {
    assert_eq!(parse_query(None), Ok(Query::default()));
    let q = parse_query(Some(
        "to=demo/books&to_kind=service&path=%2Fbooks&method=get&authority=a%3A80&max_rps=5&limit=3&headers=true",
    ))
    .expect("valid");
    assert_eq!(q.to, Some(("demo".into(), "books".into())));
    assert_eq!(q.to_kind, ToKind::Service);
    assert_eq!(q.path.as_deref(), Some("/books"));
    assert_eq!(q.method, Some(http::Method::GET));
    assert_eq!(q.authority.as_deref(), Some("a:80"));
    assert_eq!((q.max_rps, q.limit, q.headers), (5, 3, true));
    for (bad, says) in [
        ("nope=1", "unknown query parameter"),
        ("limit=1&limit=2", "given twice"),
        ("to=books", "NAMESPACE/NAME"),
        ("to=Demo/books", "to: namespace"),
        ("to_kind=pod&to=a/b", "to_kind"),
        ("to_kind=service", "without to"),
        ("path=books", "must start with /"),
        ("max_rps=0", "max_rps"),
        ("limit=-1", "limit"),
        ("headers=yes", "headers"),
        ("path=%zz", "percent"),
    ] {
        let e = parse_query(Some(bad)).expect_err(bad);
        assert!(e.contains(says), "{bad}: {e}");
    }
}

#[test]
fn the_observe_request_matches_every_filter() {
    use r#match::Match as M;
    let empty = observe_request(&Query::default());
    assert_eq!(empty.limit, 0);
    assert!(empty.r#match.is_none(), "no filter: everything");
    assert!(empty.extract.is_none());

    let q = parse_query(Some(
        "to=demo/books&path=/b&method=POST&authority=x&limit=9&headers=true",
    ))
    .expect("valid");
    let r = observe_request(&q);
    assert_eq!(r.limit, 9);
    assert!(r.extract.is_some(), "headers asked for");
    let Some(Match {
        r#match: Some(M::All(seq)),
    }) = r.r#match
    else {
        panic!("an All match");
    };
    let kinds: Vec<String> = seq
        .matches
        .iter()
        .map(|m| match m.r#match.as_ref().expect("set") {
            M::DestinationLabel(l) => format!("label {}={}", l.key, l.value),
            M::Http(h) => format!("http {:?}", h.r#match.as_ref().expect("set")),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(kinds[0], "label namespace=demo");
    assert_eq!(kinds[1], "label external_workload=books");
    assert!(
        kinds[2].contains("Path") && kinds[2].contains("Prefix(\"/b\")"),
        "{}",
        kinds[2]
    );
    assert!(kinds[3].contains("Method"), "{}", kinds[3]);
    assert!(
        kinds[4].contains("Authority") && kinds[4].contains("Exact(\"x\")"),
        "{}",
        kinds[4]
    );

    let svc = observe_request(&parse_query(Some("to=demo/books&to_kind=service")).expect("valid"));
    let Some(Match {
        r#match: Some(M::All(seq)),
    }) = svc.r#match
    else {
        panic!("an All match");
    };
    assert!(matches!(&seq.matches[1].r#match, Some(M::DestinationLabel(l)) if l.key == "service"));
}

#[test]
fn events_become_the_api_json() {
    let r = to_json(&req(3), true).expect("http");
    assert_eq!(
        r,
        json!({
            "direction": "outbound", "source": "10.0.0.1:40000", "destination": "10.0.0.2:8080",
            "source_meta": {"tls": "true"}, "destination_meta": {"namespace": "demo", "tls": "true"},
            "route_meta": {}, "id": "7:3", "type": "request_init", "method": "GET",
            "scheme": "http", "authority": "books.demo.svc.cluster.local:8080", "path": "/books",
            "headers": [["user-agent", "curl"]],
        })
    );
    let r = to_json(&req(3), false).expect("http");
    assert!(r.get("headers").is_none(), "not asked for");
    let r = to_json(&rsp(3), false).expect("http");
    assert_eq!(
        (
            r["type"].as_str(),
            r["status"].as_u64(),
            r["latency_us"].as_u64()
        ),
        (Some("response_init"), Some(200), Some(1500))
    );
    let r = to_json(&end(3), false).expect("http");
    assert_eq!(r["type"], "response_end");
    assert_eq!(r["duration_us"], 2500);
    assert_eq!(r["response_bytes"], 42);
    assert_eq!(r["grpc_status"], 0);
    assert_eq!(r["reset_code"], Value::Null);
    let mut reset = end(4);
    if let Some(tap_event::Event::Http(Http {
        event: Some(HttpEvent::ResponseEnd(e)),
    })) = reset.event.as_mut()
    {
        e.eos = Some(Eos {
            end: Some(eos::End::ResetErrorCode(8)),
        });
    }
    let r = to_json(&reset, false).expect("http");
    assert_eq!(
        (r["grpc_status"].clone(), r["reset_code"].clone()),
        (Value::Null, json!(8))
    );
}

#[tokio::test(start_paused = true)]
async fn the_limiter_drops_requests_beyond_max_rps_with_their_later_events() {
    let start = Instant::now();
    let mut l = Limiter::new(2, start);
    assert!(l.admit(&req(1), start));
    assert!(l.admit(&req(2), start));
    assert!(!l.admit(&req(3), start), "third in the same second");
    assert!(l.admit(&rsp(1), start));
    assert!(
        !l.admit(&rsp(3), start),
        "a dropped request's later events go too"
    );
    assert!(!l.admit(&end(3), start));
    assert!(l.admit(&end(1), start));
    assert_eq!(l.dropped_total, 1);
    assert!(l.dropped.is_empty(), "forgotten at its end");
    tokio::time::advance(Duration::from_millis(999)).await;
    assert!(!l.admit(&req(4), Instant::now()));
    tokio::time::advance(Duration::from_millis(1)).await;
    assert!(l.admit(&req(5), Instant::now()), "a new second");
    assert!(l.admit(&req(6), Instant::now()));
    assert!(!l.admit(&req(7), Instant::now()));
    assert_eq!(l.dropped_total, 3);
}
