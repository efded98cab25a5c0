//! Byte relay between two streams, both directions, with half-close.
//!
//! When one side stops sending (read returns EOF), the relay shuts down the write side of the
//! other stream, so the other peer sees EOF too, and keeps relaying the opposite direction until
//! it ends as well. Used for opaque TCP and for upgraded HTTP connections (WebSocket, CONNECT).

use crate::metrics::TcpConnMetrics;
use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// A direction starts with a small buffer and moves to the large one the first time a read fills
/// it: an idle or interactive connection (most opaque connections, most of the time) holds
/// 2 × 1 KiB instead of 2 × 16 KiB, while a bulk stream switches after its first read.
const SMALL_BUF_SIZE: usize = 1024;
const BUF_SIZE: usize = 16 * 1024;

/// Bytes moved in each direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Moved {
    pub client_to_server: u64,
    pub server_to_client: u64,
}

/// Relays until both directions reached EOF (or one failed).
pub async fn relay<C, S>(client: C, server: S) -> io::Result<Moved>
where
    C: AsyncRead + AsyncWrite,
    S: AsyncRead + AsyncWrite,
{
    let (mut client_r, mut client_w) = tokio::io::split(client);
    let (mut server_r, mut server_w) = tokio::io::split(server);
    let c2s = copy_then_shutdown(&mut client_r, &mut server_w);
    let s2c = copy_then_shutdown(&mut server_r, &mut client_w);
    let (client_to_server, server_to_client) = tokio::try_join!(c2s, s2c)?;
    Ok(Moved {
        client_to_server,
        server_to_client,
    })
}

async fn copy_then_shutdown<R, W>(from: &mut R, to: &mut W) -> io::Result<u64>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; SMALL_BUF_SIZE];
    let mut total = 0u64;
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        to.write_all(&buf[..n]).await?;
        // Flush per chunk: interactive protocols must not wait for a full buffer.
        to.flush().await?;
        total += n as u64;
        if n == buf.len() && buf.len() < BUF_SIZE {
            // Data is flowing in bulk: the buffer is empty again, so growing it copies nothing.
            buf = vec![0u8; BUF_SIZE];
        }
    }
    // Half-close: the other peer sees EOF but may keep sending the other way.
    match to.shutdown().await {
        // The other side may have gone already; its own direction reports that.
        Err(e) if e.kind() == io::ErrorKind::NotConnected => {}
        other => other?,
    }
    Ok(total)
}

/// A stream that counts the bytes read from and written to its peer into TCP metrics; dropping it
/// records the connection as closed, classified by the first socket error a read or write
/// returned (`tcp_close_total{errno}`).
///
/// An inbound connection's labels (`tls`, `client_id`) are only known after its first bytes (the
/// ClientHello) or its TLS handshake: such a stream starts [`Metered::unattached`], counting
/// bytes (and its first error) aside, and [`Metered::attach`] hands them to its metrics once they
/// exist, with the time it was accepted.
pub struct Metered<S> {
    inner: S,
    metrics: Option<TcpConnMetrics>,
    /// Until attached: when the stream was accepted, what it read and wrote, its first errno.
    accepted: Option<tokio::time::Instant>,
    pending_read: u64,
    pending_write: u64,
    pending_errno: Option<i32>,
}

impl<S> Metered<S> {
    pub fn new(inner: S, metrics: TcpConnMetrics) -> Self {
        Metered {
            inner,
            metrics: Some(metrics),
            accepted: None,
            pending_read: 0,
            pending_write: 0,
            pending_errno: None,
        }
    }

    /// Counts bytes until [`Metered::attach`]; a connection never attached is never counted.
    pub fn unattached(inner: S) -> Self {
        Metered {
            inner,
            metrics: None,
            accepted: Some(tokio::time::Instant::now()),
            pending_read: 0,
            pending_write: 0,
            pending_errno: None,
        }
    }

    /// The connection's metrics are now known: bytes counted so far go to them.
    pub fn attach(&mut self, mut metrics: TcpConnMetrics) {
        if let Some(at) = self.accepted.take() {
            metrics.opened_at(at);
        }
        metrics.read(std::mem::take(&mut self.pending_read));
        metrics.write(std::mem::take(&mut self.pending_write));
        if let Some(errno) = self.pending_errno.take() {
            metrics.errno(errno);
        }
        self.metrics = Some(metrics);
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    fn read(&mut self, n: u64) {
        match &self.metrics {
            Some(m) => m.read(n),
            None => self.pending_read += n,
        }
    }

    fn wrote(&mut self, n: u64) {
        match &self.metrics {
            Some(m) => m.write(n),
            None => self.pending_write += n,
        }
    }

    /// Notes a failed read or write (cold: once or twice per failing connection).
    #[cold]
    fn failed(&mut self, e: &io::Error) {
        let Some(errno) = e.raw_os_error() else {
            return;
        };
        match &mut self.metrics {
            Some(m) => m.errno(errno),
            None => {
                self.pending_errno.get_or_insert(errno);
            }
        }
    }

    /// Records an error result on the way through.
    fn check<T>(&mut self, polled: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if let Poll::Ready(Err(e)) = &polled {
            self.failed(e);
        }
        polled
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Metered<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            this.read(n as u64);
        }
        this.check(polled)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Metered<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            this.wrote(n as u64);
        }
        this.check(polled)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        this.check(polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.check(polled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::{TcpListener, TcpStream};

    /// A client half-closes after its request; the server answers after seeing EOF.
    #[tokio::test]
    async fn half_close_passes_through_both_ways() {
        let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server_addr = server.local_addr().unwrap();
        let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy_addr = proxy.local_addr().unwrap();

        let server_task = tokio::spawn(async move {
            let (mut s, _) = server.accept().await.unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.unwrap();
            s.write_all(format!("got {} bytes", got.len()).as_bytes())
                .await
                .unwrap();
            s.shutdown().await.unwrap();
        });
        let proxy_task = tokio::spawn(async move {
            let (c, _) = proxy.accept().await.unwrap();
            let s = TcpStream::connect(server_addr).await.unwrap();
            relay(c, s).await.unwrap()
        });

        let mut client = TcpStream::connect(proxy_addr).await.unwrap();
        client.write_all(&[7u8; 100_000]).await.unwrap();
        client.shutdown().await.unwrap();
        let mut answer = String::new();
        client.read_to_string(&mut answer).await.unwrap();
        assert_eq!(answer, "got 100000 bytes");
        server_task.await.unwrap();
        let moved = proxy_task.await.unwrap();
        assert_eq!(
            moved,
            Moved {
                client_to_server: 100_000,
                server_to_client: 16
            }
        );
    }
}
