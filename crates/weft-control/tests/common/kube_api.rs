//! A stand-in for the Kubernetes API server: a local HTTP server (hyper) that answers with
//! responses recorded in the API server's exact shapes (`tests/fixtures/kubernetes/`): lists,
//! watch streams the test feeds one newline-delimited event at a time, `TokenReview` answers,
//! and the objects the control plane writes (Leases, ConfigMaps, status patches:
//! `kube_objects`). Any path without a list is answered `404` as the API server answers for a
//! resource it does not serve (a CRD not installed). `SelfSubjectAccessReview`s are allowed
//! unless denied ([`FakeApi::deny`]). Every request is logged for assertions, with the listener
//! it came through: [`FakeApi::listener`] gives one server several addresses, so replicas
//! sharing it can be told apart.
//!
//! Shared by weft-control's tests and weft's (`crates/weft/tests/check_kubernetes.rs` includes
//! this file by `#[path]`), so fixtures are found from this crate's directory either way.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::kube_objects::Objects;

/// The recorded API-server answers.
pub fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../weft-control/tests/fixtures/kubernetes")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn fixture_json(name: &str) -> Value {
    serde_json::from_str(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[derive(Default)]
struct State {
    /// GET answers by path: lists (`/api/v1/pods`) and single objects (`/version`).
    lists: HashMap<String, Value>,
    /// `(group, resource, namespace)` the user may not create (SelfSubjectAccessReview).
    denied: std::collections::HashSet<(String, String, String)>,
    /// Open watches by path: each gets the lines pushed while it is open.
    watches: HashMap<String, Vec<mpsc::UnboundedSender<Bytes>>>,
    /// TokenReview answers by token; any other token gets `unauthenticated`.
    reviews: HashMap<String, Value>,
    unauthenticated: Value,
    /// Leases, ConfigMaps and status patches.
    objects: Objects,
    /// Paths whose next watch request is answered `410 Gone` (its version was compacted).
    gone: std::collections::HashSet<String>,
    /// Every request: (listener, `METHOD path?query`).
    log: Vec<(&'static str, String)>,
}

#[derive(Clone)]
pub struct FakeApi {
    pub addr: SocketAddr,
    /// The name of the listener at `addr` (the first one's is `main`).
    tag: &'static str,
    state: Arc<Mutex<State>>,
}

impl FakeApi {
    pub async fn start() -> FakeApi {
        FakeApi::serve("main", Arc::new(Mutex::new(State::default()))).await
    }

    /// Another address of the same server (same objects, lists and log), whose requests are
    /// logged under `tag`.
    pub async fn listener(&self, tag: &'static str) -> FakeApi {
        FakeApi::serve(tag, self.state.clone()).await
    }

    async fn serve(tag: &'static str, state: Arc<Mutex<State>>) -> FakeApi {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let api = FakeApi { addr, tag, state };
        let serving = api.clone();
        tokio::spawn(async move {
            loop {
                let Ok((conn, _)) = listener.accept().await else {
                    return;
                };
                let api = serving.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let api = api.clone();
                        async move { Ok::<_, Infallible>(api.answer(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(conn), svc)
                        .await;
                });
            }
        });
        api
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A kubeconfig file naming this server (no credentials: it asks for none).
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\n\
             clusters: [{{name: fake, cluster: {{server: \"http://{}\"}}}}]\n\
             users: [{{name: fake, user: {{}}}}]\n\
             contexts: [{{name: fake, context: {{cluster: fake, user: fake}}}}]\n\
             current-context: fake\n",
            self.addr
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Answers `GET path` (a list, or one object) with `list` from now on.
    pub fn set_list(&self, path: &str, list: Value) {
        self.state().lists.insert(path.to_string(), list);
    }

    /// Answers SelfSubjectAccessReviews for creating `resource` of `group` in `namespace`
    /// ("" for cluster-wide) "not allowed" from now on.
    pub fn deny(&self, group: &str, resource: &str, namespace: &str) {
        let key = (group.into(), resource.into(), namespace.into());
        self.state().denied.insert(key);
    }

    pub fn set_reviews(&self, reviews: HashMap<String, Value>, unauthenticated: Value) {
        let mut s = self.state();
        s.reviews = reviews;
        s.unauthenticated = unauthenticated;
    }

    /// The requests so far that start with `prefix` (`GET /api/v1/pods`).
    pub fn requests(&self, prefix: &str) -> Vec<String> {
        let s = self.state();
        s.log
            .iter()
            .filter(|(_, r)| r.starts_with(prefix))
            .map(|(_, r)| r.clone())
            .collect()
    }

    /// The requests so far through the listener `tag` that start with `prefix`.
    pub fn requests_via(&self, tag: &str, prefix: &str) -> Vec<String> {
        let s = self.state();
        s.log
            .iter()
            .filter(|(t, r)| *t == tag && r.starts_with(prefix))
            .map(|(_, r)| r.clone())
            .collect()
    }

    /// Every `status` merge patch so far: (path, body).
    pub fn status_patches(&self) -> Vec<(String, Value)> {
        self.state().objects.patches.clone()
    }

    /// Stores `object` at `path` as if some client had created it.
    pub fn put_object(&self, path: &str, object: Value) {
        self.state().objects.put(path, object);
    }

    pub fn object_at(&self, path: &str) -> Option<Value> {
        self.state().objects.get(path)
    }

    /// Paths of the stored objects of `collection` (`/api/v1/namespaces/weft/configmaps`).
    pub fn objects_in(&self, collection: &str) -> Vec<String> {
        self.state().objects.paths(collection)
    }

    /// Waits (bounded) until a watch of `path` is open.
    pub async fn watching(&self, path: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            {
                let mut s = self.state();
                if let Some(w) = s.watches.get_mut(path) {
                    w.retain(|tx| !tx.is_closed());
                    if !w.is_empty() {
                        return;
                    }
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no watch of {path} opened"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends one watch event (a JSON line) to every open watch of `path`.
    pub async fn push(&self, path: &str, event: &Value) {
        self.watching(path).await;
        let line = Bytes::from(format!("{event}\n"));
        let s = self.state();
        for tx in s.watches.get(path).into_iter().flatten() {
            let _ = tx.send(line.clone());
        }
    }

    /// Ends every open watch of `path` and answers the next watch request `410 Gone`, as the
    /// API server answers a watch from a version it no longer has.
    pub fn expire(&self, path: &str) {
        let mut s = self.state();
        s.gone.insert(path.to_string());
        s.watches.remove(path);
    }

    /// Ends every open watch of `path` (as the server does when a watch times out).
    pub fn end_watches(&self, path: &str) {
        self.state().watches.remove(path);
    }

    async fn answer(&self, req: Request<Incoming>) -> Response<BoxBody<Bytes, Infallible>> {
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let query = req.uri().query().unwrap_or("").to_string();
        self.state()
            .log
            .push((self.tag, format!("{method} {path}?{query}")));
        let body = req.into_body().collect().await.map(|b| b.to_bytes());
        let body: Value = body
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null);
        if path.ends_with("/tokenreviews") && method == "POST" {
            let token = body["spec"]["token"].as_str().unwrap_or("").to_string();
            // The recorded answers are for tokens of Linkerd's identity audience only.
            let audience = body["spec"]["audiences"] == json!(["identity.l5d.io"]);
            let s = self.state();
            let mut answer = match s.reviews.get(&token) {
                Some(a) if audience => a.clone(),
                _ => s.unauthenticated.clone(),
            };
            // The API server echoes the spec it was sent.
            answer["spec"] = body["spec"].clone();
            return reply(201, &answer);
        }
        if path.ends_with("/selfsubjectaccessreviews") && method == "POST" {
            let attributes = &body["spec"]["resourceAttributes"];
            let field = |name: &str| attributes[name].as_str().unwrap_or("").to_string();
            let key = (field("group"), field("resource"), field("namespace"));
            let allowed = field("verb") == "create" && !self.state().denied.contains(&key);
            let mut answer = fixture_json("selfsubjectaccessreview.json");
            answer["spec"] = body["spec"].clone();
            answer["status"] = match allowed {
                true => {
                    json!({"allowed": true, "reason": "RBAC: allowed by ClusterRoleBinding \"cluster-admin\""})
                }
                false => json!({"allowed": false}),
            };
            return reply(201, &answer);
        }
        let written = {
            let mut s = self.state();
            let State { objects, lists, .. } = &mut *s;
            objects.answer(lists, method.as_str(), &path, &query, body)
        };
        if let Some((status, answer)) = written {
            return reply(status, &answer);
        }
        if query.split('&').any(|p| p == "watch=true") {
            if self.state().gone.remove(&path) {
                let mut status = fixture_json("watch-gone.json")["object"].clone();
                status["metadata"] = json!({});
                return reply(410, &status);
            }
            let (tx, rx) = mpsc::unbounded_channel();
            self.state().watches.entry(path).or_default().push(tx);
            let stream = tokio_stream::wrappers::UnboundedReceiverStream::new(rx);
            let stream = futures_util::StreamExt::map(stream, |b| Ok(Frame::data(b)));
            return Response::builder()
                .status(200)
                .header("content-type", "application/json")
                .body(BodyExt::boxed(StreamBody::new(stream)))
                .unwrap();
        }
        let list = self.state().lists.get(&path).cloned();
        match list {
            Some(list) if method == "GET" => reply(200, &list),
            _ => reply(404, &fixture_json("status-404.json")),
        }
    }

    /// The Lease stored at `path` (`/apis/coordination.k8s.io/v1/namespaces/NS/leases/NAME`).
    pub fn lease_at(&self, path: &str) -> Option<Value> {
        self.object_at(path)
    }
}

fn reply(status: u16, body: &Value) -> Response<BoxBody<Bytes, Infallible>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(BodyExt::boxed(Full::new(Bytes::from(body.to_string()))))
        .unwrap()
}
