//! A stand-in for the Kubernetes API server: a local HTTP server (hyper) that answers with
//! responses recorded in the API server's exact shapes (`tests/fixtures/kubernetes/`): lists,
//! watch streams the test feeds one newline-delimited event at a time, `TokenReview` answers,
//! and the objects the control plane writes (Leases, ConfigMaps, status patches:
//! `kube_objects`), and ServiceAccount tokens minted by `TokenRequest` (reviewed as the
//! account's while it exists with the uid they were minted for). Objects change as on an API server ([`FakeApi::apply`], [`FakeApi::delete`]):
//! the list changes, one `resourceVersion` counter moves on, and every open watch of the
//! collection gets the event; a watch resumes from its `resourceVersion` (the events since are
//! replayed), or is answered `410 Gone` when that version is older than the list the stand-in
//! holds. Bookmarks go only to watches that asked for them (`allowWatchBookmarks`).
//! Any path without a list is answered `404` as the API server answers for a resource it does
//! not serve (a CRD not installed) — unless the server is [`FakeApi::strict`]: then only the
//! paths declared [`FakeApi::not_served`] are, and any other request it does not know (a path,
//! a query parameter such as `limit`) is answered `500` and recorded, and
//! [`FakeApi::assert_known`] fails the test naming it. `SelfSubjectAccessReview`s are allowed
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
    /// Open watches by path: each gets the lines pushed while it is open (bookmarks only when
    /// it asked for them).
    watches: HashMap<String, Vec<Watcher>>,
    /// Every event with a version since each path's list was set: what a watch from an older
    /// version is sent first. (version, line, whether it is a bookmark.)
    history: HashMap<String, Vec<(u64, Bytes, bool)>>,
    /// The version of each path's list as last set: a watch from before it gets `410 Gone`.
    floor: HashMap<String, u64>,
    /// Strict: paths answered 404 on purpose; anything else unknown is a test failure.
    strict: bool,
    not_served: std::collections::HashSet<String>,
    /// Paths a strict server answers only with this `fieldSelector` (a Link's credentials
    /// Secrets): a list or watch without it is unknown, so fails the test.
    fields: HashMap<String, String>,
    /// Requests a strict server did not know.
    unknown: Vec<String>,
    /// TokenReview answers by token; any other token gets `unauthenticated`.
    reviews: HashMap<String, Value>,
    /// Tokens minted by `TokenRequest`: the account's path, its uid then, the audiences.
    minted: HashMap<String, (String, Value, Value)>,
    unauthenticated: Value,
    /// Leases, ConfigMaps and status patches.
    objects: Objects,
    /// Paths whose next watch request is answered `410 Gone` (its version was compacted).
    gone: std::collections::HashSet<String>,
    /// Every request: (listener, `METHOD path?query`).
    log: Vec<(&'static str, String)>,
}

struct Watcher {
    tx: mpsc::UnboundedSender<Bytes>,
    bookmarks: bool,
}

/// The query parameters the stand-in understands; a strict server refuses any other.
const KNOWN_PARAMS: &[&str] = &[
    "watch",
    "resourceVersion",
    "timeoutSeconds",
    "allowWatchBookmarks",
    "labelSelector",
    "fieldSelector",
    "fieldManager",
];

/// A `resourceVersion` as the number the stand-in counts with (0 when it is not one).
fn version_of(object: &Value) -> u64 {
    object["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
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

    /// Answers `GET path` (a list, or one object) with `list` from now on. The list's version
    /// is the oldest a watch of `path` may resume from, and the counter moves up to it.
    pub fn set_list(&self, path: &str, list: Value) {
        let mut s = self.state();
        let version = version_of(&list);
        s.objects.saw_version(version);
        s.floor.insert(path.to_string(), version);
        s.history.remove(path);
        s.lists.insert(path.to_string(), list);
    }

    pub fn has_list(&self, path: &str) -> bool {
        self.state().lists.contains_key(path)
    }

    /// From now on, requests the stand-in does not know fail: see [`FakeApi::assert_known`].
    pub fn strict(&self) {
        self.state().strict = true;
    }

    /// Answers `GET path` only when asked with the field selector `fields` (strict server).
    pub fn require_fields(&self, path: &str, fields: &str) {
        self.state()
            .fields
            .insert(path.to_string(), fields.to_string());
    }

    /// Answers `GET path` (a collection of a kind not installed) `404`, as the API server does.
    pub fn not_served(&self, path: &str) {
        self.state().not_served.insert(path.to_string());
    }

    /// Fails the test if the client made requests the (strict) stand-in does not know.
    pub fn assert_known(&self) {
        let unknown = self.state().unknown.clone();
        assert!(
            unknown.is_empty(),
            "requests the stand-in API server does not know: {unknown:#?}"
        );
    }

    /// Creates or replaces `object` in the list at `collection` as the API server would store
    /// it (a new `resourceVersion`; a `uid` and a `creationTimestamp` when it has none), and
    /// sends `ADDED` or `MODIFIED` to the collection's watches. Returns the object stored.
    pub fn apply(&self, collection: &str, mut object: Value) -> Value {
        let mut s = self.state();
        let version = s.objects.next_version();
        let meta = &mut object["metadata"];
        meta["resourceVersion"] = json!(version.to_string());
        if meta["uid"].is_null() {
            meta["uid"] = json!(format!("00000000-0000-4000-8000-{version:012}"));
        }
        if meta["creationTimestamp"].is_null() {
            meta["creationTimestamp"] = json!("2026-12-01T11:00:00Z");
        }
        let key = |o: &Value| {
            (
                o["metadata"]["namespace"].clone(),
                o["metadata"]["name"].clone(),
            )
        };
        let items = s.items(collection);
        let event = match items.iter_mut().find(|o| key(o) == key(&object)) {
            Some(held) => {
                *held = object.clone();
                "MODIFIED"
            }
            None => {
                items.push(object.clone());
                "ADDED"
            }
        };
        s.event(
            collection,
            version,
            json!({"type": event, "object": object}),
        );
        object
    }

    /// Deletes the object `namespace/name` ("" for cluster-wide kinds) from the list at
    /// `collection` and sends `DELETED` (the object at a new version) to its watches.
    pub fn delete(&self, collection: &str, namespace: &str, name: &str) {
        let mut s = self.state();
        let version = s.objects.next_version();
        let items = s.items(collection);
        let at = items.iter().position(|o| {
            o["metadata"]["name"] == name
                && o["metadata"]["namespace"].as_str().unwrap_or("") == namespace
        });
        let mut object = items
            .remove(at.unwrap_or_else(|| panic!("{collection}: no {namespace}/{name} to delete")));
        object["metadata"]["resourceVersion"] = json!(version.to_string());
        s.event(
            collection,
            version,
            json!({"type": "DELETED", "object": object}),
        );
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
                    w.retain(|w| !w.tx.is_closed());
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

    /// Sends one recorded watch event (a JSON line) to every open watch of `path` (once one
    /// is open); an event with a version is kept for watches resuming from before it.
    pub async fn push(&self, path: &str, event: &Value) {
        self.watching(path).await;
        let mut s = self.state();
        let version = version_of(&event["object"]);
        s.objects.saw_version(version);
        s.event(path, version, event.clone());
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
        if let Some(account) = path.strip_suffix("/token").filter(|_| method == "POST") {
            return self.token_request(account, &body);
        }
        if path.ends_with("/tokenreviews") && method == "POST" {
            let token = body["spec"]["token"].as_str().unwrap_or("").to_string();
            if let Some(answer) = self.review_minted(&token, &body) {
                return reply(201, &answer);
            }
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
        let param = |name: &str| {
            query
                .split('&')
                .find_map(|p| p.strip_prefix(name)?.strip_prefix('='))
                .map(str::to_string)
        };
        if let Some(answer) = self.unknown(method.as_str(), &path, &query) {
            return answer;
        }
        if param("watch").as_deref() == Some("true") {
            let from: u64 = param("resourceVersion")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let mut s = self.state();
            let floor = s.floor.get(&path).copied().unwrap_or(0);
            if s.gone.remove(&path) || (from != 0 && from < floor) {
                return reply(410, &fixture_json("status-410.json"));
            }
            let (tx, rx) = mpsc::unbounded_channel();
            let bookmarks = param("allowWatchBookmarks").as_deref() == Some("true");
            // What happened since `from` first, as the API server's watch cache sends it.
            for (version, line, bookmark) in s.history.get(&path).into_iter().flatten() {
                if *version > from && (bookmarks || !bookmark) {
                    let _ = tx.send(line.clone());
                }
            }
            s.watches
                .entry(path)
                .or_default()
                .push(Watcher { tx, bookmarks });
            drop(s);
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

    /// `POST .../serviceaccounts/NAME/token`: a token of the account (404 without it), in the
    /// recorded `TokenRequest` answer's shape, the spec echoed with the API server's defaults.
    fn token_request(&self, account: &str, body: &Value) -> Response<BoxBody<Bytes, Infallible>> {
        let mut s = self.state();
        let Some(sa) = s.objects.get(account) else {
            return reply(404, &fixture_json("status-404.json"));
        };
        let token = format!(
            "eyJhbGciOiJSUzI1NiIsImtpZCI6InN0YW5kLWluIn0.c3RhbmQtaW4tdG9rZW4tMA.{}",
            s.minted.len()
        );
        let audiences = body["spec"]["audiences"].clone();
        s.minted.insert(
            token.clone(),
            (
                account.to_string(),
                sa["metadata"]["uid"].clone(),
                audiences.clone(),
            ),
        );
        let mut answer = fixture_json("tokenrequest.json");
        answer["metadata"]["name"] = sa["metadata"]["name"].clone();
        answer["metadata"]["namespace"] = sa["metadata"]["namespace"].clone();
        answer["spec"]["audiences"] = audiences;
        if let Some(seconds) = body["spec"]["expirationSeconds"].as_i64() {
            answer["spec"]["expirationSeconds"] = json!(seconds);
        }
        answer["status"]["token"] = json!(token);
        reply(201, &answer)
    }

    /// The review of a token minted here: the account's (the recorded answer's shape, without
    /// a pod binding) when the account still exists with the same uid and the audience asked
    /// for is the token's; otherwise `unauthenticated`. `None`: not a minted token.
    fn review_minted(&self, token: &str, body: &Value) -> Option<Value> {
        let s = self.state();
        let (account, uid, audiences) = s.minted.get(token)?;
        let asked = body["spec"]["audiences"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let good_for: Vec<Value> = asked
            .into_iter()
            .filter(|a| audiences.as_array().is_some_and(|t| t.contains(a)))
            .collect();
        let held = s.objects.get(account);
        let mut answer = match held.filter(|sa| sa["metadata"]["uid"] == *uid) {
            Some(sa) if !good_for.is_empty() => {
                let (ns, name) = (&sa["metadata"]["namespace"], &sa["metadata"]["name"]);
                let ns = ns.as_str().unwrap_or("");
                let mut answer = fixture_json("tokenreview-web.json");
                let user = &mut answer["status"]["user"];
                user["username"] = json!(format!(
                    "system:serviceaccount:{ns}:{}",
                    name.as_str().unwrap_or("")
                ));
                user["uid"] = uid.clone();
                user["groups"] = json!([
                    "system:serviceaccounts",
                    format!("system:serviceaccounts:{ns}"),
                    "system:authenticated"
                ]);
                user["extra"] = json!({"authentication.kubernetes.io/credential-id":
                                       ["JTI=2d7b4c1a-9e3f-4a6b-8c5d-0f1e2a3b4c5d"]});
                answer["status"]["audiences"] = json!(good_for);
                answer
            }
            _ => s.unauthenticated.clone(),
        };
        answer["spec"] = body["spec"].clone();
        Some(answer)
    }

    /// A strict server's answer to a request it does not know (recorded for
    /// [`FakeApi::assert_known`]); `None` when it knows it.
    fn unknown(
        &self,
        method: &str,
        path: &str,
        query: &str,
    ) -> Option<Response<BoxBody<Bytes, Infallible>>> {
        let mut s = self.state();
        if !s.strict {
            return None;
        }
        let params = query.split('&').filter(|p| !p.is_empty());
        let odd: Vec<&str> = params
            .filter(|p| !KNOWN_PARAMS.contains(&p.split('=').next().unwrap_or("")))
            .collect();
        let fields = query
            .split('&')
            .find_map(|p| p.strip_prefix("fieldSelector="))
            .map(super::kube_objects::unescape);
        let selected = match s.fields.get(path) {
            Some(want) => fields.as_deref() == Some(want.as_str()),
            None => fields.is_none(),
        };
        let known_path = method == "GET"
            && selected
            && (s.lists.contains_key(path) || s.not_served.contains(path));
        if odd.is_empty() && known_path {
            return None;
        }
        let what = format!("{method} {path}?{query}");
        s.unknown.push(what.clone());
        let message = format!("the stand-in API server does not know {what}");
        Some(reply(
            500,
            &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": message, "reason": "InternalError", "code": 500}),
        ))
    }

    /// The Lease stored at `path` (`/apis/coordination.k8s.io/v1/namespaces/NS/leases/NAME`).
    pub fn lease_at(&self, path: &str) -> Option<Value> {
        self.object_at(path)
    }
}

impl State {
    /// The items of the list at `collection` (which a test must have set).
    fn items(&mut self, collection: &str) -> &mut Vec<Value> {
        let list = self
            .lists
            .get_mut(collection)
            .unwrap_or_else(|| panic!("no list at {collection}: set_list it first"));
        list["items"]
            .as_array_mut()
            .unwrap_or_else(|| panic!("{collection} is not a list"))
    }

    /// Records `event` (at `version`; 0: none, an `ERROR`) and sends it to the open watches of
    /// `path`; the list's version moves on with it.
    fn event(&mut self, path: &str, version: u64, event: Value) {
        let line = Bytes::from(format!("{event}\n"));
        let bookmark = event["type"] == "BOOKMARK";
        if version != 0 {
            if let Some(list) = self.lists.get_mut(path) {
                list["metadata"]["resourceVersion"] = json!(version.to_string());
            }
            let history = self.history.entry(path.to_string()).or_default();
            history.push((version, line.clone(), bookmark));
        }
        for w in self.watches.get(path).into_iter().flatten() {
            if w.bookmarks || !bookmark {
                let _ = w.tx.send(line.clone());
            }
        }
    }
}

fn reply(status: u16, body: &Value) -> Response<BoxBody<Bytes, Infallible>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(BodyExt::boxed(Full::new(Bytes::from(body.to_string()))))
        .unwrap()
}
