//! The control plane on a 3-member etcd cluster whose members each live in a pod of their own on
//! a testbed node (root only; skipped locally without root or `etcd`/`etcdctl`/`curl`, failing
//! under `CI=true`). `weft control --store etcd://m0,m1,m2/weft` runs in a pod on a fourth node.
//! Members are lost by taking their pod's link down, as when a machine is cut off (the member
//! sends no FIN or RST; packets to it go nowhere, new connections get "no route to host"):
//!
//! 1. the member the control plane talks to (the first listed) is lost: the control plane keeps
//!    answering from its last state at once, then resumes on another member — a resource written
//!    meanwhile is applied and a registration succeeds;
//! 2. that member is restored and another is lost: the quorum now needs the restored member, and
//!    writes and registrations still go through;
//! 3. a second member is lost (no quorum): the last state is still served, a registration fails
//!    with an error naming etcd instead of hanging;
//! 4. everything restored: registrations succeed again.

mod support;

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use support::cluster;
use weft_testbed::mesh::{exec, ControlPlane};
use weft_testbed::{require_root, serial, Cluster, HostState, Pod, Proc};

const CLIENT_PORT: u16 = 2379;
const PEER_PORT: u16 = 2380;
/// How long a change may take to come through while the control plane fails over (the client
/// notices a silent member by its HTTP/2 keep-alive, 5 s + 5 s, or a call's 5 s deadline).
const FAILOVER: Duration = Duration::from_secs(60);

fn service(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\n\
         spec: {{selector: {{app: {name}}}, ports: [{{name: http, port: 80, targetPort: http}}]}}\n"
    )
}

/// One etcd member in `pod`.
fn member(pod: &Pod, i: usize, cluster: &str, data: &Path) -> Proc {
    let ip = pod.ip();
    let data = data.join(format!("m{i}"));
    let cluster = cluster.to_string();
    Proc::spawn(
        &format!("etcd m{i}"),
        pod.netns(),
        None,
        libc::SIGKILL,
        move || {
            let mut cmd = std::process::Command::new("etcd");
            cmd.arg(format!("--name=m{i}"))
                .arg(format!("--data-dir={}", data.display()))
                .arg(format!("--listen-client-urls=http://{ip}:{CLIENT_PORT}"))
                .arg(format!("--advertise-client-urls=http://{ip}:{CLIENT_PORT}"))
                .arg(format!("--listen-peer-urls=http://{ip}:{PEER_PORT}"))
                .arg(format!(
                    "--initial-advertise-peer-urls=http://{ip}:{PEER_PORT}"
                ))
                .arg(format!("--initial-cluster={cluster}"))
                .arg("--initial-cluster-state=new")
                .arg("--initial-cluster-token=weft-cluster-etcd");
            cmd
        },
    )
    .unwrap_or_else(|e| panic!("etcd m{i}: {e:?}"))
}

/// `etcdctl` run in `pod` against `ips`; its output, or the failure.
async fn etcdctl(pod: &Pod, ips: &[Ipv4Addr], args: &[&str]) -> Result<String, String> {
    let endpoints: Vec<String> = ips.iter().map(|ip| format!("{ip}:{CLIENT_PORT}")).collect();
    let endpoints = format!("--endpoints={}", endpoints.join(","));
    let mut all = vec!["etcdctl", &endpoints, "--command-timeout=10s"];
    all.extend_from_slice(args);
    let out = exec(pod.netns().name(), &all)
        .await
        .map_err(|e| format!("{e:?}"))?;
    if out.success {
        Ok(out.stdout)
    } else {
        Err(format!("{}{}", out.stdout, out.stderr))
    }
}

/// `METHOD path` on the control plane's API from inside its pod: (status, body). curl's own
/// limit bounds it.
async fn api(
    control: &ControlPlane,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, String) {
    let url = format!("http://127.0.0.1:{}{path}", control.api.port());
    let mut args = vec![
        "curl",
        "-sS",
        "--max-time",
        "60",
        "-X",
        method,
        "-w",
        "\n%{http_code}",
    ];
    if let Some(body) = body {
        args.extend_from_slice(&["-H", "content-type: application/json", "--data", body]);
    }
    args.push(&url);
    let out = exec(control.pod.netns().name(), &args)
        .await
        .expect("run curl");
    let (text, code) = out.stdout.rsplit_once('\n').unwrap_or(("", "0"));
    (
        code.trim().parse().unwrap_or(0),
        format!("{text}{}", out.stderr),
    )
}

/// `GET /v1/store`'s (services, workloads).
async fn counts(control: &ControlPlane) -> (u64, u64) {
    let (status, body) = api(control, "GET", "/v1/store", None).await;
    assert_eq!(status, 200, "GET /v1/store: {body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("store JSON");
    (
        v["services"].as_u64().unwrap_or(0),
        v["workloads"].as_u64().unwrap_or(0),
    )
}

async fn until(what: &str, limit: Duration, mut done: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !done().await {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("{what}: after {:?}", start.elapsed());
}

/// `etcdctl put`, retried while the members elect a new leader (a put in flight when the raft
/// leader is lost times out).
async fn put(pod: &Pod, ips: &[Ipv4Addr], key: &str, value: &str) {
    let mut last = String::new();
    let start = Instant::now();
    while start.elapsed() < FAILOVER {
        match etcdctl(pod, ips, &["put", key, value]).await {
            Ok(_) => return,
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("put {key} through {ips:?}: {last}");
}

async fn register(control: &ControlPlane, name: &str) -> (u16, String) {
    let doc = support::workload_doc(
        "default",
        name,
        &[("app", "web")],
        "198.18.99.1",
        &[("http", 8080)],
    );
    api(
        control,
        "PUT",
        &format!("/v1/workloads/default/{name}"),
        Some(&doc.to_string()),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_plane_rides_out_lost_etcd_members_and_resumes() {
    let _serial = serial();
    let Some(root) = require_root(&["curl", "etcd", "etcdctl"]) else {
        return;
    };
    let host = HostState::capture().expect("host state");
    let data = std::env::temp_dir().join(format!("weft-cluster-etcd-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data).expect("data dir");
    {
        let cluster = Cluster::new(root, 4).expect("cluster");
        let pods: Vec<Pod> = (0..3)
            .map(|i| cluster.add_pod(i).expect("member pod"))
            .collect();
        let ips: Vec<Ipv4Addr> = pods.iter().map(Pod::ip).collect();
        let initial: Vec<String> = ips
            .iter()
            .enumerate()
            .map(|(i, ip)| format!("m{i}=http://{ip}:{PEER_PORT}"))
            .collect();
        let initial = initial.join(",");
        let _members: Vec<Proc> = pods
            .iter()
            .enumerate()
            .map(|(i, pod)| member(pod, i, &initial, &data))
            .collect();
        until("the etcd cluster is healthy", FAILOVER, async || {
            etcdctl(&pods[1], &ips, &["endpoint", "health"])
                .await
                .is_ok()
        })
        .await;
        put(&pods[1], &ips, "/weft/resources/web.yaml", &service("web")).await;

        let url: Vec<String> = ips.iter().map(|ip| format!("{ip}:{CLIENT_PORT}")).collect();
        let store = format!("etcd://{}/weft", url.join(","));
        let control = ControlPlane::start(&cluster, 3, Path::new(cluster::WEFT), Path::new(&store))
            .await
            .expect("control plane");
        until("the control plane serves the store", FAILOVER, async || {
            counts(&control).await.0 == 1
        })
        .await;
        let (status, body) = register(&control, "web-1").await;
        assert_eq!(status, 200, "{body}");

        // 1. The member the control plane uses is lost.
        let lost0 = pods[0].link_down().expect("m0 down");
        let asked = Instant::now();
        assert_eq!(counts(&control).await, (1, 1), "the last state, served");
        assert!(
            asked.elapsed() < Duration::from_secs(5),
            "GET /v1/store waited for etcd: {:?}",
            asked.elapsed()
        );
        put(
            &pods[1],
            &ips[1..],
            "/weft/resources/api.yaml",
            &service("api"),
        )
        .await;
        until(
            "the control plane resumes on another member",
            FAILOVER,
            async || counts(&control).await.0 == 2,
        )
        .await;
        let (status, body) = register(&control, "web-2").await;
        assert_eq!(status, 200, "registration with m0 lost: {body}");

        // 2. m0 restored, m1 lost: the quorum needs m0 again.
        lost0.up().expect("m0 up");
        until("m0 is healthy again", FAILOVER, async || {
            etcdctl(&pods[0], &ips[..1], &["endpoint", "health"])
                .await
                .is_ok()
        })
        .await;
        let lost1 = pods[1].link_down().expect("m1 down");
        let both = [ips[0], ips[2]];
        put(&pods[2], &both, "/weft/resources/db.yaml", &service("db")).await;
        until(
            "the control plane sees the write made through m0 and m2",
            FAILOVER,
            async || counts(&control).await.0 == 3,
        )
        .await;
        let (status, body) = register(&control, "web-3").await;
        assert_eq!(status, 200, "registration with m1 lost: {body}");
        assert_eq!(counts(&control).await, (3, 3));

        // 3. m2 lost too: no quorum. The last state is served; registrations fail, naming etcd.
        let lost2 = pods[2].link_down().expect("m2 down");
        assert_eq!(counts(&control).await, (3, 3), "the last state, served");
        let asked = Instant::now();
        let (status, body) = register(&control, "web-4").await;
        assert!(
            status >= 500,
            "a registration without quorum: {status} {body}"
        );
        assert!(body.contains("etcd"), "{body}");
        eprintln!(
            "without quorum a registration failed after {:?}: {body}",
            asked.elapsed()
        );

        // 4. Everything back: registrations succeed again.
        lost1.up().expect("m1 up");
        lost2.up().expect("m2 up");
        until(
            "a registration succeeds once etcd is whole",
            FAILOVER,
            async || register(&control, "web-4").await.0 == 200,
        )
        .await;
        assert_eq!(counts(&control).await, (3, 4));
        drop(control);
    }
    let _ = std::fs::remove_dir_all(&data);
    host.assert_unchanged();
}
