//! The mesh the soak and chaos runs drive, on a testbed cluster: `weft control` (with a CA
//! directory, so the trust anchor can rotate) in a pod on node 0, a client pod made by `weft run`,
//! and pool pods made by `weft run` whose applications are [`PodBackend`]s of this process.
//!
//! Endpoint churn registers and deregisters ExternalWorkloads `NAME-ep` that point at the pool
//! pods (label `app=<service app>`, the pod's address and ports, its own TLS identity as
//! `meshTLS.serverName`), while the pool pods' own workloads (label `app=<pool app>`, selected by
//! no Service) stay registered. Why not start and stop pods: a pod takes seconds to make, so one a
//! second would measure `weft run`, not the mesh; and deregistering a `weft run` workload revokes
//! the token its sidecar renews its certificate with. Registering endpoints is exactly what
//! churn is to a client proxy: Destination updates for a service under traffic.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use weft_testbed::mesh::{ControlPlane, Workload, ADMIN};
use weft_testbed::{procfs, Cluster, NamedNetns, Root};

use super::apps::{PodBackend, HTTP_PORT, TCP_PORT};

/// The trust domain and control-plane namespace `weft control` and `weft run` default to.
const TRUST_DOMAIN: &str = "cluster.local";
const CONTROL_NS: &str = "weft";

/// The binaries under test.
#[derive(Clone, Debug)]
pub struct Binaries {
    pub weft: PathBuf,
    pub proxy: PathBuf,
}

/// A Service of the mesh: `name` at `ip`, selecting `app=APP`: port 80 → workload port `http`
/// (HTTP/1.1, HTTP/2, gRPC), port 7000 → workload port `tcp`, opaque.
#[derive(Clone, Debug)]
pub struct ServiceSpec {
    pub name: String,
    pub app: String,
    pub ip: Ipv4Addr,
}

impl ServiceSpec {
    fn yaml(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: {n}\n  namespace: default\n  \
             annotations:\n    config.linkerd.io/opaque-ports: \"{TCP_PORT}\"\nspec:\n  \
             selector: {{app: {a}}}\n  clusterIP: {ip}\n  ports:\n  \
             - {{name: http, port: 80, targetPort: http}}\n  \
             - {{name: tcp, port: {TCP_PORT}, targetPort: tcp}}\n",
            n = self.name,
            a = self.app,
            ip = self.ip
        )
    }

    pub fn http(&self) -> SocketAddr {
        SocketAddr::from((self.ip, 80))
    }

    pub fn tcp(&self) -> SocketAddr {
        SocketAddr::from((self.ip, TCP_PORT))
    }

    /// `Host` / `:authority` of the HTTP port.
    pub fn authority(&self) -> String {
        format!("{}.default.svc.cluster.local", self.name)
    }
}

/// A pool pod: its `weft run`, its in-process application, and the endpoint that churns.
pub struct PoolPod {
    pub workload: Workload,
    pub backend: PodBackend,
    pub node: usize,
}

/// A meshed pod running only `sleep`, whose sockets this process makes (a client).
pub struct ClientPod {
    pub workload: Workload,
    pub netns: Arc<NamedNetns>,
}

/// The cluster with its control plane. Field order is drop order: pods, then the control plane,
/// then the cluster, then the directories.
pub struct Mesh {
    pub pools: Vec<PoolPod>,
    pub clients: Vec<ClientPod>,
    pub control: ControlPlane,
    /// Node 0's namespace, where this process reaches the control plane's API from.
    pub node0: Arc<NamedNetns>,
    pub cluster: Cluster,
    pub bins: Binaries,
    pub ca_dir: PathBuf,
    pub store: PathBuf,
    pub dir: TempDir,
}

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Mesh {
    /// `nodes` nodes; a CA made by `weft identity init`; `weft control --identity-dir CA
    /// --cert-lifetime LIFETIME` on node 0 whose store holds `services`.
    pub async fn start(
        root: Root,
        name: &str,
        bins: &Binaries,
        nodes: usize,
        cert_lifetime: &str,
        services: &[ServiceSpec],
    ) -> anyhow::Result<Mesh> {
        let dir = TempDir(std::env::temp_dir().join(format!("weft-{name}-{}", std::process::id())));
        let _ = std::fs::remove_dir_all(&dir.0);
        let (store, ca_dir) = (dir.0.join("store"), dir.0.join("ca"));
        std::fs::create_dir_all(&store)?;
        let yaml: Vec<String> = services.iter().map(ServiceSpec::yaml).collect();
        std::fs::write(store.join("services.yaml"), yaml.join("---\n"))?;
        let out = tokio::process::Command::new(&bins.weft)
            .args(["identity", "init", "--dir"])
            .arg(&ca_dir)
            .output()
            .await?;
        anyhow::ensure!(
            out.status.success(),
            "weft identity init: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = Cluster::new(root, nodes)?;
        let ca = ca_dir.display().to_string();
        let control = ControlPlane::start_with(
            &cluster,
            0,
            &bins.weft,
            &store,
            &["--identity-dir", &ca, "--cert-lifetime", cert_lifetime],
        )
        .await?;
        let node0 = Arc::new(NamedNetns::open(cluster.node(0).netns().name())?);
        Ok(Mesh {
            pools: Vec::new(),
            clients: Vec::new(),
            control,
            node0,
            cluster,
            bins: bins.clone(),
            ca_dir,
            store,
            dir,
        })
    }

    /// A meshed client pod `name` on `node`; returns its index in `clients`.
    pub async fn client(&mut self, name: &str, node: usize) -> anyhow::Result<usize> {
        let workload = Workload::start(
            &self.cluster,
            node,
            &self.bins.weft,
            &self.bins.proxy,
            &self.control,
            name,
            &[],
            &["sleep", "1000000"],
        )
        .await?;
        let netns = Arc::new(NamedNetns::open(&workload.netns()?)?);
        self.clients.push(ClientPod { workload, netns });
        Ok(self.clients.len() - 1)
    }

    /// A pool pod `name` labelled `app=APP` on `node` with ports `http` and `tcp` served by a
    /// [`PodBackend`]: the backend binds as soon as `weft run` made the namespace (`weft run`
    /// waits for the ports to listen before it reports the workload ready).
    pub async fn pool_pod(&mut self, name: &str, app: &str, node: usize) -> anyhow::Result<usize> {
        let label = format!("app={app}");
        let (http, tcp) = (format!("http={HTTP_PORT}"), format!("tcp={TCP_PORT}"));
        let flags = ["--port", &http, "--port", &tcp, "--label", &label];
        let prefix = format!("weft-run-{name}-");
        let serve = async {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            loop {
                let found = std::fs::read_dir("/run/netns").ok().and_then(|d| {
                    d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                        .find(|n| n.starts_with(&prefix))
                });
                if let Some(ns) = found {
                    // The name may appear before the namespace is set up: retry a bind failure.
                    if let Ok(b) = NamedNetns::open(&ns)
                        .map_err(anyhow::Error::from)
                        .and_then(|n| Ok(PodBackend::start(&n, name)?))
                    {
                        return Ok(b);
                    }
                }
                if tokio::time::Instant::now() > deadline {
                    anyhow::bail!("{name}: no pod namespace {prefix}* within 30 s");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        let start = Workload::start(
            &self.cluster,
            node,
            &self.bins.weft,
            &self.bins.proxy,
            &self.control,
            name,
            &flags,
            &["sleep", "1000000"],
        );
        let (workload, backend) = tokio::join!(start, serve);
        let (workload, backend) = (workload?, backend?);
        self.pools.push(PoolPod {
            workload,
            backend,
            node,
        });
        Ok(self.pools.len() - 1)
    }

    /// The churned endpoint of pool pod `i`: an ExternalWorkload `<pod>-ep` labelled `app=APP` at
    /// the pod's address and ports, with the pod's TLS identity.
    pub fn endpoint_doc(&self, i: usize, app: &str) -> serde_json::Value {
        let pod = &self.pools[i].workload;
        serde_json::json!({
            "apiVersion": "workload.linkerd.io/v1beta1",
            "kind": "ExternalWorkload",
            "metadata": {
                "name": format!("{}-ep", pod.name),
                "namespace": "default",
                "labels": {"app": app},
                "annotations": {
                    "config.linkerd.io/opaque-ports": TCP_PORT.to_string(),
                    "config.linkerd.io/inbound-port": "4143",
                },
            },
            "spec": {
                "meshTLS": {
                    "identity": format!("spiffe://{TRUST_DOMAIN}/ns/default/sa/{}", pod.name),
                    "serverName": format!(
                        "{}.default.serviceaccount.identity.{CONTROL_NS}.{TRUST_DOMAIN}",
                        pod.name
                    ),
                },
                "workloadIPs": [{"ip": pod.ip.to_string()}],
                "ports": [{"name": "http", "port": HTTP_PORT}, {"name": "tcp", "port": TCP_PORT}],
            },
        })
    }

    /// A request to the control plane's API, from node 0.
    pub async fn api(
        &self,
        method: &str,
        path: &str,
        body: Option<String>,
    ) -> Result<(u16, String), String> {
        self.api_client().call(method, path, body).await
    }

    /// A handle on the control plane's API that tasks can own.
    pub fn api_client(&self) -> Api {
        Api {
            node0: self.node0.clone(),
            addr: self.control.api,
        }
    }

    /// A [`Churner`] of every pool pod's endpoint, labelled `app=APP`.
    pub fn churner(&self, app: &str) -> Churner {
        Churner {
            api: self.api_client(),
            endpoints: (0..self.pools.len())
                .map(|i| {
                    let doc = self.endpoint_doc(i, app);
                    let name = doc["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    (name, doc)
                })
                .collect(),
        }
    }

    /// `weft identity rotate --dir CA --stage STAGE`: `Err(stderr)` when refused.
    pub async fn rotate(&self, stage: &str) -> Result<(), String> {
        let out = tokio::process::Command::new(&self.bins.weft)
            .args(["identity", "rotate", "--dir"])
            .arg(&self.ca_dir)
            .args(["--stage", stage])
            .output()
            .await
            .map_err(|e| format!("running weft identity rotate: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    /// Every pod's proxy: (workload name, pod namespace, proxy pid).
    pub fn proxies(&self) -> Vec<(String, String, u32)> {
        let pods = self
            .clients
            .iter()
            .map(|c| &c.workload)
            .chain(self.pools.iter().map(|p| &p.workload));
        pods.filter_map(|w| {
            let pid = procfs::child_named(w.proc.pid()?, "weft-proxy")?;
            Some((w.name.clone(), w.netns().ok()?, pid))
        })
        .collect()
    }

    /// `weft-proxy`'s `/metrics` in pod namespace `netns`.
    pub async fn proxy_metrics(&self, netns: &str) -> Result<String, String> {
        let ns = NamedNetns::open(netns).map_err(|e| e.to_string())?;
        let admin: SocketAddr = ADMIN.parse().map_err(|e| format!("{e}"))?;
        match http1(&ns, admin, "GET", "/metrics", None).await? {
            (200, body) => Ok(body),
            (s, body) => Err(format!("GET /metrics in {netns}: {s} {body}")),
        }
    }

    /// Successful and failed certificate renewals summed over every proxy
    /// (`identity_cert_refresh_total`; the first issuance counts as one success).
    pub async fn cert_refreshes(&self) -> (u64, u64) {
        let mut total = (0.0, 0.0);
        for (_, netns, _) in self.proxies() {
            if let Ok(text) = self.proxy_metrics(&netns).await {
                let sum = |r| {
                    weft_testbed::mesh::metric_sum(
                        &text,
                        "identity_cert_refresh_total",
                        &[("result", r)],
                    )
                };
                total.0 += sum("success");
                total.1 += sum("failure");
            }
        }
        (total.0 as u64, total.1 as u64)
    }

    /// The log of every process, for a failure report.
    pub fn logs(&self) -> String {
        let mut out = format!(
            "--- weft control ---\n{}",
            tail(&self.control.proc.stderr())
        );
        for w in self
            .clients
            .iter()
            .map(|c| &c.workload)
            .chain(self.pools.iter().map(|p| &p.workload))
        {
            out.push_str(&format!("\n--- {} ---\n{}", w.name, tail(&w.proc.stderr())));
        }
        out
    }

    pub fn store(&self) -> &Path {
        &self.store
    }
}

/// The control plane's API, reached from node 0.
#[derive(Clone)]
pub struct Api {
    node0: Arc<NamedNetns>,
    addr: SocketAddr,
}

impl Api {
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<String>,
    ) -> Result<(u16, String), String> {
        http1(&self.node0, self.addr, method, path, body).await
    }
}

/// Registers and deregisters the pool pods' endpoints: at tick `t`, every endpoint but number
/// `t % n` is registered (so each second one leaves and the one that left a second ago comes
/// back). Calls that fail (the control plane is down) are retried on the next tick.
pub struct Churner {
    api: Api,
    endpoints: Vec<(String, serde_json::Value)>,
}

/// What a [`Churner`] did.
#[derive(Debug, Default, Clone, Copy)]
pub struct ChurnCounts {
    pub registrations: u64,
    pub deregistrations: u64,
    /// Calls that failed (retried on the next tick).
    pub failed_calls: u64,
}

impl Churner {
    /// Registers every endpoint (at start).
    pub async fn register_all(&self) -> Result<(), String> {
        for (name, doc) in &self.endpoints {
            self.set(name, Some(doc)).await?;
        }
        Ok(())
    }

    async fn set(&self, name: &str, doc: Option<&serde_json::Value>) -> Result<(), String> {
        let path = format!("/v1/workloads/default/{name}");
        let (method, body) = match doc {
            Some(d) => ("PUT", Some(d.to_string())),
            None => ("DELETE", None),
        };
        match self.api.call(method, &path, body).await? {
            (200, _) | (404, _) if doc.is_none() => Ok(()),
            (200, _) => Ok(()),
            (s, body) => Err(format!("{method} {path}: {s} {body}")),
        }
    }

    /// Churns every `every` until the task is aborted, counting into `counts`.
    pub async fn run(self, every: Duration, counts: Arc<std::sync::Mutex<ChurnCounts>>) {
        let n = self.endpoints.len();
        let mut registered = vec![true; n];
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        for t in 0usize.. {
            tick.tick().await;
            for (i, (name, doc)) in self.endpoints.iter().enumerate() {
                let want = n < 2 || i != t % n;
                if registered[i] == want {
                    continue;
                }
                let result = self.set(name, want.then_some(doc)).await;
                let mut c = counts.lock().unwrap_or_else(|e| e.into_inner());
                match result {
                    Ok(()) => {
                        registered[i] = want;
                        if want {
                            c.registrations += 1;
                        } else {
                            c.deregistrations += 1;
                        }
                    }
                    Err(_) => c.failed_calls += 1,
                }
            }
        }
    }
}

fn tail(s: &str) -> &str {
    let mut start = s.len().saturating_sub(4000);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// One HTTP/1.1 request on a fresh connection made in `netns`: (status, body).
pub async fn http1(
    netns: &NamedNetns,
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<String>,
) -> Result<(u16, String), String> {
    let exchange = async {
        let stream = netns
            .connect(addr, Duration::from_secs(3))
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("{addr}: {e}"))?;
        tokio::spawn(conn);
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, addr.to_string())
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| e.to_string())?;
        let resp = send
            .send_request(req)
            .await
            .map_err(|e| format!("{method} {addr}{path}: {e}"))?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("{method} {addr}{path}: body: {e}"))?
            .to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .unwrap_or_else(|_| Err(format!("{method} {addr}{path}: no answer within 10 s")))
}
