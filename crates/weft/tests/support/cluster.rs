//! What the root-only testbed cluster tests (`cluster_mesh.rs`, `cluster_partition.rs`) share:
//! the `ratings` Service, a store directory holding the services, and workloads started with
//! `weft run` from the binaries under test.

use std::path::{Path, PathBuf};

use weft_testbed::mesh::{ControlPlane, Workload};
use weft_testbed::Cluster;

pub const WEFT: &str = env!("CARGO_BIN_EXE_weft");

/// The `ratings` Service: cluster IP 198.19.0.10, port 80 → workload port `http`.
pub const RATINGS_SERVICE: &str = "\
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: default}
spec:
  selector: {app: ratings}
  clusterIP: 198.19.0.10
  ports: [{name: http, port: 80, targetPort: http}]
";

/// A fresh store directory `weft-NAME-PID` under the temp dir whose `services.yaml` is `yaml`.
pub fn temp_store(name: &str, yaml: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("weft-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("store dir");
    std::fs::write(dir.join("services.yaml"), yaml).expect("store");
    dir
}

/// `weft run` on `node`: workload `name` running `cmd`, with `flags` (pods learn Services from
/// the control plane's API).
pub async fn workload(
    cluster: &Cluster,
    node: usize,
    control: &ControlPlane,
    name: &str,
    flags: &[&str],
    cmd: &[&str],
) -> Workload {
    let proxy = super::proxy_bin();
    Workload::start(
        cluster,
        node,
        Path::new(WEFT),
        &proxy,
        control,
        name,
        flags,
        cmd,
    )
    .await
    .unwrap_or_else(|e| panic!("{name}: {e:?}"))
}

/// The `ratings` demo service (`weft demo-service ratings`) on `node`, port `http=8080`.
pub async fn ratings(cluster: &Cluster, node: usize, control: &ControlPlane) -> Workload {
    let cmd = [WEFT, "demo-service", "ratings", "--listen", "0.0.0.0:8080"];
    workload(
        cluster,
        node,
        control,
        "ratings",
        &["--port", "http=8080"],
        &cmd,
    )
    .await
}

/// A meshed pod `client` on `node` that only sleeps: tests `exec` their clients in it.
pub async fn client(
    cluster: &Cluster,
    node: usize,
    control: &ControlPlane,
    flags: &[&str],
) -> Workload {
    let cmd = ["sleep", "3600"];
    workload(cluster, node, control, "client", flags, &cmd).await
}
