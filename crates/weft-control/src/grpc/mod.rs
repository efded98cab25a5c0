//! gRPC: serves the index's snapshots as the public `linkerd2-proxy-api` services, all on one
//! port, plus `Identity.Certify` (see [`identity`]). Each stream is a task that waits on one watch receiver and maps each new snapshot to
//! protobuf; it ends when the client goes away or the control plane shuts down.
//!
//! This module only wires the services; their shared pieces are the leaves `stream` (the stream
//! task) and `meta` (protobuf helpers), so no service calls back up into it.

mod destination;
pub mod identity;
mod meta;
mod outbound;
mod policy;
mod stream;
pub mod transport;

use crate::index::Index;
use linkerd2_proxy_api::{
    destination::destination_server::DestinationServer, identity::identity_server::IdentityServer,
    inbound::inbound_server_policies_server::InboundServerPoliciesServer,
    outbound::outbound_policies_server::OutboundPoliciesServer,
};
use std::sync::Arc;
use tokio::sync::watch;

pub use destination::DestinationService;
#[cfg(test)]
pub(crate) use destination::Diff;
pub use outbound::OutboundService;
pub use policy::InboundService;
pub use stream::Stream;

/// How long a connection may be silent before the server PINGs its peer; a peer that does not
/// answer within [`KEEPALIVE_TIMEOUT`] is gone (crashed, partitioned, or never meant to talk)
/// and its connection is closed. Every HTTP/2 client answers PINGs on its own.
pub const KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(20);
pub const KEEPALIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves Destination, OutboundPolicies, InboundServerPolicies and Identity on `listener`
/// (TLS as `transport` says; plaintext only for loopback peers) until `shutdown` changes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    transport: Arc<transport::Transport>,
    index: Arc<Index>,
    identity: identity::IdentityService,
    shutdown: watch::Receiver<bool>,
) -> Result<(), tonic::transport::Error> {
    let mut stop = shutdown.clone();
    let shutdown_accept = shutdown.clone();
    tracing::info!(
        identity = transport.name(),
        "gRPC: TLS as the control plane's identity; plaintext only from loopback peers"
    );
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .add_service(IdentityServer::new(identity))
        .add_service(DestinationServer::new(DestinationService::new(
            index.clone(),
            shutdown.clone(),
        )))
        .add_service(OutboundPoliciesServer::new(OutboundService::new(
            index.clone(),
            shutdown.clone(),
        )))
        .add_service(InboundServerPoliciesServer::new(InboundService::new(
            index, shutdown,
        )))
        // TCP_NODELAY (set on every accepted socket): without it a stream's first answer
        // (headers, then data) waits ~40 ms for the client's delayed ACK (Nagle), on every new
        // stream.
        .serve_with_incoming_shutdown(
            transport::incoming(listener, transport, shutdown_accept),
            async move {
                let _ = stop.changed().await;
            },
        )
        .await
}
