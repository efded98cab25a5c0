//! `weft routes SERVICE`: golden metrics per route of a Service (Linkerd's `viz routes`):
//! success rate, requests per second and latency as meshed clients saw each request after
//! retries. Read from the control plane's `GET /v1/routes` (`docs/observability.md`).

use std::time::Duration;

use serde_json::Value;

use crate::show::{self, number, parse_window, text, Output};

/// `weft routes`: golden metrics per route of a Service.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    weft routes svc/ratings -n demo\n  \
    weft routes books -n demo --window 10s -o wide\n  \
    weft routes svc/ratings -n demo -o json\n\n\
    One row per route of the Service with series in the window, summed over every meshed \
    client; [default] is the route of a Service without routes. Latencies are upper bounds \
    (≤50ms): the route histogram's buckets are 50 ms, 500 ms, 1 s and 10 s; `weft stat svc` has \
    finer per-attempt latencies. See docs/observability.md.")]
pub struct RoutesArgs {
    /// The Service: `NAME` or `svc/NAME`.
    #[arg(value_name = "SERVICE", value_parser = parse_service)]
    pub service: String,
    /// The Service's namespace.
    #[arg(short = 'n', long, default_value = "default", value_name = "NS")]
    pub namespace: String,
    /// The span the figures cover, from 10s to 1h.
    #[arg(long, default_value = "1m", value_name = "DURATION", value_parser = parse_window)]
    pub window: Duration,
    /// Output: a table, a wider table (port, route kind, requests), or the control plane's
    /// rows as JSON or YAML.
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: Output,
    #[command(flatten)]
    pub api: crate::get::ApiAddr,
}

/// `svc/NAME`, `service/NAME`, `services/NAME` or `NAME` → `NAME`.
fn parse_service(s: &str) -> Result<String, String> {
    let name = match s.split_once('/') {
        None => s,
        Some(("svc" | "service" | "services", name)) => name,
        Some((kind, _)) => {
            return Err(format!(
                "routes belong to Services: expected NAME or svc/NAME, got {kind}/…"
            ))
        }
    };
    if name.is_empty() {
        return Err("the Service's name is empty".into());
    }
    Ok(name.to_string())
}

pub async fn run(args: RoutesArgs) -> anyhow::Result<()> {
    let doc = args
        .api
        .json(&format!("/v1/routes?{}", query(&args)))
        .await?;
    let rows = doc["rows"].as_array().cloned().unwrap_or_default();
    let empty = format!(
        "No routes of svc/{} in namespace {} have series in the window.",
        args.service, args.namespace
    );
    show::print_rows(&rows, args.output, &empty, table)?;
    show::report_source(&doc, args.output);
    // A route sums several clients; the row's error names the first with one.
    show::report_stale(&rows, |row| {
        format!("a client of route {}", text(&row["route"]))
    });
    Ok(())
}

fn query(args: &RoutesArgs) -> String {
    format!(
        "window={}s&namespace={}&service={}",
        args.window.as_secs(),
        args.namespace,
        args.service
    )
}

/// Linkerd's columns: `ROUTE SERVICE SUCCESS RPS LATENCY_P50 LATENCY_P95 LATENCY_P99`; `wide`
/// adds `PORT KIND REQUESTS`.
fn table(rows: &[Value], wide: bool) -> String {
    let mut header = vec![
        "ROUTE",
        "SERVICE",
        "SUCCESS",
        "RPS",
        "LATENCY_P50",
        "LATENCY_P95",
        "LATENCY_P99",
    ];
    if wide {
        header.extend(["PORT", "KIND", "REQUESTS"]);
    }
    let mut out = vec![header.into_iter().map(String::from).collect::<Vec<_>>()];
    for row in rows {
        let mut cells = vec![
            text(&row["route"]),
            text(&row["service"]),
            show::percent(&row["success_rate"]),
            show::rps(&row["rps"], &row["success_rate"]),
            at_most(&row["latency_ms_p50"]),
            at_most(&row["latency_ms_p95"]),
            at_most(&row["latency_ms_p99"]),
        ];
        if wide {
            cells.push(number(&row["port"]));
            cells.push(text(&row["route_kind"]));
            cells.push(number(&row["requests"]));
        }
        out.push(cells);
    }
    show::columns(&out)
}

/// A latency upper bound: `≤50ms`.
fn at_most(v: &Value) -> String {
    match show::millis(v).as_str() {
        "-" => "-".into(),
        ms => format!("≤{ms}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use serde_json::json;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: RoutesArgs,
    }

    fn parse(argv: &[&str]) -> Result<RoutesArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("routes").chain(argv.iter().copied())).map(|c| c.args)
    }

    #[test]
    fn services_are_named_either_way() {
        let a = parse(&["svc/ratings", "-n", "demo", "--window", "10s"]).unwrap();
        assert_eq!(a.service, "ratings");
        assert_eq!(query(&a), "window=10s&namespace=demo&service=ratings");
        assert_eq!(parse(&["books"]).unwrap().service, "books");
        assert_eq!(parse(&["service/books"]).unwrap().service, "books");
        assert_eq!(parse(&["books"]).unwrap().namespace, "default");
        let err = parse(&["deploy/books"]).unwrap_err().to_string();
        assert!(err.contains("expected NAME or svc/NAME"), "{err}");
        assert!(parse(&["svc/"]).is_err());
        assert!(parse(&[]).is_err(), "SERVICE is required");
    }

    #[test]
    fn table_shows_routes_with_latency_bounds() {
        let rows = [
            json!({"route": "ratings", "service": "ratings", "port": 8080,
                   "route_kind": "HTTPRoute", "requests": 1000, "success_rate": 0.996,
                   "rps": 16.67, "latency_ms_p50": 50.0, "latency_ms_p95": 500.0,
                   "latency_ms_p99": 500.0}),
            json!({"route": "[default]", "service": "ratings", "port": 8080,
                   "route_kind": "default", "requests": 0, "success_rate": null, "rps": 0.0,
                   "latency_ms_p50": null, "latency_ms_p95": null, "latency_ms_p99": null}),
        ];
        let lines: Vec<Vec<String>> = table(&rows, true)
            .lines()
            .map(|l| l.split_whitespace().map(String::from).collect())
            .collect();
        assert_eq!(
            lines[0],
            [
                "ROUTE",
                "SERVICE",
                "SUCCESS",
                "RPS",
                "LATENCY_P50",
                "LATENCY_P95",
                "LATENCY_P99",
                "PORT",
                "KIND",
                "REQUESTS"
            ]
        );
        assert_eq!(
            lines[1],
            [
                "ratings",
                "ratings",
                "99.60%",
                "16.7rps",
                "≤50ms",
                "≤500ms",
                "≤500ms",
                "8080",
                "HTTPRoute",
                "1000"
            ]
        );
        assert_eq!(
            lines[2],
            [
                "[default]",
                "ratings",
                "-",
                "-",
                "-",
                "-",
                "-",
                "8080",
                "default",
                "0"
            ]
        );
    }
}
