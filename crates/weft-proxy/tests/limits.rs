//! Each limit of `WEFT_PROXY_{INBOUND,OUTBOUND}_*` holds against a real `weft-proxy` process, and
//! `connections_limited_total{direction, limit}` counts what it closed: the connection over a
//! listener's limit is closed at accept while the others stay served; a 100 KiB request head is
//! answered 431; the 101st HTTP/2 stream is refused; idle connections are closed.

mod common;

use common::hostile::{
    assert_served, closed_by_peer, h2, limited, metrics_until, start_app, status, until_frame,
};
use common::process::Proxy;

use tokio::{io::AsyncWriteExt, net::TcpStream};
use weft_proxy::config;

/// One keep-alive HTTP/1.1 request on `s`, its `hello` response read to its end.
async fn keep_alive_request(s: &mut TcpStream) {
    s.write_all(b"GET / HTTP/1.1\r\nHost: web:8080\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let wait = async {
        let mut buf = [0u8; 1024];
        while !got.ends_with(b"hello") {
            let n = tokio::io::AsyncReadExt::read(s, &mut buf).await.unwrap();
            assert!(n > 0, "closed before the response ended");
            got.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(common::process::SOON, wait)
        .await
        .expect("response in time");
    assert!(got.starts_with(b"HTTP/1.1 200"));
}

#[tokio::test]
async fn a_connection_over_a_listeners_limit_is_closed_at_accept_the_others_stay_served() {
    let app = start_app().await;
    let proxy = Proxy::start(
        app,
        &[
            (config::ENV_INBOUND_MAX_CONNECTIONS, "3"),
            (config::ENV_OUTBOUND_MAX_CONNECTIONS, "2"),
            // Outbound connections that say nothing stay in detection meanwhile.
            (config::ENV_OUTBOUND_DETECT_TIMEOUT, "1m"),
        ],
    )
    .await;

    // Inbound: three keep-alive connections, each served once.
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(proxy.forward).await.unwrap();
        keep_alive_request(&mut s).await;
        held.push(s);
    }
    // The fourth is closed without an answer.
    let mut fourth = TcpStream::connect(proxy.forward).await.unwrap();
    let _ = fourth
        .write_all(b"GET / HTTP/1.1\r\nHost: web:8080\r\n\r\n")
        .await;
    assert!(closed_by_peer(&mut fourth).await.is_empty(), "no answer");
    // The three are still served.
    for s in &mut held {
        keep_alive_request(s).await;
    }
    let text = metrics_until(proxy.admin, |t| {
        limited(t, "inbound", "max_connections") == 1
    })
    .await;
    assert_eq!(limited(&text, "outbound", "max_connections"), 0);
    // A closed one frees its slot.
    drop(held.pop());
    let deadline = tokio::time::Instant::now() + common::process::SOON;
    while status(proxy.forward, "").await != Some(200) {
        assert!(tokio::time::Instant::now() < deadline, "a freed slot taken");
        tokio::time::sleep(common::hostile::POLL).await;
    }

    // Outbound, its own count: two silent connections, the third closed.
    let a = TcpStream::connect(proxy.outbound).await.unwrap();
    let b = TcpStream::connect(proxy.outbound).await.unwrap();
    let mut third = TcpStream::connect(proxy.outbound).await.unwrap();
    assert!(closed_by_peer(&mut third).await.is_empty());
    metrics_until(proxy.admin, |t| {
        limited(t, "outbound", "max_connections") == 1
    })
    .await;
    drop((a, b));
    // Inbound still served (each listener counts its own).
    assert_served(proxy.forward, "outbound refusals").await;
}

#[tokio::test]
async fn a_100_kib_request_head_is_answered_431_and_counted_on_both_sides() {
    let app = start_app().await;
    let proxy = Proxy::start(app, &[]).await;
    let big = format!("x-big: {}\r\n", "a".repeat(100 * 1024));
    assert_eq!(status(proxy.forward, &big).await, Some(431));
    assert_served(proxy.forward, "a refused head").await;
    // A head under the 64 KiB default passes.
    let fine = format!("x-big: {}\r\n", "a".repeat(60 * 1024));
    assert_eq!(status(proxy.forward, &fine).await, Some(200));
    // Outbound: refused before any routing.
    assert_eq!(status(proxy.outbound, &big).await, Some(431));
    let text = metrics_until(proxy.admin, |t| limited(t, "outbound", "header_size") == 1).await;
    assert_eq!(limited(&text, "inbound", "header_size"), 1, "{text}");
    // Every series is there from 0, so a dashboard's rate() has a start.
    assert!(
        text.contains(
            "connections_limited_total{direction=\"inbound\",limit=\"max_connections\"} 0"
        ),
        "{text}"
    );

    // Set lower, it holds there.
    let proxy = Proxy::start(app, &[(config::ENV_INBOUND_HTTP1_MAX_HEADER_SIZE, "2048")]).await;
    let head = format!("x-big: {}\r\n", "a".repeat(4096));
    assert_eq!(status(proxy.forward, &head).await, Some(431));
    metrics_until(proxy.admin, |t| limited(t, "inbound", "header_size") == 1).await;
}

#[tokio::test]
async fn the_101st_http2_stream_is_refused_the_first_100_are_served() {
    let app = start_app().await;
    let proxy = Proxy::start(app, &[]).await;
    let mut s = TcpStream::connect(proxy.forward).await.unwrap();
    let mut out = h2::start(&[]);
    // 101 requests whose bodies never end: every stream stays open.
    for i in 0..101u32 {
        out.extend(h2::headers(
            1 + 2 * i,
            h2::END_HEADERS,
            &h2::get("/", "web:8080"),
        ));
    }
    s.write_all(&out).await.unwrap();
    let refused = until_frame(&mut s, |f| {
        (f.0 == h2::RST_STREAM).then(|| (f.2, h2::error_code(f)))
    })
    .await
    .expect("a stream reset");
    assert_eq!(refused, (201, Some(h2::REFUSED_STREAM)), "the 101st only");
    // The first 100 are served: end stream 1's body, its response comes.
    s.write_all(&h2::frame(h2::DATA, h2::END_STREAM, 1, b""))
        .await
        .unwrap();
    let answered = until_frame(&mut s, |f| match f.0 {
        h2::HEADERS if f.2 == 1 => Some(true),
        h2::RST_STREAM | h2::GOAWAY => Some(false),
        _ => None,
    })
    .await;
    assert_eq!(answered, Some(true), "stream 1 answered");
    assert_served(proxy.forward, "a full HTTP/2 connection").await;

    // Set lower, it holds there: the 3rd of 3 refused.
    let proxy = Proxy::start(
        app,
        &[(config::ENV_INBOUND_HTTP2_MAX_CONCURRENT_STREAMS, "2")],
    )
    .await;
    let mut s = TcpStream::connect(proxy.forward).await.unwrap();
    let mut out = h2::start(&[]);
    for id in [1, 3, 5] {
        out.extend(h2::headers(id, h2::END_HEADERS, &h2::get("/", "web:8080")));
    }
    s.write_all(&out).await.unwrap();
    let refused = until_frame(&mut s, |f| (f.0 == h2::RST_STREAM).then_some(f.2)).await;
    assert_eq!(refused, Some(5));
}

#[tokio::test]
async fn idle_connections_are_closed_after_the_idle_timeout_and_counted() {
    let app = start_app().await;
    let proxy = Proxy::start(app, &[(config::ENV_INBOUND_IDLE_TIMEOUT, "300ms")]).await;

    // HTTP/1: served, then idle: closed.
    let mut s = TcpStream::connect(proxy.forward).await.unwrap();
    keep_alive_request(&mut s).await;
    assert!(closed_by_peer(&mut s).await.is_empty());

    // HTTP/2: served, then idle: GOAWAY, then closed.
    let mut s = TcpStream::connect(proxy.forward).await.unwrap();
    let mut out = h2::start(&[]);
    out.extend(h2::headers(
        1,
        h2::END_HEADERS | h2::END_STREAM,
        &h2::get("/", "web:8080"),
    ));
    s.write_all(&out).await.unwrap();
    let goaway = until_frame(&mut s, |f| (f.0 == h2::GOAWAY).then(|| h2::error_code(f))).await;
    assert_eq!(goaway, Some(Some(0)), "a graceful GOAWAY (NO_ERROR)");
    closed_by_peer(&mut s).await;

    let text = metrics_until(proxy.admin, |t| limited(t, "inbound", "idle_timeout") >= 2).await;
    assert_eq!(limited(&text, "inbound", "max_connections"), 0);
    // A request that keeps coming is not cut by the idle timeout of the connection.
    assert_served(proxy.forward, "idle closes").await;
}

/// The proxy raises its soft open-file limit to the hard one: under a soft limit of 1024 it could
/// hold ~500 proxied connections, far under the connection limits' 10,000.
#[tokio::test]
async fn the_proxy_raises_its_open_file_limit_to_the_hard_one() {
    let app = start_app().await;
    let proxy = Proxy::start_with_nofile(app, &[], 256).await;
    let limits =
        std::fs::read_to_string(format!("/proc/{}/limits", proxy.child.id().unwrap())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("Max open files");
    let fields: Vec<&str> = line.split_whitespace().collect();
    // "Max open files  SOFT  HARD  files"
    let (soft, hard) = (fields[3], fields[4]);
    assert_eq!(soft, hard, "{line}");
    assert_ne!(soft, "256", "{line}");
    assert_served(proxy.forward, "a raised limit").await;
}
