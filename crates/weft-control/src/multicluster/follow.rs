//! East's side, I/O: following one Link's exports stream (reconnecting with backoff) and
//! probing its gateway. Both report [`Event`]s to the mirror task, which owns every Link's state.

use super::export::ExportedService;
use crate::api::multicluster::HEARTBEAT;
use crate::resource::multicluster::{Gateway, ProbeSpec};
use bytes::{Buf, Bytes};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// (namespace, name) of a Link.
pub type LinkKey = (String, String);

/// What a follower or a probe saw.
#[derive(Debug)]
pub enum Event {
    /// A whole snapshot of the remote exports.
    Exports(LinkKey, Vec<ExportedService>),
    /// The stream is alive (a heartbeat).
    Alive(LinkKey),
    /// The stream failed or ended; it is being reopened.
    Lost(LinkKey, String),
    /// One gateway probe: whether the gateway now counts as alive, the probe's latency when it
    /// answered, and its error when it did not.
    Probe {
        link: LinkKey,
        alive: bool,
        latency: Option<Duration>,
        error: Option<String>,
    },
}

/// The first and the largest wait before reconnecting.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));
/// Connecting to the remote API gives up after this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Follows `server`'s exports with `token` until the task is aborted.
pub async fn follow(link: LinkKey, server: String, token: String, events: mpsc::Sender<Event>) {
    let mut backoff = BACKOFF.0;
    loop {
        let mut synced = false;
        let why = match stream(&link, &server, &token, &events, &mut synced).await {
            Ok(()) => "the remote control plane ended the exports stream".to_string(),
            Err(e) => e,
        };
        if synced {
            backoff = BACKOFF.0;
        }
        tracing::warn!(link = %link.1, %server, "multicluster: link lost: {why}");
        if events.send(Event::Lost(link.clone(), why)).await.is_err() {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF.1);
    }
}

/// An HTTP/1 connection to `authority` (`HOST:PORT`), driven by a task of its own.
async fn connect(
    authority: &str,
    timeout: Duration,
) -> Result<hyper::client::conn::http1::SendRequest<Empty<Bytes>>, String> {
    let stream = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(authority))
        .await
        .map_err(|_| format!("connecting to {authority}: no answer within {timeout:?}"))?
        .map_err(|e| format!("connecting to {authority}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("{authority}: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// `HOST:PORT` of an `http://HOST:PORT[/]` URL.
fn authority(server: &str) -> Result<&str, String> {
    let rest = server
        .strip_prefix("http://")
        .ok_or_else(|| format!("{server}: only http:// remote control plane APIs are supported"))?;
    Ok(rest.trim_end_matches('/'))
}

/// One exports stream, until it fails or ends.
async fn stream(
    link: &LinkKey,
    server: &str,
    token: &str,
    events: &mpsc::Sender<Event>,
    synced: &mut bool,
) -> Result<(), String> {
    let authority = authority(server)?;
    let mut sender = connect(authority, CONNECT_TIMEOUT).await?;
    let req = Request::get("/v1/multicluster/exports")
        .header(http::header::HOST, authority)
        .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    let rsp = tokio::time::timeout(CONNECT_TIMEOUT, sender.send_request(req))
        .await
        .map_err(|_| format!("{server}: no answer within {CONNECT_TIMEOUT:?}"))?
        .map_err(|e| format!("{server}: {e}"))?;
    let status = rsp.status();
    let mut body = rsp.into_body();
    if status != StatusCode::OK {
        let text = tokio::time::timeout(CONNECT_TIMEOUT, body.collect())
            .await
            .ok()
            .and_then(Result::ok)
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
            .unwrap_or_default();
        return Err(format!(
            "GET {server}/v1/multicluster/exports answered {status}: {text}"
        ));
    }
    let mut buf: Vec<u8> = Vec::new();
    loop {
        // A silent stream is a lost link: the remote says something every HEARTBEAT.
        let frame = tokio::time::timeout(HEARTBEAT * 3, body.frame())
            .await
            .map_err(|_| format!("{server}: nothing received for {:?}", HEARTBEAT * 3))?;
        let Some(frame) = frame else { return Ok(()) };
        let frame = frame.map_err(|e| format!("{server}: {e}"))?;
        let Ok(mut data) = frame.into_data() else {
            continue;
        };
        while data.has_remaining() {
            let chunk = data.chunk();
            buf.extend_from_slice(chunk);
            let n = chunk.len();
            data.advance(n);
        }
        while let Some(at) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=at).collect();
            let v: serde_json::Value = serde_json::from_slice(&line)
                .map_err(|e| format!("{server}: a line of the exports stream is not JSON: {e}"))?;
            let event = if v.get("heartbeat").is_some() {
                Event::Alive(link.clone())
            } else {
                let services = serde_json::from_value(v["services"].clone()).map_err(|e| {
                    format!("{server}: a snapshot of the exports stream is malformed: {e}")
                })?;
                *synced = true;
                Event::Exports(link.clone(), services)
            };
            if events.send(event).await.is_err() {
                return Ok(());
            }
        }
    }
}

/// Probes `gateway` per `spec` (HTTP GET of `spec.path` on `spec.port`) until aborted: the
/// gateway is dead after `failureThreshold` failures in a row, alive again at the first success.
pub async fn probe(link: LinkKey, gateway: Gateway, spec: ProbeSpec, events: mpsc::Sender<Event>) {
    let authority = std::net::SocketAddr::new(gateway.address, spec.port).to_string();
    let mut failures = 0u32;
    let mut alive = true;
    let mut tick = tokio::time::interval(spec.period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let start = Instant::now();
        let result = tokio::time::timeout(spec.timeout, get(&authority, &spec.path, spec.timeout))
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {:?}", spec.timeout)));
        let (latency, error) = match result {
            Ok(()) => {
                failures = 0;
                alive = true;
                (Some(start.elapsed()), None)
            }
            Err(e) => {
                failures += 1;
                if failures >= spec.failure_threshold {
                    alive = false;
                }
                (
                    None,
                    Some(format!("probe GET http://{authority}{}: {e}", spec.path)),
                )
            }
        };
        let event = Event::Probe {
            link: link.clone(),
            alive,
            latency,
            error,
        };
        if events.send(event).await.is_err() {
            return;
        }
    }
}

/// `GET path` on `authority`: Ok for a 2xx answer.
async fn get(authority: &str, path: &str, timeout: Duration) -> Result<(), String> {
    let mut sender = connect(authority, timeout).await?;
    let req = Request::get(path)
        .header(http::header::HOST, authority)
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    let rsp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    if rsp.status().is_success() {
        Ok(())
    } else {
        Err(format!("answered {}", rsp.status()))
    }
}
