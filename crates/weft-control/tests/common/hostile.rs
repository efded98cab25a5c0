//! What the hostile-input tests share: this process's memory and open descriptors (the control
//! plane runs in it), a well-behaved client whose `Destination.Get` stream must keep its updates
//! while the plane is attacked, and reading a hostile connection until the plane closes it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use linkerd2_proxy_api::destination::{update::Update as U, Update};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tonic::Streaming;

use super::{get, http, next};

/// A Service `web` whose endpoints are the workloads registered with `app: web`.
pub const SERVICES: &str = "\
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  selector: {app: web}
  clusterIP: 198.18.0.10
  ports:
  - {name: http, port: 8080, targetPort: http}
";

pub const WEB: &str = "web.default.svc.cluster.local:8080";

/// Held by each hostile-input test for its whole run: the tests of one binary run on threads of
/// one process, and each measures that process's memory and descriptors.
pub async fn alone() -> tokio::sync::MutexGuard<'static, ()> {
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    SERIAL.lock().await
}

pub use weft_testbed::procfs::Usage;

/// This process's resident memory (KiB) and open descriptors: the control plane under test runs
/// in it, so they bound the plane's (plus the test's own, which the bounds allow for).
pub fn usage() -> Usage {
    weft_testbed::procfs::usage(std::process::id()).expect("this process's /proc entries")
}

/// Waits (bounded by `limit`) until this process holds at most `max` descriptors; returns the
/// last usage seen, for the assertion's message.
pub async fn fds_settle(max: u64, limit: Duration) -> Usage {
    let deadline = Instant::now() + limit;
    loop {
        let u = usage();
        if u.fds <= max || Instant::now() > deadline {
            return u;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Asserts the plane's growth over `before` stays under generous bounds, and prints the figures.
pub fn assert_bounded(what: &str, before: Usage, after: Usage, max_rss_growth_kib: u64) {
    eprintln!(
        "{what}: VmRSS {} -> {} KiB, fds {} -> {}",
        before.rss_kib, after.rss_kib, before.fds, after.fds
    );
    assert!(
        after.rss_kib <= before.rss_kib + max_rss_growth_kib,
        "{what}: VmRSS grew from {} to {} KiB (bound +{max_rss_growth_kib} KiB)",
        before.rss_kib,
        after.rss_kib
    );
    assert!(
        after.fds <= before.fds + FD_SLACK,
        "{what}: {} descriptors open after, {} before (bound +{FD_SLACK})",
        after.fds,
        before.fds
    );
}

/// Descriptors that may legitimately appear during a test (pooled client connections, the
/// store's files being rewritten, a timer's fd).
pub const FD_SLACK: u64 = 32;

/// A client that behaves: it holds a `Destination.Get` stream on [`WEB`] and, at each
/// [`Client::check`], registers one more endpoint and expects the stream to announce it, and the
/// API to answer `GET /ready`.
pub struct Client {
    grpc: SocketAddr,
    api: SocketAddr,
    stream: Streaming<Update>,
    registered: u8,
}

impl Client {
    /// Opens the stream; the Service must have no endpoints yet (the first update is `NoEndpoints`).
    pub async fn open(grpc: SocketAddr, api: SocketAddr) -> Client {
        let mut stream = get(grpc, WEB).await.expect("Destination.Get");
        match next(&mut stream).await {
            U::NoEndpoints(_) => {}
            other => panic!("expected no endpoints at first, got {other:?}"),
        }
        Client {
            grpc,
            api,
            stream,
            registered: 0,
        }
    }

    /// Registers `good-N` at 127.0.1.N and expects its address on the stream; `GET /ready` 200.
    pub async fn check(&mut self, after: &str) {
        self.registered += 1;
        let n = self.registered;
        let doc = serde_json::json!({
            "apiVersion": "workload.linkerd.io/v1beta1",
            "kind": "ExternalWorkload",
            "metadata": {"labels": {"app": "web"}},
            "spec": {"workloadIPs": [{"ip": format!("127.0.1.{n}")}],
                     "ports": [{"name": "http", "port": 18080}]},
        });
        let (status, body) = http(
            self.api,
            "PUT",
            &format!("/v1/workloads/default/good-{n}"),
            &doc.to_string(),
        )
        .await;
        assert_eq!(status, 200, "after {after}: registration refused: {body}");
        match next(&mut self.stream).await {
            U::Add(set) => {
                let addrs: Vec<String> = set
                    .addrs
                    .iter()
                    .map(|a| SocketAddr::try_from(a.addr.unwrap()).unwrap().to_string())
                    .collect();
                assert_eq!(addrs, vec![format!("127.0.1.{n}:18080")], "after {after}");
            }
            other => panic!("after {after}: expected an Add, got {other:?}"),
        }
        let (status, body) = http(self.api, "GET", "/ready", "").await;
        assert_eq!(status, 200, "after {after}: /ready: {body}");
        // A new gRPC connection is served too, not only the one held.
        let mut fresh = get(self.grpc, WEB).await.expect("a new Destination.Get");
        assert!(
            matches!(next(&mut fresh).await, U::Add(_)),
            "after {after}: a new stream starts with the endpoints"
        );
    }
}

/// How a hostile connection ended.
#[derive(Debug)]
pub struct Closed {
    /// What the plane sent before closing.
    pub received: Vec<u8>,
    pub after: Duration,
}

/// Reads `s` until the plane closes it (EOF or reset), within `limit`; panics if it stays open.
pub async fn closed_within(what: &str, s: &mut TcpStream, limit: Duration) -> Closed {
    let start = Instant::now();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at((start + limit).into(), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                return Closed {
                    received,
                    after: start.elapsed(),
                }
            }
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
            Err(_) => panic!(
                "{what}: still open after {limit:?} (received {} bytes)",
                received.len()
            ),
        }
    }
}

/// `len` pseudo-random bytes (xorshift; the same for the same `seed`).
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// `control_api_refused_total{reason}` from the API's `GET /metrics`.
pub async fn refused(api: SocketAddr, reason: &str) -> u64 {
    let (status, text) = http(api, "GET", "/metrics", "").await;
    assert_eq!(status, 200, "{text}");
    let line = format!("control_api_refused_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(line.as_str()))
        .unwrap_or_else(|| panic!("no {line} in /metrics:\n{text}"))
        .parse()
        .expect("a count")
}

/// `refused(api, reason)` once it reaches `expected`, or its value after 5 s. A connection that
/// hyper ends (a header timeout, a head too large) is counted by the task that served it just
/// after the socket closed, so a client that saw the close can read the count a moment early.
pub async fn refused_reaching(api: SocketAddr, reason: &str, expected: u64) -> u64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let n = refused(api, reason).await;
        if n >= expected || tokio::time::Instant::now() >= deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends `bytes` to the API on a new connection and reads until it is closed, within `limit`:
/// the status (when an answer came) and the whole text.
pub async fn raw(addr: SocketAddr, bytes: &[u8], limit: Duration) -> (Option<u16>, String) {
    let mut s = TcpStream::connect(addr).await.expect("connect to the API");
    tokio::io::AsyncWriteExt::write_all(&mut s, bytes)
        .await
        .expect("send");
    let closed = closed_within("a raw request", &mut s, limit).await;
    answer(&closed.received)
}

/// The status and text of an HTTP/1 answer (no status when nothing came).
pub fn answer(received: &[u8]) -> (Option<u16>, String) {
    let text = String::from_utf8_lossy(received).to_string();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|t| t.get(..3))
        .and_then(|c| c.parse().ok());
    (status, text)
}

/// The JSON body of an answer's text.
pub fn json_body(text: &str) -> serde_json::Value {
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}
