//! Dials a workload's tap server: TCP to its `linkerd-tap` port, TLS 1.3 presenting the tap
//! identity's certificate and accepting only the workload's own identity (`meshTLS.serverName`)
//! chaining to the trust anchors, then `Tap/Observe` with tonic over that one connection.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use linkerd2_proxy_api::tap::tap_client::TapClient;
use linkerd2_proxy_api::tap::{ObserveRequest, TapEvent};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::OwnCert;

/// How long TCP + TLS + the Observe call's answer may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a tap could not start (the API's 502 says it).
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error("no tap certificate: the control plane could not issue one for its tap identity")]
    NoCertificate,
    #[error("connecting to the tap server {addr}: {error}")]
    Connect { addr: SocketAddr, error: String },
    #[error("TLS with the tap server {addr} as {identity}: {error}")]
    Tls {
        addr: SocketAddr,
        identity: String,
        error: String,
    },
    #[error("Tap/Observe at {addr}: {error}")]
    Observe { addr: SocketAddr, error: String },
    #[error("no answer from the tap server {addr} within {CONNECT_TIMEOUT:?}")]
    Timeout { addr: SocketAddr },
}

/// Opens a tap on the server at `addr`, whose certificate must be for `identity`.
pub async fn observe(
    addr: SocketAddr,
    identity: &str,
    anchors: &[Vec<u8>],
    cert: Option<Arc<OwnCert>>,
    request: ObserveRequest,
) -> Result<tonic::Streaming<TapEvent>, TapError> {
    tokio::time::timeout(CONNECT_TIMEOUT, async {
        let tls = connect(addr, identity, anchors, cert).await?;
        let observe = |error: String| TapError::Observe { addr, error };
        // One connection, already made: the channel's connector hands it over once.
        let once = Once(Arc::new(Mutex::new(Some(tls))));
        let channel = tonic::transport::Endpoint::from_static("http://tap.weft.invalid")
            .connect_with_connector(once)
            .await
            .map_err(|e| observe(e.to_string()))?;
        let rsp = TapClient::new(channel)
            .observe(request)
            .await
            .map_err(|s| observe(format!("{:?}: {}", s.code(), s.message())))?;
        Ok(rsp.into_inner())
    })
    .await
    .unwrap_or(Err(TapError::Timeout { addr }))
}

async fn connect(
    addr: SocketAddr,
    identity: &str,
    anchors: &[Vec<u8>],
    cert: Option<Arc<OwnCert>>,
) -> Result<TlsStream<TcpStream>, TapError> {
    let cert = cert.ok_or(TapError::NoCertificate)?;
    let tls_err = |error: String| TapError::Tls {
        addr,
        identity: identity.to_string(),
        error,
    };
    let mut config = crate::tls::mutual(anchors, &cert.chain, &cert.key).map_err(tls_err)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    let name = ServerName::try_from(identity.to_string()).map_err(|e| tls_err(e.to_string()))?;
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| TapError::Connect {
            addr,
            error: e.to_string(),
        })?;
    let _ = tcp.set_nodelay(true);
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| tls_err(e.to_string()))
}

/// A connector that yields one established connection, then refuses (a tap is one stream; it is
/// never re-dialled behind the caller's back).
#[derive(Clone)]
struct Once(Arc<Mutex<Option<TlsStream<TcpStream>>>>);

impl tonic::codegen::Service<http::Uri> for Once {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Uri) -> Self::Future {
        let taken = self.0.lock().unwrap_or_else(|e| e.into_inner()).take();
        std::future::ready(taken.map(TokioIo::new).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                "the tap connection is closed",
            )
        }))
    }
}
