//! Reading the Prometheus text format the proxies' `/metrics` serve, for `weft demo`'s live table
//! and the end-to-end tests: samples with their exact label sets, and sums over them. Best
//! effort by design: a line that does not parse is skipped, so one odd line cannot hide the rest.

use std::collections::BTreeMap;

/// One sample line: `name{labels} value [timestamp]` (the timestamp is not kept).
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.get(name).map(String::as_str)
    }

    /// Whether the sample carries every `(label, value)` pair, each with exactly that value.
    pub fn has_labels(&self, labels: &[(&str, &str)]) -> bool {
        labels.iter().all(|(k, v)| self.label(k) == Some(*v))
    }
}

/// Every sample in `text`; comments, blank lines and lines that do not parse are skipped.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(parse_line)
        .collect()
}

/// The sum of the samples named exactly `name` that carry every pair of `labels` (other labels
/// may vary); 0 when none does.
pub fn sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    parse(text)
        .iter()
        .filter(|s| s.name == name && s.has_labels(labels))
        .map(|s| s.value)
        .sum()
}

/// A sample value or an `le` bound: a float (exponents allowed), `+Inf`, `-Inf` or `NaN`.
pub fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        // Rust also reads "inf", "infinity" and "nan" in any case; Prometheus writes none of them.
        other
            if other
                .bytes()
                .any(|b| b.is_ascii_alphabetic() && b != b'e' && b != b'E') =>
        {
            None
        }
        other => other.parse().ok(),
    }
}

fn is_name(s: &str, colons: bool) -> bool {
    let mut bytes = s.bytes();
    let ok = |b: u8| b.is_ascii_alphabetic() || b == b'_' || (colons && b == b':');
    matches!(bytes.next(), Some(b) if ok(b)) && bytes.all(|b| ok(b) || b.is_ascii_digit())
}

fn parse_line(line: &str) -> Option<Sample> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if !is_name(name, true) {
        return None;
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(after_brace) = rest.strip_prefix('{') {
        (labels, rest) = parse_labels(after_brace)?;
    }
    let value = parse_value(rest.split_whitespace().next()?)?;
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// Parses `a="x",b="y"}` (the text after `{`), returning the labels and what follows `}`.
/// Values may hold `\\`, `\"` and `\n` escapes, commas and braces.
fn parse_labels(mut s: &str) -> Option<(BTreeMap<String, String>, &str)> {
    let mut labels = BTreeMap::new();
    loop {
        s = s.trim_start_matches([' ', ',']);
        if let Some(rest) = s.strip_prefix('}') {
            return Some((labels, rest));
        }
        let (key, after) = s.split_once('=')?;
        let key = key.trim();
        if !is_name(key, false) {
            return None;
        }
        s = after.trim_start().strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '"' => break i,
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                other => value.push(other),
            }
        };
        labels.insert(key.to_string(), value);
        s = &s[end + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_labels_values_and_comments() {
        let samples = parse(
            "# HELP response_total Total responses.\n\
             # TYPE response_total counter\n\
             \n\
             response_total{direction=\"outbound\",dst_service=\"books\"} 90\n\
             process_start_time_seconds 1700000000.5\n\
             ns:rule_total{} 2\n",
        );
        assert_eq!(samples.len(), 3);
        assert_eq!(samples[0].name, "response_total");
        assert_eq!(samples[0].label("dst_service"), Some("books"));
        assert_eq!(samples[0].value, 90.0);
        assert_eq!(samples[1].name, "process_start_time_seconds");
        assert!(samples[1].labels.is_empty());
        assert_eq!(samples[1].value, 1_700_000_000.5);
        assert_eq!(samples[2].name, "ns:rule_total");
    }

    #[test]
    fn escaped_quotes_and_separators_inside_label_values() {
        let samples = parse(r#"m{a="x\"y\\z",b="c, d}",c="line\nbreak"} 3 1700000000000"#);
        assert_eq!(samples.len(), 1);
        assert_eq!(samples[0].label("a"), Some(r#"x"y\z"#));
        assert_eq!(samples[0].label("b"), Some("c, d}"));
        assert_eq!(samples[0].label("c"), Some("line\nbreak"));
        assert_eq!(samples[0].value, 3.0, "the timestamp is not the value");
    }

    #[test]
    fn special_and_exponent_values() {
        let samples =
            parse("b{le=\"+Inf\"} +Inf\nc -Inf\nd NaN\ne 1.5e+03\nf 2E-3\ng -7\nh inf\ni 0x10\n");
        let values: Vec<(&str, f64)> = samples.iter().map(|s| (&*s.name, s.value)).collect();
        assert_eq!(values[0], ("b", f64::INFINITY));
        assert_eq!(values[1], ("c", f64::NEG_INFINITY));
        assert!(values[2].0 == "d" && values[2].1.is_nan());
        assert_eq!(values[3], ("e", 1500.0));
        assert_eq!(values[4], ("f", 0.002));
        assert_eq!(values[5], ("g", -7.0));
        assert_eq!(values.len(), 6, "not Prometheus spellings: {values:?}");
        assert_eq!(parse_value("+Inf"), Some(f64::INFINITY));
        assert_eq!(parse_value("10"), Some(10.0));
    }

    #[test]
    fn malformed_lines_are_skipped_alone() {
        let text = "m{a=\"unterminated} 1\n\
                    n{} nope\n\
                    {x=\"y\"} 1\n\
                    o{=\"v\"} 1\n\
                    p{a=b} 1\n\
                    9q 1\n\
                    bad{ 2\n\
                    ok 1\n";
        let samples = parse(text);
        assert_eq!(samples.len(), 1, "{samples:?}");
        assert_eq!(samples[0].name, "ok");
    }

    #[test]
    fn sum_matches_names_and_labels_exactly() {
        let text = "# HELP x\n\
                    errs_total{reason=\"loop\",dir=\"out\"} 2\n\
                    errs_total{xreason=\"loop\",dir=\"out\"} 40\n\
                    errs_total{reason=\"loop2\",dir=\"out\"} 50\n\
                    errs_total{reason=\"loop\",dir=\"in\"} 3 1700000000000\n\
                    errs_total_other{reason=\"loop\"} 100\n\
                    plain 7\n";
        assert_eq!(sum(text, "errs_total", &[("reason", "loop")]), 5.0);
        assert_eq!(
            sum(text, "errs_total", &[("reason", "loop"), ("dir", "out")]),
            2.0
        );
        assert_eq!(sum(text, "errs_total", &[]), 95.0);
        assert_eq!(sum(text, "plain", &[]), 7.0);
        assert_eq!(sum(text, "errs", &[]), 0.0);
        assert_eq!(sum(text, "absent", &[]), 0.0);
    }
}
