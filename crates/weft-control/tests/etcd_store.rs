//! The etcd store against real etcd processes: the same resource files give the same answers
//! from the file store, the etcd store and the Kubernetes store (one table over the three; for
//! the Kubernetes store each file's documents are objects of the stand-in API server, changed
//! through its watches), and a store keeps serving its last state while etcd is gone and picks
//! up what changed once it is back.

mod common;

use common::etcd::Etcd;
use common::kube_store::empty_api;
use common::stores::{served, Backend};
use common::{http_json, LIMIT};
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

/// How long a test waits for a store to reach an expected state (events, not timing: a bound).
const SETTLE: Duration = Duration::from_secs(20);

fn service(name: &str, port: u32) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\n\
         spec: {{selector: {{app: {name}}}, ports: [{{name: http, port: {port}}}]}}\n"
    )
}

const WORKLOAD: &str = "\
apiVersion: workload.linkerd.io/v1beta1
kind: ExternalWorkload
metadata: {name: web-1, namespace: default, labels: {app: web}}
spec:
  workloadIPs: [{ip: 127.0.0.1}]
  ports: [{name: http, port: 18080}]
";

const ROUTE: &str = "\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: split, namespace: default}
spec:
  parentRefs: [{group: core, kind: Service, name: web, port: 80}]
  rules:
  - backendRefs: [{name: web, port: 80}]
";

const SERVER: &str = "\
apiVersion: policy.linkerd.io/v1beta3
kind: Server
metadata: {name: web-http, namespace: default}
spec:
  podSelector: {matchLabels: {app: web}}
  port: http
  proxyProtocol: HTTP/1
";

async fn store_status(api: SocketAddr) -> Value {
    let (status, mut body) = http_json(api, "GET", "/v1/store", "").await;
    assert_eq!(status, 200, "{body}");
    // How many states each store went through depends on how changes were batched (a poll
    // may see two writes at once); what is in force must not. Each control plane leads
    // itself (its own instance name).
    let object = body.as_object_mut().expect("an object");
    object.remove("generation");
    object.remove("leader");
    body
}

/// Waits until the store's status satisfies `done` (bounded by [`SETTLE`]).
async fn settle(api: SocketAddr, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + SETTLE;
    loop {
        let status = store_status(api).await;
        if done(&status) {
            return status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not reached within {SETTLE:?}; the store says {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn counts(services: u64, workloads: u64, errors: usize) -> impl Fn(&Value) -> bool {
    move |s| {
        s["services"] == services
            && s["workloads"] == workloads
            && s["errors"].as_array().map_or(0, Vec::len) == errors
    }
}

/// (what, writes, expected (services, workloads, errors), a text the status then contains).
type Step = (
    &'static str,
    Vec<(&'static str, Option<String>)>,
    (u64, u64, usize),
    &'static str,
);

/// (method, path, body, expected status, then (services, workloads, errors)).
type Call = (&'static str, &'static str, String, u16, (u64, u64, usize));

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_etcd_and_kubernetes_stores_answer_the_same() {
    let Some(etcd) = Etcd::start("same-answers").await else {
        return;
    };
    let api = empty_api().await;
    let backends = [
        Backend::Dir(common::temp_dir("same-answers")),
        Backend::Etcd {
            client: etcd.client(),
            prefix: "/weft".into(),
        },
        Backend::Kube {
            kubeconfig: api.kubeconfig(&common::temp_dir("same-answers-kube")),
            api: api.clone(),
            files: Mutex::default(),
            cluster_ips: Mutex::default(),
        },
    ];
    let mut planes = Vec::new();
    for b in &backends {
        let config = weft_control::Config {
            store: b.location(&etcd),
            ..common::config(&common::temp_dir("unused"))
        };
        planes.push(common::start(config).await);
    }

    let bad_port = service("api", 70000);
    let steps: Vec<Step> = vec![
        (
            "several kinds and one invalid document",
            vec![
                (
                    "services.yaml",
                    Some(format!("{}---\n{}", service("web", 80), WORKLOAD)),
                ),
                ("routes.yaml", Some(ROUTE.to_string())),
                ("policy.yaml", Some(SERVER.to_string())),
                ("api.yaml", Some(bad_port.clone())),
            ],
            (1, 1, 1),
            "got 70000",
        ),
        (
            "a change",
            vec![(
                "services.yaml",
                Some(format!("{}---\n{}", service("web", 8080), WORKLOAD)),
            )],
            (1, 1, 1),
            "Service default/web has no port 80",
        ),
        (
            "the fix",
            vec![("api.yaml", Some(service("api", 81)))],
            (2, 1, 0),
            "\"services\":2",
        ),
        (
            "a bad edit keeps the last good version",
            vec![("api.yaml", Some(bad_port.clone()))],
            (2, 1, 1),
            "got 70000",
        ),
        (
            "an edit that is not YAML keeps the last good version (text stores only)",
            vec![(
                "api.yaml",
                Some(format!("{}garbage: [", service("api", 82))),
            )],
            (2, 1, 1),
            "invalid YAML",
        ),
        (
            "a removal",
            vec![("api.yaml", None)],
            (1, 1, 0),
            "\"services\":1",
        ),
    ];
    for (what, writes, (services, workloads, errors), needle) in steps {
        let mut answers = Vec::new();
        for (b, cp) in backends.iter().zip(&planes) {
            if !writes.iter().all(|(_, text)| b.holds(text.as_deref())) {
                continue;
            }
            for (file, text) in &writes {
                b.write(file, text.as_deref()).await;
            }
            let expected = counts(services, workloads, errors);
            let mut s = settle(cp.api_addr, what, |s| {
                expected(s) && s.to_string().contains(needle)
            })
            .await;
            // The index follows the store's status, and the status may reach the expected
            // counts before every kind is in (the Kubernetes store watches each kind apart): a
            // store after the first is given until SETTLE to serve what the first does, status
            // included (a disagreement that lasts still fails below).
            let deadline = tokio::time::Instant::now() + SETTLE;
            let answer = loop {
                let answer = b.normalise(&format!("{s}\n{}", served(cp).await));
                match answers.first() {
                    Some(first) if *first != answer && tokio::time::Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        s = store_status(cp.api_addr).await;
                    }
                    _ => break answer,
                }
            };
            answers.push(answer);
        }
        // Every store took part, but the Kubernetes store in what it cannot hold.
        assert!(answers.len() >= backends.len() - 1, "{what}: {answers:#?}");
        for other in &answers[1..] {
            // Line by line (status, Destination, outbound, inbound, resources): the first
            // line that differs is the answer that differs.
            for (a, b) in answers[0].lines().zip(other.lines()) {
                assert_eq!(a, b, "{what}: the stores disagree");
            }
        }
    }
    let first = store_status(planes[0].api_addr).await;
    assert!(
        first["policies"].as_array().is_some_and(|p| !p.is_empty()),
        "{first}"
    );

    // Registrations behave the same on the stores that take them (not the Kubernetes store:
    // pods are its workloads): accepted and applied, a duplicate of a file-defined workload
    // refused and undone, deregistration, and a second deregistration refused.
    let doc = |name: &str| {
        serde_json::json!({
            "apiVersion": "workload.linkerd.io/v1beta1",
            "kind": "ExternalWorkload",
            "metadata": {"name": name, "namespace": "default", "labels": {"app": "web"}},
            "spec": {"workloadIPs": [{"ip": "127.0.0.2"}]},
        })
        .to_string()
    };
    let calls: [Call; 4] = [
        (
            "PUT",
            "/v1/workloads/default/reg-1",
            doc("reg-1"),
            200,
            (1, 2, 0),
        ),
        (
            "PUT",
            "/v1/workloads/default/web-1",
            doc("web-1"),
            400,
            (1, 2, 0),
        ),
        (
            "DELETE",
            "/v1/workloads/default/reg-1",
            String::new(),
            200,
            (1, 1, 0),
        ),
        (
            "DELETE",
            "/v1/workloads/default/reg-1",
            String::new(),
            404,
            (1, 1, 0),
        ),
    ];
    for (method, path, body, code, (services, workloads, errors)) in calls {
        let mut answers = Vec::new();
        for (b, cp) in backends.iter().zip(&planes).take(2) {
            let (status, reply) = http_json(cp.api_addr, method, path, &body).await;
            assert_eq!(status, code, "{method} {path}: {reply}");
            // Applied before the answer: no waiting here.
            let s = store_status(cp.api_addr).await;
            assert!(
                counts(services, workloads, errors)(&s),
                "{method} {path}: {s}"
            );
            let mut reply = reply;
            if let Some(r) = reply.as_object_mut() {
                // Tokens are random.
                r.remove("token");
            }
            answers.push(b.normalise(&format!("{reply} {s}")));
        }
        assert_eq!(
            answers[0], answers[1],
            "{method} {path}: the stores disagree"
        );
        if code == 400 {
            assert!(
                answers[0].contains("duplicate ExternalWorkload default/web-1"),
                "{}",
                answers[0]
            );
        }
    }
    for cp in planes {
        cp.shutdown().await.expect("shutdown");
    }
    api.assert_known();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_lost_and_back_under_a_running_store() {
    let Some(mut etcd) = Etcd::start("restart").await else {
        return;
    };
    let client = etcd.client();
    client
        .put(b"/weft/resources/web.yaml", service("web", 80).as_bytes())
        .await
        .expect("put");
    let cp = common::start(weft_control::Config {
        store: etcd.store("weft"),
        ..common::config(&common::temp_dir("unused"))
    })
    .await;
    settle(cp.api_addr, "the first list", counts(1, 0, 0)).await;

    etcd.kill();
    // The last state keeps being served: the store, the services, Destination.
    let s = store_status(cp.api_addr).await;
    assert!(counts(1, 0, 0)(&s), "{s}");
    let (status, services) = http_json(cp.api_addr, "GET", "/v1/services", "").await;
    assert_eq!(status, 200);
    assert!(services.to_string().contains("\"web\""), "{services}");
    let mut stream = common::get(cp.grpc_addr, "web.default.svc.cluster.local:80")
        .await
        .expect("Destination.Get while etcd is down");
    let first = tokio::time::timeout(LIMIT, common::next(&mut stream))
        .await
        .expect("an answer while etcd is down");
    drop(first);
    // A registration cannot be stored now: refused with the reason, not hung.
    let doc = serde_json::json!({
        "apiVersion": "workload.linkerd.io/v1beta1",
        "kind": "ExternalWorkload",
        "metadata": {"labels": {"app": "web"}},
        "spec": {"workloadIPs": [{"ip": "127.0.0.1"}]},
    });
    let (status, body) = http_json(
        cp.api_addr,
        "PUT",
        "/v1/workloads/default/web-1",
        &doc.to_string(),
    )
    .await;
    assert_eq!(status, 500, "{body}");
    assert!(body.to_string().contains("etcd"), "{body}");

    // Back: the watch resumes, and changes made since are picked up.
    etcd.restart().await;
    client
        .put(b"/weft/resources/api.yaml", service("api", 81).as_bytes())
        .await
        .expect("put after the restart");
    settle(cp.api_addr, "a change after the restart", counts(2, 0, 0)).await;
    let (status, body) = http_json(
        cp.api_addr,
        "PUT",
        "/v1/workloads/default/web-1",
        &doc.to_string(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    settle(cp.api_addr, "the registration", counts(2, 1, 0)).await;
    cp.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn unreachable_etcd_at_start_is_a_precise_error() {
    // A port nothing listens on: refused at once, so the bounded wait is what ends it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let target =
        weft_control::etcd::Target::parse(&format!("etcd://127.0.0.1:{port}/weft")).expect("url");
    let client = weft_control::etcd::Client::new(&target.endpoints).expect("client");
    let (_tx, shutdown) = tokio::sync::watch::channel(false);
    let defaults = weft_control::resource::Defaults {
        trust_domain: "cluster.local".into(),
        control_namespace: "weft".into(),
    };
    let Err(e) = weft_control::store::etcd::start(
        client,
        &target,
        defaults,
        Duration::from_secs(1),
        shutdown,
    )
    .await
    else {
        panic!("started without etcd");
    };
    let e = e.to_string();
    assert!(
        e.starts_with(&format!(
            "etcd://127.0.0.1:{port}/weft: not reachable within 1s: etcd 127.0.0.1:{port}:"
        )),
        "{e}"
    );
}

fn unaddressed(names: &[&str]) -> std::sync::Arc<weft_control::resource::State> {
    use weft_control::resource::{Service, ServicePort, State, TargetPort};
    let services = names
        .iter()
        .map(|name| {
            let s = Service {
                name: name.to_string(),
                namespace: "default".into(),
                labels: Default::default(),
                annotations: Default::default(),
                selector: [("app".to_string(), name.to_string())].into(),
                cluster_ip: None,
                ports: vec![ServicePort {
                    name: None,
                    port: 80,
                    target_port: TargetPort::Number(80),
                    app_protocol: None,
                }],
                opaque_ports: Default::default(),
            };
            (("default".to_string(), name.to_string()), s)
        })
        .collect();
    std::sync::Arc::new(State {
        services,
        ..Default::default()
    })
}

fn ips(state: &weft_control::resource::State) -> Vec<(String, Option<std::net::IpAddr>)> {
    state
        .services
        .values()
        .map(|s| (s.name.clone(), s.cluster_ip))
        .collect()
}

#[tokio::test]
async fn replicas_never_hand_out_one_cluster_ip_twice() {
    use weft_control::service_ips::ServiceIps;
    let Some(etcd) = Etcd::start("service-ips").await else {
        return;
    };
    let target = weft_control::etcd::Target::parse(&format!("etcd://{}/weft", etcd.endpoint()))
        .expect("target");
    // Two usable addresses.
    let range = "198.19.128.0/30".parse().expect("range");
    let mut a = ServiceIps::etcd(range, etcd.client(), &target);
    let mut b = ServiceIps::etcd(range, etcd.client(), &target);

    // A sees two Services and takes both addresses; B, behind, sees only a third one: the
    // range is full for it, where an allocator of its own would have reused one of A's.
    let seen_by_a = a.apply_shared(&unaddressed(&["api", "web"])).await;
    let taken: Vec<_> = ips(&seen_by_a)
        .into_iter()
        .filter_map(|(_, ip)| ip)
        .collect();
    assert_eq!(taken.len(), 2, "{:?}", ips(&seen_by_a));
    let seen_by_b = b.apply_shared(&unaddressed(&["db"])).await;
    assert_eq!(ips(&seen_by_b), [("db".to_string(), None)]);

    // B catching up gets A's addresses, as does a fresh allocator (a restart).
    let all = unaddressed(&["api", "web"]);
    assert_eq!(ips(&*b.apply_shared(&all).await), ips(&seen_by_a));
    let mut restarted = ServiceIps::etcd(range, etcd.client(), &target);
    assert_eq!(ips(&*restarted.apply_shared(&all).await), ips(&seen_by_a));
    assert!(etcd
        .client()
        .get(b"/weft/allocations/service-ips")
        .await
        .expect("get")
        .is_some_and(|kv| String::from_utf8_lossy(&kv.value).contains("default/web")));
}

#[tokio::test]
async fn only_the_leader_frees_the_address_of_a_service_gone_for_a_while() {
    use weft_control::leader::Leadership;
    use weft_control::service_ips::ServiceIps;
    let Some(etcd) = Etcd::start("service-ips-free").await else {
        return;
    };
    let target = weft_control::etcd::Target::parse(&format!("etcd://{}/weft", etcd.endpoint()))
        .expect("target");
    let leads = |this_replica| {
        tokio::sync::watch::channel(Leadership {
            leader: "a".into(),
            this_replica,
        })
        .1
    };
    let grace = Duration::from_millis(300);
    // Two usable addresses.
    let range = "198.19.128.0/30".parse().expect("range");
    let mut a = ServiceIps::etcd(range, etcd.client(), &target).with_leader(leads(true), grace);
    let mut b = ServiceIps::etcd(range, etcd.client(), &target).with_leader(leads(false), grace);
    let allocated = || async {
        let kv = etcd
            .client()
            .get(b"/weft/allocations/service-ips")
            .await
            .expect("get")
            .expect("allocations");
        String::from_utf8_lossy(&kv.value).into_owned()
    };

    let both = a.apply_shared(&unaddressed(&["api", "web"])).await;
    let api_ip = ips(&both)[0].1.expect("api has an address");
    // `api` deleted: B (a follower) keeps its address, and so does the leader within the grace.
    b.apply_shared(&unaddressed(&["web"])).await;
    a.apply_shared(&unaddressed(&["web"])).await;
    assert!(
        allocated().await.contains("default/api"),
        "{}",
        allocated().await
    );
    assert!(a.frees_pending() && !b.frees_pending());
    tokio::time::sleep(grace * 2).await;
    b.apply_shared(&unaddressed(&["web"])).await;
    assert!(
        allocated().await.contains("default/api"),
        "a follower freed it"
    );
    a.apply_shared(&unaddressed(&["web"])).await;
    assert!(
        !allocated().await.contains("default/api"),
        "{}",
        allocated().await
    );
    assert!(!a.frees_pending());
    // The range had room for two: a new Service gets the freed address.
    let with_db = b.apply_shared(&unaddressed(&["db", "web"])).await;
    assert_eq!(ips(&with_db)[0], ("db".to_string(), Some(api_ip)));
}

#[tokio::test]
async fn a_watch_behind_compaction_lists_again() {
    use weft_control::etcd::watch::{mirror, Update};
    let Some(etcd) = Etcd::start("compaction").await else {
        return;
    };
    let client = etcd.client();
    let listed = client.put(b"/p/a", b"1").await.expect("put");
    client.put(b"/p/b", b"2").await.expect("put");
    client.put(b"/p/c", b"3").await.expect("put");
    let (_, latest) = client.delete(b"/p/a").await.expect("delete");
    client.compact(latest).await.expect("compact");

    // A mirror that last saw `listed` cannot resume from there: it hands on the whole prefix
    // as it is now, then follows it again.
    let (_stop, shutdown) = tokio::sync::watch::channel(false);
    let (mut updates, _task) = mirror(client.clone(), b"/p/".to_vec(), listed, shutdown);
    match next(&mut updates).await {
        Update::Reset { kvs, revision } => {
            let keys: Vec<_> = kvs.iter().map(|kv| kv.key.clone()).collect();
            assert_eq!(keys, [b"/p/b".to_vec(), b"/p/c".to_vec()]);
            assert_eq!(revision, latest);
        }
        other => panic!("expected a new list, got {other:?}"),
    }
    let written = client.put(b"/p/d", b"4").await.expect("put");
    match next(&mut updates).await {
        Update::Events { events, revision } => {
            assert_eq!(revision, written);
            assert_eq!(events.len(), 1);
        }
        other => panic!("expected the new key, got {other:?}"),
    }
}

async fn next(
    updates: &mut tokio::sync::mpsc::Receiver<weft_control::etcd::watch::Update>,
) -> weft_control::etcd::watch::Update {
    tokio::time::timeout(SETTLE, updates.recv())
        .await
        .expect("an update")
        .expect("the mirror runs")
}

#[tokio::test]
async fn a_dead_endpoint_fails_over_to_the_next() {
    let Some(etcd) = Etcd::start("failover").await else {
        return;
    };
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .to_string();
    let client = weft_control::etcd::Client::new(&[dead.clone(), etcd.endpoint()]).expect("client");
    let written = client
        .put(b"/f/k", b"v")
        .await
        .expect("put through the live endpoint");
    let kv = client.get(b"/f/k").await.expect("get").expect("the key");
    assert_eq!((kv.value.as_slice(), kv.mod_revision), (&b"v"[..], written));
    // A watch too, and a store on such an address starts.
    let mut watch = client.watch(b"/f/", written + 1).await.expect("watch");
    client.put(b"/f/k", b"w").await.expect("put");
    let resp = tokio::time::timeout(SETTLE, watch.next())
        .await
        .expect("an event")
        .expect("the watch runs");
    assert_eq!(resp.events.len(), 1);
    let cp = common::start(weft_control::Config {
        store: format!("etcd://{dead},{}/weft", etcd.endpoint())
            .parse()
            .expect("address"),
        ..common::config(&common::temp_dir("unused"))
    })
    .await;
    cp.shutdown().await.expect("shutdown");
}
