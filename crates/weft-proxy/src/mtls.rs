//! Mutual TLS on the data path: what the outbound and inbound paths need on top of
//! [`crate::identity::tls`] (which builds rustls configurations from this proxy's certificate).
//!
//! - [`Client`]: outbound TLS. Caches one `ClientConfig` per expected peer identity (rebuilt when
//!   the certificate is renewed, so TLS 1.3 session resumption works between renewals); the
//!   handshake itself is [`crate::connect`]'s, with SNI = the peer's identity. No ALPN for meshed
//!   HTTP, like Linkerd; ALPN `transport.l5d.io/v1` only with the transport header.
//! - [`Server`]: inbound TLS. Caches the `ServerConfig`s for the current certificate.
//! - [`peek_client_hello`] / [`parse_client_hello`]: read a ClientHello without consuming it
//!   (the bytes are kept and replayed), for SNI and ALPN.
//! - [`TransportHeader`]: Linkerd's `transport.l5d.io/v1` header (opaque traffic to a peer's
//!   inbound port: which local port it is for, and the session protocol if known).

use crate::fxhash::FxHashMap;
use crate::identity::{tls as id_tls, Certified, Identity};
use bytes::{Buf, BufMut, BytesMut};
use rustls::{ClientConfig, ServerConfig};
use std::{
    io,
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

/// The only ALPN value of the mesh: the connection starts with a transport header.
pub const TRANSPORT_ALPN: &[u8] = b"transport.l5d.io/v1";
/// The transport header's preface, followed by a u32 big-endian length and the protobuf header.
pub const TRANSPORT_PREFACE: &[u8] = b"transport.l5d.io/v1\r\n\r\n";
/// A header longer than this is refused (it names a port and a host, nothing more).
const MAX_HEADER_LEN: usize = 64 * 1024;
/// ClientHellos are read up to this many bytes (post-quantum key shares included, they are a
/// few KiB); a longer one is treated as not for us.
const MAX_HELLO_LEN: usize = 32 * 1024;

/// Outbound TLS: client configurations per expected identity, for the current certificate.
pub struct Client {
    identity: Identity,
    cache: Mutex<ClientCache>,
}

#[derive(Default)]
struct ClientCache {
    cert: Option<Arc<Certified>>,
    /// Per peer identity (from discovery), without and with the transport ALPN: a hit costs a
    /// lookup and two reference counts, no allocation.
    configs: FxHashMap<Arc<str>, [Option<ClientTls>; 2]>,
}

/// How to reach one meshed endpoint: who it must be, and the configuration to check that.
#[derive(Clone)]
pub struct ClientTls {
    /// The peer's expected identity (also the SNI).
    pub identity: Arc<str>,
    pub config: Arc<ClientConfig>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("identity", &self.identity)
            .finish()
    }
}

/// Why an outbound connection is not mTLS (`no_tls_reason`), or the TLS to use.
pub enum Plan {
    Tls(ClientTls),
    Plain(&'static str),
    /// This proxy has identity but no certificate yet, and none arrived in time: no connection.
    NoCertificate,
}

/// `no_tls_reason` values set by the data path.
pub const NO_TLS_FROM_DISCOVERY: &str = crate::metrics::NO_TLS_FROM_DISCOVERY;
/// This proxy runs without identity (the transitional mode).
pub const NO_TLS_LOCAL_DISABLED: &str = "local_identity_disabled";
/// Discovery named an identity that cannot be an SNI (a URI-like identity).
pub const NO_TLS_UNSUPPORTED_IDENTITY: &str = "unsupported_identity";

impl Client {
    pub fn new(identity: Identity) -> Client {
        Client {
            identity,
            cache: Mutex::new(ClientCache::default()),
        }
    }

    /// The TLS for a peer that discovery says is `peer_identity`. `transport` adds the ALPN of
    /// the transport header. Before this proxy's first certificate it waits for one until
    /// `deadline` and then gives up ([`Plan::NoCertificate`]): a connection to a meshed peer is
    /// never made in plaintext for lack of a certificate.
    pub async fn plan(&self, peer_identity: &str, transport: bool, deadline: Instant) -> Plan {
        let Some(cert) = self.identity.certificate_by(deadline).await else {
            return Plan::NoCertificate;
        };
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if !cache.cert.as_ref().is_some_and(|c| Arc::ptr_eq(c, &cert)) {
            // Renewed: new connections present the new certificate.
            cache.cert = Some(cert.clone());
            cache.configs.clear();
        }
        if let Some(tls) = cache
            .configs
            .get(peer_identity)
            .and_then(|c| c[usize::from(transport)].as_ref())
        {
            return Plan::Tls(tls.clone());
        }
        match id_tls::client_config(&cert, peer_identity) {
            Ok(mut config) => {
                if transport {
                    config.alpn_protocols = vec![TRANSPORT_ALPN.to_vec()];
                }
                let identity: Arc<str> = peer_identity.into();
                let tls = ClientTls {
                    identity: identity.clone(),
                    config: Arc::new(config),
                };
                cache.configs.entry(identity).or_default()[usize::from(transport)] =
                    Some(tls.clone());
                Plan::Tls(tls)
            }
            Err(e) => {
                tracing::debug!(identity = peer_identity, error = %e, "no TLS to this identity");
                Plan::Plain(NO_TLS_UNSUPPORTED_IDENTITY)
            }
        }
    }
}

/// Short `reason` label for a refused peer certificate.
pub fn rejection_label(r: id_tls::PeerRejection) -> &'static str {
    use id_tls::PeerRejection as R;
    match r {
        R::UnknownCa => "unknown_ca",
        R::Expired => "expired",
        R::NotYetValid => "not_yet_valid",
        R::WrongIdentity => "wrong_identity",
        R::NoCertificate => "no_certificate",
        R::BadCertificate => "bad_certificate",
    }
}

/// Inbound TLS: the server configurations for the current certificate.
pub struct Server {
    identity: Identity,
    cache: Mutex<Option<ServerConfigs>>,
}

#[derive(Clone)]
struct ServerConfigs {
    cert: Arc<Certified>,
    /// No ALPN: any client ALPN offer is ignored (meshed HTTP uses none).
    plain: Arc<ServerConfig>,
    /// ALPN `transport.l5d.io/v1`, used when the client offers it.
    transport: Arc<ServerConfig>,
}

impl Server {
    pub fn new(identity: Identity) -> Server {
        Server {
            identity,
            cache: Mutex::new(None),
        }
    }

    /// This proxy's identity: TLS whose SNI is this name is terminated here.
    pub fn name(&self) -> &str {
        self.identity.name()
    }

    /// [`Server::config`], waiting until `deadline` for this proxy's first certificate: a peer
    /// that reached us right after our workload was registered (its endpoint is published before
    /// our certificate arrives) gets its handshake instead of a closed connection.
    pub async fn config_when_ready(
        &self,
        alpn: &[Vec<u8>],
        deadline: Instant,
    ) -> Option<Arc<ServerConfig>> {
        self.identity.certificate_by(deadline).await?;
        self.config(alpn)
    }

    /// The configuration for a ClientHello offering `alpn`; `None` before the first certificate.
    pub fn config(&self, alpn: &[Vec<u8>]) -> Option<Arc<ServerConfig>> {
        let cert = self.identity.current()?;
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let fresh = cache.as_ref().is_some_and(|c| Arc::ptr_eq(&c.cert, &cert));
        if !fresh {
            let plain = match id_tls::server_config(&cert) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot build the inbound TLS configuration");
                    return None;
                }
            };
            let mut transport = plain.clone();
            transport.alpn_protocols = vec![TRANSPORT_ALPN.to_vec()];
            *cache = Some(ServerConfigs {
                cert,
                plain: Arc::new(plain),
                transport: Arc::new(transport),
            });
        }
        let configs = cache.as_ref()?;
        Some(if alpn.iter().any(|p| p == TRANSPORT_ALPN) {
            configs.transport.clone()
        } else {
            configs.plain.clone()
        })
    }
}

/// What the first bytes of an inbound connection are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Peeked {
    /// Not a TLS handshake record: plaintext.
    NotTls,
    /// Nothing arrived within the timeout (a server-speaks-first client).
    Silent,
    /// A complete ClientHello.
    Hello(ClientHello),
    /// Starts like TLS but is not a ClientHello we can read (truncated, malformed, too long).
    Malformed,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientHello {
    /// server_name (host_name), lower-cased, without a trailing dot.
    pub sni: Option<String>,
    /// application_layer_protocol_negotiation offers.
    pub alpn: Vec<Vec<u8>>,
}

/// Reads until the first bytes tell whether this is a TLS ClientHello, and returns what was
/// read (to replay) with the verdict. `timeout` bounds the whole wait.
pub async fn peek_client_hello<S: AsyncRead + Unpin>(
    io: &mut S,
    timeout: Duration,
) -> io::Result<(Peeked, BytesMut)> {
    let mut buf = BytesMut::with_capacity(1024);
    let deadline = Instant::now() + timeout;
    loop {
        match parse_client_hello(&buf) {
            Some(p) => return Ok((p, buf)),
            None if buf.len() >= MAX_HELLO_LEN => return Ok((Peeked::Malformed, buf)),
            None => {}
        }
        match tokio::time::timeout_at(deadline, io.read_buf(&mut buf)).await {
            Err(_) if buf.is_empty() => return Ok((Peeked::Silent, buf)),
            Err(_) => return Ok((Peeked::Malformed, buf)),
            Ok(Ok(0)) if buf.is_empty() => return Ok((Peeked::NotTls, buf)),
            Ok(Ok(0)) => return Ok((Peeked::Malformed, buf)),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
        }
    }
}

/// Classifies the bytes read so far; `None` means more are needed. The ClientHello may span
/// several handshake records.
pub fn parse_client_hello(buf: &[u8]) -> Option<Peeked> {
    const HANDSHAKE: u8 = 0x16;
    const CLIENT_HELLO: u8 = 0x01;
    let first = *buf.first()?;
    if first != HANDSHAKE {
        return Some(Peeked::NotTls);
    }
    if buf.len() >= 2 && buf[1] != 0x03 {
        return Some(Peeked::NotTls);
    }
    // Reassemble the handshake message from consecutive handshake records.
    let mut msg = Vec::new();
    let mut rest = buf;
    loop {
        if rest.len() < 5 {
            return None;
        }
        if rest[0] != HANDSHAKE {
            return Some(Peeked::Malformed);
        }
        let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        if rest.len() < 5 + len {
            return None;
        }
        msg.extend_from_slice(&rest[5..5 + len]);
        rest = &rest[5 + len..];
        if msg.len() >= 4 {
            if msg[0] != CLIENT_HELLO {
                return Some(Peeked::Malformed);
            }
            let body_len =
                (usize::from(msg[1]) << 16) | (usize::from(msg[2]) << 8) | usize::from(msg[3]);
            if msg.len() >= 4 + body_len {
                return Some(match hello_body(&msg[4..4 + body_len]) {
                    Some(h) => Peeked::Hello(h),
                    None => Peeked::Malformed,
                });
            }
        }
    }
}

/// Takes `n` bytes off the front of `b`.
fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if b.len() < n {
        return None;
    }
    let (head, tail) = b.split_at(n);
    *b = tail;
    Some(head)
}

fn take_u8(b: &mut &[u8]) -> Option<usize> {
    take(b, 1).map(|v| usize::from(v[0]))
}

fn take_u16(b: &mut &[u8]) -> Option<usize> {
    take(b, 2).map(|v| usize::from(u16::from_be_bytes([v[0], v[1]])))
}

fn hello_body(mut b: &[u8]) -> Option<ClientHello> {
    let b = &mut b;
    take(b, 2 + 32)?; // legacy_version, random
    let n = take_u8(b)?;
    take(b, n)?; // legacy_session_id
    let n = take_u16(b)?;
    take(b, n)?; // cipher_suites
    let n = take_u8(b)?;
    take(b, n)?; // legacy_compression_methods
    let mut hello = ClientHello::default();
    if b.is_empty() {
        return Some(hello);
    }
    let n = take_u16(b)?;
    let mut exts = take(b, n)?;
    while !exts.is_empty() {
        let kind = take_u16(&mut exts)?;
        let n = take_u16(&mut exts)?;
        let mut data = take(&mut exts, n)?;
        match kind {
            0 => {
                // server_name: a list of (type, name); type 0 = host_name.
                let n = take_u16(&mut data)?;
                let mut list = take(&mut data, n)?;
                while !list.is_empty() {
                    let kind = take_u8(&mut list)?;
                    let n = take_u16(&mut list)?;
                    let name = take(&mut list, n)?;
                    if kind == 0 && hello.sni.is_none() {
                        let name = std::str::from_utf8(name).ok()?;
                        hello.sni = Some(name.trim_end_matches('.').to_ascii_lowercase());
                    }
                }
            }
            16 => {
                let n = take_u16(&mut data)?;
                let mut list = take(&mut data, n)?;
                while !list.is_empty() {
                    let n = take_u8(&mut list)?;
                    hello.alpn.push(take(&mut list, n)?.to_vec());
                }
            }
            _ => {}
        }
    }
    Some(hello)
}

/// Linkerd's transport header: sent first inside a TLS connection negotiated with ALPN
/// [`TRANSPORT_ALPN`], it names the local port the connection is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransportHeader {
    pub port: u16,
    /// Optional logical name: a multicluster gateway forwards the connection to it
    /// (`inbound::gateway`); without one, the connection is for this proxy's `port`.
    pub name: Option<String>,
    /// Known session protocol; `None` = opaque.
    pub protocol: Option<SessionProtocol>,
    /// Weft's extension: the verified identity of the client a multicluster gateway forwards
    /// this connection for. Believed only from a trusted gateway
    /// (`WEFT_PROXY_INBOUND_TRUSTED_GATEWAY_IDENTITIES`); a Linkerd proxy skips the field.
    pub client_id: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionProtocol {
    Http1,
    Http2,
}

/// The protobuf messages (`transport.l5d.io`, header.proto in linkerd2-proxy).
mod proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Header {
        #[prost(int32, tag = "1")]
        pub port: i32,
        #[prost(string, tag = "2")]
        pub name: String,
        #[prost(message, optional, tag = "3")]
        pub session_protocol: Option<SessionProtocol>,
        /// Not in Linkerd's header.proto (which uses tags 1 to 3): a tag far from them, so a
        /// field Linkerd adds later does not collide, and a Linkerd proxy skips it as unknown.
        #[prost(string, tag = "1000")]
        pub client_id: String,
    }
    #[derive(Clone, Copy, PartialEq, prost::Message)]
    pub struct SessionProtocol {
        #[prost(oneof = "Kind", tags = "1, 2")]
        pub kind: Option<Kind>,
    }
    #[derive(Clone, Copy, PartialEq, prost::Oneof)]
    pub enum Kind {
        #[prost(message, tag = "1")]
        Http1(Empty),
        #[prost(message, tag = "2")]
        Http2(Empty),
    }
    #[derive(Clone, Copy, PartialEq, prost::Message)]
    pub struct Empty {}
}

#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    #[error("reading the transport header: {0}")]
    Io(#[from] io::Error),
    #[error("the connection does not start with the transport header preface")]
    Preface,
    #[error("transport header of {0} bytes is too long")]
    TooLong(usize),
    #[error("malformed transport header: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("transport header names port {0}, not a TCP port")]
    Port(i32),
}

impl TransportHeader {
    pub fn encode(&self) -> Vec<u8> {
        use prost::Message;
        let msg = proto::Header {
            port: i32::from(self.port),
            name: self.name.clone().unwrap_or_default(),
            session_protocol: self.protocol.map(|p| proto::SessionProtocol {
                kind: Some(match p {
                    SessionProtocol::Http1 => proto::Kind::Http1(proto::Empty {}),
                    SessionProtocol::Http2 => proto::Kind::Http2(proto::Empty {}),
                }),
            }),
            client_id: self.client_id.clone().unwrap_or_default(),
        };
        let body = msg.encode_to_vec();
        let mut out = Vec::with_capacity(TRANSPORT_PREFACE.len() + 4 + body.len());
        out.extend_from_slice(TRANSPORT_PREFACE);
        out.put_u32(body.len() as u32);
        out.extend_from_slice(&body);
        out
    }

    pub async fn write<S: AsyncWrite + Unpin>(&self, io: &mut S) -> io::Result<()> {
        io.write_all(&self.encode()).await?;
        io.flush().await
    }

    /// Reads exactly the header (nothing after it).
    pub async fn read<S: AsyncRead + Unpin>(io: &mut S) -> Result<TransportHeader, HeaderError> {
        use prost::Message;
        let mut preface = [0u8; TRANSPORT_PREFACE.len()];
        io.read_exact(&mut preface).await?;
        if preface != TRANSPORT_PREFACE {
            return Err(HeaderError::Preface);
        }
        let mut len = [0u8; 4];
        io.read_exact(&mut len).await?;
        let len = (&len[..]).get_u32() as usize;
        if len > MAX_HEADER_LEN {
            return Err(HeaderError::TooLong(len));
        }
        let mut body = vec![0u8; len];
        io.read_exact(&mut body).await?;
        let msg = proto::Header::decode(&body[..])?;
        let port = u16::try_from(msg.port)
            .ok()
            .filter(|p| *p != 0)
            .ok_or(HeaderError::Port(msg.port))?;
        Ok(TransportHeader {
            port,
            name: Some(msg.name).filter(|n| !n.is_empty()),
            protocol: msg.session_protocol.and_then(|p| p.kind).map(|k| match k {
                proto::Kind::Http1(_) => SessionProtocol::Http1,
                proto::Kind::Http2(_) => SessionProtocol::Http2,
            }),
            client_id: Some(msg.client_id).filter(|c| !c.is_empty()),
        })
    }
}

#[cfg(test)]
#[path = "mtls_tests.rs"]
pub(crate) mod tests;
