//! The discovery client against an in-test Destination server on 127.0.0.1: adds and removes
//! propagate, a dead control plane keeps the last state, a restarted one resyncs, and
//! InvalidArgument / out-of-suffix names are rejected.

mod common;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use linkerd2_proxy_api::{
    destination::{
        self as api,
        destination_server::{Destination, DestinationServer},
        update::Update as U,
    },
    net::TcpAddress,
};
use tokio::{
    net::TcpListener,
    sync::{watch, Notify},
    task::JoinHandle,
};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status};
use weft_proxy::discovery::{Discovery, EndpointSet, ProtocolHint, Resolution, Target};

const WEB: &str = "web.default.svc.cluster.local:8080";
const LIMIT: Duration = Duration::from_secs(10);

type State = BTreeMap<String, Vec<SocketAddr>>;

/// A scripted control plane: `state` maps a path to its endpoints (absent = unknown service);
/// IP paths that are not in `state` are rejected like the real controller does.
#[derive(Clone)]
struct Ctl {
    state: watch::Sender<State>,
    kill: watch::Receiver<bool>,
    gets: Arc<AtomicUsize>,
    /// Notified when a client goes away from a Get stream.
    closed: Arc<Notify>,
}

fn weighted(addr: SocketAddr) -> api::WeightedAddr {
    api::WeightedAddr {
        addr: Some(TcpAddress::from(addr)),
        weight: 10000,
        metric_labels: HashMap::from([("external_workload".into(), format!("w-{}", addr.port()))]),
        tls_identity: Some(api::TlsIdentity {
            strategy: Some(api::tls_identity::Strategy::DnsLikeIdentity(
                api::tls_identity::DnsLikeIdentity {
                    name: "web.default.serviceaccount.identity.weft.cluster.local".into(),
                },
            )),
            server_name: None,
        }),
        protocol_hint: Some(api::ProtocolHint {
            protocol: Some(api::protocol_hint::Protocol::H2(api::protocol_hint::H2 {})),
            opaque_transport: None,
        }),
        ..Default::default()
    }
}

fn update(u: U) -> Result<api::Update, Status> {
    Ok(api::Update { update: Some(u) })
}

#[tonic::async_trait]
impl Destination for Ctl {
    type GetStream = ReceiverStream<Result<api::Update, Status>>;
    type GetProfileStream = ReceiverStream<Result<api::DestinationProfile, Status>>;

    async fn get(
        &self,
        req: Request<api::GetDestination>,
    ) -> Result<Response<Self::GetStream>, Status> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        let path = req.into_inner().path;
        let is_ip = path.parse::<SocketAddr>().is_ok();
        if is_ip && !self.state.borrow().contains_key(&path) {
            return Err(Status::invalid_argument("not a known address"));
        }
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let mut state = self.state.subscribe();
        let mut kill = self.kill.clone();
        let closed = self.closed.clone();
        tokio::spawn(async move {
            let mut sent: BTreeSet<SocketAddr> = BTreeSet::new();
            let mut first = true;
            loop {
                let current = state.borrow_and_update().get(&path).cloned();
                let msgs = match current {
                    None if first => vec![U::NoEndpoints(api::NoEndpoints { exists: false })],
                    None => vec![],
                    Some(addrs) => {
                        let now: BTreeSet<SocketAddr> = addrs.into_iter().collect();
                        let mut msgs = vec![];
                        if first && now.is_empty() {
                            msgs.push(U::NoEndpoints(api::NoEndpoints { exists: true }));
                        }
                        let added: Vec<_> = now.difference(&sent).copied().map(weighted).collect();
                        if !added.is_empty() {
                            msgs.push(U::Add(api::WeightedAddrSet {
                                addrs: added,
                                metric_labels: HashMap::from([
                                    ("namespace".into(), "default".into()),
                                    ("service".into(), "web".into()),
                                ]),
                            }));
                        }
                        let removed: Vec<_> = sent
                            .difference(&now)
                            .copied()
                            .map(TcpAddress::from)
                            .collect();
                        if !removed.is_empty() {
                            msgs.push(U::Remove(api::AddrSet { addrs: removed }));
                        }
                        sent = now;
                        msgs
                    }
                };
                first = false;
                for m in msgs {
                    if tx.send(update(m)).await.is_err() {
                        return;
                    }
                }
                let killed = tokio::select! {
                    r = state.changed() => if r.is_err() { return } else { false },
                    _ = kill.wait_for(|k| *k) => true,
                    _ = tx.closed() => {
                        closed.notify_one();
                        return;
                    }
                };
                if killed {
                    let _ = tx
                        .send(Err(Status::unavailable("control plane going away")))
                        .await;
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn get_profile(
        &self,
        req: Request<api::GetDestination>,
    ) -> Result<Response<Self::GetProfileStream>, Status> {
        let path = req.into_inner().path;
        if path.parse::<SocketAddr>().is_ok() {
            return Err(Status::invalid_argument("not a known address"));
        }
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let mut kill = self.kill.clone();
        tokio::spawn(async move {
            let fqn = path
                .rsplit_once(':')
                .map_or(path.clone(), |(h, _)| h.to_string());
            let profile = api::DestinationProfile {
                fully_qualified_name: fqn,
                opaque_protocol: path.ends_with(":6379"),
                ..Default::default()
            };
            if tx.send(Ok(profile)).await.is_err() {
                return;
            }
            let _ = kill.wait_for(|k| *k).await;
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

struct Server {
    addr: SocketAddr,
    kill: watch::Sender<bool>,
    task: JoinHandle<()>,
    closed: Arc<Notify>,
}

async fn serve(
    listener: TcpListener,
    state: watch::Sender<State>,
    gets: Arc<AtomicUsize>,
) -> Server {
    let addr = listener.local_addr().expect("addr");
    let (kill, kill_rx) = watch::channel(false);
    let closed = Arc::new(Notify::new());
    let ctl = Ctl {
        state,
        kill: kill_rx.clone(),
        gets,
        closed: closed.clone(),
    };
    let mut shutdown = kill_rx;
    let task = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(DestinationServer::new(ctl))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
                let _ = shutdown.wait_for(|k| *k).await;
            })
            .await;
    });
    Server {
        addr,
        kill,
        task,
        closed,
    }
}

impl Server {
    async fn stop(self) {
        let _ = self.kill.send(true);
        let mut task = self.task;
        if tokio::time::timeout(LIMIT, &mut task).await.is_err() {
            task.abort();
        }
    }
}

fn discovery(addr: SocketAddr) -> Discovery {
    discovery_with(addr, "60s")
}

fn discovery_with(addr: SocketAddr, idle_timeout: &str) -> Discovery {
    let addr = addr.to_string();
    Discovery::new(
        &common::config(&[
            ("WEFT_PROXY_DISCOVERY_IDLE_TIMEOUT", idle_timeout),
            ("WEFT_PROXY_DESTINATION_SVC_ADDR", &addr),
            ("WEFT_PROXY_POLICY_WORKLOAD", "default:client-1"),
            ("WEFT_PROXY_CONTROL_BACKOFF_MIN", "10ms"),
            ("WEFT_PROXY_CONTROL_BACKOFF_MAX", "100ms"),
        ]),
        None,
    )
}

fn addrs(set: &EndpointSet) -> BTreeSet<SocketAddr> {
    set.endpoints.iter().map(|e| e.addr).collect()
}

fn sa(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

async fn wait_for(
    rx: &mut watch::Receiver<EndpointSet>,
    what: &str,
    f: impl FnMut(&EndpointSet) -> bool,
) {
    tokio::time::timeout(LIMIT, rx.wait_for(f))
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
        .expect("discovery task alive");
}

fn web() -> Target {
    Target::Name {
        host: "web.default.svc.cluster.local".into(),
        port: 8080,
    }
}

async fn start(state: State) -> (Server, watch::Sender<State>, Arc<AtomicUsize>) {
    let (state_tx, _) = watch::channel(state);
    let gets = Arc::new(AtomicUsize::new(0));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let server = serve(listener, state_tx.clone(), gets.clone()).await;
    (server, state_tx, gets)
}

#[tokio::test]
async fn adds_and_removes_propagate() {
    let (server, state, _) = start(State::from([(WEB.into(), vec![sa(1001), sa(1002)])])).await;
    let d = discovery(server.addr);
    assert!(!d.is_ready());

    let Resolution::Endpoints(mut rx) = d.resolve(&web()).await else {
        panic!("rejected")
    };
    {
        let set = rx.borrow_and_update();
        assert!(set.resolved && set.exists);
        assert_eq!(addrs(&set), BTreeSet::from([sa(1001), sa(1002)]));
        let ep = &set.endpoints[0];
        assert_eq!(ep.hint, ProtocolHint::H2);
        assert_eq!(ep.weight, 10000);
        assert_eq!(
            ep.identity.as_deref(),
            Some("web.default.serviceaccount.identity.weft.cluster.local")
        );
        assert_eq!(ep.labels.get("service").map(String::as_str), Some("web"));
        assert_eq!(
            ep.labels.get("namespace").map(String::as_str),
            Some("default")
        );
        assert_eq!(
            ep.labels.get("external_workload").map(String::as_str),
            Some("w-1001")
        );
    }
    assert!(d.is_ready());
    wait_for(&mut rx, "the profile's fqn", |s| {
        s.fqn.as_deref() == Some("web.default.svc.cluster.local") && !s.opaque
    })
    .await;

    state.send_modify(|s| {
        s.insert(WEB.into(), vec![sa(1002), sa(1003)]);
    });
    wait_for(&mut rx, "the diff", |s| {
        addrs(s) == BTreeSet::from([sa(1002), sa(1003)])
    })
    .await;

    // A second caller shares the same live view.
    let Resolution::Endpoints(rx2) = d.resolve(&web()).await else {
        panic!("rejected")
    };
    assert_eq!(addrs(&rx2.borrow()), BTreeSet::from([sa(1002), sa(1003)]));

    state.send_modify(|s| {
        s.insert(WEB.into(), vec![]);
    });
    wait_for(&mut rx, "all removed", |s| {
        s.endpoints.is_empty() && s.exists
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn dead_control_plane_keeps_state_and_restart_resyncs() {
    let (server, state, gets) = start(State::from([(WEB.into(), vec![sa(2001), sa(2002)])])).await;
    let addr = server.addr;
    let d = discovery(addr);
    let Resolution::Endpoints(mut rx) = d.resolve(&web()).await else {
        panic!("rejected")
    };
    assert_eq!(
        addrs(&rx.borrow_and_update()),
        BTreeSet::from([sa(2001), sa(2002)])
    );

    server.stop().await;
    // The client has seen the stream fail and is now retrying against a closed port.
    let before = gets.load(Ordering::SeqCst);
    assert_eq!(before, 1);
    // While it is down the control plane's view changes; the proxy keeps the old state.
    state.send_modify(|s| {
        s.insert(WEB.into(), vec![sa(2003)]);
    });
    assert!(!rx.has_changed().expect("alive"));
    assert_eq!(addrs(&rx.borrow()), BTreeSet::from([sa(2001), sa(2002)]));
    assert!(matches!(d.resolve(&web()).await, Resolution::Endpoints(_)));

    let listener = TcpListener::bind(addr).await.expect("rebind the same port");
    let server = serve(listener, state.clone(), gets.clone()).await;
    // The fresh answer replaces the set: 2001 and 2002 go without an explicit remove.
    wait_for(&mut rx, "the resync", |s| {
        addrs(s) == BTreeSet::from([sa(2003)])
    })
    .await;
    assert!(gets.load(Ordering::SeqCst) >= 2);
    server.stop().await;
}

#[tokio::test]
async fn invalid_argument_is_rejected_and_cached() {
    let (server, _state, gets) = start(State::new()).await;
    let d = discovery(server.addr);
    let target = Target::Addr(sa(3001));
    assert!(matches!(d.resolve(&target).await, Resolution::Rejected));
    assert_eq!(gets.load(Ordering::SeqCst), 1);
    assert!(matches!(d.resolve(&target).await, Resolution::Rejected));
    assert_eq!(gets.load(Ordering::SeqCst), 1, "rejection is cached");
    server.stop().await;
}

#[tokio::test]
async fn names_outside_suffixes_are_not_looked_up() {
    let (server, _state, gets) = start(State::new()).await;
    let d = discovery(server.addr);
    assert_eq!(d.canonicalize("www.example.com", 443), None);
    let target = Target::Name {
        host: "www.example.com".into(),
        port: 443,
    };
    assert!(matches!(d.resolve(&target).await, Resolution::Rejected));
    assert_eq!(gets.load(Ordering::SeqCst), 0);
    server.stop().await;
}

#[tokio::test]
async fn unknown_service_resolves_as_not_existing() {
    let (server, state, _) = start(State::new()).await;
    let d = discovery(server.addr);
    let Resolution::Endpoints(mut rx) = d.resolve(&web()).await else {
        panic!("rejected")
    };
    {
        let set = rx.borrow_and_update();
        assert!(set.resolved && !set.exists && set.endpoints.is_empty());
    }
    // It may appear later on the same stream.
    state.send_modify(|s| {
        s.insert(WEB.into(), vec![sa(4001)]);
    });
    wait_for(&mut rx, "the service to appear", |s| {
        s.exists && s.endpoints.len() == 1
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn opaque_profile_marks_the_set() {
    let redis = "redis.default.svc.cluster.local:6379";
    let (server, _state, _) = start(State::from([(redis.into(), vec![sa(5001)])])).await;
    let d = discovery(server.addr);
    let target = d.canonicalize("redis", 6379).expect("in suffixes");
    assert_eq!(target.to_string(), redis);
    let Resolution::Endpoints(mut rx) = d.resolve(&target).await else {
        panic!("rejected")
    };
    wait_for(&mut rx, "opaque from the profile", |s| s.opaque).await;
    server.stop().await;
}

#[tokio::test]
async fn readiness_probe_connects() {
    let (server, _state, _) = start(State::new()).await;
    let d = discovery(server.addr);
    assert!(!d.is_ready());
    d.probe_readiness();
    tokio::time::timeout(LIMIT, d.wait_ready())
        .await
        .expect("ready");
    server.stop().await;
}

#[test]
fn canonical_names() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    let d = discovery(sa(1));
    let name = |h: &str, p| d.canonicalize(h, p).map(|t| t.to_string());
    assert_eq!(
        name("web", 80).as_deref(),
        Some("web.default.svc.cluster.local:80")
    );
    assert_eq!(
        name("web.other", 8080).as_deref(),
        Some("web.other.svc.cluster.local:8080")
    );
    assert_eq!(
        name("web.other.svc", 1).as_deref(),
        Some("web.other.svc.cluster.local:1")
    );
    assert_eq!(
        name("WEB.other.svc.cluster.local.", 1).as_deref(),
        Some("web.other.svc.cluster.local:1")
    );
    assert_eq!(name("10.0.0.1", 80).as_deref(), Some("10.0.0.1:80"));
    assert_eq!(name("[::1]", 80).as_deref(), Some("[::1]:80"));
    assert_eq!(name("api.github.com", 443), None);
}

#[tokio::test]
async fn idle_targets_are_dropped_and_resolved_afresh() {
    let (server, _state, gets) = start(State::from([(WEB.into(), vec![sa(6001)])])).await;
    let d = discovery_with(server.addr, "50ms");
    let Resolution::Endpoints(rx) = d.resolve(&web()).await else {
        panic!("rejected")
    };
    assert_eq!(gets.load(Ordering::SeqCst), 1);
    drop(rx);
    // With no receivers left, the client closes its stream after the idle timeout.
    tokio::time::timeout(LIMIT, server.closed.notified())
        .await
        .expect("the idle stream was closed");
    let Resolution::Endpoints(rx) = d.resolve(&web()).await else {
        panic!("rejected")
    };
    assert_eq!(addrs(&rx.borrow()), BTreeSet::from([sa(6001)]));
    assert_eq!(gets.load(Ordering::SeqCst), 2, "a fresh stream");
    server.stop().await;
}
