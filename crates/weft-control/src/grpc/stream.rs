//! The task behind every server-streaming RPC: a watch receiver of snapshots in, protobuf
//! messages out, until the client goes away or the control plane shuts down.

use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

/// The stream type of every server-streaming RPC here.
pub type Stream<M> = ReceiverStream<Result<M, tonic::Status>>;

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
