//! `weft-bench`: the processes `bench/run` drives. Each subcommand prints one JSON line on stdout
//! (the backend's once it listens; the clients' once they are done) so the harness never parses
//! human text.
//!
//! - `backend`: HTTP/1.1 + h2c server answering every request with a small 200, plus a TCP sink.
//! - `load`: fixed-rate open-loop load (latency from the intended send time), or closed-loop
//!   maximum throughput with `--rate 0`.
//! - `tcp`: one large opaque stream through a proxy, MB/s.
//! - `idle`: open N keep-alive connections, one request each, then hold them.
//! - `wakeup`: the CPU one sleep and wake-up of a thread costs on this machine (no runtime).
//! - `cp-store`, `cp-etcd-load`, `cp-scale`: the control-plane benchmark (a large store in files
//!   or in etcd; many Destination.Get watch streams on one or more replicas and the time a store
//!   change takes to reach them).

mod backend;
mod cp_etcd;
mod cp_scale;
mod cp_store;
mod load;
mod tcp;
mod wakeup;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "weft-bench",
    about = "Weft benchmark tools (driven by bench/run)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve HTTP/1.1 and h2c on one port and a TCP sink on another.
    Backend(backend::Args),
    /// Fixed-rate (open-loop) or maximum (closed-loop, `--rate 0`) HTTP load.
    Load(load::Args),
    /// Opaque TCP throughput of one large stream.
    Tcp(tcp::ThroughputArgs),
    /// Hold N idle keep-alive connections open.
    Idle(tcp::IdleArgs),
    /// The CPU time one sleep and wake-up costs on this machine (two threads, one byte).
    Wakeup(wakeup::Args),
    /// Write the control-plane benchmark's store (services and workloads as YAML).
    CpStore(cp_store::Args),
    /// Write the same services and workloads into etcd, one key per resource.
    CpEtcdLoad(cp_etcd::LoadArgs),
    /// Watch streams against `weft control`; store changes and their fan-out latency.
    CpScale(cp_scale::Args),
    /// The soak: mixed traffic through the namespace cluster under churn, control-plane
    /// restarts, certificate renewals and a trust-anchor rotation (root; `bench/soak`).
    Soak(bench::reliability::soak::Args),
    /// The chaos scenarios on the namespace cluster (root; `bench/chaos`).
    Chaos(bench::reliability::chaos::Args),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Plain threads, pinned: a runtime's own threads would only be in the way.
    let cli = match cli.command {
        Command::Wakeup(args) => return wakeup::run(args),
        command => Cli { command },
    };
    // Worker threads = the CPUs this process may run on (`taskset` narrows it), so pinning the
    // clients to one core also gives them one worker.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Backend(args) => backend::run(args).await,
            Command::Load(args) => load::run(args).await,
            Command::Tcp(args) => tcp::throughput(args).await,
            Command::Idle(args) => tcp::idle(args).await,
            Command::CpStore(args) => cp_store::run(args).await,
            Command::CpEtcdLoad(args) => cp_etcd::load(args).await,
            Command::CpScale(args) => cp_scale::run(args).await,
            Command::Wakeup(_) => unreachable!("run before the runtime starts"),
            Command::Soak(args) => soak(args).await,
            Command::Chaos(args) => chaos(args).await,
        }
    })
}

/// The root the namespace cluster needs, or an error saying what is missing.
fn root() -> anyhow::Result<weft_testbed::Root> {
    weft_testbed::require_root(&["curl"])
        .ok_or_else(|| anyhow::anyhow!("the namespace cluster cannot be built here (see above)"))
}

/// Writes `value` to `path` (pretty JSON).
fn write_json(path: &std::path::Path, value: &serde_json::Value) -> anyhow::Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(value)? + "\n")?;
    eprintln!("figures written to {}", path.display());
    Ok(())
}

async fn soak(args: bench::reliability::soak::Args) -> anyhow::Result<()> {
    use bench::reliability::soak;
    let root = root()?;
    println!("soak: {args:?}");
    let report = soak::run(root, &args, |i| println!("{}", soak::interval_line(i))).await?;
    println!("{}", soak::summary(&report));
    if let Some(path) = &args.json {
        write_json(path, &report.to_json())?;
    }
    anyhow::ensure!(
        report.problems.is_empty(),
        "the soak failed: {}",
        report.problems.join("; ")
    );
    Ok(())
}

async fn chaos(args: bench::reliability::chaos::Args) -> anyhow::Result<()> {
    use bench::reliability::chaos;
    let root = root()?;
    let report = chaos::run(root, &args, |s| println!("{}", chaos::scenario_line(s))).await?;
    if let Some(path) = &args.json {
        write_json(path, &report.to_json())?;
    }
    anyhow::ensure!(
        report.problems.is_empty(),
        "chaos: {}",
        report.problems.join("; ")
    );
    Ok(())
}

/// CPU seconds (user + system) this process has used so far.
pub fn self_cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes into the struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid pointer.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    if rc != 0 {
        return f64::NAN;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(usage.ru_utime) + tv(usage.ru_stime)
}
