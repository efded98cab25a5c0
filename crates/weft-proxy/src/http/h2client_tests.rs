//! The HTTP/2 client over real sockets, against hyper's server and raw `h2` servers: bodies that
//! stream both ways, flow control beyond the windows, a caller that gives up, keep-alive.

use super::*;
use crate::http::h2common::{self, testing::channel_body};
use http::{HeaderMap, HeaderName};
use http_body_util::{BodyExt, Full};
use std::{convert::Infallible, net::SocketAddr, time::Duration};
use tokio::net::{TcpListener, TcpStream};

/// A hyper HTTP/2 server: `/echo` streams the request body back as it arrives; anything else
/// answers with the length of the body it read.
async fn hyper_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async {
                    if req.uri().path() == "/echo" {
                        return Ok::<_, Infallible>(Response::new(boxed(req.into_body())));
                    }
                    let len = req.into_body().collect().await.unwrap().to_bytes().len();
                    Ok(Response::new(boxed(Full::new(Bytes::from(
                        len.to_string(),
                    )))))
                });
                let _ =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
            });
        }
    });
    addr
}

async fn client(addr: SocketAddr) -> Sender {
    let (sender, conn) = handshake(TcpStream::connect(addr).await.unwrap())
        .await
        .unwrap();
    tokio::spawn(conn.run(KeepAlive {
        interval: Duration::from_secs(10),
        timeout: Duration::from_secs(3),
    }));
    sender
}

fn post(path: &str, body: Body) -> Request<Body> {
    let mut req = Request::post(format!("http://svc.test{path}"))
        .body(body)
        .unwrap();
    *req.version_mut() = http::Version::HTTP_2;
    req
}

/// Both directions stream at once, as a bidirectional gRPC call does: the response head and a
/// first echoed chunk arrive while the request body is still open, and the body goes on
/// after the response has arrived.
#[tokio::test]
async fn request_and_response_bodies_stream_at_the_same_time() {
    let sender = client(hyper_server().await).await;
    let (tx, body) = channel_body();
    tx.send(Bytes::from_static(b"ping-1")).await.unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(5), sender.send(post("/echo", body)))
        .await
        .expect("the response head came while the request body was open")
        .unwrap_or_else(|e| panic!("{}", e.source));
    assert_eq!(resp.status(), 200);
    h2common::testing::assert_echoes_while_open(tx, resp.into_body()).await;
}

/// Bodies larger than every flow-control window (hyper's server grants 1 MiB per stream, our
/// send buffer is 1 MiB): one 3 MiB chunk, and 48 chunks of 64 KiB through a channel, arrive
/// whole.
#[tokio::test]
async fn bodies_beyond_the_windows_arrive_whole() {
    let sender = client(hyper_server().await).await;
    let big = Bytes::from(vec![7u8; 3 << 20]);
    let resp = sender
        .clone()
        .send(post("/count", boxed(Full::new(big))))
        .await
        .unwrap_or_else(|e| panic!("{}", e.source));
    let text = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(text, (3 << 20).to_string());

    let (tx, body) = channel_body();
    let feeding = tokio::spawn(async move {
        for _ in 0..48 {
            tx.send(Bytes::from(vec![1u8; 64 << 10])).await.unwrap();
        }
    });
    let resp = sender
        .send(post("/count", body))
        .await
        .unwrap_or_else(|e| panic!("{}", e.source));
    let text = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(text, (48 * (64 << 10)).to_string());
    feeding.await.unwrap();
}

/// A caller that stops waiting before the response (its request timed out, its client left)
/// resets the stream: the server sees CANCEL instead of a body that never ends.
#[tokio::test]
async fn a_caller_that_gives_up_resets_the_stream() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (seen_tx, seen) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut conn = h2::server::handshake(stream).await.unwrap();
        let (req, _respond) = conn.accept().await.unwrap().unwrap();
        // The connection goes on being driven while the body is read.
        tokio::spawn(async move { while conn.accept().await.is_some() {} });
        let mut body = req.into_body();
        let mut outcome = None;
        while let Some(chunk) = body.data().await {
            if let Err(e) = chunk {
                outcome = Some(e.reason());
                break;
            }
        }
        let _ = seen_tx.send(outcome);
    });
    let sender = client(addr).await;
    let (tx, body) = channel_body();
    tx.send(Bytes::from_static(b"partial")).await.unwrap();
    let waiting = sender.send(post("/slow", body));
    // Give up a moment after the request left.
    assert!(
        tokio::time::timeout(Duration::from_millis(200), waiting)
            .await
            .is_err(),
        "the server never answers"
    );
    let outcome = tokio::time::timeout(Duration::from_secs(5), seen)
        .await
        .expect("the server saw the stream end")
        .unwrap();
    assert_eq!(outcome, Some(Some(h2::Reason::CANCEL)));
    drop(tx);
}

/// Keep-alive: a peer that answers PINGs keeps the connection; one that stops reading (a dead
/// host, a partition) gets it closed after one unanswered PING, and the sender says so.
#[tokio::test]
async fn an_unanswered_keep_alive_ping_closes_the_connection() {
    let keep_alive = KeepAlive {
        interval: Duration::from_millis(100),
        timeout: Duration::from_millis(300),
    };
    // Answering: the connection outlives several PING intervals.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut conn = h2::server::handshake(stream).await.unwrap();
        while conn.accept().await.is_some() {}
    });
    let (sender, conn) = handshake(TcpStream::connect(addr).await.unwrap())
        .await
        .unwrap();
    let running = tokio::spawn(conn.run(keep_alive));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(!running.is_finished() && !sender.is_closed());

    // Silent: the server finishes the handshake, then stops reading.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (hold_tx, hold) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let conn = h2::server::handshake(stream).await.unwrap();
        let _ = hold.await;
        drop(conn);
    });
    let (sender, conn) = handshake(TcpStream::connect(addr).await.unwrap())
        .await
        .unwrap();
    // A request in flight on it: it fails, and says why.
    let in_flight = tokio::spawn({
        let sender = sender.clone();
        async move {
            sender
                .send(post("/x", boxed(Full::new(Bytes::new()))))
                .await
                .map(|_| ())
        }
    });
    let ended = tokio::time::timeout(Duration::from_secs(5), conn.run(keep_alive))
        .await
        .expect("the connection ends after an unanswered PING");
    let err = ended.expect_err("it ends with an error");
    assert!(err.to_string().contains("keep-alive PING"), "{err}");
    assert!(sender.is_closed());
    let failed = in_flight.await.unwrap().expect_err("the request fails");
    assert!(!failed.unsent && failed.closed);
    let text = failed.into_error().to_string();
    assert!(
        text.starts_with("no answer to a keep-alive PING within 300ms: "),
        "{text}"
    );
    drop(hold_tx);
}

/// Connection-specific headers are malformed in HTTP/2 (`h2` would refuse the request): they are
/// removed, with what `Connection` names; `TE: trailers` stays.
#[test]
fn connection_specific_headers_are_removed() {
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("connection", "x-hop"),
        ("x-hop", "1"),
        ("keep-alive", "5"),
        ("transfer-encoding", "chunked"),
        ("upgrade", "h2c"),
        ("te", "trailers"),
        ("x-end-to-end", "2"),
    ] {
        headers.insert(
            HeaderName::from_static(name),
            http::HeaderValue::from_static(value),
        );
    }
    strip_connection_headers(&mut headers);
    let mut left: Vec<_> = headers.keys().map(|k| k.as_str().to_owned()).collect();
    left.sort();
    assert_eq!(left, ["te", "x-end-to-end"]);

    let mut headers = HeaderMap::new();
    headers.insert(header::TE, http::HeaderValue::from_static("gzip"));
    strip_connection_headers(&mut headers);
    assert!(headers.is_empty());
}
