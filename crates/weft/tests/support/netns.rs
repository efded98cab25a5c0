//! Network namespaces for root-only tests: a namespace this test owns (deleted on drop, which
//! also runs while a panic unwinds), children started inside it (optionally under another uid,
//! as a mesh's proxy runs), and sockets bound or connected from inside it by a helper thread
//! that `setns(2)`s itself in (a socket keeps the namespace it was created in).

use std::fs::File;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::Duration;

use tokio::process::Command;

use super::clients::{Reply, H1};
use super::BoxError;

pub struct Netns {
    pub name: String,
    fd: File,
}

/// Runs a setup command, returning its combined output or an error naming it.
pub fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program} {args:?}: {e}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!(
            "{program} {args:?} failed ({}): {text}",
            out.status
        ))
    }
}

/// Deletes namespaces left by earlier runs of these tests whose process is gone.
fn sweep_stale() {
    let Ok(entries) = std::fs::read_dir("/var/run/netns") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("weft-e2e-") else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = run("ip", &["netns", "del", &name]);
        }
    }
}

impl Netns {
    /// Creates `weft-e2e-<pid>-<hint>` with loopback up.
    pub fn create(hint: &str) -> Result<Netns, String> {
        sweep_stale();
        let name = format!("weft-e2e-{}-{hint}", std::process::id());
        let _ = run("ip", &["netns", "del", &name]);
        run("ip", &["netns", "add", &name])?;
        let fd = match File::open(format!("/var/run/netns/{name}")) {
            Ok(fd) => fd,
            Err(e) => {
                let _ = run("ip", &["netns", "del", &name]);
                return Err(format!("open netns {name}: {e}"));
            }
        };
        let ns = Netns { name, fd };
        ns.exec(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Runs a setup command inside the namespace.
    pub fn exec(&self, args: &[&str]) -> Result<String, String> {
        let mut full = vec!["netns", "exec", self.name.as_str()];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// Makes `cmd` start inside this namespace, as `uid`/`gid` when given, with
    /// `PR_SET_PDEATHSIG` set after the uid change (a uid change clears it).
    pub fn enter_on_exec(&self, cmd: &mut Command, uid: Option<u32>) {
        let fd = self.fd.as_raw_fd();
        // SAFETY: only async-signal-safe syscalls (setns, setgroups, setgid, setuid, prctl) run
        // between fork and exec; `fd` stays open in the parent until spawn returns.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if let Some(uid) = uid {
                    if libc::setgroups(0, std::ptr::null()) != 0
                        || libc::setgid(uid) != 0
                        || libc::setuid(uid) != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }

    /// Runs `f` on a fresh thread that has entered this namespace.
    fn on_thread<T: Send>(
        &self,
        f: impl FnOnce() -> std::io::Result<T> + Send,
    ) -> std::io::Result<T> {
        let fd = self.fd.as_raw_fd();
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    // SAFETY: setns on this thread only; fd is a valid open netns file.
                    if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    f()
                })
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("netns thread panicked")))
        })
    }

    /// A listener bound inside the namespace.
    pub fn bind(&self, addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
        let std_listener = self.on_thread(|| {
            let l = std::net::TcpListener::bind(addr)?;
            l.set_nonblocking(true)?;
            Ok(l)
        })?;
        tokio::net::TcpListener::from_std(std_listener)
    }

    /// A connection made from inside the namespace.
    pub fn connect(&self, addr: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
        let std_stream = self.on_thread(|| {
            let s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
            s.set_nonblocking(true)?;
            Ok(s)
        })?;
        tokio::net::TcpStream::from_std(std_stream)
    }

    /// `GET path` to an address inside the namespace.
    pub async fn http_get(&self, addr: SocketAddr, path: &str) -> Result<Reply, BoxError> {
        let stream = self.connect(addr)?;
        let mut conn = H1::handshake(stream).await?;
        let req = hyper::Request::builder()
            .uri(path)
            .header("host", addr.to_string())
            .body(super::clients::empty())?;
        Reply::read(conn.send(req).await?).await
    }

    /// Polls `GET path` inside the namespace until 200.
    pub async fn wait_http_ok(
        &self,
        addr: SocketAddr,
        path: &str,
        timeout: Duration,
    ) -> Result<(), String> {
        let deadline = std::time::Instant::now() + timeout;
        let mut last = String::new();
        while std::time::Instant::now() < deadline {
            match self.http_get(addr, path).await {
                Ok(reply) if reply.status == 200 => return Ok(()),
                Ok(reply) => last = reply.describe(),
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!("{addr}{path} in {} not ready: {last}", self.name))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = run("ip", &["netns", "del", &self.name]) {
            eprintln!("cleanup: {e}");
        }
    }
}
