//! `weft edges [workloads]`: which workload called which over a window, and whether that
//! traffic was secured by mTLS with which identities (Linkerd's `viz edges`). Read from the
//! control plane's `GET /v1/edges`, computed from the proxies' `/metrics` it scrapes
//! (`docs/observability.md`).

use std::time::Duration;

use serde_json::Value;

use crate::show::{self, parse_window, text, Output};

/// `weft edges`: who calls whom, with which identities.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    weft edges -n demo\n  \
    weft edges workloads -n demo -o wide --window 10s\n  \
    weft edges -A -o json\n\n\
    One row per source and destination workload with traffic in the window, seen from the \
    source's proxy. SECURED is √ when all of it went over mTLS. DST_CLUSTER, shown when a row \
    calls a linked cluster, names it (DST is then the multicluster mirror, e.g. web-west). With \
    -o wide: SERVER_ID, the identity the source's proxy verified; CLIENT_ID, the source's \
    identity when the destination's proxy recorded it, or the caller a multicluster gateway \
    forwarded (else -); MSG, why traffic was not mTLS. See docs/observability.md.")]
pub struct EdgesArgs {
    /// What the edges join: `workloads` (`wl`), the only kind.
    #[arg(value_enum, value_name = "KIND", default_value = "workloads")]
    pub kind: Kind,
    /// Edges with an end in this namespace.
    #[arg(short = 'n', long, default_value = "default", value_name = "NS")]
    pub namespace: String,
    /// Every edge, whatever its namespaces.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// The span the figures cover, from 10s to 1h.
    #[arg(long, default_value = "1m", value_name = "DURATION", value_parser = parse_window)]
    pub window: Duration,
    /// Output: a table, a wider table (identities and why not secured), or the control
    /// plane's rows as JSON or YAML.
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: Output,
    #[command(flatten)]
    pub api: crate::get::ApiAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    #[value(alias = "workload", alias = "wl")]
    Workloads,
}

pub async fn run(args: EdgesArgs) -> anyhow::Result<()> {
    let doc = args
        .api
        .json(&format!("/v1/edges?{}", query(&args)))
        .await?;
    let rows = doc["rows"].as_array().cloned().unwrap_or_default();
    let empty = if args.all_namespaces {
        "No edges found.".to_string()
    } else {
        format!("No edges found in namespace {}.", args.namespace)
    };
    show::print_rows(&rows, args.output, &empty, table)?;
    show::report_source(&doc, args.output);
    show::report_stale(&rows, |row| {
        format!("{}/{}", text(&row["src_namespace"]), text(&row["src"]))
    });
    Ok(())
}

/// The API query: the namespace (unless `-A`) and the window in seconds.
fn query(args: &EdgesArgs) -> String {
    let mut q = vec![format!("window={}s", args.window.as_secs())];
    if !args.all_namespaces {
        q.push(format!("namespace={}", args.namespace));
    }
    q.join("&")
}

/// Linkerd's columns: `SRC DST SRC_NS DST_NS SECURED`, with `DST_CLUSTER` after `DST_NS` when
/// a row's destination is in a linked cluster; `wide` adds `CLIENT_ID SERVER_ID MSG`.
fn table(rows: &[Value], wide: bool) -> String {
    let clusters = rows.iter().any(|r| r["dst_cluster"].is_string());
    let mut header = vec!["SRC", "DST", "SRC_NS", "DST_NS"];
    if clusters {
        header.push("DST_CLUSTER");
    }
    header.push("SECURED");
    if wide {
        header.extend(["CLIENT_ID", "SERVER_ID", "MSG"]);
    }
    let mut out = vec![header.into_iter().map(String::from).collect::<Vec<_>>()];
    for row in rows {
        let mut cells = vec![
            text(&row["src"]),
            text(&row["dst"]),
            text(&row["src_namespace"]),
            text(&row["dst_namespace"]),
        ];
        if clusters {
            cells.push(text(&row["dst_cluster"]));
        }
        cells.push(if row["secured"] == true { "√" } else { "×" }.to_string());
        if wide {
            cells.push(text(&row["client_id"]));
            cells.push(text(&row["server_id"]));
            cells.push(text(&row["no_tls_reason"]));
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
        args: EdgesArgs,
    }

    fn parse(argv: &[&str]) -> Result<EdgesArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("edges").chain(argv.iter().copied())).map(|c| c.args)
    }

    #[test]
    fn kind_is_optional_and_namespaces_become_the_query() {
        let a = parse(&["-n", "demo", "--window", "10s"]).unwrap();
        assert_eq!(a.kind, Kind::Workloads);
        assert_eq!(query(&a), "window=10s&namespace=demo");
        let a = parse(&["wl", "-A"]).unwrap();
        assert_eq!(query(&a), "window=60s");
        assert_eq!(parse(&["workloads"]).unwrap().namespace, "default");
        assert!(parse(&["pods"]).is_err());
        assert!(parse(&["--window", "2h"]).is_err());
    }

    #[test]
    fn table_marks_secured_edges_and_wide_adds_identities() {
        let rows = [
            json!({"src_namespace": "demo", "src": "web", "dst_namespace": "demo", "dst": "books",
                   "client_id": "web.demo.serviceaccount.identity.weft.cluster.local",
                   "server_id": "books.demo.serviceaccount.identity.weft.cluster.local",
                   "secured": true, "no_tls_reason": null}),
            json!({"src_namespace": "demo", "src": "web", "dst_namespace": "demo", "dst": "legacy",
                   "client_id": null, "server_id": null, "secured": false,
                   "no_tls_reason": "not_provided_by_service_discovery"}),
        ];
        let lines: Vec<Vec<String>> = table(&rows, false)
            .lines()
            .map(|l| l.split_whitespace().map(String::from).collect())
            .collect();
        assert_eq!(lines[0], ["SRC", "DST", "SRC_NS", "DST_NS", "SECURED"]);
        assert_eq!(lines[1], ["web", "books", "demo", "demo", "√"]);
        assert_eq!(lines[2], ["web", "legacy", "demo", "demo", "×"]);
        let wide: Vec<Vec<String>> = table(&rows, true)
            .lines()
            .map(|l| l.split_whitespace().map(String::from).collect())
            .collect();
        assert_eq!(wide[0][5..], ["CLIENT_ID", "SERVER_ID", "MSG"]);
        assert_eq!(
            wide[1][5..],
            [
                "web.demo.serviceaccount.identity.weft.cluster.local",
                "books.demo.serviceaccount.identity.weft.cluster.local",
                "-"
            ]
        );
        assert_eq!(
            wide[2][5..],
            ["-", "-", "not_provided_by_service_discovery"]
        );
    }

    #[test]
    fn a_call_to_a_linked_cluster_adds_the_dst_cluster_column() {
        let rows = [
            json!({"src_namespace": "default", "src": "frontend", "dst_namespace": "default",
                   "dst": "web-west", "dst_cluster": "west", "client_id": null,
                   "server_id": "gateway.weft-multicluster.serviceaccount.identity.weft.cluster.local",
                   "secured": true, "no_tls_reason": null}),
            json!({"src_namespace": "default", "src": "frontend", "dst_namespace": "default",
                   "dst": "books", "dst_cluster": null, "client_id": null, "server_id": null,
                   "secured": true, "no_tls_reason": null}),
        ];
        let lines: Vec<Vec<String>> = table(&rows, true)
            .lines()
            .map(|l| l.split_whitespace().map(String::from).collect())
            .collect();
        assert_eq!(
            lines[0],
            [
                "SRC",
                "DST",
                "SRC_NS",
                "DST_NS",
                "DST_CLUSTER",
                "SECURED",
                "CLIENT_ID",
                "SERVER_ID",
                "MSG"
            ]
        );
        assert_eq!(
            lines[1][..6],
            ["frontend", "web-west", "default", "default", "west", "√"]
        );
        assert_eq!(
            lines[2][..6],
            ["frontend", "books", "default", "default", "-", "√"]
        );
        // Only local rows: no such column.
        assert!(!table(&rows[1..], false).contains("DST_CLUSTER"));
    }
}
