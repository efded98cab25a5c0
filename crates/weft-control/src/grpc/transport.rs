//! The gRPC listener's transport. Every connection is TLS 1.3 with the control plane's own
//! certificate (`weft-control.<ns>.serviceaccount.identity.<ns>.<trust-domain>`, issued from the
//! mesh CA at start and renewed, [`crate::own_cert`]); a client may present its certificate
//! (proxies do once they have one: mTLS), verified against the trust anchors in force, and is
//! served without one too (its first `Identity.Certify` is how a proxy gets one). A connection
//! that does not start with a TLS record is served in plaintext only when the peer is on
//! loopback (development: a proxy on the same host without `WEFT_PROXY_*_SVC_NAME`); any other is
//! closed, so no token or configuration crosses a network in the clear.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::ca::{pem_certificates, Ca};
use crate::own_cert::{OwnCert, OwnIdentity};

/// A client has this long to send its first byte and finish its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The first byte of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;

/// What the listener needs to terminate TLS: its identity's certificate and the anchors.
pub struct Transport {
    identity: OwnIdentity,
    ca: watch::Receiver<Arc<Ca>>,
    /// The server config for the certificate and CA in force (rebuilt when either changes).
    config: Mutex<Option<Built>>,
}

struct Built {
    cert: Arc<OwnCert>,
    ca: Arc<Ca>,
    config: Arc<ServerConfig>,
}

impl Transport {
    pub fn new(identity: OwnIdentity, ca: watch::Receiver<Arc<Ca>>) -> Transport {
        Transport {
            identity,
            ca,
            config: Mutex::new(None),
        }
    }

    /// The identity proxies must verify (`WEFT_PROXY_*_SVC_NAME`).
    pub fn name(&self) -> &str {
        &self.identity.name
    }

    fn server_config(&self) -> io::Result<Arc<ServerConfig>> {
        let cert = self.identity.cert().ok_or_else(|| {
            io::Error::other("the control plane's own certificate could not be issued")
        })?;
        let ca = self.ca.borrow().clone();
        let mut built = self.config.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = built.as_ref() {
            if Arc::ptr_eq(&b.cert, &cert) && Arc::ptr_eq(&b.ca, &ca) {
                return Ok(b.config.clone());
            }
        }
        let config = Arc::new(server_config(&cert, &ca).map_err(io::Error::other)?);
        *built = Some(Built {
            cert,
            ca,
            config: config.clone(),
        });
        Ok(config)
    }
}

/// TLS 1.3 as `cert`, ALPN `h2`, client certificates optional and verified against `ca`'s
/// anchors.
fn server_config(cert: &OwnCert, ca: &Ca) -> Result<ServerConfig, String> {
    let provider = crate::tls::provider();
    let mut roots = RootCertStore::empty();
    for der in pem_certificates(ca.trust_anchors_pem().as_bytes())? {
        roots
            .add(CertificateDer::from(der))
            .map_err(|e| format!("trust anchor: {e}"))?;
    }
    let clients = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| format!("client verifier: {e}"))?;
    let chain = cert
        .chain
        .iter()
        .map(|c| CertificateDer::from(c.clone()))
        .collect();
    let key = PrivateKeyDer::try_from(cert.key.clone()).map_err(|e| format!("key: {e}"))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(clients)
        .with_single_cert(chain, key)
        .map_err(|e| format!("certificate: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// A served connection: TLS, or plaintext from a loopback peer.
pub enum Conn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl Connected for Conn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        let tcp = match self {
            Conn::Plain(s) => s,
            Conn::Tls(s) => s.get_ref().0,
        };
        tcp.connect_info()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Whether a peer may speak plaintext: loopback (IPv4, IPv6, or IPv4-mapped loopback).
pub fn plaintext_allowed(peer: SocketAddr) -> bool {
    match peer.ip() {
        std::net::IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        ip => ip.is_loopback(),
    }
}

/// Accepts on `listener` until `shutdown` changes; each connection is classified and its TLS
/// handshake done in a task of its own (a slow or hostile client holds up nobody), then handed to
/// the gRPC server through the returned stream.
pub fn incoming(
    listener: TcpListener,
    transport: Arc<Transport>,
    mut shutdown: watch::Receiver<bool>,
) -> tokio_stream::wrappers::ReceiverStream<io::Result<Conn>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let notes = Arc::new(Notes::default());
        loop {
            let (tcp, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // EMFILE and the like: pause instead of spinning.
                        tracing::warn!(error = %e, "gRPC: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = shutdown.changed() => return,
            };
            let (tx, transport, notes) = (tx.clone(), transport.clone(), notes.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(
                    HANDSHAKE_TIMEOUT,
                    classify(tcp, peer, &transport, &notes),
                )
                .await
                {
                    Ok(Ok(Some(conn))) => {
                        let _ = tx.send(Ok(conn)).await;
                    }
                    Ok(Ok(None)) => {}
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "gRPC: connection refused"),
                    Err(_) => tracing::debug!(%peer, "gRPC: no handshake in time"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// What is logged once per listener rather than per connection.
#[derive(Default)]
struct Notes {
    plaintext_served: std::sync::atomic::AtomicBool,
}

async fn classify(
    tcp: TcpStream,
    peer: SocketAddr,
    transport: &Transport,
    notes: &Notes,
) -> io::Result<Option<Conn>> {
    tcp.set_nodelay(true)?;
    let mut first = [0u8; 1];
    if tcp.peek(&mut first).await? == 0 {
        return Ok(None);
    }
    if first[0] == TLS_HANDSHAKE {
        let config = transport.server_config()?;
        let tls = tokio_rustls::TlsAcceptor::from(config).accept(tcp).await?;
        let client = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|leaf| crate::ca::common_name(leaf.as_ref()));
        tracing::debug!(%peer, client = client.as_deref().unwrap_or("none"), "gRPC: TLS connection");
        return Ok(Some(Conn::Tls(Box::new(tls))));
    }
    if plaintext_allowed(peer) {
        if !notes
            .plaintext_served
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            tracing::warn!(%peer, "gRPC: serving a loopback client in plaintext (development only; proxies elsewhere must use TLS: WEFT_PROXY_*_SVC_NAME)");
        }
        return Ok(Some(Conn::Plain(tcp)));
    }
    tracing::warn!(%peer, "gRPC: refused a plaintext connection from a non-loopback peer (the proxy API is TLS only off loopback: set WEFT_PROXY_*_SVC_NAME to {})", transport.name());
    Ok(None)
}

#[cfg(test)]
#[path = "transport_tests.rs"]
mod tests;
