//! `weft check` in transparent mode on a two-node testbed cluster (root only; skipped locally
//! without root, failing under `CI=true`): the control plane in a pod on node 0, the demo's
//! ratings service started with `weft run` in a pod on node 1. The control plane probes that
//! proxy where a pod's proxy is found — its admin on the pod IP, port 4191, and its inbound TLS
//! on port 4143 under its own identity — and every check passes. `weft check` runs in the control
//! plane's pod (the host has no route into the cluster).

mod support;

use std::path::Path;

use serde_json::Value;
use support::cluster::{self, RATINGS_SERVICE};
use support::eventually;
use weft_testbed::mesh::{exec, ControlPlane};
use weft_testbed::{require_root, serial, Cluster, HostState};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_check_passes_for_a_pod_in_transparent_mode() {
    let _serial = serial();
    let Some(root) = require_root(&[]) else {
        return;
    };
    let host = HostState::capture().expect("host state");
    let store = cluster::temp_store("cluster-check", RATINGS_SERVICE);
    {
        let cluster = Cluster::new(root, 2).expect("cluster");
        let control = ControlPlane::start(&cluster, 0, Path::new(cluster::WEFT), &store)
            .await
            .expect("control plane");
        let ratings = cluster::ratings(&cluster, 1, &control).await;
        let netns = control.pod.netns().name().to_string();
        let api = control.api.to_string();
        let check = ["check", "--api-addr", &api, "-o", "json"];
        let args: Vec<&str> = std::iter::once(cluster::WEFT).chain(check).collect();

        let (success, doc) = eventually("the control plane probes ratings", support::SOON, || {
            let (netns, args) = (netns.clone(), args.clone());
            async move {
                let out = exec(&netns, &args).await.ok()?;
                let doc: Value = serde_json::from_str(&out.stdout).ok()?;
                let probed = (doc["proxies"].as_array().into_iter().flatten())
                    .any(|p| p["name"] == "ratings" && !p["tls_probe"].is_null());
                probed.then_some((out.success, doc))
            }
        })
        .await;
        let not_ok: Vec<_> = (doc["sections"].as_array().into_iter().flatten())
            .flat_map(|s| s["checks"].as_array().cloned().unwrap_or_default())
            .filter(|c| c["status"] != "ok")
            .collect();
        assert!(
            success && not_ok.is_empty(),
            "not ok: {not_ok:#?}\n{doc:#}\n{}",
            ratings.proc.stderr()
        );
        let proxy = &doc["proxies"][0];
        let pod_ip = ratings.ip.to_string();
        assert_eq!(proxy["admin"], format!("{pod_ip}:4191"), "{proxy}");
        assert_eq!(proxy["tls_probe"], format!("{pod_ip}:4143"), "{proxy}");
        assert!(proxy["chains_to"].is_string(), "{proxy}");
        assert_eq!(proxy["not_ready"], Value::Null, "{proxy}");
    }
    host.assert_unchanged();
    let _ = std::fs::remove_dir_all(&store);
}
