//! What the HTTP/2 client's and server's tests share: a body fed chunk by chunk, and the check
//! that an echo streams while its request is still open.

use crate::http::{boxed, Body, BoxError};
use bytes::Bytes;
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use std::time::Duration;

/// A body fed by the test, chunk by chunk.
pub fn channel_body() -> (tokio::sync::mpsc::Sender<Bytes>, Body) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let frames = futures_util::stream::poll_fn(move |cx| {
        rx.poll_recv(cx)
            .map(|chunk| chunk.map(|c| Ok::<_, BoxError>(Frame::data(c))))
    });
    (tx, boxed(StreamBody::new(frames)))
}

/// `echoed` is the response to a request whose body `tx` feeds, `ping-1` already sent: each
/// chunk comes back before the next is sent, and the echo ends when the request body does.
pub async fn assert_echoes_while_open<B>(tx: tokio::sync::mpsc::Sender<Bytes>, mut echoed: B)
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Debug,
{
    for chunk in ["ping-1", "ping-2", "ping-3"] {
        if chunk != "ping-1" {
            tx.send(Bytes::from(chunk)).await.unwrap();
        }
        let frame = tokio::time::timeout(Duration::from_secs(5), echoed.frame())
            .await
            .expect("each chunk is echoed before the next is sent")
            .unwrap()
            .unwrap();
        assert_eq!(frame.into_data().unwrap(), chunk);
    }
    drop(tx);
    let rest = tokio::time::timeout(Duration::from_secs(5), echoed.collect())
        .await
        .expect("the echo ends when the request body does")
        .unwrap();
    assert!(rest.to_bytes().is_empty());
}
