//! The multicluster API. West's half: `POST /v1/multicluster/credentials` mints a link token
//! for a cluster that links to this one (and says how to reach this cluster),
//! `DELETE /v1/multicluster/credentials/NAME` revokes it, and `GET /v1/multicluster/exports`
//! streams, to a link token only, the exported services as NDJSON. East's half:
//! `GET /v1/multicluster/links`, the state of every Link this control plane follows.
//!
//! A link token is kept as a digest beside the workload tokens (`tokens`), except with the
//! Kubernetes store, where it is a ServiceAccount's token (`k8s::link_accounts`).

use super::{error, reply, ApiBody, Ctx};
use crate::k8s::link_accounts::Refused;
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
    let minted = match &ctx.link_accounts {
        Some(accounts) => accounts.issue(&name).await,
        None => ctx
            .tokens
            .issue_link(&name)
            .await
            .map_err(|e| e.to_string()),
    };
    let token = match minted {
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
    let revoked = match &ctx.link_accounts {
        Some(accounts) => accounts.revoke(name).await.map_err(|e| e.to_string()),
        None => ctx
            .tokens
            .revoke_link(name)
            .await
            .map_err(|e| e.to_string()),
    };
    match revoked {
        Ok(()) => reply(StatusCode::OK, json!({"ok": true})),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// The link a request's `Authorization: Bearer` token is for, and the token; else why it is
/// refused (401; 503 when the Kubernetes API server cannot be asked).
async fn link_of(
    req: &Request<Incoming>,
    ctx: &Ctx,
) -> Result<(String, String), (StatusCode, String)> {
    let refused = |why: &str| (StatusCode::UNAUTHORIZED, why.to_string());
    let token = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| refused("a link token is required (Authorization: Bearer TOKEN, from POST /v1/multicluster/credentials)"))?;
    let link = granted(ctx, token).await?;
    Ok((link, token.to_string()))
}

/// The link `token` is the credential of.
async fn granted(ctx: &Ctx, token: &str) -> Result<String, (StatusCode, String)> {
    let refused = |why: &str| (StatusCode::UNAUTHORIZED, why.to_string());
    // A workload token (file and etcd stores) is never a link's, with any store.
    let grant = ctx.tokens.lookup(token.as_bytes());
    if let Some(accounts) = ctx.link_accounts.as_ref().filter(|_| grant.is_none()) {
        return accounts.link_of(token).await.map_err(|e| match e {
            Refused::NotALink(why) => refused(&why),
            Refused::Api(_) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        });
    }
    let grant = grant.ok_or_else(|| {
        refused("the link token was not minted by this control plane (or was revoked)")
    })?;
    match grant.link() {
        Some(link) => Ok(link.to_string()),
        None => Err(refused(
            "a workload token does not grant the exports: present a link token",
        )),
    }
}

/// Whether an open stream's token still grants the exports. A digest is looked up every time;
/// a ServiceAccount token is reviewed again at each heartbeat (changes in between are sent
/// without asking: at most one review per half heartbeat), and a review the API server cannot
/// answer keeps the stream (the link is not cut by a blip of the API server).
async fn still_granted(ctx: &Ctx, token: &str, reviewed: &mut tokio::time::Instant) -> bool {
    if ctx.link_accounts.is_some() && reviewed.elapsed() < HEARTBEAT / 2 {
        return true;
    }
    *reviewed = tokio::time::Instant::now();
    match granted(ctx, token).await {
        Ok(_) => true,
        Err((StatusCode::SERVICE_UNAVAILABLE, why)) => {
            tracing::warn!(%why, "multicluster: could not review a link token; the stream stays open");
            true
        }
        Err(_) => false,
    }
}

/// `GET /v1/multicluster/exports`: one NDJSON line with every exported service at once, again
/// on every change (at most every [`COALESCE`]), and `{"heartbeat":true}` every [`HEARTBEAT`].
/// The stream ends when the token is revoked.
pub async fn stream(req: &Request<Incoming>, ctx: &std::sync::Arc<Ctx>) -> Response<ApiBody> {
    let (link, token) = match link_of(req, ctx).await {
        Ok(granted) => granted,
        Err((status, why)) => return error(status, why).map(|b| b.boxed_unsync()),
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
        let mut reviewed = tokio::time::Instant::now();
        loop {
            if !still_granted(&ctx, &token, &mut reviewed).await {
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
