//! What the proxy's integration tests share: a proxy configuration on ephemeral loopback ports,
//! plain HTTP/1.1 requests to its admin server, a test CA with a scripted Certify ([`ca`]), and a
//! control plane of scripted Destination answers for proxies with identity ([`mesh`]).
#![allow(dead_code)] // each test binary uses its own part

pub mod ca;
pub mod hostile;
pub mod mesh;
pub mod process;

use std::collections::HashMap;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weft_proxy::Config;

/// A proxy for workload `default:web-1` with every listener on an ephemeral 127.0.0.1 port and
/// its control plane on 127.0.0.1:1 (nothing listens there: it never becomes ready), as the
/// environment `vars` change it.
pub fn config(vars: &[(&str, &str)]) -> Config {
    let mut env: HashMap<&str, &str> = HashMap::from([
        ("WEFT_PROXY_DESTINATION_SVC_ADDR", "127.0.0.1:1"),
        ("WEFT_PROXY_POLICY_WORKLOAD", "default:web-1"),
        ("WEFT_PROXY_INBOUND_LISTEN_ADDR", "127.0.0.1:0"),
        ("WEFT_PROXY_OUTBOUND_LISTEN_ADDR", "127.0.0.1:0"),
        ("WEFT_PROXY_ADMIN_LISTEN_ADDR", "127.0.0.1:0"),
    ]);
    env.extend(vars.iter().copied());
    Config::from_env(&env).expect("config")
}

/// One request to the admin server with `Connection: close`; returns (status, body).
pub async fn admin(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: admin\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.expect("read");
    let status = buf
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// A TCP application on 127.0.0.1: once the client half-closes, it answers `got:` and what it
/// read (an opaque service whose answer proves the bytes arrived whole).
pub async fn tcp_echo_app() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut got = Vec::new();
                s.read_to_end(&mut got).await.unwrap();
                s.write_all(b"got:").await.unwrap();
                s.write_all(&got).await.unwrap();
            });
        }
    });
    addr
}
