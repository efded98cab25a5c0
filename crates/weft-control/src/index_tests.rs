//! In-memory index tests: no files, no sockets.

use super::*;
use crate::index::lookup::Lookup;
use crate::resource::{ServicePort, WorkloadPort};
use std::collections::BTreeSet;

#[path = "index/ready_tests.rs"]
mod ready;

const DOMAIN: &str = "cluster.local";

pub(super) fn svc(name: &str, app: &str, ip: Option<&str>, ports: Vec<ServicePort>) -> Service {
    Service {
        name: name.into(),
        namespace: "default".into(),
        labels: Default::default(),
        annotations: BTreeMap::new(),
        selector: BTreeMap::from([("app".to_string(), app.to_string())]),
        cluster_ip: ip.map(|s| s.parse().unwrap()),
        ports,
        opaque_ports: BTreeSet::new(),
    }
}

pub(super) fn port(port: u16, target: TargetPort) -> ServicePort {
    ServicePort {
        name: None,
        port,
        target_port: target,
        app_protocol: None,
    }
}

pub(super) fn wl(name: &str, app: &str, ip: &str, ports: &[(&str, u16)]) -> ExternalWorkload {
    ExternalWorkload {
        name: name.into(),
        namespace: "default".into(),
        labels: BTreeMap::from([("app".to_string(), app.to_string())]),
        annotations: BTreeMap::new(),
        identity: format!("spiffe://cluster.local/ns/default/sa/{name}"),
        server_name: format!("{name}.default.serviceaccount.identity.weft.cluster.local"),
        ips: vec![ip.parse().unwrap()],
        ports: ports
            .iter()
            .map(|(n, p)| WorkloadPort {
                name: Some(n.to_string()),
                port: *p,
            })
            .collect(),
        opaque_ports: BTreeSet::new(),
        inbound_port: None,
        conditions: Vec::new(),
    }
}

/// A `Ready=False` condition, as `weft run` registers a workload before its command accepts.
fn not_ready() -> crate::resource::workload_status::Condition {
    crate::resource::workload_status::Condition::ready(
        false,
        "Starting",
        "the command does not accept connections yet",
        "2026-01-01T00:00:00Z",
    )
}

pub(super) fn state(services: Vec<Service>, workloads: Vec<ExternalWorkload>) -> State {
    State {
        services: services
            .into_iter()
            .map(|s| ((s.namespace.clone(), s.name.clone()), s))
            .collect(),
        workloads: workloads
            .into_iter()
            .map(|w| ((w.namespace.clone(), w.name.clone()), w))
            .collect(),
        ..Default::default()
    }
}

pub(super) fn name(n: &str, port: u16) -> Target {
    Target::Name {
        name: n.into(),
        namespace: "default".into(),
        port,
    }
}

pub(super) fn addrs(d: &Destination) -> Vec<String> {
    match d {
        Destination::Endpoints { endpoints, .. } => {
            endpoints.keys().map(|a| a.to_string()).collect()
        }
        other => panic!("expected endpoints, got {other:?}"),
    }
}

fn sample() -> State {
    state(
        vec![
            svc(
                "web",
                "web",
                Some("198.18.0.10"),
                vec![port(8080, TargetPort::Name("http".into()))],
            ),
            svc(
                "db",
                "db",
                None,
                vec![port(5432, TargetPort::Number(15432))],
            ),
        ],
        vec![
            wl("web-1", "web", "127.0.0.1", &[("http", 18080)]),
            wl("web-2", "web", "127.0.0.2", &[("http", 18081)]),
            wl("other", "api", "127.0.0.3", &[("http", 18082)]),
            wl("db-1", "db", "127.0.0.4", &[]),
        ],
    )
}

#[test]
fn parses_targets() {
    let want = Some(name("web", 8080));
    assert_eq!(
        parse_target("web.default.svc.cluster.local:8080", DOMAIN),
        want
    );
    assert_eq!(
        parse_target("web.default.svc.cluster.local.:8080", DOMAIN),
        want
    );
    assert_eq!(
        parse_target("WEB.default.svc.cluster.local:8080", DOMAIN),
        want
    );
    assert_eq!(
        parse_target("web.default.svc.cluster.local", DOMAIN),
        Some(name("web", 80))
    );
    assert_eq!(parse_target("example.com:80", DOMAIN), None);
    assert_eq!(parse_target("web.default.svc.other.local:80", DOMAIN), None);
    assert_eq!(parse_target("a.b.c.svc.cluster.local:80", DOMAIN), None);
    assert_eq!(
        parse_target("web.default.svc.cluster.local:0", DOMAIN),
        None
    );
    assert_eq!(
        parse_target("10.0.0.1:80", DOMAIN),
        Some(Target::Addr("10.0.0.1:80".parse().unwrap()))
    );
    assert_eq!(
        parse_target("[::1]:80", DOMAIN),
        Some(Target::Addr("[::1]:80".parse().unwrap()))
    );
}

#[test]
fn selector_and_named_target_port() {
    let s = sample();
    let d = destination(&s, DOMAIN, &name("web", 8080));
    assert_eq!(addrs(&d), vec!["127.0.0.1:18080", "127.0.0.2:18081"]);
    let Destination::Endpoints { service, endpoints } = d else {
        unreachable!()
    };
    assert_eq!(service, Some(("default".into(), "web".into())));
    let e = &endpoints[&"127.0.0.1:18080".parse().unwrap()];
    assert_eq!(e.workload, "web-1");
    assert_eq!(
        e.server_name,
        "web-1.default.serviceaccount.identity.weft.cluster.local"
    );
    assert!(!e.opaque);
}

#[test]
fn numeric_target_port_and_undeclared_port() {
    let s = sample();
    assert_eq!(
        addrs(&destination(&s, DOMAIN, &name("db", 5432))),
        vec!["127.0.0.4:15432"]
    );
    // An undeclared service port targets the same port number on the workloads.
    assert_eq!(
        addrs(&destination(&s, DOMAIN, &name("db", 7000))),
        vec!["127.0.0.4:7000"]
    );
}

#[test]
fn named_target_port_missing_on_workload_skips_it() {
    let mut s = sample();
    s.workloads
        .get_mut(&("default".into(), "web-2".into()))
        .unwrap()
        .ports
        .clear();
    assert_eq!(
        addrs(&destination(&s, DOMAIN, &name("web", 8080))),
        vec!["127.0.0.1:18080"]
    );
}

#[test]
fn selector_respects_namespace_and_empty_selector() {
    let mut s = sample();
    s.workloads
        .get_mut(&("default".into(), "web-2".into()))
        .unwrap()
        .namespace = "prod".into();
    assert_eq!(
        addrs(&destination(&s, DOMAIN, &name("web", 8080))),
        vec!["127.0.0.1:18080"]
    );
    s.services
        .get_mut(&("default".into(), "web".into()))
        .unwrap()
        .selector
        .clear();
    assert!(addrs(&destination(&s, DOMAIN, &name("web", 8080))).is_empty());
}

#[test]
fn opaque_ports_from_service_and_workload() {
    let mut s = sample();
    let web = s
        .services
        .get_mut(&("default".into(), "web".into()))
        .unwrap();
    web.opaque_ports.insert(8080);
    let Destination::Endpoints { endpoints, .. } = destination(&s, DOMAIN, &name("web", 8080))
    else {
        panic!()
    };
    assert!(endpoints.values().all(|e| e.opaque));
    let Profile::Profile { opaque, .. } = profile(&s, DOMAIN, &name("web", 8080)) else {
        panic!()
    };
    assert!(opaque);
    assert!(matches!(
        outbound(&s, DOMAIN, &name("web", 8080)),
        Outbound::Service { opaque: true, .. }
    ));

    let mut s = sample();
    let db = s
        .services
        .get_mut(&("default".into(), "db".into()))
        .unwrap();
    db.ports[0].app_protocol = Some("tcp".into());
    assert!(db.is_opaque(5432));
    let mut s2 = sample();
    s2.workloads
        .get_mut(&("default".into(), "db-1".into()))
        .unwrap()
        .opaque_ports
        .insert(15432);
    let Destination::Endpoints { endpoints, .. } = destination(&s2, DOMAIN, &name("db", 5432))
    else {
        panic!()
    };
    assert!(endpoints.values().all(|e| e.opaque));
    let key = InboundKey {
        namespace: "default".into(),
        workload: "db-1".into(),
        port: 15432,
    };
    let d = InboundDefaults::default();
    let known_opaque = |key: &InboundKey| {
        let i = inbound(&s2, &d, key);
        (i.known, i.opaque())
    };
    assert_eq!(known_opaque(&key), (true, true));
    let key = InboundKey { port: 80, ..key };
    assert_eq!(known_opaque(&key), (true, false));
    let key = InboundKey {
        workload: "nope".into(),
        ..key
    };
    assert_eq!(known_opaque(&key), (false, false));
    let _ = s;
}

#[test]
fn opaque_transport_only_for_opaque_ports_of_workloads_naming_their_inbound_port() {
    let mut s = sample();
    s.services
        .get_mut(&("default".into(), "web".into()))
        .unwrap()
        .opaque_ports
        .insert(8080);
    for w in ["web-1", "db-1"] {
        s.workloads
            .get_mut(&("default".into(), w.into()))
            .unwrap()
            .inbound_port = Some(4143);
    }
    let transport = |d: Destination| match d {
        Destination::Endpoints { endpoints, .. } => endpoints
            .values()
            .map(|e| (e.addr.to_string(), e.opaque, e.opaque_transport))
            .collect::<Vec<_>>(),
        other => panic!("expected endpoints, got {other:?}"),
    };
    // web-2 does not say where its inbound listener is: opaque, but no transport header.
    assert_eq!(
        transport(destination(&s, DOMAIN, &name("web", 8080))),
        vec![
            ("127.0.0.1:18080".to_string(), true, Some(4143)),
            ("127.0.0.2:18081".to_string(), true, None),
        ]
    );
    // The same endpoint looked up by address.
    let by_addr = Target::Addr("127.0.0.1:18080".parse().unwrap());
    let web = &mut s
        .workloads
        .get_mut(&("default".into(), "web-1".into()))
        .unwrap();
    web.opaque_ports.insert(18080);
    assert_eq!(
        transport(destination(&s, DOMAIN, &by_addr)),
        vec![("127.0.0.1:18080".to_string(), true, Some(4143))]
    );
    // A port that is not opaque is HTTP-detected by the peer: no transport header.
    assert_eq!(
        transport(destination(&s, DOMAIN, &name("db", 5432))),
        vec![("127.0.0.4:15432".to_string(), false, None)]
    );
}

#[test]
fn cluster_ip_lookup_is_the_service() {
    let s = sample();
    let by_ip = destination(
        &s,
        DOMAIN,
        &Target::Addr("198.18.0.10:8080".parse().unwrap()),
    );
    assert_eq!(by_ip, destination(&s, DOMAIN, &name("web", 8080)));
    let Profile::Profile {
        fully_qualified_name,
        ..
    } = profile(
        &s,
        DOMAIN,
        &Target::Addr("198.18.0.10:8080".parse().unwrap()),
    )
    else {
        panic!()
    };
    assert_eq!(fully_qualified_name, "web.default.svc.cluster.local");
    let Outbound::Service { authority, .. } = outbound(
        &s,
        DOMAIN,
        &Target::Addr("198.18.0.10:8080".parse().unwrap()),
    ) else {
        panic!()
    };
    assert_eq!(authority, "web.default.svc.cluster.local:8080");
}

#[test]
fn workload_ip_lookup_is_one_endpoint() {
    let s = sample();
    let t = Target::Addr("127.0.0.2:18081".parse().unwrap());
    let d = destination(&s, DOMAIN, &t);
    assert_eq!(addrs(&d), vec!["127.0.0.2:18081"]);
    assert!(matches!(d, Destination::Endpoints { service: None, .. }));
    let Profile::Profile {
        fully_qualified_name,
        endpoint,
        ..
    } = profile(&s, DOMAIN, &t)
    else {
        panic!()
    };
    assert_eq!(fully_qualified_name, "");
    assert_eq!(endpoint.map(|e| e.workload), Some("web-2".into()));
    assert!(matches!(outbound(&s, DOMAIN, &t), Outbound::Endpoint(_)));
    // Same IP, undeclared port: not an endpoint.
    let t = Target::Addr("127.0.0.2:9".parse().unwrap());
    assert_eq!(destination(&s, DOMAIN, &t), Destination::Invalid);
    assert_eq!(profile(&s, DOMAIN, &t), Profile::Invalid);
    assert_eq!(outbound(&s, DOMAIN, &t), Outbound::NotFound);
}

#[test]
fn unknown_names() {
    let s = sample();
    assert_eq!(
        destination(&s, DOMAIN, &name("nope", 80)),
        Destination::NotFound
    );
    let Profile::Profile {
        fully_qualified_name,
        service,
        ..
    } = profile(&s, DOMAIN, &name("nope", 80))
    else {
        panic!()
    };
    assert_eq!((fully_qualified_name.as_str(), service), ("", None));
    let Outbound::Service {
        service, authority, ..
    } = outbound(&s, DOMAIN, &name("nope", 80))
    else {
        panic!()
    };
    assert_eq!(
        (service, authority.as_str()),
        (None, "nope.default.svc.cluster.local:80")
    );
}

#[tokio::test]
async fn watches_publish_only_changes_and_share_keys() {
    let index = Index::new(DOMAIN);
    index.apply(Arc::new(sample()));
    let mut a = index.destination(&name("web", 8080));
    let mut b = index.destination(&name("web", 8080));
    assert_eq!(index.key_count(), 1, "two subscribers share one key");
    assert_eq!(addrs(&a.borrow_and_update()).len(), 2);
    b.borrow_and_update();

    // A change elsewhere does not wake the web watchers.
    let mut s = sample();
    s.workloads
        .get_mut(&("default".into(), "other".into()))
        .unwrap()
        .ports[0]
        .port = 1;
    index.apply(Arc::new(s.clone()));
    assert!(!a.has_changed().unwrap());

    // Adding a matching workload does.
    s.workloads.insert(
        ("default".into(), "web-3".into()),
        wl("web-3", "web", "127.0.0.5", &[("http", 1)]),
    );
    index.apply(Arc::new(s.clone()));
    assert!(a.has_changed().unwrap() && b.has_changed().unwrap());
    assert_eq!(addrs(&a.borrow_and_update()).len(), 3);

    // Removing the service turns it into NotFound.
    s.services.remove(&("default".into(), "web".into()));
    index.apply(Arc::new(s));
    assert_eq!(*a.borrow_and_update(), Destination::NotFound);

    // Keys without receivers are dropped on the next apply.
    drop((a, b));
    index.apply(Arc::new(sample()));
    assert_eq!(index.key_count(), 0);
}

#[test]
fn diff_add_remove_and_no_endpoints() {
    use crate::grpc::Diff;
    use linkerd2_proxy_api::destination::update::Update as U;
    let s = sample();
    let mut diff = Diff::default();
    let first = diff.update(&destination(&s, DOMAIN, &name("web", 8080)));
    assert!(
        matches!(&first[..], [U::Add(set)] if set.addrs.len() == 2 && set.metric_labels["service"] == "web")
    );
    // Nothing changed: nothing sent.
    assert!(diff
        .update(&destination(&s, DOMAIN, &name("web", 8080)))
        .is_empty());
    // One workload leaves, one joins.
    let mut s2 = s.clone();
    s2.workloads.remove(&("default".into(), "web-1".into()));
    s2.workloads.insert(
        ("default".into(), "web-9".into()),
        wl("web-9", "web", "127.0.0.9", &[("http", 9)]),
    );
    let ups = diff.update(&destination(&s2, DOMAIN, &name("web", 8080)));
    assert!(
        matches!(&ups[..], [U::Remove(r), U::Add(a)] if r.addrs.len() == 1 && a.addrs.len() == 1),
        "{ups:?}"
    );
    // All leave: a remove, and no extra no_endpoints.
    let mut s3 = s2.clone();
    s3.workloads.clear();
    let ups = diff.update(&destination(&s3, DOMAIN, &name("web", 8080)));
    assert!(
        matches!(&ups[..], [U::Remove(r)] if r.addrs.len() == 2),
        "{ups:?}"
    );
    // The service disappears, then comes back empty.
    s3.services.clear();
    let ups = diff.update(&destination(&s3, DOMAIN, &name("web", 8080)));
    assert!(matches!(&ups[..], [U::NoEndpoints(n)] if !n.exists));
    let ups = diff.update(&destination(
        &sample_without_workloads(),
        DOMAIN,
        &name("web", 8080),
    ));
    assert!(matches!(&ups[..], [U::NoEndpoints(n)] if n.exists));
    // A fresh stream of an empty service starts with no_endpoints{exists:true}.
    let ups = Diff::default().update(&destination(
        &sample_without_workloads(),
        DOMAIN,
        &name("web", 8080),
    ));
    assert!(matches!(&ups[..], [U::NoEndpoints(n)] if n.exists));
}

fn sample_without_workloads() -> State {
    let mut s = sample();
    s.workloads.clear();
    s
}

/// Endpoints the way the index computed them before it had lookups: every workload checked
/// against the selector. The reference the lookups must agree with.
fn scan_endpoints(s: &State, svc: &Service, port: u16) -> BTreeMap<SocketAddr, Endpoint> {
    let target = svc
        .port(port)
        .map(|p| p.target_port.clone())
        .unwrap_or(TargetPort::Number(port));
    s.workloads
        .values()
        .filter(|w| svc.selects(w) && w.ready())
        .filter_map(|w| {
            let p = w.resolve(&target)?;
            let opaque = svc.is_opaque(port) || w.opaque_ports.contains(&p);
            let ep = endpoint(w, p, opaque);
            Some((ep.addr, ep))
        })
        .collect()
}

/// A deterministic pseudo-random source (xorshift), so the generated states are reproducible.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

const NAMESPACES: [&str; 2] = ["default", "prod"];

/// A workload with labels drawn from small sets, so selectors overlap, miss and collide.
fn random_workload(rng: &mut Rng, i: usize) -> ExternalWorkload {
    let mut w = wl(
        &format!("w{i}"),
        &format!("a{}", rng.below(4)),
        &format!("127.1.0.{}", rng.below(12) + 1),
        &[("http", 8000 + rng.below(3) as u16)],
    );
    w.namespace = NAMESPACES[rng.below(2) as usize].into();
    if rng.below(2) == 0 {
        w.labels.insert("tier".into(), format!("t{}", rng.below(2)));
    }
    if rng.below(5) == 0 {
        w.opaque_ports.insert(8000);
    }
    if rng.below(6) == 0 {
        w.conditions = vec![not_ready()];
    }
    w
}

fn random_service(rng: &mut Rng, i: usize) -> Service {
    let mut s = svc(
        &format!("s{i}"),
        &format!("a{}", rng.below(4)),
        Some(&format!("198.18.1.{}", i + 1)),
        vec![port(80, TargetPort::Name("http".into()))],
    );
    s.namespace = NAMESPACES[rng.below(2) as usize].into();
    match rng.below(4) {
        0 => {
            s.selector
                .insert("tier".into(), format!("t{}", rng.below(2)));
        }
        1 => s.selector.clear(),
        _ => {}
    }
    s
}

fn random_state(rng: &mut Rng) -> State {
    state(
        (0..6).map(|i| random_service(rng, i)).collect(),
        (0..40).map(|i| random_workload(rng, i)).collect(),
    )
}

#[test]
fn lookup_selects_what_a_full_scan_selects() {
    let mut rng = Rng(0x5eed);
    for _ in 0..50 {
        let s = random_state(&mut rng);
        let lookup = Lookup::new(&s);
        for svc in s.services.values() {
            let picked: Vec<_> = lookup.selected(&s, svc).map(|w| &w.name).collect();
            let scanned: Vec<_> = s
                .workloads
                .values()
                .filter(|w| svc.selects(w))
                .map(|w| &w.name)
                .collect();
            assert_eq!(picked, scanned, "{svc:?}");
            for p in [80, 8001] {
                assert_eq!(
                    service_endpoints(&s, svc, p),
                    scan_endpoints(&s, svc, p),
                    "{svc:?} port {p}"
                );
            }
        }
    }
}

#[test]
fn lookup_by_address_keeps_scan_order() {
    // Two workloads on one IP: the first (in name order) declaring the port is the endpoint.
    let mut s = sample();
    s.workloads.insert(
        ("default".into(), "a-first".into()),
        wl("a-first", "x", "127.0.0.2", &[("http", 9)]),
    );
    let at = |p: &str| destination(&s, DOMAIN, &Target::Addr(p.parse().unwrap()));
    let Destination::Endpoints { endpoints, .. } = at("127.0.0.2:9") else {
        panic!()
    };
    assert_eq!(endpoints.values().next().unwrap().workload, "a-first");
    let Destination::Endpoints { endpoints, .. } = at("127.0.0.2:18081") else {
        panic!()
    };
    assert_eq!(endpoints.values().next().unwrap().workload, "web-2");
}

type Watching<K, V> = Vec<(K, watch::Receiver<V>)>;

struct Watched {
    destinations: Watching<Target, Destination>,
    profiles: Watching<Target, Profile>,
    outbound: Watching<Target, Outbound>,
    inbound: Watching<InboundKey, Inbound>,
}

/// Every kind of key on every service, port and workload address of `s`.
fn watch_everything(index: &Index, s: &State) -> Watched {
    let mut targets = Vec::new();
    for (ns, n) in s.services.keys() {
        for p in [80, 8001] {
            targets.push(Target::Name {
                name: n.clone(),
                namespace: ns.clone(),
                port: p,
            });
        }
    }
    targets.push(name("missing", 80));
    for i in 1..=13 {
        targets.push(Target::Addr(format!("127.1.0.{i}:8001").parse().unwrap()));
    }
    for i in 1..=7 {
        targets.push(Target::Addr(format!("198.18.1.{i}:80").parse().unwrap()));
    }
    let inbound_keys: Vec<_> = (0..41)
        .flat_map(|i| {
            NAMESPACES.map(|ns| InboundKey {
                namespace: ns.into(),
                workload: format!("w{i}"),
                port: 8000,
            })
        })
        .collect();
    Watched {
        destinations: targets
            .iter()
            .map(|t| (t.clone(), index.destination(t)))
            .collect(),
        profiles: targets
            .iter()
            .map(|t| (t.clone(), index.profile(t)))
            .collect(),
        outbound: targets
            .iter()
            .map(|t| (t.clone(), index.outbound(t)))
            .collect(),
        inbound: inbound_keys
            .into_iter()
            .map(|k| {
                let rx = index.inbound(&k);
                (k, rx)
            })
            .collect(),
    }
}

/// A Server selecting port 8000 of one app's workloads (or every workload) of a namespace.
fn random_server(rng: &mut Rng) -> crate::resource::authz::Server {
    use crate::resource::authz::{DefaultPolicy, LabelSelector, ProxyProtocol, ServerPort};
    let mut selector = LabelSelector::default();
    if rng.below(3) > 0 {
        selector
            .match_labels
            .insert("app".into(), format!("a{}", rng.below(4)));
    }
    crate::resource::authz::Server {
        name: format!("srv{}", rng.below(3)),
        namespace: NAMESPACES[rng.below(2) as usize].into(),
        created: Some(rng.below(3) as i64),
        selector,
        port: ServerPort::Number(8000),
        protocol: ProxyProtocol::Unknown,
        access_policy: DefaultPolicy::ALL[rng.below(6) as usize],
    }
}

/// A few random edits: workloads added, removed, relabelled, moved; services changed; Servers
/// added, changed or removed.
fn mutate(rng: &mut Rng, s: &mut State, next: &mut usize) {
    if rng.below(4) == 0 {
        let srv = random_server(rng);
        let key = (srv.namespace.clone(), srv.name.clone());
        if rng.below(3) == 0 {
            s.servers.remove(&key);
        } else {
            s.servers.insert(key, srv);
        }
    }
    for _ in 0..=rng.below(3) {
        let keys: Vec<_> = s.workloads.keys().cloned().collect();
        match rng.below(6) {
            0 => {
                *next += 1;
                let w = random_workload(rng, *next % 41);
                s.workloads.insert((w.namespace.clone(), w.name.clone()), w);
            }
            1 if !keys.is_empty() => {
                s.workloads
                    .remove(&keys[rng.below(keys.len() as u64) as usize]);
            }
            2 | 3 if !keys.is_empty() => {
                let w = s
                    .workloads
                    .get_mut(&keys[rng.below(keys.len() as u64) as usize])
                    .unwrap();
                match rng.below(4) {
                    0 => w.labels.insert("app".into(), format!("a{}", rng.below(4))),
                    1 => w.labels.insert("tier".into(), format!("t{}", rng.below(2))),
                    2 => {
                        w.conditions = if w.ready() { vec![not_ready()] } else { vec![] };
                        None
                    }
                    _ => {
                        w.ips[0] = format!("127.1.0.{}", rng.below(12) + 1).parse().unwrap();
                        None
                    }
                };
            }
            _ => {
                let i = rng.below(7) as usize;
                let svc = random_service(rng, i);
                s.services.retain(|_, v| v.name != svc.name);
                if rng.below(4) > 0 {
                    s.services
                        .insert((svc.namespace.clone(), svc.name.clone()), svc);
                }
            }
        }
    }
}

#[test]
fn incremental_apply_matches_recomputing_everything() {
    let mut rng = Rng(42);
    let index = Index::new(DOMAIN);
    let mut s = random_state(&mut rng);
    index.apply(Arc::new(s.clone()));
    let w = watch_everything(&index, &s);
    let mut next = 100;
    let mut decided_by_server = 0;
    for step in 0..300 {
        mutate(&mut rng, &mut s, &mut next);
        index.apply(Arc::new(s.clone()));
        for (t, rx) in &w.destinations {
            assert_eq!(
                *rx.borrow(),
                destination(&s, DOMAIN, t),
                "step {step}: {t:?}"
            );
        }
        for (t, rx) in &w.profiles {
            assert_eq!(*rx.borrow(), profile(&s, DOMAIN, t), "step {step}: {t:?}");
        }
        for (t, rx) in &w.outbound {
            assert_eq!(*rx.borrow(), outbound(&s, DOMAIN, t), "step {step}: {t:?}");
        }
        for (k, rx) in &w.inbound {
            let want = inbound(&s, &InboundDefaults::default(), k);
            decided_by_server += usize::from(matches!(want.server, inbound::ServerRef::Server(_)));
            assert_eq!(*rx.borrow(), want, "step {step}: {k:?}");
        }
    }
    assert!(
        decided_by_server > 0,
        "the random Servers select watched ports"
    );
}

#[test]
fn unchanged_keys_are_not_recomputed_or_resent() {
    let index = Index::new(DOMAIN);
    index.apply(Arc::new(sample()));
    let web = index.destination(&name("web", 8080));
    let web_profile = index.profile(&name("web", 8080));
    let mut db = index.destination(&name("db", 5432));
    let web_1 = index.inbound(&InboundKey {
        namespace: "default".into(),
        workload: "web-1".into(),
        port: 18080,
    });
    let by_addr = index.destination(&Target::Addr("127.0.0.4:15432".parse().unwrap()));
    for changed in [web.has_changed(), db.has_changed(), by_addr.has_changed()] {
        assert!(!changed.unwrap());
    }

    // The same state again (a new Arc): nothing to recompute.
    assert_eq!(index.apply(Arc::new(sample())), Applied::default());

    // db-1 moves: its service's destination and the address key at its old IP are
    // recomputed; only the destination differs (db-1 declares no port, so the address was and
    // stays Invalid) and is sent. web's keys and web-1's policy are not even recomputed.
    let mut s = sample();
    let db_1 = s
        .workloads
        .get_mut(&("default".into(), "db-1".into()))
        .unwrap();
    db_1.ips[0] = "127.0.0.40".parse().unwrap();
    let applied = index.apply(Arc::new(s.clone()));
    assert_eq!(
        applied,
        Applied {
            recomputed: 2,
            sent: 1
        }
    );
    assert!(db.has_changed().unwrap() && !by_addr.has_changed().unwrap());
    assert_eq!(addrs(&db.borrow_and_update()), vec!["127.0.0.40:15432"]);
    assert!(!web.has_changed().unwrap());
    assert!(!web_profile.has_changed().unwrap());
    assert!(!web_1.has_changed().unwrap());

    // A workload no service selects and nobody watches changes: nothing is recomputed.
    s.workloads
        .get_mut(&("default".into(), "other".into()))
        .unwrap()
        .ports[0]
        .port = 1;
    assert_eq!(index.apply(Arc::new(s.clone())), Applied::default());

    // web's port changes name: web's destination and profile are recomputed, and so is the
    // address key (any service change may move a cluster IP); none of them differs, so
    // nothing is sent.
    s.services
        .get_mut(&("default".into(), "web".into()))
        .unwrap()
        .ports[0]
        .name = Some("renamed".into());
    let applied = index.apply(Arc::new(s));
    assert_eq!(
        applied,
        Applied {
            recomputed: 3,
            sent: 0
        }
    );
    assert!(!web.has_changed().unwrap() && !web_profile.has_changed().unwrap());
    assert!(!db.has_changed().unwrap() && !web_1.has_changed().unwrap());
    assert!(!by_addr.has_changed().unwrap());
}
