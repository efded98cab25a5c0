//! Thread per core: with `WEFT_PROXY_CORES` = N > 1, accepted connections are spread over N
//! single-threaded runtimes, the main one and N − 1 worker threads, each running its
//! connections from the first byte to the last on one thread.
//!
//! A connection is handed over right after the accept (round-robin) and registered with its
//! worker's own event loop, so its reads and writes never wake another thread; tasks it spawns
//! (HTTP/2 streams, client connections) run on that worker too. Pooled HTTP/2 client connections
//! are per worker ([`shard`]: the pool's key includes it), so a worker's requests use connections
//! driven by that same thread, and a peer proxy with several workers receives several
//! connections to spread. The alternative, tokio's work-stealing scheduler, moved tasks and
//! wake-ups between threads on every request (issue 17: two workers used more CPU per request
//! than one).

use std::{
    cell::Cell,
    future::Future,
    io,
    net::SocketAddr,
    sync::atomic::{AtomicUsize, Ordering},
};

use tokio::{
    net::TcpStream,
    runtime,
    sync::{oneshot, watch},
};

use crate::accept::Accepted;

thread_local! {
    /// This thread's worker index: 0 on the main runtime's thread (and any thread that is not
    /// a worker), 1.. on worker threads.
    static SHARD: Cell<usize> = const { Cell::new(0) };
}

/// The worker this thread is (0 = the main runtime), for per-worker state such as pooled
/// connections.
pub fn shard() -> usize {
    SHARD.with(Cell::get)
}

/// The worker runtimes; dropping this stops the worker threads (their runtimes drop whatever
/// tasks they still hold).
pub struct Workers {
    /// Workers 1..N (worker 0 is the runtime that started them).
    handles: Vec<runtime::Handle>,
    next: AtomicUsize,
    _stop: Vec<oneshot::Sender<()>>,
}

impl Workers {
    /// `n` workers in all: the calling runtime and `n - 1` new threads named
    /// `weft-worker-<i>`.
    pub fn start(n: usize) -> io::Result<Workers> {
        let mut handles = Vec::with_capacity(n.saturating_sub(1));
        let mut stops = Vec::with_capacity(n.saturating_sub(1));
        for i in 1..n {
            let rt = runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (stop, stopped) = oneshot::channel::<()>();
            handles.push(rt.handle().clone());
            stops.push(stop);
            std::thread::Builder::new()
                .name(format!("weft-worker-{i}"))
                .spawn(move || {
                    SHARD.with(|s| s.set(i));
                    // Ends when `Workers` is dropped (the sender with it).
                    let _ = rt.block_on(stopped);
                })?;
        }
        Ok(Workers {
            handles,
            next: AtomicUsize::new(0),
            _stop: stops,
        })
    }

    /// How many runtimes connections are spread over.
    pub fn count(&self) -> usize {
        self.handles.len() + 1
    }

    /// Runs an accepted connection on the next worker in turn: its stream is deregistered from
    /// this thread's event loop and registered with the worker's, and `serve` builds the
    /// connection's future there. A connection already closed (no local address) is dropped.
    pub fn spawn<F, Fut>(
        &self,
        (stream, peer, drain): (TcpStream, SocketAddr, watch::Receiver<bool>),
        serve: F,
    ) where
        F: FnOnce(Accepted) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.count();
        if i == 0 {
            if let Some(conn) = Accepted::new(stream, peer, drain) {
                tokio::spawn(serve(conn));
            }
            return;
        }
        let std = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, "handing a connection to a worker failed");
                return;
            }
        };
        self.handles[i - 1].spawn(async move {
            match TcpStream::from_std(std) {
                Ok(stream) => {
                    if let Some(conn) = Accepted::new(stream, peer, drain) {
                        serve(conn).await
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "registering a connection on a worker failed")
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpListener,
    };

    /// A connection to `listener`, accepted: the client side and what `Workers::spawn` takes.
    async fn accepted(
        listener: &TcpListener,
    ) -> (TcpStream, (TcpStream, SocketAddr, watch::Receiver<bool>)) {
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (stream, peer) = listener.accept().await.unwrap();
        (client, (stream, peer, watch::channel(false).1))
    }

    /// Connections go round-robin over the main runtime and the workers, each served on its
    /// worker's thread with the stream usable there.
    #[tokio::test]
    async fn connections_are_served_round_robin_on_their_workers() {
        let workers = Workers::start(3).expect("workers");
        assert_eq!(workers.count(), 3);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        for _ in 0..6 {
            let (mut client, conn) = accepted(&listener).await;
            let seen = seen.clone();
            workers.spawn(conn, move |conn| async move {
                let mut s = conn.stream;
                let mut b = [0u8; 4];
                s.read_exact(&mut b).await.unwrap();
                seen.lock()
                    .unwrap()
                    .push((shard(), std::thread::current().name().map(String::from)));
                s.write_all(&b).await.unwrap();
            });
            client.write_all(b"ping").await.unwrap();
            let mut back = [0u8; 4];
            client.read_exact(&mut back).await.unwrap();
            assert_eq!(&back, b"ping");
        }
        let seen = seen.lock().unwrap().clone();
        let shards: Vec<usize> = seen.iter().map(|(s, _)| *s).collect();
        assert_eq!(shards, vec![0, 1, 2, 0, 1, 2]);
        assert_eq!(seen[1].1.as_deref(), Some("weft-worker-1"));
        assert_eq!(seen[2].1.as_deref(), Some("weft-worker-2"));
    }

    /// One runtime: everything stays on the caller's.
    #[tokio::test]
    async fn one_worker_is_the_calling_runtime() {
        let workers = Workers::start(1).expect("workers");
        assert_eq!(workers.count(), 1);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (_client, conn) = accepted(&listener).await;
        let (tx, rx) = oneshot::channel();
        let here = std::thread::current().id();
        workers.spawn(conn, move |_conn| async move {
            let _ = tx.send(std::thread::current().id());
        });
        assert_eq!(rx.await.unwrap(), here);
    }
}
