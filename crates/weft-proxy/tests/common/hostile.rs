//! What the limit and hostile-peer tests share: an application speaking HTTP/1 and HTTP/2, a
//! raw HTTP/2 frame writer and reader (the h2 crate cannot misbehave), one well-behaved request
//! to check a listener still serves, and the proxy process's memory and descriptors read from
//! /proc.

use std::{convert::Infallible, net::SocketAddr, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use super::process::SOON;

/// Bytes `/big` answers: far more than socket buffers and HTTP/2 windows hold.
pub const BIG: usize = 32 * 1024 * 1024;

/// The application: `/big` answers [`BIG`] bytes, anything else reads the whole request body
/// first (so a request whose body never ends keeps its stream open) and answers `hello`.
/// HTTP/2 when the connection starts with its preface, HTTP/1 otherwise.
pub async fn start_app() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    let body = if req.uri().path() == "/big" {
                        Bytes::from(vec![b'x'; BIG])
                    } else {
                        let _ = req.into_body().collect().await;
                        Bytes::from_static(b"hello")
                    };
                    Ok::<_, Infallible>(Response::new(Full::new(body)))
                });
                let mut first = [0u8; 3];
                let h2 = matches!(s.peek(&mut first).await, Ok(3) if &first == b"PRI");
                let io = TokioIo::new(s);
                if h2 {
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(io, svc)
                        .await;
                } else {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, svc)
                        .await;
                }
            });
        }
    });
    addr
}

/// One HTTP/1.1 request on a new connection: the response's status code, `None` when the
/// connection was closed (or reset) before a status line arrived.
pub async fn status(addr: SocketAddr, head_extra: &str) -> Option<u16> {
    let mut s = TcpStream::connect(addr).await.ok()?;
    let req = format!("GET / HTTP/1.1\r\nHost: web:8080\r\n{head_extra}Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut resp = Vec::new();
    let _ = tokio::time::timeout(SOON, s.read_to_end(&mut resp))
        .await
        .expect("an answer or a close in time");
    let text = String::from_utf8_lossy(&resp);
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// Asserts the listener at `addr` still answers a well-behaved request.
pub async fn assert_served(addr: SocketAddr, during: &str) {
    assert_eq!(status(addr, "").await, Some(200), "served during {during}");
}

/// Waits (bounded by [`SOON`]) until the peer closes `s`: its next read is EOF or an error.
/// Bytes that arrive first are returned.
pub async fn closed_by_peer(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let wait = async {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(SOON, wait)
        .await
        .expect("the proxy closed the connection in time");
    got
}

/// The value of the one `name{labels}` series in a Prometheus text exposition (0 if absent).
pub fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

/// `connections_limited_total{direction, limit}`.
pub fn limited(text: &str, direction: &str, limit: &str) -> u64 {
    metric(
        text,
        &format!("connections_limited_total{{direction=\"{direction}\",limit=\"{limit}\"}}"),
    )
}

pub use weft_testbed::procfs::Usage;

/// A process's resident memory (KiB) and open descriptors, from /proc.
pub fn usage(pid: u32) -> Usage {
    weft_testbed::procfs::usage(pid).expect("the process's /proc entries")
}

/// Raises this process's soft RLIMIT_NOFILE to its hard limit, as the proxy does (children
/// inherit it); panics when that is under `want`: the test cannot hold its connections.
pub fn raise_nofile(want: u64) {
    let (_, soft) = weft_proxy::sys::raise_nofile_limit().expect("RLIMIT_NOFILE");
    assert!(
        soft >= want,
        "RLIMIT_NOFILE hard limit {soft} < {want}: raise it (ulimit -Hn) to run this test"
    );
}

/// Hand-built HTTP/2 frames (RFC 9113 §4.1): enough to speak, and to misbehave.
pub mod h2 {
    pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const WINDOW_UPDATE: u8 = 0x8;
    pub const CONTINUATION: u8 = 0x9;
    pub const END_STREAM: u8 = 0x1;
    pub const ACK: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const CANCEL: u32 = 0x8;
    pub const REFUSED_STREAM: u32 = 0x7;
    pub const ENHANCE_YOUR_CALM: u32 = 0xb;
    pub const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;

    pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut f = Vec::with_capacity(9 + payload.len());
        f.extend_from_slice(&len.to_be_bytes()[1..]);
        f.push(kind);
        f.push(flags);
        f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// The client preface and its SETTINGS (each `(id, value)`).
    pub fn start(settings: &[(u16, u32)]) -> Vec<u8> {
        let mut out = PREFACE.to_vec();
        out.extend(self::settings(settings));
        out
    }

    pub fn settings(settings: &[(u16, u32)]) -> Vec<u8> {
        let payload: Vec<u8> = settings
            .iter()
            .flat_map(|(id, v)| id.to_be_bytes().into_iter().chain(v.to_be_bytes()))
            .collect();
        frame(SETTINGS, 0, 0, &payload)
    }

    /// A header block for `GET path` to `authority` (HPACK: indexed `:method GET`,
    /// `:scheme http`, literal `:path` and `:authority`, no Huffman, no indexing).
    pub fn get(path: &str, authority: &str) -> Vec<u8> {
        let mut b = vec![0x82, 0x86];
        for (index, value) in [(4u8, path), (1u8, authority)] {
            b.push(index);
            b.push(value.len() as u8);
            b.extend_from_slice(value.as_bytes());
        }
        b
    }

    /// A literal header `name: value` (no indexing, lengths under 127).
    pub fn literal(name: &str, value: &str) -> Vec<u8> {
        let mut b = vec![0x00, name.len() as u8];
        b.extend_from_slice(name.as_bytes());
        b.push(value.len() as u8);
        b.extend_from_slice(value.as_bytes());
        b
    }

    pub fn headers(stream: u32, flags: u8, block: &[u8]) -> Vec<u8> {
        frame(HEADERS, flags, stream, block)
    }

    pub fn rst(stream: u32, code: u32) -> Vec<u8> {
        frame(RST_STREAM, 0, stream, &code.to_be_bytes())
    }

    /// One frame as read: `(kind, flags, stream, payload)`.
    pub type Frame = (u8, u8, u32, Vec<u8>);

    /// The next frame, or `None` at EOF or on an error.
    pub async fn read(s: &mut (impl tokio::io::AsyncRead + Unpin)) -> Option<Frame> {
        use tokio::io::AsyncReadExt;
        let mut head = [0u8; 9];
        s.read_exact(&mut head).await.ok()?;
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        s.read_exact(&mut payload).await.ok()?;
        Some((head[3], head[4], stream, payload))
    }

    /// The error code of a RST_STREAM or GOAWAY frame.
    pub fn error_code(f: &Frame) -> Option<u32> {
        let at = match f.0 {
            RST_STREAM => 0,
            GOAWAY => 4,
            _ => return None,
        };
        Some(u32::from_be_bytes(f.3.get(at..at + 4)?.try_into().ok()?))
    }
}

/// Reads frames from `s` until `pick` accepts one (bounded by [`SOON`]); `None` when the
/// connection ended first.
pub async fn until_frame<T>(
    s: &mut TcpStream,
    mut pick: impl FnMut(&h2::Frame) -> Option<T>,
) -> Option<T> {
    let wait = async {
        while let Some(f) = h2::read(s).await {
            if let Some(t) = pick(&f) {
                return Some(t);
            }
        }
        None
    };
    tokio::time::timeout(SOON, wait)
        .await
        .expect("the frame, or the connection's end, in time")
}

/// Not a limit: a pause that lets the proxy's tasks run, where a test must not sleep on a
/// deadline (bounded waits poll with it).
pub const POLL: Duration = Duration::from_millis(50);

/// Polls `/metrics` of `admin` until `ok` holds (bounded by [`SOON`]); returns the text.
pub async fn metrics_until(admin: SocketAddr, ok: impl Fn(&str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + SOON;
    loop {
        let (_, text) = super::admin(admin, "GET", "/metrics").await;
        if ok(&text) {
            return text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "metrics never matched:\n{text}"
        );
        tokio::time::sleep(POLL).await;
    }
}
