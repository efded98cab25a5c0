//! The pod `weft run` makes: a network namespace with a veth to the current one, an address and
//! routes inside 198.18.0.0/15, and a hosts file for `ip netns exec` to bind-mount. Everything is
//! removed when the [`Pod`] drops (also while unwinding), and pods left behind by a `weft run`
//! that was killed are swept by the next one.
//!
//! Routing is point-to-point, as Calico does it: the pod has `IP/32` and reaches everything in
//! 198.18.0.0/15 through a gateway address that the host side of its veth carries (the same
//! gateway on every veth), and the host routes `IP/32` to the veth. Pods on one host reach each
//! other through the host's forwarding.
//!
//! The "host" is the namespace `weft run` runs in, or a namespace given by name
//! ([`Pod::create_in`]: `weft demo --cluster` puts all its pods behind one "node" namespace of
//! its own, so nothing is added to the real host's namespace).

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _};

/// Prefix of every pod namespace: `weft-run-<name>-<pid>`.
pub const NETNS_PREFIX: &str = "weft-run-";

/// Runs a command to completion, failing with its output.
pub fn sh(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The pod's addressing.
#[derive(Debug, Clone, Copy)]
pub struct Addressing {
    pub ip: Ipv4Addr,
    pub gateway: Ipv4Addr,
}

impl Addressing {
    /// The default for a pid: 198.18.128.0/17 (the lower half is left to test clusters), one
    /// address per pid modulo the range, gateway 198.18.128.1. A clash (two pids 32 768 apart)
    /// shows up as an existing route and is reported; `--pod-ip` picks another address.
    pub fn for_pid(pid: u32) -> Addressing {
        let mut offset = pid % 32_768;
        // Not .0 or .255 of a /24, not the gateway: move to .2 or .254 of the same /24.
        if offset < 2 || matches!(offset % 256, 0 | 255) {
            offset = (offset | 2) & !1;
        }
        let base = u32::from(Ipv4Addr::new(198, 18, 128, 0));
        Addressing {
            ip: Ipv4Addr::from(base + offset),
            gateway: Ipv4Addr::new(198, 18, 128, 1),
        }
    }
}

/// A pod namespace and its veth. Dropping it deletes both and the hosts file.
pub struct Pod {
    pub netns: String,
    pub host_link: String,
    /// The namespace holding the host side of the veth; `None` = the current one.
    pub host_netns: Option<String>,
    pub addressing: Addressing,
    fd: File,
    etc_dir: PathBuf,
}

/// The name of a pod namespace: `weft-run-<name>-<pid>` (what [`sweep_stale`] recognises).
pub fn netns_name(name: &str) -> String {
    let short: String = name.chars().take(40).collect();
    format!("{NETNS_PREFIX}{short}-{}", std::process::id())
}

impl Pod {
    /// Creates the namespace `weft-run-<name>-<pid>` with its veth, address and routes; the host
    /// side of the veth is `wr<pid>` in the current namespace.
    pub fn create(name: &str, addressing: Addressing) -> anyhow::Result<Pod> {
        let host_link = format!("wr{}", std::process::id());
        Pod::build(name, addressing, None, host_link)
    }

    /// Like [`Pod::create`], but the host side of the veth is `host_link` in the existing
    /// namespace `host_netns` (several pods share one such "node").
    pub fn create_in(
        name: &str,
        addressing: Addressing,
        host_netns: &str,
        host_link: &str,
    ) -> anyhow::Result<Pod> {
        Pod::build(
            name,
            addressing,
            Some(host_netns.to_string()),
            host_link.to_string(),
        )
    }

    fn build(
        name: &str,
        addressing: Addressing,
        host_netns: Option<String>,
        host_link: String,
    ) -> anyhow::Result<Pod> {
        sweep_stale();
        let netns = netns_name(name);
        sh("ip", &["netns", "add", &netns])?;
        let fd = match File::open(format!("/run/netns/{netns}")) {
            Ok(fd) => fd,
            Err(e) => {
                let _ = sh("ip", &["netns", "del", &netns]);
                return Err(e).with_context(|| format!("opening /run/netns/{netns}"));
            }
        };
        let pod = Pod {
            etc_dir: PathBuf::from("/etc/netns").join(&netns),
            netns,
            host_link,
            host_netns,
            addressing,
            fd,
        };
        pod.wire().context("wiring the pod's network")?;
        Ok(pod)
    }

    /// `ip ARGS` in the host side's namespace.
    fn host_ip(&self, args: &[&str]) -> anyhow::Result<String> {
        host_ip(self.host_netns.as_deref(), args)
    }

    fn wire(&self) -> anyhow::Result<()> {
        let (ns, link) = (self.netns.as_str(), self.host_link.as_str());
        let ip = self.addressing.ip.to_string();
        let gw = self.addressing.gateway.to_string();
        sh("ip", &["-n", ns, "link", "set", "lo", "up"])?;
        self.host_ip(&[
            "link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", ns,
        ])?;
        // Another address on the same gateway is fine; an existing route to our IP is not.
        let taken = self.host_ip(&["route", "show", "exact", &format!("{ip}/32")])?;
        if !taken.trim().is_empty() {
            bail!(
                "pod address {ip} is taken ({}); pass another with --pod-ip",
                taken.trim()
            );
        }
        self.host_ip(&["addr", "add", &format!("{gw}/32"), "dev", link])?;
        self.host_ip(&["link", "set", link, "up"])?;
        self.host_ip(&["route", "add", &format!("{ip}/32"), "dev", link])?;
        sh(
            "ip",
            &["-n", ns, "addr", "add", &format!("{ip}/32"), "dev", "eth0"],
        )?;
        sh("ip", &["-n", ns, "link", "set", "eth0", "up"])?;
        sh(
            "ip",
            &[
                "-n", ns, "route", "add", &gw, "dev", "eth0", "scope", "link",
            ],
        )?;
        sh(
            "ip",
            &[
                "-n",
                ns,
                "route",
                "add",
                "198.18.0.0/15",
                "via",
                &gw,
                "dev",
                "eth0",
            ],
        )?;
        Ok(())
    }

    /// Writes the pod's `/etc/hosts` (bind-mounted by `ip netns exec`). Rewritten in place, so
    /// processes already running see updates.
    pub fn write_hosts(&self, contents: &str) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.etc_dir)
            .with_context(|| format!("creating {}", self.etc_dir.display()))?;
        let path = self.etc_dir.join("hosts");
        std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))
    }

    /// The namespace file descriptor (for `setns`), open as long as the pod lives.
    pub fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    /// A TCP listener bound inside the pod.
    pub fn bind(&self, addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
        let listener = self.on_thread(|| {
            let l = std::net::TcpListener::bind(addr)?;
            l.set_nonblocking(true)?;
            Ok(l)
        })?;
        tokio::net::TcpListener::from_std(listener)
    }

    /// A TCP connection to `addr` made inside the pod (given up after 200 ms).
    pub async fn connect(&self, addr: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
        // Only the socket is made on the namespace's thread; the connect is awaited, so a slow
        // answer does not block the runtime.
        let socket = self.on_thread(tokio::net::TcpSocket::new_v4)?;
        tokio::time::timeout(Duration::from_millis(200), socket.connect(addr))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
    }

    /// Runs `f` on a thread that has entered the pod's namespace (sockets made there stay in
    /// the pod).
    pub fn on_thread<T: Send>(
        &self,
        f: impl FnOnce() -> std::io::Result<T> + Send,
    ) -> std::io::Result<T> {
        weft_sys::in_netns(self.raw_fd(), f)
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        remove(
            &self.netns,
            self.host_netns.as_deref(),
            Some(&self.host_link),
        );
    }
}

/// `ip ARGS`, in namespace `netns` when given.
fn host_ip(netns: Option<&str>, args: &[&str]) -> anyhow::Result<String> {
    match netns {
        Some(ns) => {
            let mut all = vec!["-n", ns];
            all.extend_from_slice(args);
            sh("ip", &all)
        }
        None => sh("ip", args),
    }
}

/// Deletes a namespace made by this module (a pod, or the node of `weft demo --cluster`), the
/// host side of its veth, its `/etc/netns` directory and its state directory (the sidecar's
/// identity files, [`super::identity`]).
pub fn remove(netns: &str, host_netns: Option<&str>, host_link: Option<&str>) {
    // Deleting the namespace destroys the veth pair with it; the explicit delete covers a
    // namespace that processes still hold open.
    if let Err(e) = sh("ip", &["netns", "del", netns]) {
        say!("weft run: cleanup: {e:#}");
    }
    if let Some(link) = host_link {
        // The host side may already be gone with the pair (or with its namespace).
        let _ = host_ip(host_netns, &["link", "del", link]);
    }
    for dir in [
        PathBuf::from("/etc/netns").join(netns),
        super::identity::state_dir(netns),
    ] {
        if dir.exists() {
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                say!("weft run: cleanup: removing {}: {e}", dir.display());
            }
        }
    }
}

/// Removes pods whose `weft run` is gone (killed before it could clean up).
pub fn sweep_stale() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = stale_pid(&name) else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            say!("weft run: removing pod {name} left by process {pid}");
            remove(&name, None, Some(&format!("wr{pid}")));
        }
    }
}

/// The pid in `weft-run-<name>-<pid>`.
fn stale_pid(netns: &str) -> Option<u32> {
    let rest = netns.strip_prefix(NETNS_PREFIX)?;
    rest.rsplit_once('-')?.1.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_addresses_stay_in_the_upper_half_and_avoid_the_gateway() {
        for pid in [
            0, 1, 2, 255, 256, 32_767, 32_768, 32_769, 4_194_303, 123_456,
        ] {
            let a = Addressing::for_pid(pid);
            let o = a.ip.octets();
            assert_eq!((o[0], o[1]), (198, 18), "{pid}");
            assert!(o[2] >= 128, "{pid}: {}", a.ip);
            assert_ne!(a.ip, a.gateway, "{pid}");
            assert!(o[3] != 0 && o[3] != 255, "{pid}: {}", a.ip);
        }
    }

    #[test]
    fn stale_pods_are_recognised_by_name() {
        assert_eq!(stale_pid("weft-run-web-1-1234"), Some(1234));
        assert_eq!(stale_pid("weft-e2e-99-tp"), None);
        assert_eq!(stale_pid("other-1"), None);
    }
}
