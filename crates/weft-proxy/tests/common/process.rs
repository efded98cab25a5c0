//! A real `weft-proxy` process (the binary this package builds) in explicit mode: one forward
//! port in front of a test application, its listening line read from stdout and its stderr
//! lines kept for the test.

use std::{net::SocketAddr, process::Stdio, time::Duration};

use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
    sync::mpsc,
};
use weft_proxy::config;

/// Upper bound for "soon" (process start, a log line after a response).
pub const SOON: Duration = Duration::from_secs(20);

/// A running proxy: its forward port, admin address, and its stderr lines.
pub struct Proxy {
    pub child: Child,
    pub forward: SocketAddr,
    /// Every forward port, in `WEFT_PROXY_INBOUND_FORWARD_PORTS` order (`forward` is the first).
    pub forwards: Vec<SocketAddr>,
    pub inbound: SocketAddr,
    pub outbound: SocketAddr,
    pub admin: SocketAddr,
    stderr: mpsc::UnboundedReceiver<String>,
}

impl Proxy {
    /// Starts `weft-proxy` with one forward port in front of `app`, every listener on an
    /// ephemeral loopback port, as `vars` change it; returns once it printed where it listens.
    pub async fn start(app: SocketAddr, vars: &[(&str, &str)]) -> Proxy {
        Proxy::spawn(app, vars, None).await
    }

    /// [`Proxy::start`] with its soft RLIMIT_NOFILE set to `soft` when it starts.
    pub async fn start_with_nofile(app: SocketAddr, vars: &[(&str, &str)], soft: u64) -> Proxy {
        Proxy::spawn(app, vars, Some(soft)).await
    }

    async fn spawn(app: SocketAddr, vars: &[(&str, &str)], soft_nofile: Option<u64>) -> Proxy {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_weft-proxy"));
        if let Some(soft) = soft_nofile {
            // SAFETY: between fork and exec only async-signal-safe calls: getrlimit, setrlimit.
            unsafe {
                cmd.pre_exec(move || {
                    let mut lim = libc::rlimit {
                        rlim_cur: 0,
                        rlim_max: 0,
                    };
                    if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    lim.rlim_cur = soft.min(lim.rlim_max);
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        cmd.env_clear()
            .env(config::ENV_DESTINATION_SVC_ADDR, "127.0.0.1:1")
            .env(config::ENV_POLICY_WORKLOAD, "default:web-1")
            .env(config::ENV_INBOUND_LISTEN_ADDR, "127.0.0.1:0")
            .env(config::ENV_OUTBOUND_LISTEN_ADDR, "127.0.0.1:0")
            .env(config::ENV_ADMIN_LISTEN_ADDR, "127.0.0.1:0")
            .env(config::ENV_INBOUND_FORWARD_PORTS, app.port().to_string())
            .env(config::ENV_INBOUND_FAILFAST_TIMEOUT, "100ms")
            .envs(vars.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("start weft-proxy");
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(SOON, stdout.next_line())
            .await
            .expect("listening line in time")
            .expect("read stdout")
            .expect("a listening line");
        let listening: serde_json::Value = serde_json::from_str(&line).expect("JSON line");
        let addr = |v: &serde_json::Value| v.as_str().unwrap().parse::<SocketAddr>().unwrap();
        let forward = addr(&listening["forward"][0]["addr"]);
        let admin = addr(&listening["admin"]);
        let inbound = addr(&listening["inbound"]);
        let outbound = addr(&listening["outbound"]);
        let forwards = listening["forward"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| addr(&f["addr"]))
            .collect();

        let (tx, stderr) = mpsc::unbounded_channel();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proxy {
            child,
            forward,
            forwards,
            inbound,
            outbound,
            admin,
            stderr,
        }
    }

    /// The next stderr line `pick` accepts (diagnostic log lines are passed over).
    pub async fn line<T>(&mut self, mut pick: impl FnMut(&str) -> Option<T>) -> T {
        let wait = async {
            loop {
                let line = self.stderr.recv().await.expect("proxy stderr open");
                if let Some(t) = pick(&line) {
                    return t;
                }
            }
        };
        tokio::time::timeout(SOON, wait)
            .await
            .expect("access log line in time")
    }

    pub async fn metrics(&self) -> String {
        let (status, body) = super::admin(self.admin, "GET", "/metrics").await;
        assert_eq!(status, 200);
        body
    }
}
