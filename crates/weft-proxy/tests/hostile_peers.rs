//! Hostile peers against a real `weft-proxy` process: slowloris on both listeners, oversized and
//! endless headers, HTTP/2 rapid-reset, CONTINUATION, PING and SETTINGS floods, TLS garbage and
//! half handshakes on the mTLS port, a client that never reads its response, and 10,000
//! connections opened and abandoned. In each, another client is served during the attack, and
//! the proxy's resident memory and open descriptors (/proc) stay under a bound and come back
//! once the attack ends. Each test prints its measured figures (`FIGURE ...` on stderr,
//! `--nocapture`), recorded in docs/RELIABILITY.md, "Hostile peers".

mod common;

use std::{sync::Arc, time::Duration};

use common::hostile::{
    assert_served, h2, limited, metric, metrics_until, raise_nofile, start_app, status,
    until_frame, usage, Usage, POLL,
};
use common::process::{Proxy, SOON};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use weft_proxy::config;

/// Generous bounds: an attack may grow the proxy's memory by at most this much over its
/// baseline (the measured growth is a few MiB; see the figures).
const RSS_GROWTH_BOUND_KIB: u64 = 128 * 1024;

/// The proxy's usage now, and an assertion that it stays within the bounds of `base`: memory
/// growth under [`RSS_GROWTH_BOUND_KIB`], descriptors under `base + fds`.
fn within(proxy: &Proxy, base: Usage, fds: usize, what: &str) -> Usage {
    let now = usage(proxy.child.id().expect("running"));
    eprintln!(
        "FIGURE {what}: VmRSS {} KiB (baseline {} KiB, +{} KiB), fds {} (baseline {})",
        now.rss_kib,
        base.rss_kib,
        now.rss_kib.saturating_sub(base.rss_kib),
        now.fds,
        base.fds
    );
    assert!(
        now.rss_kib < base.rss_kib + RSS_GROWTH_BOUND_KIB,
        "{what}: VmRSS {} KiB from {} KiB",
        now.rss_kib,
        base.rss_kib
    );
    assert!(
        now.fds <= base.fds + fds as u64,
        "{what}: {} fds from {}",
        now.fds,
        base.fds
    );
    now
}

/// Waits (bounded) until the proxy's descriptors are back within `slack` of `base`: nothing
/// the attack opened is kept.
async fn fds_back(proxy: &Proxy, base: Usage, slack: usize, what: &str) {
    let pid = proxy.child.id().expect("running");
    let deadline = tokio::time::Instant::now() + SOON;
    loop {
        let now = usage(pid);
        if now.fds <= base.fds + slack as u64 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: {} fds still open (baseline {})",
            now.fds,
            base.fds
        );
        tokio::time::sleep(POLL).await;
    }
}

/// A started proxy in front of a fresh app, warmed with one request, and its baseline usage.
async fn proxy(vars: &[(&str, &str)]) -> (Proxy, Usage) {
    let app = start_app().await;
    let proxy = Proxy::start(app, vars).await;
    assert_served(proxy.forward, "warm-up").await;
    let base = usage(proxy.child.id().unwrap());
    (proxy, base)
}

/// Slowloris: connections whose request head arrives one byte at a time, forever.
#[tokio::test]
async fn slowloris_on_both_listeners_is_closed_at_the_idle_timeout() {
    const PER_LISTENER: usize = 200;
    let (proxy, base) = proxy(&[
        (config::ENV_INBOUND_IDLE_TIMEOUT, "2s"),
        (config::ENV_OUTBOUND_IDLE_TIMEOUT, "2s"),
    ])
    .await;
    let mut attackers = Vec::new();
    for addr in [proxy.forward, proxy.outbound] {
        for _ in 0..PER_LISTENER {
            let mut s = TcpStream::connect(addr).await.unwrap();
            attackers.push(tokio::spawn(async move {
                // The request line at once (detection sees HTTP/1), then the headers dribbled.
                s.write_all(b"GET / HTTP/1.1\r\nHost: web:8080\r\n")
                    .await
                    .unwrap();
                let dribble = b"x-slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                    .iter()
                    .cycle();
                for b in dribble {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    if s.write_all(&[*b]).await.is_err() {
                        return;
                    }
                }
            }));
        }
    }
    assert_served(proxy.forward, "slowloris").await;
    within(
        &proxy,
        base,
        2 * PER_LISTENER + 16,
        "slowloris, 400 connections",
    );
    // Every attacker's connection is closed: its writes fail.
    for a in attackers {
        tokio::time::timeout(SOON, a)
            .await
            .expect("closed by the idle timeout")
            .unwrap();
    }
    let text = metrics_until(proxy.admin, |t| {
        limited(t, "inbound", "idle_timeout") >= PER_LISTENER as u64
            && limited(t, "outbound", "idle_timeout") >= PER_LISTENER as u64
    })
    .await;
    eprintln!(
        "FIGURE slowloris: idle_timeout closings inbound {} outbound {}",
        limited(&text, "inbound", "idle_timeout"),
        limited(&text, "outbound", "idle_timeout")
    );
    fds_back(&proxy, base, 8, "after slowloris").await;
}

/// One header line of 1 MiB, and headers that never end.
#[tokio::test]
async fn oversized_and_endless_headers_are_refused() {
    let (proxy, base) = proxy(&[]).await;
    let huge = format!("x-huge: {}\r\n", "a".repeat(1024 * 1024));
    assert_eq!(status(proxy.forward, &huge).await, Some(431));
    assert_eq!(status(proxy.outbound, &huge).await, Some(431));

    // Endless: header lines as fast as the proxy takes them, until it stops taking them.
    let mut endless = Vec::new();
    for addr in [proxy.forward, proxy.outbound] {
        for _ in 0..20 {
            let mut s = TcpStream::connect(addr).await.unwrap();
            endless.push(tokio::spawn(async move {
                s.write_all(b"GET / HTTP/1.1\r\nHost: web:8080\r\n")
                    .await
                    .unwrap();
                let line =
                    b"x-more: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n".repeat(64);
                let mut sent = 0usize;
                while s.write_all(&line).await.is_ok() {
                    sent += line.len();
                    assert!(sent < 64 * 1024 * 1024, "64 MiB of headers taken");
                }
                sent
            }));
        }
    }
    assert_served(proxy.forward, "endless headers").await;
    let mut most = 0;
    for e in endless {
        let sent = tokio::time::timeout(SOON, e)
            .await
            .expect("cut off")
            .unwrap();
        most = most.max(sent);
    }
    eprintln!("FIGURE endless headers: at most {most} bytes sent before the proxy closed");
    within(&proxy, base, 16, "oversized and endless headers");
    let text = metrics_until(proxy.admin, |t| {
        limited(t, "inbound", "header_size") >= 21 && limited(t, "outbound", "header_size") >= 21
    })
    .await;
    assert_eq!(limited(&text, "inbound", "max_connections"), 0);
    fds_back(&proxy, base, 8, "after endless headers").await;
}

/// HTTP/2 rapid reset (CVE-2023-44487): HEADERS then RST_STREAM, stream after stream.
#[tokio::test]
async fn http2_rapid_reset_flood_is_cut_off() {
    let (proxy, base) = proxy(&[]).await;
    let mut s = TcpStream::connect(proxy.forward).await.unwrap();
    s.write_all(&h2::start(&[])).await.unwrap();
    let flood = tokio::spawn(async move {
        let block = h2::get("/", "web:8080");
        let mut sent = 0u32;
        for batch in 0..1000u32 {
            let mut out = Vec::new();
            for i in 0..100 {
                let id = 1 + 2 * (batch * 100 + i);
                out.extend(h2::headers(id, h2::END_HEADERS, &block));
                out.extend(h2::rst(id, h2::CANCEL));
            }
            if s.write_all(&out).await.is_err() {
                break;
            }
            sent += 100;
        }
        // Whatever the proxy answered last: a GOAWAY says why it stopped listening.
        let goaway = until_frame(&mut s, |f| (f.0 == h2::GOAWAY).then(|| h2::error_code(f))).await;
        (sent, goaway)
    });
    assert_served(proxy.forward, "rapid reset").await;
    let (sent, goaway) = tokio::time::timeout(SOON * 3, flood)
        .await
        .expect("flood ended")
        .unwrap();
    eprintln!("FIGURE rapid reset: {sent} streams opened and reset, GOAWAY {goaway:?}");
    assert_eq!(
        goaway,
        Some(Some(h2::ENHANCE_YOUR_CALM)),
        "the flood is cut off with GOAWAY ENHANCE_YOUR_CALM"
    );
    assert!(sent < 100_000, "cut off before the whole flood: {sent}");
    within(&proxy, base, 16, "rapid reset");
    metrics_until(proxy.admin, |t| limited(t, "inbound", "http2_flood") == 1).await;
    assert_served(proxy.forward, "after rapid reset").await;
}

/// CONTINUATION flood: a header block that never ends.
#[tokio::test]
async fn http2_continuation_flood_is_cut_off() {
    let (proxy, base) = proxy(&[]).await;
    let mut s = TcpStream::connect(proxy.forward).await.unwrap();
    let mut out = h2::start(&[]);
    out.extend(h2::headers(1, 0, &h2::get("/", "web:8080")));
    s.write_all(&out).await.unwrap();
    let flood = tokio::spawn(async move {
        let chunk = h2::frame(
            h2::CONTINUATION,
            0,
            1,
            &h2::literal("x-continued", &"a".repeat(100)),
        )
        .repeat(100);
        let mut frames = 0u64;
        while frames < 10_000_000 && s.write_all(&chunk).await.is_ok() {
            frames += 100;
        }
        let end = until_frame(&mut s, |f| (f.0 == h2::GOAWAY).then(|| h2::error_code(f))).await;
        (frames, end)
    });
    assert_served(proxy.forward, "CONTINUATION flood").await;
    let (frames, end) = tokio::time::timeout(SOON * 3, flood)
        .await
        .expect("flood ended")
        .unwrap();
    eprintln!(
        "FIGURE CONTINUATION flood: {frames} frames taken before the proxy closed, GOAWAY {end:?}"
    );
    assert!(frames < 10_000_000, "never cut off");
    assert_eq!(end, Some(Some(h2::ENHANCE_YOUR_CALM)));
    within(&proxy, base, 16, "CONTINUATION flood");
    metrics_until(proxy.admin, |t| limited(t, "inbound", "http2_flood") == 1).await;
    fds_back(&proxy, base, 8, "after CONTINUATION flood").await;
}

/// PING and SETTINGS floods from a client that never reads what the proxy answers.
#[tokio::test]
async fn http2_ping_and_settings_floods_stay_bounded() {
    let (proxy, base) = proxy(&[]).await;
    let mut floods = Vec::new();
    for kind in [h2::PING, h2::SETTINGS] {
        let mut s = TcpStream::connect(proxy.forward).await.unwrap();
        s.write_all(&h2::start(&[])).await.unwrap();
        floods.push(tokio::spawn(async move {
            let one = match kind {
                h2::PING => h2::frame(h2::PING, 0, 0, &[7; 8]),
                _ => h2::settings(&[(h2::SETTINGS_INITIAL_WINDOW_SIZE, 65_535)]),
            };
            let batch = one.repeat(1000);
            let mut frames = 0u64;
            // Never read: the proxy's answers pile up on its side until it stops reading too.
            while frames < 1_000_000 {
                match tokio::time::timeout(Duration::from_secs(2), s.write_all(&batch)).await {
                    Ok(Ok(())) => frames += 1000,
                    // Blocked: the proxy stopped reading (backpressure) — or closed.
                    _ => break,
                }
            }
            frames
        }));
    }
    assert_served(proxy.forward, "PING and SETTINGS floods").await;
    for (f, kind) in floods.into_iter().zip(["PING", "SETTINGS"]) {
        let frames = tokio::time::timeout(SOON * 3, f)
            .await
            .expect("flood ended")
            .unwrap();
        eprintln!(
            "FIGURE {kind} flood: {frames} frames written before the proxy stopped taking them"
        );
    }
    within(&proxy, base, 16, "PING and SETTINGS floods");
    assert_served(proxy.forward, "after the floods").await;
}

/// A client that asks for a large response and never reads it: HTTP/1 (socket not read) and
/// HTTP/2 (stream window 0, never opened).
#[tokio::test]
async fn a_client_that_never_reads_costs_bounded_memory() {
    const CLIENTS: usize = 20;
    let (proxy, base) = proxy(&[]).await;
    let mut held = Vec::new();
    for _ in 0..CLIENTS {
        let mut s = TcpStream::connect(proxy.forward).await.unwrap();
        s.write_all(b"GET /big HTTP/1.1\r\nHost: web:8080\r\n\r\n")
            .await
            .unwrap();
        held.push(s);
        let mut s = TcpStream::connect(proxy.forward).await.unwrap();
        let mut out = h2::start(&[(h2::SETTINGS_INITIAL_WINDOW_SIZE, 0)]);
        out.extend(h2::headers(
            1,
            h2::END_HEADERS | h2::END_STREAM,
            &h2::get("/big", "web:8080"),
        ));
        s.write_all(&out).await.unwrap();
        held.push(s);
    }
    // Let the responses start: the app writes, the proxy reads as far as it is let.
    let mut peak = base;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = usage(proxy.child.id().unwrap());
        peak.rss_kib = peak.rss_kib.max(now.rss_kib);
    }
    assert_served(proxy.forward, "clients that never read").await;
    eprintln!(
        "FIGURE never-reading clients: {CLIENTS} HTTP/1 + {CLIENTS} HTTP/2 asking for {} MiB each: \
         peak VmRSS {} KiB (baseline {} KiB)",
        common::hostile::BIG >> 20,
        peak.rss_kib,
        base.rss_kib
    );
    // Far under what buffering the responses would take (40 x 32 MiB).
    within(&proxy, base, 4 * CLIENTS + 16, "clients that never read");
    drop(held);
    fds_back(&proxy, base, 8, "after the never-reading clients left").await;
}

/// 10,000 connections opened and abandoned (never a byte sent), on a forward port whose app
/// is gone, while another forward port serves.
#[tokio::test]
async fn ten_thousand_abandoned_connections() {
    const N: usize = 10_000;
    raise_nofile(N as u64 + 2_000);
    let app = start_app().await;
    let gone = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let ports = format!("{},{gone}", app.port());
    let proxy = Proxy::start(app, &[(config::ENV_INBOUND_FORWARD_PORTS, &ports)]).await;
    let target = proxy.forwards[1];
    assert_served(proxy.forward, "warm-up").await;
    let base = usage(proxy.child.id().unwrap());

    let started = tokio::time::Instant::now();
    let mut conns = Vec::with_capacity(N);
    for _ in 0..N {
        conns.push(TcpStream::connect(target).await.expect("connect"));
    }
    eprintln!(
        "FIGURE abandoned: {N} connections opened in {:?}",
        started.elapsed()
    );
    assert_served(proxy.forward, "10,000 abandoned connections").await;
    let during = within(&proxy, base, N + 64, "10,000 abandoned connections held");
    drop(conns);
    fds_back(&proxy, base, 8, "after 10,000 abandoned connections").await;
    let after = usage(proxy.child.id().unwrap());
    eprintln!(
        "FIGURE abandoned: during {during:?}, after {after:?}, in {:?}",
        started.elapsed()
    );
    assert_served(proxy.forward, "after the abandoned connections").await;
}

/// TLS garbage and half handshakes on the inbound (mTLS) port of a proxy with identity.
#[tokio::test]
async fn tls_garbage_and_half_handshakes_are_closed() {
    let ca = Arc::new(common::ca::Ca::new());
    let cp = common::mesh::control_plane(&ca, Default::default()).await;
    let name = "web-1.default.serviceaccount.identity.weft.cluster.local";
    let token = common::mesh::token_file("hostile-tls")
        .display()
        .to_string();
    let app = start_app().await;
    let proxy = Proxy::start(
        app,
        &[
            (config::ENV_DESTINATION_SVC_ADDR, &cp),
            (config::ENV_IDENTITY_TOKEN_FILE, &token),
            (config::ENV_IDENTITY_LOCAL_NAME, name),
            (config::ENV_IDENTITY_TRUST_ANCHORS, &ca.anchor_pem),
        ],
    )
    .await;
    let deadline = tokio::time::Instant::now() + SOON;
    while common::admin(proxy.admin, "GET", "/ready").await.0 != 200 {
        assert!(tokio::time::Instant::now() < deadline, "certified in time");
        tokio::time::sleep(POLL).await;
    }
    let base = usage(proxy.child.id().unwrap());

    // A real ClientHello for the proxy's name, from rustls, and nothing after it.
    let hello = {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.anchor_der.clone()).unwrap();
        let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let mut c = rustls::ClientConnection::new(
            Arc::new(cfg),
            rustls::pki_types::ServerName::try_from(name).unwrap(),
        )
        .unwrap();
        let mut out = Vec::new();
        c.write_tls(&mut out).unwrap();
        out
    };
    let mut attacks = Vec::new();
    for i in 0..50usize {
        let mut s = TcpStream::connect(proxy.inbound).await.unwrap();
        let bytes = match i % 3 {
            // The whole ClientHello, then silence: the handshake never finishes.
            0 => hello.clone(),
            // Half a ClientHello.
            1 => hello[..hello.len() / 2].to_vec(),
            // A TLS record header, then garbage.
            _ => [&[0x16, 0x03, 0x01, 0x02, 0x00][..], &[0xab; 512]].concat(),
        };
        s.write_all(&bytes).await.unwrap();
        attacks.push(tokio::spawn(async move {
            let mut buf = Vec::new();
            // Bounded by the proxy: the detect timeout, or the handshake's.
            let _ = tokio::time::timeout(SOON, s.read_to_end(&mut buf))
                .await
                .expect("closed by the proxy in time");
        }));
    }
    assert_served(proxy.forward, "TLS garbage").await;
    within(&proxy, base, 64, "TLS garbage and half handshakes");
    for a in attacks {
        a.await.unwrap();
    }
    let text = metrics_until(proxy.admin, |t| {
        metric(
            t,
            "tls_handshake_errors_total{direction=\"inbound\",reason=\"timeout\"}",
        ) >= 17
    })
    .await;
    eprintln!(
        "FIGURE TLS half handshakes: {} handshake timeouts counted",
        metric(
            &text,
            "tls_handshake_errors_total{direction=\"inbound\",reason=\"timeout\"}"
        )
    );
    fds_back(&proxy, base, 8, "after TLS garbage").await;
}
