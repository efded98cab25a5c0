//! The gRPC port against hostile peers over real sockets: random bytes, an HTTP/1 request, a TLS
//! ClientHello with the wrong ALPN, a TLS handshake left half done, a valid HTTP/2 preface then
//! garbage frames, and 1,000 connections opened and abandoned. Each is closed within a bound,
//! while a well-behaved client's `Destination.Get` stream keeps its updates, the API answers, and
//! the process's memory and descriptors stay bounded.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::hostile::{self, closed_within, noise, usage, Client};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use weft_control::grpc::transport::HANDSHAKE_TIMEOUT;

/// A hostile connection the plane rejects on its first bytes is closed within this.
const PROMPT: Duration = Duration::from_secs(5);
/// One left silent is closed by the handshake timeout; this is that plus generous slack.
const SILENT: Duration = Duration::from_secs(HANDSHAKE_TIMEOUT.as_secs() + 20);

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

async fn plane(test: &str) -> (weft_control::Running, Client) {
    let dir = common::temp_dir(test);
    std::fs::write(dir.join("services.yaml"), hostile::SERVICES).unwrap();
    let cp = common::start(common::config(&dir)).await;
    let client = Client::open(cp.grpc_addr, cp.api_addr).await;
    (cp, client)
}

/// Sends `bytes` on a new connection and reads until the plane closes it.
async fn send(cp: &weft_control::Running, what: &str, bytes: &[u8]) -> hostile::Closed {
    let mut s = TcpStream::connect(cp.grpc_addr).await.unwrap();
    // The plane may close before it has read everything: a failed write is an answer too.
    let _ = s.write_all(bytes).await;
    let closed = closed_within(what, &mut s, PROMPT).await;
    eprintln!(
        "{what}: closed after {:?}, {} bytes received",
        closed.after,
        closed.received.len()
    );
    closed
}

/// A TLS client of the plane offering `alpn`, verifying its certificate against its anchors.
fn tls_client(cp: &weft_control::Running, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    let anchors = weft_control::ca::pem_certificates(cp.trust_anchors_pem.as_bytes()).unwrap();
    let mut config = weft_control::tls::verifying(&anchors)
        .unwrap()
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

fn server_name(cp: &weft_control::Running) -> rustls::pki_types::ServerName<'static> {
    rustls::pki_types::ServerName::try_from(cp.control_identity.clone()).unwrap()
}

/// A frame header: 24-bit length, type, flags, stream id.
fn frame(len: u32, kind: u8, flags: u8, stream: u32) -> Vec<u8> {
    let mut f = len.to_be_bytes()[1..].to_vec();
    f.extend([kind, flags]);
    f.extend(stream.to_be_bytes());
    f
}

/// The preface, an empty SETTINGS, then a DATA frame on stream 0 (a connection error), a frame
/// claiming 16 MiB, and noise.
fn preface_then_garbage() -> Vec<u8> {
    let mut b = H2_PREFACE.to_vec();
    b.extend(frame(0, 0x4, 0, 0));
    b.extend(frame(4, 0x0, 0, 0));
    b.extend(b"oops");
    b.extend(frame(0xff_ffff, 0x1, 0x4, 1));
    b.extend(noise(7, 4096));
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_grpc_port_is_closed_and_the_plane_keeps_serving() {
    let _alone = hostile::alone().await;
    let (cp, mut client) = plane("grpc-garbage").await;
    client.check("start").await;
    let before = usage();

    // Random bytes, as a plaintext first byte and as a TLS record's.
    let mut random = noise(1, 64 * 1024);
    random[0] = b'x';
    send(&cp, "random bytes", &random).await;
    random[0] = 0x16;
    send(&cp, "random bytes after a TLS record type", &random).await;
    client.check("random bytes").await;

    // An HTTP/1 request: the port speaks HTTP/2 only, nothing is routed.
    let closed = send(
        &cp,
        "an HTTP/1 request",
        b"POST /io.linkerd.proxy.destination.Destination/Get HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n",
    )
    .await;
    assert!(
        !closed.received.starts_with(b"HTTP/1.1 2"),
        "an HTTP/1 request was answered: {:?}",
        String::from_utf8_lossy(&closed.received)
    );
    client.check("an HTTP/1 request").await;

    // A ClientHello offering only http/1.1: the handshake fails (no common protocol).
    let tcp = TcpStream::connect(cp.grpc_addr).await.unwrap();
    let start = Instant::now();
    let handshake = tokio::time::timeout(
        PROMPT,
        tls_client(&cp, &[b"http/1.1"]).connect(server_name(&cp), tcp),
    )
    .await
    .expect("the handshake ends in time");
    let Err(e) = handshake else {
        panic!("a wrong ALPN is served")
    };
    eprintln!(
        "a ClientHello with ALPN http/1.1: refused after {:?}: {e}",
        start.elapsed()
    );
    // The same client offering h2 is served: the refusal was the ALPN's.
    let tcp = TcpStream::connect(cp.grpc_addr).await.unwrap();
    let tls = tls_client(&cp, &[b"h2"])
        .connect(server_name(&cp), tcp)
        .await
        .expect("a ClientHello with ALPN h2 is served");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    drop(tls);
    client.check("a ClientHello with the wrong ALPN").await;

    // A valid preface then garbage frames, in plaintext and inside TLS.
    let closed = send(
        &cp,
        "an HTTP/2 preface then garbage",
        &preface_then_garbage(),
    )
    .await;
    assert!(
        !closed.received.is_empty(),
        "no SETTINGS/GOAWAY before closing"
    );
    let tcp = TcpStream::connect(cp.grpc_addr).await.unwrap();
    let mut tls = tls_client(&cp, &[b"h2"])
        .connect(server_name(&cp), tcp)
        .await
        .unwrap();
    let _ = tls.write_all(&preface_then_garbage()).await;
    let start = Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(
        PROMPT,
        tokio::io::AsyncReadExt::read_to_end(&mut tls, &mut buf),
    )
    .await
    .expect("the TLS connection is closed in time");
    eprintln!(
        "an HTTP/2 preface then garbage inside TLS: closed after {:?} ({read:?})",
        start.elapsed()
    );
    client.check("an HTTP/2 preface then garbage").await;

    // Half a ClientHello, then silence: closed by the handshake timeout.
    let mut s = TcpStream::connect(cp.grpc_addr).await.unwrap();
    s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc])
        .await
        .unwrap();
    let half = closed_within("a half TLS handshake", &mut s, SILENT).await;
    eprintln!("a half TLS handshake: closed after {:?}", half.after);
    assert!(
        half.after >= HANDSHAKE_TIMEOUT / 2,
        "closed before its timeout: {half:?}"
    );
    client.check("a half TLS handshake").await;

    let after = hostile::fds_settle(before.fds + hostile::FD_SLACK, SILENT).await;
    hostile::assert_bounded("garbage on the gRPC port", before, after, 64 * 1024);
    cp.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_abandoned_grpc_connections_are_closed() {
    let _alone = hostile::alone().await;
    let (cp, mut client) = plane("grpc-abandoned").await;
    client.check("start").await;
    let before = usage();

    // 1,000 opened and dropped at once.
    for _ in 0..1000 {
        drop(TcpStream::connect(cp.grpc_addr).await.unwrap());
    }
    client.check("1,000 connections opened and dropped").await;

    // 1,000 opened and left silent (half of them inside a TLS record): each is closed by the
    // plane, not by us.
    let mut held = Vec::new();
    for i in 0..1000 {
        let mut s = TcpStream::connect(cp.grpc_addr).await.unwrap();
        if i % 2 == 1 {
            s.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
        }
        held.push(s);
    }
    let during = usage();
    eprintln!(
        "1,000 silent connections held: VmRSS {} KiB, fds {} (the test's 1,000 included)",
        during.rss_kib, during.fds
    );
    client.check("1,000 silent connections held").await;
    let start = Instant::now();
    // In turn: the plane closes them all around the same time, each wait is bounded.
    for s in &mut held {
        closed_within("a silent connection", s, SILENT).await;
    }
    eprintln!(
        "1,000 silent connections: all closed by the plane {:?} after the last was opened",
        start.elapsed()
    );
    drop(held);
    client.check("1,000 silent connections closed").await;

    let after = hostile::fds_settle(before.fds + hostile::FD_SLACK, SILENT).await;
    hostile::assert_bounded("1,000 abandoned gRPC connections", before, after, 64 * 1024);
    cp.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_peers_that_stop_answering_are_closed_by_keepalive() {
    use weft_control::grpc::{KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT};
    let _alone = hostile::alone().await;
    let (cp, mut client) = plane("grpc-keepalive").await;
    client.check("start").await;
    let before = usage();

    // 200 clients that send the preface and SETTINGS, then never read nor answer a PING: a
    // peer that vanished without closing looks the same from the server.
    let mut silent = Vec::new();
    for _ in 0..200 {
        let mut s = TcpStream::connect(cp.grpc_addr).await.unwrap();
        let mut hello = H2_PREFACE.to_vec();
        hello.extend(frame(0, 0x4, 0, 0));
        s.write_all(&hello).await.unwrap();
        silent.push(s);
    }
    let start = Instant::now();
    // Meanwhile the well-behaved client (whose HTTP/2 client answers PINGs) keeps its stream.
    client.check("200 silent HTTP/2 peers").await;
    let bound = KEEPALIVE_INTERVAL + KEEPALIVE_TIMEOUT + Duration::from_secs(20);
    for s in &mut silent {
        closed_within("a silent HTTP/2 peer", s, bound).await;
    }
    let took = start.elapsed();
    eprintln!("200 silent HTTP/2 peers: all closed within {took:?}");
    assert!(
        took >= KEEPALIVE_INTERVAL,
        "closed before the keepalive: {took:?}"
    );
    drop(silent);
    client.check("200 silent HTTP/2 peers closed").await;
    let after = hostile::fds_settle(before.fds + hostile::FD_SLACK, SILENT).await;
    hostile::assert_bounded("200 silent HTTP/2 peers", before, after, 64 * 1024);
    cp.shutdown().await.unwrap();
}
