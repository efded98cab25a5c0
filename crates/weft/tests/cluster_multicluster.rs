//! Two linked clusters on the namespace testbed (root only; skipped locally without root,
//! failing under `CI=true`): east (node 0) and west (node 1), each with its own control plane,
//! sharing one trust anchor (`weft identity init --anchor-dir`). The hub lets east's pods reach
//! only west's gateway (4143, 4191) and west's control-plane API (8085): gateway mode is the only
//! way across. East links with the real CLI (`weft multicluster link`, run in east's control-plane
//! pod), and an unmodified program in an east pod calls `web-west` by name; west's policies (on
//! `web`, then on the gateway's own port) admit east's `frontend` only. A second test routes
//! the two clusters flat: remote-discovery and federated services, pod to pod.

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use support::cluster::{self, WEFT};
use support::pod_mesh::backend_pod;
use support::pods::{get, Answer, Backend, PodClient, PodNet};
use support::{eventually, TempDir};
use weft_testbed::mesh::{exec, ControlPlane, Workload};
use weft_testbed::{require_root, serial, Cluster, Root};

/// West's `web`, exported through the gateway.
const WEST_SERVICES: &str = "\
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: default
  labels: {mirror.linkerd.io/exported: \"true\"}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
";

/// East has no services of its own in this test.
const EAST_SERVICES: &str = "\
apiVersion: v1
kind: Service
metadata: {name: local, namespace: default}
spec:
  selector: {app: local}
  ports: [{name: http, port: 80, targetPort: http}]
";

const WEB_WEST: &str = "web-west.default.svc.cluster.local";

fn identity(name: &str) -> String {
    format!("{name}.default.serviceaccount.identity.weft.cluster.local")
}

/// `web`'s Server in west, open only to east's `frontend` identity.
fn only_frontend() -> String {
    format!(
        "\
apiVersion: policy.linkerd.io/v1beta3
kind: Server
metadata: {{name: web-http, namespace: default}}
spec:
  podSelector: {{matchLabels: {{app: web}}}}
  port: http
  proxyProtocol: HTTP/1
---
apiVersion: policy.linkerd.io/v1alpha1
kind: MeshTLSAuthentication
metadata: {{name: east-frontend, namespace: default}}
spec:
  identities: ['{}']
---
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {{name: web-authz, namespace: default}}
spec:
  targetRef: {{group: policy.linkerd.io, kind: Server, name: web-http}}
  requiredAuthenticationRefs:
  - {{group: policy.linkerd.io, kind: MeshTLSAuthentication, name: east-frontend}}
",
        identity("frontend")
    )
}

/// West's gateway Server (its inbound port, 4143), open only to east's `frontend` identity.
fn gateway_only_frontend() -> String {
    format!(
        "\
apiVersion: policy.linkerd.io/v1beta3
kind: Server
metadata: {{name: weft-gateway, namespace: weft-multicluster}}
spec: {{podSelector: {{matchLabels: {{app: weft-gateway}}}}, port: 4143}}
---
apiVersion: policy.linkerd.io/v1alpha1
kind: MeshTLSAuthentication
metadata: {{name: east-frontend, namespace: weft-multicluster}}
spec: {{identities: ['{}']}}
---
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {{name: gateway-authz, namespace: weft-multicluster}}
spec:
  targetRef: {{group: policy.linkerd.io, kind: Server, name: weft-gateway}}
  requiredAuthenticationRefs:
  - {{group: policy.linkerd.io, kind: MeshTLSAuthentication, name: east-frontend}}
",
        identity("frontend")
    )
}

/// Runs `weft ARGS` in the host namespace; its stdout, or a panic with its stderr.
fn weft(args: &[&str]) -> String {
    let out = std::process::Command::new(WEFT)
        .args(args)
        .output()
        .expect("run weft");
    assert!(
        out.status.success(),
        "weft {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `iptables ARGS` in the hub (where traffic between the nodes is routed).
fn hub_iptables(cluster: &Cluster, args: &[&str]) {
    let mut full = vec!["iptables", "-w"];
    full.extend_from_slice(args);
    cluster
        .hub()
        .exec(&full)
        .unwrap_or_else(|e| panic!("iptables {args:?} in the hub: {e:?}"));
}

/// A control plane's `GET path`, asked from inside its own pod.
async fn api_get(control: &ControlPlane, path: &str) -> String {
    let url = format!("http://{}{path}", control.api);
    api_try(control, path)
        .await
        .unwrap_or_else(|| panic!("GET {url} failed"))
}

/// [`api_get`], `None` for an answer that is not a success.
async fn api_try(control: &ControlPlane, path: &str) -> Option<String> {
    let url = format!("http://{}{path}", control.api);
    let out = exec(
        control.pod.netns().name(),
        &["curl", "-sf", "-m", "5", &url],
    )
    .await
    .ok()?;
    out.success.then_some(out.stdout)
}

/// `web-west`'s cluster IP in east, once the mirror exists.
async fn mirror_ip(east: &ControlPlane) -> Ipv4Addr {
    service_ip(east, "web-west").await
}

/// The cluster IP of east's Service `name`, once it exists.
async fn service_ip(east: &ControlPlane, name: &str) -> Ipv4Addr {
    eventually(
        &format!("east has {name}"),
        Duration::from_secs(30),
        || async {
            let services: serde_json::Value =
                serde_json::from_str(&api_get(east, "/v1/services").await).ok()?;
            services
                .as_array()?
                .iter()
                .find(|s| s["metadata"]["name"] == name)?["spec"]["clusterIP"]
                .as_str()?
                .parse()
                .ok()
        },
    )
    .await
}

/// Waits until west's control plane has workload `name` ready.
async fn ready_in_west(west: &ControlPlane, name: &str) {
    let path = format!("/v1/resources/externalworkloads/default/{name}");
    eventually(
        &format!("{name} is ready in west"),
        Duration::from_secs(30),
        || async {
            let w: serde_json::Value = serde_json::from_str(&api_try(west, &path).await?).ok()?;
            w["status"]["conditions"]
                .as_array()?
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
                .then_some(())
        },
    )
    .await;
}

/// East's only link, as `GET /v1/multicluster/links` shows it.
async fn link_state(east: &ControlPlane) -> serde_json::Value {
    let links: serde_json::Value =
        serde_json::from_str(&api_get(east, "/v1/multicluster/links").await).expect("links JSON");
    links[0].clone()
}

/// Waits until `client` gets an answer from `addr` (`web-west`) that `check` accepts; returns it.
async fn until(
    client: &PodClient,
    addr: SocketAddr,
    what: &str,
    check: impl Fn(&Answer) -> bool,
) -> Answer {
    until_at(client, addr, WEB_WEST, what, check).await
}

/// [`until`] for the service `authority` at `addr`.
async fn until_at(
    client: &PodClient,
    addr: SocketAddr,
    authority: &str,
    what: &str,
    check: impl Fn(&Answer) -> bool,
) -> Answer {
    eventually(what, Duration::from_secs(30), || async {
        let a = client.send(addr, get(authority, "/")).await;
        check(&a).then_some(a)
    })
    .await
}

struct Clusters {
    // Drop order: pods, then control planes, then the cluster.
    /// Pods with an app: (pod, the app while it runs).
    web: Vec<(Workload, Option<Backend>)>,
    gateway: Option<Workload>,
    clients: Vec<Workload>,
    east: ControlPlane,
    west: ControlPlane,
    west_store: std::path::PathBuf,
    east_store: std::path::PathBuf,
    cluster: Cluster,
    _tmp: TempDir,
}

impl Clusters {
    async fn start(name: &str, root: Root) -> Clusters {
        Self::start_with(name, root, WEST_SERVICES, EAST_SERVICES).await
    }

    async fn start_with(
        name: &str,
        root: Root,
        west_services: &str,
        east_services: &str,
    ) -> Clusters {
        let tmp = TempDir::new(name);
        let (west_ca, east_ca) = (tmp.path().join("west-ca"), tmp.path().join("east-ca"));
        let (w, e) = (west_ca.display().to_string(), east_ca.display().to_string());
        weft(&["identity", "init", "--dir", &w]);
        weft(&["identity", "init", "--dir", &e, "--anchor-dir", &w]);
        let west_store = cluster::temp_store(&format!("{name}-west"), west_services);
        let east_store = cluster::temp_store(&format!("{name}-east"), east_services);
        let cluster = Cluster::new(root, 2).expect("cluster");
        let weft_bin = Path::new(WEFT);
        let west = ControlPlane::start_with(
            &cluster,
            1,
            weft_bin,
            &west_store,
            &["--identity-dir", &w, "--cluster-name", "west"],
        )
        .await
        .expect("west's control plane");
        let east = ControlPlane::start_with(
            &cluster,
            0,
            weft_bin,
            &east_store,
            &["--identity-dir", &e, "--cluster-name", "east"],
        )
        .await
        .expect("east's control plane");
        Clusters {
            web: Vec::new(),
            gateway: None,
            clients: Vec::new(),
            east,
            west,
            west_store,
            east_store,
            cluster,
            _tmp: tmp,
        }
    }

    /// West's gateway pod (`weft run --multicluster-gateway`).
    async fn gateway(&mut self) -> Ipv4Addr {
        let flags = ["--namespace", "weft-multicluster", "--multicluster-gateway"];
        let w = cluster::workload(&self.cluster, 1, &self.west, "weft-gateway", &flags, &[]).await;
        let ip = w.ip;
        self.gateway = Some(w);
        ip
    }

    /// Another `web` pod in west.
    async fn web(&mut self, name: &str) {
        self.pod(1, name, "web").await;
    }

    /// A pod `name` labelled `app=APP` on `node` (0: east, 1: west), served by a [`Backend`].
    async fn pod(&mut self, node: usize, name: &str, app: &str) -> usize {
        let control = if node == 0 { &self.east } else { &self.west };
        let (pod, app) = backend_pod(&self.cluster, node, control, name, app, &[]).await;
        self.web.push((pod, Some(app)));
        self.web.len() - 1
    }

    /// A meshed pod `name` in east that only sleeps, and a client in it.
    async fn client(&mut self, name: &str) -> (PodClient, String) {
        let w =
            cluster::workload(&self.cluster, 0, &self.east, name, &[], &["sleep", "3600"]).await;
        let netns = w.netns().expect("netns");
        let client = PodClient::new(PodNet::open(&netns));
        self.clients.push(w);
        (client, netns)
    }

    /// East's pods reach west only at `gateway` (4143, 4191) and west's API; nothing from west
    /// reaches east's pods but answers.
    fn only_through_the_gateway(&self, gateway: Ipv4Addr) {
        let (east, west) = (
            self.cluster.node(0).pod_subnet(),
            self.cluster.node(1).pod_subnet(),
        );
        let (gw, api) = (gateway.to_string(), self.west.api.ip().to_string());
        hub_iptables(
            &self.cluster,
            &[
                "-A",
                "FORWARD",
                "-m",
                "conntrack",
                "--ctstate",
                "ESTABLISHED,RELATED",
                "-j",
                "ACCEPT",
            ],
        );
        hub_iptables(
            &self.cluster,
            &[
                "-A",
                "FORWARD",
                "-s",
                &east,
                "-d",
                &gw,
                "-p",
                "tcp",
                "-m",
                "multiport",
                "--dports",
                "4143,4191",
                "-j",
                "ACCEPT",
            ],
        );
        hub_iptables(
            &self.cluster,
            &[
                "-A", "FORWARD", "-s", &east, "-d", &api, "-p", "tcp", "--dport", "8085", "-j",
                "ACCEPT",
            ],
        );
        hub_iptables(
            &self.cluster,
            &["-A", "FORWARD", "-s", &east, "-d", &west, "-j", "DROP"],
        );
        hub_iptables(
            &self.cluster,
            &["-A", "FORWARD", "-s", &west, "-d", &east, "-j", "DROP"],
        );
    }

    /// `weft multicluster link --name west`, run in east's control-plane pod.
    async fn link(&self) {
        let (remote, local) = (self.west.api.to_string(), self.east.api.to_string());
        let out = exec(
            self.east.pod.netns().name(),
            &[
                WEFT,
                "multicluster",
                "link",
                "--name",
                "west",
                "--api-addr",
                &remote,
                "--local-api-addr",
                &local,
            ],
        )
        .await
        .expect("weft multicluster link");
        assert!(out.success, "link: {}\n{}", out.stderr, self.logs());
        assert!(
            out.stdout
                .contains("link.multicluster.linkerd.io/west created"),
            "{}",
            out.stdout
        );
    }

    fn logs(&self) -> String {
        let mut out = format!(
            "--- east control ---\n{}\n--- west control ---\n{}",
            self.east.proc.stderr(),
            self.west.proc.stderr()
        );
        if let Some(g) = &self.gateway {
            out.push_str(&format!("\n--- gateway ---\n{}", g.proc.stderr()));
        }
        for w in &self.clients {
            out.push_str(&format!("\n--- {} ---\n{}", w.name, w.proc.stderr()));
        }
        out
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn east_calls_west_through_its_gateway_with_identity_policy_and_failures() {
    let _serial = serial();
    let Some(root) = require_root(&["curl", "tshark"]) else {
        return;
    };
    let mut c = Clusters::start("mc-gateway", root).await;
    c.web("web-1").await;
    let gateway = c.gateway().await;
    c.only_through_the_gateway(gateway);
    c.link().await;
    let ip = mirror_ip(&c.east).await;
    let web_west = SocketAddr::from((ip, 80));
    // Started after the mirror exists: `weft run` writes the pod's hosts file from the Services.
    let (frontend, frontend_ns) = c.client("frontend").await;
    let (other, _) = c.client("other").await;

    // An unmodified program calls web-west by name; west's workload sees east's caller.
    let url = format!("http://{WEB_WEST}/");
    let out = eventually("curl web-west by name", Duration::from_secs(30), || async {
        let out = exec(&frontend_ns, &["curl", "-s", "-D-", "-m", "5", &url])
            .await
            .ok()?;
        out.stdout
            .contains("x-backend: web-1")
            .then_some(out.stdout)
    })
    .await;
    assert!(
        out.contains(&format!("x-client-id: {}", identity("frontend"))),
        "west's web must see east's frontend as its client:\n{out}\n{}",
        c.logs()
    );

    // mTLS end to end: what crosses the hub carries neither the request nor the answer.
    let tshark = weft_testbed::which("tshark").expect("tshark");
    let capture = c._tmp.path().join("between-clusters.pcap");
    let west_subnet = c.cluster.node(1).pod_subnet();
    let mut cap = std::process::Command::new("ip")
        .args(["netns", "exec", c.cluster.hub().name()])
        .arg(&tshark)
        .args(["-i", "br0", "-f", &format!("net {west_subnet}"), "-w"])
        .arg(&capture)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("tshark");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let marker = "/plaintext-marker-7f3a";
    for _ in 0..5 {
        let a = frontend.send(web_west, get(WEB_WEST, marker)).await;
        assert_eq!((a.status, a.backend.as_str()), (200, "web-1"), "{a:?}");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // SAFETY: kill(2) of our own child.
    unsafe { libc::kill(cap.id() as i32, libc::SIGINT) };
    let _ = cap.wait();
    let bytes = std::fs::read(&capture).expect("capture");
    assert!(
        bytes.len() > 1000,
        "the capture holds the traffic ({} bytes)",
        bytes.len()
    );
    for plain in [
        marker.as_bytes(),
        b"web-1".as_slice(),
        b"l5d-client-id".as_slice(),
    ] {
        assert!(
            !support::capture::contains(&bytes, plain),
            "{:?} crossed between the clusters in plaintext",
            String::from_utf8_lossy(plain)
        );
    }

    // West's policy admits east's frontend only.
    std::fs::write(c.west_store.join("policy.yaml"), only_frontend()).expect("policy");
    until(&other, web_west, "west refuses east's other", |a| {
        a.status == 403
    })
    .await;
    let denied = other.send(web_west, get(WEB_WEST, "/")).await;
    assert!(!denied.proxy_error.is_empty(), "{denied:?}");
    let allowed = frontend.send(web_west, get(WEB_WEST, "/")).await;
    assert_eq!(allowed.status, 200, "{allowed:?}\n{}", c.logs());
    assert_eq!(allowed.client_id, identity("frontend"));
    // And so does the gateway's own policy: `other` is refused at west's edge.
    let gateway_policy = c.west_store.join("gateway-policy.yaml");
    std::fs::write(gateway_policy, gateway_only_frontend()).expect("gateway policy");
    until(
        &other,
        web_west,
        "west's gateway refuses east's other",
        |a| a.status == 403 && a.proxy_error.contains("server:weft-gateway"),
    )
    .await;
    let allowed = frontend.send(web_west, get(WEB_WEST, "/")).await;
    assert_eq!(allowed.status, 200, "{allowed:?}\n{}", c.logs());

    // West scales web: east's calls reach the new pod through the same gateway (the gateway's
    // balancer in west picks it up; east's mirror does not change).
    c.web("web-2").await;
    ready_in_west(&c.west, "web-2").await;
    until(&frontend, web_west, "a call lands on web-2", |a| {
        a.backend == "web-2"
    })
    .await;

    // The link is cut: east keeps the last mirrored state and calls still go through; restored,
    // it follows west again.
    let (east_cp, west_api) = (c.east.api.ip().to_string(), c.west.api.ip().to_string());
    hub_iptables(
        &c.cluster,
        &[
            "-I", "FORWARD", "1", "-s", &east_cp, "-d", &west_api, "-j", "DROP",
        ],
    );
    eventually(
        "east sees the link down",
        Duration::from_secs(60),
        || async { (link_state(&c.east).await["connected"] == false).then_some(()) },
    )
    .await;
    let kept = frontend.send(web_west, get(WEB_WEST, "/")).await;
    assert_eq!(kept.status, 200, "a lost link keeps the mirror: {kept:?}");
    hub_iptables(
        &c.cluster,
        &[
            "-D", "FORWARD", "-s", &east_cp, "-d", &west_api, "-j", "DROP",
        ],
    );
    eventually(
        "east sees the link up again",
        Duration::from_secs(60),
        || async { (link_state(&c.east).await["connected"] == true).then_some(()) },
    )
    .await;

    // West's gateway dies: calls to web-west fail fast, with the proxy's error.
    drop(c.gateway.take());
    let failed = eventually(
        "calls fail once the gateway is gone",
        Duration::from_secs(30),
        || async {
            let a = frontend.send(web_west, get(WEB_WEST, "/")).await;
            (a.status != 200).then_some(a)
        },
    )
    .await;
    assert!(
        !failed.proxy_error.is_empty() && failed.status >= 500,
        "a dead gateway fails with l5d-proxy-error: {failed:?}"
    );
    println!(
        "with the gateway gone a call failed after {:?}: {} {}",
        failed.elapsed, failed.status, failed.proxy_error
    );
    assert!(
        failed.elapsed < Duration::from_secs(10),
        "a dead gateway must fail calls fast, not hang: {failed:?}"
    );
    eventually(
        "east's probe sees the gateway dead",
        Duration::from_secs(120),
        || async { (link_state(&c.east).await["gatewayAlive"] == false).then_some(()) },
    )
    .await;
}

/// West exports `web` through its gateway, `api` pod to pod; both clusters have a `db` that is a
/// federated member.
const FLAT_WEST: &str = "\
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: default
  labels: {mirror.linkerd.io/exported: \"true\"}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata:
  name: api
  namespace: default
  labels: {mirror.linkerd.io/exported: remote-discovery}
spec:
  selector: {app: api}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata:
  name: db
  namespace: default
  labels: {mirror.linkerd.io/federated: member}
spec:
  selector: {app: db}
  ports: [{name: http, port: 80, targetPort: http}]
";

/// East's member configures the federated service's failure accrual (the mirror copies its
/// client-policy annotations onto `db-federated`).
const FLAT_EAST: &str = "\
apiVersion: v1
kind: Service
metadata:
  name: db
  namespace: default
  labels: {mirror.linkerd.io/federated: member}
  annotations:
    balancer.linkerd.io/failure-accrual: consecutive
    balancer.linkerd.io/failure-accrual-consecutive-max-failures: '2'
spec:
  selector: {app: db}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: default}
spec:
  selector: {app: api}
  ports: [{name: http, port: 80, targetPort: http}]
";

/// East's own `api` sends a tenth of its calls to west's (a migration, or a failover drill).
const API_SPLIT: &str = "\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api-split, namespace: default}
spec:
  parentRefs: [{group: core, kind: Service, name: api, port: 80}]
  rules:
  - backendRefs:
    - {name: api, port: 80, weight: 90}
    - {name: api-west, port: 80, weight: 10}
";

/// Retries on `db-federated`, as a route on the generated Service.
const DB_RETRIES: &str = "\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: db-federated
  namespace: default
  annotations:
    retry.linkerd.io/http: 5xx
    retry.linkerd.io/limit: '3'
spec:
  parentRefs: [{group: core, kind: Service, name: db-federated, port: 80}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /}}]
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flat_clusters_discover_pod_to_pod_and_a_federated_service_rides_out_west_going_down() {
    let _serial = serial();
    let Some(root) = require_root(&["curl"]) else {
        return;
    };
    let mut c = Clusters::start_with("mc-flat", root, FLAT_WEST, FLAT_EAST).await;
    c.web("web-1").await;
    c.pod(1, "api-1", "api").await;
    let west_db = c.pod(1, "db-w", "db").await;
    c.pod(0, "db-e", "db").await;
    c.pod(0, "api-e", "api").await;
    c.gateway().await;
    c.link().await;
    let web_west = SocketAddr::from((service_ip(&c.east, "web-west").await, 80));
    let api_west = SocketAddr::from((service_ip(&c.east, "api-west").await, 80));
    let db_federated = SocketAddr::from((service_ip(&c.east, "db-federated").await, 80));
    let services = api_get(&c.east, "/v1/services").await;
    assert!(
        services.contains("failure-accrual-consecutive-max-failures"),
        "db-federated takes its local member's client policy: {services}"
    );
    let (client, client_ns) = c.client("frontend").await;
    let api = "api-west.default.svc.cluster.local";
    let db = "db-federated.default.svc.cluster.local";

    // Remote discovery: east's proxy reaches west's pod directly, with its own identity.
    let a = until_at(&client, api_west, api, "api-west answers", |a| {
        a.status == 200
    })
    .await;
    assert_eq!(a.backend, "api-1");
    assert_eq!(
        a.client_id,
        identity("frontend"),
        "pod to pod: no gateway in between"
    );

    // West scales api: east's endpoints follow (the mirror's generated workload for api-2 is in
    // force in east), and calls reach the new pod.
    c.pod(1, "api-2", "api").await;
    ready_in_west(&c.west, "api-2").await;
    let scaled = Instant::now();
    eventually("east mirrors api-2", Duration::from_secs(30), || async {
        let workloads = api_try(&c.east, "/v1/resources/externalworkloads").await?;
        workloads.contains("api-2").then_some(())
    })
    .await;
    println!(
        "api-2 ready in west was an endpoint in east after {:?}",
        scaled.elapsed()
    );
    until_at(&client, api_west, api, "a call lands on api-2", |a| {
        a.backend == "api-2"
    })
    .await;

    // A route on east's `api` splits 90/10 between it and west's `api`.
    std::fs::write(c.east_store.join("split.yaml"), API_SPLIT).expect("split");
    let api_east = SocketAddr::from((service_ip(&c.east, "api").await, 80));
    let local_api = "api.default.svc.cluster.local";
    until_at(
        &client,
        api_east,
        local_api,
        "the split reaches west",
        |a| a.backend.starts_with("api-") && a.backend != "api-e",
    )
    .await;
    let split = client
        .run(api_east, 1, 200, move |_| get(local_api, "/"))
        .await;
    assert_eq!(split.failures().0, 0, "{:?}", split.failures().1);
    let by = split.by_backend();
    let west_share = split.total() - by.get("api-e").copied().unwrap_or(0);
    println!("api's 90/10 split sent {west_share} of 200 calls to west: {by:?}");
    assert!(
        (5..=45).contains(&west_share),
        "a 10% weight sends about 20 of 200 calls to west, not {west_share}: {by:?}"
    );

    // The federated service balances over both clusters' members.
    let seen = std::sync::Mutex::new(std::collections::BTreeSet::new());
    eventually(
        "db-federated reaches both clusters",
        Duration::from_secs(30),
        || async {
            let a = client.send(db_federated, get(db, "/")).await;
            let mut seen = seen.lock().unwrap();
            if a.status == 200 {
                seen.insert(a.backend);
            }
            (seen.len() == 2).then_some(())
        },
    )
    .await;

    // West goes down under load — its db member crashes, its gateway dies: the federated
    // service keeps answering from east with no failed request (retries on 5xx), while calls
    // through the dead gateway fail fast with the proxy's error.
    std::fs::write(c.east_store.join("routes.yaml"), DB_RETRIES).expect("routes");
    let status = eventually(
        "the route on db-federated is accepted",
        Duration::from_secs(30),
        || async {
            let route = api_try(&c.east, "/v1/resources/httproutes/default/db-federated").await?;
            route.contains("\"Accepted\"").then_some(route)
        },
    )
    .await;
    assert!(status.contains("\"ResolvedRefs\""), "{status}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let load = {
        let client = PodClient::new(PodNet::open(&client_ns));
        tokio::spawn(async move {
            client
                .run_paced(db_federated, 300, 30, move |_| get(db, "/"))
                .await
        })
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    c.web[west_db].1 = None;
    drop(c.gateway.take());
    let tally = load.await.expect("load");
    let (failed, examples) = tally.failures();
    assert_eq!(
        failed,
        0,
        "db-federated failed {failed} of {} requests while west went down, e.g. {examples:?}\n{}",
        tally.total(),
        c.logs()
    );
    let after = tally.by_backend();
    assert!(after.contains_key("db-e"), "{after:?}");
    let dead = eventually(
        "web-west fails once its gateway is gone",
        Duration::from_secs(30),
        || async {
            let a = client.send(web_west, get(WEB_WEST, "/")).await;
            (a.status != 200).then_some(a)
        },
    )
    .await;
    assert!(!dead.proxy_error.is_empty(), "{dead:?}");
}
