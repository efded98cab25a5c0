//! `weft demo --prometheus`: a real Prometheus (the `prometheus` binary on `PATH`, Debian's
//! package) scraping the demo's proxies through the targets file its control plane writes
//! (`--prometheus-sd-file`), every [`SCRAPE_INTERVAL`]; the control plane answers `weft stat`
//! from it (`--prometheus-url`). Its configuration, data and log live in a temporary directory
//! removed with the demo; the process dies with the demo.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use tokio::process::Child;
use tokio::time::Instant;

use super::children;
use super::http;
use super::TempDir;

/// How often the demo's Prometheus scrapes each proxy (and re-reads the targets file).
pub const SCRAPE_INTERVAL: Duration = Duration::from_secs(2);
/// Where `--prometheus` listens unless `--prometheus-addr` says otherwise.
pub const DEFAULT_ADDR: &str = "127.0.0.1:9090";
/// How long Prometheus may take to answer `/-/ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The scrape configuration: one job reading the control plane's targets file.
pub fn config_yaml(targets_file: &Path) -> String {
    let secs = SCRAPE_INTERVAL.as_secs();
    format!(
        "# Written by `weft demo --prometheus`.\n\
         global:\n  scrape_interval: {secs}s\n  scrape_timeout: {secs}s\n  evaluation_interval: {secs}s\n\
         scrape_configs:\n\
         \x20 - job_name: weft-proxy\n\
         \x20   file_sd_configs:\n\
         \x20     - files: [{targets:?}]\n\
         \x20       refresh_interval: {secs}s\n",
        targets = targets_file.display().to_string(),
    )
}

/// The `prometheus` program: the first on `PATH` (then `/usr/bin`).
pub fn binary() -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .map(|dir| dir.join("prometheus"))
        .find(|p| p.is_file())
        .context(
            "weft demo --prometheus needs the prometheus program and there is none on PATH \
             (Debian/Ubuntu: apt-get install prometheus)",
        )
}

/// `addr` if nothing listens there, or for port 0 a free port of its IP (Prometheus prints the
/// address it was given, not the one it bound, so the demo picks it). A taken address is an
/// error here: the demo's readiness check would otherwise take whatever answers there (another
/// Prometheus, typically on 9090) for its own.
pub fn listen_addr(addr: SocketAddr) -> anyhow::Result<SocketAddr> {
    let probe = std::net::TcpListener::bind(addr).with_context(|| match addr.port() {
        0 => format!("finding a free port on {}", addr.ip()),
        _ => format!(
            "--prometheus-addr {addr} is not free (another Prometheus?): pick another address, \
             or port 0 for any free one"
        ),
    })?;
    Ok(probe.local_addr()?)
}

/// What `--prometheus` settles before the control plane starts: that the program exists, where
/// Prometheus will listen, and where the control plane keeps the targets file. Its directory is
/// apart from the store (the control plane reads every YAML file under the store,
/// prometheus.yml included) and removed with the plan.
pub struct Plan {
    dir: TempDir,
    addr: SocketAddr,
}

impl Plan {
    /// `addr` is `--prometheus-addr` (port 0: a free port, see [`listen_addr`]).
    pub fn new(addr: SocketAddr) -> anyhow::Result<Plan> {
        // A missing program is reported before anything starts.
        binary()?;
        Ok(Plan {
            addr: listen_addr(addr)?,
            dir: TempDir::create()?,
        })
    }

    pub fn targets_file(&self) -> PathBuf {
        self.dir.0.join("targets.json")
    }

    /// The control plane's `--prometheus-url`.
    pub fn url(&self) -> anyhow::Result<weft_control::telemetry::prometheus::Prometheus> {
        format!("http://{}", self.addr)
            .parse()
            .map_err(|e: String| anyhow::anyhow!(e))
    }

    /// Starts Prometheus and says where it is.
    pub async fn start(&self) -> anyhow::Result<Prometheus> {
        let targets = self.targets_file();
        let p = Prometheus::start(&self.dir.0, self.addr, &targets)
            .await
            .context("starting prometheus")?;
        eprintln!(
            "weft demo: Prometheus on {} (scraping every {}s the targets in {}; log {}); \
             weft stat answers from it",
            p.url(),
            SCRAPE_INTERVAL.as_secs(),
            targets.display(),
            p.log.display()
        );
        Ok(p)
    }
}

/// A running Prometheus.
pub struct Prometheus {
    child: Child,
    pub addr: SocketAddr,
    /// Its log (stdout and stderr).
    pub log: PathBuf,
}

impl Prometheus {
    /// Starts Prometheus on `addr` with its files in `dir`, reading `targets_file`, and waits
    /// until it is ready.
    pub async fn start(dir: &Path, addr: SocketAddr, targets_file: &Path) -> anyhow::Result<Self> {
        let program = binary()?;
        let config = dir.join("prometheus.yml");
        std::fs::write(&config, config_yaml(targets_file))
            .with_context(|| format!("writing {}", config.display()))?;
        let log = dir.join("prometheus.log");
        let log_file =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut command = children::command(&program, None);
        command
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::from(log_file.try_clone()?))
            .stderr(Stdio::from(log_file));
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let mut prometheus = Prometheus { child, addr, log };
        prometheus.wait_ready().await?;
        Ok(prometheus)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!(
                    "prometheus exited ({status}) before it was ready:\n{}",
                    self.log_tail()
                );
            }
            if let Ok(response) = http::get(self.addr, "/-/ready").await {
                if response.status().is_success() {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                anyhow::bail!(
                    "prometheus on {} is not ready after {READY_TIMEOUT:?}:\n{}",
                    self.addr,
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The end of its log, for error messages.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }

    /// SIGTERM (Prometheus closes its storage), then SIGKILL if it lingers.
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id().and_then(|p| i32::try_from(p).ok()) {
            // SAFETY: kill has no memory-safety preconditions; the pid is our own child's,
            // not yet reaped.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.start_kill();
            let _ = self.child.wait().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_scrapes_the_targets_file_every_2s() {
        let yaml = config_yaml(Path::new("/tmp/weft-demo/targets.json"));
        assert_eq!(
            yaml,
            "# Written by `weft demo --prometheus`.\n\
             global:\n  scrape_interval: 2s\n  scrape_timeout: 2s\n  evaluation_interval: 2s\n\
             scrape_configs:\n  - job_name: weft-proxy\n    file_sd_configs:\n      \
             - files: [\"/tmp/weft-demo/targets.json\"]\n        refresh_interval: 2s\n"
        );
    }

    #[test]
    fn port_0_becomes_a_free_port_and_a_taken_one_is_refused() {
        let picked = listen_addr("127.0.0.1:0".parse().expect("addr")).expect("picked");
        assert_ne!(picked.port(), 0);
        assert_eq!(listen_addr(picked).expect("still free"), picked);
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = taken.local_addr().expect("addr");
        let error = format!("{:#}", listen_addr(addr).expect_err("taken"));
        assert!(
            error.contains("is not free (another Prometheus?)"),
            "{error}"
        );
    }
}
