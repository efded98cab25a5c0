//! `weft stat workloads|services|namespaces [NAME]`: golden metrics (success rate, requests per
//! second, latency percentiles, TCP connections, meshed/total) over a window, Linkerd's
//! `viz stat` shape. Read from the control plane's `GET /v1/stat/KIND`, which it computes from
//! the proxies' `/metrics` it scrapes, or asks its Prometheus for (`docs/observability.md`).

use std::time::Duration;

use serde_json::Value;

use crate::show::{self, millis, number, parse_window, rate, text, Output};

/// `weft stat`: golden metrics of workloads, services or namespaces.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    weft stat workloads -n demo\n  \
    weft stat services web -n demo --window 10s\n  \
    weft stat wl -A -o wide\n  \
    weft stat namespaces -o json\n\n\
    Workloads and namespaces count what their proxies served (inbound); a service counts what \
    meshed clients sent to it (their outbound). `-` means no requests in the window. A proxy the \
    control plane could not scrape lately is listed on stderr as stale. A control plane started \
    with --prometheus-url answers from Prometheus (PromQL); the table then says so on stderr. \
    See docs/observability.md.")]
pub struct StatArgs {
    /// What to show: `workloads` (`wl`), `services` (`svc`) or `namespaces` (`ns`).
    #[arg(value_enum, value_name = "KIND")]
    pub kind: Kind,
    /// Only this workload, service or namespace.
    #[arg(value_name = "NAME")]
    pub name: Option<String>,
    /// The namespace to show (ignored for `namespaces`).
    #[arg(short = 'n', long, default_value = "default", value_name = "NS")]
    pub namespace: String,
    /// Every namespace.
    #[arg(short = 'A', long, conflicts_with = "name")]
    pub all_namespaces: bool,
    /// The span the figures cover, from 10s to 1h.
    #[arg(long, default_value = "1m", value_name = "DURATION", value_parser = parse_window)]
    pub window: Duration,
    /// Output: a table, a wider table (bytes per second), or the control plane's rows as JSON
    /// or YAML.
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: Output,
    #[command(flatten)]
    pub api: crate::get::ApiAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    #[value(alias = "workload", alias = "wl")]
    Workloads,
    #[value(alias = "service", alias = "svc")]
    Services,
    #[value(alias = "namespace", alias = "ns")]
    Namespaces,
}

impl Kind {
    fn path(self) -> &'static str {
        match self {
            Kind::Workloads => "workloads",
            Kind::Services => "services",
            Kind::Namespaces => "namespaces",
        }
    }
}

pub async fn run(args: StatArgs) -> anyhow::Result<()> {
    let path = format!("/v1/stat/{}?{}", args.kind.path(), query(&args));
    let doc = args.api.json(&path).await?;
    let rows = doc["rows"].as_array().cloned().unwrap_or_default();
    let namespace = with_namespace(&args);
    show::print_rows(
        &rows,
        args.output,
        &format!("No {} found.", args.kind.path()),
        |rows, wide| table(rows, wide, namespace),
    )?;
    show::report_source(&doc, args.output);
    show::report_stale(&rows, |row| {
        format!("{}/{}", text(&row["namespace"]), text(&row["name"]))
    });
    Ok(())
}

/// The API query: which namespace and name, and the window in seconds.
fn query(args: &StatArgs) -> String {
    let mut q = vec![format!("window={}s", args.window.as_secs())];
    match (args.kind, &args.name) {
        // A namespace's name is the namespace.
        (Kind::Namespaces, Some(name)) => q.push(format!("namespace={name}")),
        (Kind::Namespaces, None) => {}
        (_, name) => {
            if !args.all_namespaces {
                q.push(format!("namespace={}", args.namespace));
            }
            if let Some(name) = name {
                q.push(format!("name={name}"));
            }
        }
    }
    q.join("&")
}

/// Whether the table needs a NAMESPACE column (rows of several namespaces).
fn with_namespace(args: &StatArgs) -> bool {
    args.all_namespaces && args.kind != Kind::Namespaces
}

/// Linkerd's columns: `NAME MESHED SUCCESS RPS LATENCY_P50 LATENCY_P95 LATENCY_P99 TCP_CONN`
/// (`NAMESPACE` first with `-A`; `wide` adds bytes per second).
fn table(rows: &[Value], wide: bool, namespace: bool) -> String {
    let mut header = vec![
        "NAME",
        "MESHED",
        "SUCCESS",
        "RPS",
        "LATENCY_P50",
        "LATENCY_P95",
        "LATENCY_P99",
        "TCP_CONN",
    ];
    if namespace {
        header.insert(0, "NAMESPACE");
    }
    if wide {
        header.extend(["READ_BYTES/SEC", "WRITE_BYTES/SEC"]);
    }
    let mut out = vec![header.into_iter().map(String::from).collect::<Vec<_>>()];
    for row in rows {
        let mut cells = vec![
            text(&row["name"]),
            format!("{}/{}", number(&row["meshed"]), number(&row["total"])),
            show::percent(&row["success_rate"]),
            show::rps(&row["rps"], &row["success_rate"]),
            millis(&row["latency_ms_p50"]),
            millis(&row["latency_ms_p95"]),
            millis(&row["latency_ms_p99"]),
            number(&row["tcp_connections"]),
        ];
        if namespace {
            cells.insert(0, text(&row["namespace"]));
        }
        if wide {
            cells.push(rate(&row["read_bytes_per_sec"]));
            cells.push(rate(&row["write_bytes_per_sec"]));
        }
        out.push(cells);
    }
    show::columns(&out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use serde_json::json;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: StatArgs,
    }

    fn parse(argv: &[&str]) -> Result<StatArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("stat").chain(argv.iter().copied())).map(|c| c.args)
    }

    #[test]
    fn kinds_have_linkerd_aliases_and_queries() {
        let a = parse(&["wl", "web", "-n", "demo", "--window", "10s"]).unwrap();
        assert_eq!(a.kind, Kind::Workloads);
        assert_eq!(query(&a), "window=10s&namespace=demo&name=web");
        let a = parse(&["svc", "-A"]).unwrap();
        assert_eq!(a.kind, Kind::Services);
        assert_eq!(query(&a), "window=60s");
        assert!(with_namespace(&a));
        let a = parse(&["ns", "demo"]).unwrap();
        assert_eq!(query(&a), "window=60s&namespace=demo");
        assert!(!with_namespace(&a));
        assert_eq!(parse(&["workloads"]).unwrap().namespace, "default");
        let at = |flag: &str| parse(&["wl", flag, "10.0.0.5:8085"]).unwrap().api.addr;
        assert_eq!(at("--api-addr").to_string(), "10.0.0.5:8085");
        assert_eq!(
            at("--control-api").to_string(),
            "10.0.0.5:8085",
            "the older name"
        );
    }

    #[test]
    fn window_is_bounded() {
        assert!(parse(&["wl", "--window", "5s"]).is_err());
        assert!(parse(&["wl", "--window", "2h"]).is_err());
        assert_eq!(
            parse(&["wl", "--window", "1h"]).unwrap().window,
            Duration::from_secs(3600)
        );
        assert!(parse(&["wl", "web", "-A"]).is_err(), "-A with a name");
    }

    #[test]
    fn table_formats_figures_and_absent_values() {
        let rows = [
            json!({"namespace": "demo", "name": "web", "meshed": 1, "total": 1,
                   "success_rate": 0.995, "rps": 20.04, "latency_ms_p50": 0.84,
                   "latency_ms_p95": 4.0, "latency_ms_p99": 12.6, "tcp_connections": 3,
                   "read_bytes_per_sec": 1000.0, "write_bytes_per_sec": 2500.5}),
            json!({"namespace": "demo", "name": "idle", "meshed": 0, "total": 1,
                   "success_rate": null, "rps": 0.0, "latency_ms_p50": null,
                   "latency_ms_p95": null, "latency_ms_p99": null, "tcp_connections": 0,
                   "read_bytes_per_sec": 0.0, "write_bytes_per_sec": 0.0}),
        ];
        let t = table(&rows, false, false);
        let lines: Vec<Vec<&str>> = t.lines().map(|l| l.split_whitespace().collect()).collect();
        assert_eq!(
            lines[0],
            [
                "NAME",
                "MESHED",
                "SUCCESS",
                "RPS",
                "LATENCY_P50",
                "LATENCY_P95",
                "LATENCY_P99",
                "TCP_CONN"
            ]
        );
        assert_eq!(
            lines[1],
            ["web", "1/1", "99.50%", "20.0rps", "0.8ms", "4.0ms", "13ms", "3"]
        );
        assert_eq!(lines[2], ["idle", "0/1", "-", "-", "-", "-", "-", "0"]);
        let wide = table(&rows, true, true);
        let first: Vec<&str> = wide.lines().nth(1).unwrap().split_whitespace().collect();
        assert_eq!(first[0], "demo");
        assert_eq!(&first[9..], ["1000.0B/s", "2500.5B/s"]);
    }
}
