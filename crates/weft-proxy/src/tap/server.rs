//! The tap server: `io.linkerd.proxy.tap.Tap/Observe` (gRPC, tonic) behind mTLS on
//! `WEFT_PROXY_TAP_LISTEN_ADDR`.
//!
//! TLS: this proxy's certificate; a client certificate is required, must chain to the trust
//! anchors and carry exactly `WEFT_PROXY_TAP_SVC_NAME` as its DNS SAN. Anything else fails the
//! handshake; until the proxy has its certificate, connections are closed. Both are counted in
//! `tap_refused_total{reason}`.

use std::{
    io,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use linkerd2_proxy_api::tap::{observe_request::extract, tap_server, ObserveRequest, TapEvent};
use rustls::{
    pki_types::{CertificateDer, UnixTime},
    server::danger::{ClientCertVerified, ClientCertVerifier},
    server::WebPkiClientVerifier,
    CertificateError, DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::mpsc,
};
use tokio_rustls::{server::TlsStream, TlsAcceptor};
use tokio_stream::{wrappers::ReceiverStream, Stream};

use super::{Match, Registration, Taps};
use crate::{
    identity::{tls as id_tls, Certified, Identity},
    metrics::{Metrics, TAP_REFUSED},
    mtls::rejection_label,
};

/// The `Tap` gRPC service over [`Taps`].
#[derive(Clone)]
pub struct TapService {
    taps: Arc<Taps>,
}

impl TapService {
    pub fn new(taps: Arc<Taps>) -> TapService {
        TapService { taps }
    }
}

/// An `Observe` response stream: the tap's events; dropping it (the client cancelled) ends
/// the tap.
pub struct Events {
    rx: ReceiverStream<TapEvent>,
    _registration: Registration,
}

impl Stream for Events {
    type Item = Result<TapEvent, tonic::Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.rx).poll_next(cx).map(|e| e.map(Ok))
    }
}

#[tonic::async_trait]
impl tap_server::Tap for TapService {
    type ObserveStream = Events;

    async fn observe(
        &self,
        req: tonic::Request<ObserveRequest>,
    ) -> Result<tonic::Response<Events>, tonic::Status> {
        let req = req.into_inner();
        let matcher = Match::new(req.r#match)
            .map_err(|e| tonic::Status::invalid_argument(format!("match: {e}")))?;
        let headers = matches!(
            req.extract.and_then(|e| e.extract),
            Some(extract::Extract::Http(extract::Http {
                extract: Some(extract::http::Extract::Headers(_))
            }))
        );
        let (registration, rx) = self.taps.register(matcher, req.limit.into(), headers);
        tracing::debug!(limit = req.limit, headers, "tap started");
        Ok(tonic::Response::new(Events {
            rx: ReceiverStream::new(rx),
            _registration: registration,
        }))
    }
}

/// Serves taps on `listener` until the task is aborted.
pub async fn serve(
    listener: TcpListener,
    taps: Arc<Taps>,
    identity: Identity,
    tap_svc_name: String,
    metrics: Metrics,
) {
    let (tx, rx) = mpsc::channel::<io::Result<Conn>>(16);
    let configs = Arc::new(Configs {
        identity,
        expected: tap_svc_name,
        cache: Mutex::new(None),
    });
    let accept = tokio::spawn(async move {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "tap listener accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let (tx, configs, metrics) = (tx.clone(), configs.clone(), metrics.clone());
            // Handshakes run apart so one slow client does not hold the others back.
            tokio::spawn(async move {
                let Some(config) = configs.current() else {
                    metrics.count(TAP_REFUSED, None, &[("reason", "no_certificate_yet")]);
                    return tracing::info!(%peer, "tap connection refused: no certificate yet");
                };
                match TlsAcceptor::from(config).accept(tcp).await {
                    Ok(tls) => {
                        let _ = tx.send(Ok(Conn(tls))).await;
                    }
                    Err(e) => {
                        let reason =
                            id_tls::PeerRejection::from_io(&e).map_or("handshake", rejection_label);
                        metrics.count(TAP_REFUSED, None, &[("reason", reason)]);
                        tracing::info!(%peer, error = %e, "tap connection refused");
                    }
                }
            });
        }
    });
    // The accept loop stops with the server (its task is aborted at drain).
    let _accept = AbortOnDrop(accept);
    let served = tonic::transport::Server::builder()
        .add_service(tap_server::TapServer::new(TapService::new(taps)))
        .serve_with_incoming(ReceiverStream::new(rx))
        .await;
    if let Err(e) = served {
        tracing::warn!(error = %e, "tap server stopped");
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The TLS server configuration for the current certificate (rebuilt when it changes).
struct Configs {
    identity: Identity,
    expected: String,
    cache: Mutex<Option<(Arc<Certified>, Arc<ServerConfig>)>>,
}

impl Configs {
    fn current(&self) -> Option<Arc<ServerConfig>> {
        let cert = self.identity.current()?;
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((c, config)) = cache.as_ref() {
            if Arc::ptr_eq(c, &cert) {
                return Some(config.clone());
            }
        }
        match server_config(&cert, &self.expected) {
            Ok(config) => {
                let config = Arc::new(config);
                *cache = Some((cert, config.clone()));
                Some(config)
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot build the tap server's TLS configuration");
                None
            }
        }
    }
}

/// Our certificate; a client certificate for exactly `expected`, chaining to our anchors.
pub fn server_config(c: &Certified, expected: &str) -> Result<ServerConfig, id_tls::TlsError> {
    let provider = id_tls::provider();
    let inner = WebPkiClientVerifier::builder_with_provider(c.roots.clone(), provider.clone())
        .build()
        .map_err(|e| id_tls::TlsError::Verifier(e.to_string()))?;
    let verifier = TapClientVerifier {
        inner,
        expected: expected.trim_end_matches('.').to_ascii_lowercase(),
    };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(
            c.key.clone(),
        )));
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// WebPKI client verification plus the tap identity check.
#[derive(Debug)]
struct TapClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    expected: String,
}

impl ClientCertVerifier for TapClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        match id_tls::dns_sans(end_entity).as_deref() {
            Ok([one])
                if one
                    .trim_end_matches('.')
                    .eq_ignore_ascii_case(&self.expected) =>
            {
                Ok(verified)
            }
            _ => Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName,
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// An accepted tap connection, as tonic's server takes it.
pub struct Conn(TlsStream<TcpStream>);

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = ();
    fn connect_info(&self) {}
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}
