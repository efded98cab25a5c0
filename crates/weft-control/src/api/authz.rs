//! `GET /v1/authz/NS/NAME`: the effective inbound policy of each port of a workload, as its
//! proxy gets it (the same [`index::inbound`] snapshot InboundServerPolicies encodes): what
//! decided the port (a Server or the default policy), the protocol, the server-level
//! authorizations, the inbound routes with theirs, and the rate limit. `weft authz` prints it.

use crate::index::inbound::{Authz, Inbound, RateLimit, ServerRef};
use crate::index::InboundDefaults;
use crate::index::{self, inbound::Authentication, inbound::AuthzOrigin, InboundKey};
use crate::resource::authz::{ProxyProtocol, ServerPort};
use crate::resource::{State, ADMIN_PORT_NAME, TAP_PORT_NAME};
use serde_json::{json, Value};
use std::collections::BTreeSet;

/// The workload's policy per port, or `None` when the workload is not known. Ports: the
/// workload's declared ports and any port a Server selecting it names by number; not its
/// proxy's admin and tap ports, which Weft's proxy serves without inbound policy.
pub fn describe(state: &State, defaults: &InboundDefaults, ns: &str, name: &str) -> Option<Value> {
    let w = state.workloads.get(&(ns.to_string(), name.to_string()))?;
    let mut ports: BTreeSet<u16> = w
        .ports
        .iter()
        .filter(|p| !matches!(p.name.as_deref(), Some(ADMIN_PORT_NAME | TAP_PORT_NAME)))
        .map(|p| p.port)
        .collect();
    ports.extend(
        state
            .servers
            .values()
            .filter(|s| matches!(s.port, ServerPort::Number(_)))
            .filter_map(|s| s.port_of(w)),
    );
    let ports: Vec<Value> = ports
        .into_iter()
        .map(|port| {
            let key = InboundKey {
                namespace: ns.to_string(),
                workload: name.to_string(),
                port,
            };
            let name = w
                .ports
                .iter()
                .find(|p| p.port == port)
                .and_then(|p| p.name.clone());
            port_json(port, name, &index::inbound(state, defaults, &key))
        })
        .collect();
    Some(json!({"namespace": ns, "workload": name, "ports": ports}))
}

fn port_json(port: u16, name: Option<String>, p: &Inbound) -> Value {
    let server = match &p.server {
        ServerRef::Server(n) => json!({"kind": "Server", "name": n}),
        ServerRef::Default(d) => json!({"kind": "default", "name": d.name()}),
    };
    let protocol = match p.protocol {
        ProxyProtocol::Unknown => "unknown",
        ProxyProtocol::Http1 => "HTTP/1",
        ProxyProtocol::Http2 => "HTTP/2",
        ProxyProtocol::Grpc => "gRPC",
        ProxyProtocol::Opaque => "opaque",
        ProxyProtocol::Tls => "TLS",
    };
    let routes: Vec<Value> = p
        .http_routes
        .iter()
        .chain(&p.grpc_routes)
        .map(|r| {
            json!({
                "kind": r.kind.kind(),
                "name": r.name,
                "authorizations": r.authorizations.iter().map(authz_json).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "port": port,
        "name": name,
        "server": server,
        "protocol": protocol,
        // Opaque and TLS connections are decided by these; HTTP requests by their route's
        // (without routes: one default route carrying these).
        "authorizations": p.authorizations.iter().map(authz_json).collect::<Vec<_>>(),
        "routes": routes,
        "rateLimit": p.rate_limit.as_ref().map(rate_limit_json),
    })
}

/// Requests per second; `null` where the policy sets no such limit.
fn rate_limit_json(r: &RateLimit) -> Value {
    let overrides: Vec<Value> = r
        .overrides
        .iter()
        .map(|o| json!({"requestsPerSecond": o.requests_per_second, "clients": o.identities}))
        .collect();
    json!({
        "name": r.name,
        "total": r.total,
        "identity": r.identity,
        "overrides": overrides,
    })
}

fn authz_json(a: &Authz) -> Value {
    let (kind, name) = match &a.origin {
        AuthzOrigin::Policy { name, .. } => ("AuthorizationPolicy", name.clone()),
        AuthzOrigin::Default(d) => ("default", d.name().to_string()),
    };
    let networks: Vec<String> = a
        .networks
        .iter()
        .map(|n| {
            let except: Vec<String> = n.except.iter().map(|e| e.to_string()).collect();
            if except.is_empty() {
                n.net.to_string()
            } else {
                format!("{} except {}", n.net, except.join(","))
            }
        })
        .collect();
    let clients = match &a.authentication {
        Authentication::Unauthenticated => json!("any"),
        Authentication::MeshTls {
            identities,
            suffixes,
        } => {
            let mut ids: Vec<String> = identities.clone();
            ids.extend(suffixes.iter().map(|s| match s.as_str() {
                "" => "*".to_string(),
                s => format!("*.{s}"),
            }));
            json!({"meshTLS": ids})
        }
    };
    json!({"kind": kind, "name": name, "networks": networks, "clients": clients})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::documents::state_of;

    #[test]
    fn each_port_says_what_decides_it_and_who_is_admitted() {
        let s = state_of(
            "apiVersion: workload.linkerd.io/v1beta1
kind: ExternalWorkload
metadata: {name: books, namespace: default, labels: {app: books}}
spec: {workloadIPs: [{ip: 198.18.2.10}], ports: [{name: http, port: 8080}, {name: admin, port: 9990}, {name: linkerd-admin, port: 4191}]}
---
apiVersion: policy.linkerd.io/v1beta3
kind: Server
metadata: {name: books-http, namespace: default}
spec: {podSelector: {matchLabels: {app: books}}, port: http, proxyProtocol: HTTP/1}
---
apiVersion: policy.linkerd.io/v1alpha1
kind: MeshTLSAuthentication
metadata: {name: web, namespace: default}
spec: {identityRefs: [{kind: ServiceAccount, name: web}]}
---
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: books-web, namespace: default}
spec:
  targetRef: {group: policy.linkerd.io, kind: Server, name: books-http}
  requiredAuthenticationRefs: [{group: policy.linkerd.io, kind: MeshTLSAuthentication, name: web}]",
        );
        let d = describe(&s, &InboundDefaults::default(), "default", "books").expect("known");
        let ports = d["ports"].as_array().expect("ports");
        // The application's admin port is the workload's; the proxy's is not policed.
        assert_eq!(ports.len(), 2);
        assert_eq!(ports[0]["port"], 8080);
        assert_eq!(
            ports[0]["server"],
            json!({"kind": "Server", "name": "books-http"})
        );
        assert_eq!(ports[0]["protocol"], "HTTP/1");
        assert_eq!(
            ports[0]["authorizations"],
            json!([{"kind": "AuthorizationPolicy", "name": "books-web",
                    "networks": ["0.0.0.0/0", "::/0"],
                    "clients": {"meshTLS": ["web.default.serviceaccount.identity.weft.cluster.local"]}}])
        );
        assert_eq!(
            ports[1]["server"],
            json!({"kind": "default", "name": "all-unauthenticated"})
        );
        assert_eq!(ports[1]["authorizations"][0]["clients"], "any");
        assert_eq!(ports[0]["rateLimit"], Value::Null);
        assert_eq!(ports[1]["rateLimit"], Value::Null);
        assert!(describe(&s, &InboundDefaults::default(), "default", "nobody").is_none());
    }

    #[test]
    fn a_limited_port_shows_its_rate_limit() {
        let s = state_of(
            "apiVersion: workload.linkerd.io/v1beta1
kind: ExternalWorkload
metadata: {name: books, namespace: default, labels: {app: books}}
spec: {workloadIPs: [{ip: 198.18.2.10}], ports: [{name: http, port: 8080}]}
---
apiVersion: policy.linkerd.io/v1beta3
kind: Server
metadata: {name: books-http, namespace: default}
spec: {podSelector: {matchLabels: {app: books}}, port: http, accessPolicy: all-unauthenticated}
---
apiVersion: policy.linkerd.io/v1alpha1
kind: HTTPLocalRateLimitPolicy
metadata: {name: books-rl, namespace: default}
spec:
  targetRef: {group: policy.linkerd.io, kind: Server, name: books-http}
  identity: {requestsPerSecond: 20}
  overrides: [{requestsPerSecond: 50, clientRefs: [{kind: ServiceAccount, name: web}]}]",
        );
        let d = describe(&s, &InboundDefaults::default(), "default", "books").expect("known");
        assert_eq!(
            d["ports"][0]["rateLimit"],
            json!({"name": "books-rl", "total": null, "identity": 20,
                "overrides": [{"requestsPerSecond": 50,
                    "clients": ["web.default.serviceaccount.identity.weft.cluster.local"]}]})
        );
    }
}
