//! `weft check`: a health report of the mesh in `linkerd check`'s shape — sections with a header
//! and an underline, one line per check (✔ passed, ‼ warning, × failed), and under a check that
//! did not pass what was found, a hint and where the docs explain it. It exits non-zero when a
//! check fails (warnings do not).
//!
//! This side checks what only a client can see: the control plane's API answers and is ready,
//! its gRPC port accepts connections, and this machine's clock agrees with the control plane's.
//! Everything else (store, identity, every meshed proxy) is the control plane's `GET /v1/check`
//! (`weft_control::api::check`). On Kubernetes, `--pre` and `--proxy` ask the API server
//! instead, and print their checks the same way ([`kubernetes`]).

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use anyhow::bail;
use bytes::Bytes;
use http_body_util::Full;
use serde_json::json;
use weft_control::api::check::{
    self as api, parse_http_date, skew_from_date, skew_words, Check, Report, Status,
};

use crate::demo::http as client;

pub mod kubernetes;

/// The control plane's section, checked from here.
const SECTION: &str = "weft-control-plane";
/// How long `GET /v1/check` may take: the control plane probes every proxy (8 at once, a few
/// seconds each at worst).
const REPORT_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the gRPC port may take to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause between attempts while `--wait` lasts.
const RETRY_EVERY: Duration = Duration::from_secs(1);

/// `weft check`: check the mesh's health.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    weft check\n  \
    weft check --wait 1m          # wait for the control plane to come up first\n  \
    weft check --api-addr 127.0.0.1:18085 -o json | jq '.sections[].checks[] | select(.status != \"ok\")'\n  \
    weft check --pre              # before `weft install`: can this cluster and user take it?\n  \
    weft check --proxy -n emojivoto --context kind-weft\n\n\
    Checks: the control plane (API, readiness, gRPC port, clock), the store (every document \
    applied; routes and policies accepted), identity (issuer and trust anchors valid, not \
    expiring within 60 days, issuer signed by an anchor), and every meshed proxy (ready, \
    certificate valid and not past its renewal, issued under the control plane's trust \
    anchors, clock within 5s). On Kubernetes, --pre checks the cluster before `weft install` \
    (API server, version >= 1.29, rights to create what it creates, no `weft` namespace yet, \
    Gateway API CRDs) and --proxy checks it after (control plane pods ready, the webhook's \
    caBundle, every pod of the injected namespaces: proxy present, ready, of the control \
    plane's version). Exits 1 when a check fails (×); warnings (‼) do not. See \
    docs/observability.md#weft-check and docs/kubernetes.md.")]
pub struct CheckArgs {
    #[command(flatten)]
    pub api: crate::get::ApiAddr,
    /// Keep asking for up to this long until the control plane's API answers and is ready
    /// (like `linkerd check --wait`); `0s` asks once.
    #[arg(long, default_value = "0s", value_name = "DURATION", value_parser = crate::demo::parse_duration)]
    pub wait: Duration,
    /// Before `weft install`: check the Kubernetes cluster and the user's rights (like
    /// `linkerd check --pre`) instead of a running control plane.
    #[arg(long, conflicts_with_all = ["proxy", "wait"])]
    pub pre: bool,
    /// Check the Kubernetes control plane's pods, the injector's webhook and the meshed pods
    /// (like `linkerd check --proxy`) through the API server.
    #[arg(long, conflicts_with = "wait")]
    pub proxy: bool,
    /// With --proxy: check this namespace's pods (default: every namespace annotated
    /// `linkerd.io/inject: enabled`).
    #[arg(short = 'n', long, value_name = "NAMESPACE", requires = "proxy")]
    pub namespace: Option<String>,
    #[command(flatten)]
    pub kube: kubernetes::KubeArgs,
    /// Output: the report as text, or as one JSON document.
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
}

pub async fn run(args: CheckArgs) -> anyhow::Result<()> {
    let (checks, report) = if args.pre {
        (kubernetes::pre(&args.kube).await, None)
    } else if args.proxy {
        let namespace = args.namespace.as_deref();
        (kubernetes::proxy(&args.kube, namespace).await, None)
    } else {
        let (mut checks, report) = gather(args.api.addr, args.wait).await;
        // Linked clusters (docs/multicluster.md): each link, its gateway and the shared anchor.
        // A control plane that does not answer has already failed above.
        if report.is_some() {
            match crate::multicluster::link_checks(args.api.addr).await {
                Ok(links) => checks.extend(links),
                Err(e) => {
                    let c = Check::new("links", "weft-multicluster", "the links can be read");
                    checks.push(failed(c, format!("{e:#}"), "see docs/multicluster.md"));
                }
            }
        }
        (checks, report)
    };
    let failed = checks.iter().filter(|c| c.status == Status::Error).count();
    match args.output {
        Output::Table => print!("{}", render(&checks)),
        Output::Json => println!(
            "{}",
            json!({
                "success": failed == 0,
                "sections": sections(&checks).iter().map(|(name, checks)| json!({
                    "name": name, "checks": checks,
                })).collect::<Vec<_>>(),
                "proxies": report.map(|r| r.proxies).unwrap_or_default(),
            })
        ),
    }
    if failed > 0 {
        bail!("check: {failed} of {} checks failed", checks.len());
    }
    Ok(())
}

fn check(id: &str, description: &str) -> Check {
    let mut c = Check::new(id, SECTION, description);
    c.docs = api::DOCS.into();
    c
}

/// The result of a check that failed with `detail`, and `hint`.
fn failed(mut c: Check, detail: impl Into<String>, hint: &str) -> Check {
    c.found(Status::Error, detail);
    c.hint = Some(hint.into());
    c
}

/// `GET path` of the API within `limit`: its status, `Date` and body, and when we sent it and
/// had the answer.
async fn get(
    addr: SocketAddr,
    path: &str,
    limit: Duration,
) -> anyhow::Result<(http::Response<Bytes>, SystemTime, SystemTime)> {
    let request = http::Request::get(path)
        .header(http::header::HOST, addr.to_string())
        .body(Full::new(Bytes::new()))?;
    let sent = SystemTime::now();
    let response = client::send_within(addr, request, limit).await?;
    Ok((response, sent, SystemTime::now()))
}

/// `GET path` until it answers 200 or `deadline` passes; the last answer or error in words.
/// The first failure that is retried is said on stderr.
async fn until_ok(
    addr: SocketAddr,
    path: &str,
    deadline: Instant,
) -> Result<(http::Response<Bytes>, SystemTime, SystemTime), String> {
    let mut said = false;
    loop {
        let why = match get(addr, path, client::REQUEST_TIMEOUT).await {
            Ok(ok) if ok.0.status().is_success() => return Ok(ok),
            Ok((rsp, ..)) => format!(
                "GET {path} answered {}: {}",
                rsp.status(),
                String::from_utf8_lossy(rsp.body()).trim()
            ),
            Err(e) => format!("GET http://{addr}{path}: {e:#}"),
        };
        if Instant::now() + RETRY_EVERY > deadline {
            return Err(why);
        }
        if !said {
            // Once, on stderr (stdout is the report): the wait is not a hang.
            let left = deadline.saturating_duration_since(Instant::now());
            eprintln!(
                "weft check: waiting up to {}s for the control plane ({why})",
                left.as_secs()
            );
            said = true;
        }
        tokio::time::sleep(RETRY_EVERY).await;
    }
}

/// Every check, in order, and the control plane's report when it gave one. A control plane
/// that does not answer ends the list there: nothing else can be asked.
async fn gather(addr: SocketAddr, wait: Duration) -> (Vec<Check>, Option<Report>) {
    let deadline = Instant::now() + wait;
    let mut checks = Vec::new();

    // 1. The API answers.
    let live = check(
        "control-plane-live",
        &format!("control plane API answers at {addr}"),
    );
    let (live_rsp, sent, received) = match until_ok(addr, "/live", deadline).await {
        Ok(answer) => answer,
        Err(why) => {
            checks.push(failed(
                live,
                why,
                "start the control plane (`weft control`), or point --api-addr / $WEFT_API_ADDR \
                 at its API; --wait DURATION waits for it to come up",
            ));
            return (checks, None);
        }
    };
    checks.push(live);

    // 2. It is ready (its store is loaded).
    let ready = check("control-plane-ready", "control plane is ready");
    if let Err(why) = until_ok(addr, "/ready", deadline).await {
        checks.push(failed(
            ready,
            why,
            "the control plane is ready once it has loaded its store directory; its log says \
             what holds it back",
        ));
        return (checks, None);
    }
    checks.push(ready);

    // 3. This machine's clock against the control plane's (the `Date` of its /live answer).
    let mut clock = check(
        "control-plane-clock-skew",
        &format!(
            "this machine's clock is within {}s of the control plane's",
            api::CLOCK_SKEW_WARNING.as_secs()
        ),
    );
    let date = live_rsp.headers().get(http::header::DATE);
    match date.and_then(|d| parse_http_date(d.to_str().ok()?)) {
        Some(date) => {
            // The control plane's clock minus ours; the words say ours against theirs.
            let (skew, within) = skew_from_date(date, sent, received);
            if skew.abs() - within > api::CLOCK_SKEW_WARNING.as_secs_f64() {
                let words = skew_words(-skew, within);
                clock.found(Status::Warning, format!("this machine's clock is {words}"));
                clock.hint = Some(
                    "synchronize the machines' clocks (NTP): certificate validity is judged \
                     against them"
                        .into(),
                );
            }
        }
        None => {
            clock.found(
                Status::Warning,
                "the control plane's answer carries no Date header to compare with",
            );
            clock.hint =
                Some("a control plane answers with a Date header; is --api-addr its API?".into());
        }
    }

    // 4. Its own report: store, identity, proxies.
    let report = match get(addr, "/v1/check", REPORT_TIMEOUT).await {
        Ok((rsp, ..)) if rsp.status().is_success() => {
            serde_json::from_slice::<Report>(rsp.body()).map_err(|e| format!("GET /v1/check: {e}"))
        }
        Ok((rsp, ..)) => Err(format!(
            "GET /v1/check answered {}: {}",
            rsp.status(),
            String::from_utf8_lossy(rsp.body()).trim()
        )),
        Err(e) => Err(format!("GET http://{addr}/v1/check: {e:#}")),
    };
    let report = match report {
        Ok(report) => report,
        Err(why) => {
            checks.push(failed(
                check(
                    "control-plane-report",
                    "control plane answers GET /v1/check",
                ),
                why,
                "a control plane older than `weft check` has no /v1/check: run the same weft \
                 version on both sides",
            ));
            checks.push(clock);
            return (checks, None);
        }
    };

    // 5. Its gRPC port accepts connections (a wildcard bind is reached at the API's address).
    let mut grpc_addr = report.grpc_addr;
    if grpc_addr.ip().is_unspecified() {
        grpc_addr.set_ip(addr.ip());
    }
    let grpc = check(
        "control-plane-grpc",
        &format!("control plane gRPC port accepts connections at {grpc_addr}"),
    );
    let connected =
        tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(grpc_addr))
            .await
            .map_err(|_| format!("no connection to {grpc_addr} within {CONNECT_TIMEOUT:?}"))
            .and_then(|r| r.map_err(|e| format!("connecting to {grpc_addr}: {e}")));
    checks.push(match connected {
        Ok(_) => grpc,
        Err(why) => failed(
            grpc,
            why,
            "proxies reach the control plane there (Destination, policy, Identity): check a \
             firewall or the address `weft control --grpc-addr` binds",
        ),
    });
    checks.push(clock);
    checks.extend(report.checks.iter().cloned());
    (checks, Some(report))
}

/// The checks grouped by section, sections in the order they first appear.
fn sections(checks: &[Check]) -> Vec<(&str, Vec<&Check>)> {
    let mut out: Vec<(&str, Vec<&Check>)> = Vec::new();
    for c in checks {
        match out.iter_mut().find(|(s, _)| *s == c.section) {
            Some((_, list)) => list.push(c),
            None => out.push((&c.section, vec![c])),
        }
    }
    out
}

/// The report as text.
pub(crate) fn render(checks: &[Check]) -> String {
    let mut out = String::new();
    for (section, list) in sections(checks) {
        out.push_str(section);
        out.push('\n');
        out.push_str(&"-".repeat(section.chars().count()));
        out.push('\n');
        for c in list {
            let mark = match c.status {
                Status::Ok => "✔",
                Status::Warning => "‼",
                Status::Error => "×",
            };
            out.push_str(&format!("{mark} {}\n", c.description));
            if c.status == Status::Ok {
                continue;
            }
            for d in &c.details {
                out.push_str(&format!("    {d}\n"));
            }
            if let Some(h) = &c.hint {
                out.push_str(&format!("    hint: {h}\n"));
            }
            out.push_str(&format!("    see {} for hints\n", c.docs));
        }
        out.push('\n');
    }
    let worst = checks.iter().map(|c| c.status).max().unwrap_or(Status::Ok);
    out.push_str(match worst {
        Status::Ok => "Status check results are ✔\n",
        Status::Warning => "Status check results are ✔ (with warnings ‼)\n",
        Status::Error => "Status check results are ×\n",
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_reads_like_linkerd_check() {
        let ok = check(
            "control-plane-live",
            "control plane API answers at 127.0.0.1:8085",
        );
        let mut warn = Check::new(
            "identity-issuer-expiry",
            "weft-identity",
            "issuer certificate is valid for at least 60 days",
        );
        warn.found(
            Status::Warning,
            "issuer CN=identity expires at 2026-12-10T00:00:00Z (in 3d 21h)",
        );
        warn.hint = Some("rotate".into());
        let mut bad = Check::new(
            "store-valid",
            "weft-store",
            "every document of the store is applied",
        );
        bad.found(Status::Error, "bad.yaml: document 1: spec.ports: required");
        bad.hint = Some("fix it".into());
        assert_eq!(
            render(&[ok.clone(), bad, warn.clone()]),
            "weft-control-plane\n\
             ------------------\n\
             ✔ control plane API answers at 127.0.0.1:8085\n\
             \n\
             weft-store\n\
             ----------\n\
             × every document of the store is applied\n    \
             bad.yaml: document 1: spec.ports: required\n    \
             hint: fix it\n    \
             see docs/observability.md#weft-check for hints\n\
             \n\
             weft-identity\n\
             -------------\n\
             ‼ issuer certificate is valid for at least 60 days\n    \
             issuer CN=identity expires at 2026-12-10T00:00:00Z (in 3d 21h)\n    \
             hint: rotate\n    \
             see docs/observability.md#weft-check for hints\n\
             \n\
             Status check results are ×\n"
        );
        assert!(
            render(&[ok.clone(), warn]).ends_with("Status check results are ✔ (with warnings ‼)\n")
        );
        assert!(render(&[ok]).ends_with("\nStatus check results are ✔\n"));
    }

    #[tokio::test]
    async fn nothing_listening_fails_the_first_check_and_stops() {
        // A port just released: nothing listens there.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port");
        let (checks, report) = gather(addr, Duration::ZERO).await;
        assert!(report.is_none());
        assert_eq!(checks.len(), 1, "{checks:#?}");
        assert_eq!(checks[0].status, Status::Error);
        assert!(checks[0].details[0].contains("/live"), "{checks:#?}");
        assert!(checks[0].hint.as_deref().unwrap_or("").contains("--wait"));
    }
}
