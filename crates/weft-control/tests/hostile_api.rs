//! The HTTP API port against hostile clients over real sockets: slowloris and idle connections
//! (closed by the header timeout), oversized and endless headers (`431`), a huge body (`413`, by
//! its `content-length` and while streaming it chunked), malformed JSON and invalid UTF-8
//! (`400`), and 1,000 connections opened and abandoned past the connection limit (`503`). Each
//! refusal is counted on `GET /metrics`; a well-behaved client stays served and the process's
//! memory and descriptors stay bounded.

mod common;

use std::time::{Duration, Instant};

use common::hostile::{self, answer, closed_within, json_body, raw, refused, usage, Client};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use weft_control::api::limits::{Limits, DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_MAX_BODY};

/// An answer the API gives on the request's first bytes comes within this.
const PROMPT: Duration = Duration::from_secs(10);
/// A connection closed by the header timeout is closed within this.
const SILENT: Duration = Duration::from_secs(DEFAULT_HEADER_READ_TIMEOUT.as_secs() + 20);

async fn plane(test: &str, limits: Limits) -> (weft_control::Running, Client, std::path::PathBuf) {
    let dir = common::temp_dir(test);
    std::fs::write(dir.join("services.yaml"), hostile::SERVICES).unwrap();
    let cp = common::start(weft_control::Config {
        api_limits: limits,
        ..common::config(&dir)
    })
    .await;
    let client = Client::open(cp.grpc_addr, cp.api_addr).await;
    (cp, client, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_and_idle_connections_are_closed_by_the_header_timeout() {
    let _alone = hostile::alone().await;
    let (cp, mut client, _) = plane("api-slowloris", Limits::default()).await;
    client.check("start").await;
    let before = usage();
    let api = cp.api_addr;

    // 20 clients sending their head one header line every 500 ms, forever.
    let mut slow = Vec::new();
    for i in 0..20 {
        slow.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(api).await.unwrap();
            let start = Instant::now();
            s.write_all(b"PUT /v1/workloads/default/slow HTTP/1.1\r\n")
                .await
                .unwrap();
            let mut n = 0;
            loop {
                n += 1;
                let line = format!("x-slow-{i}-{n}: a\r\n");
                if s.write_all(line.as_bytes()).await.is_err() {
                    break;
                }
                let mut probe = [0u8; 1024];
                match tokio::time::timeout(
                    Duration::from_millis(500),
                    tokio::io::AsyncReadExt::read(&mut s, &mut probe),
                )
                .await
                {
                    Ok(Ok(0)) | Ok(Err(_)) => break,
                    Ok(Ok(got)) => {
                        let (status, text) = answer(&probe[..got]);
                        assert!(status.is_none_or(|s| s >= 400), "slowloris served: {text}");
                    }
                    Err(_) => {}
                }
                assert!(
                    start.elapsed() < SILENT,
                    "a slowloris connection still open"
                );
            }
            start.elapsed()
        }));
    }
    // 20 connections that send nothing, and one that idles after a request on keep-alive.
    let mut idle = Vec::new();
    for _ in 0..20 {
        idle.push(TcpStream::connect(api).await.unwrap());
    }
    let mut kept = TcpStream::connect(api).await.unwrap();
    let kept_at = Instant::now();
    kept.write_all(b"GET /live HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();

    // Meanwhile a well-behaved client is served.
    client.check("slowloris under way").await;

    let mut longest = Duration::ZERO;
    for t in slow {
        longest = longest.max(t.await.unwrap());
    }
    eprintln!("20 slowloris connections: the last closed after {longest:?}");
    for s in &mut idle {
        let closed = closed_within("an idle connection", s, SILENT).await;
        assert!(closed.received.is_empty() || answer(&closed.received).0 == Some(408));
    }
    let closed = closed_within("an idle keep-alive connection", &mut kept, SILENT).await;
    assert!(
        answer(&closed.received).0 == Some(200),
        "{:?}",
        String::from_utf8_lossy(&closed.received)
    );
    eprintln!(
        "an idle keep-alive connection: closed {:?} after its request",
        kept_at.elapsed()
    );
    drop((idle, kept));
    assert!(
        longest >= DEFAULT_HEADER_READ_TIMEOUT / 2,
        "closed before its timeout"
    );
    assert_eq!(
        hostile::refused_reaching(api, "header_timeout", 41).await,
        41
    );
    client.check("slowloris closed").await;

    let after = hostile::fds_settle(before.fds + hostile::FD_SLACK, SILENT).await;
    hostile::assert_bounded("slowloris on the API", before, after, 64 * 1024);
    cp.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_heads_bodies_and_bad_documents_get_precise_errors() {
    let _alone = hostile::alone().await;
    let (cp, mut client, dir) = plane("api-oversized", Limits::default()).await;
    client.check("start").await;
    let before = usage();
    let api = cp.api_addr;

    // One 100 KiB header, and 10,000 small ones.
    let big = format!(
        "GET /live HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    let start = Instant::now();
    let (status, text) = raw(api, big.as_bytes(), SILENT).await;
    eprintln!(
        "one 100 KiB header: {status:?} and closed after {:?}",
        start.elapsed()
    );
    assert_eq!(status, Some(431), "{text}");
    let mut endless = String::from("GET /live HTTP/1.1\r\nhost: x\r\n");
    for i in 0..10_000 {
        endless.push_str(&format!("x-{i}: b\r\n"));
    }
    endless.push_str("\r\n");
    let start = Instant::now();
    let (status, text) = raw(api, endless.as_bytes(), SILENT).await;
    eprintln!(
        "10,000 headers: {status:?} and closed after {:?}",
        start.elapsed()
    );
    assert_eq!(status, Some(431), "{text}");
    assert_eq!(
        hostile::refused_reaching(api, "header_too_large", 2).await,
        2
    );
    client.check("oversized headers").await;

    // A huge body announced by its length: refused before it is read.
    let mut s = TcpStream::connect(api).await.unwrap();
    s.write_all(
        b"POST /v1/resources HTTP/1.1\r\nhost: x\r\ncontent-type: application/yaml\r\ncontent-length: 1073741824\r\n\r\n",
    )
    .await
    .unwrap();
    let _ = s.write_all(&vec![b'#'; 256 * 1024]).await;
    let closed = closed_within("a 1 GiB body", &mut s, PROMPT).await;
    let (status, text) = answer(&closed.received);
    assert_eq!(status, Some(413), "{text}");
    let limit = DEFAULT_MAX_BODY.to_string();
    let msg = json_body(&text)["error"].as_str().unwrap().to_string();
    assert!(msg.contains(&limit), "{msg}");
    eprintln!("a body of 1 GiB announced: 413 after {:?}", closed.after);

    // The same streamed chunked, with no length: refused once the limit is passed.
    let mut s = TcpStream::connect(api).await.unwrap();
    s.write_all(
        b"PUT /v1/workloads/default/huge HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n",
    )
    .await
    .unwrap();
    let writer = tokio::spawn(async move {
        let chunk = format!("{:x}\r\n{}\r\n", 64 * 1024, " ".repeat(64 * 1024));
        // Up to 4 MiB, or until the plane stops reading.
        for _ in 0..64 {
            if s.write_all(chunk.as_bytes()).await.is_err() {
                break;
            }
        }
        s
    });
    let mut s = writer.await.unwrap();
    let closed = closed_within("a chunked body over the limit", &mut s, PROMPT).await;
    let (status, text) = answer(&closed.received);
    assert_eq!(status, Some(413), "{text}");
    assert_eq!(refused(api, "body_too_large").await, 2);
    client.check("huge bodies").await;

    // Malformed JSON, invalid UTF-8, a document of the wrong kind: 400 with why.
    let put = |body: &[u8]| {
        let mut req = format!(
            "PUT /v1/workloads/default/bad HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(body);
        req
    };
    for (body, says) in [
        (
            &b"{\"kind\": \"ExternalWorkload\", "[..],
            "invalid JSON or YAML",
        ),
        (&b"{\"kind\": \"\xff\xfe\"}"[..], "not UTF-8"),
        (&b"[1, 2"[..], "invalid JSON or YAML"),
        (
            &b"{\"apiVersion\": \"v1\", \"kind\": \"Service\"}"[..],
            "request body",
        ),
    ] {
        let (status, text) = raw(api, &put(body), PROMPT).await;
        assert_eq!(status, Some(400), "{text}");
        let msg = json_body(&text)["error"].as_str().unwrap().to_string();
        assert!(msg.contains(says), "{says}: {msg}");
    }
    // Nothing of it reached the store.
    let (_, list) = common::http_json(api, "GET", "/v1/workloads", "").await;
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["metadata"]["name"].as_str().unwrap())
        .collect();
    assert!(
        names.iter().all(|n| n.starts_with("good-")),
        "only the well-behaved client's workloads: {names:?}"
    );
    assert!(!dir.join(".registered/default.huge.yaml").exists());
    assert!(!dir.join(".registered/default.bad.yaml").exists());
    client.check("malformed documents").await;

    let after = hostile::fds_settle(before.fds + hostile::FD_SLACK, SILENT).await;
    hostile::assert_bounded("oversized input on the API", before, after, 64 * 1024);
    cp.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_abandoned_connections_past_the_limit_are_refused_and_counted() {
    let limits = Limits {
        max_connections: 200,
        ..Limits::default()
    };
    let _alone = hostile::alone().await;
    let (cp, mut client, _) = plane("api-abandoned", limits).await;
    client.check("start").await;
    let before = usage();
    let api = cp.api_addr;

    // 1,000 opened and dropped at once: nothing stays open.
    for _ in 0..1000 {
        drop(TcpStream::connect(api).await.unwrap());
    }
    let settled = hostile::fds_settle(before.fds + hostile::FD_SLACK, SILENT).await;
    hostile::assert_bounded("1,000 connections dropped", before, settled, 64 * 1024);
    client.check("1,000 connections opened and dropped").await;
    let refused_before = refused(api, "connections").await;

    // 1,000 opened and left silent: 200 hold a slot until the header timeout, the other 800
    // are answered 503 at once.
    let mut held = Vec::new();
    for _ in 0..1000 {
        held.push(TcpStream::connect(api).await.unwrap());
    }
    let during = usage();
    eprintln!(
        "1,000 silent API connections: VmRSS {} KiB, fds {} (the test's 1,000 included)",
        during.rss_kib, during.fds
    );
    let start = Instant::now();
    let (mut answered, mut silent) = (0, 0);
    for s in &mut held {
        let closed = closed_within("a silent API connection", s, SILENT).await;
        match answer(&closed.received) {
            (Some(503), text) => {
                let msg = json_body(&text)["error"].as_str().unwrap().to_string();
                assert!(msg.contains("200 connections"), "{msg}");
                answered += 1;
            }
            (None, _) => silent += 1,
            (_, text) => panic!("a silent connection was answered: {text}"),
        }
    }
    eprintln!(
        "1,000 silent API connections: {answered} answered 503, {silent} closed by the header \
         timeout, all within {:?}",
        start.elapsed()
    );
    assert_eq!((answered, silent), (800, 200));
    assert_eq!(refused(api, "connections").await - refused_before, 800);
    drop(held);
    client.check("1,000 silent connections").await;

    let after = hostile::fds_settle(before.fds + hostile::FD_SLACK, SILENT).await;
    hostile::assert_bounded("1,000 abandoned API connections", before, after, 64 * 1024);
    cp.shutdown().await.unwrap();
}
