//! Weft control plane: reads Service, ExternalWorkload, route and inbound authorization
//! documents from a store (a directory, or keys in etcd: [`etcd`]) and workloads from the
//! registration API, keeps them in one index, and serves the `linkerd2-proxy-api` gRPC
//! services (Destination, OutboundPolicies, InboundServerPolicies) from it, plus
//! `Identity.Certify` backed by [`ca`] (the CA) and [`tokens`] (per-workload tokens);
//! [`rotation`] and [`ca_reload`] rotate the trust anchor without a restart.
//!
//! Shape: `store` (files polled or etcd watched, registration; `documents` decides what is in force) → `index` (per-key watch snapshots) →
//! `grpc` (streams mapping snapshots to protobuf); `api` is the HTTP registration API.
//! Leaves: `clock` (Unix seconds, RFC 3339) and `files` (atomic file replacement).
//! Beside that shape, [`telemetry`] scrapes the meshed workloads' proxies for `GET /v1/stat/...`,
//! `/v1/edges` and `/v1/routes` (or asks a Prometheus for `/v1/stat`, which it can also hand the
//! proxies to scrape), and [`tap`] opens taps on them for `GET /v1/tap/...` under its own tap
//! identity ([`tls`]: the control plane's TLS clients). [`multicluster`] exports services to
//! linked clusters and mirrors the services of the clusters this one links to.
//! [`fuzzing`] holds the fuzz harnesses over store documents and CSRs (`fuzz/`).

pub mod api;
pub mod ca;
pub mod ca_reload;
pub mod clock;
pub mod documents;
pub mod etcd;
pub mod files;
#[doc(hidden)]
pub mod fuzzing;
pub mod grpc;
pub mod index;
pub mod inject;
pub mod k8s;
pub mod leader;
pub mod multicluster;
pub mod own_cert;
pub mod resource;
pub mod rotation;
pub mod service_ips;
pub mod store;
pub mod tap;
pub mod telemetry;
pub mod tls;
pub mod tokens;

pub use resource::authz::{parse_cidr_list, Cidr, DefaultPolicy, DEFAULT_CLUSTER_NETWORKS};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Control plane settings. `Default` gives the documented defaults with store `./store`.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where resources, registrations and token digests live: a directory of YAML documents
    /// (created if missing, with `.registered/` inside) or an etcd prefix.
    pub store: store::Location,
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
    /// How often the store directory is checked for changes (etcd is watched). Default 200 ms.
    pub poll_interval: Duration,
    /// CA directory (`trust-anchors.pem`, `issuer.crt`, `issuer.key`). `None`: an ephemeral CA
    /// is generated in memory at start (its anchors are in [`Running::trust_anchors_pem`]).
    pub identity_dir: Option<PathBuf>,
    /// Lifetime of issued leaf certificates. Default 24 h.
    pub cert_lifetime: Duration,
    /// Range that Services without a `clusterIP` get one from. Default 198.19.128.0/17.
    pub service_cidr: service_ips::ServiceCidr,
    /// Inbound policy of workload ports no `Server` selects, unless the workload's or its
    /// Namespace's `config.linkerd.io/default-inbound-policy` annotation says otherwise.
    /// Default `all-unauthenticated`.
    pub default_inbound_policy: DefaultPolicy,
    /// The networks the `cluster-*` policies admit. Default
    /// [`resource::authz::DEFAULT_CLUSTER_NETWORKS`] (parse a flag with [`parse_cidr_list`]).
    pub cluster_networks: Vec<Cidr>,
    /// The namespace whose `EgressNetwork`s apply to clients of every namespace (those of a
    /// client's own namespace come first). Default
    /// [`resource::egress::DEFAULT_EGRESS_NAMESPACE`] (`weft-egress`).
    pub egress_namespace: String,
    /// How often the proxies of meshed workloads are scraped (`GET /v1/stat/...`, edges, routes);
    /// `Duration::ZERO` turns scraping off. Default [`telemetry::DEFAULT_INTERVAL`] (10 s).
    pub scrape_interval: Duration,
    /// Where to keep a Prometheus `file_sd` targets file of every meshed workload's proxy
    /// (rewritten as workloads come and go). Default none.
    pub prometheus_sd_file: Option<PathBuf>,
    /// A Prometheus that `GET /v1/stat/...` asks (PromQL) instead of the embedded scrapes.
    /// Default none.
    pub prometheus_url: Option<telemetry::prometheus::Prometheus>,
    /// The sidecar-injection admission webhook (`POST /inject` over TLS). Default none (off).
    pub webhook: Option<inject::webhook::WebhookConfig>,
    /// This cluster's name, as `POST /v1/multicluster/credentials` tells a linking cluster.
    /// Default none.
    pub cluster_name: Option<String>,
    /// How long a lost multicluster link keeps its mirrored services; `Duration::ZERO`: forever.
    /// Default [`multicluster::DEFAULT_LINK_EXPIRY`] (5 min).
    pub link_expiry: Duration,
    /// What the HTTP API admits (connections, request heads and bodies, changes in flight,
    /// workloads). Default [`api::limits::Limits::default`].
    pub api_limits: api::limits::Limits,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            store: store::Location::Dir(PathBuf::from("store")),
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 8086)),
            api_addr: SocketAddr::from(([127, 0, 0, 1], 8085)),
            cluster_domain: "cluster.local".into(),
            trust_domain: "cluster.local".into(),
            control_namespace: "weft".into(),
            poll_interval: Duration::from_millis(200),
            identity_dir: None,
            cert_lifetime: ca::DEFAULT_CERT_LIFETIME,
            service_cidr: service_ips::ServiceCidr::default(),
            default_inbound_policy: DefaultPolicy::default(),
            cluster_networks: index::InboundDefaults::default().cluster_networks,
            egress_namespace: resource::egress::DEFAULT_EGRESS_NAMESPACE.into(),
            scrape_interval: telemetry::DEFAULT_INTERVAL,
            prometheus_sd_file: None,
            prometheus_url: None,
            webhook: None,
            cluster_name: None,
            link_expiry: multicluster::DEFAULT_LINK_EXPIRY,
            api_limits: api::limits::Limits::default(),
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
    #[error("identity tokens: {0}")]
    Tokens(#[from] tokens::Error),
    #[error("service IPs: {0}")]
    ServiceIps(#[from] service_ips::Error),
    #[error("identity CA: {0}")]
    Ca(#[from] ca::CaError),
    #[error("gRPC server: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error("control plane task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// How long shutdown waits for gRPC connections to close before it closes them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// A running control plane. Dropping it stops everything (without waiting).
pub struct Running {
    /// The bound gRPC address (the real port when 0 was asked for).
    pub grpc_addr: SocketAddr,
    /// The bound HTTP API address.
    pub api_addr: SocketAddr,
    /// PEM trust anchors of the CA that `Identity.Certify` issued from at start (hand them to
    /// proxies; with `identity_dir` a rotation changes them: read the directory's bundle).
    pub trust_anchors_pem: String,
    /// The identity the gRPC server proves ([`resource::control_identity`]): proxies'
    /// `WEFT_PROXY_*_SVC_NAME`.
    pub control_identity: String,
    /// The bound admission webhook address, when it is on.
    pub webhook_addr: Option<SocketAddr>,
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
        if let Some(mut g) = self.grpc.take() {
            // Streams end at once on shutdown, but a peer may hold its HTTP/2 connection open;
            // past the grace period the server is aborted rather than keeping the process alive.
            match tokio::time::timeout(SHUTDOWN_GRACE, &mut g).await {
                Ok(res) => res??,
                Err(_) => {
                    tracing::debug!("gRPC connections still open after the grace period; closing");
                    g.abort();
                }
            }
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
    let ca = match &config.identity_dir {
        Some(dir) => ca::Ca::load(dir, config.cert_lifetime)?,
        None => {
            let ca = ca::Ca::ephemeral(
                &config.trust_domain,
                &config.control_namespace,
                config.cert_lifetime,
            )?;
            tracing::info!(
                anchors = %ca.trust_anchors_pem(),
                "no identity directory: using an ephemeral CA that lives only in this process \
                 (its anchors are served at GET /v1/identity/trust-anchors)"
            );
            ca
        }
    };
    let ca = std::sync::Arc::new(ca);
    let trust_anchors_pem = ca.trust_anchors_pem().to_string();
    let ledger = ca_reload::Ledger::new(ca.issuer_anchor());
    // Without a directory nothing ever changes the CA: the sender is dropped, the value stays.
    let (ca_tx, ca_rx) = watch::channel(ca);
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
    let webhook_listener = match &config.webhook {
        Some(w) => {
            let l = bind(w.addr).await?;
            let addr = local(&l, w.addr)?;
            Some((l, addr))
        }
        None => None,
    };
    let webhook_addr = webhook_listener.as_ref().map(|(_, addr)| *addr);

    let mut tasks = Vec::new();
    let instance = ledger.instance();
    let mut reviewer = None;
    let mut link_accounts = None;
    let (store, tokens, ips, records, leader) = match &config.store {
        store::Location::Dir(dir) => {
            let (store, task) = store::files::start(
                dir.clone(),
                defaults.clone(),
                config.poll_interval,
                shutdown_rx.clone(),
            )?;
            tasks.push(task);
            let ips = service_ips::ServiceIps::load(dir, config.service_cidr)?;
            let records = config.identity_dir.clone().map(ca_reload::Records::Dir);
            let leader = leader::alone(&instance);
            (store, tokens::Tokens::load(dir), ips, records, leader)
        }
        store::Location::Etcd(target) => {
            let client = etcd::Client::new(&target.endpoints).map_err(store::StoreError::from)?;
            let (store, task) = store::etcd::start(
                client.clone(),
                target,
                defaults.clone(),
                store::etcd::START_TIMEOUT,
                shutdown_rx.clone(),
            )
            .await?;
            tasks.push(task);
            let (tokens, task) =
                tokens::Tokens::etcd(client.clone(), target, shutdown_rx.clone()).await?;
            tasks.push(task);
            let (leader, task) = leader::start(
                client.clone(),
                target,
                instance.clone(),
                shutdown_rx.clone(),
            );
            tasks.push(task);
            tasks.push(tokio::spawn(store::status::run(
                store::status::Etcd {
                    client: client.clone(),
                    target: target.clone(),
                },
                store.statuses(),
                leader.clone(),
                shutdown_rx.clone(),
            )));
            let records = match &config.identity_dir {
                Some(dir) => Some(
                    ca_reload::Records::etcd(dir, client.clone(), target.clone()).map_err(|e| {
                        store::StoreError::Io {
                            path: e.path,
                            source: e.source,
                        }
                    })?,
                ),
                None => {
                    tracing::warn!(
                        "the etcd store without --identity-dir: this replica issues from a CA of \
                         its own, which proxies certified by another replica do not trust; give \
                         every replica the same --identity-dir"
                    );
                    None
                }
            };
            let ips = service_ips::ServiceIps::etcd(config.service_cidr, client, target)
                .with_leader(leader.clone(), service_ips::FREE_AFTER);
            (store, tokens, ips, records, leader)
        }
        store::Location::Kubernetes(kubeconfig) => {
            let client = k8s::client(kubeconfig.as_deref())
                .await
                .map_err(store::StoreError::from)?;
            let (store, task) = store::kubernetes::start(
                client.clone(),
                defaults.clone(),
                store::kubernetes::START_TIMEOUT,
                shutdown_rx.clone(),
            )
            .await?;
            tasks.push(task);
            let (leader, task) = k8s::lease::start(
                client.clone(),
                &config.control_namespace,
                instance.clone(),
                shutdown_rx.clone(),
            );
            tasks.push(task);
            tasks.push(tokio::spawn(store::status::run(
                k8s::status::Objects::new(client.clone()),
                store.statuses(),
                leader.clone(),
                shutdown_rx.clone(),
            )));
            // The identity directory is a read-only Secret there: the ledgers are ConfigMaps.
            let records = ca_reload::Records::Kubernetes(k8s::records::ConfigMaps::new(
                client.clone(),
                &config.control_namespace,
            ));
            link_accounts = Some(k8s::link_accounts::LinkAccounts::new(
                client.clone(),
                &config.control_namespace,
            ));
            reviewer = Some(k8s::token_review::Reviewer::new(client));
            // Cluster IPs come with the Services (a headless one has none).
            let ips = service_ips::ServiceIps::given();
            (store, tokens::Tokens::none(), ips, Some(records), leader)
        }
    };
    if let Some(records) = &records {
        tasks.push(tokio::spawn(ca_reload::keep_records(
            ledger.clone(),
            records.clone(),
            leader.clone(),
            shutdown_rx.clone(),
        )));
    }
    let index = index::Index::with_defaults(
        &config.cluster_domain,
        index::InboundDefaults {
            default_policy: config.default_inbound_policy,
            cluster_networks: config.cluster_networks.clone(),
        },
        &config.egress_namespace,
    );
    // The index sees the store's states with allocated cluster IPs filled in.
    let (with_ips, ips_task) = service_ips::start(ips, store.states(), shutdown_rx.clone()).await;
    // The first state is applied before serving so the first answers already reflect the store.
    index.apply(with_ips.borrow().clone());
    let index_task = tokio::spawn(index::run(index.clone(), with_ips));
    let telemetry = telemetry::Telemetry::new(config.scrape_interval);
    let telemetry_task = tokio::spawn(telemetry::run(
        telemetry.clone(),
        index.clone(),
        shutdown_rx.clone(),
    ));
    // The control plane's own identity (what its gRPC server proves to proxies) and the tap
    // identity's certificate, from this CA, renewed beside it.
    let control_identity = resource::control_identity(&defaults);
    let (own, own_task) = own_cert::start(
        control_identity.clone(),
        format!(
            "spiffe://{}/ns/{}/sa/weft-control",
            defaults.trust_domain, defaults.control_namespace
        ),
        "gRPC",
        ca_rx.clone(),
        shutdown_rx.clone(),
    );
    let transport = std::sync::Arc::new(grpc::transport::Transport::new(own, ca_rx.clone()));
    let (tap, tap_task) = tap::start(&defaults, ca_rx.clone(), shutdown_rx.clone());
    if let (Some((listener, _)), Some(w)) = (webhook_listener, &config.webhook) {
        tasks.push(start_webhook(
            listener,
            w,
            &config,
            &defaults,
            &store,
            &ca_rx,
            &shutdown_rx,
        ));
    }
    // East's mirror: follows the store's Links, feeds their documents back into the store.
    let (links, mirror_task) =
        multicluster::start(store.clone(), config.link_expiry, shutdown_rx.clone());
    tasks.push(mirror_task);
    // Identity checks registrations against the store itself (no addresses needed, no lag).
    let states = store.states();
    let defaults_for_identity = defaults.clone();
    let api_task = tokio::spawn(api::serve(
        api_listener,
        api::Ctx {
            store,
            index: index.clone(),
            defaults,
            tokens: tokens.clone(),
            ca: ca_rx.clone(),
            ledger: ledger.clone(),
            records,
            leader,
            identity_dir: config.identity_dir.clone(),
            telemetry,
            prometheus: config.prometheus_url.clone(),
            grpc_addr,
            tap,
            cluster_name: config.cluster_name.clone(),
            links,
            limits: config.api_limits.clone(),
            refused: api::limits::Refused::default(),
            link_accounts,
        },
        shutdown_rx.clone(),
    ));
    let tap_task = tokio::spawn(tap_task);
    tasks.extend([
        api_task,
        ips_task,
        index_task,
        telemetry_task,
        tap_task,
        tokio::spawn(own_task),
    ]);
    if let Some(path) = &config.prometheus_sd_file {
        let writer = telemetry::file_sd::Writer::new(path.clone(), &config.control_namespace);
        tasks.push(tokio::spawn(telemetry::file_sd::run(
            writer,
            index.clone(),
            shutdown_rx.clone(),
        )));
    }
    if let Some(dir) = &config.identity_dir {
        tasks.push(tokio::spawn(ca_reload::run(
            dir.clone(),
            config.cert_lifetime,
            ca_tx,
            ledger.clone(),
            shutdown_rx.clone(),
        )));
    }
    let mut identity = grpc::identity::IdentityService::new(ca_rx, ledger, tokens, states);
    if let Some(reviewer) = reviewer {
        identity = identity.with_token_review(reviewer, defaults_for_identity);
    }
    let grpc = tokio::spawn(grpc::serve(
        grpc_listener,
        transport,
        index,
        identity,
        shutdown_rx,
    ));
    tracing::info!(%grpc_addr, %api_addr, store = %config.store, "control plane listening");
    Ok(Running {
        grpc_addr,
        api_addr,
        trust_anchors_pem,
        control_identity,
        webhook_addr,
        shutdown,
        grpc: Some(grpc),
        tasks,
    })
}

/// The admission webhook's task and its certificate's renewal
/// (`weft-proxy-injector.<ns>.svc`, from the mesh CA).
fn start_webhook(
    listener: tokio::net::TcpListener,
    w: &inject::webhook::WebhookConfig,
    config: &Config,
    defaults: &resource::Defaults,
    store: &store::StoreHandle,
    ca: &watch::Receiver<std::sync::Arc<ca::Ca>>,
    shutdown: &watch::Receiver<bool>,
) -> JoinHandle<()> {
    let (identity, renew) = own_cert::start(
        inject::webhook::dns_name(&defaults.control_namespace),
        format!(
            "spiffe://{}/ns/{}/sa/weft-control",
            defaults.trust_domain, defaults.control_namespace
        ),
        "webhook",
        ca.clone(),
        shutdown.clone(),
    );
    let webhook = inject::webhook::Webhook {
        injector: inject::Injector {
            defaults: defaults.clone(),
            cluster_domain: config.cluster_domain.clone(),
            ..w.injector.clone()
        },
        identity,
        states: store.states(),
        ca: ca.clone(),
    };
    let serve = inject::webhook::serve(listener, webhook, shutdown.clone());
    tokio::spawn(async move {
        tokio::join!(renew, serve);
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

/// A fresh, empty directory `weft-<name>-<pid>` under the system temp dir for one unit test.
#[cfg(test)]
pub(crate) fn test_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("weft-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}
