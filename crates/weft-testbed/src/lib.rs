//! Test support for end-to-end tests that need real networks: a "cluster" of nodes and pods made
//! of Linux network namespaces, processes started inside them, and faults (latency, loss,
//! partitions, killed processes).
//!
//! ```text
//!                 hub namespace: bridge br0 198.18.0.1/24, routes each node's pod /24
//!          ┌───────────────┴───────────────┐
//!   node 0: uplink 198.18.0.2        node 1: uplink 198.18.0.3
//!   pods 198.18.1.x/32 (veth p<j>)   pods 198.18.2.x/32, gateway 198.18.2.1
//! ```
//!
//! Everything lives in namespaces this crate creates: nothing is added to the host's own
//! namespace, there is no route out of 198.18.0.0/15, and every namespace, link, rule and process
//! is removed on drop — including while a panic unwinds. Names are `wt<pid>x<counter>...`, so
//! parallel tests never collide, and namespaces left by a killed test process are swept by the
//! next run. Everything here needs root: call [`require_root`] first.

mod cluster;
pub mod fuzz;
pub mod mesh;
mod netns;
mod proc;
pub mod procfs;

pub use cluster::{Cluster, LinkDown, Netem, Node, Partition, Pod};
pub use netns::{run, NamedNetns, Netns};

/// A namespace name unique to this process and call, `wt<pid>x<n><suffix>` (swept by later runs
/// if this process dies without cleaning up).
pub fn unique_name(suffix: &str) -> String {
    netns::sweep_stale();
    format!("{}{suffix}", netns::unique_prefix())
}
pub use proc::Proc;

use std::path::PathBuf;

/// Why a testbed operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setup command failed; `output` is its stdout and stderr.
    #[error("`{command}` failed ({status}): {output}")]
    Command {
        command: String,
        status: String,
        output: String,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    /// The machine cannot do this (e.g. a kernel without `tc netem`).
    #[error("unsupported here: {0}")]
    Unsupported(String),
    #[error("{0}")]
    Other(String),
}

impl Error {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            what: what.into(),
            source,
        }
    }
}

/// Proof that this process may build a testbed (root, tools present).
#[derive(Debug, Clone, Copy)]
pub struct Root(());

/// Whether tests run under CI (`CI=true`), where a test that cannot run must fail.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Checks that this process is root and that `ip`, `iptables`, `tc` and every program in `tools`
/// are installed. Locally, when something is missing, prints why and returns `None` (the test
/// should return: it is skipped). Under `CI=true` it panics instead: a test that cannot run is a
/// failure there, never a silent pass.
pub fn require_root(tools: &[&str]) -> Option<Root> {
    match missing(tools) {
        None => Some(Root(())),
        Some(reason) => {
            skip_or_fail(&reason);
            None
        }
    }
}

/// For a test that cannot run here (`reason` says why): locally prints `SKIPPED: <reason>` and
/// returns, and the test should return too; under `CI=true` panics.
pub fn skip_or_fail(reason: &str) {
    if in_ci() {
        panic!("cannot run under CI=true: {reason}");
    }
    eprintln!("SKIPPED: {reason} (set CI=true to make this a failure)");
}

fn missing(tools: &[&str]) -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (network namespaces, veth, iptables, tc)".into());
    }
    ["ip", "iptables", "tc"]
        .iter()
        .chain(tools)
        .find(|tool| which(tool).is_none())
        .map(|tool| format!("`{tool}` is not installed"))
}

/// Looks a program up in `PATH` (also `/usr/sbin` and `/sbin`, often missing from it).
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// One testbed test at a time in this process: tests that compare [`HostState`] before and
/// after must not see another test's namespaces. Hold the guard for the whole test. (Each test
/// has its own thread and runtime, so holding it across `.await` blocks nothing else.)
pub fn serial() -> Serial {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    Serial {
        _guard: SERIAL
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()),
    }
}

/// Held while a testbed test runs; see [`serial`].
pub struct Serial {
    _guard: std::sync::MutexGuard<'static, ()>,
}

/// What the host's own namespace looks like: namespace names, link names and the iptables rules
/// (without counters and timestamps). Capture it before a test and compare after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostState {
    pub netns: Vec<String>,
    pub links: Vec<String>,
    pub iptables: String,
}

impl HostState {
    pub fn capture() -> Result<HostState, Error> {
        let mut netns: Vec<String> = run("ip", &["netns", "list"])?
            .lines()
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect();
        netns.sort();
        let mut links: Vec<String> = run("ip", &["-o", "link", "show"])?
            .lines()
            .filter_map(|l| l.split(": ").nth(1).map(str::to_string))
            .collect();
        links.sort();
        let iptables = run("iptables-save", &[])?
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(strip_counters)
            .collect::<Vec<_>>()
            .join("\n");
        Ok(HostState {
            netns,
            links,
            iptables,
        })
    }

    /// Panics if something was left on the host since `self` was captured: a namespace or link
    /// that is new, or any change to the iptables rules. (Namespaces and links that went away
    /// are not ours to report: other processes' tests may run at the same time.)
    pub fn assert_unchanged(&self) {
        let now = HostState::capture().expect("capture host state");
        let new = |before: &[String], after: &[String]| -> Vec<String> {
            after
                .iter()
                .filter(|n| !before.contains(n))
                .cloned()
                .collect()
        };
        assert_eq!(
            new(&self.netns, &now.netns),
            Vec::<String>::new(),
            "network namespaces left behind"
        );
        assert_eq!(
            new(&self.links, &now.links),
            Vec::<String>::new(),
            "host links left behind"
        );
        assert_eq!(self.iptables, now.iptables, "host iptables rules changed");
    }
}

/// `:INPUT ACCEPT [12:345]` → `:INPUT ACCEPT`.
fn strip_counters(line: &str) -> String {
    match (line.starts_with(':'), line.rfind(" [")) {
        (true, Some(i)) => line[..i].to_string(),
        _ => line.to_string(),
    }
}
