use super::*;
use crate::resource::{Service, ServicePort, TargetPort};

fn svc(ns: &str, name: &str, ip: Option<&str>) -> Service {
    Service {
        name: name.into(),
        namespace: ns.into(),
        labels: Default::default(),
        annotations: Default::default(),
        selector: [("app".to_string(), name.to_string())].into(),
        cluster_ip: ip.map(|ip| ip.parse().unwrap()),
        ports: vec![ServicePort {
            name: None,
            port: 8080,
            target_port: TargetPort::Number(8080),
            app_protocol: None,
        }],
        opaque_ports: Default::default(),
    }
}

fn state(services: &[Service]) -> Arc<State> {
    Arc::new(State {
        services: services
            .iter()
            .map(|s| ((s.namespace.clone(), s.name.clone()), s.clone()))
            .collect(),
        ..Default::default()
    })
}

fn ip_of(state: &State, name: &str) -> Option<IpAddr> {
    state.services[&("default".to_string(), name.to_string())].cluster_ip
}

fn temp_store(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("weft-service-ips-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn ranges_parse_or_say_what_is_wrong() {
    let r: ServiceCidr = "10.96.0.0/12".parse().unwrap();
    assert_eq!(r.to_string(), "10.96.0.0/12");
    assert_eq!(ServiceCidr::default().to_string(), DEFAULT_SERVICE_CIDR);
    for (bad, says) in [
        ("198.19.128.1/17", "did you mean 198.19.128.0/17?"),
        ("198.19.0.0", "expected an IPv4 range"),
        ("fd00::/108", "IPv6 ranges are not supported"),
        ("198.19.0.0/31", "from 0 to 30"),
        ("198.19.0.0/x", "from 0 to 30"),
    ] {
        let e = bad.parse::<ServiceCidr>().unwrap_err().to_string();
        assert!(e.contains(says) && e.contains(bad), "{bad}: {e}");
    }
}

#[test]
fn services_without_an_address_get_one_in_the_range_and_user_set_ones_win() {
    let range: ServiceCidr = "198.19.128.0/17".parse().unwrap();
    let s = state(&[
        svc("default", "web", None),
        svc("default", "db", Some("198.19.0.10")),
        svc("default", "api", None),
    ]);
    let (out, alloc) = assign(&range, &Allocations::new(), &s);
    assert_eq!(ip_of(&out, "db"), Some("198.19.0.10".parse().unwrap()));
    let (web, api) = (ip_of(&out, "web").unwrap(), ip_of(&out, "api").unwrap());
    assert_ne!(web, api);
    for ip in [web, api] {
        let IpAddr::V4(v4) = ip else { panic!("{ip}") };
        assert!(range.allocatable(v4), "{ip}");
    }
    assert_eq!(
        alloc.len(),
        2,
        "user-set addresses are not allocations: {alloc:?}"
    );
    // The same names get the same addresses from nothing (a lost file, another control plane).
    let (again, _) = assign(&range, &Allocations::new(), &s);
    assert_eq!(again, out);
}

#[test]
fn a_user_set_address_evicts_an_allocation_and_deletion_frees_it() {
    let range: ServiceCidr = "198.19.128.0/17".parse().unwrap();
    let (out, alloc) = assign(
        &range,
        &Allocations::new(),
        &state(&[svc("default", "web", None)]),
    );
    let web = ip_of(&out, "web").unwrap().to_string();
    // Another Service now sets web's address by hand: it keeps it, web moves.
    let s = state(&[
        svc("default", "web", None),
        svc("default", "db", Some(&web)),
    ]);
    let (out, alloc2) = assign(&range, &alloc, &s);
    assert_eq!(ip_of(&out, "db").unwrap().to_string(), web);
    let moved = ip_of(&out, "web").unwrap();
    assert_ne!(moved.to_string(), web);
    // Later changes keep web's new address.
    let (out, alloc3) = assign(&range, &alloc2, &s);
    assert_eq!(ip_of(&out, "web"), Some(moved));
    // A deleted Service frees its address.
    let (_, alloc4) = assign(&range, &alloc3, &state(&[svc("default", "db", Some(&web))]));
    assert!(alloc4.is_empty(), "{alloc4:?}");
}

#[test]
fn a_full_range_leaves_the_rest_without_an_address() {
    let range: ServiceCidr = "198.19.200.0/30".parse().unwrap();
    let s = state(&[
        svc("default", "a", None),
        svc("default", "b", None),
        svc("default", "c", None),
    ]);
    let (out, alloc) = assign(&range, &Allocations::new(), &s);
    assert_eq!(alloc.len(), 2, "{alloc:?}");
    let without: Vec<_> = out
        .services
        .values()
        .filter(|s| s.cluster_ip.is_none())
        .collect();
    assert_eq!(without.len(), 1);
}

#[test]
fn allocations_survive_a_restart_through_the_store_file() {
    let dir = temp_store("restart");
    let range = ServiceCidr::default();
    // Two services compete for nothing; a third is added after the first run.
    let first = state(&[svc("default", "web", None)]);
    let mut ips = ServiceIps::load(&dir, range).unwrap();
    let web = ip_of(&ips.apply(&first), "web");
    // Evict web's address by hand so it moves off its hashed slot: only the file remembers.
    let evicting = state(&[
        svc("default", "web", None),
        svc("default", "db", Some(&web.unwrap().to_string())),
    ]);
    let moved = ip_of(&ips.apply(&evicting), "web");
    assert_ne!(moved, web);
    let text = std::fs::read_to_string(dir.join(ALLOCATIONS_DIR).join(FILE)).unwrap();
    assert!(text.contains("\"default/web\""), "{text}");
    let mut restarted = ServiceIps::load(&dir, range).unwrap();
    assert_eq!(ip_of(&restarted.apply(&evicting), "web"), moved);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_corrupt_allocation_file_is_a_precise_startup_error() {
    let dir = temp_store("corrupt");
    std::fs::create_dir_all(dir.join(ALLOCATIONS_DIR)).unwrap();
    let path = dir.join(ALLOCATIONS_DIR).join(FILE);
    std::fs::write(&path, r#"{"services": {"default/web": "nope"}}"#).unwrap();
    let e = ServiceIps::load(&dir, ServiceCidr::default())
        .err()
        .expect("a corrupt file is refused")
        .to_string();
    assert!(e.contains(&path.display().to_string()), "{e}");
    assert!(
        e.contains("services.default/web: not an IPv4 address"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_state_where_every_service_sets_its_address_passes_through_uncopied() {
    let dir = temp_store("passthrough");
    let mut ips = ServiceIps::load(&dir, ServiceCidr::default()).unwrap();
    let s = state(&[svc("default", "db", Some("198.19.0.10"))]);
    assert!(Arc::ptr_eq(&ips.apply(&s), &s));
    assert!(
        !dir.join(ALLOCATIONS_DIR).exists(),
        "nothing allocated, nothing written"
    );
    let with_web = state(&[
        svc("default", "db", Some("198.19.0.10")),
        svc("default", "web", None),
    ]);
    assert!(ip_of(&ips.apply(&with_web), "web").is_some());
    std::fs::remove_dir_all(&dir).unwrap();
}
