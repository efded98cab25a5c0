//! A stand-in for the Kubernetes API server: a local HTTP server (hyper) that answers with
//! responses recorded in the API server's exact shapes (`tests/fixtures/kubernetes/`): lists,
//! watch streams the test feeds one newline-delimited event at a time, `TokenReview` answers,
//! and one `Lease` kept as the API server keeps it (create, get, replace on `resourceVersion`).
//! Any path without a list is answered `404` as the API server answers for a resource it does
//! not serve (a CRD not installed). `SelfSubjectAccessReview`s are allowed unless denied
//! ([`FakeApi::deny`]). Every request is logged for assertions.
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
    /// The Lease, as stored (with its `resourceVersion`).
    leases: HashMap<String, Value>,
    version: u64,
    /// Paths whose next watch request is answered `410 Gone` (its version was compacted).
    gone: std::collections::HashSet<String>,
    /// Every request: `METHOD path?query`.
    log: Vec<String>,
}

#[derive(Clone)]
pub struct FakeApi {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl FakeApi {
    pub async fn start() -> FakeApi {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            version: 1000,
            ..Default::default()
        }));
        let api = FakeApi { addr, state };
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
            .filter(|r| r.starts_with(prefix))
            .cloned()
            .collect()
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
        self.state().log.push(format!("{method} {path}?{query}"));
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
        if path.contains("/leases") {
            return self.lease(method.as_str(), &path, body);
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

    fn lease(
        &self,
        method: &str,
        path: &str,
        mut body: Value,
    ) -> Response<BoxBody<Bytes, Infallible>> {
        let mut s = self.state();
        let conflict = || {
            reply(
                409,
                &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                        "message": "Operation cannot be fulfilled on leases.coordination.k8s.io: the object has been modified; please apply your changes to the latest version and try again",
                        "reason": "Conflict", "code": 409}),
            )
        };
        match method {
            "GET" => match s.leases.get(path) {
                Some(l) => reply(200, l),
                None => reply(404, &fixture_json("status-404.json")),
            },
            "POST" => {
                let name = body["metadata"]["name"].as_str().unwrap_or("").to_string();
                let at = format!("{path}/{name}");
                if s.leases.contains_key(&at) {
                    return conflict();
                }
                s.version += 1;
                body["metadata"]["resourceVersion"] = json!(s.version.to_string());
                s.leases.insert(at, body.clone());
                reply(201, &body)
            }
            "PUT" => {
                let held = s
                    .leases
                    .get(path)
                    .map(|l| l["metadata"]["resourceVersion"].clone());
                if held != Some(body["metadata"]["resourceVersion"].clone()) {
                    return conflict();
                }
                s.version += 1;
                body["metadata"]["resourceVersion"] = json!(s.version.to_string());
                s.leases.insert(path.to_string(), body.clone());
                reply(200, &body)
            }
            _ => reply(405, &Value::Null),
        }
    }

    /// The Lease stored at `path` (`/apis/coordination.k8s.io/v1/namespaces/NS/leases/NAME`).
    pub fn lease_at(&self, path: &str) -> Option<Value> {
        self.state().leases.get(path).cloned()
    }
}

fn reply(status: u16, body: &Value) -> Response<BoxBody<Bytes, Infallible>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(BodyExt::boxed(Full::new(Bytes::from(body.to_string()))))
        .unwrap()
}
