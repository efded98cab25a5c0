//! The proxy binary's telemetry, end to end: a real `weft-proxy` process (explicit mode: one
//! forward port in front of a test application) serving real requests, its access log read from
//! its stderr (`WEFT_PROXY_ACCESS_LOG` = `json`, `apache`, unset), and its `/metrics` read back
//! (connection close and protocol detection families) and fed to `promtool check metrics`.

mod common;

use common::process::{Proxy, SOON};

use std::{convert::Infallible, net::SocketAddr, path::PathBuf, process::Stdio, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    process::Command,
};
use weft_proxy::config;

/// The application: reads the request body, answers `hello` (5 bytes).
async fn start_app() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (s, _) = l.accept().await.unwrap();
            let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
                let _ = req.into_body().collect().await;
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"hello"))))
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(s), svc),
            );
        }
    });
    addr
}

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// One HTTP/1.1 request on its own connection (closed after the response): returns the
/// client's address and the raw response.
async fn request(
    proxy: SocketAddr,
    method: &str,
    target: &str,
    body: &str,
) -> (SocketAddr, String) {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    let local = s.local_addr().unwrap();
    let req = format!(
        "{method} {target} HTTP/1.1\r\nHost: web:8080\r\nUser-Agent: weft-test \"1\"\r\n\
         traceparent: 00-{TRACE}-00f067aa0ba902b7-01\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut resp = String::new();
    tokio::time::timeout(SOON, s.read_to_string(&mut resp))
        .await
        .expect("response in time")
        .unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    (local, resp)
}

#[tokio::test]
async fn json_access_log_has_linkerds_fields() {
    let app = start_app().await;
    let mut proxy = Proxy::start(app, &[(config::ENV_ACCESS_LOG, "json")]).await;
    let (client, _) = request(proxy.forward, "POST", "/hello?x=1", "abc").await;

    let entry = proxy
        .line(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .filter(|v| v.get("method").is_some())
        })
        .await;
    assert_eq!(entry["client.addr"], client.to_string(), "{entry}");
    assert_eq!(entry["client.id"], serde_json::Value::Null);
    assert_eq!(entry["host"], "web:8080");
    assert_eq!(entry["method"], "POST");
    assert_eq!(entry["uri"], "/hello?x=1");
    assert_eq!(entry["version"], "HTTP/1.1");
    assert_eq!(entry["status"], 200);
    assert_eq!(entry["request_bytes"], 3);
    assert_eq!(entry["response_bytes"], 5);
    assert_eq!(entry["user_agent"], "weft-test \"1\"");
    assert_eq!(entry["trace_id"], TRACE);
    let ts = entry["timestamp"].as_str().unwrap();
    assert!(
        ts.len() == 30 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T',
        "{ts}"
    );
    let total = entry["total_ns"].as_u64().unwrap();
    let processing = entry["processing_ns"].as_u64().unwrap();
    assert!(processing > 0 && processing <= total, "{entry}");
    assert_eq!(entry.as_object().unwrap().len(), 14, "{entry}");

    // HTTP/2 (as a meshed peer sends it, marked to go to the application as HTTP/1.1): the
    // line is written when the stream's response ends.
    let io = TokioIo::new(TcpStream::connect(proxy.forward).await.unwrap());
    let (mut h2, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
        .await
        .expect("h2 handshake");
    tokio::spawn(conn);
    let req = Request::post("http://web:8080/two")
        .header("l5d-orig-proto", "HTTP/1.1")
        .body(Full::new(Bytes::from_static(b"12345678")))
        .unwrap();
    let resp = h2.send_request(req).await.expect("h2 response");
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"hello");
    let entry = proxy
        .line(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .filter(|v| v.get("method").is_some())
        })
        .await;
    assert_eq!(entry["version"], "HTTP/2.0", "{entry}");
    assert_eq!(entry["uri"], "http://web:8080/two");
    assert_eq!(entry["host"], "web:8080");
    assert_eq!(entry["request_bytes"], 8);
    assert_eq!(entry["response_bytes"], 5);
    assert_eq!(entry["trace_id"], serde_json::Value::Null);
    assert_eq!(entry["user_agent"], serde_json::Value::Null);
}

#[tokio::test]
async fn apache_access_log_is_common_log_format_plus_extras() {
    let app = start_app().await;
    let mut proxy = Proxy::start(app, &[(config::ENV_ACCESS_LOG, "apache")]).await;
    let (client, _) = request(proxy.forward, "GET", "/a", "").await;

    let prefix = format!("{client} - - [");
    let line = proxy
        .line(|l| l.starts_with(&prefix).then(|| l.to_string()))
        .await;
    // CLF: host ident authuser [date] "request" status bytes; then "user agent" "host"
    // request_bytes processing_ns total_ns trace_id.
    let (date, rest) = line[prefix.len()..].split_once("] ").expect("date");
    assert!(date.len() == 30 && date.ends_with('Z'), "{line}");
    let want = "\"GET /a HTTP/1.1\" 200 5 \"weft-test \\\"1\\\"\" \"web:8080\" 0 ";
    assert!(rest.starts_with(want), "{line}");
    let nums: Vec<&str> = rest[want.len()..].split(' ').collect();
    assert_eq!(nums.len(), 3, "{line}");
    let processing: u64 = nums[0].parse().expect("processing_ns");
    let total: u64 = nums[1].parse().expect("total_ns");
    assert!(processing > 0 && processing <= total, "{line}");
    assert_eq!(nums[2], TRACE);
}

/// Unset: no access log line at all, though requests flow (and the diagnostic log still
/// works). Then the connection and detection families of the same traffic.
#[tokio::test]
async fn off_by_default_and_connection_metrics() {
    let app = start_app().await;
    let mut proxy = Proxy::start(app, &[(config::ENV_LOG, "warn,weft_proxy=debug")]).await;
    let (client, _) = request(proxy.forward, "GET", "/quiet", "").await;

    // The connection has closed: its close is counted (cleanly) with its lifetime, and its
    // protocol was detected from its first bytes. (Its response body, and so an access log
    // line, ended before.)
    let text = wait_for(&proxy, "tcp_close_total{direction=\"inbound\"").await;
    let port = app.port();
    let l = format!(
        "direction=\"inbound\",target_addr=\"127.0.0.1:{port}\",tls=\"no_identity\",no_tls_reason=\"no_tls_from_remote\",peer=\"src\",errno=\"\""
    );
    assert!(
        text.contains(&format!("tcp_close_total{{{l}}} 1\n")),
        "{text}"
    );
    let count = format!("tcp_connection_duration_ms_count{{{l}}} 1\n");
    assert!(text.contains(&count), "{text}");
    let detected = "protocol_detection_total{direction=\"inbound\",result=\"http1\"} 1\n";
    assert!(text.contains(detected), "{text}");
    assert!(text.contains(
        "protocol_detection_duration_seconds_count{direction=\"inbound\",result=\"http1\"} 1\n"
    ));

    // A diagnostic line written after all that bounds the wait: a plaintext connection to the
    // main inbound listener, which has no target port.
    let mut s = TcpStream::connect(proxy.inbound).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let mut before = Vec::new();
    proxy
        .line(|l| {
            before.push(l.to_string());
            l.contains("without a target port").then_some(())
        })
        .await;
    let apache = format!("{client} ");
    assert!(
        !before
            .iter()
            .any(|l| l.starts_with(&apache) || l.contains("\"uri\"")),
        "an access log line while off: {before:?}"
    );
}

/// Scrapes until `needle` appears (a close is counted when the proxy's side of the connection
/// is dropped, just after the client saw the response).
async fn wait_for(proxy: &Proxy, needle: &str) -> String {
    let mut text = String::new();
    let found = tokio::time::timeout(SOON, async {
        loop {
            text = proxy.metrics().await;
            if text.contains(needle) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(found.is_ok(), "no {needle} in\n{text}");
    text
}

/// Lint findings kept on purpose: Linkerd's metric names, which dashboards written for Linkerd
/// use as they are.
const DELIBERATE_LINTS: &[&str] = &[
    "response_latency_ms metric names should not contain abbreviated units",
    "tcp_connection_duration_ms metric names should not contain abbreviated units",
];

/// The scrape, with every family this proxy renders after HTTP traffic (TCP close and
/// duration, detection, access-logged requests), passes `promtool check metrics`.
#[tokio::test]
async fn promtool_accepts_the_scrape() {
    let Some(promtool) = which("promtool") else {
        return skip_or_fail("promtool is not installed (Debian: prometheus)");
    };
    let app = start_app().await;
    let proxy = Proxy::start(app, &[(config::ENV_ACCESS_LOG, "json")]).await;
    request(proxy.forward, "GET", "/one", "").await;
    // A connection that sends nothing and closes: detection result "closed".
    drop(TcpStream::connect(proxy.forward).await.unwrap());
    let text = wait_for(&proxy, "result=\"closed\"").await;
    assert!(
        text.contains("tcp_connection_duration_ms_bucket{"),
        "{text}"
    );

    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start promtool");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(text.as_bytes()).await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let problems: Vec<&str> = printed
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !DELIBERATE_LINTS.contains(l))
        .collect();
    assert!(
        matches!(out.status.code(), Some(0 | 3)) && problems.is_empty(),
        "promtool ({}): {printed}\n--- scrape ---\n{text}",
        out.status
    );
}

fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// Locally a missing tool skips the test; under `CI=true` it fails it.
fn skip_or_fail(reason: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("cannot run under CI: {reason}");
    }
    eprintln!("skipped: {reason}");
}
