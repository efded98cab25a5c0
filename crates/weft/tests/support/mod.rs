//! Shared end-to-end harness: temp dirs, child processes (`weft control`, `weft-proxy`,
//! `redis-server`, ...) that die with the test, the registration API, and metrics scraping.
//!
//! Every child gets `PR_SET_PDEATHSIG(SIGKILL)` and `kill_on_drop`, its stderr goes to a file in
//! the test's temp dir, and when a test panics the tail of every child's stderr is printed so a
//! failure report shows what the proxies and the control plane said. Everything waits on an
//! observable event (a JSON listening line, `/ready`, a counter) with a bounded deadline.
#![allow(dead_code)]

pub mod apps;
pub mod capture;
pub mod clients;
pub mod cluster;
pub mod load;
pub mod pod_mesh;
pub mod pods;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub use clients::{http_get, http_request};
// One Prometheus text parser for every test: the testbed's (exact label match).
pub use weft_testbed::mesh::metric_sum;
// Skipping locally and failing under `CI=true`, and finding tools, work as in the testbed.
use weft_proxy::config;
#[allow(unused_imports)] // not every test binary skips
pub use weft_testbed::{in_ci, skip_or_fail, which};

/// Default bound for "this should happen soon" waits (process start, readiness, discovery).
pub const SOON: Duration = Duration::from_secs(20);

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Path of the `weft` binary under test.
pub fn weft_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_weft"))
}

/// Path of the `weft-proxy` binary under test: beside `weft` in the same target directory. It
/// belongs to the `weft-proxy` package, so `cargo test -p weft` alone does not build it
/// (`cargo test --workspace` does, before any test runs).
pub fn proxy_bin() -> PathBuf {
    let bin = weft_bin().with_file_name("weft-proxy");
    assert!(
        bin.is_file(),
        "{} is missing: build it: cargo build -p weft-proxy",
        bin.display()
    );
    bin
}

/// A directory under `std::env::temp_dir()` with a unique name, removed on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "weft-e2e-{prefix}-{}-{}-{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A subdirectory, created.
    pub fn subdir(&self, name: &str) -> PathBuf {
        let dir = self.path.join(name);
        std::fs::create_dir_all(&dir).expect("create subdir");
        dir
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Makes the child die with its parent even if the test process is SIGKILLed.
pub fn set_pdeathsig(cmd: &mut Command) {
    weft_sys::on_exec(
        cmd.as_std_mut(),
        weft_sys::ChildSetup {
            netns: None,
            uid: None,
            death_signal: libc::SIGKILL,
        },
    );
}

/// A child process owned by a test: killed on drop, stderr kept in a log file.
pub struct ChildProc {
    pub name: String,
    child: Child,
    stderr_path: PathBuf,
    pub stdout_lines: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl ChildProc {
    /// Spawns `cmd` with piped stdout (lines delivered on `stdout_lines`) and stderr to
    /// `<log_dir>/<name>.stderr.log`.
    pub fn spawn(name: &str, mut cmd: Command, log_dir: &Path) -> ChildProc {
        let stderr_path = log_dir.join(format!("{name}.stderr.log"));
        let stderr = std::fs::File::create(&stderr_path).expect("create stderr log");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .kill_on_drop(true);
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if tx.send(line).is_err() {
                    // Nobody listens any more: keep draining so the child never blocks.
                    continue;
                }
            }
        });
        ChildProc {
            name: name.to_string(),
            child,
            stderr_path,
            stdout_lines: rx,
        }
    }

    pub fn id(&self) -> Option<u32> {
        self.child.id()
    }

    /// The last `max` bytes of the child's stderr.
    pub fn stderr_tail(&self, max: usize) -> String {
        let text = std::fs::read(&self.stderr_path).unwrap_or_default();
        let start = text.len().saturating_sub(max);
        String::from_utf8_lossy(&text[start..]).into_owned()
    }

    /// Waits for the first stdout line that is a JSON object with `"event":"listening"`.
    pub async fn listening_line(&mut self, timeout: Duration) -> Result<serde_json::Value, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = tokio::select! {
                line = self.stdout_lines.recv() => line,
                status = self.child.wait() => {
                    return Err(format!(
                        "{} exited ({status:?}) before listening; stderr:\n{}",
                        self.name, self.stderr_tail(4000)
                    ));
                }
                _ = tokio::time::sleep(left) => {
                    return Err(format!(
                        "{} printed no listening line within {timeout:?}; stderr:\n{}",
                        self.name, self.stderr_tail(4000)
                    ));
                }
            };
            let Some(line) = line else {
                // stdout closed: wait for the exit to report it.
                let status = tokio::time::timeout(left, self.child.wait()).await;
                return Err(format!(
                    "{} closed stdout before listening ({status:?}); stderr:\n{}",
                    self.name,
                    self.stderr_tail(4000)
                ));
            };
            if let Ok(value) = serde_json::from_str::<serde_json::Value>(&line) {
                if value.get("event").and_then(|e| e.as_str()) == Some("listening") {
                    return Ok(value);
                }
            }
        }
    }

    /// SIGKILLs the child and waits for it to be gone.
    pub async fn kill(&mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }

    /// Sends a signal (e.g. SIGTERM) without waiting.
    pub fn signal(&self, signal: i32) {
        if let Some(pid) = self.child.id() {
            // SAFETY: plain kill(2) on a pid we own and have not reaped.
            unsafe {
                libc::kill(pid as i32, signal);
            }
        }
    }

    /// Waits for the child to exit, bounded.
    pub async fn wait(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        tokio::time::timeout(timeout, self.child.wait())
            .await
            .ok()
            .and_then(|r| r.ok())
    }

    pub fn try_exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "----- {} stderr (tail) -----\n{}\n----- end {} -----",
                self.name,
                self.stderr_tail(6000),
                self.name
            );
        }
        let _ = self.child.start_kill();
    }
}

fn parse_addr(value: &serde_json::Value, key: &str) -> SocketAddr {
    value
        .get(key)
        .and_then(|v| v.as_str())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("listening line has no valid {key:?}: {value}"))
}

/// A running `weft control` child.
pub struct Control {
    pub proc: ChildProc,
    pub grpc: SocketAddr,
    pub api: SocketAddr,
    pub store: PathBuf,
}

impl Control {
    /// Starts `weft control` on ephemeral ports with `store` as its store directory and waits
    /// for `/ready`.
    pub async fn start(store: &Path, log_dir: &Path) -> Control {
        Control::start_on(store, log_dir, "127.0.0.1:0".parse().unwrap()).await
    }

    /// Starts on a given gRPC address (a restart keeps the address proxies know). A bind can
    /// fail briefly after the previous owner died, so retry until [`SOON`].
    pub async fn start_on(store: &Path, log_dir: &Path, grpc: SocketAddr) -> Control {
        let deadline = Instant::now() + SOON;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut cmd = Command::new(weft_bin());
            cmd.arg("control")
                .arg("--store")
                .arg(store)
                .arg("--grpc-addr")
                .arg(grpc.to_string())
                .arg("--api-addr")
                .arg("127.0.0.1:0")
                .env("RUST_BACKTRACE", "1");
            set_pdeathsig(&mut cmd);
            let mut proc = ChildProc::spawn(&format!("control-{attempt}"), cmd, log_dir);
            match proc.listening_line(SOON).await {
                Ok(line) => {
                    let control = Control {
                        grpc: parse_addr(&line, "grpc"),
                        api: parse_addr(&line, "api"),
                        proc,
                        store: store.to_path_buf(),
                    };
                    control.wait_ready().await;
                    return control;
                }
                Err(e) if Instant::now() < deadline && grpc.port() != 0 => {
                    eprintln!("control start attempt {attempt} failed, retrying: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("weft control did not start: {e}"),
            }
        }
    }

    pub async fn wait_ready(&self) {
        wait_http_ok(self.api, "/ready", SOON)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "control /ready: {e}; stderr:\n{}",
                    self.proc.stderr_tail(4000)
                )
            });
    }

    /// `PUT /v1/workloads/{ns}/{name}` with a JSON ExternalWorkload document.
    pub async fn register(&self, ns: &str, name: &str, doc: &serde_json::Value) {
        let (status, body) = http_request(
            self.api,
            "PUT",
            &format!("/v1/workloads/{ns}/{name}"),
            Some(doc.to_string()),
        )
        .await
        .unwrap_or_else(|e| panic!("register {ns}/{name}: {e}"));
        assert_eq!(status, 200, "register {ns}/{name}: {body}");
    }

    /// `DELETE /v1/workloads/{ns}/{name}`.
    pub async fn deregister(&self, ns: &str, name: &str) {
        let (status, body) = http_request(
            self.api,
            "DELETE",
            &format!("/v1/workloads/{ns}/{name}"),
            None,
        )
        .await
        .unwrap_or_else(|e| panic!("deregister {ns}/{name}: {e}"));
        assert_eq!(status, 200, "deregister {ns}/{name}: {body}");
    }

    /// `GET /v1/store` as JSON.
    pub async fn store_status(&self) -> serde_json::Value {
        let (status, body) = http_get(self.api, "/v1/store")
            .await
            .unwrap_or_else(|e| panic!("GET /v1/store: {e}"));
        assert_eq!(status, 200, "GET /v1/store: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("/v1/store JSON: {e}: {body}"))
    }

    pub async fn kill(&mut self) {
        self.proc.kill().await;
    }
}

/// A workload document as the registration API takes it.
pub fn workload_doc(
    ns: &str,
    name: &str,
    labels: &[(&str, &str)],
    ip: &str,
    ports: &[(&str, u16)],
) -> serde_json::Value {
    let labels: serde_json::Map<String, serde_json::Value> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
        .collect();
    let ports: Vec<serde_json::Value> = ports
        .iter()
        .map(|(n, p)| serde_json::json!({"name": n, "port": p}))
        .collect();
    serde_json::json!({
        "apiVersion": "workload.linkerd.io/v1beta1",
        "kind": "ExternalWorkload",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {"workloadIPs": [{"ip": ip}], "ports": ports},
    })
}

/// One `Service` YAML document: `port` → the workload port named `target`, selecting `app=APP`.
pub struct ServiceDoc<'a> {
    pub name: &'a str,
    pub app: &'a str,
    pub port: u16,
    pub target: &'a str,
    pub app_protocol: Option<&'a str>,
    pub opaque: bool,
    pub cluster_ip: Option<&'a str>,
}

impl ServiceDoc<'_> {
    pub fn yaml(&self) -> String {
        let mut out = format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: {}\n  namespace: default\n",
            self.name
        );
        if self.opaque {
            out += &format!(
                "  annotations:\n    config.linkerd.io/opaque-ports: \"{}\"\n",
                self.port
            );
        }
        out += &format!("spec:\n  selector: {{app: {}}}\n", self.app);
        if let Some(ip) = self.cluster_ip {
            out += &format!("  clusterIP: {ip}\n");
        }
        out += &format!(
            "  ports:\n  - name: {}\n    port: {}\n    targetPort: {}\n",
            self.target, self.port, self.target
        );
        if let Some(proto) = self.app_protocol {
            out += &format!("    appProtocol: {proto}\n");
        }
        out
    }
}

/// A plain HTTP service `name` on `port` targeting workload port `target` of pods `app=APP`.
pub fn service(name: &str, app: &str, port: u16, target: &str) -> String {
    ServiceDoc {
        name,
        app,
        port,
        target,
        app_protocol: None,
        opaque: false,
        cluster_ip: None,
    }
    .yaml()
}

/// A gRPC service (`appProtocol: grpc`) `name` on `port` targeting workload port `target`.
pub fn grpc_service(name: &str, app: &str, port: u16, target: &str) -> String {
    ServiceDoc {
        name,
        app,
        port,
        target,
        app_protocol: Some("grpc"),
        opaque: false,
        cluster_ip: None,
    }
    .yaml()
}

/// An opaque-port (raw TCP) service `name` on `port` targeting workload port `target`.
pub fn opaque_service(name: &str, app: &str, port: u16, target: &str) -> String {
    ServiceDoc {
        name,
        app,
        port,
        target,
        app_protocol: None,
        opaque: true,
        cluster_ip: None,
    }
    .yaml()
}

/// Writes `docs` joined by `---` into `dir/file`.
pub fn write_docs(dir: &Path, file: &str, docs: &[String]) {
    std::fs::write(dir.join(file), docs.join("---\n")).expect("write store file");
}

/// Cluster-local authority of a service in `default`.
pub fn authority(service: &str, port: u16) -> String {
    format!("{service}.default.svc.cluster.local:{port}")
}

/// What to start a `weft-proxy` with.
pub struct ProxySpec {
    name: String,
    env: Vec<(String, String)>,
}

impl ProxySpec {
    /// A proxy for workload `default:NAME` talking to `control_grpc`, every listener ephemeral
    /// on 127.0.0.1, fast control-plane reconnects.
    pub fn new(name: &str, control_grpc: SocketAddr) -> ProxySpec {
        let mut spec = ProxySpec {
            name: name.to_string(),
            env: Vec::new(),
        };
        spec = spec
            .env(config::ENV_DESTINATION_SVC_ADDR, &control_grpc.to_string())
            .env(config::ENV_POLICY_WORKLOAD, &format!("default:{name}"))
            .env(config::ENV_INBOUND_LISTEN_ADDR, "127.0.0.1:0")
            .env(config::ENV_OUTBOUND_LISTEN_ADDR, "127.0.0.1:0")
            .env(config::ENV_ADMIN_LISTEN_ADDR, "127.0.0.1:0")
            .env(config::ENV_CONTROL_BACKOFF_MAX, "500ms")
            .env(config::ENV_SHUTDOWN_GRACE_PERIOD, "2s");
        if let Ok(log) = std::env::var("WEFT_TEST_PROXY_LOG") {
            spec = spec.env(config::ENV_LOG, &log);
        }
        spec
    }

    /// Sets (or replaces) one variable.
    pub fn env(mut self, key: &str, value: &str) -> ProxySpec {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Explicit-mode forward ports (ephemeral) to these app ports.
    pub fn forward(self, app_ports: &[u16]) -> ProxySpec {
        let list: Vec<String> = app_ports.iter().map(|p| p.to_string()).collect();
        self.env(config::ENV_INBOUND_FORWARD_PORTS, &list.join(","))
    }

    /// Explicit-mode upstream ports (ephemeral) for these authorities.
    pub fn upstreams(self, authorities: &[String]) -> ProxySpec {
        self.env(config::ENV_OUTBOUND_UPSTREAMS, &authorities.join(","))
    }

    pub fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new(program);
        for (key, _) in std::env::vars() {
            if key.starts_with("WEFT_PROXY_") {
                cmd.env_remove(key);
            }
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.env("RUST_BACKTRACE", "1");
        cmd
    }

    /// Spawns the proxy, parses its listening line and waits for its `/ready`.
    pub async fn spawn(self, log_dir: &Path) -> Proxy {
        let mut cmd = self.command(&proxy_bin());
        set_pdeathsig(&mut cmd);
        let mut proc = ChildProc::spawn(&format!("proxy-{}", self.name), cmd, log_dir);
        let line = proc
            .listening_line(SOON)
            .await
            .unwrap_or_else(|e| panic!("weft-proxy {} did not start: {e}", self.name));
        let proxy = Proxy::from_listening(proc, &line);
        proxy.wait_ready().await;
        proxy
    }
}

/// A running `weft-proxy` child and the addresses from its listening line.
pub struct Proxy {
    pub proc: ChildProc,
    pub inbound: SocketAddr,
    pub outbound: SocketAddr,
    pub admin: SocketAddr,
    /// app port → forward listener address.
    pub forward: HashMap<u16, SocketAddr>,
    /// authority → local upstream listener address.
    pub upstreams: HashMap<String, SocketAddr>,
}

impl Proxy {
    pub fn from_listening(proc: ChildProc, line: &serde_json::Value) -> Proxy {
        let mut forward = HashMap::new();
        for entry in line["forward"].as_array().into_iter().flatten() {
            let port = entry["app_port"].as_u64().expect("forward.app_port") as u16;
            forward.insert(port, parse_addr(entry, "addr"));
        }
        let mut upstreams = HashMap::new();
        for entry in line["upstreams"].as_array().into_iter().flatten() {
            let authority = entry["authority"].as_str().expect("upstreams.authority");
            upstreams.insert(authority.to_string(), parse_addr(entry, "addr"));
        }
        Proxy {
            inbound: parse_addr(line, "inbound"),
            outbound: parse_addr(line, "outbound"),
            admin: parse_addr(line, "admin"),
            forward,
            upstreams,
            proc,
        }
    }

    pub async fn wait_ready(&self) {
        wait_http_ok(self.admin, "/ready", SOON)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "{} /ready: {e}; stderr:\n{}",
                    self.proc.name,
                    self.proc.stderr_tail(4000)
                )
            });
    }

    /// The forward listener for `app_port`.
    pub fn forward_addr(&self, app_port: u16) -> SocketAddr {
        *self
            .forward
            .get(&app_port)
            .unwrap_or_else(|| panic!("no forward port for {app_port}: {:?}", self.forward))
    }

    /// The upstream listener for `authority`.
    pub fn upstream_addr(&self, authority: &str) -> SocketAddr {
        *self
            .upstreams
            .get(authority)
            .unwrap_or_else(|| panic!("no upstream for {authority}: {:?}", self.upstreams))
    }

    /// `GET /metrics` text.
    pub async fn metrics(&self) -> String {
        let (status, body) = http_get(self.admin, "/metrics")
            .await
            .unwrap_or_else(|e| panic!("{} /metrics: {e}", self.proc.name));
        assert_eq!(status, 200, "{} /metrics: {body}", self.proc.name);
        body
    }

    /// Sum of `name` samples whose labels include every `labels` pair.
    pub async fn metric_sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric_sum(&self.metrics().await, name, labels)
    }
}

/// Polls `GET path` until 200, bounded by `timeout`.
pub async fn wait_http_ok(addr: SocketAddr, path: &str, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let mut last = String::from("no attempt");
    while Instant::now() < deadline {
        match http_get(addr, path).await {
            Ok((200, _)) => return Ok(()),
            Ok((status, body)) => last = format!("status {status}: {body}"),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!(
        "{addr}{path} not 200 within {timeout:?}: last {last}"
    ))
}

/// Polls `check` until it returns `Some`, bounded by `timeout`; panics with `what` otherwise.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// FNV-1a 64 over a stream of chunks: enough to compare large bodies without keeping them.
#[derive(Clone, Copy)]
pub struct Fnv(pub u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    pub fn update(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// A free TCP port on 127.0.0.1 (for programs that cannot report an ephemeral port).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind probe");
    listener.local_addr().expect("probe addr").port()
}

/// Waits (120 s at most) for `weft demo ... --json` to exit, checks it succeeded and returns the
/// summary it printed. `what` names the command in failure messages.
pub async fn demo_exit_summary(demo: &mut ChildProc, what: &str) -> serde_json::Value {
    let status = demo
        .wait(Duration::from_secs(120))
        .await
        .unwrap_or_else(|| {
            panic!(
                "{what} did not exit within 120 s:\n{}",
                demo.stderr_tail(4000)
            )
        });
    let mut stdout = String::new();
    // The pipe reader ends at EOF; take everything it forwarded.
    while let Ok(Some(line)) =
        tokio::time::timeout(Duration::from_secs(5), demo.stdout_lines.recv()).await
    {
        stdout += &line;
        stdout.push('\n');
    }
    assert!(
        status.success(),
        "{what} exited with {status}; stdout:\n{stdout}\nstderr:\n{}",
        demo.stderr_tail(4000)
    );
    summary(&stdout).unwrap_or_else(|| panic!("no JSON summary on stdout:\n{stdout}"))
}

/// The summary object: the whole stdout, or the last `{"edges"...}` object in it.
pub fn summary(stdout: &str) -> Option<serde_json::Value> {
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(stdout.trim()) {
        return Some(value);
    }
    let start = stdout.rfind("{\"edges\"")?;
    serde_json::Deserializer::from_str(&stdout[start..])
        .into_iter::<serde_json::Value>()
        .next()?
        .ok()
}

/// The edges of a `weft demo --json` summary, once checked for what every demo run shows: at
/// least three, each naming both ends, with requests and a success rate in 0.5..=1.
pub fn demo_edges(summary: &serde_json::Value) -> &[serde_json::Value] {
    let edges = summary["edges"]
        .as_array()
        .unwrap_or_else(|| panic!("summary has no edges array: {summary}"));
    assert!(edges.len() >= 3, "expected >= 3 edges: {summary}");
    for edge in edges {
        let requests = edge["requests"].as_u64().unwrap_or(0);
        assert!(requests > 0, "edge without requests: {edge}");
        let rate = edge["success_rate"].as_f64().unwrap_or(-1.0);
        assert!(
            (0.5..=1.0).contains(&rate),
            "edge success rate {rate} outside 0.5..=1: {edge}"
        );
        assert!(edge["src"].is_string() && edge["dst"].is_string(), "{edge}");
    }
    edges
}
