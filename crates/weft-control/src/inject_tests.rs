//! Unit tests of the injection functions: each annotation, both modes, idempotence and the
//! uninject round trip, with a stand-in [`Sidecar`] (the real variables are the `weft` binary's
//! and are checked by its golden files).

use super::*;

struct FakeSidecar;

impl Sidecar for FakeSidecar {
    fn proxy_env(&self, s: &Settings) -> Vec<Value> {
        let mut vars = vec![
            env("DST", s.destination_addr()),
            env("NAME", s.local_name()),
            env_from_configmap("ANCHORS", TRUST_ROOTS_CONFIGMAP, TRUST_ROOTS_KEY),
        ];
        if let Some(level) = &s.log_level {
            vars.push(env("LOG", level.clone()));
        }
        if !s.opaque_ports.is_empty() {
            vars.push(env("OPAQUE", s.opaque_ports.clone()));
        }
        vars
    }

    fn init_args(&self, s: &Settings) -> Vec<String> {
        vec![
            format!("--proxy-uid={}", s.proxy_uid),
            format!("--skip-inbound-ports={}", s.skip_inbound_ports),
            format!("--skip-outbound-ports={}", s.skip_outbound_ports),
        ]
    }
}

fn injector() -> Injector {
    Injector {
        images: Images {
            registry: "reg.example/weft".into(),
            version: "1.2.3".into(),
        },
        defaults: Defaults::default(),
        cluster_domain: "cluster.local".into(),
        cni: false,
        trust_anchors: None,
        sidecar: Arc::new(FakeSidecar),
    }
}

/// A Deployment's pod template with `annotations`.
fn template(annotations: &[(&str, &str)]) -> Value {
    let annotations: Map<String, Value> = annotations
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    json!({
        "metadata": {"labels": {"app": "web"}, "annotations": annotations},
        "spec": {
            "containers": [{"name": "web", "image": "nginx:1.27", "ports": [{"containerPort": 80}]}],
            "volumes": [{"name": "data", "emptyDir": {}}],
        },
    })
}

fn enabled_template(extra: &[(&str, &str)]) -> Value {
    let mut a = vec![(INJECT_ANNOTATION, "enabled")];
    a.extend_from_slice(extra);
    template(&a)
}

fn no_ns() -> BTreeMap<String, String> {
    BTreeMap::new()
}

fn injected(extra: &[(&str, &str)]) -> Value {
    let mut t = enabled_template(extra);
    assert_eq!(injector().inject(&mut t, &no_ns()), Ok(Outcome::Injected));
    t
}

fn names(list: &Value) -> Vec<&str> {
    list.as_array()
        .map(|cs| cs.iter().filter_map(|c| c["name"].as_str()).collect())
        .unwrap_or_default()
}

fn proxy(t: &Value) -> &Value {
    ["initContainers", "containers"]
        .iter()
        .flat_map(|l| t["spec"][l].as_array().into_iter().flatten())
        .find(|c| c["name"] == PROXY_CONTAINER)
        .expect("a proxy container")
}

fn env_value<'a>(c: &'a Value, name: &str) -> Option<&'a Value> {
    c["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
        .map(|e| e.get("value").unwrap_or(&e["valueFrom"]))
}

/// The annotations an error names.
fn bad_annotations(err: &InjectError) -> Vec<&'static str> {
    match err {
        InjectError::Annotations(bad) => bad.iter().map(|b| b.annotation).collect(),
        other => panic!("not an annotation error: {other}"),
    }
}

fn settings_error(extra: &[(&str, &str)]) -> InjectError {
    let mut t = enabled_template(extra);
    let before = t.clone();
    let err = injector().inject(&mut t, &no_ns()).expect_err("an error");
    assert_eq!(t, before, "a failed injection leaves the template alone");
    err
}

#[test]
fn native_mode_puts_init_then_proxy_first_among_init_containers() {
    let t = injected(&[]);
    assert_eq!(
        names(&t["spec"]["initContainers"]),
        [INIT_CONTAINER, PROXY_CONTAINER]
    );
    assert_eq!(names(&t["spec"]["containers"]), ["web"]);
    let p = proxy(&t);
    assert_eq!(p["restartPolicy"], "Always");
    assert_eq!(p["image"], "reg.example/weft/weft-proxy:1.2.3");
    assert_eq!(p["startupProbe"]["httpGet"]["path"], "/ready");
    assert_eq!(p["startupProbe"]["httpGet"]["port"], ADMIN_PORT);
    assert_eq!(p["readinessProbe"]["httpGet"]["path"], "/ready");
    assert!(p.get("lifecycle").is_none());
    assert_eq!(p["securityContext"]["runAsUser"], DEFAULT_PROXY_UID);
    let init = &t["spec"]["initContainers"][0];
    assert_eq!(init["image"], "reg.example/weft/weft:1.2.3");
    assert_eq!(init["args"][0], "init");
    assert_eq!(
        init["securityContext"]["capabilities"]["add"],
        json!(["NET_ADMIN", "NET_RAW"])
    );
    assert_eq!(
        names(&t["spec"]["volumes"]),
        ["data", TOKEN_VOLUME],
        "the pod's volumes stay first"
    );
    let token = &t["spec"]["volumes"][1]["projected"]["sources"][0]["serviceAccountToken"];
    assert_eq!(token["audience"], TOKEN_AUDIENCE);
    assert_eq!(token["expirationSeconds"], 86400);
    assert_eq!(p["volumeMounts"][0]["mountPath"], TOKEN_DIR);
    assert_eq!(
        t["metadata"]["annotations"][PROXY_VERSION_ANNOTATION],
        "1.2.3"
    );
    assert_eq!(t["metadata"]["labels"][CONTROL_PLANE_NS_LABEL], "weft");
}

#[test]
fn the_proxy_env_starts_with_the_downward_api_then_the_sidecars() {
    let t = injected(&[]);
    let p = proxy(&t);
    assert_eq!(
        env_value(p, POD_SA_VAR),
        Some(&json!({"fieldRef": {"fieldPath": "spec.serviceAccountName"}}))
    );
    assert_eq!(
        env_value(p, "DST"),
        Some(&json!("weft-dst.weft.svc.cluster.local:8086"))
    );
    assert_eq!(
        env_value(p, "NAME"),
        Some(&json!(
            "$(_pod_sa).$(_pod_ns).serviceaccount.identity.weft.cluster.local"
        ))
    );
    assert_eq!(
        env_value(p, "ANCHORS"),
        Some(&json!({"configMapKeyRef": {"name": TRUST_ROOTS_CONFIGMAP, "key": TRUST_ROOTS_KEY}}))
    );
    // Kubernetes expands $(VAR) only from variables defined earlier in the list.
    let position = |n: &str| {
        p["env"]
            .as_array()
            .unwrap()
            .iter()
            .position(|e| e["name"] == n)
            .unwrap()
    };
    assert!(position(POD_SA_VAR) < position("NAME"));
}

#[test]
fn classic_mode_puts_the_proxy_first_with_a_post_start_await() {
    for annotation in [NATIVE_SIDECAR_ANNOTATION, NATIVE_SIDECAR_ALPHA_ANNOTATION] {
        let t = injected(&[(annotation, "false")]);
        assert_eq!(
            names(&t["spec"]["initContainers"]),
            [INIT_CONTAINER],
            "{annotation}"
        );
        assert_eq!(names(&t["spec"]["containers"]), [PROXY_CONTAINER, "web"]);
        let p = proxy(&t);
        assert!(p.get("restartPolicy").is_none());
        assert!(p.get("startupProbe").is_none());
        assert_eq!(
            p["lifecycle"]["postStart"]["exec"]["command"][1], "await",
            "{p}"
        );
    }
}

#[test]
fn proxy_await_disabled_drops_the_wait_in_both_modes() {
    let t = injected(&[(PROXY_AWAIT_ANNOTATION, "disabled")]);
    assert!(proxy(&t).get("startupProbe").is_none());
    let t = injected(&[
        (PROXY_AWAIT_ANNOTATION, "disabled"),
        (NATIVE_SIDECAR_ANNOTATION, "false"),
    ]);
    assert!(proxy(&t).get("lifecycle").is_none());
    assert_eq!(
        names(&t["spec"]["containers"]),
        ["web", PROXY_CONTAINER],
        "without await the app goes first (its logs are kubectl's default)"
    );
    assert_eq!(
        bad_annotations(&settings_error(&[(PROXY_AWAIT_ANNOTATION, "yes")])),
        [PROXY_AWAIT_ANNOTATION]
    );
}

#[test]
fn cni_leaves_out_the_init_container() {
    let mut inj = injector();
    inj.cni = true;
    let mut t = enabled_template(&[]);
    inj.inject(&mut t, &no_ns()).unwrap();
    assert_eq!(names(&t["spec"]["initContainers"]), [PROXY_CONTAINER]);
}

#[test]
fn images_versions_and_pull_policy_follow_their_annotations() {
    let t = injected(&[
        (PROXY_IMAGE_ANNOTATION, "mirror.local/proxy"),
        (PROXY_VERSION_CONFIG_ANNOTATION, "edge-1"),
        (INIT_IMAGE_ANNOTATION, "mirror.local/weft"),
        (INIT_IMAGE_VERSION_ANNOTATION, "edge-2"),
        (IMAGE_PULL_POLICY_ANNOTATION, "Always"),
    ]);
    let p = proxy(&t);
    assert_eq!(p["image"], "mirror.local/proxy:edge-1");
    assert_eq!(p["imagePullPolicy"], "Always");
    assert_eq!(
        t["spec"]["initContainers"][0]["image"],
        "mirror.local/weft:edge-2"
    );
    assert_eq!(
        t["metadata"]["annotations"][PROXY_VERSION_ANNOTATION],
        "edge-1"
    );
    assert_eq!(
        bad_annotations(&settings_error(&[(
            IMAGE_PULL_POLICY_ANNOTATION,
            "Sometimes"
        )])),
        [IMAGE_PULL_POLICY_ANNOTATION]
    );
    assert_eq!(
        bad_annotations(&settings_error(&[(PROXY_IMAGE_ANNOTATION, "has space")])),
        [PROXY_IMAGE_ANNOTATION]
    );
}

#[test]
fn resources_come_from_the_six_annotations() {
    let t = injected(&[
        ("config.linkerd.io/proxy-cpu-request", "100m"),
        ("config.linkerd.io/proxy-cpu-limit", "1"),
        ("config.linkerd.io/proxy-memory-request", "20Mi"),
        ("config.linkerd.io/proxy-memory-limit", "250Mi"),
        ("config.linkerd.io/proxy-ephemeral-storage-request", "1e3"),
        ("config.linkerd.io/proxy-ephemeral-storage-limit", "1.5Gi"),
    ]);
    assert_eq!(
        proxy(&t)["resources"],
        json!({
            "requests": {"cpu": "100m", "memory": "20Mi", "ephemeral-storage": "1e3"},
            "limits": {"cpu": "1", "memory": "250Mi", "ephemeral-storage": "1.5Gi"},
        })
    );
    assert!(injected(&[])["spec"]["initContainers"][1]
        .get("resources")
        .is_none());
    for bad in ["lots", "10 Mi", "1.2.3", "Mi", "5mb"] {
        let err = settings_error(&[("config.linkerd.io/proxy-memory-limit", bad)]);
        assert!(
            err.to_string()
                .contains("config.linkerd.io/proxy-memory-limit"),
            "{bad}: {err}"
        );
    }
}

#[test]
fn port_annotations_reach_the_sidecar_validated() {
    let mut t = enabled_template(&[
        (OPAQUE_PORTS_ANNOTATION, "3306, 5432"),
        (SKIP_INBOUND_PORTS_ANNOTATION, "9000-9010"),
        (SKIP_OUTBOUND_PORTS_ANNOTATION, "25"),
    ]);
    let inj = injector();
    let s = inj
        .settings(&annotations(t.get("metadata")), &no_ns())
        .unwrap();
    assert_eq!(s.opaque_ports, "3306,5432");
    inj.inject(&mut t, &no_ns()).unwrap();
    assert_eq!(env_value(proxy(&t), "OPAQUE"), Some(&json!("3306,5432")));
    let args = &t["spec"]["initContainers"][0]["args"];
    assert!(
        args.as_array()
            .unwrap()
            .contains(&json!("--skip-inbound-ports=9000-9010")),
        "{args}"
    );
    assert!(
        args.as_array()
            .unwrap()
            .contains(&json!("--skip-outbound-ports=25")),
        "{args}"
    );
    for annotation in [
        OPAQUE_PORTS_ANNOTATION,
        SKIP_INBOUND_PORTS_ANNOTATION,
        SKIP_OUTBOUND_PORTS_ANNOTATION,
    ] {
        let err = settings_error(&[(annotation, "80,http")]);
        assert_eq!(bad_annotations(&err), [annotation], "{err}");
    }
}

#[test]
fn log_level_and_proxy_uid() {
    let t = injected(&[
        (LOG_LEVEL_ANNOTATION, "warn,weft_proxy=debug"),
        (PROXY_UID_ANNOTATION, "1337"),
    ]);
    assert_eq!(
        env_value(proxy(&t), "LOG"),
        Some(&json!("warn,weft_proxy=debug"))
    );
    assert_eq!(proxy(&t)["securityContext"]["runAsUser"], 1337);
    assert_eq!(
        t["spec"]["initContainers"][0]["args"][1],
        "--proxy-uid=1337"
    );
    assert!(env_value(proxy(&injected(&[])), "LOG").is_none());
    for bad in ["0", "-1", "root"] {
        settings_error(&[(PROXY_UID_ANNOTATION, bad)]);
    }
    settings_error(&[(NATIVE_SIDECAR_ANNOTATION, "yes")]);
}

#[test]
fn the_namespace_enables_and_configures_the_template_overrides() {
    let inj = injector();
    let ns: BTreeMap<String, String> = [
        (INJECT_ANNOTATION.to_string(), "enabled".to_string()),
        (LOG_LEVEL_ANNOTATION.to_string(), "debug".to_string()),
        (PROXY_UID_ANNOTATION.to_string(), "3000".to_string()),
    ]
    .into();
    let mut t = template(&[(PROXY_UID_ANNOTATION, "4000")]);
    assert_eq!(inj.inject(&mut t, &ns), Ok(Outcome::Injected));
    assert_eq!(env_value(proxy(&t), "LOG"), Some(&json!("debug")));
    assert_eq!(proxy(&t)["securityContext"]["runAsUser"], 4000);

    let mut off = template(&[(INJECT_ANNOTATION, "disabled")]);
    let before = off.clone();
    assert_eq!(inj.inject(&mut off, &ns), Ok(Outcome::NotEnabled));
    assert_eq!(off, before);
    let mut plain = template(&[]);
    assert_eq!(inj.inject(&mut plain, &no_ns()), Ok(Outcome::NotEnabled));
    assert_eq!(plain, template(&[]));
}

#[test]
fn reinjecting_changes_nothing() {
    let once = injected(&[]);
    let mut twice = once.clone();
    assert_eq!(
        injector().inject(&mut twice, &no_ns()),
        Ok(Outcome::AlreadyInjected)
    );
    assert_eq!(twice, once);
    // A pod whose proxy came from elsewhere (no marker) is not injected twice either.
    let mut t = enabled_template(&[]);
    t["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": PROXY_CONTAINER, "image": "x"}));
    assert_eq!(
        injector().inject(&mut t, &no_ns()),
        Ok(Outcome::AlreadyInjected)
    );
}

#[test]
fn uninject_restores_the_original_in_both_modes() {
    for extra in [
        &[][..],
        &[(NATIVE_SIDECAR_ANNOTATION, "false")][..],
        &[
            (PROXY_AWAIT_ANNOTATION, "disabled"),
            (NATIVE_SIDECAR_ANNOTATION, "false"),
        ][..],
    ] {
        let original = enabled_template(extra);
        let mut t = original.clone();
        injector().inject(&mut t, &no_ns()).unwrap();
        assert!(uninject(&mut t));
        assert_eq!(t, original, "{extra:?}");
        assert!(!uninject(&mut t), "a second uninject finds nothing");
    }
    // Lists and maps the injection created go away again.
    let original = json!({
        "metadata": {"annotations": {INJECT_ANNOTATION: "enabled"}},
        "spec": {"containers": [{"name": "job", "image": "busybox"}]},
    });
    let mut t = original.clone();
    injector().inject(&mut t, &no_ns()).unwrap();
    assert!(t["spec"]["initContainers"].is_array());
    uninject(&mut t);
    assert_eq!(t, original);
}

#[test]
fn a_template_without_a_spec_is_an_error() {
    let mut t = json!({"metadata": {"annotations": {INJECT_ANNOTATION: "enabled"}}});
    assert!(matches!(
        injector().inject(&mut t, &no_ns()),
        Err(InjectError::Shape(_))
    ));
    let mut t = json!({"metadata": {"annotations": {INJECT_ANNOTATION: "enabled"}}, "spec": {"containers": {}}});
    assert!(matches!(
        injector().inject(&mut t, &no_ns()),
        Err(InjectError::Shape(_))
    ));
}

#[test]
fn quantities() {
    for ok in ["1", "100m", "0.5", "64Mi", "1e3", "2Gi", ".5"] {
        assert!(is_quantity(ok), "{ok}");
    }
    for bad in ["", "m", "1.2.3", "10 Mi", "5mb", "1e", "-1"] {
        assert!(!is_quantity(bad), "{bad}");
    }
}

#[test]
fn json_patch_turns_the_pod_into_the_injected_one() {
    let before = enabled_template(&[]);
    let after = injected(&[]);
    let ops = webhook::json_patch(&before, &after);
    let paths: Vec<&str> = ops.iter().filter_map(|o| o["path"].as_str()).collect();
    assert_eq!(
        paths,
        [
            "/metadata/annotations",
            "/metadata/labels",
            "/spec/initContainers",
            "/spec/volumes"
        ]
    );
    // Applying "add" at an existing member replaces it (RFC 6902 4.1).
    let mut applied = before.clone();
    for op in &ops {
        let path = op["path"].as_str().unwrap();
        *applied
            .pointer_mut(path.rsplit_once('/').unwrap().0)
            .unwrap()
            .as_object_mut()
            .unwrap()
            .entry(path.rsplit_once('/').unwrap().1)
            .or_insert(Value::Null) = op["value"].clone();
    }
    assert_eq!(applied, after);
}

#[test]
fn host_network_pods_are_not_injected() {
    let err = settings_error_with(|t| t["spec"]["hostNetwork"] = json!(true));
    assert!(err.to_string().contains("hostNetwork"), "{err}");
}

fn settings_error_with(change: impl FnOnce(&mut Value)) -> InjectError {
    let mut t = enabled_template(&[]);
    change(&mut t);
    let before = t.clone();
    let err = injector().inject(&mut t, &no_ns()).expect_err("an error");
    assert_eq!(t, before);
    err
}

#[test]
fn every_bad_annotation_is_reported_at_once() {
    let err = settings_error(&[
        (PROXY_UID_ANNOTATION, "root"),
        ("config.linkerd.io/proxy-cpu-limit", "lots"),
        (OPAQUE_PORTS_ANNOTATION, "http"),
        (PROXY_AWAIT_ANNOTATION, "later"),
        (LOG_LEVEL_ANNOTATION, "debug"),
    ]);
    let mut named = bad_annotations(&err);
    named.sort();
    assert_eq!(
        named,
        [
            "config.linkerd.io/opaque-ports",
            "config.linkerd.io/proxy-await",
            "config.linkerd.io/proxy-cpu-limit",
            "config.linkerd.io/proxy-uid",
        ]
    );
    let text = err.to_string();
    for value in ["\"root\"", "\"lots\"", "\"http\"", "\"later\""] {
        assert!(text.contains(value), "{text}");
    }
}

#[test]
fn the_gateway_annotation_is_read_and_checked() {
    let inj = injector();
    let settings = |extra: &[(&str, &str)]| {
        let t = enabled_template(extra);
        inj.settings(&annotations(t.get("metadata")), &no_ns())
    };
    assert!(!settings(&[]).unwrap().gateway);
    assert!(
        settings(&[(ENABLE_GATEWAY_ANNOTATION, "true")])
            .unwrap()
            .gateway
    );
    assert!(
        !settings(&[(ENABLE_GATEWAY_ANNOTATION, "false")])
            .unwrap()
            .gateway
    );
    let err = settings_error(&[(ENABLE_GATEWAY_ANNOTATION, "yes")]);
    assert_eq!(bad_annotations(&err), [ENABLE_GATEWAY_ANNOTATION]);
    assert!(err.to_string().contains("\"yes\""), "{err}");
}
