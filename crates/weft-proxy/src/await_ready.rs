//! `weft-proxy await [--timeout=DURATION]`: waits until the proxy running beside it (same
//! container, same variables) answers `GET /ready` with 200 on its admin port, then exits 0;
//! exits 1 at the timeout (default 2m). A classic-sidecar pod's postStart hook runs it so the
//! kubelet starts the app containers only once the proxy is ready (Linkerd's `linkerd-await`).

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::config::{self, Env};

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
const PAUSE: Duration = Duration::from_millis(200);

/// Runs the subcommand with its arguments (after `await`); the process exit code.
pub fn run(args: &[String], env: &dyn Env) -> u8 {
    let mut timeout = DEFAULT_TIMEOUT;
    for arg in args {
        match arg.strip_prefix("--timeout=").map(config::parse_duration) {
            Some(Ok(t)) => timeout = t,
            Some(Err(e)) => return usage(&format!("--timeout: {e}")),
            None => return usage(&format!("unknown argument {arg:?}")),
        }
    }
    let admin = env
        .get(config::ENV_ADMIN_LISTEN_ADDR)
        .unwrap_or_else(|| config::DEFAULT_ADMIN_LISTEN_ADDR.to_string());
    let Ok(admin) = admin.parse::<SocketAddr>() else {
        return usage(&format!(
            "{}: not an address: {admin:?}",
            config::ENV_ADMIN_LISTEN_ADDR
        ));
    };
    // The admin server may listen on every address; ask it on loopback.
    let target = SocketAddr::from((Ipv4Addr::LOCALHOST, admin.port()));
    let deadline = Instant::now() + timeout;
    loop {
        if ready(target) {
            return 0;
        }
        if Instant::now() >= deadline {
            eprintln!("weft-proxy await: {target} not ready after {timeout:?}");
            return 1;
        }
        std::thread::sleep(PAUSE);
    }
}

fn usage(problem: &str) -> u8 {
    eprintln!("weft-proxy await: {problem}\nusage: weft-proxy await [--timeout=DURATION]");
    2
}

/// One `GET /ready`: whether the answer's status is 200.
fn ready(target: SocketAddr) -> bool {
    let attempt = || -> std::io::Result<bool> {
        let mut s = TcpStream::connect_timeout(&target, Duration::from_secs(1))?;
        s.set_read_timeout(Some(Duration::from_secs(1)))?;
        s.write_all(b"GET /ready HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
        let mut head = [0u8; 12];
        s.read_exact(&mut head)?;
        Ok(head.starts_with(b"HTTP/1.") && &head[8..12] == b" 200")
    };
    attempt().unwrap_or(false)
}
