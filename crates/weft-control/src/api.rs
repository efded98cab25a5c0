//! The HTTP API (hyper, HTTP/1): workload registration (which also issues the workload's
//! identity token), store status, the CA's trust anchors and rotation status, golden metrics
//! from the proxies' telemetry (`api/stat.rs`), who talks to whom with which identities
//! (`api/edges.rs`), per-route metrics (`api/routes.rs`), `weft apply`/`delete`/`get` of any
//! resource (`api/resources.rs`), the control plane's half of `weft check`
//! (`api/check.rs`), taps streamed from a workload's proxy (`api/tap.rs`), health, and the web
//! dashboard's embedded files under `/dashboard/` (`api/dashboard.rs`), multicluster link
//! credentials, exports and links (`api/multicluster.rs`), and the control plane's own
//! Prometheus `/metrics` (the mirror's links and gateways, `multicluster/metrics.rs`).
//! Every request is answered here in one `match`; errors become `{"error": ".."}` bodies.

use crate::ca::Ca;
use crate::ca_reload::{Ledger, Records};
use crate::index::Index;
use crate::leader::Leadership;
use crate::resource::{self, Defaults, Resource};
use crate::rotation;
use crate::store::{StoreError, StoreHandle};
use crate::telemetry::{Key, Status, Telemetry};
use crate::tokens::Tokens;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::watch;

#[path = "api/authz.rs"]
mod authz;
#[path = "api/check.rs"]
pub mod check;
#[path = "api/dashboard.rs"]
pub mod dashboard;
#[path = "api/edges.rs"]
mod edges;
#[path = "api/limits.rs"]
pub mod limits;
#[path = "api/multicluster.rs"]
pub mod multicluster;
#[path = "api/params.rs"]
mod params;
#[path = "api/resources.rs"]
pub mod resources;
#[path = "api/routes.rs"]
mod routes;
#[path = "api/stat.rs"]
mod stat;
#[path = "api/tap.rs"]
mod tap;

/// Every answer's body: whole (`Full`) but for the streamed taps.
pub type ApiBody = http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>;

/// What the API reads and changes.
pub struct Ctx {
    pub store: StoreHandle,
    pub index: Arc<Index>,
    pub defaults: Defaults,
    pub tokens: Tokens,
    /// The CA in force (it changes when the identity directory does).
    pub ca: watch::Receiver<Arc<Ca>>,
    pub ledger: Ledger,
    /// Where every control plane's ledger is kept (`None`: an ephemeral CA, this process only).
    pub records: Option<Records>,
    /// Which replica leads (with the etcd store; otherwise always this one).
    pub leader: tokio::sync::watch::Receiver<Leadership>,
    pub identity_dir: Option<PathBuf>,
    /// The proxies' scraped metrics (`GET /v1/stat/...`, `/v1/edges`, `/v1/routes`).
    pub telemetry: Telemetry,
    /// When set, `GET /v1/stat/...` answers from this Prometheus instead of `telemetry`.
    pub prometheus: Option<crate::telemetry::prometheus::Prometheus>,
    /// Where the gRPC services listen (`GET /v1/check` tells `weft check`).
    pub grpc_addr: std::net::SocketAddr,
    /// The identity `GET /v1/tap/...` dials proxies' tap servers with.
    pub tap: crate::tap::OwnIdentity,
    /// This cluster's name for linking clusters (`--cluster-name`).
    pub cluster_name: Option<String>,
    /// The Links this control plane follows (`GET /v1/multicluster/links`).
    pub links: crate::multicluster::Links,
    /// What the API admits: connections, request heads and bodies, changes, workloads.
    pub limits: limits::Limits,
    /// What those limits refused (`GET /metrics`).
    pub refused: limits::Refused,
    /// With the Kubernetes store: link tokens are ServiceAccount tokens (`None`: digests in
    /// `tokens`).
    pub link_accounts: Option<crate::k8s::link_accounts::LinkAccounts>,
}

/// Serves the API on `listener` until `shutdown` changes. Each connection holds one of
/// `max_connections` slots; past them a connection is answered `503` and closed.
pub async fn serve(
    listener: tokio::net::TcpListener,
    ctx: Ctx,
    mut shutdown: watch::Receiver<bool>,
) {
    let ctx = Arc::new(ctx);
    let slots = Arc::new(tokio::sync::Semaphore::new(ctx.limits.max_connections));
    let changes = Arc::new(tokio::sync::Semaphore::new(
        ctx.limits.max_changes_in_flight,
    ));
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    // Small responses must not wait for the client's delayed ACK (Nagle).
                    let _ = stream.set_nodelay(true);
                    stream
                }
                Err(e) => {
                    // Typically EMFILE: keep serving the connections we have.
                    tracing::warn!("api: accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            ctx.refused.count(limits::Reason::Connections);
            tokio::spawn(limits::refuse_connection(
                stream,
                ctx.limits.max_connections,
            ));
            continue;
        };
        let (ctx, changes) = (ctx.clone(), changes.clone());
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            let refused = ctx.refused.clone();
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(ctx.limits.header_read_timeout)
                .max_header_size(ctx.limits.max_head)
                .max_buf_size(ctx.limits.max_head.max(8192));
            let svc =
                hyper::service::service_fn(move |req| dispatch(req, ctx.clone(), changes.clone()));
            let conn = http.serve_connection(TokioIo::new(stream), svc);
            tokio::select! {
                res = conn => if let Err(e) = res {
                    if e.is_timeout() {
                        refused.count(limits::Reason::HeaderTimeout);
                    } else if e.is_parse_too_large() {
                        refused.count(limits::Reason::HeaderTooLarge);
                    }
                    tracing::debug!("api connection: {e}");
                },
                _ = stop.changed() => {}
            }
            drop(slot);
        });
    }
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

fn error(status: StatusCode, msg: impl std::fmt::Display) -> Response<Full<Bytes>> {
    reply(status, json!({"error": msg.to_string()}))
}

/// Every meshed proxy's window over `window`: from `--prometheus-url` when it is set (its failure
/// is the 502's message), else from the control plane's own scrapes.
async fn windows(
    ctx: &Ctx,
    state: &crate::resource::State,
    window: std::time::Duration,
) -> Result<(BTreeMap<Key, Status>, stat::Source), String> {
    match &ctx.prometheus {
        Some(prometheus) => prometheus
            .windows(state, window)
            .await
            .map(|statuses| (statuses, stat::Source::Prometheus))
            .map_err(|e| e.to_string()),
        None => {
            let now = tokio::time::Instant::now();
            let statuses = ctx.telemetry.statuses(state, now, window, |_| true);
            Ok((statuses, stat::Source::ControlPlane))
        }
    }
}

/// Taps stream their answers, the dashboard's files are served from the binary; everything
/// else is answered whole by [`handle`].
async fn dispatch(
    req: Request<Incoming>,
    ctx: Arc<Ctx>,
    changes: Arc<tokio::sync::Semaphore>,
) -> Result<Response<ApiBody>, Infallible> {
    if dashboard::owns(req.uri().path()) {
        let rsp = dashboard::handle(req.method(), req.uri().path());
        return Ok(rsp.map(|b| b.boxed_unsync()));
    }
    let path = req.uri().path().trim_end_matches('/');
    if let Some(rest) = path.strip_prefix("/v1/tap/") {
        let segments: Vec<&str> = rest.split('/').collect();
        let rsp = match (req.method(), segments.as_slice()) {
            (&Method::GET, [ns, name]) => tap::handle(&ctx, ns, name, req.uri().query()).await,
            (_, [_, _]) => error(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("method {} not allowed on {path}", req.method()),
            )
            .map(|b| b.boxed_unsync()),
            _ => error(
                StatusCode::NOT_FOUND,
                format!("no such endpoint: {path} (GET /v1/tap/NAMESPACE/WORKLOAD)"),
            )
            .map(|b| b.boxed_unsync()),
        };
        return Ok(rsp);
    }
    if path == "/v1/multicluster/exports" && req.method() == Method::GET {
        return Ok(multicluster::stream(&req, &ctx).await);
    }
    // Every other method changes the store: at most `max_changes_in_flight` at once, which
    // also bounds the request bodies held in memory.
    let _change = if matches!(*req.method(), Method::GET | Method::HEAD) {
        None
    } else {
        match changes.try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => {
                ctx.refused.count(limits::Reason::ChangesInFlight);
                let mut rsp = error(
                    StatusCode::TOO_MANY_REQUESTS,
                    format!(
                        "{} changes are in progress (the API's limit); retry",
                        ctx.limits.max_changes_in_flight
                    ),
                );
                rsp.headers_mut().insert(
                    http::header::RETRY_AFTER,
                    http::HeaderValue::from_static("1"),
                );
                return Ok(rsp.map(|b| b.boxed_unsync()));
            }
        }
    };
    let rsp = handle(req, ctx).await?;
    Ok(rsp.map(|b| b.boxed_unsync()))
}

async fn handle(
    req: Request<Incoming>,
    ctx: Arc<Ctx>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().trim_end_matches('/').to_string();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let rsp = match (req.method().clone(), segments.as_slice()) {
        (Method::GET, ["live"]) => reply(StatusCode::OK, json!({"ok": true})),
        (Method::GET, ["ready"]) => {
            if ctx.store.status().loaded {
                reply(StatusCode::OK, json!({"ok": true}))
            } else {
                error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the store has not been loaded yet",
                )
            }
        }
        (Method::GET, ["v1", "store"]) => {
            let mut status = json!(ctx.store.status());
            status["leader"] = json!(*ctx.leader.borrow());
            reply(StatusCode::OK, status)
        }
        (Method::GET, ["v1", "check"]) => {
            let ca = ctx.ca.borrow().clone();
            let state = ctx.index.state();
            let report = check::run(&ctx.store.status(), &ca, &state, ctx.grpc_addr).await;
            reply(StatusCode::OK, json!(report))
        }
        (Method::GET, ["v1", "identity", "status"]) => identity_status(&ctx).await,
        (Method::GET, ["v1", "identity", "trust-anchors"]) => {
            let pem = ctx.ca.borrow().trust_anchors_pem().to_string();
            let mut rsp = Response::new(Full::new(Bytes::from(pem)));
            rsp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/x-pem-file"),
            );
            rsp
        }
        (Method::GET, ["v1", "services"]) => {
            let state = ctx.index.state();
            reply(
                StatusCode::OK,
                Value::Array(state.services.values().map(|s| s.to_document()).collect()),
            )
        }
        (Method::GET, ["v1", "workloads"]) => {
            let state = ctx.index.state();
            reply(
                StatusCode::OK,
                Value::Array(state.workloads.values().map(|w| w.to_document()).collect()),
            )
        }
        (Method::GET, ["v1", "authz", ns, name]) => {
            let state = ctx.index.state();
            match authz::describe(&state, ctx.index.inbound_defaults(), ns, name) {
                Some(v) => reply(StatusCode::OK, v),
                None => error(
                    StatusCode::NOT_FOUND,
                    format!("no workload {ns}/{name} (GET /v1/workloads lists them)"),
                ),
            }
        }
        (Method::GET, ["v1", "stat", kind]) => match stat::parse_query(kind, req.uri().query()) {
            Ok(query) => {
                let state = ctx.index.state();
                let answer = match &ctx.prometheus {
                    None => {
                        let now = tokio::time::Instant::now();
                        stat::stat(&state, &ctx.telemetry, now, &query)
                    }
                    Some(prometheus) => stat::stat_prometheus(&state, prometheus, &query).await,
                };
                match answer {
                    Ok(v) => reply(StatusCode::OK, v),
                    Err(stat::StatError::NotFound(e)) => error(StatusCode::NOT_FOUND, e),
                    Err(stat::StatError::Prometheus(e)) => error(StatusCode::BAD_GATEWAY, e),
                }
            }
            Err(e) => error(StatusCode::BAD_REQUEST, e),
        },
        (Method::GET, ["v1", "edges"]) => match edges::parse_query(req.uri().query()) {
            Ok(query) => {
                let state = ctx.index.state();
                match windows(&ctx, &state, query.window).await {
                    Ok((statuses, source)) => match edges::edges(&state, &statuses, source, &query)
                    {
                        Ok(v) => reply(StatusCode::OK, v),
                        Err(e) => error(StatusCode::NOT_FOUND, e),
                    },
                    Err(e) => error(StatusCode::BAD_GATEWAY, e),
                }
            }
            Err(e) => error(StatusCode::BAD_REQUEST, e),
        },
        (Method::GET, ["v1", "routes"]) => match routes::parse_query(req.uri().query()) {
            Ok(query) => {
                let state = ctx.index.state();
                match windows(&ctx, &state, query.window).await {
                    Ok((statuses, source)) => {
                        match routes::routes(&state, &statuses, source, &query) {
                            Ok(v) => reply(StatusCode::OK, v),
                            Err(e) => error(StatusCode::NOT_FOUND, e),
                        }
                    }
                    Err(e) => error(StatusCode::BAD_GATEWAY, e),
                }
            }
            Err(e) => error(StatusCode::BAD_REQUEST, e),
        },
        (Method::POST, ["v1", "multicluster", "credentials"]) => {
            multicluster::credentials(req, &ctx).await
        }
        (Method::DELETE, ["v1", "multicluster", "credentials", name]) => {
            multicluster::revoke(&ctx, name).await
        }
        (Method::GET, ["v1", "multicluster", "links"]) => multicluster::links(&ctx),
        (Method::GET, ["metrics"]) => {
            let mut text = crate::multicluster::metrics::render(&ctx.links.metrics());
            text.push_str(&ctx.refused.render());
            let mut rsp = Response::new(Full::new(Bytes::from(text)));
            rsp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            rsp
        }
        (Method::POST, ["v1", "resources"]) => resources::apply(req, &ctx).await,
        (Method::DELETE, ["v1", "resources"]) => resources::delete_documents(req, &ctx).await,
        (Method::DELETE, ["v1", "resources", kind, rest @ ..]) => {
            resources::delete_one(&ctx, kind, rest).await
        }
        (Method::GET, ["v1", "resources", kind, rest @ ..]) => resources::get(&ctx, kind, rest),
        (Method::PUT, ["v1", "workloads", ns, name]) => {
            let (ns, name) = (ns.to_string(), name.to_string());
            register(req, &ctx, &ns, &name).await
        }
        (Method::PUT, ["v1", "workloads", ns, name, "status"]) => {
            let (ns, name) = (ns.to_string(), name.to_string());
            set_status(req, &ctx, &ns, &name).await
        }
        (Method::DELETE, ["v1", "workloads", ns, name]) => {
            if let Some(bad) = bad_path_labels(ns, name) {
                return Ok(bad);
            }
            let key = (ns.to_string(), name.to_string());
            let result = match ctx.store.deregister(ns, name).await {
                Ok(()) => in_index(&ctx, |s| !s.workloads.contains_key(&key)).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => match ctx.tokens.revoke(ns, name).await {
                    Ok(()) => reply(StatusCode::OK, json!({"ok": true})),
                    Err(e) => error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("deregistered, but the identity token could not be revoked: {e}"),
                    ),
                },
                Err(e @ StoreError::NotRegistered(..)) => error(StatusCode::NOT_FOUND, e),
                Err(e @ StoreError::NotApplied(_)) => error(StatusCode::SERVICE_UNAVAILABLE, e),
                Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
            }
        }
        (
            _,
            ["live"]
            | ["ready"]
            | ["metrics"]
            | ["v1", "store"]
            | ["v1", "check"]
            | ["v1", "identity", "trust-anchors"]
            | ["v1", "identity", "status"]
            | ["v1", "services"]
            | ["v1", "workloads"]
            | ["v1", "workloads", _, _]
            | ["v1", "workloads", _, _, "status"]
            | ["v1", "authz", _, _]
            | ["v1", "stat", _]
            | ["v1", "edges"]
            | ["v1", "routes"]
            | ["v1", "resources", ..]
            | ["v1", "multicluster", "credentials" | "exports" | "links"]
            | ["v1", "multicluster", "credentials", _],
        ) => error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("method {} not allowed on {path}", req.method()),
        ),
        _ => error(StatusCode::NOT_FOUND, format!("no such endpoint: {path}")),
    };
    Ok(rsp)
}

/// The CA this control plane issues from, the rotation stage of its directory, and the leaves
/// issued per anchor by every control plane that keeps its ledger where this one does (with
/// the etcd or Kubernetes store: every replica), this one's own counted from memory.
async fn identity_status(ctx: &Ctx) -> Response<Full<Bytes>> {
    let ca = ctx.ca.borrow().clone();
    let state = match ctx.identity_dir.as_deref().map(rotation::read_state) {
        Some(Ok(s)) => s,
        Some(Err(e)) => return error(StatusCode::INTERNAL_SERVER_ERROR, e),
        None => None,
    };
    let now = crate::clock::unix_now();
    let mut own = ctx.ledger.snapshot(now);
    own.issuing_anchor = ca.issuer_anchor().to_string();
    let mut ledgers = match &ctx.records {
        Some(records) => match records.read_all().await {
            Ok(all) => all,
            Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e),
        },
        None => Vec::new(),
    };
    ledgers.retain(|l| l.instance != own.instance);
    ledgers.push(own);
    ledgers.sort_by(|a, b| a.instance.cmp(&b.instance));
    let leaves = rotation::live_leaves(&ledgers, now);
    let cps = rotation::control_planes(&ledgers);
    let status = rotation::status_of(&ca, ctx.identity_dir.as_deref(), state, &leaves, cps);
    reply(StatusCode::OK, json!(status))
}

/// Namespaces and names in paths must be DNS labels (they also become file names).
fn bad_path_labels(ns: &str, name: &str) -> Option<Response<Full<Bytes>>> {
    for (what, v) in [("namespace", ns), ("name", name)] {
        if let Err(e) = resource::dns_label(v) {
            return Some(error(StatusCode::BAD_REQUEST, format!("path {what}: {e}")));
        }
    }
    None
}

/// How long a change may take to reach the index before the API says it did not.
const INDEX_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Waits until the index has applied a state where `done` holds (the store's change has gone
/// through cluster-IP allocation and every snapshot is published), so that a 200 means
/// Destination and policy answers already reflect the change.
async fn in_index(
    ctx: &Ctx,
    done: impl Fn(&crate::resource::State) -> bool,
) -> Result<(), StoreError> {
    let mut applied = ctx.index.applied();
    let reached = tokio::time::timeout(INDEX_WAIT, applied.wait_for(|s| done(s)))
        .await
        .is_ok_and(|r| r.is_ok());
    if reached {
        Ok(())
    } else {
        Err(StoreError::NotApplied(INDEX_WAIT))
    }
}

/// A request body of at most `max_body` bytes; the refusal otherwise: `413` when it is larger
/// (said by its `content-length` or found while reading), `400` when it could not be read.
pub(crate) async fn read_body(
    req: Request<Incoming>,
    ctx: &Ctx,
) -> Result<Bytes, Response<Full<Bytes>>> {
    let max = ctx.limits.max_body;
    let too_large = || {
        ctx.refused.count(limits::Reason::BodyTooLarge);
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body: larger than {max} bytes (the API's limit)"),
        )
    };
    let declared = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max as u64) {
        return Err(too_large());
    }
    match Limited::new(req.into_body(), max).collect().await {
        Ok(body) => Ok(body.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(e) => Err(error(
            StatusCode::BAD_REQUEST,
            format!("cannot read the request body: {e}"),
        )),
    }
}

/// A request body: one JSON or YAML document; the refusal otherwise (`400` for a bad document).
async fn read_document(req: Request<Incoming>, ctx: &Ctx) -> Result<Value, Response<Full<Bytes>>> {
    let body = read_body(req, ctx).await?;
    let bad = |e: String| error(StatusCode::BAD_REQUEST, e);
    let text = std::str::from_utf8(&body).map_err(|_| bad("request body: not UTF-8".into()))?;
    // JSON is also YAML, but parsing JSON first gives JSON clients JSON error positions.
    if let Ok(doc) = serde_json::from_str(text) {
        return Ok(doc);
    }
    yaml_serde::from_str(text).map_err(|e| bad(format!("request body: invalid JSON or YAML: {e}")))
}

async fn register(
    req: Request<Incoming>,
    ctx: &Ctx,
    ns: &str,
    name: &str,
) -> Response<Full<Bytes>> {
    if let Some(bad) = bad_path_labels(ns, name) {
        return bad;
    }
    let mut doc = match read_document(req, ctx).await {
        Ok(doc) => doc,
        Err(refused) => return refused,
    };
    if let Some(obj) = doc.as_object_mut() {
        let meta = obj.entry("metadata").or_insert_with(|| json!({}));
        if !meta.is_object() {
            *meta = json!({});
        }
        meta["name"] = json!(name);
        meta["namespace"] = json!(ns);
    }
    let workload = match resource::validate_one(&doc, "request body", &ctx.defaults) {
        Ok(Resource::Workload(w)) => w,
        Ok(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "request body: kind: must be ExternalWorkload, got {:?}",
                    other.key().kind
                ),
            )
        }
        Err(errors) => return error(StatusCode::BAD_REQUEST, errors.join("; ")),
    };
    let identity = workload.server_name.clone();
    if let Some(refused) = over_workload_limit(ctx, ns, name) {
        return refused;
    }
    if let Err(refused) = apply_workload(ctx, workload).await {
        return refused;
    }
    // The token is issued only once the registration is in force, so it always names a
    // workload the index knows.
    match ctx.tokens.issue(ns, name).await {
        Ok(token) => reply(
            StatusCode::OK,
            json!({"ok": true, "identity": identity, "token": token}),
        ),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("registered, but the identity token could not be stored: {e}"),
        ),
    }
}

/// The `403` for a registration of a new workload once `max_workloads` are in force (one in
/// force may be registered again: that replaces it).
fn over_workload_limit(ctx: &Ctx, ns: &str, name: &str) -> Option<Response<Full<Bytes>>> {
    let state = ctx.index.state();
    let known = state.workloads.len();
    let max = ctx.limits.max_workloads;
    if known < max
        || state
            .workloads
            .contains_key(&(ns.to_string(), name.to_string()))
    {
        return None;
    }
    ctx.refused.count(limits::Reason::Workloads);
    Some(error(
        StatusCode::FORBIDDEN,
        format!(
            "{known} workloads are in force (the control plane's limit is {max}): deregister one \
             first"
        ),
    ))
}

/// Stores `workload` and waits until it is in force — served: the index has published it
/// (Destination and policy answer with it), not only held by the store. The refusal as the
/// answer to send otherwise.
async fn apply_workload(
    ctx: &Ctx,
    workload: resource::ExternalWorkload,
) -> Result<(), Response<Full<Bytes>>> {
    let key = (workload.namespace.clone(), workload.name.clone());
    let applied = workload.clone();
    let result = match ctx.store.register(workload).await {
        Ok(()) => in_index(ctx, |s| s.workloads.get(&key) == Some(&applied)).await,
        Err(e) => Err(e),
    };
    result.map_err(|e| match e {
        StoreError::Rejected(_) => error(StatusCode::BAD_REQUEST, e),
        StoreError::NotApplied(_) => error(StatusCode::SERVICE_UNAVAILABLE, e),
        StoreError::ReadOnly(_) => error(StatusCode::METHOD_NOT_ALLOWED, e),
        e => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    })
}

/// `PUT /v1/workloads/{ns}/{name}/status`: replaces a registered workload's `status` (its
/// `Ready` condition) and nothing else. Its token stays valid: a sidecar that obtained its
/// certificate with it keeps renewing while the workload turns ready.
async fn set_status(
    req: Request<Incoming>,
    ctx: &Ctx,
    ns: &str,
    name: &str,
) -> Response<Full<Bytes>> {
    if let Some(bad) = bad_path_labels(ns, name) {
        return bad;
    }
    let doc = match read_document(req, ctx).await {
        Ok(doc) => doc,
        Err(refused) => return refused,
    };
    let conditions = match resource::workload_status::validate_update(&doc, "request body") {
        Ok(c) => c,
        Err(errors) => return error(StatusCode::BAD_REQUEST, errors.join("; ")),
    };
    let key = (ns.to_string(), name.to_string());
    let Some(current) = ctx.index.state().workloads.get(&key).cloned() else {
        return error(
            StatusCode::NOT_FOUND,
            format!("no workload {ns}/{name} (PUT /v1/workloads/{ns}/{name} registers it)"),
        );
    };
    if !ctx.tokens.issued(ns, name) {
        return error(
            StatusCode::CONFLICT,
            format!(
                "workload {ns}/{name} comes from the store's files, not from registration: its \
                 status is the one its document gives"
            ),
        );
    }
    let updated = resource::ExternalWorkload {
        conditions,
        ..current
    };
    let ready = updated.ready();
    match apply_workload(ctx, updated).await {
        Ok(()) => reply(StatusCode::OK, json!({"ok": true, "ready": ready})),
        Err(refused) => refused,
    }
}
