//! Routes end to end: YAML files in the store → `OutboundPolicies.Watch` over a real socket on
//! 127.0.0.1, and the route statuses of `GET /v1/store`.

mod common;

use common::{http_json, LIMIT};
use linkerd2_proxy_api::meta::metadata::Kind as MetaKind;
use linkerd2_proxy_api::outbound::{
    http_route as ohr, outbound_policies_client::OutboundPoliciesClient, proxy_protocol as opp,
    traffic_spec, HttpRoute, OutboundPolicy, TrafficSpec,
};
use serde_json::Value;
use std::net::SocketAddr;
use std::time::Duration;
use tonic::Streaming;

const SERVICES: &str = "\
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {selector: {app: web}, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: v1}
spec: {selector: {app: v1}, ports: [{port: 80}]}
";

const V2: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: v2}\nspec: {selector: {app: v2}, ports: [{port: 80}]}\n";

fn split(v1: u32, v2: u32, path_regex: &str) -> String {
    format!(
        "\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: split}}
spec:
  parentRefs: [{{group: core, kind: Service, name: web, port: 80}}]
  rules:
  - matches: [{{path: {{type: RegularExpression, value: '{path_regex}'}}}}]
    backendRefs: [{{name: v1, port: 80, weight: {v1}}}, {{name: v2, port: 80, weight: {v2}}}]
"
    )
}

async fn watch(grpc: SocketAddr, authority: &str) -> Streaming<OutboundPolicy> {
    let mut client = OutboundPoliciesClient::connect(format!("http://{grpc}"))
        .await
        .expect("connect to OutboundPolicies");
    let spec = TrafficSpec {
        source_workload: "default:client".into(),
        target: Some(traffic_spec::Target::Authority(authority.into())),
    };
    client.watch(spec).await.expect("watch").into_inner()
}

async fn next(stream: &mut Streaming<OutboundPolicy>) -> OutboundPolicy {
    tokio::time::timeout(LIMIT, stream.message())
        .await
        .expect("a policy in time")
        .expect("stream ok")
        .expect("stream open")
}

/// The HTTP/1 routes of a policy (asserting HTTP/2 carries the same).
fn http_routes(p: &OutboundPolicy) -> Vec<HttpRoute> {
    let Some(opp::Kind::Detect(d)) = p.protocol.clone().unwrap().kind else {
        panic!("expected detect: {p:?}")
    };
    let routes = d.http1.unwrap().routes;
    assert_eq!(routes, d.http2.unwrap().routes);
    routes
}

fn route_name(r: &HttpRoute) -> String {
    match r.metadata.clone().unwrap().kind.unwrap() {
        MetaKind::Resource(res) => format!("{}/{}", res.kind, res.name),
        MetaKind::Default(d) => format!("default/{d}"),
    }
}

/// (weight, failure message or "") of each backend of the first rule.
fn backends(r: &HttpRoute) -> Vec<(u32, String)> {
    let Some(ohr::distribution::Kind::RandomAvailable(ra)) =
        r.rules[0].backends.clone().unwrap().kind
    else {
        panic!("expected weighted backends")
    };
    ra.backends
        .iter()
        .map(|b| {
            let rb = b.backend.clone().unwrap();
            let msg = rb
                .filters
                .iter()
                .find_map(|f| match &f.kind {
                    Some(ohr::filter::Kind::FailureInjector(fi)) => Some(fi.message.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            (b.weight, msg)
        })
        .collect()
}

/// `GET /v1/store`, polled until `done` holds (the store reloads every 50 ms).
async fn store_until(api: SocketAddr, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let (status, body) = http_json(api, "GET", "/v1/store", "").await;
        assert_eq!(status, 200);
        if done(&body) {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "store status never matched: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn route_files_drive_outbound_policies() {
    let dir = common::temp_dir("routes");
    std::fs::write(dir.join("services.yaml"), SERVICES).unwrap();
    std::fs::write(dir.join("route.yaml"), split(90, 10, "/books/[0-9]+")).unwrap();
    let cp = common::start(common::config(&dir)).await;
    let mut stream = watch(cp.grpc_addr, "web.default.svc.cluster.local:80").await;

    // The route is served; its missing backend fails with a message, the other one works.
    let p = next(&mut stream).await;
    let routes = http_routes(&p);
    assert_eq!(routes.len(), 1);
    assert_eq!(route_name(&routes[0]), "HTTPRoute/split");
    assert_eq!(
        backends(&routes[0]),
        [
            (90, String::new()),
            (10, "backend Service default/v2 not found".into())
        ]
    );
    let status = store_until(cp.api_addr, |s| {
        s["routes"].as_array().is_some_and(|r| r.len() == 1)
    })
    .await;
    let parent = &status["routes"][0]["parents"][0];
    assert_eq!(status["routes"][0]["kind"], "HTTPRoute");
    assert_eq!(parent["parentRef"]["name"], "web");
    assert_eq!(parent["parentRef"]["port"], 80);
    assert_eq!(parent["conditions"][0]["type"], "Accepted");
    assert_eq!(parent["conditions"][0]["status"], "True");
    assert_eq!(parent["conditions"][1]["type"], "ResolvedRefs");
    assert_eq!(parent["conditions"][1]["status"], "False");
    assert_eq!(parent["conditions"][1]["reason"], "BackendNotFound");

    // The backend Service appears: an update, the backend now works.
    std::fs::write(dir.join("v2.yaml"), V2).unwrap();
    let p = next(&mut stream).await;
    assert_eq!(
        backends(&http_routes(&p)[0]),
        [(90, String::new()), (10, String::new())]
    );

    // The route file changes: the new weights arrive.
    std::fs::write(dir.join("route.yaml"), split(50, 50, "/books/[0-9]+")).unwrap();
    let p = next(&mut stream).await;
    assert_eq!(
        backends(&http_routes(&p)[0]),
        [(50, String::new()), (50, String::new())]
    );

    // A bad version is rejected with its place and field; the last good one stays in force and
    // nothing is sent.
    std::fs::write(dir.join("route.yaml"), split(10, 90, "/books/(")).unwrap();
    let status = store_until(cp.api_addr, |s| {
        s["errors"].as_array().is_some_and(|e| !e.is_empty())
    })
    .await;
    let error = status["errors"][0].as_str().unwrap();
    assert!(
        error.starts_with("route.yaml: document 0: spec.rules[0].matches[0].path.value: invalid regular expression \"/books/(\""),
        "{error}"
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(300), stream.message())
            .await
            .is_err(),
        "a rejected route must not change the policy"
    );

    // Fixed, it applies; removed, the default route is back.
    std::fs::write(dir.join("route.yaml"), split(10, 90, "/books/.*")).unwrap();
    let p = next(&mut stream).await;
    assert_eq!(backends(&http_routes(&p)[0])[1].0, 90);
    std::fs::remove_file(dir.join("route.yaml")).unwrap();
    let p = next(&mut stream).await;
    let routes = http_routes(&p);
    assert_eq!(route_name(&routes[0]), "default/http");

    cp.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn grpc_routes_switch_the_protocol_and_conflicts_are_reported() {
    let dir = common::temp_dir("grpc-routes");
    std::fs::write(dir.join("services.yaml"), SERVICES).unwrap();
    std::fs::write(dir.join("http.yaml"), split(1, 0, "/.*")).unwrap();
    let cp = common::start(common::config(&dir)).await;
    let mut stream = watch(cp.grpc_addr, "web.default.svc.cluster.local:80").await;
    assert_eq!(
        route_name(&http_routes(&next(&mut stream).await)[0]),
        "HTTPRoute/split"
    );

    let grpc = "apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {name: rpc}\nspec:\n  parentRefs: [{group: core, kind: Service, name: web}]\n";
    std::fs::write(dir.join("grpc.yaml"), grpc).unwrap();
    let p = next(&mut stream).await;
    let Some(opp::Kind::Grpc(g)) = p.protocol.unwrap().kind else {
        panic!("a GRPCRoute makes the protocol gRPC")
    };
    assert_eq!(g.routes.len(), 1);
    let status = store_until(cp.api_addr, |s| {
        s["routes"].as_array().is_some_and(|r| r.len() == 2)
    })
    .await;
    let http = status["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kind"] == "HTTPRoute")
        .unwrap();
    let accepted = &http["parents"][0]["conditions"][0];
    assert_eq!(accepted["status"], "False");
    assert_eq!(accepted["reason"], "Conflicted");
    cp.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
