//! The HTTP/2 server over real sockets, with hyper's HTTP/2 client as the peer: bodies that
//! stream both ways, flow control beyond the windows, a client that resets its stream, the
//! response head's rules, trailers, CONNECT tunnels, and a handshake that never finishes.

use super::*;
use crate::http::h2common::{self, testing::channel_body};
use crate::{
    config::ServerLimits,
    http::{boxed, empty, upgrade_on},
    metrics::{Direction, Metrics, CONNECTIONS_LIMITED},
};
use http_body::Frame;
use http_body_util::{BodyExt, Full, StreamBody};
use std::{net::SocketAddr, time::Duration};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

const KEEP_ALIVE: KeepAlive = KeepAlive {
    interval: Duration::from_secs(10),
    timeout: Duration::from_secs(3),
};

/// Serves every connection to the returned address with `svc` (cloned per connection).
async fn server<S>(svc: S, limits: Arc<Limits>) -> SocketAddr
where
    S: Service<Request<RequestBody>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (svc, limits) = (svc.clone(), limits.clone());
            tokio::spawn(async move {
                // Never drained (the sender stays with the task).
                let (_tx, mut drain) = watch::channel(false);
                let _ = serve(stream, svc, &mut drain, KEEP_ALIVE, &limits).await;
            });
        }
    });
    addr
}

fn unmetered() -> Arc<Limits> {
    Arc::new(Limits::unmetered(ServerLimits::default()))
}

/// `/echo` streams the request body back as it arrives; anything else answers with the length
/// of the body it read.
async fn echo_server() -> SocketAddr {
    let svc = hyper::service::service_fn(|req: Request<RequestBody>| async {
        if req.uri().path() == "/echo" {
            return Ok::<_, Infallible>(Response::new(boxed(req.into_body())));
        }
        let len = req.into_body().collect().await.unwrap().to_bytes().len();
        Ok(Response::new(boxed(Full::new(Bytes::from(
            len.to_string(),
        )))))
    });
    server(svc, unmetered()).await
}

type Client = hyper::client::conn::http2::SendRequest<Body>;

async fn client(addr: SocketAddr) -> Client {
    let io = hyper_util::rt::TokioIo::new(TcpStream::connect(addr).await.unwrap());
    let (sender, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
            .await
            .unwrap();
    tokio::spawn(conn);
    sender
}

fn post(path: &str, body: Body) -> Request<Body> {
    Request::post(format!("http://svc.test{path}"))
        .body(body)
        .unwrap()
}

/// Both directions stream at once (a bidirectional gRPC call): the response head and a first
/// echoed chunk arrive while the request body is still open.
#[tokio::test]
async fn request_and_response_bodies_stream_at_the_same_time() {
    let mut c = client(echo_server().await).await;
    let (tx, body) = channel_body();
    tx.send(Bytes::from_static(b"ping-1")).await.unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(5), c.send_request(post("/echo", body)))
        .await
        .expect("the response head came while the request body was open")
        .unwrap();
    assert_eq!(resp.status(), 200);
    h2common::testing::assert_echoes_while_open(tx, resp.into_body()).await;
}

/// Bodies far beyond the 1 MiB windows both ways arrive whole: capacity is released as the
/// request body is read and waited for as the response body is sent.
#[tokio::test]
async fn bodies_beyond_the_windows_arrive_whole() {
    let addr = echo_server().await;
    let mut c = client(addr).await;
    let big: Bytes = (0..3 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let resp = c
        .send_request(post("/count", boxed(Full::new(big.clone()))))
        .await
        .unwrap();
    let text = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(text, big.len().to_string());
    let resp = c
        .send_request(post("/echo", boxed(Full::new(big.clone()))))
        .await
        .unwrap();
    let echoed = tokio::time::timeout(Duration::from_secs(10), resp.into_body().collect())
        .await
        .expect("the echo completes")
        .unwrap()
        .to_bytes();
    assert!(echoed == big, "3 MiB echoed: got {} bytes", echoed.len());
}

/// A client that resets its stream before the response drops the service's future (the
/// request it forwarded is cancelled), and the connection goes on serving.
#[tokio::test]
async fn a_reset_stream_drops_the_service_future() {
    let dropped = Arc::new(tokio::sync::Notify::new());
    let svc = {
        let dropped = dropped.clone();
        hyper::service::service_fn(move |req: Request<RequestBody>| {
            let dropped = dropped.clone();
            async move {
                if req.uri().path() == "/hang" {
                    struct Guard(Arc<tokio::sync::Notify>);
                    impl Drop for Guard {
                        fn drop(&mut self) {
                            self.0.notify_one();
                        }
                    }
                    let _guard = Guard(dropped);
                    std::future::pending::<()>().await;
                }
                Ok::<_, Infallible>(Response::new(boxed(Full::new(Bytes::from("ok")))))
            }
        })
    };
    let addr = server(svc, unmetered()).await;
    let mut c = client(addr).await;
    let hung = c.send_request(post("/hang", empty()));
    // The request goes out; dropping its response future resets the stream (CANCEL).
    assert!(
        tokio::time::timeout(Duration::from_millis(200), hung)
            .await
            .is_err(),
        "the hanging request has no answer"
    );
    tokio::time::timeout(Duration::from_secs(5), dropped.notified())
        .await
        .expect("the service's future was dropped after the client's reset");
    let resp = c.send_request(post("/ok", empty())).await.unwrap();
    assert_eq!(resp.status(), 200);
}

/// A panic while handling one request costs that stream only: the connection's other streams,
/// in flight and later ones, are served.
#[tokio::test]
async fn a_panicking_request_costs_its_stream_only() {
    let svc = hyper::service::service_fn(|req: Request<RequestBody>| async move {
        match req.uri().path() {
            "/panic" => panic!("a bug in request handling"),
            "/slow" => tokio::time::sleep(Duration::from_millis(200)).await,
            _ => {}
        }
        Ok::<_, Infallible>(Response::new(boxed(Full::new(Bytes::from("ok")))))
    });
    let c = client(server(svc, unmetered()).await).await;
    let slow = {
        let mut c = c.clone();
        tokio::spawn(async move { c.send_request(post("/slow", empty())).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let panicked = c.clone().send_request(post("/panic", empty())).await;
    assert!(panicked.is_err(), "the panicking stream is reset");
    let slow = slow
        .await
        .unwrap()
        .expect("the stream in flight is answered");
    assert_eq!(slow.status(), 200);
    let later = c.clone().send_request(post("/", empty())).await.unwrap();
    assert_eq!(later.status(), 200);
}

/// The response head: connection-specific headers removed (h2 refuses to send them), a `Date`
/// added, `content-length` from an exact body size; trailers follow the body.
#[tokio::test]
async fn responses_follow_http2s_rules_and_carry_trailers() {
    let svc = hyper::service::service_fn(|req: Request<RequestBody>| async move {
        let mut resp = if req.uri().path() == "/trailers" {
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", HeaderValue::from_static("0"));
            let frames = futures_util::stream::iter([
                Ok::<_, BoxError>(Frame::data(Bytes::from("msg"))),
                Ok(Frame::trailers(trailers)),
            ]);
            Response::new(boxed(StreamBody::new(frames)))
        } else {
            Response::new(boxed(Full::new(Bytes::from("hello"))))
        };
        let h = resp.headers_mut();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        Ok::<_, Infallible>(resp)
    });
    let mut c = client(server(svc, unmetered()).await).await;
    let resp = c.send_request(post("/", empty())).await.unwrap();
    assert_eq!(resp.status(), 200);
    let h = resp.headers();
    assert!(h.get(header::CONNECTION).is_none(), "{h:?}");
    assert!(h.get("keep-alive").is_none(), "{h:?}");
    assert!(h.get(header::TRANSFER_ENCODING).is_none(), "{h:?}");
    assert_eq!(h[header::CONTENT_LENGTH], "5");
    let date = h[header::DATE].to_str().unwrap();
    let when = httpdate::parse_http_date(date).unwrap();
    let off = SystemTime::now()
        .duration_since(when)
        .unwrap_or_else(|e| e.duration());
    assert!(off < Duration::from_secs(5), "Date: {date}");
    assert_eq!(
        resp.into_body().collect().await.unwrap().to_bytes(),
        "hello"
    );

    let resp = c.send_request(post("/trailers", empty())).await.unwrap();
    let collected = resp.into_body().collect().await.unwrap();
    assert_eq!(collected.trailers().unwrap()["grpc-status"], "0");
    assert_eq!(collected.to_bytes(), "msg");
}

/// A server whose service answers every CONNECT 200 and, on the tunnel, echoes what it read
/// until the client's half-close, after `echo:`.
async fn tunnel_echo_server(limits: Arc<Limits>) -> SocketAddr {
    let svc = hyper::service::service_fn(|mut req: Request<RequestBody>| async move {
        let tunnel = upgrade_on(&mut req);
        tokio::spawn(async move {
            let mut io = tunnel.await.expect("the tunnel opens");
            let mut got = Vec::new();
            io.read_to_end(&mut got).await.unwrap();
            io.write_all(b"echo:").await.unwrap();
            io.write_all(&got).await.unwrap();
            io.shutdown().await.unwrap();
        });
        Ok::<_, Infallible>(Response::new(empty()))
    });
    server(svc, limits).await
}

/// `CONNECT db.test:5432` on a new HTTP/2 connection to `addr`: the tunnel, once answered 200
/// without a `content-length`.
async fn open_tunnel(addr: SocketAddr) -> hyper_util::rt::TokioIo<hyper::upgrade::Upgraded> {
    let mut c = client(addr).await;
    let req = Request::connect("db.test:5432").body(empty()).unwrap();
    let resp = c.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get(header::CONTENT_LENGTH).is_none());
    hyper_util::rt::TokioIo::new(hyper::upgrade::on(resp).await.unwrap())
}

/// Writes `sent` into the tunnel, half-closes it, and returns everything read back to its end.
async fn round_trip(
    io: &mut hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>,
    sent: &[u8],
) -> Vec<u8> {
    io.write_all(sent).await.unwrap();
    io.shutdown().await.unwrap();
    let mut back = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), io.read_to_end(&mut back))
        .await
        .expect("the tunnel's answer ends")
        .unwrap();
    back
}

/// `CONNECT` over HTTP/2: the service answers 200 and takes the stream as a tunnel
/// ([`upgrade_on`]); bytes go both ways and a half-close reaches the other side.
#[tokio::test]
async fn a_connect_stream_becomes_a_tunnel() {
    let mut io = open_tunnel(tunnel_echo_server(unmetered()).await).await;
    let payload: Vec<u8> = (0..200_000).map(|i| (i % 7) as u8).collect();
    let back = round_trip(&mut io, &payload).await;
    assert_eq!(&back[..5], b"echo:");
    assert!(back[5..] == payload[..], "{} bytes back", back.len());
}

/// A tunnel outlives the idle shutdown of its connection (no new stream for an idle timeout:
/// GOAWAY, then the connection lasts as long as its open streams, the tunnel's included).
#[tokio::test]
async fn an_open_tunnel_outlives_the_idle_shutdown() {
    let limits = Arc::new(Limits::unmetered(ServerLimits {
        idle_timeout: Duration::from_millis(150),
        ..ServerLimits::default()
    }));
    let mut io = open_tunnel(tunnel_echo_server(limits).await).await;
    // Several idle timeouts: the shutdown starts, and each later check finds the tunnel open.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(round_trip(&mut io, b"still here").await, b"echo:still here");
}

/// A refused CONNECT is an ordinary response, and the stream no tunnel: the service's wait for
/// one ends with an error.
#[tokio::test]
async fn a_refused_connect_is_an_ordinary_response() {
    let (outcome_tx, mut outcome) = tokio::sync::mpsc::unbounded_channel();
    let svc = hyper::service::service_fn(move |mut req: Request<RequestBody>| {
        let tunnel = upgrade_on(&mut req);
        let outcome_tx = outcome_tx.clone();
        tokio::spawn(async move {
            let _ = outcome_tx.send(tunnel.await.map(drop).map_err(|e| e.to_string()));
        });
        let mut resp = Response::new(boxed(Full::new(Bytes::from("forbidden\n"))));
        *resp.status_mut() = http::StatusCode::FORBIDDEN;
        async move { Ok::<_, Infallible>(resp) }
    });
    let mut c = client(server(svc, unmetered()).await).await;
    let req = Request::connect("db.test:5432").body(empty()).unwrap();
    let resp = c.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(
        resp.into_body().collect().await.unwrap().to_bytes(),
        "forbidden\n"
    );
    let tunnel = tokio::time::timeout(Duration::from_secs(5), outcome.recv())
        .await
        .expect("the wait for a tunnel ends")
        .unwrap();
    assert_eq!(
        tunnel,
        Err("the HTTP/2 CONNECT stream ended before its tunnel opened".to_string())
    );
}

/// The drain: the stream in flight is answered, no new one is taken, and the connection then
/// ends (not counted as idle).
#[tokio::test]
async fn a_drain_lets_the_stream_in_flight_finish_and_closes() {
    let metrics = Metrics::new();
    let limits = Limits::new(ServerLimits::default(), &metrics, Direction::Inbound);
    let (drain_tx, mut drain) = watch::channel(false);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let arrived = Arc::new(tokio::sync::Notify::new());
    let svc = {
        let arrived = arrived.clone();
        hyper::service::service_fn(move |_req: Request<RequestBody>| {
            arrived.notify_one();
            async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                Ok::<_, Infallible>(Response::new(boxed(Full::new(Bytes::from("done")))))
            }
        })
    };
    let served = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        serve(stream, svc, &mut drain, KEEP_ALIVE, &limits).await
    });
    let c = client(addr).await;
    let in_flight = {
        let mut c = c.clone();
        tokio::spawn(async move { c.send_request(post("/", empty())).await })
    };
    // The drain starts once the stream is being served (not after a guessed delay).
    arrived.notified().await;
    drain_tx.send(true).unwrap();
    let resp = in_flight
        .await
        .unwrap()
        .expect("the stream in flight is answered");
    assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "done");
    let ended = tokio::time::timeout(Duration::from_secs(5), served)
        .await
        .expect("the drained connection ends")
        .unwrap();
    assert!(ended.is_ok(), "{:?}", ended.err());
    assert!(
        c.clone().send_request(post("/", empty())).await.is_err(),
        "no stream after the drain"
    );
    let idle = [("limit", "idle_timeout")];
    assert_eq!(metrics.counter_sum(CONNECTIONS_LIMITED, &idle), 0);
}

/// A client that sends the HTTP/2 preface and nothing more is shut down after the idle timeout
/// (counted as such) and, as it answers neither SETTINGS nor the GOAWAY's PING, closed once a
/// second idle timeout finds no stream open (hyper's server waited for the keep-alive PING's
/// timeout, 13 s).
#[tokio::test]
async fn a_client_silent_after_the_preface_is_closed_after_the_idle_timeout() {
    let metrics = Metrics::new();
    let limits = Arc::new(Limits::new(
        ServerLimits {
            idle_timeout: Duration::from_millis(300),
            ..ServerLimits::default()
        },
        &metrics,
        Direction::Inbound,
    ));
    let svc = hyper::service::service_fn(|_req: Request<RequestBody>| async {
        Ok::<_, Infallible>(Response::new(empty()))
    });
    let addr = server(svc, limits).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest))
        .await
        .expect("the server closes the connection")
        .unwrap();
    let idle = [("limit", "idle_timeout")];
    assert_eq!(metrics.counter_sum(CONNECTIONS_LIMITED, &idle), 1);
}
