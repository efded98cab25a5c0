//! `weft-proxy`: the sidecar proxy. Configured only through `WEFT_PROXY_*` variables
//! (see docs/proxy-config.md); logs to stderr; prints one JSON line on stdout once listening.
//! `weft-proxy await` waits for a proxy beside it to be ready ([`await_ready`]).

mod await_ready;

use std::process::ExitCode;

use tracing_subscriber::EnvFilter;
use weft_proxy::{config, Config, Env, ProcessEnv};

fn main() -> ExitCode {
    let env = ProcessEnv;
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("await") {
        return ExitCode::from(await_ready::run(&args[1..], &env));
    }
    let filter = env
        .get(config::ENV_LOG)
        .filter(|f| !f.trim().is_empty())
        .unwrap_or_else(|| config::DEFAULT_LOG.to_string());
    let (filter, bad_filter) = match EnvFilter::try_new(&filter) {
        Ok(f) => (f, None),
        Err(e) => (EnvFilter::new(config::DEFAULT_LOG), Some((filter, e))),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal, and never with a non-empty NO_COLOR
        // (no-color.org), as the weft binary does.
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        )
        .init();

    let config = match Config::from_env(&env) {
        Ok(c) if bad_filter.is_none() => c,
        result => {
            eprintln!("weft-proxy: invalid configuration:");
            if let Err(errors) = result {
                for line in errors.to_string().lines() {
                    eprintln!("  {line}");
                }
            }
            if let Some((value, e)) = bad_filter {
                eprintln!("  {}: {e} (got {value:?})", config::ENV_LOG);
            }
            return ExitCode::from(2);
        }
    };

    // Every connection is a descriptor (a proxied one two): the connection limits mean nothing
    // under a soft limit of 1024.
    match weft_proxy::sys::raise_nofile_limit() {
        Ok((before, after)) => {
            let wanted = 2
                * (config.inbound_limits.max_connections + config.outbound_limits.max_connections)
                    as u64;
            if after < wanted {
                tracing::warn!(
                    limit = after,
                    wanted,
                    "RLIMIT_NOFILE is under twice the connection limits: accepts may fail (EMFILE) before the limits refuse"
                );
            } else if before < after {
                tracing::debug!(before, after, "raised RLIMIT_NOFILE to its hard limit");
            }
        }
        Err(e) => tracing::warn!(error = %e, "reading or raising RLIMIT_NOFILE failed"),
    }

    // Before the runtime starts: its threads, and every worker thread, inherit the slice.
    if let Some(slice) = config.sched_slice {
        match weft_proxy::sys::set_sched_slice(slice) {
            Ok(got) => tracing::debug!(?got, "scheduler slice set"),
            Err(e) => tracing::info!(
                error = %e,
                "the kernel's default scheduler slice stays in force ({})",
                weft_proxy::config::ENV_SCHED_SLICE
            ),
        }
    }

    let rt = match config.runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("weft-proxy: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(weft_proxy::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weft-proxy: {e}");
            ExitCode::FAILURE
        }
    }
}
