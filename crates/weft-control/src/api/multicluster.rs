//! The multicluster API. West's half: `POST /v1/multicluster/credentials` mints a link token
//! for a cluster that links to this one (and says how to reach this cluster),
//! `DELETE /v1/multicluster/credentials/NAME` revokes it, and `GET /v1/multicluster/exports`
//! streams, to a link token only, the exported services as NDJSON. East's half:
//! `GET /v1/multicluster/links`, the state of every Link this control plane follows.

use super::{error, reply, ApiBody, Ctx};
use crate::multicluster::export::{exports, gateways, ExportedService};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use serde_json::{json, Value};
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// How often an idle exports stream says it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// The least time between two snapshots of one exports stream (changes in between coalesce).
pub const COALESCE: Duration = Duration::from_millis(100);

/// `POST /v1/multicluster/credentials` with `{"name": "<east's name for itself>"}`.
pub async fn credentials(req: Request<Incoming>, ctx: &Ctx) -> Response<Full<Bytes>> {
    let body = match super::read_body(req, ctx).await {
        Ok(b) => b,
        Err(refused) => return refused,
    };
    let name = match serde_json::from_slice::<Value>(&body) {
        Ok(v) => match v.get("name").and_then(Value::as_str) {
            Some(n) => n.to_string(),
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "name: required (the linking cluster's name for itself)",
                )
            }
        },
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("body is not JSON: {e}")),
    };
    if let Err(e) = crate::resource::dns_label(&name) {
        return error(StatusCode::BAD_REQUEST, format!("name: {e}"));
    }
    let token = match ctx.tokens.issue_link(&name).await {
        Ok(t) => t,
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("minting the link token: {e}"),
            )
        }
    };
    let state = ctx.index.state();
    reply(
        StatusCode::OK,
        json!({
            "token": token,
            "cluster": {
                "name": ctx.cluster_name,
                "domain": ctx.index.cluster_domain(),
                "controlNamespace": ctx.defaults.control_namespace,
            },
            "gateways": gateways(&state),
            "trustAnchorsPem": ctx.ca.borrow().trust_anchors_pem(),
        }),
    )
}

/// `DELETE /v1/multicluster/credentials/NAME`.
pub async fn revoke(ctx: &Ctx, name: &str) -> Response<Full<Bytes>> {
    if let Err(e) = crate::resource::dns_label(name) {
        return error(StatusCode::BAD_REQUEST, format!("name: {e}"));
    }
    match ctx.tokens.revoke_link(name).await {
        Ok(()) => reply(StatusCode::OK, json!({"ok": true})),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// The link a request's `Authorization: Bearer` token is for, and the token; else why it is
/// refused (a 401).
fn link_of(req: &Request<Incoming>, ctx: &Ctx) -> Result<(String, String), &'static str> {
    let token = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or("a link token is required (Authorization: Bearer TOKEN, from POST /v1/multicluster/credentials)")?;
    let grant = ctx
        .tokens
        .lookup(token.as_bytes())
        .ok_or("the link token was not minted by this control plane (or was revoked)")?;
    match grant.link() {
        Some(link) => Ok((link.to_string(), token.to_string())),
        None => Err("a workload token does not grant the exports: present a link token"),
    }
}

/// `GET /v1/multicluster/exports`: one NDJSON line with every exported service at once, again
/// on every change (at most every [`COALESCE`]), and `{"heartbeat":true}` every [`HEARTBEAT`].
/// The stream ends when the token is revoked.
pub fn stream(req: &Request<Incoming>, ctx: &std::sync::Arc<Ctx>) -> Response<ApiBody> {
    let (link, token) = match link_of(req, ctx) {
        Ok(granted) => granted,
        Err(why) => return error(StatusCode::UNAUTHORIZED, why).map(|b| b.boxed_unsync()),
    };
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
    let mut states = ctx.index.applied();
    let ctx = ctx.clone();
    tokio::spawn(async move {
        tracing::info!(%link, "multicluster: exports stream opened");
        let mut revision = 0u64;
        let mut last: Option<Vec<ExportedService>> = None;
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        heartbeat.tick().await;
        let send = |v: Value| {
            let mut line = v.to_string();
            line.push('\n');
            tx.send(Ok(Frame::data(Bytes::from(line))))
        };
        loop {
            if ctx.tokens.lookup(token.as_bytes()).is_none() {
                break;
            }
            let services = exports(&states.borrow_and_update());
            if last.as_ref() != Some(&services) {
                revision += 1;
                let line = json!({"revision": revision, "services": services});
                if send(line).await.is_err() {
                    break;
                }
                last = Some(services);
                tokio::time::sleep(COALESCE).await;
                continue;
            }
            tokio::select! {
                changed = states.changed() => if changed.is_err() { break },
                _ = heartbeat.tick() => if send(json!({"heartbeat": true})).await.is_err() { break },
                _ = tx.closed() => break,
            }
        }
        tracing::info!(%link, "multicluster: exports stream closed");
    });
    let mut rsp = Response::new(StreamBody::new(ReceiverStream::new(rx)).boxed_unsync());
    rsp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/x-ndjson"),
    );
    rsp
}

/// `GET /v1/multicluster/links`.
pub fn links(ctx: &Ctx) -> Response<Full<Bytes>> {
    reply(StatusCode::OK, json!(ctx.links.snapshot()))
}
