//! `weft dashboard`: finds the control plane's web dashboard (served on its API listener under
//! `/dashboard/`, `weft_control::api::dashboard`), prints its URL and opens it in a browser, as
//! `linkerd viz dashboard` does. The browser is `$BROWSER` (a `:`-separated list of commands,
//! `%s` standing for the URL, as Python's `webbrowser` and Debian's `sensible-browser` read it),
//! else `xdg-open`; with neither, the URL is all there is.

use std::ffi::{OsStr, OsString};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::bail;
use weft_control::api::dashboard::PATH;

use crate::demo::http;

/// Pause between attempts while `--wait` lasts.
const RETRY_EVERY: Duration = Duration::from_secs(1);
/// How long an opener may take to say it failed (xdg-open exits at once; a browser named in
/// `$BROWSER` keeps running and is left to run).
const OPENER_GRACE: Duration = Duration::from_secs(2);

/// `weft dashboard`: open the web dashboard.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    weft dashboard                          # open it in $BROWSER or with xdg-open\n  \
    weft dashboard --show url               # only print the URL\n  \
    weft dashboard --api-addr 127.0.0.1:18085 --wait 1m\n  \
    BROWSER=chromium weft dashboard\n\n\
    The dashboard is served by the control plane itself, on its HTTP API port under \
    /dashboard/ (assets built into the binary; nothing is fetched from elsewhere): workloads \
    and services with their golden metrics, the topology of who calls whom with mTLS marked, \
    per-route metrics and a live tap. The URL is printed on stdout. See \
    docs/observability.md#web-dashboard.")]
pub struct DashboardArgs {
    #[command(flatten)]
    pub api: crate::get::ApiAddr,
    /// `browser`: print the URL and open it; `url`: only print it.
    #[arg(long, value_enum, default_value = "browser")]
    pub show: Show,
    /// Keep asking for up to this long until the control plane's API answers (like
    /// `linkerd viz dashboard --wait`); `0s` asks once.
    #[arg(long, default_value = "0s", value_name = "DURATION", value_parser = crate::demo::parse_duration)]
    pub wait: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Show {
    Browser,
    Url,
}

pub async fn run(args: DashboardArgs) -> anyhow::Result<()> {
    let addr = reachable(args.api.addr);
    answers(addr, args.wait).await?;
    let url = url(addr);
    println!("{url}");
    if args.show == Show::Url {
        return Ok(());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let openers = openers(std::env::var_os("BROWSER"), &url, &path);
    if openers.is_empty() {
        eprintln!(
            "weft dashboard: no browser to open it with ($BROWSER is not set and xdg-open is not \
             on PATH): open {url} yourself"
        );
        return Ok(());
    }
    for (program, args) in &openers {
        match open(program, args) {
            Ok(()) => {
                eprintln!("weft dashboard: opened with {}", program.to_string_lossy());
                return Ok(());
            }
            Err(why) => eprintln!("weft dashboard: {}: {why}", program.to_string_lossy()),
        }
    }
    eprintln!("weft dashboard: no browser could open it: open {url} yourself");
    Ok(())
}

/// The dashboard's URL on the API at `addr`.
pub fn url(addr: SocketAddr) -> String {
    format!("http://{addr}{PATH}")
}

/// An API that listens on every address (`0.0.0.0`, `::`) is reached on loopback.
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, addr.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, addr.port()).into(),
        _ => addr,
    }
}

/// Waits (up to `wait`) for the API to answer `/live`, then checks it serves the dashboard
/// (a control plane older than the dashboard answers 404).
async fn answers(addr: SocketAddr, wait: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + wait;
    let mut said = false;
    loop {
        let why = match http::get(addr, "/live").await {
            Ok(rsp) if rsp.status().is_success() => break,
            Ok(rsp) => format!("GET /live answered {}", rsp.status()),
            Err(e) => format!("GET http://{addr}/live: {e:#}"),
        };
        if Instant::now() + RETRY_EVERY > deadline {
            bail!(
                "dashboard: the control plane API at {addr} does not answer ({why}); start it \
                 (`weft control`, `weft demo --api-addr {addr}`) or point --api-addr / \
                 $WEFT_API_ADDR at it; --wait DURATION waits for it to come up"
            );
        }
        if !said {
            let left = deadline.saturating_duration_since(Instant::now());
            eprintln!(
                "weft dashboard: waiting up to {}s for the control plane ({why})",
                left.as_secs()
            );
            said = true;
        }
        tokio::time::sleep(RETRY_EVERY).await;
    }
    let page = http::get(addr, PATH).await?;
    if !page.status().is_success() {
        bail!(
            "dashboard: the control plane at {addr} answers but serves no dashboard (GET {PATH}: \
             {}): is it an older weft?",
            page.status()
        );
    }
    Ok(())
}

/// The commands that may open `url`, in order: each entry of `$BROWSER` (split on `:`; its
/// words split on spaces; `%s` replaced by the URL, else the URL appended), then `xdg-open`
/// when it is on `path`.
fn openers(browser: Option<OsString>, url: &str, path: &OsStr) -> Vec<(OsString, Vec<String>)> {
    let mut out = Vec::new();
    let browser = browser.map(|b| b.to_string_lossy().into_owned());
    for entry in browser.iter().flat_map(|b| b.split(':')) {
        let mut words = entry.split_whitespace();
        let Some(program) = words.next() else {
            continue;
        };
        let mut args: Vec<String> = words.map(|w| w.replace("%s", url)).collect();
        if !entry.contains("%s") {
            args.push(url.to_string());
        }
        out.push((OsString::from(program), args));
    }
    if let Some(xdg) = on_path("xdg-open", path) {
        out.push((xdg.into_os_string(), vec![url.to_string()]));
    }
    out
}

/// `program` in one of the directories of `path`, when it is an executable file there.
fn on_path(program: &str, path: &OsStr) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    std::env::split_paths(path)
        .map(|dir| dir.join(program))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Starts the opener, detached from our terminal; an opener that exits at once with a failure
/// is reported, one still running after a moment (a browser itself) is left to run.
fn open(program: &OsStr, args: &[String]) -> Result<(), String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start it: {e}"))?;
    let deadline = Instant::now() + OPENER_GRACE;
    while Instant::now() < deadline {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => return Err(format!("it exited with {status}")),
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(format!("waiting for it: {e}")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "http://127.0.0.1:8085/dashboard/";

    fn words(openers: &[(OsString, Vec<String>)]) -> Vec<String> {
        openers
            .iter()
            .map(|(p, a)| format!("{} {}", p.to_string_lossy(), a.join(" ")))
            .collect()
    }

    #[test]
    fn the_url_is_the_api_address_and_the_dashboard_path() {
        assert_eq!(url("127.0.0.1:8085".parse().unwrap()), URL);
        assert_eq!(
            url(reachable("0.0.0.0:18085".parse().unwrap())),
            "http://127.0.0.1:18085/dashboard/"
        );
        assert_eq!(
            url(reachable("[::]:18085".parse().unwrap())),
            "http://[::1]:18085/dashboard/"
        );
        assert_eq!(
            url(reachable("10.1.2.3:80".parse().unwrap())),
            "http://10.1.2.3:80/dashboard/"
        );
    }

    #[test]
    fn browser_entries_come_first_with_the_url_in_place_of_percent_s() {
        let browser = Some(OsString::from("firefox --new-tab:my-open %s --flag:"));
        let openers = openers(browser, URL, OsStr::new(""));
        assert_eq!(
            words(&openers),
            [
                format!("firefox --new-tab {URL}"),
                format!("my-open {URL} --flag"),
            ]
        );
    }

    #[test]
    fn xdg_open_only_when_on_path() {
        let dir = std::env::temp_dir().join(format!("weft-dash-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(openers(None, URL, dir.as_os_str()).is_empty());
        let xdg = dir.join("xdg-open");
        std::fs::write(&xdg, "#!/bin/sh\n").unwrap();
        // Not executable: not an opener.
        assert!(openers(None, URL, dir.as_os_str()).is_empty());
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&xdg, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(
            words(&openers(Some("b".into()), URL, dir.as_os_str())),
            [format!("b {URL}"), format!("{} {URL}", xdg.display())]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
