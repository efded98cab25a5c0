//! Transparent mode end to end on a two-node testbed cluster (root only; skipped locally
//! without root or tools, failing under `CI=true`). The control plane runs in a pod on node 0;
//! workloads are started with `weft run` on node 1 (servers) and node 0 (the client), each in a
//! pod of its own with `weft init` rules and a sidecar as uid 2102. The client is an unmodified
//! `curl`/`redis-cli` with no proxy settings, resolving services by name from the pod's hosts
//! file. Every sidecar gets its identity from `weft run` (token and trust-anchors files), so the
//! hop between the two proxies is mutual TLS. Afterwards the host's namespaces, links and
//! iptables rules are what they were.

mod support;

use std::path::Path;
use std::time::Duration;

use support::cluster::{self, RATINGS_SERVICE};
use support::eventually;
use weft_testbed::mesh::{metric_sum, ControlPlane};
use weft_testbed::{require_root, serial, Cluster, HostState, Proc};

const REDIS_SERVICE: &str = "\
apiVersion: v1
kind: Service
metadata:
  name: redis
  namespace: default
  annotations: {config.linkerd.io/opaque-ports: \"6379\"}
spec:
  selector: {app: redis}
  clusterIP: 198.19.0.11
  ports: [{port: 6379}]
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transparent_mesh_on_a_two_node_cluster() {
    let _serial = serial();
    let Some(root) = require_root(&["curl", "redis-server", "redis-cli"]) else {
        return;
    };
    let host = HostState::capture().expect("host state");
    let store = cluster::temp_store(
        "cluster-mesh",
        &format!("{RATINGS_SERVICE}---\n{REDIS_SERVICE}"),
    );
    {
        let cluster = Cluster::new(root, 2).expect("cluster");
        let control = ControlPlane::start(&cluster, 0, Path::new(cluster::WEFT), &store)
            .await
            .expect("control plane");
        let ratings = cluster::ratings(&cluster, 1, &control).await;
        let redis = cluster::workload(
            &cluster,
            1,
            &control,
            "redis",
            &["--port", "6379", "--opaque-ports", "6379"],
            &[
                "redis-server",
                "--port",
                "6379",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
        )
        .await;
        // An unmeshed pod with a plain server on a port the client skips, and one it does not.
        let plain = cluster.add_pod(1).expect("plain pod");
        let plain_skipped = redis_server(&plain, 9999);
        let plain_meshed = redis_server(&plain, 6390);
        for server in [&plain_skipped, &plain_meshed] {
            server
                .wait_stdout_line(Duration::from_secs(10), |l| {
                    l.contains("Ready to accept connections")
                })
                .await
                .expect("plain redis");
        }
        let client =
            cluster::client(&cluster, 0, &control, &["--skip-outbound-ports", "9999"]).await;

        // 0. `weft run` gave both sidecars an identity: each obtains its certificate.
        for (workload, name) in [(&ratings, "ratings"), (&client, "client")] {
            eventually(
                &format!("{name} proxy holds a certificate"),
                Duration::from_secs(20),
                || async {
                    let m = workload.metrics().await.ok()?;
                    (metric_sum(&m, "identity_cert_refresh_total", &[("result", "success")]) >= 1.0)
                        .then_some(())
                },
            )
            .await;
        }

        // 1. curl reaches ratings by name through both proxies, over mTLS between them.
        let out = client
            .exec(&[
                "curl",
                "-sS",
                "-i",
                "--max-time",
                "10",
                "--retry",
                "3",
                "http://ratings/rate?book=3",
            ])
            .await
            .expect("curl");
        assert!(
            out.success,
            "curl failed: {}{}\n{}",
            out.stdout,
            out.stderr,
            client.proc.stderr()
        );
        // ratings fails ~5% of requests on purpose (a 500 that curl --retry sends again): the
        // answer that counts is the last one curl printed.
        let last = &out.stdout[out.stdout.rfind("HTTP/1.1 ").unwrap_or(0)..];
        assert!(last.starts_with("HTTP/1.1 200"), "{}", out.stdout);
        assert!(last.contains(r#""book":3"#), "{}", out.stdout);
        assert!(
            !out.stdout.to_ascii_lowercase().contains("l5d-orig-proto"),
            "{}",
            out.stdout
        );
        let client_metrics = eventually(
            "client proxy counts the request",
            Duration::from_secs(5),
            || async {
                let m = client.metrics().await.ok()?;
                (metric_sum(
                    &m,
                    "response_total",
                    &[
                        ("direction", "outbound"),
                        ("dst_service", "ratings"),
                        ("status_code", "200"),
                    ],
                ) >= 1.0)
                    .then_some(m)
            },
        )
        .await;
        eventually(
            "ratings proxy counts the request as mTLS from the client",
            Duration::from_secs(5),
            || async {
                let m = ratings.metrics().await.ok()?;
                (metric_sum(
                    &m,
                    "request_total",
                    &[
                        ("direction", "inbound"),
                        ("tls", "true"),
                        (
                            "client_id",
                            "client.default.serviceaccount.identity.weft.cluster.local",
                        ),
                    ],
                ) >= 1.0)
                    .then_some(())
            },
        )
        .await;
        assert!(
            metric_sum(
                &client_metrics,
                "response_total",
                &[
                    ("direction", "outbound"),
                    ("dst_service", "ratings"),
                    ("tls", "true"),
                    (
                        "server_id",
                        "ratings.default.serviceaccount.identity.weft.cluster.local"
                    ),
                ],
            ) >= 1.0,
            "{client_metrics}"
        );

        // 2. The proxy's own connection to the ratings endpoint was not redirected into itself:
        // nothing was accepted on its outbound listener for the endpoint address.
        let endpoint = format!("{}:8080", ratings.ip);
        assert!(
            client_metrics.contains(&format!("target_addr=\"{endpoint}\"")),
            "{client_metrics}"
        );
        assert_eq!(
            metric_sum(
                &client_metrics,
                "tcp_open_total",
                &[
                    ("direction", "outbound"),
                    ("peer", "src"),
                    ("target_addr", &endpoint)
                ]
            ),
            0.0,
            "{client_metrics}"
        );

        // 3. The opaque port is relayed by both proxies (redis speaks RESP, not HTTP).
        let out = client
            .exec(&["redis-cli", "-h", "redis", "-p", "6379", "PING"])
            .await
            .expect("redis-cli");
        assert_eq!(out.stdout.trim(), "PONG", "{out:?}");
        let m = client.metrics().await.expect("client metrics");
        assert!(
            metric_sum(
                &m,
                "tcp_open_total",
                &[
                    ("direction", "outbound"),
                    ("peer", "dst"),
                    ("dst_service", "redis")
                ]
            ) >= 1.0,
            "{m}"
        );
        assert_eq!(
            metric_sum(
                &m,
                "request_total",
                &[("target_addr", &format!("{}:6379", redis.ip))]
            ),
            0.0,
            "{m}"
        );
        let rm = redis.metrics().await.expect("redis metrics");
        assert!(
            metric_sum(
                &rm,
                "tcp_open_total",
                &[
                    ("direction", "inbound"),
                    ("peer", "src"),
                    ("target_addr", &format!("{}:6379", redis.ip))
                ]
            ) >= 1.0,
            "{rm}"
        );
        assert_eq!(metric_sum(&rm, "request_total", &[]), 0.0, "{rm}");

        // 4. A skipped port bypasses the proxy; the same server on another port does not.
        let skipped = plain.ip().to_string();
        let out = client
            .exec(&["redis-cli", "-h", &skipped, "-p", "9999", "PING"])
            .await
            .expect("redis-cli");
        assert_eq!(out.stdout.trim(), "PONG", "{out:?}");
        let out = client
            .exec(&["redis-cli", "-h", &skipped, "-p", "6390", "PING"])
            .await
            .expect("redis-cli");
        assert_eq!(out.stdout.trim(), "PONG", "{out:?}");
        let m = client.metrics().await.expect("client metrics");
        assert_eq!(
            metric_sum(
                &m,
                "tcp_open_total",
                &[("target_addr", &format!("{skipped}:9999"))]
            ),
            0.0,
            "{m}"
        );
        assert!(
            metric_sum(
                &m,
                "tcp_open_total",
                &[("target_addr", &format!("{skipped}:6390"))]
            ) >= 1.0,
            "{m}"
        );

        drop((plain_skipped, plain_meshed));
        // The sidecar's identity files: in the pod's state directory, the proxy's alone.
        let ratings_ns = ratings.netns().expect("netns");
        let state = std::env::temp_dir().join(&ratings_ns);
        for file in ["token", "trust-anchors.pem"] {
            use std::os::unix::fs::MetadataExt as _;
            let meta = std::fs::metadata(state.join(file)).expect("identity file");
            assert_eq!((meta.uid(), meta.mode() & 0o777), (2102, 0o600), "{file}");
        }
        // Stopping a workload deregisters it and removes its pod and state directory.
        drop(ratings);
        assert!(
            !weft_testbed::mesh::netns_exists(&ratings_ns),
            "{ratings_ns} left behind"
        );
        assert!(
            !Path::new("/etc/netns").join(&ratings_ns).exists(),
            "hosts file left behind"
        );
        assert!(!state.exists(), "state directory left behind");
        let workloads = client
            .exec(&[
                "curl",
                "-sS",
                &format!("http://{}/v1/workloads", control.api),
            ])
            .await
            .expect("list workloads");
        assert!(
            !workloads.stdout.contains("\"ratings\""),
            "{}",
            workloads.stdout
        );
    }
    let _ = std::fs::remove_dir_all(&store);
    host.assert_unchanged();
}

fn redis_server(pod: &weft_testbed::Pod, port: u16) -> Proc {
    Proc::spawn(
        &format!("redis {port}"),
        pod.netns(),
        None,
        libc::SIGKILL,
        move || {
            let mut cmd = std::process::Command::new("redis-server");
            cmd.args([
                "--port",
                &port.to_string(),
                "--bind",
                "0.0.0.0",
                "--protected-mode",
                "no",
                "--save",
                "",
                "--appendonly",
                "no",
            ]);
            cmd
        },
    )
    .expect("redis-server")
}
