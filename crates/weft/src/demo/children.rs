//! Child processes of `weft demo`: how they are started so that none outlives the demo
//! (`kill_on_drop`, and `PR_SET_PDEATHSIG` for when the demo itself is killed), how a reserved
//! listening socket is handed to an application, and how a proxy's listening line is read.

use std::net::SocketAddr;
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

/// The descriptor number an inherited listener gets in the child (`--listen-fd 3`).
pub const LISTEN_FD: i32 = 3;

/// How long a child may take to print its listening line.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(15);

/// A command that dies with the demo: killed when its handle drops, and sent SIGKILL by the kernel
/// if the demo process dies first. If `listener` is given it becomes descriptor [`LISTEN_FD`] in
/// the child.
pub fn command(program: &Path, listener: Option<&std::net::TcpListener>) -> Command {
    command_in(program, listener, None, None)
}

/// [`command`], started inside the network namespace open as `netns` and as `uid` when given
/// (`weft run`'s sidecar in its pod).
pub fn command_in(
    program: &Path,
    listener: Option<&std::net::TcpListener>,
    netns: Option<std::os::fd::RawFd>,
    uid: Option<u32>,
) -> Command {
    let mut command = Command::new(program);
    command.kill_on_drop(true).stdin(Stdio::null());
    // The death signal follows the thread that forked, which is a runtime worker thread; those
    // live as long as the demo's runtime.
    weft_sys::on_exec(
        command.as_std_mut(),
        weft_sys::ChildSetup {
            netns,
            uid,
            death_signal: libc::SIGKILL,
        },
    );
    if let Some(fd) = listener.map(|l| l.as_raw_fd()) {
        // SAFETY: the closure runs between fork and exec and only makes async-signal-safe
        // calls (dup2, fcntl); it allocates nothing.
        unsafe {
            command.pre_exec(move || {
                if fd == LISTEN_FD {
                    // Already in place: only the close-on-exec flag must go.
                    let flags = libc::fcntl(fd, libc::F_GETFD);
                    if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                } else if libc::dup2(fd, LISTEN_FD) < 0 {
                    // dup2 leaves the new descriptor without close-on-exec.
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    command
}

/// `weft`'s own variable (not one the proxy reads): the `weft-proxy` binary `weft run` and
/// `weft demo` start. Documented in docs/cli.md.
pub const ENV_PROXY_BIN: &str = "WEFT_PROXY_BIN";

/// Where the `weft-proxy` binary is: [`ENV_PROXY_BIN`], else beside the running executable (or
/// one directory up, for test binaries under `target/*/deps`).
pub fn proxy_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os(ENV_PROXY_BIN) {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().context("locating the weft executable")?;
    let dir = exe.parent().context("weft executable has no directory")?;
    let candidates = [
        dir.join("weft-proxy"),
        dir.parent()
            .map(|d| d.join("weft-proxy"))
            .unwrap_or_default(),
    ];
    candidates
        .into_iter()
        .find(|path| path.is_file())
        .with_context(|| {
            format!(
                "weft-proxy not found beside {} (build it with `cargo build -p weft-proxy`, or set {ENV_PROXY_BIN})",
                exe.display()
            )
        })
}

/// The line a proxy prints once it listens (documented in docs/proxy-config.md).
#[derive(Debug, Clone, Deserialize)]
pub struct ProxyListening {
    /// The inbound listener (a multicluster gateway's is its `mc-gateway` port).
    #[serde(default)]
    pub inbound: Option<SocketAddr>,
    pub outbound: SocketAddr,
    pub admin: SocketAddr,
    #[serde(default)]
    pub forward: Vec<Forward>,
    #[serde(default)]
    pub upstreams: Vec<Upstream>,
    /// The tap server, when the proxy runs one (an identity and a tap identity are set).
    #[serde(default)]
    pub tap: Option<SocketAddr>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Forward {
    pub app_port: u16,
    pub addr: SocketAddr,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Upstream {
    pub authority: String,
    pub addr: SocketAddr,
}

/// Parses one stdout line of a child; only `{"event":"listening",...}` counts.
pub fn parse_listening(line: &str) -> Option<ProxyListening> {
    let value: serde_json::Value = serde_json::from_str(line.trim()).ok()?;
    if value.get("event")?.as_str()? != "listening" {
        return None;
    }
    serde_json::from_value(value).ok()
}

/// Waits for `child` to print its listening line, then keeps draining its stdout so the child
/// never blocks on a full pipe.
pub async fn read_listening(child: &mut Child, what: &str) -> anyhow::Result<ProxyListening> {
    let stdout = child
        .stdout
        .take()
        .with_context(|| format!("{what}: stdout is not piped"))?;
    let mut lines = BufReader::new(stdout).lines();
    let found = tokio::time::timeout(STARTUP_TIMEOUT, async {
        while let Some(line) = lines.next_line().await? {
            if let Some(listening) = parse_listening(&line) {
                return Ok(Some(listening));
            }
        }
        Ok::<_, std::io::Error>(None)
    })
    .await
    .with_context(|| format!("{what} did not report listening within {STARTUP_TIMEOUT:?}"))?
    .with_context(|| format!("reading {what} stdout"))?
    .with_context(|| format!("{what} exited before listening (see its log above)"))?;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(found)
}

/// The demo's live table owns the terminal, so its proxies log only problems (`warn`) unless
/// the user chose a level with `WEFT_PROXY_LOG`: the variable to add to a sidecar, if any.
pub fn quiet_proxy_log() -> Option<(&'static str, &'static str)> {
    std::env::var_os(weft_proxy::config::ENV_LOG)
        .is_none()
        .then_some((weft_proxy::config::ENV_LOG, "warn"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_contract_listening_line() {
        let line = r#"{"event":"listening","inbound":"127.0.0.1:1","outbound":"127.0.0.1:2","admin":"127.0.0.1:3","forward":[{"app_port":8080,"addr":"127.0.0.1:4"}],"upstreams":[{"authority":"books.demo.svc.cluster.local:9090","addr":"127.0.0.1:5"}]}"#;
        let listening = parse_listening(line).expect("listening");
        assert_eq!(listening.admin.port(), 3);
        assert_eq!(listening.inbound.map(|a| a.port()), Some(1));
        assert_eq!(listening.forward[0].app_port, 8080);
        assert_eq!(listening.forward[0].addr.port(), 4);
        assert_eq!(listening.upstreams[0].addr.port(), 5);
    }

    #[test]
    fn ignores_other_lines() {
        assert!(parse_listening("starting").is_none());
        assert!(parse_listening(r#"{"event":"ready"}"#).is_none());
    }

    #[tokio::test]
    async fn listener_is_inherited_as_fd_3() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let ours = std::fs::read_link(format!("/proc/self/fd/{}", listener.as_raw_fd()))
            .expect("our socket");
        let output = command(Path::new("/bin/sh"), Some(&listener))
            .args(["-c", "readlink /proc/self/fd/3"])
            .output()
            .await
            .expect("run sh");
        let theirs = String::from_utf8_lossy(&output.stdout);
        assert_eq!(theirs.trim(), ours.to_string_lossy());
    }
}
