//! Wall-clock time as the control plane writes it: signed Unix seconds for files and ledgers,
//! RFC 3339 text for people (status pages, messages and log fields).

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch, negative before it.
pub fn unix(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

pub fn unix_now() -> i64 {
    unix(SystemTime::now())
}

pub fn from_unix(secs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs as u64)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

/// `2024-05-01T12:00:00Z`; the plain number if it is out of the calendar's range.
pub fn unix_to_rfc3339(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| secs.to_string())
}

/// Shows a time as RFC 3339 to the second, for `%` log fields
/// (`valid_until=2026-12-05T16:00:00Z`, not `SystemTime { tv_sec: .., tv_nsec: .. }`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rfc3339(pub SystemTime);

impl fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&unix_to_rfc3339(unix(self.0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_text() {
        assert_eq!(unix_to_rfc3339(0), "1970-01-01T00:00:00Z");
        let t = from_unix(1_714_564_800);
        assert_eq!(Rfc3339(t).to_string(), "2024-05-01T12:00:00Z");
        assert_eq!(unix(from_unix(-5)), -5);
    }
}
