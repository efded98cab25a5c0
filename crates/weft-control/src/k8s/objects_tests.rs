//! Objects cut down and rendered in memory, no API server.

use super::*;
use crate::k8s::KINDS;

fn kind(name: &str) -> &'static Kind {
    KINDS.iter().find(|k| k.kind == name).unwrap()
}

fn object(v: Value) -> DynamicObject {
    serde_json::from_value(v).expect("an object")
}

fn pod(name: &str, ready: bool, annotations: Value) -> DynamicObject {
    object(json!({
        "metadata": {
            "name": name, "namespace": "shop", "labels": {"app": "cart"},
            "annotations": annotations,
            "managedFields": [{"manager": "kubelet", "fieldsV1": {"f:status": {}}}],
        },
        "spec": {
            "serviceAccountName": "cart",
            "containers": [
                {"name": "app", "image": "cart:1", "ports": [{"name": "http", "containerPort": 8080}],
                 "env": [{"name": "BIG", "value": "x".repeat(4096)}]},
                {"name": "metrics", "ports": [{"containerPort": 9090}, {"containerPort": 8080}]},
            ],
        },
        "status": {"phase": "Running", "podIP": "10.1.0.5", "podIPs": [{"ip": "10.1.0.5"}],
                   "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]},
    }))
}

fn slice(endpoints: Value) -> Object {
    project(
        kind("EndpointSlice"),
        &object(
            json!({"metadata": {"name": "cart-x", "namespace": "shop"}, "endpoints": endpoints}),
        ),
    )
}

fn render(objects: &[(Shape, &str, Object)], namespaces: &[(&str, Value)]) -> Vec<Value> {
    let defaults = Defaults::default();
    let slices: Vec<&[SliceEndpoint]> = objects
        .iter()
        .filter_map(|(_, _, o)| match o {
            Object::Slice(e) => Some(e.as_slice()),
            _ => None,
        })
        .collect();
    let rendered = Rendered {
        defaults: &defaults,
        namespaces: namespaces
            .iter()
            .map(|(n, doc)| (n.to_string(), Rendered::inherited(doc)))
            .collect(),
        readiness: Readiness::of(slices.into_iter()),
    };
    objects
        .iter()
        .filter_map(|(shape, name, o)| rendered.document(*shape, "shop", name, o))
        .collect()
}

#[test]
fn a_pod_keeps_only_what_its_workload_needs() {
    let obj = pod(
        "cart-1",
        true,
        json!({"config.linkerd.io/opaque-ports": "9090", "prometheus.io/scrape": "true"}),
    );
    let Object::Pod(p) = project(kind("Pod"), &obj) else {
        panic!("a pod")
    };
    assert_eq!(
        p.annotations,
        json!({"config.linkerd.io/opaque-ports": "9090"})
            .as_object()
            .cloned()
            .unwrap()
    );
    assert_eq!(p.service_account, "cart");
    assert_eq!(
        p.ports,
        vec![(Some("http".into()), 8080), (None, 9090), (None, 8080)]
    );
    let docs = render(&[(Shape::Pod, "cart-1", Object::Pod(p))], &[]);
    let doc = &docs[0];
    assert_eq!(doc["kind"], "ExternalWorkload");
    assert_eq!(
        doc["spec"]["meshTLS"]["serverName"],
        "cart.shop.serviceaccount.identity.weft.cluster.local"
    );
    assert_eq!(
        doc["spec"]["meshTLS"]["identity"],
        "spiffe://cluster.local/ns/shop/sa/cart"
    );
    // One entry per port, the named one first.
    assert_eq!(
        doc["spec"]["ports"],
        json!([{"name": "http", "port": 8080}, {"port": 9090}])
    );
    assert_eq!(doc["status"]["conditions"][0]["status"], "True");
    assert!(
        !doc.to_string().contains("xxxx"),
        "container env is dropped"
    );
    let checked = crate::resource::validate_one(doc, "Pod/shop/cart-1", &Defaults::default());
    assert!(checked.is_ok(), "{checked:?}");
}

#[test]
fn finished_and_unscheduled_pods_are_no_workloads() {
    let mut done = pod("job-1", false, json!({}));
    done.data["status"]["phase"] = json!("Succeeded");
    assert_eq!(project(kind("Pod"), &done), Object::Nothing);
    let mut pending = pod("cart-2", false, json!({}));
    pending.data["status"] = json!({"phase": "Pending"});
    assert_eq!(project(kind("Pod"), &pending), Object::Nothing);
}

#[test]
fn endpoint_slices_decide_readiness_and_the_pod_only_when_no_slice_lists_it() {
    let p = |name: &str, ready: bool| {
        (
            Shape::Pod,
            "",
            project(kind("Pod"), &pod(name, ready, json!({}))),
        )
    };
    let slices = slice(json!([
        {"addresses": ["10.1.0.5"], "conditions": {"ready": true}, "targetRef": {"kind": "Pod", "name": "ready", "namespace": "shop"}},
        {"addresses": ["10.1.0.6"], "conditions": {"ready": false}, "targetRef": {"kind": "Pod", "name": "not-ready"}},
        {"addresses": ["10.1.0.7"], "conditions": {"ready": false, "serving": true, "terminating": true}, "targetRef": {"kind": "Pod", "name": "leaving"}},
        {"addresses": ["10.1.0.8"], "targetRef": {"kind": "Pod", "name": "unknown"}},
        // publishNotReadyAddresses: `ready` forced, `serving` the pod's own.
        {"addresses": ["10.1.0.10"], "conditions": {"ready": true, "serving": false, "terminating": false}, "targetRef": {"kind": "Pod", "name": "published"}},
        {"addresses": ["10.1.0.9"], "conditions": {"ready": true}},
    ]));
    let mut objects = vec![(Shape::EndpointSlice, "cart-x", slices)];
    for (name, own) in [
        ("ready", false),
        ("not-ready", true),
        ("leaving", true),
        ("unknown", false),
        ("unlisted", true),
        ("published", false),
    ] {
        let (shape, _, o) = p(name, own);
        objects.push((shape, name, o));
    }
    let docs = render(&objects, &[]);
    let states: Vec<(String, String)> = docs
        .iter()
        .map(|d| {
            let c = &d["status"]["conditions"][0];
            (
                d["metadata"]["name"].as_str().unwrap().into(),
                format!(
                    "{}:{}",
                    c["status"].as_str().unwrap(),
                    c["reason"].as_str().unwrap()
                ),
            )
        })
        .collect();
    let want = [
        ("ready", "True:EndpointReady"),
        ("not-ready", "False:EndpointNotReady"),
        ("leaving", "False:Terminating"),
        // No conditions in the slice: ready, as Kubernetes says to read it.
        ("unknown", "True:EndpointReady"),
        ("unlisted", "True:PodReady"),
        ("published", "False:EndpointNotReady"),
    ];
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(states, want);
}

#[test]
fn namespace_config_annotations_apply_unless_the_object_sets_its_own() {
    let ns = project(
        kind("Namespace"),
        &object(json!({"metadata": {"name": "shop", "annotations": {
            "config.linkerd.io/opaque-ports": "6379",
            "config.linkerd.io/default-inbound-policy": "all-authenticated",
            "linkerd.io/inject": "enabled",
        }}})),
    );
    let Object::Document(ns_doc) = &ns else {
        panic!("a document")
    };
    let svc = |name: &str, annotations: Value| {
        project(
            kind("Service"),
            &object(
                json!({"metadata": {"name": name, "namespace": "shop", "annotations": annotations},
                "spec": {"selector": {"app": name}, "ports": [{"port": 6379, "protocol": "TCP", "targetPort": 6379}], "clusterIP": "10.96.0.9", "type": "ClusterIP"}}),
            ),
        )
    };
    let own = svc("own", json!({"config.linkerd.io/opaque-ports": "7000"}));
    let inherits = svc("inherits", json!({}));
    let docs = render(
        &[
            (Shape::Service, "own", own),
            (Shape::Service, "inherits", inherits),
        ],
        &[("shop", ns_doc.clone())],
    );
    assert_eq!(
        docs[0]["metadata"]["annotations"]["config.linkerd.io/opaque-ports"],
        "7000"
    );
    assert_eq!(
        docs[1]["metadata"]["annotations"]["config.linkerd.io/opaque-ports"],
        "6379"
    );
    assert_eq!(
        docs[1]["metadata"]["annotations"]["config.linkerd.io/default-inbound-policy"],
        "all-authenticated"
    );
    // The injection annotation is the namespace's own business.
    assert!(docs[1]["metadata"]["annotations"]
        .get("linkerd.io/inject")
        .is_none());
    assert_eq!(
        docs[1]["spec"]["ports"],
        // (A targetPort equal to the port is what the API server fills in: none.)
        json!([{"port": 6379}])
    );
    let svc =
        crate::resource::validate_one(&docs[1], "Service/shop/inherits", &Defaults::default());
    let Ok(crate::resource::Resource::Service(svc)) = svc else {
        panic!("{svc:?}")
    };
    assert!(svc.is_opaque(6379));
}

#[test]
fn only_tcp_ports_are_served_and_unknown_app_protocols_are_dropped() {
    let dns = project(
        kind("Service"),
        &object(
            json!({"metadata": {"name": "kube-dns", "namespace": "kube-system"},
            "spec": {"selector": {"k8s-app": "kube-dns"}, "clusterIP": "10.96.0.10", "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                {"name": "metrics", "port": 9153, "protocol": "TCP", "targetPort": 9153, "appProtocol": "https"},
                {"name": "grpc", "port": 9000, "targetPort": "grpc", "appProtocol": "grpc"},
            ]}}),
        ),
    );
    let Object::Document(doc) = dns else {
        panic!("a document")
    };
    assert_eq!(
        doc["spec"]["ports"],
        json!([{"name": "dns-tcp", "port": 53},
               {"name": "metrics", "port": 9153},
               {"name": "grpc", "port": 9000, "targetPort": "grpc", "appProtocol": "grpc"}])
    );
    let checked =
        crate::resource::validate_one(&doc, "Service/kube-system/kube-dns", &Defaults::default());
    assert!(checked.is_ok(), "{checked:?}");
    let udp_only = project(
        kind("Service"),
        &object(json!({"metadata": {"name": "syslog", "namespace": "shop"},
            "spec": {"selector": {"app": "syslog"}, "ports": [{"port": 514, "protocol": "UDP"}]}})),
    );
    assert_eq!(udp_only, Object::Nothing);
}

#[test]
fn services_whose_endpoints_are_not_pods_are_not_served() {
    let none = |spec: Value| {
        project(
            kind("Service"),
            &object(json!({"metadata": {"name": "x", "namespace": "shop"}, "spec": spec})),
        )
    };
    assert_eq!(
        none(json!({"ports": [{"port": 443}], "clusterIP": "10.96.0.1"})),
        Object::Nothing
    );
    assert_eq!(
        none(json!({"selector": {}, "ports": [{"port": 443}]})),
        Object::Nothing
    );
    assert_eq!(
        none(
            json!({"type": "ExternalName", "externalName": "example.com", "selector": {"a": "b"}})
        ),
        Object::Nothing
    );
}

#[test]
fn custom_resources_keep_their_spec_and_lose_status_and_bookkeeping() {
    let route = project(
        kind("HTTPRoute"),
        &object(
            json!({"metadata": {"name": "r", "namespace": "shop", "creationTimestamp": "2026-12-01T10:07:00Z",
            "resourceVersion": "5", "managedFields": [{"manager": "kubectl"}],
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{...}", "note": "kept"}},
            "spec": {"parentRefs": [{"name": "web"}]}, "status": {"parents": []}}),
        ),
    );
    let Object::Document(doc) = route else {
        panic!("a document")
    };
    assert_eq!(
        doc,
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
               "metadata": {"name": "r", "namespace": "shop", "annotations": {"note": "kept"},
                            "creationTimestamp": "2026-12-01T10:07:00Z"},
               "spec": {"parentRefs": [{"name": "web"}]}})
    );
    let ew = project(
        kind("ExternalWorkload"),
        &object(
            json!({"metadata": {"name": "vm", "namespace": "shop"}, "spec": {"workloadIPs": [{"ip": "10.2.0.1"}]},
            "status": {"conditions": [{"type": "Ready", "status": "False"}]}}),
        ),
    );
    let Object::Document(doc) = ew else {
        panic!("a document")
    };
    assert_eq!(doc["status"]["conditions"][0]["status"], "False");
}

#[test]
fn a_pods_opaque_ports_may_name_its_container_ports() {
    // Its own annotation: names become the pod's numbers, numbers and ranges stay, a name the
    // pod lacks stays for the validation to name it. Its Namespace's: what the pod cannot
    // read is left out (not every pod of a namespace has every named port), and a Service
    // keeps only the numbers.
    let own = pod(
        "cart-1",
        true,
        json!({"config.linkerd.io/opaque-ports": "http, 9000-9001"}),
    );
    let inherits = pod("cart-2", true, json!({}));
    let unknown = pod(
        "cart-3",
        true,
        json!({"config.linkerd.io/opaque-ports": "grpc"}),
    );
    let service = object(json!({
        "metadata": {"name": "cart", "namespace": "shop"},
        "spec": {"selector": {"app": "cart"}, "ports": [{"name": "http", "port": 80}]},
    }));
    let mut objects: Vec<(Shape, &str, Object)> = [
        ("cart-1", &own),
        ("cart-2", &inherits),
        ("cart-3", &unknown),
    ]
    .into_iter()
    .map(|(name, o)| (Shape::Pod, name, project(kind("Pod"), o)))
    .collect();
    objects.push((Shape::Service, "cart", project(kind("Service"), &service)));
    let annotations = json!({"config.linkerd.io/opaque-ports": "http,mysql,9090"});
    let namespace = object(json!({"metadata": {"name": "shop", "annotations": annotations}}));
    objects.push((
        Shape::Namespace,
        "shop",
        project(kind("Namespace"), &namespace),
    ));
    let docs = render(
        &objects,
        &[("shop", json!({"metadata": {"annotations": annotations}}))],
    );
    let opaque = |d: &Value| d["metadata"]["annotations"]["config.linkerd.io/opaque-ports"].clone();
    assert_eq!(opaque(&docs[0]), "8080,9000-9001");
    assert_eq!(opaque(&docs[1]), "8080,9090");
    assert_eq!(opaque(&docs[2]), "grpc");
    assert_eq!(opaque(&docs[3]), "9090");
    // The Namespace's own document too (what it names is for its pods).
    assert_eq!(opaque(&docs[4]), "9090");
}
