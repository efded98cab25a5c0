//! What a listener hands a request path: the accepted connection, where it was meant to go,
//! and the drain signal it must honour.

use std::net::SocketAddr;

use tokio::{net::TcpStream, sync::watch};

/// One accepted connection, handed to `inbound::handle_any` / `outbound::handle`.
pub struct Accepted {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    /// SO_ORIGINAL_DST when it differs from `local` (iptables redirected the connection).
    pub orig_dst: Option<SocketAddr>,
    /// Flips to true when the proxy starts draining: stop taking new requests on this
    /// connection (hyper graceful_shutdown), finish in-flight ones.
    pub drain: watch::Receiver<bool>,
}

impl Accepted {
    /// `None` when the socket has no local address (it was closed under us).
    pub fn new(
        stream: TcpStream,
        peer: SocketAddr,
        drain: watch::Receiver<bool>,
    ) -> Option<Accepted> {
        let local = stream.local_addr().ok()?;
        let orig_dst = crate::sys::original_dst(&stream).filter(|d| *d != local);
        Some(Accepted {
            stream,
            peer,
            local,
            orig_dst,
            drain,
        })
    }
}
