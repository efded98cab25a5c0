//! Wiring: binds listeners, starts the admin server and discovery, runs accept loops, drains.
//!
//! Inbound target port: orig_dst port on the main inbound listener, the mapped app port on a
//! forward port. Outbound origin: orig_dst → Transparent, none on the main listener → Explicit,
//! an upstream port → Upstream.
//!
//! Drain: a shutdown request (signal, `/shutdown`, [`Running::shutdown`]) stops every accept loop,
//! flips the drain watch that connections hold, and waits for open connections up to the grace
//! period.

use std::{
    io::{self, Write as _},
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use futures_util::FutureExt as _;
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{watch, Notify},
    task::JoinHandle,
};

use crate::{
    admin::{self, Admin},
    config::Config,
    discovery::{Discovery, Target},
    identity::{Identity, IdentityError},
    inbound::{self, Inbound},
    limits::{Limit, Limits, Slot, Slots},
    metrics::Metrics,
    outbound::{self, Origin, Outbound, OwnAddrs},
    tap::{self, Taps},
    trace::Tracer,
    workers::Workers,
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("binding the {name} listener on {addr}: {source}")]
    Bind {
        name: &'static str,
        addr: SocketAddr,
        source: io::Error,
    },
    #[error("writing the listening line to stdout: {0}")]
    Stdout(io::Error),
    #[error("installing the signal handlers: {0}")]
    Signal(io::Error),
    #[error("identity: {0}")]
    Identity(#[from] IdentityError),
    #[error("the trace collector address: {0}")]
    TraceCollector(tonic::transport::Error),
    #[error("starting the worker threads: {0}")]
    Workers(io::Error),
}

/// The bound addresses (port 0 resolved).
#[derive(Clone, Debug)]
pub struct Listening {
    pub inbound: SocketAddr,
    pub outbound: SocketAddr,
    pub admin: SocketAddr,
    /// The tap server; `None` when it is off (no identity or no `WEFT_PROXY_TAP_SVC_NAME`).
    pub tap: Option<SocketAddr>,
    /// `(app_port, listener address)` per forward port.
    pub forward: Vec<(u16, SocketAddr)>,
    /// `(canonical authority, listener address)` per upstream.
    pub upstreams: Vec<(String, SocketAddr)>,
}

impl Listening {
    /// The listeners whose connections the outbound side forwards: sending to one of them from
    /// the outbound side is a loop. (The inbound and forward listeners lead to the application,
    /// so a workload calling itself through its own proxy is fine.)
    pub fn outbound_side(&self) -> Vec<SocketAddr> {
        let mut all = vec![self.outbound];
        all.extend(self.upstreams.iter().map(|(_, a)| *a));
        all
    }

    /// The one line printed on stdout once every listener is bound.
    pub fn json_line(&self) -> String {
        // Written by hand so `event` comes first, as in the contract; addresses need no escaping.
        let forward: Vec<String> = self
            .forward
            .iter()
            .map(|(p, a)| format!(r#"{{"app_port":{p},"addr":"{a}"}}"#))
            .collect();
        let upstreams: Vec<String> = self
            .upstreams
            .iter()
            .map(|(auth, a)| {
                let auth = serde_json::Value::from(auth.as_str());
                format!(r#"{{"authority":{auth},"addr":"{a}"}}"#)
            })
            .collect();
        let tap = self
            .tap
            .map(|a| format!(r#","tap":"{a}""#))
            .unwrap_or_default();
        format!(
            r#"{{"event":"listening","inbound":"{}","outbound":"{}","admin":"{}"{tap},"forward":[{}],"upstreams":[{}]}}"#,
            self.inbound,
            self.outbound,
            self.admin,
            forward.join(","),
            upstreams.join(",")
        )
    }
}

/// A started proxy (for in-process tests and for [`run`]).
pub struct Running {
    pub listening: Listening,
    pub metrics: Metrics,
    pub discovery: Discovery,
    /// `None` in the transitional mode (no identity configured).
    pub identity: Option<Identity>,
    /// Live taps (the tap server's registry, shared with both request paths).
    pub taps: Arc<Taps>,
    shutdown: Arc<Notify>,
    done: JoinHandle<()>,
}

impl Running {
    /// Starts the drain (idempotent).
    pub fn shutdown(&self) {
        self.shutdown.notify_one();
    }

    /// Resolves once a shutdown was requested and the drain finished.
    pub async fn wait(self) {
        if let Err(e) = self.done.await {
            tracing::error!(error = %e, "proxy supervisor task failed");
        }
    }
}

/// Runs until SIGTERM/SIGINT or `POST /shutdown`, then drains and returns.
pub async fn run(config: Config) -> Result<(), Error> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(Error::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(Error::Signal)?;

    let running = start(config).await?;
    let line = running.listening.json_line();
    let mut out = io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .map_err(Error::Stdout)?;
    drop(out);
    tracing::info!(%line, "listening");

    let shutdown = running.shutdown.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: draining"),
            _ = int.recv() => tracing::info!("SIGINT: draining"),
        }
        shutdown.notify_one();
    });
    running.wait().await;
    Ok(())
}

/// Binds every listener and starts serving; does not print anything.
pub async fn start(config: Config) -> Result<Running, Error> {
    let metrics = Metrics::with_retain_idle(config.metrics_retain_idle);
    let identity = match &config.identity {
        Some(cfg) => Some(Identity::start(
            cfg,
            (config.control_backoff_min, config.control_backoff_max),
            metrics.clone(),
        )?),
        None => None,
    };
    if config.destination_name.is_none() {
        // The configuration allows this only for loopback addresses.
        tracing::warn!(
            addr = %config.destination_addr,
            "plaintext to the control plane (loopback only, for development; set \
             WEFT_PROXY_DESTINATION_SVC_NAME to its identity for TLS)"
        );
    }
    let discovery = Discovery::new(&config, identity.as_ref());
    discovery.probe_readiness();
    let admin_l = bind("admin", config.admin_listen_addr).await?;
    // The tap server needs this proxy's identity (its certificate, the anchors clients chain
    // to) and the one identity allowed to tap.
    let tap_l = match (&identity, &config.tap_svc_name) {
        (Some(_), Some(_)) => Some(bind("tap", config.tap_listen_addr).await?),
        (None, _) => {
            tracing::info!("tap server off: no identity (WEFT_PROXY_IDENTITY_*)");
            None
        }
        (Some(_), None) => {
            tracing::info!("tap server off: WEFT_PROXY_TAP_SVC_NAME is not set");
            None
        }
    };
    let inbound_l = bind("inbound", config.inbound_listen_addr).await?;
    let outbound_l = bind("outbound", config.outbound_listen_addr).await?;
    let mut forward = Vec::new();
    for f in &config.inbound_forward_ports {
        let addr = SocketAddr::new(config.inbound_listen_addr.ip(), f.proxy_port);
        forward.push((f.app_port, bind("forward", addr).await?));
    }
    let mut upstreams = Vec::new();
    for u in &config.outbound_upstreams {
        let target = discovery
            .canonicalize(&u.host, u.port)
            .unwrap_or_else(|| Target::Name {
                host: u.host.clone(),
                port: u.port,
            });
        let addr = SocketAddr::from(([127, 0, 0, 1], u.local_port));
        upstreams.push((target, bind("upstream", addr).await?));
    }

    let listening = Listening {
        inbound: local_addr("inbound", &inbound_l)?,
        outbound: local_addr("outbound", &outbound_l)?,
        admin: local_addr("admin", &admin_l)?,
        tap: tap_l.as_ref().map(|l| local_addr("tap", l)).transpose()?,
        forward: forward
            .iter()
            .map(|(p, l)| Ok((*p, local_addr("forward", l)?)))
            .collect::<Result<_, Error>>()?,
        upstreams: upstreams
            .iter()
            .map(|(t, l)| Ok((t.to_string(), local_addr("upstream", l)?)))
            .collect::<Result<_, Error>>()?,
    };

    let taps = Taps::new(metrics.clone());
    // Tracing: a tracer shared by both request paths and its exporter task, only with a
    // collector (`None` keeps tracing off the request path entirely).
    let (tracer, trace_task) = match &config.trace {
        Some(cfg) => {
            let local_id = config.identity.as_ref().map(|i| i.local_name.clone());
            let (tracer, export) = Tracer::new(cfg, &config.workload, local_id, &metrics)
                .map_err(Error::TraceCollector)?;
            (Some(tracer), Some(tokio::spawn(export)))
        }
        None => (None, None),
    };
    let ob = Outbound::new(
        &config,
        discovery.clone(),
        metrics.clone(),
        identity.clone(),
        OwnAddrs::new(listening.outbound_side()),
        taps.clone(),
        tracer.clone(),
    );
    let ib = Inbound::new(
        &config,
        metrics.clone(),
        identity.clone(),
        taps.clone(),
        tracer,
        &ob,
    );

    let shutdown = Arc::new(Notify::new());
    let admin = Arc::new(Admin {
        metrics: metrics.clone(),
        discovery: discovery.clone(),
        identity: identity.clone(),
        shutdown: config.shutdown_endpoint_enabled.then(|| shutdown.clone()),
    });
    let admin_task = tokio::spawn(admin::serve(admin_l, admin));
    let sweep_task = tokio::spawn(sweep_idle_series(metrics.clone()));
    let tap_task = match (tap_l, &identity, &config.tap_svc_name) {
        (Some(l), Some(id), Some(name)) => Some(tokio::spawn(tap::server::serve(
            l,
            taps.clone(),
            id.clone(),
            name.clone(),
            metrics.clone(),
        ))),
        _ => None,
    };

    let (drain_tx, drain_rx) = watch::channel(false);
    let conns = Arc::new(Connections::default());
    let workers = Arc::new(Workers::start(config.worker_threads()).map_err(Error::Workers)?);
    let mut loops = Vec::new();
    let mut spawn_loop = |l: TcpListener, h: Handler| {
        loops.push(tokio::spawn(accept_loop(
            l,
            drain_rx.clone(),
            conns.clone(),
            workers.clone(),
            h,
        )));
    };
    spawn_loop(inbound_l, Handler::Inbound(ib.clone()));
    spawn_loop(outbound_l, Handler::Outbound(ob.clone()));
    for (app_port, l) in forward {
        spawn_loop(l, Handler::Forward(ib.clone(), app_port));
    }
    for (target, l) in upstreams {
        spawn_loop(l, Handler::Upstream(ob.clone(), target));
    }

    let grace = config.shutdown_grace_period;
    let supervisor = shutdown.clone();
    let done = tokio::spawn(async move {
        supervisor.notified().await;
        let _ = drain_tx.send(true);
        for l in loops {
            let _ = l.await;
        }
        let open = conns.open.load(Ordering::Acquire);
        tracing::info!(open, ?grace, "draining");
        if tokio::time::timeout(grace, conns.idle()).await.is_err() {
            let open = conns.open.load(Ordering::Acquire);
            tracing::warn!(open, "grace period over; closing remaining connections");
        }
        // Connections are over (or out of time): the worker threads go with their runtimes.
        drop(workers);
        admin_task.abort();
        sweep_task.abort();
        if let Some(t) = tap_task {
            t.abort();
        }
        if let Some(t) = trace_task {
            t.abort();
        }
    });

    Ok(Running {
        listening,
        metrics,
        discovery,
        identity,
        taps,
        shutdown,
        done,
    })
}

/// Drops idle metric series even when nothing scrapes (scrapes sweep too): a fraction of the
/// retention apart, so a series outlives it by at most that fraction.
async fn sweep_idle_series(metrics: Metrics) {
    let every = (metrics.retain_idle() / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        metrics.sweep();
    }
}

/// Connections the kernel completes and queues for each listener before the proxy accepts them
/// (the kernel caps it at `net.core.somaxconn`, 4096 by default). `TcpListener::bind` queues 128:
/// a burst of connections (a flood, or many detect timeouts firing at once and delaying the
/// accept loop a few milliseconds) overflowed it, and each dropped SYN cost its client a 1 s
/// retransmission.
const LISTEN_BACKLOG: u32 = 4096;

async fn bind(name: &'static str, addr: SocketAddr) -> Result<TcpListener, Error> {
    let listen = || {
        let socket = match addr {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        // As `TcpListener::bind`: a restarted proxy rebinds while old connections linger.
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(LISTEN_BACKLOG)
    };
    listen().map_err(|source| Error::Bind { name, addr, source })
}

fn local_addr(name: &'static str, l: &TcpListener) -> Result<SocketAddr, Error> {
    l.local_addr().map_err(|source| Error::Bind {
        name,
        addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        source,
    })
}

/// What an accept loop does with a connection.
enum Handler {
    Inbound(Arc<Inbound>),
    Forward(Arc<Inbound>, u16),
    Outbound(Arc<Outbound>),
    Upstream(Arc<Outbound>, Target),
}

impl Handler {
    /// The limits of the handler's direction.
    fn limits(&self) -> &Limits {
        match self {
            Handler::Inbound(ib) | Handler::Forward(ib, _) => ib.limits(),
            Handler::Outbound(ob) | Handler::Upstream(ob, _) => ob.limits(),
        }
    }

    /// Spawns the connection's task on the next worker. Each path is spawned as its own task
    /// type: a task is allocated at the size of its future, so an outbound connection does not
    /// pay for the inbound path's larger states (TLS termination) or the other way round.
    fn spawn(
        &self,
        workers: &Workers,
        (stream, peer): (TcpStream, SocketAddr),
        drain: watch::Receiver<bool>,
        guard: (ConnGuard, Slot),
    ) {
        let accepted = (stream, peer, drain);
        // `map`, not `async move { fut.await; drop(guard) }`: an async block keeps its captured
        // future and the awaited copy of it as two separate fields, doubling the task's size.
        match self {
            // Without a redirect there is no target port (forwarding to our own port would loop
            // back into this listener): only a transport header inside mTLS can name one.
            Handler::Inbound(ib) => {
                let ib = ib.clone();
                workers.spawn(accepted, move |conn| {
                    let port = conn.orig_dst.map(|d| d.port());
                    inbound::handle_any(ib, conn, port).map(move |()| drop(guard))
                })
            }
            Handler::Forward(ib, port) => {
                let (ib, port) = (ib.clone(), *port);
                workers.spawn(accepted, move |conn| {
                    inbound::handle_forward(ib, conn, port).map(move |()| drop(guard))
                })
            }
            Handler::Outbound(ob) => {
                let ob = ob.clone();
                workers.spawn(accepted, move |conn| {
                    let origin = match conn.orig_dst {
                        Some(dst) => Origin::Transparent(dst),
                        None => Origin::Explicit,
                    };
                    outbound::handle(ob, conn, origin).map(move |()| drop(guard))
                })
            }
            Handler::Upstream(ob, target) => {
                let (ob, origin) = (ob.clone(), Origin::Upstream(target.clone()));
                workers.spawn(accepted, move |conn| {
                    outbound::handle(ob, conn, origin).map(move |()| drop(guard))
                })
            }
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    mut drain: watch::Receiver<bool>,
    conns: Arc<Connections>,
    workers: Arc<Workers>,
    handler: Handler,
) {
    // This listener's open connections, against its direction's limit.
    let slots = Slots::default();
    let max = handler.limits().settings.max_connections;
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = drain.wait_for(|d| *d) => return,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Usually fd exhaustion: give open connections a moment to close.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        // Over the limit: closed at once (the client sees a reset or EOF), before any of its
        // bytes is read or any task is spawned for it.
        let Some(slot) = slots.take(max) else {
            handler.limits().count(Limit::MaxConnections);
            tracing::debug!(%peer, max, "connection over the listener's limit: closed");
            continue;
        };
        let _ = stream.set_nodelay(true);
        handler.spawn(
            &workers,
            (stream, peer),
            drain.clone(),
            (conns.open(), slot),
        );
    }
}

/// Open connection count, with a wake-up when it reaches zero.
#[derive(Default)]
struct Connections {
    open: AtomicUsize,
    zero: Notify,
}

struct ConnGuard(Arc<Connections>);

impl Connections {
    fn open(self: &Arc<Self>) -> ConnGuard {
        self.open.fetch_add(1, Ordering::AcqRel);
        ConnGuard(self.clone())
    }

    async fn idle(&self) {
        loop {
            // Register interest before checking, so a close between the check and the wait
            // is not missed.
            let notified = self.zero.notified();
            if self.open.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.zero.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accept::Accepted;

    /// A burst larger than `TcpListener::bind`'s 128 queued connections completes before the
    /// proxy accepts any: none waits for a SYN retransmission.
    #[tokio::test]
    async fn listeners_queue_a_burst_of_connections() {
        let somaxconn: usize = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(4096);
        // The kernel caps the backlog at somaxconn (4096 by default since Linux 5.4).
        let burst = somaxconn.min(LISTEN_BACKLOG as usize).min(1000) - 8;
        assert!(
            burst > 200,
            "net.core.somaxconn {somaxconn} is too low to queue a burst"
        );
        let l = bind("test", "127.0.0.1:0".parse().unwrap())
            .await
            .expect("bind");
        let addr = l.local_addr().unwrap();
        let mut held = Vec::new();
        for i in 0..burst {
            // Generous: a dropped SYN is retransmitted after 1, 2, 4, 8 and 16 s.
            let c = tokio::time::timeout(Duration::from_secs(20), TcpStream::connect(addr))
                .await
                .unwrap_or_else(|_| panic!("connection {i} queued without an accept"))
                .expect("connect");
            held.push(c);
        }
    }

    #[tokio::test]
    async fn no_original_dst_without_redirect() {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let (c, s) = tokio::join!(TcpStream::connect(addr), l.accept());
        let (s, _) = s.expect("accept");
        let _c = c.expect("connect");
        let local = s.local_addr().expect("local");
        assert_eq!(crate::sys::original_dst(&s).filter(|d| *d != local), None);
    }

    #[tokio::test]
    async fn connections_idle_wakes_on_last_close() {
        let conns = Arc::new(Connections::default());
        let a = conns.open();
        let b = conns.open();
        let waiter = tokio::spawn({
            let conns = conns.clone();
            async move { conns.idle().await }
        });
        drop(a);
        assert!(!waiter.is_finished());
        drop(b);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("idle")
            .expect("join");
    }

    /// Each inbound connection is a task as large as this future: TLS termination and opaque
    /// relays are boxed where used, so a plaintext HTTP connection does not carry them (it was
    /// 11 KiB, and outbound connections paid the same while both shared one task type).
    #[tokio::test]
    async fn inbound_connection_future_stays_small() {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let (c, s) = tokio::join!(TcpStream::connect(addr), l.accept());
        let (stream, peer) = s.expect("accept");
        let _c = c.expect("connect");
        let (_tx, drain) = watch::channel(false);
        let ib = Inbound::with_settings(
            inbound::Settings {
                detect_timeout: std::time::Duration::from_secs(1),
                connect_timeout: std::time::Duration::from_secs(1),
                opaque_ports: Default::default(),
                pool: Default::default(),
            },
            Metrics::new(),
        );
        let conn = Accepted {
            stream,
            peer,
            local: addr,
            orig_dst: None,
            drain,
        };
        let fut = inbound::handle_any(ib, conn, Some(80));
        let size = std::mem::size_of_val(&fut);
        assert!(size <= 2048, "inbound connection future is {size} bytes");
    }

    #[test]
    fn json_line_shape() {
        let l = Listening {
            inbound: "0.0.0.0:4143".parse().expect("addr"),
            outbound: "127.0.0.1:4140".parse().expect("addr"),
            admin: "127.0.0.1:4191".parse().expect("addr"),
            tap: None,
            forward: vec![(8080, "0.0.0.0:40001".parse().expect("addr"))],
            upstreams: vec![(
                "catalog.default.svc.cluster.local:9090".into(),
                "127.0.0.1:40002".parse().expect("addr"),
            )],
        };
        assert_eq!(
            l.json_line(),
            r#"{"event":"listening","inbound":"0.0.0.0:4143","outbound":"127.0.0.1:4140","admin":"127.0.0.1:4191","forward":[{"app_port":8080,"addr":"0.0.0.0:40001"}],"upstreams":[{"authority":"catalog.default.svc.cluster.local:9090","addr":"127.0.0.1:40002"}]}"#
        );
        // The tap server, when it runs, follows the admin address.
        let l = Listening {
            tap: Some("127.0.0.1:4190".parse().expect("addr")),
            ..l
        };
        assert!(l
            .json_line()
            .contains(r#""admin":"127.0.0.1:4191","tap":"127.0.0.1:4190","forward""#));
    }
}
