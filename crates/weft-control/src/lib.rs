//! Weft control plane: reads Service and ExternalWorkload documents from a directory (and from
//! the registration API), keeps them in one index, and serves the `linkerd2-proxy-api` gRPC
//! services (Destination, OutboundPolicies, InboundServerPolicies) from it.
//!
//! Shape: `store` (files, polling, registration) → `index` (per-key watch snapshots) →
//! `grpc` (streams mapping snapshots to protobuf); `api` is the HTTP registration API.

pub mod api;
pub mod grpc;
pub mod index;
pub mod resource;
pub mod store;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Control plane settings. `Default` gives the documented defaults with store `./store`.
#[derive(Clone, Debug)]
pub struct Config {
    /// Directory of YAML documents; created if missing, with `.registered/` inside.
    pub store_dir: PathBuf,
    /// gRPC listen address (all services). Default 127.0.0.1:8086.
    pub grpc_addr: SocketAddr,
    /// HTTP API listen address. Default 127.0.0.1:8085.
    pub api_addr: SocketAddr,
    /// Service names are `NAME.NS.svc.<cluster_domain>`. Default `cluster.local`.
    pub cluster_domain: String,
    /// Trust domain of the derived workload identities. Default `cluster.local`.
    pub trust_domain: String,
    /// Namespace of the control plane in derived DNS-like identities. Default `weft`.
    pub control_namespace: String,
    /// How often the store directory is checked for changes. Default 200 ms.
    pub poll_interval: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            store_dir: PathBuf::from("store"),
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 8086)),
            api_addr: SocketAddr::from(([127, 0, 0, 1], 8085)),
            cluster_domain: "cluster.local".into(),
            trust_domain: "cluster.local".into(),
            control_namespace: "weft".into(),
            poll_interval: Duration::from_millis(200),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("store: {0}")]
    Store(#[from] store::StoreError),
    #[error("gRPC server: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error("control plane task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// A running control plane. Dropping it stops everything (without waiting).
pub struct Running {
    /// The bound gRPC address (the real port when 0 was asked for).
    pub grpc_addr: SocketAddr,
    /// The bound HTTP API address.
    pub api_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    grpc: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stops serving, ends every open stream, and waits for the tasks to finish.
    pub async fn shutdown(mut self) -> Result<(), Error> {
        self.shutdown.send_replace(true);
        for t in std::mem::take(&mut self.tasks) {
            t.await?;
        }
        if let Some(g) = self.grpc.take() {
            g.await??;
        }
        Ok(())
    }

    /// Resolves when the gRPC server stops on its own (an error), so `run` can report it.
    async fn failed(&mut self) -> Result<(), Error> {
        match self.grpc.as_mut() {
            Some(g) => {
                let res = g.await;
                self.grpc = None;
                res??;
                Ok(())
            }
            None => std::future::pending().await,
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
    }
}

/// Loads the store, binds both listeners and starts serving. Returns once listening.
pub async fn start(config: Config) -> Result<Running, Error> {
    let (shutdown, shutdown_rx) = watch::channel(false);
    let defaults = resource::Defaults {
        trust_domain: config.trust_domain.clone(),
        control_namespace: config.control_namespace.clone(),
    };
    let bind = |addr| async move {
        tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Bind { addr, source })
    };
    let grpc_listener = bind(config.grpc_addr).await?;
    let api_listener = bind(config.api_addr).await?;
    let local = |l: &tokio::net::TcpListener, addr| {
        l.local_addr()
            .map_err(|source| Error::Bind { addr, source })
    };
    let grpc_addr = local(&grpc_listener, config.grpc_addr)?;
    let api_addr = local(&api_listener, config.api_addr)?;

    let (store, store_task) = store::start(
        config.store_dir.clone(),
        defaults.clone(),
        config.poll_interval,
        shutdown_rx.clone(),
    )?;
    let index = index::Index::new(&config.cluster_domain);
    // The first state is applied before serving so the first answers already reflect the store.
    index.apply(store.states().borrow().clone());
    let index_task = tokio::spawn(index::run(index.clone(), store.states()));
    let api_task = tokio::spawn(api::serve(
        api_listener,
        store,
        index.clone(),
        defaults,
        shutdown_rx.clone(),
    ));
    let grpc = tokio::spawn(grpc::serve(grpc_listener, index, shutdown_rx));
    tracing::info!(%grpc_addr, %api_addr, store = %config.store_dir.display(), "control plane listening");
    Ok(Running {
        grpc_addr,
        api_addr,
        shutdown,
        grpc: Some(grpc),
        tasks: vec![store_task, api_task, index_task],
    })
}

/// Runs the control plane until `shutdown` resolves (or the gRPC server fails).
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
    let mut running = start(config).await?;
    tokio::select! {
        _ = shutdown => running.shutdown().await,
        res = running.failed() => res,
    }
}
