//! `weft`: the command line of the Weft service mesh (everything but the proxy itself).
//!
//! - `weft control`: the control plane (see `docs/control-plane.md`, `docs/cli.md`).
//! - `weft dashboard`: opens the web dashboard the control plane serves.
//! - `weft demo`: a meshed demo application with live golden metrics (`docs/demo.md`).
//! - `weft demo-service` (hidden): one service of the demo application.

/// `eprintln!` for messages that share stderr with child processes (`weft run`'s proxy and
/// command): the line is formatted first and written in one `write`, so a child's log line cannot
/// land in the middle of it (unbuffered stderr writes each formatting piece on its own).
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::say_line(format_args!($($arg)*))
    };
}

/// The body of `say!`: one line, one write; a failed write to stderr is nowhere to report.
fn say_line(args: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let line = format!("{args}\n");
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

mod authz;
mod check;
mod control;
mod dashboard;
mod demo;
mod edges;
mod get;
mod identity;
mod init;
mod inject;
mod install;
mod multicluster;
mod resources;
mod routes;
mod run;
mod show;
mod stat;
mod tap;
mod top;

use clap::{Parser, Subcommand};

/// Weft service mesh: control plane, demo and tools.
#[derive(Debug, Parser)]
#[command(
    name = "weft",
    version,
    about = "Weft service mesh: control plane, demo and tools (the proxy is `weft-proxy`)",
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the control plane: Destination and policy gRPC from a directory of YAML resources,
    /// plus the workload registration API. Prints one JSON "listening" line on stdout.
    Control(control::ControlArgs),
    /// Show the inbound policy in force on each port of a workload: the Server or default
    /// policy deciding it, its routes, and who each authorization admits.
    Authz(authz::AuthzArgs),
    /// Check the mesh's health: the control plane, the store, identity and every meshed proxy,
    /// one ✔/‼/× line per check with hints; exits 1 when a check fails.
    Check(check::CheckArgs),
    /// Open the web dashboard the control plane serves (workloads, services, topology with
    /// mTLS, routes, live tap): prints its URL and opens it in $BROWSER or with xdg-open.
    Dashboard(dashboard::DashboardArgs),
    /// Run a meshed demo application (web, books, books-v2, ratings, traffic, each with a
    /// weft-proxy sidecar) and show live golden metrics per service, edge and route; after 20 s
    /// it applies a traffic policy (retries on ratings, a 90/10 canary of books).
    Demo(demo::DemoArgs),
    /// Show which workload calls which, and whether that traffic is secured by mTLS with which
    /// client and server identities, from the control plane's telemetry.
    Edges(edges::EdgesArgs),
    /// Show the documents in force, of any kind, from either store: `weft get httproutes`,
    /// `weft get server web-http -o yaml`; `weft get services` adds their cluster IPs.
    Get(get::GetArgs),
    /// Apply a YAML file's documents (`-f FILE`, `-f -`: stdin) through the control plane, as
    /// kubectl: each document created, configured or unchanged, or its error (exit 1).
    Apply(resources::ApplyArgs),
    /// Delete the documents a YAML file names (`-f FILE`) or one document (`KIND NAME -n NS`)
    /// through the control plane; exit 1 if any was not there or could not be deleted.
    Delete(resources::DeleteArgs),
    /// Manage the mesh's identity CA: `init`, trust-anchor `rotate`, `status`.
    Identity(identity::IdentityArgs),
    /// Run one service of the demo application (started by `weft demo`).
    #[command(hide = true)]
    DemoService(demo::app::ServiceArgs),
    /// Install the transparent-proxy iptables rules in the current network namespace (what a
    /// mesh init container does). `--dry-run` prints them.
    Init(init::InitArgs),
    /// Add the weft-proxy sidecar to the pod templates of Kubernetes manifests (a file or `-`),
    /// as the control plane's admission webhook would; prints the manifests on stdout.
    Inject(inject::InjectArgs),
    /// Remove what `weft inject` added from Kubernetes manifests (a file or `-`); prints them.
    Uninject(inject::UninjectArgs),
    /// Show golden metrics (success rate, requests per second, latency percentiles, TCP
    /// connections) of workloads, services or namespaces, from the control plane's telemetry.
    Stat(stat::StatArgs),
    /// Show golden metrics (success rate, requests per second, latency) per route of a
    /// service, as meshed clients saw each request after retries.
    Routes(routes::RoutesArgs),
    /// Watch a workload's requests live, as its proxy sees them (inbound and outbound): one
    /// line per request start, response and end, or JSON lines.
    Tap(tap::TapArgs),
    /// A live table of a workload's busiest request paths (source, destination, method, path,
    /// count, latency, success rate), redrawn in place; q quits.
    Top(top::TopArgs),
    /// Print the Kubernetes manifests of the mesh for `kubectl apply -f -`: the CRDs
    /// (`--crds`, apply first), then the control plane (namespace, RBAC, identity, Deployment,
    /// Services, injector webhook).
    Install(install::InstallArgs),
    /// Print the current version's manifests for an installed mesh, keeping its identity
    /// (`--identity-dir` is required: an upgrade never makes new trust anchors).
    Upgrade(install::UpgradeArgs),
    /// Link this cluster to another and see the links (Linkerd's `linkerd multicluster`):
    /// `link`, `unlink`, `check`, `gateways`.
    Multicluster(multicluster::MulticlusterArgs),
    /// Run a command as a meshed workload: as root in its own network namespace with
    /// transparent interception and a sidecar proxy; otherwise in explicit mode (HTTP_PROXY).
    Run(run::RunArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // The demo's table owns the terminal: only problems are logged unless WEFT_LOG says otherwise.
    init_tracing(match cli.command {
        Command::Demo(_) | Command::DemoService(_) => "warn",
        Command::Control(_) => "warn,weft=info,weft_control=info",
        Command::Identity(_)
        | Command::Get(_)
        | Command::Apply(_)
        | Command::Delete(_)
        | Command::Authz(_)
        | Command::Check(_)
        | Command::Dashboard(_)
        | Command::Stat(_)
        | Command::Edges(_)
        | Command::Routes(_)
        | Command::Tap(_)
        | Command::Top(_)
        | Command::Install(_)
        | Command::Upgrade(_)
        | Command::Multicluster(_) => "warn",
        Command::Init(_) | Command::Run(_) | Command::Inject(_) | Command::Uninject(_) => "warn",
    });
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("weft: cannot start the async runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Control(args) => control::run(args).await,
            Command::Authz(args) => authz::run(args).await,
            Command::Check(args) => check::run(args).await,
            Command::Dashboard(args) => dashboard::run(args).await,
            Command::Demo(args) => demo::run(args).await,
            Command::Edges(args) => edges::run(args).await,
            Command::Get(args) => get::run(args).await,
            Command::Apply(args) => resources::apply(args).await,
            Command::Delete(args) => resources::delete(args).await,
            Command::Identity(args) => identity::run(args),
            Command::DemoService(args) => demo::app::run(args).await,
            Command::Init(args) => init::run(args).await,
            Command::Inject(args) => inject::inject(args),
            Command::Uninject(args) => inject::uninject(args),
            Command::Install(args) => install::install(args),
            Command::Upgrade(args) => install::upgrade(args),
            Command::Multicluster(args) => multicluster::run(args).await,
            Command::Routes(args) => routes::run(args).await,
            Command::Run(args) => run::run(args).await,
            Command::Stat(args) => stat::run(args).await,
            Command::Tap(args) => tap::run(args).await,
            Command::Top(args) => top::run(args).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("weft: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr (stdout carries the listening line, tables and JSON); `WEFT_LOG` filters.
fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WEFT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour(terminal, std::env::var_os("NO_COLOR")))
        .init();
}

/// Colour codes only for a person at a terminal: a log file or a pipe gets plain text, and a
/// non-empty `NO_COLOR` (no-color.org) turns colour off everywhere.
fn colour(stderr_is_terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(colour(true, Some("".into())));
        assert!(!colour(true, Some("1".into())));
        assert!(!colour(false, None));
    }

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn control_flags_have_contract_defaults() {
        let cli = Cli::try_parse_from(["weft", "control", "--store", "/tmp/s"]).expect("parse");
        let Command::Control(args) = cli.command else {
            panic!("not control")
        };
        let config = args.config();
        assert_eq!(config.grpc_addr.to_string(), "127.0.0.1:8086");
        assert_eq!(config.api_addr.to_string(), "127.0.0.1:8085");
        assert_eq!(config.cluster_domain, "cluster.local");
        assert_eq!(config.trust_domain, "cluster.local");
    }

    #[test]
    fn demo_flags_parse() {
        let cli =
            Cli::try_parse_from(["weft", "demo", "--duration", "5s", "--json", "--rps", "50"])
                .expect("parse");
        let Command::Demo(args) = cli.command else {
            panic!("not demo")
        };
        assert_eq!(args.duration, Some(std::time::Duration::from_secs(5)));
        assert!(args.json);
        assert_eq!(args.rps, 50.0);
    }

    #[test]
    fn demo_service_is_hidden_but_parses() {
        let help = Cli::command().render_help().to_string();
        assert!(!help.contains("demo-service"));
        let cli =
            Cli::try_parse_from(["weft", "demo-service", "ratings", "--listen", "127.0.0.1:0"])
                .expect("parse");
        assert!(matches!(cli.command, Command::DemoService(_)));
    }
}
