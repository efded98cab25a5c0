use super::{
    export::{self, Export},
    otlp::{self, ExportTraceServiceRequest, ExportTraceServiceResponse},
    propagation::{self as p, Formats, Incoming, Outgoing, Read, Sampled},
    *,
};
use crate::metrics::{TlsLabel, TRACE_EXPORT_ERRORS, TRACE_SPANS_DROPPED, TRACE_SPANS_EXPORTED};
use http::{HeaderMap, HeaderValue};
use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    time::Duration,
};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const SPAN: &str = "00f067aa0ba902b7";

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    pairs
        .iter()
        .map(|(k, v)| {
            (
                http::HeaderName::from_static(k),
                HeaderValue::from_str(v).unwrap(),
            )
        })
        .collect()
}

fn ctx(read: Read) -> Incoming {
    match read {
        Read::Context(c) => c,
        other => panic!("expected a context, got {other:?}"),
    }
}

#[test]
fn traceparent_valid_unsampled_and_malformed() {
    let tp = format!("00-{TRACE}-{SPAN}-01");
    let c = ctx(p::read(&headers(&[("traceparent", &tp)])));
    assert_eq!(p::to_hex(&c.trace_id), TRACE);
    assert_eq!(p::to_hex(&c.parent), SPAN);
    assert_eq!(c.sampled, Sampled::Yes);
    assert!(c.formats.w3c && !c.formats.b3_multi && !c.formats.b3_single);
    // Other flag bits do not matter; bit 0 is the decision.
    let tp = format!("00-{TRACE}-{SPAN}-02");
    assert_eq!(
        ctx(p::read(&headers(&[("traceparent", &tp)]))).sampled,
        Sampled::No
    );
    for bad in [
        format!("01-{TRACE}-{SPAN}-01"),                  // another version
        format!("00-{}-{SPAN}-01", TRACE.to_uppercase()), // upper case
        format!("00-{}-{SPAN}-01", "0".repeat(32)),       // zero trace id
        format!("00-{TRACE}-{}-01", "0".repeat(16)),      // zero parent
        format!("00-{TRACE}-{SPAN}-1"),                   // short flags
        format!("00-{TRACE}-{SPAN}-01-extra"),            // trailing data
        format!("00_{TRACE}-{SPAN}-01"),                  // separator
        format!("00-{}-{SPAN}-01", &TRACE[..30]),         // short id
        "garbage".to_string(),
    ] {
        assert_eq!(
            p::read(&headers(&[("traceparent", &bad)])),
            Read::Malformed,
            "{bad}"
        );
    }
    assert_eq!(p::read(&HeaderMap::new()), Read::None);
}

#[test]
fn b3_multi_forms() {
    let c = ctx(p::read(&headers(&[
        ("x-b3-traceid", TRACE),
        ("x-b3-spanid", SPAN),
        ("x-b3-sampled", "1"),
    ])));
    assert_eq!(
        (c.sampled, c.short_id, c.debug),
        (Sampled::Yes, false, false)
    );
    assert!(c.formats.b3_multi);
    // 64-bit trace ids are widened with zeros in front, and remembered as short.
    let c = ctx(p::read(&headers(&[
        ("x-b3-traceid", "a3ce929d0e0e4736"),
        ("x-b3-spanid", SPAN),
        ("x-b3-flags", "1"),
    ])));
    assert_eq!(p::to_hex(&c.trace_id), "0000000000000000a3ce929d0e0e4736");
    assert_eq!((c.sampled, c.short_id, c.debug), (Sampled::Yes, true, true));
    // No decision: deferred to the receiver.
    let c = ctx(p::read(&headers(&[
        ("x-b3-traceid", TRACE),
        ("x-b3-spanid", SPAN),
    ])));
    assert_eq!(c.sampled, Sampled::Deferred);
    let c = ctx(p::read(&headers(&[
        ("x-b3-traceid", TRACE),
        ("x-b3-spanid", SPAN),
        ("x-b3-sampled", "0"),
    ])));
    assert_eq!(c.sampled, Sampled::No);
    // `x-b3-sampled: 0` alone: do not sample.
    assert_eq!(p::read(&headers(&[("x-b3-sampled", "0")])), Read::Unsampled);
    for bad in [
        vec![("x-b3-traceid", TRACE)],                        // no span id
        vec![("x-b3-traceid", "abc"), ("x-b3-spanid", SPAN)], // bad width
        vec![("x-b3-traceid", TRACE), ("x-b3-spanid", "zz")], // bad span
        vec![
            ("x-b3-traceid", TRACE),
            ("x-b3-spanid", SPAN),
            ("x-b3-sampled", "yes"),
        ],
        vec![("x-b3-sampled", "1")], // decision, no ids
    ] {
        assert_eq!(p::read(&headers(&bad)), Read::Malformed, "{bad:?}");
    }
}

#[test]
fn b3_single_forms() {
    let c = ctx(p::read(&headers(&[("b3", &format!("{TRACE}-{SPAN}-1"))])));
    assert_eq!(c.sampled, Sampled::Yes);
    assert!(c.formats.b3_single);
    let c = ctx(p::read(&headers(&[(
        "b3",
        &format!("a3ce929d0e0e4736-{SPAN}-d-05e3ac9a4f6e3b90"),
    )])));
    assert_eq!((c.sampled, c.short_id, c.debug), (Sampled::Yes, true, true));
    let c = ctx(p::read(&headers(&[("b3", &format!("{TRACE}-{SPAN}"))])));
    assert_eq!(c.sampled, Sampled::Deferred);
    let c = ctx(p::read(&headers(&[("b3", &format!("{TRACE}-{SPAN}-0"))])));
    assert_eq!(c.sampled, Sampled::No);
    assert_eq!(p::read(&headers(&[("b3", "0")])), Read::Unsampled);
    for bad in [
        "1".to_string(),
        TRACE.to_string(),
        format!("{TRACE}-{SPAN}-x"),
        format!("{TRACE}-{SPAN}-1-zz"),
        format!("{TRACE}-{SPAN}-1-{SPAN}-more"),
    ] {
        assert_eq!(p::read(&headers(&[("b3", &bad)])), Read::Malformed, "{bad}");
    }
}

#[test]
fn formats_with_the_same_trace_are_all_rewritten_and_w3c_wins() {
    let other = "11111111111111111111111111111111";
    let h = headers(&[
        ("traceparent", &format!("00-{TRACE}-{SPAN}-01")),
        ("b3", &format!("{TRACE}-{SPAN}-1")),
        ("x-b3-traceid", other),
        ("x-b3-spanid", SPAN),
        ("x-b3-sampled", "1"),
    ]);
    let c = ctx(p::read(&h));
    assert_eq!(p::to_hex(&c.trace_id), TRACE);
    assert_eq!(
        c.formats,
        Formats {
            w3c: true,
            b3_single: true,
            b3_multi: false
        }
    );
    // A malformed traceparent does not hide a valid B3 context.
    let h = headers(&[
        ("traceparent", "nonsense"),
        ("b3", &format!("{TRACE}-{SPAN}-1")),
    ]);
    assert!(ctx(p::read(&h)).formats.b3_single);
}

#[test]
fn writing_keeps_the_received_format_width_and_flags() {
    let out = Outgoing {
        trace_id: ctx(p::read(&headers(&[("b3", &format!("{TRACE}-{SPAN}-1"))]))).trace_id,
        span_id: [1, 2, 3, 4, 5, 6, 7, 8],
        parent: Some([0xaa; 8]),
        debug: false,
        short_id: false,
    };
    let all = Formats {
        w3c: true,
        b3_multi: true,
        b3_single: true,
    };
    let mut h = headers(&[("tracestate", "vendor=1"), ("x-b3-flags", "0")]);
    p::write(&mut h, all, &out);
    let get = |h: &HeaderMap, k: &str| h.get(k).unwrap().to_str().unwrap().to_string();
    assert_eq!(
        get(&h, "traceparent"),
        format!("00-{TRACE}-0102030405060708-01")
    );
    assert_eq!(get(&h, "tracestate"), "vendor=1", "tracestate is kept");
    assert_eq!(
        get(&h, "b3"),
        format!("{TRACE}-0102030405060708-1-aaaaaaaaaaaaaaaa")
    );
    assert_eq!(get(&h, "x-b3-traceid"), TRACE);
    assert_eq!(get(&h, "x-b3-spanid"), "0102030405060708");
    assert_eq!(get(&h, "x-b3-parentspanid"), "aaaaaaaaaaaaaaaa");
    assert_eq!(get(&h, "x-b3-sampled"), "1");
    // The written headers read back as this span's context.
    let back = ctx(p::read(&h));
    assert_eq!(back.parent, out.span_id);

    // 64-bit B3 stays 64-bit; debug stays debug (and sends no x-b3-sampled).
    let short = Outgoing {
        trace_id: ctx(p::read(&headers(&[(
            "b3",
            &format!("a3ce929d0e0e4736-{SPAN}-d"),
        )])))
        .trace_id,
        debug: true,
        short_id: true,
        parent: None,
        ..out
    };
    let mut h = headers(&[("x-b3-parentspanid", "bbbbbbbbbbbbbbbb")]);
    p::write(&mut h, all, &short);
    assert_eq!(get(&h, "b3"), "a3ce929d0e0e4736-0102030405060708-d");
    assert_eq!(get(&h, "x-b3-traceid"), "a3ce929d0e0e4736");
    assert!(h.get("x-b3-parentspanid").is_none(), "a root has no parent");
    assert!(h.get("x-b3-sampled").is_none());
    assert_eq!(
        get(&h, "traceparent"),
        "00-0000000000000000a3ce929d0e0e4736-0102030405060708-01",
        "W3C ids are 128 bits"
    );
}

#[test]
fn sampling_decisions() {
    let c = |sampled| {
        let mut c = ctx(p::read(&headers(&[(
            "traceparent",
            &format!("00-{TRACE}-{SPAN}-01"),
        )])));
        c.sampled = sampled;
        Read::Context(c)
    };
    for sampler in [false, true] {
        // The caller's decision is followed whatever the sampler says.
        assert!(matches!(
            decide(c(Sampled::Yes), sampler),
            Decision::Continue(_)
        ));
        assert_eq!(decide(c(Sampled::No), sampler), Decision::Skip);
        assert_eq!(decide(Read::Unsampled, sampler), Decision::Skip);
    }
    // No decision: the sampler's.
    assert!(matches!(
        decide(c(Sampled::Deferred), true),
        Decision::Continue(_)
    ));
    assert_eq!(decide(c(Sampled::Deferred), false), Decision::Skip);
    assert_eq!(decide(Read::None, true), Decision::Root);
    assert_eq!(decide(Read::None, false), Decision::Skip);
    assert_eq!(decide(Read::Malformed, true), Decision::Root);
    assert_eq!(decide(Read::Malformed, false), Decision::Skip);
}

/// Records exports; fails while `fail` is set.
#[derive(Clone, Default)]
struct Script {
    got: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
    fail: Arc<Mutex<bool>>,
}

impl Export for Script {
    fn export(
        &mut self,
        req: ExportTraceServiceRequest,
    ) -> Pin<Box<dyn Future<Output = Result<ExportTraceServiceResponse, String>> + Send + '_>> {
        let fail = *self.fail.lock().unwrap();
        self.got.lock().unwrap().push(req);
        Box::pin(async move {
            if fail {
                Err("unavailable".into())
            } else {
                Ok(ExportTraceServiceResponse::default())
            }
        })
    }
}

fn source() -> export::Source {
    export::Source {
        resource: otlp::Resource {
            attributes: vec![otlp::KeyValue::string("service.name", "web")],
        },
        scope: otlp::InstrumentationScope {
            name: "weft-proxy".into(),
            version: "0".into(),
        },
    }
}

fn settings() -> export::Settings {
    export::Settings {
        queue: 8,
        batch: 3,
        interval: Duration::from_secs(1),
        backoff_min: Duration::from_secs(2),
        backoff_max: Duration::from_secs(8),
        timeout: Duration::from_secs(5),
    }
}

fn request(traceparent: &str) -> http::Request<()> {
    http::Request::get("http://web.default.svc.cluster.local/items?x=1")
        .header("traceparent", traceparent)
        .body(())
        .unwrap()
}

fn sampled() -> String {
    format!("00-{TRACE}-{SPAN}-01")
}

fn spans(script: &Script) -> Vec<usize> {
    script
        .got
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.resource_spans[0].scope_spans[0].spans.len())
        .collect()
}

/// Lets the exporter task run until it waits on time again.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn batches_fill_or_leave_after_the_interval() {
    let metrics = Metrics::new();
    let script = Script::default();
    let (tracer, task) =
        Tracer::with_exporter(0.0, None, &metrics, script.clone(), source(), settings());
    tokio::spawn(task);
    // Four sampled requests: one full batch of three at once, then one more after 1 s.
    for _ in 0..4 {
        let mut req = request(&sampled());
        let span = tracer.start(Kind::Outbound, &mut req).expect("sampled");
        tracer.end(span, &http::Response::new(()));
    }
    settle().await;
    assert_eq!(spans(&script), vec![3]);
    tokio::time::sleep(Duration::from_millis(900)).await;
    settle().await;
    assert_eq!(spans(&script), vec![3], "the interval is not over");
    tokio::time::sleep(Duration::from_millis(200)).await;
    settle().await;
    assert_eq!(spans(&script), vec![3, 1]);
    assert_eq!(metrics.counter_sum(TRACE_SPANS_EXPORTED, &[]), 4);
    let got = script.got.lock().unwrap();
    let rs = &got[0].resource_spans[0];
    assert_eq!(
        rs.resource.as_ref().unwrap().attributes[0].key,
        "service.name"
    );
    assert_eq!(rs.scope_spans[0].scope.as_ref().unwrap().name, "weft-proxy");
}

#[tokio::test(start_paused = true)]
async fn a_failing_collector_backs_off_and_the_full_queue_drops() {
    let metrics = Metrics::new();
    let script = Script::default();
    *script.fail.lock().unwrap() = true;
    let (tracer, task) =
        Tracer::with_exporter(0.0, None, &metrics, script.clone(), source(), settings());
    tokio::spawn(task);
    let end_one = || {
        let mut req = request(&sampled());
        let span = tracer.start(Kind::Inbound, &mut req).expect("sampled");
        tracer.end(span, &http::Response::new(()));
    };
    // A batch of three fails: dropped and counted; the exporter waits 2-3 s (backoff).
    for _ in 0..3 {
        end_one();
    }
    settle().await;
    assert_eq!(spans(&script), vec![3]);
    assert_eq!(metrics.counter_sum(TRACE_EXPORT_ERRORS, &[]), 1);
    let dropped = |reason| metrics.counter_sum(TRACE_SPANS_DROPPED, &[("reason", reason)]);
    assert_eq!(dropped("export_failed"), 3);
    // Meanwhile the queue (8) fills; two more are dropped at once, never waited for.
    for _ in 0..10 {
        end_one();
    }
    assert_eq!(dropped("queue_full"), 2);
    // The backoff is at least 2 s: nothing is sent before.
    tokio::time::sleep(Duration::from_millis(1900)).await;
    settle().await;
    assert_eq!(spans(&script).len(), 1);
    // The collector is back: after the backoff the queued spans leave in full batches.
    *script.fail.lock().unwrap() = false;
    tokio::time::sleep(Duration::from_secs(2)).await;
    settle().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    settle().await;
    assert_eq!(spans(&script), vec![3, 3, 3, 2]);
    assert_eq!(metrics.counter_sum(TRACE_SPANS_EXPORTED, &[]), 8);
    assert_eq!(metrics.counter_sum(TRACE_EXPORT_ERRORS, &[]), 1);
}

#[test]
fn spans_carry_ids_kinds_attributes_and_errors() {
    let metrics = Metrics::new();
    let (tracer, _task) = Tracer::with_exporter(
        0.0,
        Some("web.default.serviceaccount.identity.weft.cluster.local".into()),
        &metrics,
        Script::default(),
        source(),
        settings(),
    );
    let mut req = request(&sampled());
    let span = tracer.start(Kind::Outbound, &mut req).expect("sampled");
    let tp = req.headers()["traceparent"].to_str().unwrap().to_string();
    assert_eq!(tp, format!("00-{TRACE}-{}-01", p::to_hex(&span.span_id)));
    span.endpoint(
        "10.0.0.7:8080".parse().unwrap(),
        &TlsLabel::Established {
            peer_id: Some("api.default.serviceaccount.identity.weft.cluster.local".into()),
        },
    );
    span.route(&crate::policy::Meta {
        group: "gateway.networking.k8s.io".into(),
        kind: "HTTPRoute".into(),
        name: "items".into(),
        ..Default::default()
    });
    let resp = http::Response::builder()
        .status(503)
        .header("l5d-proxy-error", "no endpoints for api")
        .body(())
        .unwrap();
    let s = span.finish(&resp);
    assert_eq!(p::to_hex(&s.trace_id), TRACE);
    assert_eq!(p::to_hex(&s.parent_span_id), SPAN);
    assert_eq!(s.kind, otlp::SpanKind::Client as i32);
    assert_eq!(s.name, "GET /items");
    assert!(s.end_time_unix_nano >= s.start_time_unix_nano && s.start_time_unix_nano > 0);
    let attr = |k: &str| {
        s.attributes
            .iter()
            .find(|a| a.key == k)
            .and_then(|a| a.value.clone())
            .and_then(|v| v.value)
            .unwrap_or_else(|| panic!("no {k} in {:?}", s.attributes))
    };
    use otlp::Value::{Bool, Int, String as Str};
    assert_eq!(attr("http.request.method"), Str("GET".into()));
    assert_eq!(attr("url.path"), Str("/items".into()));
    assert_eq!(
        attr("server.address"),
        Str("web.default.svc.cluster.local".into())
    );
    assert_eq!(attr("network.protocol.version"), Str("1.1".into()));
    assert_eq!(attr("http.response.status_code"), Int(503));
    assert_eq!(attr("network.peer.address"), Str("10.0.0.7".into()));
    assert_eq!(attr("network.peer.port"), Int(8080));
    assert_eq!(attr("weft.direction"), Str("outbound".into()));
    assert_eq!(attr("weft.tls"), Bool(true));
    assert_eq!(
        attr("weft.server.id"),
        Str("api.default.serviceaccount.identity.weft.cluster.local".into())
    );
    assert_eq!(
        attr("weft.client.id"),
        Str("web.default.serviceaccount.identity.weft.cluster.local".into())
    );
    assert_eq!(attr("weft.route.kind"), Str("HTTPRoute".into()));
    assert_eq!(attr("weft.route.name"), Str("items".into()));
    let status = s.status.expect("an error status");
    assert_eq!(status.code, otlp::StatusCode::Error as i32);
    assert_eq!(status.message, "no endpoints for api");

    // A proxy-started trace (sample rate 1, no context): a root span, W3C written.
    let (tracer, _task) =
        Tracer::with_exporter(1.0, None, &metrics, Script::default(), source(), settings());
    let mut req = http::Request::get("/").body(()).unwrap();
    let span = tracer
        .start(Kind::Inbound, &mut req)
        .expect("sampled by the proxy");
    assert_eq!(span.parent, None);
    let tp = req.headers()["traceparent"].to_str().unwrap().to_string();
    let c = ctx(p::read(req.headers()));
    assert_eq!(
        (c.trace_id, c.parent),
        (span.trace_id, span.span_id),
        "{tp}"
    );
    let s = span.finish(&http::Response::new(()));
    assert!(s.parent_span_id.is_empty());
    assert_eq!(s.kind, otlp::SpanKind::Server as i32);
    assert!(s.status.is_none(), "2xx: unset status");

    // Unsampled: no span, headers untouched.
    let unsampled = format!("00-{TRACE}-{SPAN}-00");
    let (tracer, _task) =
        Tracer::with_exporter(1.0, None, &metrics, Script::default(), source(), settings());
    let mut req = request(&unsampled);
    assert!(tracer.start(Kind::Inbound, &mut req).is_none());
    assert_eq!(req.headers()["traceparent"], unsampled.as_str());
}
