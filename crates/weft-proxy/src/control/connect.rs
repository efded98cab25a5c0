//! How the proxy reaches its control plane: the connector under every control-plane gRPC
//! channel (Destination, OutboundPolicies, InboundServerPolicies, Identity).
//!
//! - Several addresses: a `WEFT_PROXY_*_SVC_ADDR` is a comma-separated list of `host:port`, and a
//!   host may resolve to several addresses. Each new connection tries the address that answered
//!   last first, then the others in turn, so when a control-plane replica goes away the next
//!   connection (the streams reconnect after their backoff, keeping their last state meanwhile)
//!   lands on another one.
//! - TLS: with the control plane's identity named (`WEFT_PROXY_*_SVC_NAME`), every connection is
//!   TLS 1.3, the server's certificate must chain to this proxy's trust anchors and carry exactly
//!   that identity (as for a meshed peer), and once this proxy holds its own certificate it
//!   presents it (mTLS): Destination and the policy APIs connect only then, so only
//!   `Identity.Certify`, which brings the first certificate, ever runs without one. Without a name the connection is plaintext, which the configuration
//!   allows only for loopback addresses (`config::control`).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::RootCertStore;
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::connect::Io;
use crate::identity::{tls as id_tls, Certified};

/// What a TLS connection to the control plane needs, all followed live: the identity the control
/// plane must prove, the anchors in force and this proxy's current certificate.
#[derive(Clone)]
pub struct ControlTls {
    pub name: String,
    pub roots: watch::Receiver<Arc<RootCertStore>>,
    pub cert: watch::Receiver<Option<Arc<Certified>>>,
    /// Connect only once this proxy holds its certificate, so the connection is mutual TLS:
    /// every service but `Identity.Certify` (which is how the first certificate comes).
    pub mutual_only: bool,
}

impl std::fmt::Debug for ControlTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlTls")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl ControlTls {
    fn client_config(&self) -> io::Result<rustls::ClientConfig> {
        let roots = self.roots.borrow().clone();
        let cert = self.cert.borrow().clone();
        id_tls::control_client_config(roots, cert.as_deref(), &self.name)
            .map_err(|e| io::Error::other(format!("TLS to the control plane: {e}")))
    }
}

/// Opens connections to one control-plane service. Cheap to clone.
#[derive(Clone)]
pub struct Connector {
    inner: Arc<Inner>,
}

struct Inner {
    /// `host:port` entries, in the configured order.
    addrs: Vec<String>,
    /// The entry that answered last: tried first.
    preferred: AtomicUsize,
    tls: Option<ControlTls>,
    /// Per address tried (TCP and the TLS handshake together).
    timeout: Duration,
}

impl Connector {
    /// `list`: comma-separated `host:port` entries (validated by the configuration).
    pub fn new(list: &str, tls: Option<ControlTls>, timeout: Duration) -> Connector {
        Connector {
            inner: Arc::new(Inner {
                addrs: split(list),
                preferred: AtomicUsize::new(0),
                tls,
                timeout,
            }),
        }
    }

    /// The first entry: the authority of the gRPC requests (the control plane ignores it).
    pub fn authority(&self) -> &str {
        self.inner.addrs.first().map_or("localhost", String::as_str)
    }

    /// A connection to the first address that answers, starting with the one that answered
    /// last. The error names every address tried and why each failed.
    pub async fn connect(&self) -> io::Result<Io<TcpStream>> {
        let inner = &self.inner;
        if let Some(tls) = inner.tls.as_ref().filter(|t| t.mutual_only) {
            // Pending until the first certificate (a closed channel: the identity task is gone,
            // and the handshake below says what is missing).
            let _ = tls.cert.clone().wait_for(Option::is_some).await;
        }
        let n = inner.addrs.len();
        let start = inner.preferred.load(Ordering::Relaxed);
        let mut failures = Vec::new();
        for i in 0..n {
            let idx = (start + i) % n;
            let entry = &inner.addrs[idx];
            let resolved = match tokio::net::lookup_host(entry.as_str()).await {
                Ok(addrs) => addrs.collect::<Vec<_>>(),
                Err(e) => {
                    failures.push(format!("{entry}: {e}"));
                    continue;
                }
            };
            for addr in resolved {
                match tokio::time::timeout(inner.timeout, self.connect_to(addr)).await {
                    Ok(Ok(io)) => {
                        if idx != start {
                            tracing::info!(%entry, %addr, tried = ?failures, "control plane: connected to another address");
                        }
                        inner.preferred.store(idx, Ordering::Relaxed);
                        return Ok(io);
                    }
                    Ok(Err(e)) => failures.push(format!("{addr}: {e}")),
                    Err(_) => failures.push(format!("{addr}: timed out after {:?}", inner.timeout)),
                }
            }
        }
        Err(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            format!(
                "no control-plane address answered ({})",
                failures.join("; ")
            ),
        ))
    }

    async fn connect_to(&self, addr: SocketAddr) -> io::Result<Io<TcpStream>> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let Some(tls) = &self.inner.tls else {
            return Ok(Io::Plain(tcp));
        };
        let config = tls.client_config()?;
        let name = ServerName::try_from(tls.name.clone())
            .map_err(|_| io::Error::other(format!("{:?} is not a TLS server name", tls.name)))?;
        let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await?;
        Ok(Io::Tls(Box::new(stream)))
    }
}

/// The entries of a comma-separated list, trimmed, empty ones dropped.
pub fn split(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

type Connecting =
    Pin<Box<dyn std::future::Future<Output = io::Result<TokioIo<Io<TcpStream>>>> + Send>>;

impl tonic::codegen::Service<http::Uri> for Connector {
    type Response = TokioIo<Io<TcpStream>>;
    type Error = io::Error;
    type Future = Connecting;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Uri) -> Connecting {
        let this = self.clone();
        Box::pin(async move { this.connect().await.map(TokioIo::new) })
    }
}

#[cfg(test)]
#[path = "connect_tests.rs"]
mod tests;
