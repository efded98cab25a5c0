//! Route validation: documents in, typed routes or precise errors out.

use super::super::policy::{self, AccrualKind, GrpcConditions};
use super::super::{Ctx, Defaults, Resource};
use super::parse::parse_rfc3339;
use super::*;
use crate::documents::parse_yaml_file;
use std::collections::BTreeMap;
use std::time::Duration;

fn one(text: &str) -> Result<Resource, Vec<String>> {
    let (docs, errors) = parse_yaml_file("r.yaml", text, &Defaults::default());
    if errors.is_empty() {
        assert_eq!(docs.len(), 1);
        Ok(docs[0].resource.clone())
    } else {
        Err(errors)
    }
}

fn route(text: &str) -> Route {
    match one(text) {
        Ok(Resource::Route(r)) => r,
        other => panic!("expected a route, got {other:?}"),
    }
}

fn errors(text: &str) -> Vec<String> {
    one(text).expect_err("the document must be rejected")
}

const FULL: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: books
  namespace: shop
  creationTimestamp: "2024-05-01T12:00:00Z"
  annotations:
    retry.linkerd.io/http: 5xx,429,500-504
    retry.linkerd.io/limit: "3"
    retry.linkerd.io/timeout: 300ms
    timeout.linkerd.io/response: 2s
spec:
  parentRefs:
  - {group: core, kind: Service, name: books, port: 8080}
  hostnames: ["books.example.com", "*.Example.org"]
  rules:
  - matches:
    - path: {type: RegularExpression, value: "/books/[0-9]+"}
      headers: [{name: X-Canary, value: "yes"}]
      queryParams: [{type: RegularExpression, name: v, value: "^2"}]
      method: GET
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        add: [{name: X-Via, value: weft}]
        remove: [X-Debug]
    - type: ExtensionRef
      extensionRef: {group: extensions.weft.dev, kind: FaultInjection, name: flaky}
    backendRefs:
    - {name: books-v1, port: 8080, weight: 90}
    - {name: books-v2, namespace: canary, port: 8080, weight: 10}
    timeouts: {request: 10s, backendRequest: 2s}
  - matches: [{path: {type: PathPrefix, value: /old}}]
    filters:
    - type: RequestRedirect
      requestRedirect:
        scheme: https
        hostname: new.example.com
        port: 8443
        statusCode: 302
        path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}
"#;

#[test]
fn a_full_http_route() {
    let r = route(FULL);
    assert_eq!(r.kind, RouteKind::GatewayHttp);
    assert_eq!((r.namespace.as_str(), r.name.as_str()), ("shop", "books"));
    assert_eq!(r.created, Some(1_714_564_800));
    assert_eq!(
        r.parents,
        vec![ParentRef {
            group: "core".into(),
            kind: "Service".into(),
            namespace: "shop".into(),
            name: "books".into(),
            port: Some(8080),
        }]
    );
    assert!(r.parents[0].is_service());
    assert_eq!(r.hostnames, vec!["books.example.com", "*.example.org"]);
    let retry = r.retry.as_ref().unwrap();
    assert_eq!(retry.limit, 3);
    assert_eq!(retry.timeout, Some(Duration::from_millis(300)));
    assert_eq!(
        retry.http.as_deref(),
        Some(&[(500, 599), (429, 429), (500, 504)][..])
    );
    assert_eq!(r.timeouts.unwrap().response, Some(Duration::from_secs(2)));
    let rule = &r.rules[0];
    let Matches::Http(m) = &rule.matches else {
        panic!()
    };
    assert_eq!(m[0].path, PathMatch::Regex("/books/[0-9]+".into()));
    assert_eq!(m[0].headers[0].name, "x-canary");
    assert_eq!(m[0].query_params[0].value, ValueMatch::Regex("^2".into()));
    assert_eq!(m[0].method.as_deref(), Some("GET"));
    assert_eq!(rule.filters[1], Filter::Fault("flaky".into()));
    assert_eq!(rule.backends[1].namespace, "canary");
    assert_eq!((rule.backends[0].weight, rule.backends[1].weight), (90, 10));
    assert_eq!(rule.request_timeout, Some(Duration::from_secs(10)));
    assert_eq!(rule.backend_request_timeout, Some(Duration::from_secs(2)));
    let Filter::Redirect(redirect) = &r.rules[1].filters[0] else {
        panic!()
    };
    assert_eq!(redirect.path, Some(PathModifier::Prefix("/new".into())));
    assert_eq!((redirect.port, redirect.status), (Some(8443), Some(302)));
}

#[test]
fn backend_request_above_request_is_rejected() {
    let errs = errors(&FULL.replace("backendRequest: 2s", "backendRequest: 1m2s"));
    assert_eq!(
        errs,
        vec!["r.yaml: document 0: spec.rules[0].timeouts.backendRequest: must not exceed timeouts.request (62s > 10s)"]
    );
}

#[test]
fn defaults_of_an_empty_route() {
    let r = route(
        "apiVersion: policy.linkerd.io/v1beta3\nkind: HTTPRoute\nmetadata: {name: r}\nspec:\n  parentRefs: [{name: web, kind: Service, group: core}]\n",
    );
    assert_eq!(r.kind, RouteKind::LinkerdHttp);
    assert_eq!(r.created, None);
    assert_eq!(r.parents[0].namespace, "default");
    assert_eq!(r.parents[0].port, None);
    assert_eq!(r.rules.len(), 1, "no rules: one rule matching everything");
    assert_eq!(
        r.rules[0].matches,
        Matches::Http(vec![HttpMatch {
            path: PathMatch::Prefix("/".into()),
            headers: vec![],
            query_params: vec![],
            method: None,
        }])
    );
    assert!(r.rules[0].backends.is_empty());
    assert_eq!((r.timeouts, r.retry), (None, None));
    // A parentRef without kind is a Gateway (Gateway API default): kept, not a Service.
    let r = route("apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r}\nspec:\n  parentRefs: [{name: gw}]\n");
    assert_eq!(
        (r.parents[0].group.as_str(), r.parents[0].kind.as_str()),
        (GATEWAY_GROUP, "Gateway")
    );
    assert!(!r.parents[0].is_service());
}

#[test]
fn precise_errors() {
    let text = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: bad}
spec:
  parentRefs: [{kind: Service, group: "", name: web, port: 0}]
  rules:
  - matches:
    - path: {type: RegularExpression, value: "/a(b"}
    - path: {type: Exact, value: "no-slash"}
      method: FETCH
    filters:
    - type: URLRewrite
    - type: Bogus
    - type: RequestRedirect
      requestRedirect: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /x}}
    backendRefs:
    - {name: web, weight: 2000000}
    timeouts: {request: 10 seconds}
"#;
    let errs = errors(text);
    let want = [
        "spec.parentRefs[0].port: must be 1..65535, got 0",
        "spec.rules[0].matches[0].path.value: invalid regular expression \"/a(b\":",
        "spec.rules[0].matches[1].path.value: must start with '/', got \"no-slash\"",
        "spec.rules[0].matches[1].method: must be one of GET,",
        "spec.rules[0].filters[0].type: URLRewrite is not supported on a HTTPRoute",
        "spec.rules[0].filters[1].type: must be RequestHeaderModifier, ResponseHeaderModifier, RequestRedirect or ExtensionRef, got \"Bogus\"",
        "spec.rules[0].filters[2].requestRedirect.path: ReplacePrefixMatch needs every match",
        "spec.rules[0].backendRefs[0].weight: must be 0..1000000, got 2000000",
        "spec.rules[0].backendRefs[0].port: required when the backend is a Service",
        "spec.rules[0].timeouts.request: units are h, m, s and ms",
    ];
    assert_eq!(errs.len(), want.len(), "{errs:#?}");
    for (got, want) in errs.iter().zip(want) {
        let want = format!("r.yaml: document 0: {want}");
        assert!(got.starts_with(&want), "{got:?} should start with {want:?}");
    }
}

#[test]
fn grpc_routes() {
    let r = route(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata:
  name: rpc
  annotations: {retry.linkerd.io/grpc: "unavailable,Cancelled", retry.linkerd.io/limit: "2"}
spec:
  parentRefs: [{kind: Service, group: core, name: api}]
  rules:
  - matches:
    - method: {service: shop.Books, method: Get}
      headers: [{name: x-user, type: RegularExpression, value: "^a.*"}]
    - method: {type: Exact, service: shop.Books}
  - backendRefs: [{name: api, port: 9000}]
"#,
    );
    assert_eq!(r.kind, RouteKind::Grpc);
    let Matches::Grpc(m) = &r.rules[0].matches else {
        panic!()
    };
    assert_eq!(m[0].service.as_deref(), Some("shop.Books"));
    assert_eq!(m[0].method.as_deref(), Some("Get"));
    assert_eq!(
        (m[1].service.as_deref(), m[1].method.as_deref()),
        (Some("shop.Books"), None)
    );
    assert_eq!(
        r.rules[1].matches,
        Matches::Grpc(vec![GrpcMatch::default()])
    );
    let retry = r.retry.unwrap();
    assert_eq!(retry.limit, 2);
    assert_eq!(
        retry.grpc,
        Some(GrpcConditions {
            unavailable: true,
            cancelled: true,
            ..Default::default()
        })
    );

    let errs = errors(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata:
  name: rpc
  annotations: {retry.linkerd.io/http: 5xx}
spec:
  rules:
  - matches: [{method: {type: RegularExpression, service: shop.Books}}]
    filters: [{type: ResponseHeaderModifier, responseHeaderModifier: {}}]
"#,
    );
    assert_eq!(errs.len(), 3, "{errs:#?}");
    assert!(errs[0]
        .contains("metadata.annotations[\"retry.linkerd.io/http\"]: not valid on a GRPCRoute"));
    assert!(errs[1]
        .contains("spec.rules[0].matches[0].method.type: RegularExpression is not supported"));
    assert!(errs[2].contains(
        "spec.rules[0].filters[0].type: ResponseHeaderModifier is not supported on a GRPCRoute"
    ));
}

#[test]
fn api_versions() {
    let e = errors(
        "apiVersion: policy.linkerd.io/v1alpha1\nkind: HTTPRoute\nmetadata: {name: r}\nspec: {}\n",
    );
    assert!(
        e[0].starts_with("r.yaml: document 0: apiVersion: must be gateway.networking.k8s.io/v1"),
        "{e:?}"
    );
    for av in [
        "gateway.networking.k8s.io/v1beta1",
        "policy.linkerd.io/v1beta2",
        "policy.linkerd.io/v1beta1",
    ] {
        route(&format!(
            "apiVersion: {av}\nkind: HTTPRoute\nmetadata: {{name: r}}\nspec: {{}}\n"
        ));
    }
    route("apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: GRPCRoute\nmetadata: {name: r}\nspec: {}\n");
}

#[test]
fn fault_injection() {
    let Ok(Resource::Fault(f)) = one(
        "apiVersion: extensions.weft.dev/v1alpha1\nkind: FaultInjection\nmetadata: {name: flaky}\nspec: {status: 503, message: chaos, ratio: {numerator: 1, denominator: 10}}\n",
    ) else {
        panic!()
    };
    assert_eq!(
        f,
        FaultInjection {
            name: "flaky".into(),
            namespace: "default".into(),
            status: 503,
            grpc_code: DEFAULT_FAULT_GRPC_CODE,
            message: "chaos".into(),
            ratio: Some((1, 10)),
        }
    );
    let e = errors("apiVersion: extensions.weft.dev/v1alpha1\nkind: FaultInjection\nmetadata: {name: f}\nspec: {status: 99, ratio: {numerator: 5, denominator: 0}}\n");
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(e[0].ends_with("spec.status: must be an HTTP status 100..599, got 99"));
    assert!(e[1]
        .ends_with("spec.ratio: needs 0 <= numerator <= denominator and denominator > 0, got 5/0"));
}

#[test]
fn durations() {
    let d = |s| policy::parse_duration(s, true);
    assert_eq!(d("1h2m3s4ms"), Ok(Duration::from_millis(3_723_004)));
    assert_eq!(d("0s"), Ok(Duration::ZERO));
    assert!(d("1s1h").is_err(), "largest unit first");
    assert!(d("100000s").is_err(), "at most 5 digits");
    assert!(d("1.5s").is_err());
    assert!(d("").is_err());
    assert_eq!(
        policy::parse_duration("100000ms", false),
        Ok(Duration::from_secs(100))
    );
}

#[test]
fn service_annotations() {
    let a = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let mut ctx = Ctx::new("s".into());
    let p = policy::service_policy(&a(&[]), &mut ctx);
    assert_eq!(
        p,
        policy::ServicePolicy::default(),
        "no annotations, no policy"
    );

    let p = policy::service_policy(
        &a(&[
            (policy::FAILURE_ACCRUAL, "consecutive"),
            (policy::FA_MAX_FAILURES, "3"),
            (policy::TIMEOUT_REQUEST, "5s"),
            (policy::RETRY_HTTP, "gateway-error"),
        ]),
        &mut ctx,
    );
    assert!(ctx.errors.is_empty(), "{:?}", ctx.errors);
    let fa = p.failure_accrual.unwrap();
    assert_eq!(fa.kind, AccrualKind::Consecutive { max_failures: 3 });
    assert_eq!(
        (
            fa.min_penalty,
            fa.max_penalty,
            fa.jitter,
            fa.min_ready_endpoints
        ),
        (Duration::from_secs(1), Duration::from_secs(60), 0.5, 0)
    );
    assert_eq!(p.timeouts.unwrap().request, Some(Duration::from_secs(5)));
    let retry = p.retry.unwrap();
    assert_eq!((retry.limit, retry.http), (1, Some(vec![(502, 504)])));

    let p = policy::service_policy(
        &a(&[
            (policy::FAILURE_ACCRUAL, "unified"),
            (policy::FA_SUCCESS_RATE, "0.8"),
            (policy::FA_MIN_READY, "2"),
        ]),
        &mut ctx,
    );
    assert!(ctx.errors.is_empty(), "{:?}", ctx.errors);
    let fa = p.failure_accrual.unwrap();
    assert_eq!(
        fa.kind,
        AccrualKind::Unified {
            success_rate_threshold: 0.8,
            decay: policy::DEFAULT_SR_DECAY,
            min_requests: policy::DEFAULT_MIN_REQUESTS,
            max_failures: policy::DEFAULT_MAX_FAILURES,
        }
    );
    assert_eq!(fa.min_ready_endpoints, 2);

    let text = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  annotations:\n    balancer.linkerd.io/failure-accrual: sometimes\n    retry.linkerd.io/http: 5xx,700\n    timeout.linkerd.io/idle: forever\nspec: {selector: {app: web}, ports: [{port: 80}]}\n";
    let e = errors(text);
    assert_eq!(
        e,
        vec![
            "r.yaml: document 0: metadata.annotations[\"timeout.linkerd.io/idle\"]: a number must come before each unit: expected a duration like 1h2m3s4ms or 500ms, got \"forever\"".to_string(),
            "r.yaml: document 0: metadata.annotations[\"retry.linkerd.io/http\"]: \"700\" is not 5xx, gateway-error, a status 100..599 or a range like 500-504".to_string(),
            "r.yaml: document 0: metadata.annotations[\"balancer.linkerd.io/failure-accrual\"]: must be consecutive or unified, got \"sometimes\"".to_string(),
        ]
    );
}

#[test]
fn creation_timestamps() {
    assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Ok(0));
    assert_eq!(parse_rfc3339("2024-05-01T12:00:00.123Z"), Ok(1_714_564_800));
    for bad in [
        "2024-05-01 12:00:00Z",
        "2024-13-01T00:00:00Z",
        "2024-05-01T12:00:00+02:00",
        "x",
    ] {
        assert!(parse_rfc3339(bad).is_err(), "{bad}");
    }
}

#[test]
fn tls_and_tcp_routes() {
    let tls = |av: &str| {
        route(&format!(
            r#"
apiVersion: gateway.networking.k8s.io/{av}
kind: TLSRoute
metadata: {{name: api, namespace: shop, annotations: {{timeout.linkerd.io/request: nonsense}}}}
spec:
  parentRefs: [{{group: policy.linkerd.io, kind: EgressNetwork, name: internet, port: 443}}]
  hostnames: [api.example.com, "*.Example.org"]
  rules:
  - backendRefs: [{{group: policy.linkerd.io, kind: EgressNetwork, name: internet}}]
"#
        ))
    };
    for av in ["v1alpha2", "v1alpha3"] {
        let r = tls(av);
        assert_eq!(r.kind, RouteKind::Tls);
        assert_eq!(r.kind.qualified(), "TLSRoute.gateway.networking.k8s.io");
        assert_eq!(r.hostnames, ["api.example.com", "*.example.org"]);
        assert_eq!(r.parents[0].port, Some(443));
        assert_eq!(r.rules.len(), 1);
        assert_eq!(r.rules[0].matches, Matches::Connection);
        assert_eq!(r.rules[0].backends[0].kind, "EgressNetwork");
        // Linkerd reads no timeout or retry annotations on connection routes: ignored.
        assert_eq!((r.timeouts, r.retry), (None, None));
    }

    let r = route(
        "apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: TCPRoute\nmetadata: {name: db}\nspec:\n  parentRefs: [{group: policy.linkerd.io, kind: EgressNetwork, name: internet, port: 5432}]\n  rules: [{}]\n",
    );
    assert_eq!(r.kind, RouteKind::Tcp);
    assert_eq!(r.kind.protocol(), RouteProtocol::Tcp);
    assert!(r.hostnames.is_empty());
    assert_eq!(r.rules[0].matches, Matches::Connection);
    assert!(r.rules[0].backends.is_empty(), "the parent itself");
}

#[test]
fn tls_and_tcp_route_errors() {
    let errs = errors(
        r#"
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {name: api}
spec:
  parentRefs: [{group: policy.linkerd.io, kind: EgressNetwork}]
  hostnames: [1.2.3.4, "bad_name.example.com", "*"]
  rules:
  - matches: [{path: {value: /}}]
    filters: [{type: RequestHeaderModifier}]
    timeouts: {request: 1s}
    backendRefs: [{name: api, filters: [{type: RequestHeaderModifier}]}]
"#,
    );
    let want = [
        "spec.parentRefs[0].name: required",
        "spec.hostnames[0]: must be a DNS name, optionally starting with '*.' (no IP addresses), got \"1.2.3.4\"",
        "spec.hostnames[1]: must be a DNS name",
        "spec.hostnames[2]: must be a DNS name",
        "spec.rules[0].matches: not a TLSRoute field",
        "spec.rules[0].filters: not a TLSRoute field",
        "spec.rules[0].timeouts: not a TLSRoute field",
        "spec.rules[0].backendRefs[0].filters: not a TLSRoute field (a connection route's backends have no filters)",
        "spec.rules[0].backendRefs[0].port: required when the backend is a Service",
    ];
    assert_eq!(errs.len(), want.len(), "{errs:#?}");
    for (got, want) in errs.iter().zip(want) {
        let want = format!("r.yaml: document 0: {want}");
        assert!(got.starts_with(&want), "{got:?} should start with {want:?}");
    }

    let errs = errors(
        r#"
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: db}
spec:
  parentRefs: [{group: policy.linkerd.io, kind: EgressNetwork, name: internet}]
  hostnames: [db.example.com]
  rules: [{}, {}]
"#,
    );
    let want = [
        "spec.hostnames: not a TCPRoute field (use a TLSRoute to match SNI names)",
        "spec.rules: a TCPRoute must have exactly one rule (as in Linkerd), got 2",
    ];
    assert_eq!(errs.len(), want.len(), "{errs:#?}");
    for (got, want) in errs.iter().zip(want) {
        assert!(got.contains(want), "{got:?} should contain {want:?}");
    }

    // No rules (the Gateway API requires one), and v1alpha3 requires hostnames.
    let errs = errors("apiVersion: gateway.networking.k8s.io/v1alpha3\nkind: TLSRoute\nmetadata: {name: r}\nspec: {}\n");
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert!(errs[0].contains("spec.rules: a TLSRoute must have exactly one rule"));
    assert!(errs[1].contains("spec.hostnames: required in gateway.networking.k8s.io/v1alpha3"));

    for (kind, av, want) in [
        (
            "TLSRoute",
            "gateway.networking.k8s.io/v1",
            "gateway.networking.k8s.io/v1alpha3 (or v1alpha2)",
        ),
        (
            "TLSRoute",
            "policy.linkerd.io/v1alpha2",
            "gateway.networking.k8s.io/v1alpha3 (or v1alpha2)",
        ),
        (
            "TCPRoute",
            "gateway.networking.k8s.io/v1alpha3",
            "gateway.networking.k8s.io/v1alpha2",
        ),
    ] {
        let e = errors(&format!(
            "apiVersion: {av}\nkind: {kind}\nmetadata: {{name: r}}\nspec: {{rules: [{{}}]}}\n"
        ));
        assert_eq!(
            e,
            [format!(
                "r.yaml: document 0: apiVersion: must be {want} for kind {kind}, got {av:?}"
            )]
        );
    }
}
