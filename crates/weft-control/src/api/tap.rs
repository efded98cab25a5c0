//! `GET /v1/tap/{namespace}/{workload}`: opens a tap on the workload's proxy and streams its
//! events as NDJSON (one JSON object per line, written as each arrives) until the client goes
//! away, the proxy ends the tap (`limit` requests tapped) or the connection breaks.

use std::convert::Infallible;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::{error, ApiBody, Ctx};
use crate::tap::{client, event};

/// Events buffered between the proxy's stream and the HTTP client; a slow client slows the
/// reading of the tap (the proxy then drops events on its side, never here).
const BUFFER: usize = 64;

pub async fn handle(ctx: &Ctx, ns: &str, name: &str, query: Option<&str>) -> Response<ApiBody> {
    let boxed = |r: Response<http_body_util::Full<Bytes>>| r.map(|b| b.boxed_unsync());
    let q = match event::parse_query(query) {
        Ok(q) => q,
        Err(e) => return boxed(error(StatusCode::BAD_REQUEST, e)),
    };
    let workload = ctx
        .index
        .state()
        .workloads
        .get(&(ns.to_string(), name.to_string()))
        .cloned();
    let Some(w) = workload else {
        return boxed(error(
            StatusCode::NOT_FOUND,
            format!("no workload {ns}/{name} (GET /v1/workloads lists them)"),
        ));
    };
    let Some(addr) = w.tap_addr() else {
        return boxed(error(
            StatusCode::NOT_FOUND,
            format!(
                "workload {ns}/{name} has no {} port: it is not meshed, or its proxy was started \
                 without a tap server",
                crate::resource::TAP_PORT_NAME
            ),
        ));
    };
    let anchors = crate::ca::pem_certificates(ctx.ca.borrow().trust_anchors_pem().as_bytes())
        .unwrap_or_default();
    let request = event::observe_request(&q);
    let mut events =
        match client::observe(addr, &w.server_name, &anchors, ctx.tap.cert(), request).await {
            Ok(s) => s,
            Err(e) => return boxed(error(StatusCode::BAD_GATEWAY, e)),
        };
    tracing::debug!(workload = %format!("{ns}/{name}"), %addr, "tap started");
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(BUFFER);
    let who = format!("{ns}/{name}");
    tokio::spawn(async move {
        let mut limiter = event::Limiter::new(q.max_rps, tokio::time::Instant::now());
        loop {
            let next = tokio::select! {
                next = events.message() => next,
                // The client went away: dropping the stream cancels the tap.
                _ = tx.closed() => break,
            };
            let ev = match next {
                Ok(Some(ev)) => ev,
                Ok(None) => break,
                Err(s) => {
                    tracing::debug!(workload = %who, "tap stream ended: {}", s.message());
                    break;
                }
            };
            if !limiter.admit(&ev, tokio::time::Instant::now()) {
                continue;
            }
            let Some(json) = event::to_json(&ev, q.headers) else {
                continue;
            };
            let mut line = json.to_string();
            line.push('\n');
            if tx.send(Ok(Frame::data(Bytes::from(line)))).await.is_err() {
                break;
            }
        }
        tracing::debug!(workload = %who, dropped = limiter.dropped_total, "tap ended");
    });
    let mut rsp = Response::new(StreamBody::new(ReceiverStream::new(rx)).boxed_unsync());
    rsp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/x-ndjson"),
    );
    *rsp.status_mut() = StatusCode::OK;
    rsp
}
