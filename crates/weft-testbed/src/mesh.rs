//! The mesh on a testbed cluster: `weft control` in a pod of its own, workloads started with
//! `weft run` on a node (each makes its own pod), and commands and proxy admin requests run
//! inside a pod's namespace. Binaries are passed in (tests get them from `CARGO_BIN_EXE_*`).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::{Cluster, Error, Netns, Pod, Proc};

/// How long a control plane or workload may take to come up.
pub const STARTUP: Duration = Duration::from_secs(30);

/// Where a pod's proxy serves its admin endpoints (`/metrics`, `/ready`), inside the pod.
pub const ADMIN: &str = "127.0.0.1:4191";

/// `weft`'s variable naming the `weft-proxy` binary that `weft run` and `weft demo` start (not a
/// proxy variable, so not in `weft_proxy::config`; this crate does not depend on the proxy).
/// crates/weft/tests/env_names.rs checks it is the name `weft` reads.
pub const ENV_WEFT_PROXY_BIN: &str = "WEFT_PROXY_BIN";

/// `weft control` serving on its pod's address (gRPC 8086, API 8085).
pub struct ControlPlane {
    pub proc: Proc,
    pub pod: Pod,
    pub grpc: SocketAddr,
    pub api: SocketAddr,
}

impl ControlPlane {
    /// Starts `weft control --store STORE` in a new pod on node `node`.
    pub async fn start(
        cluster: &Cluster,
        node: usize,
        weft: &Path,
        store: &Path,
    ) -> Result<ControlPlane, Error> {
        Self::start_with(cluster, node, weft, store, &[]).await
    }

    /// [`ControlPlane::start`] with more flags (`--identity-dir DIR`, ...).
    pub async fn start_with(
        cluster: &Cluster,
        node: usize,
        weft: &Path,
        store: &Path,
        flags: &[&str],
    ) -> Result<ControlPlane, Error> {
        let pod = cluster.add_pod(node)?;
        let (weft, store) = (weft.to_path_buf(), store.to_path_buf());
        let flags: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
        let proc = Proc::spawn(
            "weft control",
            pod.netns(),
            None,
            libc::SIGKILL,
            move || {
                let mut cmd = Command::new(&weft);
                cmd.arg("control").arg("--store").arg(&store).args([
                    "--grpc-addr",
                    "0.0.0.0:8086",
                    "--api-addr",
                    "0.0.0.0:8085",
                ]);
                cmd.args(&flags);
                cmd
            },
        )?;
        proc.wait_stdout_line(STARTUP, |l| l.contains(r#""event":"listening""#))
            .await?;
        let ip = pod.ip();
        Ok(ControlPlane {
            proc,
            grpc: SocketAddr::from((ip, 8086)),
            api: SocketAddr::from((ip, 8085)),
            pod,
        })
    }
}

impl ControlPlane {
    /// Kills the control plane (SIGKILL, as a crash) and starts the same command in the same pod
    /// (same address, same store), waiting until the new run listens.
    pub async fn restart(&mut self) -> Result<(), Error> {
        let listening = |out: String| {
            out.lines()
                .filter(|l| l.contains(r#""event":"listening""#))
                .count()
        };
        let before = listening(self.proc.stdout());
        self.proc.restart_drained(STARTUP).await?;
        // Polled: a line wait would see the killed run's end of output and give up.
        let deadline = std::time::Instant::now() + STARTUP;
        while listening(self.proc.stdout()) <= before {
            if std::time::Instant::now() > deadline {
                return Err(Error::Other(format!(
                    "weft control did not listen again within {STARTUP:?}\n--- stderr\n{}",
                    self.proc.stderr()
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }
}

/// One `weft run` on a node: the process, and the pod namespace it made.
pub struct Workload {
    pub name: String,
    pub ip: Ipv4Addr,
    pub proc: Proc,
}

impl Workload {
    /// Runs `weft run --name NAME --control ... --pod-ip ... FLAGS -- CMD` in node `node`'s
    /// namespace and waits until it reports the workload running (registered).
    #[allow(clippy::too_many_arguments)]
    pub async fn start(
        cluster: &Cluster,
        node: usize,
        weft: &Path,
        proxy: &Path,
        control: &ControlPlane,
        name: &str,
        flags: &[&str],
        cmd: &[&str],
    ) -> Result<Workload, Error> {
        let n = cluster.node(node);
        let ip = n.alloc_ip()?;
        let mut argv: Vec<String> = vec![
            "run".into(),
            "--name".into(),
            name.into(),
            "--control".into(),
            control.grpc.to_string(),
            "--pod-ip".into(),
            ip.to_string(),
        ];
        argv.extend(flags.iter().map(|s| s.to_string()));
        argv.push("--".into());
        argv.extend(cmd.iter().map(|s| s.to_string()));
        let (weft, proxy): (PathBuf, PathBuf) = (weft.into(), proxy.into());
        // SIGTERM if the test dies: `weft run` then tears its pod down itself.
        let proc = Proc::spawn(
            &format!("weft run {name}"),
            n.netns(),
            None,
            libc::SIGTERM,
            move || {
                let mut cmd = Command::new(&weft);
                cmd.args(&argv).env(ENV_WEFT_PROXY_BIN, &proxy);
                cmd
            },
        )?;
        proc.wait_stderr_line(STARTUP, |l| {
            l.starts_with("weft run:") && l.contains(" runs in network namespace")
        })
        .await?;
        Ok(Workload {
            name: name.to_string(),
            ip,
            proc,
        })
    }

    /// The pod's namespace name (`weft-run-<name>-<pid>`).
    pub fn netns(&self) -> Result<String, Error> {
        let pid = self
            .proc
            .pid()
            .ok_or_else(|| Error::Other(format!("{} is not running", self.name)))?;
        Ok(format!("weft-run-{}-{pid}", self.name))
    }

    /// Runs `args` in the pod; see [`exec`].
    pub async fn exec(&self, args: &[&str]) -> Result<Output, Error> {
        exec(&self.netns()?, args).await
    }

    /// The proxy's `/metrics`; see [`admin_get`].
    pub async fn metrics(&self) -> Result<String, Error> {
        admin_get(&self.netns()?, "/metrics").await
    }
}

/// Runs `args` in the namespace `netns` with `ip netns exec` (so its hosts file applies),
/// without any proxy variables: what an unmodified program in a pod does. Returns exit success,
/// stdout and stderr.
pub async fn exec(netns: &str, args: &[&str]) -> Result<Output, Error> {
    let mut cmd = tokio::process::Command::new("ip");
    cmd.args(["netns", "exec", netns])
        .args(args)
        .kill_on_drop(true);
    for var in [
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
    ] {
        cmd.env_remove(var);
    }
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .map_err(|_| Error::Other(format!("{args:?} in {netns} did not finish")))?
        .map_err(|e| Error::io(format!("running {args:?} in {netns}"), e))?;
    Ok(Output {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// `GET path` from the admin server of the proxy in `netns` (on [`ADMIN`], the conventional
/// port, as `weft run` starts it), fetched with curl inside the namespace: the body of a 2xx
/// answer, an error otherwise (so `/ready` is `Ok` only once the proxy is ready).
pub async fn admin_get(netns: &str, path: &str) -> Result<String, Error> {
    let url = format!("http://{ADMIN}{path}");
    let out = exec(netns, &["curl", "-sS", "--fail", "--max-time", "5", &url]).await?;
    if !out.success {
        return Err(Error::Other(format!(
            "GET {url} in {netns}: {}",
            out.stderr
        )));
    }
    Ok(out.stdout)
}

/// What a command in a pod did.
#[derive(Debug, Clone)]
pub struct Output {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Sums the samples of `name` (exact metric name) whose label set contains every pair (exact
/// values).
pub use weft_sys::prometheus::sum as metric_sum;

/// The namespace a workload's pod is in, as a testbed handle is not available for it (the pod
/// belongs to `weft run`); for `ip netns exec`.
pub fn netns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

impl Netns {
    /// Whether this namespace still has a name.
    pub fn exists(&self) -> bool {
        netns_exists(self.name())
    }
}
