//! The mutating admission webhook: `POST /inject` with an `AdmissionReview` v1 over TLS, as the
//! Kubernetes API server calls it for pods being created. The answer always admits the pod:
//! with a JSONPatch that injects the proxy when the pod or its Namespace asks for injection, or
//! without one (not asked, already injected, or an injection problem — logged and returned as an
//! admission warning, never a denial: a broken mesh must not stop pods from starting).
//!
//! The certificate is the control plane's own, issued from the mesh CA for
//! `weft-proxy-injector.<control-ns>.svc` and renewed ([`crate::own_cert`]); the
//! MutatingWebhookConfiguration's `caBundle` is therefore the trust anchors. The Namespace's
//! annotations come from the store's Namespace documents ([`State::namespaces`]), the index the
//! Kubernetes store fills from the API server.

use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::{Injector, Outcome};
use crate::ca::Ca;
use crate::own_cert::{OwnCert, OwnIdentity};
use crate::resource::State;

/// The path the MutatingWebhookConfiguration names.
pub const PATH: &str = "/inject";
/// The Service in front of the webhook (`weft-proxy-injector.<ns>.svc:443`).
pub const SERVICE: &str = "weft-proxy-injector";
/// Largest AdmissionReview accepted (the API server's own request limit is 3 MiB of object).
const MAX_BODY: usize = 4 << 20;
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The DNS name the webhook's certificate carries: `weft-proxy-injector.<ns>.svc`.
pub fn dns_name(control_namespace: &str) -> String {
    format!("{SERVICE}.{control_namespace}.svc")
}

/// `weft control --webhook-addr`: where the webhook listens and how it injects (the control
/// plane sets the injector's `defaults` and `cluster_domain` to its own).
#[derive(Clone, Debug)]
pub struct WebhookConfig {
    pub addr: SocketAddr,
    pub injector: Injector,
}

/// What the webhook serves with.
pub struct Webhook {
    /// Its `trust_anchors` are set per request from `ca`.
    pub injector: Injector,
    pub identity: OwnIdentity,
    pub states: watch::Receiver<Arc<State>>,
    pub ca: watch::Receiver<Arc<Ca>>,
}

/// Serves `listener` until `shutdown` changes.
pub async fn serve(listener: TcpListener, webhook: Webhook, mut shutdown: watch::Receiver<bool>) {
    let webhook = Arc::new(webhook);
    let mut built: Option<(Arc<OwnCert>, Arc<ServerConfig>)> = None;
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("webhook: accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let _ = stream.set_nodelay(true);
        let Some(cert) = webhook.identity.cert() else {
            tracing::warn!(%peer, "webhook: no certificate could be issued; connection closed");
            continue;
        };
        let config = match &built {
            Some((c, config)) if Arc::ptr_eq(c, &cert) => config.clone(),
            _ => match server_config(&cert) {
                Ok(config) => {
                    let config = Arc::new(config);
                    built = Some((cert, config.clone()));
                    config
                }
                Err(e) => {
                    tracing::warn!("webhook: TLS configuration: {e}");
                    continue;
                }
            },
        };
        let webhook = webhook.clone();
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            let acceptor = tokio_rustls::TlsAcceptor::from(config);
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => return tracing::debug!(%peer, "webhook: TLS handshake: {e}"),
                Err(_) => return tracing::debug!(%peer, "webhook: TLS handshake timed out"),
            };
            let svc = hyper::service::service_fn(move |req| handle(req, webhook.clone(), peer));
            let conn =
                hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), svc);
            tokio::select! {
                res = conn => if let Err(e) = res { tracing::debug!(%peer, "webhook connection: {e}") },
                _ = stop.changed() => {}
            }
        });
    }
}

/// TLS 1.2 or 1.3 (the API server's client speaks both) as `cert`, HTTP/1.1.
fn server_config(cert: &OwnCert) -> Result<ServerConfig, String> {
    let chain = cert
        .chain
        .iter()
        .map(|c| CertificateDer::from(c.clone()))
        .collect();
    let key = PrivateKeyDer::try_from(cert.key.clone()).map_err(|e| format!("key: {e}"))?;
    let mut config = ServerConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("certificate: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

async fn handle(
    req: Request<hyper::body::Incoming>,
    webhook: Arc<Webhook>,
    peer: SocketAddr,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    if req.uri().path() != PATH {
        return Ok(reply(StatusCode::NOT_FOUND, json!({"error": "not found"})));
    }
    if req.method() != Method::POST {
        return Ok(reply(
            StatusCode::METHOD_NOT_ALLOWED,
            json!({"error": "POST an AdmissionReview"}),
        ));
    }
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return Ok(reply(
                StatusCode::BAD_REQUEST,
                json!({"error": format!("reading the body: {e}")}),
            ))
        }
    };
    let review: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return Ok(reply(
                StatusCode::BAD_REQUEST,
                json!({"error": format!("not JSON: {e}")}),
            ))
        }
    };
    let state = webhook.states.borrow().clone();
    let mut injector = webhook.injector.clone();
    injector.trust_anchors = Some(webhook.ca.borrow().trust_anchors_pem().to_string());
    Ok(match admit(&injector, &state, &review) {
        Ok(answer) => reply(StatusCode::OK, answer),
        Err(e) => {
            tracing::warn!(%peer, "webhook: bad AdmissionReview: {e}");
            reply(StatusCode::BAD_REQUEST, json!({"error": e}))
        }
    })
}

fn reply(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    let mut rsp = Response::new(Full::new(Bytes::from(body.to_string())));
    *rsp.status_mut() = status;
    rsp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    rsp
}

/// The answer to an `AdmissionReview` v1 request: admitted, with a JSONPatch when the pod is
/// injected. `Err` only when the review itself is malformed (no `request.uid`).
pub fn admit(injector: &Injector, state: &State, review: &Value) -> Result<Value, String> {
    let request = review
        .get("request")
        .and_then(Value::as_object)
        .ok_or("no request in the AdmissionReview")?;
    let uid = request
        .get("uid")
        .and_then(Value::as_str)
        .ok_or("no request.uid in the AdmissionReview")?;
    let api_version = review["apiVersion"]
        .as_str()
        .unwrap_or("admission.k8s.io/v1");
    let mut response = json!({"uid": uid, "allowed": true});
    let namespace = request
        .get("namespace")
        .and_then(Value::as_str)
        .or_else(|| request["object"]["metadata"]["namespace"].as_str())
        .unwrap_or("default");
    let pod_name = request["object"]["metadata"]["name"]
        .as_str()
        .or_else(|| request["object"]["metadata"]["generateName"].as_str())
        .unwrap_or("")
        .to_string();
    let is_pod = request["kind"]["kind"].as_str().is_none_or(|k| k == "Pod");
    // The control plane is never injected, whatever the webhook configuration's selector says.
    let own = namespace == injector.defaults.control_namespace;
    if is_pod && !own && request.get("object").is_some_and(Value::is_object) {
        let ns_annotations = state
            .namespaces
            .get(namespace)
            .map(|ns| ns.annotations.clone())
            .unwrap_or_default();
        let before = &request["object"];
        let mut after = before.clone();
        match injector.inject(&mut after, &ns_annotations) {
            Ok(Outcome::Injected) => {
                let patch = json_patch(before, &after);
                tracing::info!(%namespace, pod = %pod_name, "webhook: injected the proxy");
                response["patchType"] = json!("JSONPatch");
                response["patch"] = json!(base64::engine::general_purpose::STANDARD
                    .encode(Value::Array(patch).to_string()));
            }
            Ok(outcome) => {
                tracing::debug!(%namespace, pod = %pod_name, ?outcome, "webhook: not injected")
            }
            Err(e) => {
                tracing::warn!(%namespace, pod = %pod_name, "webhook: not injected: {e}");
                response["warnings"] = json!([format!("weft: proxy not injected: {e}")]);
            }
        }
    }
    Ok(json!({
        "apiVersion": api_version,
        "kind": "AdmissionReview",
        "response": response,
    }))
}

/// A JSON pointer segment (RFC 6901).
fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// RFC 6902 operations turning `before` into `after`, two levels deep (`/metadata/*`,
/// `/spec/*`: injection rewrites whole fields there, such as `/spec/initContainers`); `add`
/// replaces an existing member, so it serves both cases.
pub fn json_patch(before: &Value, after: &Value) -> Vec<Value> {
    let mut ops = Vec::new();
    let empty = Map::new();
    let before_top = before.as_object().unwrap_or(&empty);
    for (top, new) in after.as_object().unwrap_or(&empty) {
        let path = format!("/{}", escape(top));
        match (before_top.get(top), new) {
            (Some(old), _) if old == new => {}
            (Some(Value::Object(old)), Value::Object(new)) => {
                for (key, value) in new {
                    if old.get(key) != Some(value) {
                        ops.push(json!({"op": "add", "path": format!("{path}/{}", escape(key)), "value": value}));
                    }
                }
                for key in old.keys().filter(|k| !new.contains_key(*k)) {
                    ops.push(json!({"op": "remove", "path": format!("{path}/{}", escape(key))}));
                }
            }
            _ => ops.push(json!({"op": "add", "path": path, "value": new})),
        }
    }
    for top in before_top
        .keys()
        .filter(|k| !after.as_object().is_some_and(|a| a.contains_key(*k)))
    {
        ops.push(json!({"op": "remove", "path": format!("/{}", escape(top))}));
    }
    ops
}
