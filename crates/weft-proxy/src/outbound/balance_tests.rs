//! Peak-EWMA balancing through the outbound path, with the scripted control plane and real
//! local HTTP servers of the policy tests (this module is their child).

use super::*;
use hyper_util::rt::TokioIo;
use tokio::task::JoinSet;

/// A local HTTP/1 server that counts its requests and answers after `delay`. Aborting its task
/// closes the listener and every connection.
struct Counted {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Counted {
    async fn start(delay: Duration) -> Counted {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let task = tokio::spawn(async move {
            // The connections live in the task: aborting it closes them all.
            let mut conns = JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let counter = counter.clone();
                let svc =
                    hyper::service::service_fn(move |_req: Request<hyper::body::Incoming>| {
                        counter.fetch_add(1, Ordering::SeqCst);
                        async move {
                            tokio::time::sleep(delay).await;
                            Ok::<_, Infallible>(Response::new(http::empty()))
                        }
                    });
                conns.spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc),
                );
            }
        });
        Counted { addr, hits, task }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Sends `n` requests from `clients` concurrent clients; returns how many got a 200.
async fn load(ob: &Arc<Outbound>, clients: usize, n: usize) -> usize {
    let next = Arc::new(AtomicUsize::new(0));
    let ok = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (ob, next, ok) = (ob.clone(), next.clone(), ok.clone());
            tokio::spawn(async move {
                while next.fetch_add(1, Ordering::SeqCst) < n {
                    if send(&ob, &[]).await.0 == 200 {
                        ok.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    ok.load(Ordering::SeqCst)
}

/// Peak-EWMA with the defaults used without a policy (30 ms, 10 s): under steady load from
/// eight clients, the one of three endpoints answering 50 ms later than the others gets at
/// most 10 % of the requests.
#[tokio::test]
async fn a_slower_endpoint_gets_at_most_a_tenth_of_steady_load() {
    let servers = [
        Counted::start(Duration::ZERO).await,
        Counted::start(Duration::ZERO).await,
        Counted::start(Duration::from_millis(50)).await,
    ];
    let (cp, ctl) = control_plane(false).await;
    ctl.endpoints
        .lock()
        .unwrap()
        .insert(WEB.into(), servers.iter().map(|s| s.addr).collect());
    let ob = outbound_for(cp, cp);
    let n = 2000;
    assert_eq!(load(&ob, 8, n).await, n);
    let hits: Vec<usize> = servers.iter().map(Counted::hits).collect();
    assert_eq!(hits.iter().sum::<usize>(), n, "{hits:?}");
    assert!(
        hits[2] * 10 <= n,
        "the slow endpoint got {} of {n}: {hits:?}",
        hits[2]
    );
}
