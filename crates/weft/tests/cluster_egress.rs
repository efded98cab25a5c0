//! Egress control end to end on a two-node testbed cluster (root only; skipped locally without
//! root, failing under `CI=true`): an `EgressNetwork` written into the control plane's store
//! decides whether a meshed pod's traffic to a host outside the mesh leaves it. The "internet"
//! is a plain network namespace of the testbed (no sidecar, not registered) holding an HTTP
//! server, a TCP echo server and a TLS echo server; the client is a meshed `weft run` pod whose connections to that
//! address are intercepted by its proxy, which asks `OutboundPolicies` about the address.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::eventually;
use support::pod_mesh::{write_doc, Mesh};
use support::pods::{get, Backend, PodNet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weft_testbed::mesh::metric_sum;
use weft_testbed::{require_root, serial};

/// No Service: the internet host is nobody the mesh knows.
const SERVICES: &str = "";

fn egress(ip: &str, policy: &str) -> String {
    format!(
        "apiVersion: policy.linkerd.io/v1alpha1
kind: EgressNetwork
metadata: {{name: internet, namespace: default}}
spec:
  trafficPolicy: {policy}
  networks: [{{cidr: '{ip}/32'}}]
"
    )
}

const ALLOW_EXAMPLE_ORG: &str = "---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: example-org, namespace: default}
spec:
  parentRefs: [{group: policy.linkerd.io, kind: EgressNetwork, name: internet, port: 80}]
  hostnames: [example.org]
  rules: [{}]
";

/// HTTPS to `api.example.com` on port 443, allowed by its SNI (TLS passes through untouched).
const ALLOW_API_EXAMPLE_COM: &str = "---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {name: api-example-com, namespace: default}
spec:
  parentRefs: [{group: policy.linkerd.io, kind: EgressNetwork, name: internet, port: 443}]
  hostnames: [api.example.com]
  rules: [{}]
";

/// The TLS server of the internet host and a client that trusts it: a self-signed certificate
/// for both names the test asks for (`api.example.com` allowed, `other.example.com` not).
struct Tls {
    acceptor: tokio_rustls::TlsAcceptor,
    connector: tokio_rustls::TlsConnector,
}

impl Tls {
    fn new() -> Tls {
        use weft_proxy::identity::tls::provider;
        let names = vec![
            "api.example.com".to_string(),
            "other.example.com".to_string(),
        ];
        let cert = rcgen::generate_simple_self_signed(names).expect("self-signed certificate");
        let der = cert.cert.der().clone();
        let key = rustls::pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der())
            .expect("key");
        let server = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![der.clone()], key)
            .expect("server config");
        let mut roots = rustls::RootCertStore::empty();
        roots.add(der).expect("root");
        let client = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Tls {
            acceptor: tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(server)),
            connector: tokio_rustls::TlsConnector::from(std::sync::Arc::new(client)),
        }
    }

    /// Serves TLS echo on `listener`: each connection's first line comes back.
    fn serve(&self, listener: tokio::net::TcpListener) {
        let acceptor = self.acceptor.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut s) = acceptor.accept(s).await else {
                        return;
                    };
                    let mut buf = [0u8; 64];
                    if let Ok(n) = s.read(&mut buf).await {
                        let _ = s.write_all(&buf[..n]).await;
                        let _ = s.shutdown().await;
                    }
                });
            }
        });
    }

    /// A TLS handshake with SNI `name` from the client pod to `addr`, then `hello`: what came
    /// back (empty when the connection was closed or the handshake failed; at most 2 s).
    async fn echo(&self, pod: &PodNet, addr: SocketAddr, name: &'static str) -> Vec<u8> {
        let exchange = async {
            let tcp = pod.connect(addr).await.ok()?;
            let name = rustls::pki_types::ServerName::try_from(name).ok()?;
            let mut s = self.connector.connect(name, tcp).await.ok()?;
            s.write_all(b"hello\n").await.ok()?;
            let mut buf = vec![0u8; 64];
            let n = s.read(&mut buf).await.ok()?;
            buf.truncate(n);
            Some(buf)
        };
        tokio::time::timeout(Duration::from_secs(2), exchange)
            .await
            .ok()
            .flatten()
            .unwrap_or_default()
    }
}

/// Sends `hello` on a fresh TCP connection from the client pod to `addr` and returns what came
/// back before the connection closed (at most 1 s).
async fn echo(pod: &PodNet, addr: SocketAddr) -> Vec<u8> {
    let Ok(mut s) = pod.connect(addr).await else {
        return Vec::new();
    };
    if s.write_all(b"hello\n").await.is_err() {
        return Vec::new();
    }
    let mut buf = vec![0u8; 64];
    match tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await {
        Ok(Ok(n)) => buf[..n].to_vec(),
        _ => Vec::new(),
    }
}

/// Under `Deny` an HTTP request to a host outside the mesh gets 403 with `l5d-proxy-error` and an
/// opaque connection is closed; a route with the EgressNetwork as parent allows `example.org`
/// (other hosts stay denied); under `Allow` the opaque connection goes through. The client's
/// proxy labels the egress requests with the EgressNetwork.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_is_denied_or_allowed_by_its_egress_network() {
    let _serial = serial();
    let Some(root) = require_root(&[]) else {
        return;
    };
    let mesh = Mesh::start("egress", root, SERVICES).await;
    let internet = mesh.cluster.add_pod(1).expect("internet namespace");
    let net = PodNet::open(internet.netns().name());
    let _web = Backend::start(&net, 80, "internet");
    let echo_listener = net.bind(SocketAddr::from(([0, 0, 0, 0], 9000)));
    tokio::spawn(async move {
        while let Ok((mut s, _)) = echo_listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    let tls = Tls::new();
    tls.serve(net.bind(SocketAddr::from(([0, 0, 0, 0], 443))));
    let ip = internet.ip().to_string();
    let web = SocketAddr::from((internet.ip(), 80));
    let tcp = SocketAddr::from((internet.ip(), 9000));
    let https = SocketAddr::from((internet.ip(), 443));
    let client_net = PodNet::open(&mesh.client_pod.netns().expect("client netns"));

    // Without an EgressNetwork the host is reachable as before (passthrough).
    mesh.until(
        &mesh.client,
        web,
        "the host answers",
        || get("example.org", "/"),
        |a| a.status == 200,
    )
    .await;
    assert_eq!(echo(&client_net, tcp).await, b"hello\n");
    assert_eq!(
        tls.echo(&client_net, https, "other.example.com").await,
        b"hello\n"
    );

    write_doc(&mesh.store, "egress.yaml", &egress(&ip, "Deny"));
    mesh.until(
        &mesh.client,
        web,
        "`Deny` refuses HTTP",
        || get("other.org", "/"),
        |a| a.status == 403 && !a.proxy_error.is_empty(),
    )
    .await;
    eventually("`Deny` closes TCP", Duration::from_secs(20), || async {
        echo(&client_net, tcp).await.is_empty().then_some(())
    })
    .await;

    write_doc(
        &mesh.store,
        "egress.yaml",
        &format!("{}{ALLOW_EXAMPLE_ORG}", egress(&ip, "Deny")),
    );
    mesh.until(
        &mesh.client,
        web,
        "the route allows example.org",
        || get("example.org", "/"),
        |a| a.status == 200 && a.backend == "internet",
    )
    .await;
    let a = mesh.client.send(web, get("other.org", "/")).await;
    assert_eq!(a.status, 403, "other hosts stay denied: {a:?}");
    assert!(
        tls.echo(&client_net, https, "api.example.com")
            .await
            .is_empty(),
        "HTTPS stays denied without a TLSRoute"
    );

    write_doc(
        &mesh.store,
        "egress.yaml",
        &format!(
            "{}{ALLOW_EXAMPLE_ORG}{ALLOW_API_EXAMPLE_COM}",
            egress(&ip, "Deny")
        ),
    );
    eventually(
        "the TLSRoute allows api.example.com",
        Duration::from_secs(20),
        || async {
            (tls.echo(&client_net, https, "api.example.com").await == b"hello\n").then_some(())
        },
    )
    .await;
    assert!(
        tls.echo(&client_net, https, "other.example.com")
            .await
            .is_empty(),
        "other server names stay denied"
    );
    let m = mesh.client_pod.metrics().await.expect("client metrics");
    let refused = metric_sum(
        &m,
        "outbound_tcp_forbidden_total",
        &[("route_name", "tls-egress-deny")],
    );
    assert!(refused >= 1.0, "the refused SNI is counted: {refused}\n{m}");

    write_doc(&mesh.store, "egress.yaml", &egress(&ip, "Allow"));
    eventually(
        "`Allow` lets TCP through",
        Duration::from_secs(20),
        || async { (echo(&client_net, tcp).await == b"hello\n").then_some(()) },
    )
    .await;
    let a = mesh.client.send(web, get("other.org", "/")).await;
    assert_eq!(a.status, 200, "`Allow` lets every host through: {a:?}");

    let m = mesh.client_pod.metrics().await.expect("client metrics");
    let egress_requests = metric_sum(
        &m,
        "outbound_http_route_request_statuses_total",
        &[
            ("parent_kind", "EgressNetwork"),
            ("parent_name", "internet"),
        ],
    );
    assert!(
        egress_requests >= 3.0,
        "egress requests are labelled with their EgressNetwork: {egress_requests}\n{m}"
    );
}
