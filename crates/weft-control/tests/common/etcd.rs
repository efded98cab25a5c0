//! A real etcd for a test: `/usr/bin/etcd` (Debian's `etcd-server`) on free loopback ports with
//! a temporary data directory, killed and removed on drop. Kill and restart it (same ports, same
//! data) to see what the control plane does while it is gone.
//!
//! Self-contained: the `weft` crate's tests include this file too (`#[path]`).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Etcd {
    child: Option<Child>,
    dir: PathBuf,
    client_port: u16,
    peer_port: u16,
}

/// A fresh directory for one etcd's data and log.
fn data_dir(test: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir().join(format!("weft-etcd-{test}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create etcd temp dir");
    dir
}

/// A port nothing listens on now (the listener is closed again before etcd binds it).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

impl Etcd {
    /// Starts etcd and waits until it answers. `None` (the test returns) when etcd is not
    /// installed here; under `CI=true` that is a failure instead.
    pub async fn start(test: &str) -> Option<Etcd> {
        if weft_testbed::which("etcd").is_none() {
            weft_testbed::skip_or_fail("`etcd` is not installed (Debian package etcd-server)");
            return None;
        }
        let mut etcd = Etcd {
            child: None,
            dir: data_dir(test),
            client_port: free_port(),
            peer_port: free_port(),
        };
        etcd.spawn();
        etcd.ready().await;
        Some(etcd)
    }

    /// `127.0.0.1:PORT`, the client endpoint.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// A store address on this etcd: `etcd://127.0.0.1:PORT/<prefix>`.
    pub fn store(&self, prefix: &str) -> weft_control::store::Location {
        format!("etcd://{}/{prefix}", self.endpoint())
            .parse()
            .expect("a store address")
    }

    /// A client of this etcd.
    pub fn client(&self) -> weft_control::etcd::Client {
        weft_control::etcd::Client::new(&[self.endpoint()]).expect("client")
    }

    fn spawn(&mut self) {
        let client = format!("http://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("etcd.log"))
            .expect("etcd log file");
        let child = Command::new("etcd")
            .arg("--name=test")
            .arg(format!("--data-dir={}", self.dir.join("data").display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=test={peer}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("spawn etcd");
        self.child = Some(child);
    }

    /// Waits until etcd answers a list (bounded; a hung start fails the test with its log).
    pub async fn ready(&self) {
        let client = self.client();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while client.list(b"/").await.is_err() {
            if tokio::time::Instant::now() > deadline {
                let log = std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default();
                panic!("etcd did not start within 30s; its log:\n{log}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Kills etcd (SIGKILL: no goodbye to its clients) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts etcd again on the same ports and data, and waits until it answers.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn();
        self.ready().await;
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
