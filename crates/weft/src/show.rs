//! What the operator commands (`get`, `authz`, `stat`, `edges`, `routes`) share to print the
//! control plane's answers: the `-o` formats, the `--window` flag, table columns and the way a
//! cell shows a figure or its absence (`-`).

use std::time::Duration;

use serde_json::Value;

/// `-o`: a table, a wider table, or the control plane's rows as JSON or YAML.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Wide,
    Json,
    Yaml,
}

/// Shortest and longest `--window` (what the control plane keeps).
const WINDOW_RANGE: (Duration, Duration) = (Duration::from_secs(10), Duration::from_secs(3600));

/// `--window`: a duration from 10s to 1h.
pub fn parse_window(s: &str) -> Result<Duration, String> {
    let d = crate::demo::parse_duration(s)?;
    let (min, max) = WINDOW_RANGE;
    if d < min || d > max {
        return Err(format!("must be between 10s and 1h, got {s}"));
    }
    Ok(d)
}

/// Prints `rows` as `output` asks: JSON or YAML as they are, else `table(rows, wide)`, or
/// `empty` on stderr when there are none.
pub fn print_rows(
    rows: &[Value],
    output: Output,
    empty: &str,
    table: impl Fn(&[Value], bool) -> String,
) -> anyhow::Result<()> {
    match output {
        Output::Json => println!("{}", Value::Array(rows.to_vec())),
        Output::Yaml => print!("{}", yaml_serde::to_string(rows)?),
        Output::Table | Output::Wide if rows.is_empty() => eprintln!("{empty}"),
        Output::Table | Output::Wide => print!("{}", table(rows, output == Output::Wide)),
    }
    Ok(())
}

/// Says on stderr, under a table, that the figures of `doc` (an API answer) come from the
/// control plane's Prometheus rather than its own scrapes; JSON and YAML rows say it themselves.
pub fn report_source(doc: &Value, output: Output) {
    if matches!(output, Output::Table | Output::Wide) && doc["source"] == "prometheus" {
        eprintln!("* source: Prometheus (the control plane's --prometheus-url)");
    }
}

/// Lists on stderr, once each, the proxies a row's figures came from that could not be scraped
/// lately: `* stale: WHO (last scrape: ERROR)`, `who` naming the row's proxy.
pub fn report_stale(rows: &[Value], who: impl Fn(&Value) -> String) {
    let mut seen = std::collections::BTreeSet::new();
    for row in rows.iter().filter(|r| r["stale"] == true) {
        let line = format!(
            "* stale: {} (last scrape: {})",
            who(row),
            row["error"].as_str().unwrap_or("none yet")
        );
        if seen.insert(line.clone()) {
            eprintln!("{line}");
        }
    }
}

/// Rows as text columns padded to their widest cell, three spaces apart.
pub fn columns<R: AsRef<[String]>>(rows: &[R]) -> String {
    let n = rows.iter().map(|r| r.as_ref().len()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..n)
        .map(|c| {
            rows.iter()
                .map(|r| r.as_ref().get(c).map_or(0, |s| s.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .as_ref()
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("   ").trim_end());
        out.push('\n');
    }
    out
}

/// A string, or `-`.
pub fn text(v: &Value) -> String {
    v.as_str().unwrap_or("-").to_string()
}

/// A whole number, or `-`.
pub fn number(v: &Value) -> String {
    v.as_u64().map_or("-".into(), |n| n.to_string())
}

/// A success rate (0..1) as a percentage, or `-`.
pub fn percent(v: &Value) -> String {
    v.as_f64()
        .map_or("-".into(), |s| format!("{:.2}%", s * 100.0))
}

/// Requests per second, `-` when the row has no requests (no success rate).
pub fn rps(rps: &Value, success_rate: &Value) -> String {
    rps.as_f64()
        .filter(|_| !success_rate.is_null())
        .map_or("-".into(), |r| format!("{r:.1}rps"))
}

/// Milliseconds: one decimal under 10 ms (a fast mesh's p50 is below 1 ms), whole above.
pub fn millis(v: &Value) -> String {
    match v.as_f64() {
        None => "-".into(),
        Some(ms) if ms < 10.0 => format!("{ms:.1}ms"),
        Some(ms) => format!("{ms:.0}ms"),
    }
}

/// Bytes per second, or `-`.
pub fn rate(v: &Value) -> String {
    v.as_f64().map_or("-".into(), |b| format!("{b:.1}B/s"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cells_show_figures_or_a_dash() {
        assert_eq!(millis(&json!(0.84)), "0.8ms");
        assert_eq!(millis(&json!(12.6)), "13ms");
        assert_eq!(millis(&Value::Null), "-");
        assert_eq!(percent(&json!(0.995)), "99.50%");
        assert_eq!(rps(&json!(20.04), &json!(1.0)), "20.0rps");
        assert_eq!(rps(&json!(0.0), &Value::Null), "-");
        assert_eq!(number(&json!(3)), "3");
        assert_eq!(text(&Value::Null), "-");
    }

    #[test]
    fn windows_are_bounded() {
        assert_eq!(parse_window("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_window("5s").is_err());
        assert!(parse_window("2h").is_err());
    }
}
