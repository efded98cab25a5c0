use super::*;

const REQUIRED: [(&str, &str); 2] = [
    (ENV_DESTINATION_SVC_ADDR, "127.0.0.1:8086"),
    (ENV_POLICY_WORKLOAD, "default:web-1"),
];

fn env(pairs: &[(&'static str, &'static str)]) -> HashMap<&'static str, &'static str> {
    REQUIRED.iter().chain(pairs).copied().collect()
}

#[test]
fn defaults() {
    let c = Config::from_env(&env(&[])).expect("valid");
    assert_eq!(c.policy_addr, "127.0.0.1:8086");
    assert_eq!(c.destination_context, r#"{"ns":"default"}"#);
    assert_eq!(c.inbound_listen_addr.to_string(), "0.0.0.0:4143");
    assert_eq!(c.outbound_listen_addr.to_string(), "127.0.0.1:4140");
    assert_eq!(c.admin_listen_addr.to_string(), "127.0.0.1:4191");
    assert!(c.outbound_opaque_ports.contains(&3306));
    assert!(!c.outbound_opaque_ports.contains(&80));
    assert!(!c.inbound_opaque_ports.contains(&3306));
    assert_eq!(c.outbound_failfast_timeout, Duration::from_secs(3));
    assert_eq!(
        c.destination_suffixes,
        vec!["svc.cluster.local.".to_string()]
    );
    assert_eq!(c.cluster_domain, "cluster.local");
    assert!(c.shutdown_endpoint_enabled);
    assert_eq!(c.control_backoff_min, Duration::from_millis(100));
    assert_eq!(c.control_backoff_max, Duration::from_secs(5));
    assert_eq!(
        c.outbound_connect_backoff,
        (Duration::from_millis(100), Duration::from_millis(500))
    );
}

#[test]
fn outbound_connect_backoff() {
    let env = |min, max| {
        Config::from_env(&HashMap::from([
            (ENV_DESTINATION_SVC_ADDR, "127.0.0.1:8086"),
            (ENV_POLICY_WORKLOAD, "default:web-1"),
            (ENV_OUTBOUND_CONNECT_BACKOFF_MIN, min),
            (ENV_OUTBOUND_CONNECT_BACKOFF_MAX, max),
        ]))
    };
    let c = env("50ms", "2s").expect("valid");
    assert_eq!(
        c.outbound_connect_backoff,
        (Duration::from_millis(50), Duration::from_secs(2))
    );
    let text = env("1s", "500ms").expect_err("min over max").to_string();
    assert!(
        text.contains("WEFT_PROXY_OUTBOUND_CONNECT_BACKOFF_MAX: must be at least WEFT_PROXY_OUTBOUND_CONNECT_BACKOFF_MIN (1s)"),
        "{text}"
    );
}

#[test]
fn durations() {
    assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
    assert_eq!(parse_duration("3s"), Ok(Duration::from_secs(3)));
    assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
    assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
    assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
    assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
    assert_eq!(parse_duration("250µs"), Ok(Duration::from_micros(250)));
    for bad in ["", "3", "s", "3x", "-1s", "1.5s", "ms3", "3ns"] {
        assert!(parse_duration(bad).is_err(), "{bad}");
    }
}

#[test]
fn port_sets() {
    let s = parse_port_set("25, 3306,5000-5010").expect("valid");
    assert!(s.contains(&25) && s.contains(&3306) && s.contains(&5000) && s.contains(&5010));
    assert!(!s.contains(&5011) && !s.contains(&24));
    assert_eq!(parse_port_set(""), Ok(PortSet::default()));
    assert!(parse_port_set("10-5").is_err());
    assert!(parse_port_set("0").is_err());
    assert!(parse_port_set("70000").is_err());
    assert!(parse_port_set("http").is_err());
}

#[test]
fn explicit_mode_lists() {
    let c = Config::from_env(&env(&[
        (ENV_INBOUND_FORWARD_PORTS, "8080,9090=19090"),
        (
            ENV_OUTBOUND_UPSTREAMS,
            "catalog.default.svc.cluster.local:9090=15000, web",
        ),
    ]))
    .expect("valid");
    assert_eq!(
        c.inbound_forward_ports,
        vec![
            ForwardPort {
                app_port: 8080,
                proxy_port: 0
            },
            ForwardPort {
                app_port: 9090,
                proxy_port: 19090
            }
        ]
    );
    assert_eq!(c.outbound_upstreams.len(), 2);
    assert_eq!(
        c.outbound_upstreams[0].host,
        "catalog.default.svc.cluster.local"
    );
    assert_eq!(c.outbound_upstreams[0].port, 9090);
    assert_eq!(c.outbound_upstreams[0].local_port, 15000);
    assert_eq!(c.outbound_upstreams[1].host, "web");
    assert_eq!(c.outbound_upstreams[1].port, 80);
    assert_eq!(c.outbound_upstreams[1].local_port, 0);
}

#[test]
fn empty_list_overrides_default_and_suffix_forms() {
    let c = Config::from_env(&env(&[
        (ENV_OUTBOUND_PORTS_DISABLE_PROTOCOL_DETECTION, ""),
        (ENV_DESTINATION_PROFILE_SUFFIXES, "."),
    ]))
    .expect("valid");
    assert!(!c.outbound_opaque_ports.contains(&3306));
    assert_eq!(c.destination_suffixes, vec![".".to_string()]);
    let c = Config::from_env(&env(&[(
        ENV_DESTINATION_PROFILE_SUFFIXES,
        "svc.example.org,cluster.local.",
    )]))
    .expect("valid");
    assert_eq!(
        c.destination_suffixes,
        vec!["svc.example.org.".to_string(), "cluster.local.".to_string()]
    );
}

#[test]
fn every_bad_value_is_reported() {
    let e = Config::from_env(&HashMap::from([
        (ENV_INBOUND_LISTEN_ADDR, "nope"),
        (ENV_OUTBOUND_DETECT_TIMEOUT, "3 seconds"),
        (ENV_INBOUND_FORWARD_PORTS, "8080=x"),
        (ENV_SHUTDOWN_ENDPOINT_ENABLED, "maybe"),
        (ENV_CONTROL_BACKOFF_MIN, "10s"),
    ]))
    .expect_err("invalid");
    let text = e.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 7, "{text}");
    assert_eq!(lines[0], "WEFT_PROXY_DESTINATION_SVC_ADDR: required");
    assert!(lines[1].starts_with("WEFT_PROXY_POLICY_WORKLOAD: required"));
    assert!(
        lines[2].starts_with("WEFT_PROXY_INBOUND_LISTEN_ADDR: expected IP:PORT"),
        "{text}"
    );
    assert!(lines[2].ends_with(r#"(got "nope")"#), "{text}");
    assert!(text.contains(r#"WEFT_PROXY_INBOUND_FORWARD_PORTS: "x" is not a port"#));
    assert!(text.contains(r#"WEFT_PROXY_OUTBOUND_DETECT_TIMEOUT: expected a duration"#));
    assert!(text.contains(r#"(got "3 seconds")"#));
    assert!(text
        .contains(r#"WEFT_PROXY_SHUTDOWN_ENDPOINT_ENABLED: expected true or false (got "maybe")"#));
    assert!(text.contains("WEFT_PROXY_CONTROL_BACKOFF_MAX: must be at least"));
}

#[test]
fn bad_workload_and_addresses() {
    let e = Config::from_env(&HashMap::from([
        (ENV_DESTINATION_SVC_ADDR, "control:port"),
        (ENV_POLICY_WORKLOAD, "web-1"),
        (ENV_OUTBOUND_UPSTREAMS, "bad host:80"),
    ]))
    .expect_err("invalid");
    let names: Vec<&str> = e.errors.iter().map(|e| e.name).collect();
    assert_eq!(
        names,
        vec![
            ENV_DESTINATION_SVC_ADDR,
            ENV_POLICY_WORKLOAD,
            ENV_OUTBOUND_UPSTREAMS
        ]
    );
    let ok = Config::from_env(&HashMap::from([
        (ENV_DESTINATION_SVC_ADDR, "localhost:8086"),
        (ENV_POLICY_WORKLOAD, "shop:web-1"),
    ]))
    .expect("valid");
    assert_eq!(ok.workload.namespace, "shop");
}

/// The identity variables of a proxy with identity (anchors from the test CA).
fn with_identity(pairs: &[(&'static str, &'static str)]) -> HashMap<&'static str, &'static str> {
    let mut env = env(pairs);
    env.insert(ENV_IDENTITY_TOKEN_FILE, "/run/token");
    env.insert(
        ENV_IDENTITY_LOCAL_NAME,
        "web-1.default.serviceaccount.identity.weft.cluster.local",
    );
    env.insert(ENV_IDENTITY_TRUST_ANCHORS, test_anchor());
    env
}

/// A self-signed CA certificate, PEM (leaked: the env maps hold `'static` strings).
fn test_anchor() -> &'static str {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).expect("self-signed");
    Box::leak(cert.pem().into_boxed_str())
}

#[test]
fn the_control_plane_is_reached_over_tls_or_on_loopback() {
    const CP: &str = "weft-control.weft.serviceaccount.identity.weft.cluster.local";
    // Plaintext: loopback only, every entry of a list.
    let ok = Config::from_env(&env(&[(
        ENV_DESTINATION_SVC_ADDR,
        "127.0.0.1:1, [::1]:2,localhost:3",
    )]))
    .expect("loopback list");
    assert_eq!(ok.destination_name, None);
    let e = Config::from_env(&env(&[(
        ENV_DESTINATION_SVC_ADDR,
        "127.0.0.1:1,10.0.0.7:8086",
    )]))
    .expect_err("plaintext off loopback");
    assert_eq!(e.errors.len(), 1, "{e}");
    assert_eq!(e.errors[0].name, ENV_DESTINATION_SVC_ADDR);
    assert!(
        e.errors[0].reason.contains("10.0.0.7:8086")
            && e.errors[0].reason.contains(ENV_DESTINATION_SVC_NAME),
        "{e}"
    );
    // A name needs identity (the anchors to verify the control plane with).
    let e = Config::from_env(&env(&[
        (ENV_DESTINATION_SVC_ADDR, "control.weft:8086"),
        (ENV_DESTINATION_SVC_NAME, CP),
    ]))
    .expect_err("TLS without anchors");
    assert_eq!(
        e.errors.iter().map(|e| e.name).collect::<Vec<_>>(),
        [ENV_DESTINATION_SVC_NAME]
    );
    // With identity, the policy and identity clients share the destination's address and name.
    let c = Config::from_env(&with_identity(&[
        (
            ENV_DESTINATION_SVC_ADDR,
            "control-a.weft:8086,control-b.weft:8086",
        ),
        (ENV_DESTINATION_SVC_NAME, CP),
    ]))
    .expect("TLS to two replicas");
    assert_eq!(c.destination_name.as_deref(), Some(CP));
    assert_eq!(c.policy_name.as_deref(), Some(CP));
    let id = c.identity.expect("identity");
    assert_eq!(
        (id.svc_addr.as_str(), id.svc_name.as_deref()),
        (c.destination_addr.as_str(), Some(CP))
    );
    // A policy address of its own needs a name of its own off loopback.
    let e = Config::from_env(&with_identity(&[
        (ENV_DESTINATION_SVC_ADDR, "control.weft:8086"),
        (ENV_DESTINATION_SVC_NAME, CP),
        (ENV_POLICY_SVC_ADDR, "policy.weft:8090"),
    ]))
    .expect_err("policy in plaintext off loopback");
    assert_eq!(
        e.errors.iter().map(|e| e.name).collect::<Vec<_>>(),
        [ENV_POLICY_SVC_ADDR]
    );
    // Malformed lists and names are named precisely.
    let e = Config::from_env(&env(&[
        (ENV_DESTINATION_SVC_ADDR, "127.0.0.1:1,nope"),
        (ENV_DESTINATION_SVC_NAME, "not a name"),
    ]))
    .expect_err("bad list and name");
    let names: Vec<&str> = e.errors.iter().map(|e| e.name).collect();
    assert!(
        names.contains(&ENV_DESTINATION_SVC_ADDR) && names.contains(&ENV_DESTINATION_SVC_NAME),
        "{e}"
    );
}

#[test]
fn cores_choose_the_runtime() {
    let base = [
        (ENV_DESTINATION_SVC_ADDR, "127.0.0.1:8086"),
        (ENV_POLICY_WORKLOAD, "shop:web-1"),
    ];
    let with = |cores: &'static str| {
        let mut env = HashMap::from(base);
        env.insert(ENV_CORES, cores);
        Config::from_env(&env)
    };
    let unset = Config::from_env(&HashMap::from(base)).expect("valid");
    assert_eq!(unset.cores, None);
    assert!(unset.worker_threads() >= 1);
    let one = with("1").expect("valid");
    assert_eq!(one.worker_threads(), 1);
    let rt = one.runtime().expect("runtime");
    assert_eq!(
        rt.handle().runtime_flavor(),
        tokio::runtime::RuntimeFlavor::CurrentThread
    );
    let two = with(" 2 ").expect("valid");
    assert_eq!(two.worker_threads(), 2);
    // More cores are more single-threaded runtimes (workers.rs), never the work-stealing one.
    assert_eq!(
        two.runtime().expect("runtime").handle().runtime_flavor(),
        tokio::runtime::RuntimeFlavor::CurrentThread
    );
    for bad in ["0", "-1", "two", "1.5", "257"] {
        let e = with(bad).expect_err(bad).to_string();
        assert_eq!(
            e,
            format!("WEFT_PROXY_CORES: must be a whole number from 1 to 256 (got {bad:?})")
        );
    }
}

#[test]
fn sched_slice_defaults_to_the_kernels_floor_and_0_leaves_the_kernels_default() {
    let with = |slice| Config::from_env(&env(&[(ENV_SCHED_SLICE, slice)]));
    let unset = Config::from_env(&env(&[])).expect("valid");
    assert_eq!(unset.sched_slice, Some(Duration::from_micros(100)));
    assert_eq!(with("0").expect("valid").sched_slice, None);
    assert_eq!(
        with("3ms").expect("valid").sched_slice,
        Some(Duration::from_millis(3))
    );
    for (bad, reason) in [
        (
            "50us",
            "must be 0 (the kernel's default) or from 100us to 100ms",
        ),
        (
            "101ms",
            "must be 0 (the kernel's default) or from 100us to 100ms",
        ),
        ("fast", "expected a duration like 500ms, 3s, 2m or 1h"),
    ] {
        assert_eq!(
            with(bad).expect_err(bad).to_string(),
            format!("WEFT_PROXY_SCHED_SLICE: {reason} (got {bad:?})")
        );
    }
}

#[test]
fn pool_limits_per_direction() {
    let base = [
        (ENV_DESTINATION_SVC_ADDR, "127.0.0.1:8086"),
        (ENV_POLICY_WORKLOAD, "shop:web-1"),
    ];
    let defaults = Config::from_env(&HashMap::from(base)).expect("valid");
    assert_eq!(defaults.outbound_pool, PoolLimits::default());
    assert_eq!(defaults.inbound_pool, PoolLimits::default());

    let mut env = HashMap::from(base);
    env.extend([
        (ENV_OUTBOUND_HTTP1_POOL_IDLE_TIMEOUT, "10s"),
        (ENV_OUTBOUND_MAX_IDLE_CONNS_PER_ENDPOINT, "0"),
        (ENV_INBOUND_HTTP1_POOL_IDLE_TIMEOUT, "500ms"),
        (ENV_INBOUND_MAX_IDLE_CONNS_PER_ENDPOINT, "64"),
    ]);
    let c = Config::from_env(&env).expect("valid");
    assert_eq!(c.outbound_pool.h1_idle_timeout, Duration::from_secs(10));
    assert_eq!(c.outbound_pool.max_idle_h1_per_endpoint, 0);
    assert_eq!(c.inbound_pool.h1_idle_timeout, Duration::from_millis(500));
    assert_eq!(c.inbound_pool.max_idle_h1_per_endpoint, 64);
    assert_eq!(
        c.inbound_pool.h2_idle_timeout,
        PoolLimits::default().h2_idle_timeout
    );

    let mut env = HashMap::from(base);
    env.extend([
        (ENV_OUTBOUND_HTTP1_POOL_IDLE_TIMEOUT, "soon"),
        (ENV_INBOUND_MAX_IDLE_CONNS_PER_ENDPOINT, "-3"),
    ]);
    let text = Config::from_env(&env).expect_err("invalid").to_string();
    assert!(
        text.contains(
            "WEFT_PROXY_OUTBOUND_HTTP1_CONNECTION_POOL_IDLE_TIMEOUT: expected a duration"
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"WEFT_PROXY_INBOUND_MAX_IDLE_CONNS_PER_ENDPOINT: must be a whole number from 0 to 100000 (got "-3")"#),
        "{text}"
    );
}

#[test]
fn retry_budget_defaults_and_every_bad_value() {
    let c = Config::from_env(&env(&[])).expect("valid");
    assert_eq!(
        c.outbound_retry_budget,
        RetryBudget {
            ratio: 0.2,
            min_per_second: 10,
            ttl: Duration::from_secs(10)
        }
    );
    let c = Config::from_env(&env(&[
        (ENV_OUTBOUND_RETRY_BUDGET_RATIO, "0.5"),
        (ENV_OUTBOUND_RETRY_BUDGET_MIN_PER_SECOND, "0"),
        (ENV_OUTBOUND_RETRY_BUDGET_TTL, "30s"),
    ]))
    .expect("valid");
    assert_eq!(c.outbound_retry_budget.ratio, 0.5);
    assert_eq!(c.outbound_retry_budget.min_per_second, 0);
    assert_eq!(c.outbound_retry_budget.ttl, Duration::from_secs(30));

    let text = Config::from_env(&env(&[
        (ENV_OUTBOUND_RETRY_BUDGET_RATIO, "-1"),
        (ENV_OUTBOUND_RETRY_BUDGET_MIN_PER_SECOND, "ten"),
        (ENV_OUTBOUND_RETRY_BUDGET_TTL, "100ms"),
    ]))
    .expect_err("invalid")
    .to_string();
    for line in [
        r#"WEFT_PROXY_OUTBOUND_RETRY_BUDGET_RATIO: must be a number from 0 to 1000 (e.g. 0.2) (got "-1")"#,
        r#"WEFT_PROXY_OUTBOUND_RETRY_BUDGET_MIN_PER_SECOND: must be a whole number (e.g. 10) (got "ten")"#,
        r#"WEFT_PROXY_OUTBOUND_RETRY_BUDGET_TTL: must be from 1s to 60s (got "100ms")"#,
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }
}

#[test]
fn inbound_policy_defaults_and_bad_values() {
    let c = Config::from_env(&env(&[])).expect("valid");
    assert_eq!(c.inbound_default_policy, DefaultPolicy::AllUnauthenticated);
    assert_eq!(c.inbound_failfast_timeout, Duration::from_secs(1));
    let nets: Vec<String> = c.cluster_networks.iter().map(|n| n.to_string()).collect();
    assert_eq!(nets.join(","), DEFAULT_POLICY_CLUSTER_NETWORKS);

    let c = Config::from_env(&env(&[
        (ENV_INBOUND_DEFAULT_POLICY, "cluster-authenticated"),
        (ENV_POLICY_CLUSTER_NETWORKS, "10.1.0.0/16, fd00::/8"),
        (ENV_INBOUND_FAILFAST_TIMEOUT, "250ms"),
    ]))
    .expect("valid");
    assert_eq!(
        c.inbound_default_policy,
        DefaultPolicy::ClusterAuthenticated
    );
    assert_eq!(c.cluster_networks.len(), 2);
    assert_eq!(c.inbound_failfast_timeout, Duration::from_millis(250));

    let e = Config::from_env(&env(&[
        (ENV_INBOUND_DEFAULT_POLICY, "allow"),
        (ENV_POLICY_CLUSTER_NETWORKS, "10.0.0.0/8,10.0.0.0/40"),
        (ENV_INBOUND_FAILFAST_TIMEOUT, "soon"),
    ]))
    .expect_err("invalid");
    let names: Vec<&str> = e.errors.iter().map(|e| e.name).collect();
    assert_eq!(
        names,
        vec![
            ENV_INBOUND_DEFAULT_POLICY,
            ENV_POLICY_CLUSTER_NETWORKS,
            ENV_INBOUND_FAILFAST_TIMEOUT
        ]
    );
    assert!(
        e.to_string()
            .contains("expected one of all-unauthenticated"),
        "{e}"
    );
}

#[test]
fn access_log_and_metrics_retention() {
    let c = Config::from_env(&env(&[])).expect("valid");
    assert_eq!(c.access_log, None);
    assert_eq!(c.metrics_retain_idle, Duration::from_secs(600));
    for (value, want) in [
        ("", None),
        ("apache", Some(AccessLogFormat::Apache)),
        ("json", Some(AccessLogFormat::Json)),
        ("JSON", Some(AccessLogFormat::Json)),
    ] {
        let c = Config::from_env(&env(&[(ENV_ACCESS_LOG, value)])).expect("valid");
        assert_eq!(c.access_log, want, "{value:?}");
    }
    let c = Config::from_env(&env(&[(ENV_METRICS_RETAIN_IDLE, "30s")])).expect("valid");
    assert_eq!(c.metrics_retain_idle, Duration::from_secs(30));

    // A bad value is reported with the others.
    let e = Config::from_env(&env(&[
        (ENV_ACCESS_LOG, "combined"),
        (ENV_METRICS_RETAIN_IDLE, "ten minutes"),
        (ENV_OUTBOUND_DETECT_TIMEOUT, "3 seconds"),
    ]))
    .expect_err("invalid");
    let text = e.to_string();
    assert_eq!(e.errors.len(), 3, "{text}");
    assert!(
        text.contains(r#"WEFT_PROXY_ACCESS_LOG: expected apache or json (unset or empty: off) (got "combined")"#),
        "{text}"
    );
    assert!(text.contains("WEFT_PROXY_METRICS_RETAIN_IDLE: expected a duration"));
}

#[test]
fn tap_server_settings() {
    let c = Config::from_env(&env(&[])).expect("valid");
    assert_eq!(c.tap_listen_addr.to_string(), DEFAULT_TAP_LISTEN_ADDR);
    assert_eq!(c.tap_svc_name, None);
    let c = Config::from_env(&env(&[
        (ENV_TAP_LISTEN_ADDR, "0.0.0.0:0"),
        (
            ENV_TAP_SVC_NAME,
            "Tap.weft.serviceaccount.identity.weft.cluster.local.",
        ),
    ]))
    .expect("valid");
    assert_eq!(c.tap_listen_addr.to_string(), "0.0.0.0:0");
    assert_eq!(
        c.tap_svc_name.as_deref(),
        Some("tap.weft.serviceaccount.identity.weft.cluster.local")
    );
    // Both bad values are reported together.
    let e = Config::from_env(&env(&[
        (ENV_TAP_LISTEN_ADDR, "localhost"),
        (ENV_TAP_SVC_NAME, "not a name"),
    ]))
    .expect_err("invalid");
    let text = e.to_string();
    assert_eq!(e.errors.len(), 2, "{text}");
    assert!(text.contains(ENV_TAP_LISTEN_ADDR), "{text}");
    assert!(
        text.contains("WEFT_PROXY_TAP_SVC_NAME: must be a DNS-like identity"),
        "{text}"
    );
}

#[test]
fn tracing_is_off_without_a_collector_and_reports_bad_values_by_name() {
    let c = Config::from_env(&env(&[])).expect("valid");
    assert_eq!(c.trace, None);
    // Without a collector the other variables are still checked, but tracing stays off.
    let c = Config::from_env(&env(&[(ENV_TRACE_SAMPLE_RATE, "0.5")])).expect("valid");
    assert_eq!(c.trace, None);

    let c =
        Config::from_env(&env(&[(ENV_TRACE_COLLECTOR_SVC_ADDR, "collector:4317")])).expect("valid");
    assert_eq!(
        c.trace,
        Some(TraceConfig {
            collector_addr: "collector:4317".into(),
            service_name: "web-1".into(),
            sample_rate: 0.0,
            attributes: vec![],
        }),
        "defaults: the workload's name, continue-only sampling"
    );
    let c = Config::from_env(&env(&[
        (ENV_TRACE_COLLECTOR_SVC_ADDR, "127.0.0.1:4317"),
        (ENV_TRACE_SERVICE_NAME, "web"),
        (ENV_TRACE_SAMPLE_RATE, "1"),
        (ENV_TRACE_ATTRIBUTES, "cluster=east, team = shop ,empty="),
    ]))
    .expect("valid");
    let t = c.trace.expect("on");
    assert_eq!((t.service_name.as_str(), t.sample_rate), ("web", 1.0));
    assert_eq!(
        t.attributes,
        vec![
            ("cluster".to_string(), "east".to_string()),
            ("team".to_string(), "shop".to_string()),
            ("empty".to_string(), String::new()),
        ]
    );

    let e = Config::from_env(&env(&[
        (ENV_TRACE_COLLECTOR_SVC_ADDR, "collector"),
        (ENV_TRACE_SAMPLE_RATE, "1.5"),
        (ENV_TRACE_ATTRIBUTES, "a=b,oops"),
    ]))
    .expect_err("invalid");
    let text = e.to_string();
    assert_eq!(e.errors.len(), 3, "{text}");
    assert!(text.contains("WEFT_PROXY_TRACE_COLLECTOR_SVC_ADDR: expected HOST:PORT"));
    assert!(text.contains(
        r#"WEFT_PROXY_TRACE_SAMPLE_RATE: must be a number from 0.0 to 1.0 (e.g. 0.01) (got "1.5")"#
    ));
    assert!(
        text.contains(r#"WEFT_PROXY_TRACE_ATTRIBUTES: "oops" is not KEY=VALUE"#),
        "{text}"
    );
}

#[test]
fn gateway_suffixes_and_trusted_gateways() {
    let c = Config::from_env(&env(&[])).expect("valid");
    assert!(c.inbound_gateway_suffixes.is_empty());
    assert!(c.inbound_trusted_gateway_identities.is_empty());

    let c = Config::from_env(&env(&[
        (
            ENV_INBOUND_GATEWAY_SUFFIXES,
            "svc.cluster.local., svc.west.local",
        ),
        (
            ENV_INBOUND_TRUSTED_GATEWAY_IDENTITIES,
            "GW.weft-multicluster.serviceaccount.identity.west.local.",
        ),
    ]))
    .expect("valid");
    assert_eq!(
        c.inbound_gateway_suffixes,
        vec!["svc.cluster.local.", "svc.west.local."]
    );
    assert_eq!(
        c.inbound_trusted_gateway_identities,
        vec!["gw.weft-multicluster.serviceaccount.identity.west.local"]
    );

    // Linkerd's name, when ours is unset; ours wins when both are.
    let c =
        Config::from_env(&env(&[(ENV_LINKERD_INBOUND_GATEWAY_SUFFIXES, "svc.a.")])).expect("valid");
    assert_eq!(c.inbound_gateway_suffixes, vec!["svc.a."]);
    let c = Config::from_env(&env(&[
        (ENV_LINKERD_INBOUND_GATEWAY_SUFFIXES, "svc.a."),
        (ENV_INBOUND_GATEWAY_SUFFIXES, "svc.b."),
    ]))
    .expect("valid");
    assert_eq!(c.inbound_gateway_suffixes, vec!["svc.b."]);

    // Both bad values are named, each with its variable.
    let err = Config::from_env(&env(&[
        (ENV_LINKERD_INBOUND_GATEWAY_SUFFIXES, "svc..bad"),
        (
            ENV_INBOUND_TRUSTED_GATEWAY_IDENTITIES,
            "ok.example, not an identity",
        ),
    ]))
    .expect_err("invalid")
    .to_string();
    assert!(err.contains(ENV_LINKERD_INBOUND_GATEWAY_SUFFIXES), "{err}");
    assert!(
        err.contains(ENV_INBOUND_TRUSTED_GATEWAY_IDENTITIES),
        "{err}"
    );
    assert!(err.contains("not an identity"), "{err}");
}

#[test]
fn server_limits_defaults_values_linkerd_names_and_every_bad_value() {
    let c = Config::from_env(&env(&[])).expect("valid");
    assert_eq!(c.inbound_limits, ServerLimits::default());
    assert_eq!(c.outbound_limits.max_connections, 10_000);
    assert_eq!(c.outbound_limits.http1_max_header_size, 64 * 1024);
    assert_eq!(c.outbound_limits.http2_max_concurrent_streams, 100);
    assert_eq!(c.inbound_limits.idle_timeout, Duration::from_secs(120));
    assert_eq!(c.outbound_limits.idle_timeout, Duration::from_secs(3600));

    let c = Config::from_env(&env(&[
        (ENV_INBOUND_MAX_CONNECTIONS, "5"),
        (ENV_INBOUND_HTTP1_MAX_HEADER_SIZE, "8192"),
        (ENV_LINKERD_INBOUND_HTTP2_MAX_CONCURRENT_STREAMS, "7"),
        (ENV_INBOUND_IDLE_TIMEOUT, "2s"),
        (ENV_OUTBOUND_HTTP2_MAX_CONCURRENT_STREAMS, "9"),
        (ENV_LINKERD_OUTBOUND_HTTP2_MAX_CONCURRENT_STREAMS, "1"),
    ]))
    .expect("valid");
    assert_eq!(
        c.inbound_limits,
        ServerLimits {
            max_connections: 5,
            http1_max_header_size: 8192,
            http2_max_concurrent_streams: 7,
            idle_timeout: Duration::from_secs(2),
        }
    );
    assert_eq!(
        c.outbound_limits.http2_max_concurrent_streams, 9,
        "ours wins over Linkerd's name"
    );
    assert_eq!(c.outbound_limits.max_connections, 10_000, "per direction");

    let text = Config::from_env(&env(&[
        (ENV_INBOUND_MAX_CONNECTIONS, "0"),
        (ENV_OUTBOUND_MAX_CONNECTIONS, "many"),
        (ENV_INBOUND_HTTP1_MAX_HEADER_SIZE, "10"),
        (ENV_OUTBOUND_HTTP1_MAX_HEADER_SIZE, "1048576"),
        (ENV_INBOUND_HTTP2_MAX_CONCURRENT_STREAMS, "0"),
        (ENV_LINKERD_OUTBOUND_HTTP2_MAX_CONCURRENT_STREAMS, "-3"),
        (ENV_INBOUND_IDLE_TIMEOUT, "10ms"),
        (ENV_OUTBOUND_IDLE_TIMEOUT, "soon"),
    ]))
    .expect_err("invalid")
    .to_string();
    for name in [
        ENV_INBOUND_MAX_CONNECTIONS,
        ENV_OUTBOUND_MAX_CONNECTIONS,
        ENV_INBOUND_HTTP1_MAX_HEADER_SIZE,
        ENV_OUTBOUND_HTTP1_MAX_HEADER_SIZE,
        ENV_INBOUND_HTTP2_MAX_CONCURRENT_STREAMS,
        ENV_LINKERD_OUTBOUND_HTTP2_MAX_CONCURRENT_STREAMS,
        ENV_INBOUND_IDLE_TIMEOUT,
        ENV_OUTBOUND_IDLE_TIMEOUT,
    ] {
        assert!(text.contains(name), "{name} in {text}");
    }
    assert_eq!(text.lines().count(), 8, "{text}");
    assert!(
        text.contains("must be a number of bytes from 1024 to 262144"),
        "{text}"
    );
}
