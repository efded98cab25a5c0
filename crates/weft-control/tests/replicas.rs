//! Control-plane replicas on one real etcd: one leader among them (an etcd lease), handed over
//! when it stops; the leader's once-only work (resource status written into the store, spent
//! issuance records pruned); and certificate issuance from two replicas at once for one
//! workload, counted in the shared issuance records every replica and `weft identity` read.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::etcd::Etcd;
use common::identity::{certify, csr_for, register, SERVICES, WEB_ID};
use common::{http_json, temp_dir};
use serde_json::Value;
use x509_parser::prelude::{FromDer, X509Certificate};

/// How long a replica may take to see what another did (watches, a lease of 6 s to expire).
const SETTLE: Duration = Duration::from_secs(30);

const ROUTE: &str = "\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web-route, namespace: default}
spec:
  parentRefs: [{group: core, kind: Service, name: web, port: 8080}]
  rules:
  - backendRefs: [{name: web, port: 8080}]
";

async fn replica(etcd: &Etcd, identity_dir: Option<&Path>) -> weft_control::Running {
    common::start(weft_control::Config {
        store: etcd.store("weft"),
        identity_dir: identity_dir.map(Path::to_path_buf),
        ..common::config(&temp_dir("replicas-unused"))
    })
    .await
}

/// Polls `f` until it returns `Some` (bounded by [`SETTLE`]).
async fn until<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + SETTLE;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {SETTLE:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `GET /v1/store`'s `leader` of one replica.
async fn leadership(api: SocketAddr) -> (String, bool) {
    let (status, v) = http_json(api, "GET", "/v1/store", "").await;
    assert_eq!(status, 200, "{v}");
    (
        v["leader"]["leader"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        v["leader"]["this_replica"].as_bool().expect("this_replica"),
    )
}

/// Waits until every replica names the same leader and exactly one of them is it; returns
/// the leader's index.
async fn one_leader(apis: &[SocketAddr]) -> usize {
    until("one leader every replica agrees on", async || {
        let mut names = BTreeSet::new();
        let mut leaders = Vec::new();
        for (i, api) in apis.iter().enumerate() {
            let (name, this) = leadership(*api).await;
            names.insert(name);
            if this {
                leaders.push(i);
            }
        }
        (names.len() == 1 && !names.contains("") && leaders.len() == 1).then(|| leaders[0])
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_writes_status_prunes_spent_records_and_hands_over_when_it_stops() {
    let Some(etcd) = Etcd::start("leader").await else {
        return;
    };
    let client = etcd.client();
    client
        .put(b"/weft/resources/services.yaml", SERVICES.as_bytes())
        .await
        .expect("put");
    // A record of a control plane long gone whose leaves have all expired, and one still live.
    let spent =
        br#"{"instance":"cp-gone","issuing_anchor":"a","updated":1,"anchors":{"a":[[1,3]]}}"#;
    let live = format!(
        r#"{{"instance":"cp-live","issuing_anchor":"a","updated":1,"anchors":{{"a":[[{},3]]}}}}"#,
        weft_control::clock::unix_now() + 3600
    );
    client
        .put(b"/weft/identity/issued/cp-gone", spent)
        .await
        .expect("put");
    client
        .put(b"/weft/identity/issued/cp-live", live.as_bytes())
        .await
        .expect("put");
    let ca_dir = temp_dir("leader-ca").join("ca");
    let generated = weft_control::ca::generate("cluster.local", "weft").unwrap();
    weft_control::ca::write_dir(&ca_dir, &generated).unwrap();

    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(Some(replica(&etcd, Some(&ca_dir)).await));
    }
    let apis: Vec<SocketAddr> = replicas.iter().flatten().map(|r| r.api_addr).collect();
    let first = one_leader(&apis).await;

    // The leader pruned the spent record and kept the live one.
    until("the spent issuance record pruned", async || {
        client
            .get(b"/weft/identity/issued/cp-gone")
            .await
            .expect("get")
            .is_none()
            .then_some(())
    })
    .await;
    assert!(client
        .get(b"/weft/identity/issued/cp-live")
        .await
        .expect("get")
        .is_some());

    // A route's status lands in the store, as GET /v1/store shows it.
    client
        .put(b"/weft/resources/route.yaml", ROUTE.as_bytes())
        .await
        .expect("put");
    let key = b"/weft/status/httproute/default/web-route";
    let written: Value = until("the route's status key", async || {
        let kv = client.get(key).await.expect("get")?;
        serde_json::from_slice(&kv.value).ok()
    })
    .await;
    assert_eq!(written["name"], "web-route");
    let accepted = &written["parents"][0]["conditions"][0];
    assert_eq!(accepted["type"], "Accepted", "{written}");
    assert_eq!(accepted["status"], "True", "{written}");
    // Any replica answers what the store holds, once its own watch has brought it the route (the
    // leader may write the status before another replica has applied the route).
    let other = apis[(first + 1) % 3];
    until("another replica shows the route's status", async || {
        let (_, store) = http_json(other, "GET", "/v1/store", "").await;
        (store["routes"][0] == written).then_some(())
    })
    .await;

    // The leader stops: another takes over, and keeps the status up to date.
    replicas[first]
        .take()
        .expect("leader")
        .shutdown()
        .await
        .unwrap();
    let rest: Vec<SocketAddr> = replicas.iter().flatten().map(|r| r.api_addr).collect();
    one_leader(&rest).await;
    client
        .delete(b"/weft/resources/route.yaml")
        .await
        .expect("delete");
    until("the gone route's status key deleted", async || {
        client.get(key).await.expect("get").is_none().then_some(())
    })
    .await;
    for r in replicas.into_iter().flatten() {
        r.shutdown().await.unwrap();
    }
}

/// The DNS SAN of a leaf.
fn dns_name(der: &[u8]) -> String {
    let (_, leaf) = X509Certificate::from_der(der).expect("DER leaf");
    let san = leaf.subject_alternative_name().unwrap().expect("SANs");
    match &san.value.general_names[0] {
        x509_parser::extensions::GeneralName::DNSName(n) => n.to_string(),
        other => panic!("first SAN is not a DNS name: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_certifying_one_workload_at_once_issue_only_its_identity_and_count_every_leaf()
{
    let Some(etcd) = Etcd::start("certify-race").await else {
        return;
    };
    etcd.client()
        .put(b"/weft/resources/services.yaml", SERVICES.as_bytes())
        .await
        .expect("put");
    let ca_dir = temp_dir("certify-race-ca").join("ca");
    let generated = weft_control::ca::generate("cluster.local", "weft").unwrap();
    weft_control::ca::write_dir(&ca_dir, &generated).unwrap();
    let a = replica(&etcd, Some(&ca_dir)).await;
    let b = replica(&etcd, Some(&ca_dir)).await;

    let (identity, token) = register(a.api_addr, "web-1").await;
    assert_eq!(identity, WEB_ID);
    let (other, _) = register(b.api_addr, "web-2").await;
    // B has seen A's registration (the same token certifies there) before the race starts.
    until("B accepts A's token", async || {
        certify(b.grpc_addr, &identity, &token, csr_for(&identity))
            .await
            .ok()
    })
    .await;

    // Both replicas at once, the right identity and, with the same token, another workload's.
    const EACH: usize = 16;
    let mut calls = Vec::new();
    for i in 0..EACH * 2 {
        let grpc = if i % 2 == 0 { a.grpc_addr } else { b.grpc_addr };
        let (own, t) = (identity.clone(), token.clone());
        calls.push(tokio::spawn(async move {
            certify(grpc, &own, &t, csr_for(&own)).await
        }));
        let (other, t) = (other.clone(), token.clone());
        calls.push(tokio::spawn(async move {
            certify(grpc, &other, &t, csr_for(&other)).await
        }));
    }
    let (mut issued, mut refused) = (0u64, 0u64);
    for (i, call) in calls.into_iter().enumerate() {
        match call.await.expect("join") {
            Ok(rsp) => {
                assert_eq!(i % 2, 0, "a leaf for the other workload's identity");
                assert_eq!(dns_name(&rsp.leaf_certificate), identity);
                issued += 1;
            }
            Err(e) => {
                assert_eq!(i % 2, 1, "the workload's own identity refused: {e:?}");
                refused += 1;
            }
        }
    }
    assert_eq!((issued, refused), (EACH as u64 * 2, EACH as u64 * 2));
    // One more each before the race: the "B accepts" probe.
    let total = issued + 1;

    // Every replica, and `weft identity status --dir` (through DIR/issued/store), count every
    // leaf of both replicas.
    for api in [a.api_addr, b.api_addr] {
        until("the API counts both replicas' leaves", async || {
            let (status, v) = http_json(api, "GET", "/v1/identity/status", "").await;
            assert_eq!(status, 200, "{v}");
            let live = v["anchors"][0]["live_leaves"].as_u64();
            let planes = v["control_planes"].as_array().map_or(0, Vec::len);
            (live == Some(total) && planes == 2).then_some(())
        })
        .await;
    }
    let dir = ca_dir.clone();
    until(
        "weft identity status counts both replicas' leaves",
        async || {
            let dir = dir.clone();
            let s = tokio::task::spawn_blocking(move || weft_control::rotation::status(&dir))
                .await
                .expect("join")
                .expect("status");
            (s.anchors[0].live_leaves == total && s.control_planes.len() == 2).then_some(())
        },
    )
    .await;
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}
