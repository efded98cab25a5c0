//! Query strings of the telemetry endpoints (`/v1/edges`, `/v1/routes`): each parameter known
//! and given once, names that are DNS labels, and a window within what the histories hold.

use std::collections::BTreeMap;
use std::time::Duration;

use super::stat::{DEFAULT_WINDOW, MAX_WINDOW, MIN_WINDOW};
use crate::resource::{self, policy::parse_duration};

/// The parameters of `query`, each one of `known`; the error is the 400's message. Values of
/// `namespace`, `name` and `service` must be DNS labels.
pub fn parse<'a>(
    query: Option<&'a str>,
    known: &[&'static str],
) -> Result<BTreeMap<&'a str, &'a str>, String> {
    let mut params = BTreeMap::new();
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if !known.contains(&key) {
            return Err(format!(
                "unknown query parameter {key:?}: expected {}",
                one_of(known)
            ));
        }
        if params.insert(key, value).is_some() {
            return Err(format!("query parameter {key} given twice"));
        }
        if matches!(key, "namespace" | "name" | "service") {
            resource::dns_label(value).map_err(|e| format!("{key}: {e}"))?;
        }
    }
    Ok(params)
}

/// The `window` parameter: 10s to 1h, 1m when absent.
pub fn window(value: Option<&str>) -> Result<Duration, String> {
    let Some(w) = value else {
        return Ok(DEFAULT_WINDOW);
    };
    let d = parse_duration(w, false).map_err(|e| format!("window: {e}"))?;
    if !(MIN_WINDOW..=MAX_WINDOW).contains(&d) {
        return Err(format!("window: must be between 10s and 1h, got {w}"));
    }
    Ok(d)
}

/// `a, b or c`.
fn one_of(names: &[&str]) -> String {
    match names {
        [] => String::new(),
        [one] => (*one).to_string(),
        [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
    }
}
