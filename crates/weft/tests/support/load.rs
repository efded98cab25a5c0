//! A steady, bounded request stream through a client proxy, and echo workloads that join and
//! leave the mesh while it runs. [`Load`] runs one HTTP/1.1 client (absolute-form to the outbound
//! listener) and one h2c client (upstream port) side by side, paced, and records every failure
//! with its reason; [`MeshServer`] is an echo app behind its own sidecar, registered by name.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::apps::{AbortOnDrop, EchoServer};
use super::clients::{empty, h2_request, proxy_request, Reply, H1, H2};
use super::{
    authority, service, workload_doc, write_docs, Control, Proxy, ProxySpec, TempDir, SOON,
};

/// An echo app behind its own proxy, registered as workload `default/NAME` with label
/// `app=APP` and port `http`.
pub struct MeshServer {
    pub name: String,
    pub echo: EchoServer,
    pub proxy: Proxy,
}

impl MeshServer {
    pub async fn start(control: &Control, log_dir: &Path, name: &str, app: &str) -> MeshServer {
        let server = MeshServer::start_unregistered(control.grpc, log_dir, name).await;
        control
            .register("default", name, &server.workload(app))
            .await;
        server
    }

    /// Starts the app and its proxy without registering the workload.
    pub async fn start_unregistered(
        control_grpc: SocketAddr,
        log_dir: &Path,
        name: &str,
    ) -> MeshServer {
        let echo = EchoServer::start(name).await;
        let proxy = ProxySpec::new(name, control_grpc)
            .forward(&[echo.port()])
            .spawn(log_dir)
            .await;
        MeshServer {
            name: name.to_string(),
            echo,
            proxy,
        }
    }

    pub fn workload(&self, app: &str) -> serde_json::Value {
        let port = self.proxy.forward_addr(self.echo.port()).port();
        workload_doc(
            "default",
            &self.name,
            &[("app", app)],
            "127.0.0.1",
            &[("http", port)],
        )
    }
}

#[derive(Default)]
struct Tally {
    ok: u64,
    failures: Vec<String>,
}

/// Requests sent by a [`Load`] so far.
pub struct LoadReport {
    pub ok: u64,
    pub failures: Vec<String>,
}

impl LoadReport {
    /// Asserts that no request failed (`context` ends the message, e.g. ` during churn`).
    pub fn assert_no_failures(&self, context: &str) {
        assert!(
            self.failures.is_empty(),
            "{} of {} requests failed{context}; first failures:\n{}",
            self.failures.len(),
            self.ok + self.failures.len() as u64,
            self.first_failures(10)
        );
    }

    /// The first `n` failures, one a line (for assertion messages).
    pub fn first_failures(&self, n: usize) -> String {
        self.failures
            .iter()
            .take(n)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Two paced request loops (HTTP/1.1 and h2c) against one authority until stopped or a deadline.
pub struct Load {
    tally: Arc<Mutex<Tally>>,
    done: watch::Sender<u64>,
    stop: watch::Sender<bool>,
    handles: Vec<AbortOnDrop>,
}

impl Load {
    /// [`Load::start`] through `client`'s outbound listener and its upstream port for
    /// `authority`, one request per 20 ms on each loop, for at most `max`.
    pub fn through(client: &Proxy, authority: &str, max: Duration) -> Load {
        Load::start(
            client.outbound,
            client.upstream_addr(authority),
            authority,
            Duration::from_millis(20),
            max,
        )
    }

    /// Starts both loops: `outbound` is the proxy's outbound listener, `upstream` its upstream
    /// port for `authority`. Each loop sends one request per `interval` until `max`.
    pub fn start(
        outbound: SocketAddr,
        upstream: SocketAddr,
        authority: &str,
        interval: Duration,
        max: Duration,
    ) -> Load {
        let tally = Arc::new(Mutex::new(Tally::default()));
        let (done, _) = watch::channel(0u64);
        let (stop, _) = watch::channel(false);
        let deadline = Instant::now() + max;
        let mut handles = Vec::new();
        for h2 in [false, true] {
            let tally = tally.clone();
            let done = done.clone();
            let mut stop = stop.subscribe();
            let authority = authority.to_string();
            handles.push(AbortOnDrop(tokio::spawn(async move {
                let addr = if h2 { upstream } else { outbound };
                let mut ticker = tokio::time::interval(interval);
                let mut h1: Option<H1> = None;
                let mut h2c: Option<H2> = None;
                let mut seq = 0u64;
                while Instant::now() < deadline {
                    tokio::select! {
                        _ = ticker.tick() => {}
                        _ = stop.wait_for(|s| *s) => break,
                    }
                    seq += 1;
                    let path = format!("/load/{}/{seq}", if h2 { "h2" } else { "h1" });
                    let result = if h2 {
                        one_h2(&mut h2c, addr, &authority, &path).await
                    } else {
                        one_h1(&mut h1, addr, &authority, &path).await
                    };
                    let mut t = tally.lock().unwrap_or_else(|e| e.into_inner());
                    match result {
                        Ok(()) => t.ok += 1,
                        Err(e) => t.failures.push(format!("{path}: {e}")),
                    }
                    drop(t);
                    done.send_modify(|n| *n += 1);
                }
            })));
        }
        Load {
            tally,
            done,
            stop,
            handles,
        }
    }

    /// Requests completed (ok or failed) so far.
    pub fn completed(&self) -> u64 {
        *self.done.borrow()
    }

    /// Waits until `n` more requests completed than now; `false` on timeout.
    pub async fn wait_more(&self, n: u64, timeout: Duration) -> bool {
        let target = self.completed() + n;
        let mut rx = self.done.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|c| *c >= target))
            .await
            .map(|r| r.is_ok())
            .unwrap_or(false)
    }

    pub fn report(&self) -> LoadReport {
        let t = self.tally.lock().unwrap_or_else(|e| e.into_inner());
        LoadReport {
            ok: t.ok,
            failures: t.failures.clone(),
        }
    }

    /// Stops both loops and returns the final tally.
    pub async fn stop(mut self) -> LoadReport {
        self.stop.send_replace(true);
        for mut handle in self.handles.drain(..) {
            // A request in flight finishes within its own timeout; bound the wait anyway.
            let _ = tokio::time::timeout(Duration::from_secs(20), &mut handle.0).await;
        }
        self.report()
    }
}

fn check(reply: Reply, path: &str) -> Result<(), String> {
    if reply.status != 200 || reply.header("x-echo-path") != path {
        return Err(reply.describe());
    }
    Ok(())
}

async fn one_h1(
    conn: &mut Option<H1>,
    addr: SocketAddr,
    authority: &str,
    path: &str,
) -> Result<(), String> {
    if conn.as_ref().map(|c| c.is_closed()).unwrap_or(true) {
        *conn = Some(
            H1::connect(addr)
                .await
                .map_err(|e| format!("connect: {e}"))?,
        );
    }
    let Some(c) = conn.as_mut() else {
        return Err("no connection".into());
    };
    let result = async {
        let resp = c
            .send(proxy_request("GET", authority, path, empty()))
            .await?;
        Reply::read(resp).await
    }
    .await;
    match result {
        Ok(reply) => check(reply, path),
        Err(e) => {
            *conn = None;
            Err(format!("h1 request: {e}"))
        }
    }
}

async fn one_h2(
    conn: &mut Option<H2>,
    addr: SocketAddr,
    authority: &str,
    path: &str,
) -> Result<(), String> {
    if conn.as_ref().map(|c| c.is_closed()).unwrap_or(true) {
        *conn = Some(
            H2::connect(addr)
                .await
                .map_err(|e| format!("connect: {e}"))?,
        );
    }
    let Some(c) = conn.as_mut() else {
        return Err("no connection".into());
    };
    let result = async {
        let resp = c.send(h2_request("GET", authority, path, empty())).await?;
        Reply::read(resp).await
    }
    .await;
    match result {
        Ok(reply) => check(reply, path),
        Err(e) => {
            *conn = None;
            Err(format!("h2 request: {e}"))
        }
    }
}

/// A control plane with the service `echo:8080` selecting `app=APP`, a first [`MeshServer`]
/// behind it, and a client proxy `APP-client` with a [`Load`] (40 s at most) running through it
/// that the first server has already served 20 requests of.
pub struct LoadedMesh {
    pub control: Control,
    pub target: String,
    pub first: MeshServer,
    pub client: Proxy,
    pub load: Load,
    pub store: PathBuf,
    /// Last, so it is removed after every process above stopped.
    pub tmp: TempDir,
}

impl LoadedMesh {
    /// `test` names the temp dir, `first` the first server's workload.
    pub async fn start(test: &str, app: &str, first: &str) -> LoadedMesh {
        let tmp = TempDir::new(test);
        let store = tmp.subdir("store");
        write_docs(
            &store,
            "services.yaml",
            &[service("echo", app, 8080, "http")],
        );
        let control = Control::start(&store, tmp.path()).await;
        let target = authority("echo", 8080);
        let first = MeshServer::start(&control, tmp.path(), first, app).await;
        let client = ProxySpec::new(&format!("{app}-client"), control.grpc)
            .upstreams(std::slice::from_ref(&target))
            .spawn(tmp.path())
            .await;
        let load = Load::through(&client, &target, Duration::from_secs(40));
        assert!(
            first.echo.requests.wait_for(20, SOON).await,
            "{} never served 20 requests: {:?}",
            first.name,
            load.report().failures
        );
        LoadedMesh {
            control,
            target,
            first,
            client,
            load,
            store,
            tmp,
        }
    }
}
