//! Connecting to an endpoint, for every path that opens a connection (the HTTP pool, opaque TCP,
//! CONNECT tunnels, and the inbound side towards the application): the TCP connect, the metered
//! stream, the TLS client handshake to a meshed peer (and, for opaque traffic to a peer's inbound
//! port, the transport header inside it), and errors that say why a connection could not be made
//! in words a user can act on.
//!
//! One timeout bounds the whole of it: TCP connect, TLS handshake and transport header together.

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use rustls::pki_types::ServerName;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
    time::Instant,
};

use crate::{
    identity::tls::PeerRejection,
    metrics::{self as m, Labels, Metrics, Peer},
    mtls::{self, ClientTls, TransportHeader},
    relay::Metered,
};

/// Why a connection to an endpoint could not be made. The text is what `l5d-proxy-error` and the
/// proxy's log say.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connection refused by {addr}")]
    Refused { addr: SocketAddr },
    /// `EHOSTUNREACH` / `ENETUNREACH`: usually a host that does not forward between its
    /// interfaces (a node whose pods cannot reach each other).
    #[error("no route to host {addr} (is IP forwarding enabled on the host?)")]
    NoRoute { addr: SocketAddr },
    #[error("timed out after {timeout:?} connecting to {addr}")]
    Timeout { addr: SocketAddr, timeout: Duration },
    #[error(
        "timed out after {timeout:?} connecting to {addr}: no TLS handshake from the peer (expecting {identity})"
    )]
    HandshakeTimeout {
        addr: SocketAddr,
        timeout: Duration,
        identity: String,
    },
    #[error("connecting to {addr}: {source}")]
    Io { addr: SocketAddr, source: io::Error },
    /// The peer's certificate was refused: another CA, expired, or not the identity discovery
    /// announced.
    #[error("TLS to {addr} refused: {rejection} (expected {identity})")]
    PeerRejected {
        addr: SocketAddr,
        identity: String,
        rejection: PeerRejection,
    },
    #[error("TLS handshake with {addr} (expecting {identity}) failed: {reason}")]
    Tls {
        addr: SocketAddr,
        identity: String,
        reason: String,
    },
    /// The connect another request to the same endpoint made, and this one waited for, failed.
    #[error("{reason} (a concurrent request's connect to {addr})")]
    Concurrent { addr: SocketAddr, reason: String },
}

impl ConnectError {
    /// A failed TCP connect, by cause.
    fn tcp(addr: SocketAddr, source: io::Error) -> ConnectError {
        match source.raw_os_error() {
            Some(libc::EHOSTUNREACH | libc::ENETUNREACH) => ConnectError::NoRoute { addr },
            Some(libc::ECONNREFUSED) => ConnectError::Refused { addr },
            _ if source.kind() == io::ErrorKind::ConnectionRefused => {
                ConnectError::Refused { addr }
            }
            _ => ConnectError::Io { addr, source },
        }
    }
}

/// Where to connect, and how.
pub struct Dial<'a> {
    pub addr: SocketAddr,
    /// TLS for a meshed peer; `None`: plaintext.
    pub tls: Option<&'a ClientTls>,
    /// Opaque transport: the first bytes inside TLS are this header (the peer's inbound proxy
    /// then forwards to the port it names). Only with `tls`.
    pub header: Option<&'a TransportHeader>,
}

/// Opens a metered TCP connection (peer="dst" metrics) within `timeout`.
pub async fn tcp(
    addr: SocketAddr,
    timeout: Duration,
    metrics: &Metrics,
    labels: &Labels,
) -> Result<Metered<TcpStream>, ConnectError> {
    tcp_until(addr, Instant::now() + timeout, timeout, metrics, labels).await
}

async fn tcp_until(
    addr: SocketAddr,
    deadline: Instant,
    timeout: Duration,
    metrics: &Metrics,
    labels: &Labels,
) -> Result<Metered<TcpStream>, ConnectError> {
    let stream = match tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
        Err(_) => return Err(ConnectError::Timeout { addr, timeout }),
        Ok(Err(source)) => return Err(ConnectError::tcp(addr, source)),
        Ok(Ok(s)) => s,
    };
    let _ = stream.set_nodelay(true);
    let labels = Labels {
        authority: None,
        target_addr: addr,
        ..labels.clone()
    };
    Ok(Metered::new(stream, metrics.tcp_open(&labels, Peer::Dst)))
}

/// Connects to `dial.addr` (peer="dst" metrics, labelled by `labels.tls`) and, for a meshed peer,
/// completes the TLS handshake (and writes the transport header), all within `timeout`. A failed
/// handshake counts `tls_handshake_errors_total{direction="outbound",server_id,reason}`.
pub async fn connect(
    dial: Dial<'_>,
    timeout: Duration,
    metrics: &Metrics,
    labels: &Labels,
) -> Result<Io, ConnectError> {
    let deadline = Instant::now() + timeout;
    let addr = dial.addr;
    let tcp = tcp_until(addr, deadline, timeout, metrics, labels).await?;
    let Some(tls) = dial.tls else {
        return Ok(Io::Plain(tcp));
    };
    let identity = || tls.identity.to_string();
    let failed = |reason: &str| {
        metrics.count(
            m::TLS_HANDSHAKE_ERRORS,
            None,
            &[
                ("direction", "outbound"),
                ("server_id", &tls.identity),
                ("reason", reason),
            ],
        );
    };
    let Ok(name) = ServerName::try_from(tls.identity.to_string()) else {
        failed("handshake");
        return Err(ConnectError::Tls {
            addr,
            identity: identity(),
            reason: "the identity is not a DNS name".into(),
        });
    };
    let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
    let mut io = match tokio::time::timeout_at(deadline, connector.connect(name, tcp)).await {
        Ok(Ok(stream)) => Io::Tls(Box::new(stream)),
        Err(_) => {
            failed("timeout");
            return Err(ConnectError::HandshakeTimeout {
                addr,
                timeout,
                identity: identity(),
            });
        }
        Ok(Err(e)) => {
            if let Some(rejection) = PeerRejection::from_io(&e) {
                failed(mtls::rejection_label(rejection));
                return Err(ConnectError::PeerRejected {
                    addr,
                    identity: identity(),
                    rejection,
                });
            }
            let reason = if not_tls(&e) {
                failed("not_tls");
                "the peer did not answer with TLS (is it meshed, with this identity as its name?)"
                    .to_string()
            } else {
                failed("handshake");
                format!("TLS handshake failed: {e}")
            };
            return Err(ConnectError::Tls {
                addr,
                identity: identity(),
                reason,
            });
        }
    };
    if let Some(header) = dial.header {
        match tokio::time::timeout_at(deadline, header.write(&mut io)).await {
            Ok(Ok(())) => {}
            Err(_) => return Err(ConnectError::Timeout { addr, timeout }),
            Ok(Err(source)) => return Err(ConnectError::Io { addr, source }),
        }
    }
    Ok(io)
}

/// The peer answered the ClientHello with bytes that are not a TLS record.
fn not_tls(e: &io::Error) -> bool {
    matches!(
        e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()),
        Some(rustls::Error::InvalidMessage(_))
    )
}

/// A connection the proxy opened: plaintext or TLS (over a metered socket on the data path, a
/// plain one to the control plane).
pub enum Io<S = Metered<TcpStream>> {
    Plain(S),
    Tls(Box<tokio_rustls::client::TlsStream<S>>),
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Io<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Io<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
#[path = "connect_tests.rs"]
mod tests;
