//! gRPC: serves the index's snapshots as the public `linkerd2-proxy-api` services, all on one
//! port, plus `Identity.Certify` (see [`identity`]). Each stream is a task that waits on one watch receiver and maps each new snapshot to
//! protobuf; it ends when the client goes away or the control plane shuts down.

mod destination;
pub mod identity;
mod policy;

use crate::index::Index;
use linkerd2_proxy_api::{
    destination::destination_server::DestinationServer, identity::identity_server::IdentityServer,
    inbound::inbound_server_policies_server::InboundServerPoliciesServer, meta,
    outbound::outbound_policies_server::OutboundPoliciesServer,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::TcpIncoming;

pub use destination::DestinationService;
#[cfg(test)]
pub(crate) use destination::Diff;
pub use policy::{InboundService, OutboundService};

/// The stream type of every server-streaming RPC here.
pub type Stream<M> = ReceiverStream<Result<M, tonic::Status>>;

/// Serves Destination, OutboundPolicies, InboundServerPolicies and Identity on `listener`
/// until `shutdown` changes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    index: Arc<Index>,
    identity: identity::IdentityService,
    shutdown: watch::Receiver<bool>,
) -> Result<(), tonic::transport::Error> {
    let mut stop = shutdown.clone();
    tonic::transport::Server::builder()
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
        // TCP_NODELAY: without it a stream's first answer (headers, then data) waits ~40 ms
        // for the client's delayed ACK (Nagle), on every new stream.
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            async move {
                let _ = stop.changed().await;
            },
        )
        .await
}

/// Spawns the task behind one stream: sends `map(first)` at once, then `map` of every changed
/// snapshot. `map` returns the messages to send; an `Err` ends the stream after it is sent.
pub(crate) fn stream<V, M, F>(
    mut rx: watch::Receiver<V>,
    mut shutdown: watch::Receiver<bool>,
    mut map: F,
) -> Stream<M>
where
    V: Clone + Send + Sync + 'static,
    M: Send + 'static,
    F: FnMut(&V) -> Vec<Result<M, tonic::Status>> + Send + 'static,
{
    let (tx, out) = mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let snapshot = rx.borrow_and_update().clone();
            for msg in map(&snapshot) {
                let end = msg.is_err();
                if tx.send(msg).await.is_err() || end {
                    return;
                }
            }
            tokio::select! {
                changed = rx.changed() => if changed.is_err() { return },
                _ = tx.closed() => return,
                _ = shutdown.changed() => return,
            }
        }
    });
    ReceiverStream::new(out)
}

pub(crate) fn duration(d: Duration) -> Option<prost_types::Duration> {
    prost_types::Duration::try_from(d).ok()
}

pub(crate) fn service_meta(namespace: &str, name: &str, port: u16) -> meta::Metadata {
    meta::Metadata {
        kind: Some(meta::metadata::Kind::Resource(meta::Resource {
            group: "core".into(),
            kind: "Service".into(),
            name: name.into(),
            namespace: namespace.into(),
            section: String::new(),
            port: port.into(),
        })),
    }
}

pub(crate) fn default_meta(name: &str) -> meta::Metadata {
    meta::Metadata {
        kind: Some(meta::metadata::Kind::Default(name.into())),
    }
}
