//! A two-node testbed mesh for the policy tests (`cluster_traffic.rs`, `cluster_authz.rs`): the
//! control plane and a meshed client pod on node 0, backends on node 1 whose application is a
//! [`Backend`] of the test process, more client pods on demand, and documents written into the
//! control plane's store atomically.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::Request;
use weft_testbed::mesh::{ControlPlane, Workload};
use weft_testbed::{Cluster, Root};

use super::cluster;
use super::eventually;
use super::pods::{Answer, Backend, PodClient, PodNet, Tally};

/// Writes `FILE` into the store atomically (a hidden temporary file is never read).
pub fn write_doc(store: &Path, file: &str, yaml: &str) -> Instant {
    let tmp = store.join(format!(".{file}.tmp"));
    std::fs::write(&tmp, yaml).unwrap_or_else(|e| panic!("write {file}: {e}"));
    std::fs::rename(&tmp, store.join(file)).unwrap_or_else(|e| panic!("rename {file}: {e}"));
    Instant::now()
}

/// The control plane, a client pod `client` on node 0, and what the test started.
pub struct Mesh {
    // Field order is drop order: pods before the control plane before the cluster.
    pub backends: Vec<(Workload, Option<Backend>)>,
    /// Further client pods ([`Mesh::client_pod`]).
    pub pods: Vec<Workload>,
    pub client_pod: Workload,
    pub client: PodClient,
    pub control: ControlPlane,
    pub store: PathBuf,
    pub cluster: Cluster,
}

impl Mesh {
    /// A two-node cluster whose store's `services.yaml` is `services`.
    pub async fn start(name: &str, root: Root, services: &str) -> Mesh {
        let store = cluster::temp_store(name, services);
        let cluster = Cluster::new(root, 2).expect("cluster");
        let control = ControlPlane::start(&cluster, 0, Path::new(cluster::WEFT), &store)
            .await
            .expect("control plane");
        let client_pod = cluster::client(&cluster, 0, &control, &[]).await;
        let client = PodClient::new(PodNet::open(&client_pod.netns().expect("client netns")));
        Mesh {
            backends: Vec::new(),
            pods: Vec::new(),
            client_pod,
            client,
            control,
            store,
            cluster,
        }
    }

    /// A workload `name` labelled `app=APP` on node 1, served by a [`Backend`] named `name`.
    pub async fn backend(&mut self, name: &str, app: &str) -> usize {
        let (w, b) = backend_pod(&self.cluster, 1, &self.control, name, app, &[]).await;
        self.backends.push((w, Some(b)));
        self.backends.len() - 1
    }

    /// Another meshed client pod `name` (its identity is `NAME.default.serviceaccount...`) on
    /// `node`, and a client in it.
    pub async fn client_pod(&mut self, name: &str, node: usize) -> PodClient {
        let w = cluster::workload(
            &self.cluster,
            node,
            &self.control,
            name,
            &[],
            &["sleep", "3600"],
        )
        .await;
        let client = PodClient::new(PodNet::open(&w.netns().expect("client netns")));
        self.pods.push(w);
        client
    }

    /// A client in node `node`'s own namespace: not meshed, its connections arrive in plaintext
    /// from the node's address.
    pub fn unmeshed_client(&self, node: usize) -> PodClient {
        PodClient::new(PodNet::open(self.cluster.node(node).netns().name()))
    }

    /// Waits until `check` holds for an answer to `req()` sent by `client` to `addr`.
    pub async fn until(
        &self,
        client: &PodClient,
        addr: SocketAddr,
        what: &str,
        req: impl Fn() -> Request<Full<Bytes>>,
        check: impl Fn(&Answer) -> bool,
    ) {
        eventually(what, Duration::from_secs(20), || async {
            let a = client.send(addr, req()).await;
            check(&a).then_some(())
        })
        .await;
    }

    pub fn b(&self, i: usize) -> &Backend {
        self.backends[i].1.as_ref().expect("backend is running")
    }

    /// Stops backend `i` (its listener and every connection, as a killed process).
    pub fn kill(&mut self, i: usize) {
        self.backends[i].1 = None;
    }

    /// Starts backend `i` again on its pod's port 8080.
    pub fn restart(&mut self, i: usize) {
        let (w, b) = &mut self.backends[i];
        *b = Some(Backend::start(
            &PodNet::open(&w.netns().expect("netns")),
            8080,
            &w.name,
        ));
    }

    /// The client's and every backend's proxy log and the control plane's, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = format!(
            "--- client proxy ---\n{}\n--- control ---\n{}",
            self.client_pod.proc.stderr(),
            self.control.proc.stderr()
        );
        for (w, _) in &self.backends {
            out.push_str(&format!("\n--- {} ---\n{}", w.name, w.proc.stderr()));
        }
        out
    }
}

/// A workload `name` labelled `app=APP` (and `flags`) on `node`, with port `http` 8080 served by
/// a [`Backend`] named `name`. `weft run` registers a workload once its ports listen, so the
/// backend binds in the pod's namespace as soon as that namespace exists, while `weft run` waits.
pub async fn backend_pod(
    cluster: &Cluster,
    node: usize,
    control: &ControlPlane,
    name: &str,
    app: &str,
    flags: &[&str],
) -> (Workload, Backend) {
    let label = format!("app={app}");
    let mut all = vec!["--port", "http=8080", "--label", &label];
    all.extend_from_slice(flags);
    let prefix = format!("weft-run-{name}-");
    let serve = async {
        eventually("the pod's namespace", Duration::from_secs(20), || async {
            let netns = std::fs::read_dir("/run/netns")
                .ok()?
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .find(|n| n.starts_with(&prefix))?;
            Some(Backend::start(&PodNet::open(&netns), 8080, name))
        })
        .await
    };
    let start = cluster::workload(cluster, node, control, name, &all, &["sleep", "3600"]);
    tokio::join!(start, serve)
}

pub fn assert_all_ok(t: &Tally, context: &str, mesh: &Mesh) {
    let (failed, examples) = t.failures();
    assert_eq!(
        failed,
        0,
        "{context}: {failed} of {} requests failed, e.g. {examples:?}\n{}",
        t.total(),
        mesh.logs()
    );
}
