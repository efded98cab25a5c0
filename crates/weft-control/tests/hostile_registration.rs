//! Registration floods over real sockets: hundreds of concurrent `PUT /v1/workloads/...`, valid
//! and invalid. What is answered `200` is in force (listed, stored, on Destination streams, its
//! token certifies), nothing refused is; the limits on changes in progress (`429`) and on
//! workloads in force (`403`) hold and are counted; other clients stay served and memory and
//! descriptors stay bounded.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::hostile::{self, answer, closed_within, json_body, refused, usage, Client};
use common::identity::{certify, csr_for};
use common::{get, http, http_within, next};
use linkerd2_proxy_api::destination::update::Update as U;
use tokio::io::AsyncWriteExt;
use weft_control::api::limits::Limits;

const FLOOD: &str = "\
apiVersion: v1
kind: Service
metadata: {name: flood, namespace: default}
spec:
  selector: {app: flood}
  ports:
  - {name: http, port: 8080, targetPort: http}
";

/// A registration's answer may wait for the store and index behind the whole flood.
const SLOW: Duration = Duration::from_secs(60);

async fn plane(test: &str, limits: Limits) -> (weft_control::Running, Client, std::path::PathBuf) {
    let dir = common::temp_dir(test);
    std::fs::write(
        dir.join("services.yaml"),
        format!("{}---\n{FLOOD}", hostile::SERVICES),
    )
    .unwrap();
    let cp = common::start(weft_control::Config {
        api_limits: limits,
        ..common::config(&dir)
    })
    .await;
    let client = Client::open(cp.grpc_addr, cp.api_addr).await;
    (cp, client, dir)
}

fn workload(ip: &str, port: u32) -> String {
    serde_json::json!({
        "apiVersion": "workload.linkerd.io/v1beta1",
        "kind": "ExternalWorkload",
        "metadata": {"labels": {"app": "flood"}},
        "spec": {"workloadIPs": [{"ip": ip}], "ports": [{"name": "http", "port": port}]},
    })
    .to_string()
}

/// The names of the workloads in force whose name starts with `prefix`.
async fn listed(api: SocketAddr, prefix: &str) -> BTreeSet<String> {
    let (status, list) = common::http_json(api, "GET", "/v1/workloads", "").await;
    assert_eq!(status, 200);
    list.as_array()
        .unwrap()
        .iter()
        .filter_map(|w| w["metadata"]["name"].as_str())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_flood_leaves_in_force_exactly_what_was_answered_200() {
    let _alone = hostile::alone().await;
    let (cp, mut client, dir) = plane("reg-flood", Limits::default()).await;
    client.check("start").await;
    let mut flood = get(cp.grpc_addr, "flood.default.svc.cluster.local:8080")
        .await
        .unwrap();
    assert!(matches!(next(&mut flood).await, U::NoEndpoints(_)));
    let before = usage();
    let api = cp.api_addr;

    // 300 at once: a third valid, a third with a bad port, a third with a bad name.
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..300u32 {
        tasks.push(tokio::spawn(async move {
            let ip = format!("10.1.{}.{}", i / 200, i % 200 + 1);
            let (name, body) = match i % 3 {
                0 => (format!("flood-{i}"), workload(&ip, 8080)),
                1 => (format!("badport-{i}"), workload(&ip, 70_000)),
                _ => (format!("Bad_Name-{i}"), workload(&ip, 8080)),
            };
            let path = format!("/v1/workloads/default/{name}");
            let (status, body) = http_within(api, "PUT", &path, &body, SLOW).await;
            (i, name, ip, status, body)
        }));
    }
    // Reads are not held up by the flood.
    let (status, _) = http(api, "GET", "/ready", "").await;
    assert_eq!(status, 200, "/ready during the flood");
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    let took = start.elapsed();

    let mut accepted = BTreeSet::new();
    let mut ips = BTreeSet::new();
    let mut tokens = Vec::new();
    let mut busy = 0;
    // Stored but not yet applied (503): allowed under load; they may or may not be in force yet.
    let (mut stored, mut stored_ips) = (BTreeSet::new(), BTreeSet::new());
    for (i, name, ip, status, body) in &results {
        let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
        match (i % 3, *status) {
            (0, 200) => {
                accepted.insert(name.clone());
                ips.insert(format!("{ip}:8080"));
                tokens.push((
                    v["identity"].as_str().unwrap().to_string(),
                    v["token"].clone(),
                ));
            }
            (_, 429) => {
                assert!(v["error"]
                    .as_str()
                    .unwrap()
                    .contains("changes are in progress"));
                busy += 1;
            }
            (0, 503) => {
                stored.insert(name.clone());
                stored_ips.insert(format!("{ip}:8080"));
            }
            (1, 400) => assert!(body.contains("spec.ports[0].port"), "{body}"),
            (2, 400) => assert!(body.contains("path name"), "{body}"),
            (_, status) => panic!("{name}: unexpected {status}: {body}"),
        }
    }
    eprintln!(
        "300 concurrent registrations: {} accepted, {busy} answered 429, {} 503, \
         the rest 400; all answered within {took:?}",
        accepted.len(),
        stored.len()
    );
    assert!(!accepted.is_empty(), "no registration got through");
    let refused_429 = refused(api, "changes_in_flight").await;
    assert_eq!(refused_429, busy as u64);

    // In force: every one answered 200, and nothing refused (a 503's was stored: it may be).
    let listed = listed(api, "flood-").await;
    assert!(
        accepted.is_subset(&listed),
        "{accepted:?} not all in {listed:?}"
    );
    let maybe: BTreeSet<String> = accepted.union(&stored).cloned().collect();
    assert!(
        listed.is_subset(&maybe),
        "{listed:?} has more than {maybe:?}"
    );
    assert!(listed_bad(&dir), "a refused registration was stored");
    // The Destination stream reaches their addresses, and no refused one's.
    let deadline = Instant::now() + SLOW;
    let mut seen = BTreeSet::new();
    while !ips.is_subset(&seen) {
        assert!(
            Instant::now() < deadline,
            "stream has {seen:?}, want {ips:?}"
        );
        match next(&mut flood).await {
            U::Add(set) => seen.extend(
                set.addrs
                    .iter()
                    .map(|a| SocketAddr::try_from(a.addr.unwrap()).unwrap().to_string()),
            ),
            other => panic!("unexpected {other:?}"),
        }
    }
    let maybe_ips: BTreeSet<String> = ips.union(&stored_ips).cloned().collect();
    assert!(
        seen.is_subset(&maybe_ips),
        "the stream has more than {maybe_ips:?}: {seen:?}"
    );
    // Their tokens certify their identities.
    for (identity, token) in tokens.iter().take(3) {
        certify(
            cp.grpc_addr,
            identity,
            token.as_str().unwrap(),
            csr_for(identity),
        )
        .await
        .expect("an accepted registration's token certifies");
    }

    client.check("a registration flood").await;
    let after = hostile::fds_settle(before.fds + hostile::FD_SLACK, SLOW).await;
    hostile::assert_bounded("300 concurrent registrations", before, after, 64 * 1024);
    cp.shutdown().await.unwrap();
}

/// Whether `.registered/` holds no file of a refused registration.
fn listed_bad(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir.join(".registered"))
        .unwrap()
        .filter_map(|e| e.ok())
        .all(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            !name.contains("badport") && !name.to_lowercase().contains("bad_name")
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_past_the_changes_in_progress_is_refused_with_429() {
    let _alone = hostile::alone().await;
    let limits = Limits {
        max_changes_in_flight: 1,
        ..Limits::default()
    };
    let (cp, mut client, dir) = plane("reg-busy", limits).await;
    client.check("start").await;
    let api = cp.api_addr;

    // A registration whose body never ends holds the one change in progress. Until the API has
    // taken it in, another change may take the one slot first and have it refused, and then
    // nothing holds the slot: so it is sent again until a change that alters nothing (a PUT to
    // no endpoint, 404 when let through) is refused while it waits.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut slow = 'held: loop {
        let mut slow = tokio::net::TcpStream::connect(api).await.unwrap();
        slow.write_all(
            b"PUT /v1/workloads/default/slow HTTP/1.1\r\nhost: x\r\nconnection: close\r\ntransfer-encoding: chunked\r\n\r\n1\r\n{\r\n",
        )
        .await
        .unwrap();
        loop {
            assert!(
                Instant::now() < deadline,
                "the slow registration never held the change in progress"
            );
            let (status, text) = http(api, "PUT", "/v1/no-such-endpoint", "{}").await;
            match status {
                429 => break 'held slow,
                404 => {}
                _ => panic!("a probe change: {status} {text}"),
            }
            // Answered (refused because the probe held the slot) or closed: send it again.
            let mut byte = [0u8; 1];
            if tokio::time::timeout(Duration::from_millis(50), slow.peek(&mut byte))
                .await
                .is_ok()
            {
                break;
            }
        }
    };
    let (status, text) = http(
        api,
        "PUT",
        "/v1/workloads/default/busy",
        &workload("10.2.0.1", 8080),
    )
    .await;
    assert_eq!(status, 429, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("1 changes are in progress"),
        "{v}"
    );
    assert!(refused(api, "changes_in_flight").await >= 1);
    assert!(listed(api, "busy").await.is_empty());
    assert!(!dir.join(".registered/default.busy.yaml").exists());
    // Reads are served meanwhile.
    assert_eq!(http(api, "GET", "/v1/workloads", "").await.0, 200);

    // Once the slow one ends (its body is not a document: 400), changes go through again.
    slow.write_all(b"0\r\n\r\n").await.unwrap();
    let closed = closed_within("the slow registration", &mut slow, Duration::from_secs(10)).await;
    let (status, text) = answer(&closed.received);
    assert_eq!(status, Some(400), "{text}");
    assert!(json_body(&text)["error"]
        .as_str()
        .unwrap()
        .contains("request body"));
    client.check("a change held in progress").await;
    cp.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_past_the_workload_limit_are_refused_and_counted() {
    let _alone = hostile::alone().await;
    let limits = Limits {
        max_workloads: 10,
        ..Limits::default()
    };
    let (cp, mut client, dir) = plane("reg-limit", limits).await;
    // One workload of the well-behaved client's, then 15 more: 9 fit.
    client.check("start").await;
    let api = cp.api_addr;
    let mut answers = Vec::new();
    for i in 0..15 {
        let path = format!("/v1/workloads/default/flood-{i}");
        let (status, body) = http(
            api,
            "PUT",
            &path,
            &workload(&format!("10.3.0.{}", i + 1), 8080),
        )
        .await;
        answers.push(status);
        if status == 403 {
            assert!(body.contains("10 workloads are in force"), "{body}");
            assert!(!dir
                .join(format!(".registered/default.flood-{i}.yaml"))
                .exists());
        }
    }
    assert_eq!(answers, [[200; 9].as_slice(), &[403; 6]].concat());
    assert_eq!(refused(api, "workloads").await, 6);
    assert_eq!(listed(api, "flood-").await.len(), 9);
    // One in force may be registered again; after a deregistration a new one fits.
    let (status, body) = http(
        api,
        "PUT",
        "/v1/workloads/default/flood-0",
        &workload("10.3.1.1", 8080),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = http(api, "DELETE", "/v1/workloads/default/flood-0", "").await;
    assert_eq!(status, 200);
    let (status, body) = http(
        api,
        "PUT",
        "/v1/workloads/default/flood-9",
        &workload("10.3.0.10", 8080),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(refused(api, "workloads").await, 6);
    cp.shutdown().await.unwrap();
}
