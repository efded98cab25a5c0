//! One named network namespace (`ip netns add`): commands run in it, children started in it, and
//! sockets opened from it. Deleted on drop.

use std::fs::File;
use std::net::SocketAddr;
use std::os::fd::AsRawFd as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::Error;

/// Runs a setup command to completion; its combined output, or an error naming it.
pub fn run(program: &str, args: &[&str]) -> Result<String, Error> {
    let out = std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| Error::io(format!("running {program}"), e))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(Error::Command {
            command: format!("{program} {}", args.join(" ")),
            status: out.status.to_string(),
            output: text.trim().to_string(),
        })
    }
}

/// Unique names: `wt<pid>x<counter><suffix>`.
static COUNTER: AtomicUsize = AtomicUsize::new(0);

pub(crate) fn unique_prefix() -> String {
    format!(
        "wt{}x{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Deletes namespaces named `wt<pid>x...` whose process is gone (a test that was killed could
/// not run its destructors).
pub(crate) fn sweep_stale() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("wt")
            .and_then(|rest| rest.split('x').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("testbed: removing stale namespace {name} (process {pid} is gone)");
            let _ = run("ip", &["netns", "del", &name]);
        }
    }
}

/// A network namespace this test owns. Dropping it deletes it; processes still inside keep it
/// alive (unnamed) until they exit, so kill them first ([`crate::Proc`] does on drop).
#[derive(Debug)]
pub struct Netns {
    name: String,
    fd: File,
}

impl Netns {
    /// Creates the namespace `name` with loopback up.
    pub fn create(name: &str) -> Result<Netns, Error> {
        if name.len() > 64 || name.contains('/') {
            return Err(Error::Other(format!("bad namespace name {name:?}")));
        }
        run("ip", &["netns", "add", name])?;
        let fd = match File::open(format!("/run/netns/{name}")) {
            Ok(fd) => fd,
            Err(e) => {
                let _ = run("ip", &["netns", "del", name]);
                return Err(Error::io(format!("opening namespace {name}"), e));
            }
        };
        let ns = Netns {
            name: name.to_string(),
            fd,
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n NAME ARGS...`
    pub fn ip(&self, args: &[&str]) -> Result<String, Error> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// Runs a command inside the namespace to completion (`ip netns exec`, so the files in
    /// `/etc/netns/NAME/` are bind-mounted over `/etc` for it).
    pub fn exec(&self, args: &[&str]) -> Result<String, Error> {
        let mut full = vec!["netns", "exec", self.name.as_str()];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// Sets a sysctl of this namespace (`net.*` sysctls are per namespace).
    pub fn sysctl(&self, key: &str, value: &str) -> Result<(), Error> {
        self.exec(&["sysctl", "-q", "-w", &format!("{key}={value}")])
            .map(drop)
    }

    /// A second descriptor of this namespace (for holders that must not keep its name, like
    /// [`crate::Proc`]); it keeps the namespace itself alive while open.
    pub(crate) fn dup_fd(&self) -> std::io::Result<File> {
        self.fd.try_clone()
    }

    /// Makes `cmd` start inside this namespace: `setns(2)` before exec, as `uid` (and gid =
    /// uid, no groups) when given, and with `death_signal` sent to it when the thread that
    /// spawned it dies (set after the uid change, which clears it).
    pub fn enter_on_exec(
        &self,
        cmd: &mut std::process::Command,
        uid: Option<u32>,
        death_signal: i32,
    ) {
        weft_sys::on_exec(
            cmd,
            weft_sys::ChildSetup {
                netns: Some(self.fd.as_raw_fd()),
                uid,
                death_signal,
            },
        );
    }

    /// Runs `f` on a fresh thread that has entered this namespace (a socket keeps the
    /// namespace it was created in, so sockets made there can be used from anywhere).
    pub fn on_thread<T: Send>(
        &self,
        f: impl FnOnce() -> std::io::Result<T> + Send,
    ) -> std::io::Result<T> {
        weft_sys::in_netns(self.fd.as_raw_fd(), f)
    }

    /// A TCP listener bound inside the namespace.
    pub fn bind(&self, addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
        let listener = self.on_thread(|| {
            let l = std::net::TcpListener::bind(addr)?;
            l.set_nonblocking(true)?;
            Ok(l)
        })?;
        tokio::net::TcpListener::from_std(listener)
    }

    /// A TCP connection made from inside the namespace.
    pub fn connect(
        &self,
        addr: SocketAddr,
        timeout: Duration,
    ) -> std::io::Result<tokio::net::TcpStream> {
        let stream = self.on_thread(|| {
            let s = std::net::TcpStream::connect_timeout(&addr, timeout)?;
            s.set_nonblocking(true)?;
            Ok(s)
        })?;
        tokio::net::TcpStream::from_std(stream)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = run("ip", &["netns", "del", &self.name]) {
            eprintln!("testbed cleanup: {e}");
        }
    }
}

/// A handle on a namespace another program named (a `weft run` pod's, `/run/netns/NAME`):
/// sockets made in it are the pod's own (its iptables rules and sidecar apply to them). Dropping
/// it only closes the handle; the namespace stays its owner's.
#[derive(Debug)]
pub struct NamedNetns {
    name: String,
    fd: File,
}

impl NamedNetns {
    pub fn open(name: &str) -> Result<NamedNetns, Error> {
        let fd = File::open(format!("/run/netns/{name}"))
            .map_err(|e| Error::io(format!("opening namespace {name}"), e))?;
        Ok(NamedNetns {
            name: name.to_string(),
            fd,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A TCP listener bound inside the namespace.
    pub fn bind(&self, addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
        let listener = weft_sys::in_netns(self.fd.as_raw_fd(), || {
            let l = std::net::TcpListener::bind(addr)?;
            l.set_nonblocking(true)?;
            Ok(l)
        })?;
        tokio::net::TcpListener::from_std(listener)
    }

    /// A TCP connection made from inside the namespace (non-blocking: no thread waits on it),
    /// with `TCP_NODELAY`.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        timeout: Duration,
    ) -> std::io::Result<tokio::net::TcpStream> {
        let socket = weft_sys::in_netns(self.fd.as_raw_fd(), tokio::net::TcpSocket::new_v4)?;
        let stream = tokio::time::timeout(timeout, socket.connect(addr))
            .await
            .map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("connecting to {addr} timed out after {timeout:?}"),
                )
            })??;
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}
