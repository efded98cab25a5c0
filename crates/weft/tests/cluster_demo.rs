//! `weft demo --cluster` (root only; skipped locally without root, failing under `CI=true`):
//! the demo application with every service in its own pod and transparent interception. Traffic
//! flows on at least three edges, and when the demo ends nothing of it is left: no namespace,
//! host link or iptables rule, no `/etc/netns` entry or pod state directory, no process inside
//! its pods. Every edge is mutual TLS. Without root
//! the flag is refused with a pointer to the plain demo.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Read as _};
use std::os::unix::fs::MetadataExt as _;
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

mod support;

use support::{demo_edges, summary};
use weft_testbed::{require_root, serial, skip_or_fail, HostState};

const WEFT: &str = env!("CARGO_BIN_EXE_weft");

/// The demo process; SIGTERM (so it removes its pods itself) if the test ends early.
struct Demo {
    child: Child,
    stderr: mpsc::Receiver<String>,
    stderr_seen: Vec<String>,
}

impl Demo {
    fn start(args: &[&str]) -> Demo {
        let mut cmd = Command::new(WEFT);
        cmd.args(args)
            .env(weft_testbed::mesh::ENV_WEFT_PROXY_BIN, support::proxy_bin())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // If this test dies, the demo is told to stop (and cleans up its namespaces).
        weft_sys::on_exec(
            &mut cmd,
            weft_sys::ChildSetup {
                netns: None,
                uid: None,
                death_signal: libc::SIGTERM,
            },
        );
        let mut child = cmd.spawn().expect("spawn weft demo --cluster");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Demo {
            child,
            stderr: rx,
            stderr_seen: Vec::new(),
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for a stderr line matching `f` (false if the demo ended or time ran out first).
    fn wait_stderr(&mut self, timeout: Duration, f: impl Fn(&str) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.stderr.recv_timeout(left) {
                Ok(line) => {
                    let found = f(&line);
                    self.stderr_seen.push(line);
                    if found {
                        return true;
                    }
                }
                Err(_) => return false,
            }
        }
        false
    }

    /// Waits for exit; returns the status and the whole stdout.
    fn finish(&mut self, timeout: Duration) -> (std::process::ExitStatus, String) {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            // Keep the stderr log complete for failure messages.
            while let Ok(line) = self.stderr.try_recv() {
                self.stderr_seen.push(line);
            }
            assert!(
                Instant::now() < deadline,
                "weft demo --cluster did not exit within {timeout:?}; stderr:\n{}",
                self.stderr_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        let mut stdout = String::new();
        if let Some(mut out) = self.child.stdout.take() {
            let _ = out.read_to_string(&mut stdout);
        }
        while let Ok(line) = self.stderr.recv_timeout(Duration::from_millis(200)) {
            self.stderr_seen.push(line);
        }
        (status, stdout)
    }

    fn stderr_text(&self) -> String {
        self.stderr_seen.join("\n")
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: kill(2) on our own unreaped child.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(20);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Network namespaces named `*-<pid>` (the demo's pods and node), with their inode numbers.
fn namespaces_of(pid: u32) -> BTreeMap<String, u64> {
    let suffix = format!("-{pid}");
    std::fs::read_dir("/run/netns")
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let ino = e.metadata().ok()?.ino();
                    name.ends_with(&suffix).then_some((name, ino))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Processes whose network namespace is one of `inodes`.
fn processes_in(inodes: &[u64]) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_string_lossy().into_owned();
            pid.parse::<u32>().ok()?;
            let link = std::fs::read_link(format!("/proc/{pid}/ns/net")).ok()?;
            let link = link.to_string_lossy().into_owned();
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            inodes
                .iter()
                .any(|ino| link == format!("net:[{ino}]"))
                .then(|| {
                    format!(
                        "{pid}: {}",
                        String::from_utf8_lossy(&cmdline).replace('\0', " ")
                    )
                })
        })
        .collect()
}

#[test]
fn cluster_demo_reports_edges_and_leaves_nothing_behind() {
    let _serial = serial();
    let Some(_root) = require_root(&["sysctl", "env", "iptables-save"]) else {
        return;
    };
    let host = HostState::capture().expect("host state");
    let etc_netns_before = std::fs::read_dir("/etc/netns")
        .map(|d| d.count())
        .unwrap_or(0);

    let mut demo = Demo::start(&["demo", "--cluster", "--duration", "8", "--json"]);
    let pid = demo.pid();
    // The last workload is up: every pod (and the node) exists now.
    let up = demo.wait_stderr(Duration::from_secs(90), |l| {
        l.starts_with("weft demo: traffic running in pod")
    });
    assert!(
        up,
        "the demo did not start its pods; stderr:\n{}",
        demo.stderr_text()
    );
    let namespaces = namespaces_of(pid);
    assert_eq!(
        namespaces.len(),
        6,
        "expected 5 pods and a node namespace: {namespaces:?}"
    );
    for name in namespaces.keys() {
        assert!(
            std::path::Path::new("/etc/netns")
                .join(name)
                .join("hosts")
                .exists()
                || name.contains("-demo-node-"),
            "{name} has no hosts file"
        );
    }
    let inodes: Vec<u64> = namespaces.values().copied().collect();
    assert!(
        processes_in(&inodes).len() >= 10,
        "expected a proxy and an app in every pod: {:?}",
        processes_in(&inodes)
    );

    let (status, stdout) = demo.finish(Duration::from_secs(60));
    assert!(
        status.success(),
        "weft demo --cluster exited with {status}; stdout:\n{stdout}\nstderr:\n{}",
        demo.stderr_text()
    );
    let summary = summary(&stdout).unwrap_or_else(|| {
        panic!(
            "no JSON summary on stdout:\n{stdout}\nstderr:\n{}",
            demo.stderr_text()
        )
    });
    let edges = demo_edges(&summary);
    for edge in edges {
        // `weft run`'s code gave every sidecar an identity: every edge is mTLS.
        assert_eq!(edge["tls"], true, "edge without mTLS: {edge}");
    }
    let pairs: Vec<(String, String)> = edges
        .iter()
        .map(|e| (e["src"].to_string(), e["dst"].to_string()))
        .collect();
    for (src, dst) in [("traffic", "web"), ("web", "books"), ("web", "ratings")] {
        assert!(
            pairs.contains(&(format!("\"{src}\""), format!("\"{dst}\""))),
            "no {src} -> {dst} edge: {summary}"
        );
    }
    assert_eq!(
        summary["proxies"].as_array().map(Vec::len),
        Some(5),
        "{summary}"
    );

    // Nothing left: namespaces, host links and rules, hosts files, processes in the pods.
    host.assert_unchanged();
    assert_eq!(
        namespaces_of(pid),
        BTreeMap::new(),
        "namespaces left behind"
    );
    for name in namespaces.keys() {
        assert!(
            !std::path::Path::new("/etc/netns").join(name).exists(),
            "/etc/netns/{name} left behind"
        );
        let state = std::env::temp_dir().join(name);
        assert!(!state.exists(), "{} left behind", state.display());
    }
    let etc_netns_after = std::fs::read_dir("/etc/netns")
        .map(|d| d.count())
        .unwrap_or(0);
    assert!(
        etc_netns_after <= etc_netns_before,
        "/etc/netns entries left"
    );
    assert_eq!(
        processes_in(&inodes),
        Vec::<String>::new(),
        "processes left in the pods"
    );
}

#[test]
fn cluster_demo_without_root_points_at_the_plain_demo() {
    let mut cmd = Command::new(WEFT);
    cmd.args(["demo", "--cluster", "--duration", "1"])
        .env(weft_testbed::mesh::ENV_WEFT_PROXY_BIN, support::proxy_bin())
        .stdin(Stdio::null());
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        // As root, drop to nobody for this one command (the binary is world-executable in
        // target/; if not, there is nothing to test here).
        // SAFETY: async-signal-safe calls only, between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(65534) != 0
                    || libc::setuid(65534) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    // exec(2) after the uid change fails the spawn itself when uid 65534 may not run the binary
    // (e.g. a target directory under a 0700 home).
    let output = match cmd.output() {
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            skip_or_fail(&format!(
                "the weft binary is not executable by uid 65534 here: {e}"
            ));
            return;
        }
        result => result.expect("run weft demo --cluster"),
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "stderr: {stderr}");
    assert!(stderr.contains("needs root"), "stderr: {stderr}");
    assert!(stderr.contains("plain `weft demo`"), "stderr: {stderr}");
    assert!(
        output.stdout.is_empty(),
        "stdout: {}",
        String::from_utf8_lossy(&output.stdout)
    );
}
