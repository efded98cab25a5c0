//! The index's multicluster answers: a gateway mirror's endpoints carry the remote authority and
//! opaque transport on the gateway's port; a federated Service adds its local member's endpoints
//! and follows them.

use super::tests::{addrs, name, port, state, svc, wl};
use super::*;
use crate::resource::multicluster::{
    LOCAL_DISCOVERY_ANNOTATION, REMOTE_GATEWAY_IDENTITY_ANNOTATION, REMOTE_SVC_FQ_NAME_ANNOTATION,
};

#[test]
fn a_gateway_mirror_answers_the_gateway_with_the_remote_authority() {
    let mut mirror = svc(
        "web-west",
        "gw",
        None,
        vec![port(80, TargetPort::Number(4143))],
    );
    mirror.annotations = BTreeMap::from([
        (REMOTE_GATEWAY_IDENTITY_ANNOTATION.into(), "gw.id".into()),
        (
            REMOTE_SVC_FQ_NAME_ANNOTATION.into(),
            "web.default.svc.west.local".into(),
        ),
    ]);
    let plain = svc("web", "gw", None, vec![port(80, TargetPort::Number(4143))]);
    let s = state(
        vec![mirror, plain],
        vec![wl("gateway", "gw", "10.9.0.1", &[])],
    );
    let Destination::Endpoints { endpoints, .. } =
        destination(&s, "cluster.local", &name("web-west", 80))
    else {
        panic!()
    };
    let ep = endpoints.values().next().unwrap();
    assert_eq!(ep.addr.to_string(), "10.9.0.1:4143");
    assert_eq!(
        ep.authority_override.as_deref(),
        Some("web.default.svc.west.local:80")
    );
    assert_eq!(
        ep.opaque_transport,
        Some(4143),
        "HTTP too goes in opaque transport"
    );
    // The same workload behind an ordinary Service: no override.
    let Destination::Endpoints { endpoints, .. } =
        destination(&s, "cluster.local", &name("web", 80))
    else {
        panic!()
    };
    let ep = endpoints.values().next().unwrap();
    assert_eq!(
        (ep.authority_override.clone(), ep.opaque_transport),
        (None, None)
    );
}

#[tokio::test]
async fn a_federated_service_follows_its_local_member() {
    let mut fed = svc(
        "db-federated",
        "remote-db",
        None,
        vec![port(5432, TargetPort::Number(5432))],
    );
    fed.annotations = BTreeMap::from([(LOCAL_DISCOVERY_ANNOTATION.into(), "db".into())]);
    let local = svc("db", "db", None, vec![port(5432, TargetPort::Number(6000))]);
    let mut s = state(
        vec![fed, local],
        vec![
            wl("remote-1", "remote-db", "10.1.0.31", &[]),
            wl("db-1", "db", "10.2.0.31", &[]),
        ],
    );
    let index = Index::new("cluster.local");
    index.apply(Arc::new(s.clone()));
    let mut rx = index.destination(&name("db-federated", 5432));
    assert_eq!(
        addrs(&rx.borrow_and_update()),
        ["10.1.0.31:5432", "10.2.0.31:6000"],
        "the local member's endpoints resolve by its own target port"
    );
    // A new local member workload reaches the federated Service's watchers.
    s.workloads.insert(
        ("default".into(), "db-2".into()),
        wl("db-2", "db", "10.2.0.32", &[]),
    );
    index.apply(Arc::new(s));
    assert!(rx.has_changed().unwrap());
    assert_eq!(addrs(&rx.borrow_and_update()).len(), 3);
}
