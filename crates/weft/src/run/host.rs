//! What pod-to-pod traffic needs from the host (the network namespace `weft run` runs in), checked
//! before anything is started: IP forwarding on, a FORWARD chain that lets the pods' range
//! through, and reverse-path filtering that accepts the pods' packets. Without them every
//! meshed connection between pods would hang until the proxy's connect timeout.
//!
//! With `--host-forwarding on` (the default) `weft run` turns the missing pieces on itself and
//! records what it changed; with `off` it fails at once with the exact command to run. Several
//! `weft run`s share one host: each one holds a file under the host's state directory while it
//! runs, and the last one to leave undoes the recorded changes (under a lock, so two exiting at
//! once do not both undo, or undo under a third that is starting).

use std::fs::File;
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};

use super::pod::sh;

/// The range pods live in and route to (see [`super::pod`]).
pub const POD_RANGE: &str = "198.18.0.0/15";
const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// `--host-forwarding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HostForwarding {
    /// Turn on what is missing, and undo it when the last `weft run` here exits.
    On,
    /// Change nothing; fail with the command to run when something is missing.
    Off,
}

/// What `weft run` changed on this host, to undo when the last user leaves.
#[derive(Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Changes {
    /// `net.ipv4.ip_forward` was this before `weft run` set it to 1.
    ip_forward_was: Option<String>,
    /// The FORWARD rule was inserted with this iptables binary.
    forward_rule: Option<String>,
}

/// The FORWARD rule that lets pods reach each other.
fn forward_rule() -> [&'static str; 6] {
    ["-s", POD_RANGE, "-d", POD_RANGE, "-j", "ACCEPT"]
}

fn shell(bin: &str, op: &str, rule: &[&str]) -> String {
    let mut cmd = format!("{bin} {op} FORWARD");
    if op == "-I" {
        cmd.push_str(" 1");
    }
    for arg in rule {
        cmd.push(' ');
        cmd.push_str(arg);
    }
    cmd
}

/// This host's share in the forwarding setup; dropping it leaves (and undoes the changes if it
/// was the last).
pub struct HostUse {
    dir: PathBuf,
    me: PathBuf,
}

/// The host's state directory: one per network namespace (the namespace's inode), so a `weft
/// run` in another namespace standing in for another host counts separately.
fn state_dir() -> anyhow::Result<PathBuf> {
    let ino = std::fs::metadata("/proc/self/ns/net")
        .context("reading this process's network namespace")?
        .ino();
    Ok(std::env::temp_dir().join(format!("weft-host-{ino}")))
}

/// An exclusive lock on `<dir>/lock`, released when dropped (the file closes). The last user
/// removes the directory while holding the lock, so a lock taken on a file that is no longer
/// the one at `<dir>/lock` is let go and taken again.
fn lock(dir: &Path) -> anyhow::Result<File> {
    let path = dir.join("lock");
    loop {
        std::fs::create_dir_all(dir.join("users"))
            .with_context(|| format!("creating {}", dir.display()))?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("locking {}", path.display()));
        }
        let held = file.metadata().map(|m| m.ino()).ok();
        let current = std::fs::metadata(&path).map(|m| m.ino()).ok();
        if held.is_some() && held == current {
            return Ok(file);
        }
    }
}

/// Removes the files of `weft run`s that are gone (killed before they could leave); the number
/// of users left.
fn prune(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir.join("users")) else {
        return 0;
    };
    let mut alive = 0;
    for entry in entries.flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if Path::new("/proc").join(&pid).exists() {
            alive += 1;
        } else {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    alive
}

fn read_changes(dir: &Path) -> Changes {
    std::fs::read(dir.join("changes.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn write_changes(dir: &Path, changes: &Changes) -> anyhow::Result<()> {
    let path = dir.join("changes.json");
    let json = serde_json::to_vec(changes).context("encoding the host changes")?;
    std::fs::write(&path, json).with_context(|| format!("writing {}", path.display()))
}

/// Checks (and with `On`, sets up) forwarding between pods on this host, and joins its users.
/// Every missing piece is reported at once.
pub fn prepare(mode: HostForwarding, iptables: &str) -> anyhow::Result<HostUse> {
    let dir = state_dir()?;
    let _lock = lock(&dir)?;
    prune(&dir);
    let mut changes = read_changes(&dir);
    let mut missing = Vec::new();

    let forward =
        std::fs::read_to_string(IP_FORWARD).with_context(|| format!("reading {IP_FORWARD}"))?;
    let forward = forward.trim();
    if forward != "1" {
        match mode {
            HostForwarding::On => {
                // Recorded first: a crash after the change still leaves it to be undone.
                changes
                    .ip_forward_was
                    .get_or_insert_with(|| forward.to_string());
                write_changes(&dir, &changes)?;
                std::fs::write(IP_FORWARD, "1")
                    .with_context(|| format!("turning on IP forwarding ({IP_FORWARD})"))?;
                say!(
                    "weft run: turned on IP forwarding in this network namespace \
                     (net.ipv4.ip_forward=1) so pods can reach each other; the last weft run here \
                     sets it back to {forward} when it exits (--host-forwarding off: never change it)"
                );
            }
            HostForwarding::Off => missing.push(format!(
                "IP forwarding is off in this network namespace (net.ipv4.ip_forward={forward}): \
                 run `sysctl -w net.ipv4.ip_forward=1`"
            )),
        }
    }

    let chain = sh(iptables, &["-w", "-S", "FORWARD"])
        .with_context(|| format!("reading the FORWARD chain with {iptables}"))?;
    let rule = forward_rule();
    let mut check = vec!["-w", "-C", "FORWARD"];
    check.extend_from_slice(&rule);
    if drops(&chain) && sh(iptables, &check).is_err() {
        match mode {
            HostForwarding::On => {
                changes.forward_rule = Some(iptables.to_string());
                write_changes(&dir, &changes)?;
                let mut insert = vec!["-w", "-I", "FORWARD", "1"];
                insert.extend_from_slice(&rule);
                sh(iptables, &insert).context("letting the pods' range through FORWARD")?;
                say!(
                    "weft run: the FORWARD chain drops forwarded packets; added `{}` (removed \
                     when the last weft run here exits)",
                    shell(iptables, "-I", &rule)
                );
            }
            HostForwarding::Off => missing.push(format!(
                "the FORWARD chain drops forwarded packets (policy DROP) and does not accept \
                 the pods' range {POD_RANGE}: run `{}`",
                shell(iptables, "-I", &rule)
            )),
        }
    }

    if !missing.is_empty() {
        if prune(&dir) == 0 && changes == Changes::default() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        bail!(
            "pods on this host cannot reach each other (every meshed connection between them \
             would time out), and --host-forwarding is off:\n  - {}\n(or drop \
             --host-forwarding off to let weft run do it, undone when the last weft run exits)",
            missing.join("\n  - ")
        );
    }
    let me = dir.join("users").join(std::process::id().to_string());
    std::fs::write(&me, b"").with_context(|| format!("writing {}", me.display()))?;
    Ok(HostUse { dir, me })
}

/// Whether the FORWARD chain's policy drops what no rule accepts (`iptables -S` prints the
/// policy first: `-P FORWARD DROP`).
fn drops(chain: &str) -> bool {
    chain
        .lines()
        .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["-P", "FORWARD", "DROP"])
}

/// Strict reverse-path filtering drops a pod's packets unless the host routes the pod's address
/// back through the pod's own veth; checked once the pod is wired.
pub fn check_reverse_path(pod_ip: std::net::Ipv4Addr, link: &str) -> anyhow::Result<()> {
    let read = |iface: &str| {
        std::fs::read_to_string(format!("/proc/sys/net/ipv4/conf/{iface}/rp_filter"))
            .ok()
            .and_then(|v| v.trim().parse::<u8>().ok())
            .unwrap_or(0)
    };
    // The kernel applies the larger of the two.
    if read("all").max(read(link)) != 1 {
        return Ok(());
    }
    let ip = pod_ip.to_string();
    let route = sh("ip", &["route", "get", &ip]).unwrap_or_default();
    let via_own_link = route
        .split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .any(|w| w == ["dev", link]);
    if !via_own_link {
        bail!(
            "strict reverse-path filtering (rp_filter=1) is on and this host routes the pod's \
             address {ip} elsewhere ({}), so the pod's packets would be dropped: run `sysctl -w \
             net.ipv4.conf.all.rp_filter=2 net.ipv4.conf.{link}.rp_filter=2`, or remove the \
             route that wins over `{ip} dev {link}`",
            route.trim()
        );
    }
    Ok(())
}

impl Drop for HostUse {
    fn drop(&mut self) {
        let Ok(_lock) = lock(&self.dir) else {
            return;
        };
        let _ = std::fs::remove_file(&self.me);
        if prune(&self.dir) > 0 {
            return;
        }
        let changes = read_changes(&self.dir);
        if let Some(was) = &changes.ip_forward_was {
            if let Err(e) = std::fs::write(IP_FORWARD, was) {
                say!("weft run: cleanup: setting net.ipv4.ip_forward back to {was}: {e}");
            }
        }
        if let Some(bin) = &changes.forward_rule {
            let mut delete = vec!["-w", "-D", "FORWARD"];
            delete.extend_from_slice(&forward_rule());
            if let Err(e) = sh(bin, &delete) {
                say!("weft run: cleanup: removing the FORWARD rule: {e:#}");
            }
        }
        // Nothing left to undo and nobody here: the directory goes (still under the lock).
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_drop_policy_counts_as_dropping() {
        assert!(drops("-P FORWARD DROP\n-A FORWARD -j DOCKER-USER\n"));
        assert!(!drops("-P FORWARD ACCEPT\n"));
        assert!(!drops("-P FORWARD ACCEPT\n-A FORWARD -j DROP-LIKE\n"));
    }

    #[test]
    fn the_suggested_command_is_the_rule_that_is_checked() {
        assert_eq!(
            shell("iptables-nft", "-I", &forward_rule()),
            "iptables-nft -I FORWARD 1 -s 198.18.0.0/15 -d 198.18.0.0/15 -j ACCEPT"
        );
    }
}
