//! Identity helpers of the control plane's tests: a Service `web` (default namespace), workload
//! registration through the API (identity and token back), CSRs made with rcgen, and
//! `Identity.Certify` through the linkerd2-proxy-api client.

use std::net::SocketAddr;

use linkerd2_proxy_api::identity::{identity_client::IdentityClient, CertifyRequest};
use rcgen::{CertificateParams, KeyPair, SanType};

use super::http;

pub const SERVICES: &str = "\
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 8080, targetPort: http}
";

pub const WEB_ID: &str = "web-1.default.serviceaccount.identity.weft.cluster.local";

/// Registers `name` (labels app=web) and returns (identity, token) from the response.
pub async fn register(api: SocketAddr, name: &str) -> (String, String) {
    let doc = serde_json::json!({
        "apiVersion": "workload.linkerd.io/v1beta1",
        "kind": "ExternalWorkload",
        "metadata": {"labels": {"app": "web"}},
        "spec": {"workloadIPs": [{"ip": "127.0.0.1"}], "ports": [{"name": "http", "port": 18080}]},
    });
    let (status, body) = http(
        api,
        "PUT",
        &format!("/v1/workloads/default/{name}"),
        &doc.to_string(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["ok"], true);
    (
        v["identity"].as_str().expect("identity").to_string(),
        v["token"].as_str().expect("token").to_string(),
    )
}

pub fn csr_for(identity: &str) -> Vec<u8> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = CertificateParams::default();
    p.subject_alt_names = vec![SanType::DnsName(identity.try_into().unwrap())];
    p.serialize_request(&key).unwrap().der().to_vec()
}

pub async fn certify(
    grpc: SocketAddr,
    identity: &str,
    token: &str,
    csr: Vec<u8>,
) -> Result<linkerd2_proxy_api::identity::CertifyResponse, tonic::Status> {
    let mut client = IdentityClient::connect(format!("http://{grpc}"))
        .await
        .unwrap();
    client
        .certify(CertifyRequest {
            identity: identity.into(),
            token: token.as_bytes().to_vec(),
            certificate_signing_request: csr,
        })
        .await
        .map(|r| r.into_inner())
}
