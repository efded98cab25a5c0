//! The order a workload starts in once its sidecar runs, the same in a pod (transparent mode,
//! `weft demo --cluster`) and in explicit mode:
//!
//! 1. registration with the control plane, `Ready=False` (`PUT /v1/workloads/{ns}/{name}`): the
//!    answer's token is handed to the sidecar, which obtains its certificate with it, while
//!    Destination hands out no endpoint of the workload yet;
//! 2. proxy-await (`--proxy-await enabled`, the default; Linkerd's
//!    `config.linkerd.io/proxy-await`): wait until the sidecar's admin `/ready` answers 200 — with
//!    identity, it holds its first certificate — bounded by `--proxy-await-timeout`;
//! 3. the command;
//! 4. once every `--port` accepts connections, `Ready=True` (`PUT .../status`, which keeps the
//!    token), and Destination hands the workload out.
//!
//! So the command's first request already leaves over mTLS, and no peer is sent to the workload
//! before it answers. With `--proxy-await disabled` the command starts right after the sidecar,
//! before step 1, as it did before proxy-await existed.
//!
//! A signal during start-up, or a failed step, undoes what was done: deregistration, the command
//! and the proxy stopped.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{bail, Context as _};
use bytes::Bytes;
use http_body_util::Full;
use tokio::process::Child;
use weft_control::resource::workload_status::{self, Condition};

use super::identity::SidecarIdentity;
use super::pod::Pod;
use super::{stop, Relay, RunArgs, Running, READY_TIMEOUT};
use crate::demo::http;

/// `--proxy-await`: whether the command waits for its sidecar to be ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProxyAwait {
    /// Start the command once the sidecar is ready (it holds its certificate).
    Enabled,
    /// Start the command at once, beside the sidecar.
    Disabled,
}

/// Where the workload's sockets are: in a pod's network namespace, or here (explicit mode).
#[derive(Clone, Copy)]
pub(crate) enum Place<'a> {
    Pod(&'a Pod),
    Host,
}

impl Place<'_> {
    async fn connect(self, addr: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
        match self {
            Place::Pod(pod) => pod.connect(addr).await,
            Place::Host => tokio::time::timeout(
                Duration::from_millis(200),
                tokio::net::TcpStream::connect(addr),
            )
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?,
        }
    }
}

/// A running sidecar, before the command starts.
pub(crate) struct Sidecar {
    pub(crate) proxy: Child,
    /// Its admin server, as reached from the [`Place`].
    pub(crate) admin: SocketAddr,
    pub(crate) identity: Option<SidecarIdentity>,
    pub(crate) control_relay: Vec<Relay>,
}

/// Steps 1 to 4 (see the module doc). `workload` is the document to register; `spawn` starts the
/// command. `Ok(None)`: `interrupt` fired first, and everything was undone.
pub(crate) async fn launch(
    args: &RunArgs,
    place: Place<'_>,
    sidecar: Sidecar,
    workload: serde_json::Value,
    spawn: impl FnOnce() -> anyhow::Result<Child>,
    interrupt: impl Future<Output = ()>,
) -> anyhow::Result<Option<Running>> {
    let Sidecar {
        mut proxy,
        admin,
        identity,
        control_relay,
    } = sidecar;
    let mut cmd: Option<Child> = None;
    let mut registered = false;
    let mut anchors_refresh = None;
    let mut spawn = Some(spawn);
    let mut start = |cmd: &mut Option<Child>| -> anyhow::Result<()> {
        if let Some(spawn) = spawn.take() {
            *cmd = Some(spawn()?);
        }
        Ok(())
    };
    let steps = async {
        if args.proxy_await == ProxyAwait::Disabled {
            start(&mut cmd)?;
        }
        let answer = register(args, &starting(workload)).await?;
        registered = true;
        if let Some(identity) = identity {
            identity.hand_over(&answer)?;
            anchors_refresh = Some(Relay(tokio::spawn(identity.keep_anchors_fresh())));
        }
        if args.proxy_await == ProxyAwait::Enabled {
            await_sidecar(args, place, admin, &mut proxy).await?;
            start(&mut cmd)?;
        }
        let command = cmd.as_mut().context("the command was not started")?;
        if wait_ports(place, args, command).await? {
            set_ready(args).await?;
        }
        anyhow::Ok(())
    };
    let outcome = tokio::select! {
        outcome = steps => Some(outcome),
        _ = interrupt => None,
    };
    match (outcome, cmd) {
        (Some(Ok(())), Some(cmd)) => Ok(Some(Running {
            proxy,
            cmd,
            registered,
            control_relay,
            anchors_refresh,
        })),
        (outcome, mut cmd) => {
            undo(args, registered, cmd.as_mut(), &mut proxy).await;
            match outcome {
                Some(Err(e)) => Err(e),
                _ => Ok(None),
            }
        }
    }
}

/// The registration document with `Ready=False`.
fn starting(mut workload: serde_json::Value) -> serde_json::Value {
    let condition = Condition::ready(
        false,
        "Starting",
        "weft run: the command does not accept connections on its ports yet",
        &now(),
    );
    if let Some(status) = workload_status::to_value(&[condition]) {
        workload["status"] = status;
    }
    workload
}

fn now() -> String {
    weft_control::clock::unix_to_rfc3339(weft_control::clock::unix_now())
}

/// Waits until the sidecar's admin `/ready` answers 200. Fails when the proxy exits or the
/// timeout passes, saying what `/ready` last answered.
async fn await_sidecar(
    args: &RunArgs,
    place: Place<'_>,
    admin: SocketAddr,
    proxy: &mut Child,
) -> anyhow::Result<()> {
    let limit = args.proxy_await_timeout;
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let last = match place.connect(admin).await {
            Ok(stream) => match http::get_over(stream, "/ready").await {
                Ok(rsp) if rsp.status().is_success() => return Ok(()),
                Ok(rsp) => format!(
                    "{} {}",
                    rsp.status(),
                    String::from_utf8_lossy(rsp.body()).trim()
                ),
                Err(e) => format!("{e:#}"),
            },
            Err(e) => format!("connecting: {e}"),
        };
        if let Some(status) = proxy.try_wait()? {
            bail!("weft-proxy exited ({status}) before it was ready; the command was not started");
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "the sidecar is not ready after {limit:?} (its admin {admin} answers /ready with \
                 {last:?}), so the command was not started: with identity a sidecar is ready once \
                 it holds its certificate, which needs the control plane at {} (Destination, \
                 Identity.Certify); --proxy-await disabled starts the command without waiting",
                args.control_list()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until every declared port accepts connections. `false` if the command exited first.
async fn wait_ports(place: Place<'_>, args: &RunArgs, cmd: &mut Child) -> anyhow::Result<bool> {
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    for spec in &args.ports {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, spec.port));
        while place.connect(addr).await.is_err() {
            if cmd.try_wait()?.is_some() {
                return Ok(false);
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "the command does not accept connections on port {} after {READY_TIMEOUT:?}",
                    spec.port
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(true)
}

/// Deregisters (if registered), then stops the command and the proxy (SIGTERM, then SIGKILL).
pub(crate) async fn undo(
    args: &RunArgs,
    registered: bool,
    cmd: Option<&mut Child>,
    proxy: &mut Child,
) {
    if registered {
        if let Err(e) = deregister(args).await {
            say!(
                "weft run: deregistering {}/{}: {e:#}",
                args.namespace,
                args.name
            );
        }
    }
    if let Some(cmd) = cmd {
        stop(cmd).await;
    }
    stop(proxy).await;
}

/// How long [`api_call`] keeps retrying a control plane that answers "busy".
const BUSY_FOR: Duration = Duration::from_secs(60);

/// Sends one request to the control plane API; the answer's body if it is a success. Every call
/// here is idempotent (PUT, DELETE), so a busy answer — 429 (too many changes in progress) or 503
/// (too many connections, or stored but not yet applied) — is retried after its `Retry-After`
/// (1 s if absent, at most 5 s) for up to [`BUSY_FOR`].
async fn api_call(
    args: &RunArgs,
    method: hyper::Method,
    path: &str,
    body: Option<&serde_json::Value>,
) -> anyhow::Result<Bytes> {
    call(args.api(), method, path, body).await
}

/// [`api_call`] to the API at `api`.
async fn call(
    api: SocketAddr,
    method: hyper::Method,
    path: &str,
    body: Option<&serde_json::Value>,
) -> anyhow::Result<Bytes> {
    let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
    let deadline = tokio::time::Instant::now() + BUSY_FOR;
    loop {
        let mut request = hyper::Request::builder()
            .method(method.clone())
            .uri(path)
            .header(hyper::header::HOST, api.to_string());
        if !body.is_empty() {
            request = request.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let response = http::send(api, request.body(Full::new(body.clone()))?)
            .await
            .with_context(|| format!("calling the control plane API at {api}"))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response.into_body());
        }
        let busy = matches!(
            status,
            hyper::StatusCode::TOO_MANY_REQUESTS | hyper::StatusCode::SERVICE_UNAVAILABLE
        );
        let wait = retry_after(response.headers());
        if !busy || tokio::time::Instant::now() + wait > deadline {
            bail!("{status} {}", String::from_utf8_lossy(response.body()));
        }
        tracing::debug!("{method} {path}: {status}, again in {wait:?}");
        tokio::time::sleep(wait).await;
    }
}

/// A busy answer's `Retry-After` in seconds, 1 s if absent or not a number, at most 5 s.
fn retry_after(headers: &hyper::HeaderMap) -> Duration {
    let secs = headers
        .get(hyper::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
        .unwrap_or(1);
    Duration::from_secs(secs.clamp(1, 5))
}

fn workload_path(args: &RunArgs) -> String {
    format!("/v1/workloads/{}/{}", args.namespace, args.name)
}

/// Registers the workload; the answer (`{"ok":true,"identity":..,"token":..}`) is returned.
async fn register(
    args: &RunArgs,
    workload: &serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    let answer = api_call(
        args,
        hyper::Method::PUT,
        &workload_path(args),
        Some(workload),
    )
    .await
    .with_context(|| format!("registering {}/{}", args.namespace, args.name))?;
    // Older control planes answer without a body worth reading.
    Ok(serde_json::from_slice(&answer).unwrap_or(serde_json::Value::Null))
}

/// `Ready=True`: the command accepts connections, Destination may hand the workload out. A
/// status update, so the sidecar's token stays valid.
async fn set_ready(args: &RunArgs) -> anyhow::Result<()> {
    let condition = Condition::ready(
        true,
        "PortsAccept",
        "weft run: the command accepts connections on its ports",
        &now(),
    );
    let status = serde_json::json!({ "status": workload_status::to_value(&[condition]) });
    let path = format!("{}/status", workload_path(args));
    api_call(args, hyper::Method::PUT, &path, Some(&status))
        .await
        .with_context(|| {
            format!(
                "marking {}/{} ready (an older control plane without PUT {path} never hands \
                 out a workload registered not ready)",
                args.namespace, args.name
            )
        })?;
    Ok(())
}

async fn deregister(args: &RunArgs) -> anyhow::Result<()> {
    api_call(args, hyper::Method::DELETE, &workload_path(args), None).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers each connection's request with the next of `answers` (raw HTTP/1.1 responses).
    async fn stub(answers: Vec<&'static str>) -> SocketAddr {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            for answer in answers {
                let (mut conn, _) = listener.accept().await.unwrap();
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = conn.read(&mut buf).await.unwrap();
                    assert!(n > 0, "the client closed before its request");
                    head.extend_from_slice(&buf[..n]);
                }
                conn.write_all(answer.as_bytes()).await.unwrap();
                conn.shutdown().await.ok();
            }
        });
        addr
    }

    #[tokio::test]
    async fn a_busy_control_plane_is_asked_again_after_its_retry_after() {
        let api = stub(vec![
            "HTTP/1.1 429 Too Many Requests\r\nretry-after: 1\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}",
            "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}",
            "HTTP/1.1 200 OK\r\ncontent-length: 11\r\nconnection: close\r\n\r\n{\"ok\":true}",
        ])
        .await;
        let started = std::time::Instant::now();
        let body = call(api, hyper::Method::PUT, "/v1/workloads/default/a", None)
            .await
            .expect("answered after two busy answers");
        assert_eq!(&body[..], b"{\"ok\":true}");
        assert!(started.elapsed() >= Duration::from_secs(2), "did not wait");

        // Anything else is an answer, not a reason to wait.
        let api = stub(vec![
            "HTTP/1.1 400 Bad Request\r\ncontent-length: 5\r\nconnection: close\r\n\r\nwrong",
        ])
        .await;
        let e = call(api, hyper::Method::PUT, "/v1/workloads/default/a", None)
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), "400 Bad Request wrong");
    }

    #[test]
    fn retry_after_is_bounded() {
        let mut h = hyper::HeaderMap::new();
        assert_eq!(retry_after(&h), Duration::from_secs(1));
        for (v, secs) in [("3", 3), ("0", 1), ("600", 5), ("soon", 1)] {
            h.insert(hyper::header::RETRY_AFTER, v.parse().unwrap());
            assert_eq!(retry_after(&h), Duration::from_secs(secs), "{v}");
        }
    }

    #[test]
    fn registration_says_not_ready_in_the_upstream_shape() {
        let doc = starting(serde_json::json!({"kind": "ExternalWorkload"}));
        let condition = &doc["status"]["conditions"][0];
        assert_eq!(condition["type"], "Ready");
        assert_eq!(condition["status"], "False");
        assert!(condition["lastTransitionTime"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')));
        // What the control plane reads back from it: not ready.
        let conditions = weft_control::resource::workload_status::validate_update(&doc, "doc")
            .expect("valid status");
        assert!(!workload_status::is_ready(&conditions));
    }
}
