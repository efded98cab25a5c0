//! What the control plane's integration tests share: a temporary store, the control plane started
//! on ephemeral loopback ports, plain HTTP/1.1 requests to its API, and `Destination.Get` streams.
#![allow(dead_code)] // each test binary uses its own part

pub mod etcd;
pub mod hostile;
pub mod identity;
pub mod kube_api;
pub mod kube_objects;
pub mod kube_store;
pub mod multicluster;
pub mod stores;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use linkerd2_proxy_api::destination::{
    destination_client::DestinationClient, update::Update as U, GetDestination, Update,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Streaming;

/// Upper bound for an awaited event; the tests wait on events, this only stops a hung test.
pub const LIMIT: Duration = Duration::from_secs(5);

/// A fresh directory `weft-control-<test>-<pid>-<nanos>` under the system temp dir.
pub fn temp_dir(test: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!(
        "weft-control-{test}-{}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// A control plane on `store`: gRPC and API on ephemeral 127.0.0.1 ports, the store polled
/// every 50 ms. Change fields before starting it with [`start`].
pub fn config(store: &Path) -> weft_control::Config {
    weft_control::Config {
        store: weft_control::store::Location::Dir(store.to_path_buf()),
        grpc_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        api_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        poll_interval: Duration::from_millis(50),
        ..Default::default()
    }
}

pub async fn start(config: weft_control::Config) -> weft_control::Running {
    weft_control::start(config)
        .await
        .expect("control plane starts")
}

/// One HTTP/1.1 request with `Connection: close`; returns (status, body text).
pub async fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    http_within(addr, method, path, body, LIMIT).await
}

/// [`http`], the response awaited for up to `limit`.
pub async fn http_within(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
    limit: Duration,
) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the API");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.expect("send request");
    let mut buf = Vec::new();
    tokio::time::timeout(limit, s.read_to_end(&mut buf))
        .await
        .expect("response in time")
        .expect("read response");
    let text = String::from_utf8(buf).expect("UTF-8 response");
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, body.to_string())
}

/// [`http`] with the body parsed as JSON (`Null` when it is not JSON).
pub async fn http_json(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, serde_json::Value) {
    let (status, body) = http(addr, method, path, body).await;
    (
        status,
        serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
    )
}

/// `Destination.Get` for `path` (a `host:port` authority or `IP:port`).
pub async fn get(grpc: SocketAddr, path: &str) -> Result<Streaming<Update>, tonic::Status> {
    let mut client = DestinationClient::connect(format!("http://{grpc}"))
        .await
        .expect("connect to Destination");
    let req = GetDestination {
        scheme: "k8s".into(),
        path: path.into(),
        context_token: String::new(),
    };
    client.get(req).await.map(|r| r.into_inner())
}

/// The next update on a `Destination.Get` stream, within [`LIMIT`].
pub async fn next(stream: &mut Streaming<Update>) -> U {
    let msg = tokio::time::timeout(LIMIT, stream.message())
        .await
        .expect("update in time");
    msg.expect("stream ok")
        .expect("stream open")
        .update
        .expect("update set")
}
