//! `GET /v1/check`: the control plane's half of `weft check` — whether the store applied every
//! document, whether the CA's issuer and trust anchors are valid and chain, and per meshed proxy
//! whether it is ready, holds a valid certificate under this control plane's trust anchors, and
//! keeps the same time. Each check is a verdict (ok, warning, error) with what was found and a
//! hint; `weft check` adds its own (the API and gRPC ports answer, this machine's clock) and
//! prints them all.
//!
//! The decisions are plain functions of facts (certificates, store status, what each proxy
//! answered); [`probe`] gathers the proxies' facts through their admin servers and their inbound
//! TLS, [`PROBE_CONCURRENCY`] at once, each step within [`crate::telemetry::scrape::TIMEOUT`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::ca::{self, Ca};
use crate::clock::{unix, unix_to_rfc3339};
use crate::resource::State;
use crate::store::StoreStatus;

#[path = "check_probe.rs"]
mod probe;

/// The issuer and the trust anchors warn when they expire within this (Linkerd's `linkerd check`
/// warns 60 days ahead too: time to rotate without hurry).
pub const CA_EXPIRY_WARNING: Duration = Duration::from_secs(60 * 24 * 3600);
/// A proxy's leaf warns when less than this fraction of the control plane's leaf lifetime is
/// left: proxies renew at about 70 % of the life, so a leaf past 80 % has missed its renewal.
pub const LEAF_EXPIRY_WARNING_FRACTION: f64 = 0.2;
/// Clocks further apart than this warn: leaves are backdated by 10 s for peers that run behind,
/// so half of that is the most a mesh can drift with room to spare.
pub const CLOCK_SKEW_WARNING: Duration = Duration::from_secs(5);
/// Proxies probed at once.
pub const PROBE_CONCURRENCY: usize = 8;

/// Where every check's hint is explained at length.
pub const DOCS: &str = "docs/observability.md#weft-check";

pub const SECTION_STORE: &str = "weft-store";
pub const SECTION_IDENTITY: &str = "weft-identity";
pub const SECTION_DATA_PLANE: &str = "weft-data-plane";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warning,
    Error,
}

/// One check's verdict.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Check {
    /// Stable name for scripts, e.g. `identity-issuer-expiry`.
    pub id: String,
    /// The section it is printed under, e.g. `weft-identity`.
    pub section: String,
    /// What holds when it passes, e.g. `issuer certificate is valid for at least 60 days`.
    pub description: String,
    pub status: Status,
    /// What was found: one line per offending document or proxy (empty when ok, except notes).
    #[serde(default)]
    pub details: Vec<String>,
    /// What to do about it (set when not ok).
    #[serde(default)]
    pub hint: Option<String>,
    /// Where the check is explained.
    pub docs: String,
}

impl Check {
    pub fn new(id: &str, section: &str, description: &str) -> Check {
        Check {
            id: id.into(),
            section: section.into(),
            description: description.into(),
            status: Status::Ok,
            details: Vec::new(),
            hint: None,
            docs: DOCS.into(),
        }
    }

    /// Records a finding of `status`; the check takes the worst status it found.
    pub fn found(&mut self, status: Status, detail: impl Into<String>) {
        self.status = self.status.max(status);
        self.details.push(detail.into());
    }

    /// Sets the hint when the check did not pass.
    fn hint_unless_ok(mut self, hint: &str) -> Check {
        if self.status != Status::Ok {
            self.hint = Some(hint.into());
        }
        self
    }
}

/// What `GET /v1/check` answers.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    /// Where the control plane's gRPC services listen (as bound: `0.0.0.0` means every address).
    pub grpc_addr: SocketAddr,
    pub checks: Vec<Check>,
    /// What each meshed proxy answered (the facts behind the data-plane checks).
    pub proxies: Vec<ProxyFacts>,
}

/// What one meshed proxy answered.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProxyFacts {
    pub namespace: String,
    pub name: String,
    /// Its admin server (the workload's `linkerd-admin` port).
    pub admin: Option<SocketAddr>,
    /// Why `GET /ready` did not answer 200; `None` when it did.
    pub not_ready: Option<String>,
    /// Its clock minus the control plane's, seconds (from its admin's `Date` header), and the
    /// half-width of the interval it is known to within.
    pub clock_skew_secs: Option<f64>,
    pub clock_skew_uncertainty_secs: Option<f64>,
    /// Why `GET /metrics` could not be read; `None` when it was.
    pub metrics_error: Option<String>,
    /// Its metrics carry the `identity_*` families (identity is configured).
    pub identity: bool,
    /// Its certificate's notAfter (`identity_cert_expiration_timestamp_seconds`), Unix seconds;
    /// `None` before the first certificate.
    pub cert_not_after: Option<i64>,
    /// How many trust anchors it holds (`identity_trust_anchors`).
    pub trust_anchors: Option<u64>,
    /// Their fingerprints (`identity_trust_anchor_info`); `None` from a proxy that does not
    /// export them (then only the count is compared).
    pub trust_anchor_fingerprints: Option<Vec<String>>,
    /// Where its inbound TLS was probed (SNI = its identity).
    pub tls_probe: Option<SocketAddr>,
    /// The fingerprint of the control plane's anchor its presented chain leads to.
    pub chains_to: Option<String>,
    /// Why its presented chain does not lead to one, or could not be read.
    pub chain_error: Option<String>,
}

impl ProxyFacts {
    fn who(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// Every check the control plane can answer, with the proxies' facts gathered now.
pub async fn run(store: &StoreStatus, ca: &Ca, state: &State, grpc_addr: SocketAddr) -> Report {
    let anchors = ca::pem_certificates(ca.trust_anchors_pem().as_bytes()).unwrap_or_default();
    let anchors = Arc::new(anchors);
    // Meshed workloads only: the others have no proxy to ask.
    let targets: Vec<_> = (state.workloads.values())
        .filter(|w| w.admin_addr().is_some())
        .cloned()
        .collect();
    let proxies: Vec<ProxyFacts> = futures_util::stream::iter(targets)
        .map(|w| probe::proxy(w, anchors.clone()))
        .buffered(PROBE_CONCURRENCY)
        .collect()
        .await;
    let now = unix(SystemTime::now());
    let mut checks = vec![store_check(store), statuses_check(store)];
    checks.extend(identity_checks(now, &anchors, ca.issuer_der()));
    checks.extend(data_plane_checks(now, ca.lifetime(), &anchors, &proxies));
    Report {
        grpc_addr,
        checks,
        proxies,
    }
}

/// `store-valid`: every document of the store applied.
pub fn store_check(store: &StoreStatus) -> Check {
    let mut c = Check::new(
        "store-valid",
        SECTION_STORE,
        "every document of the store is applied",
    );
    for e in &store.errors {
        c.found(Status::Error, e.clone());
    }
    c.hint_unless_ok(
        "each document listed keeps its last good version in force (nothing if it never had \
         one); fix it and the control plane applies it at its next poll (GET /v1/store lists \
         the errors)",
    )
}

/// `store-statuses`: every route and policy in force is accepted and resolves its references
/// (Gateway API conditions, as `GET /v1/store` reports them). A document that applied but does
/// nothing is a warning: the mesh runs, not as the document says.
pub fn statuses_check(store: &StoreStatus) -> Check {
    let mut c = Check::new(
        "store-statuses",
        SECTION_STORE,
        "routes and policies are accepted and resolve their references",
    );
    let says = |cond: &crate::index::routes::Condition| {
        let message = if cond.message.is_empty() {
            String::new()
        } else {
            format!(": {}", cond.message)
        };
        format!("{} {}{message}", cond.kind, cond.reason)
    };
    for r in &store.routes {
        for p in &r.parents {
            for cond in p.conditions.iter().filter(|c| c.status != "True") {
                let parent = &p.parent_ref;
                let port = parent.port.map(|p| format!(":{p}")).unwrap_or_default();
                c.found(
                    Status::Warning,
                    format!(
                        "{} {}/{} (parent {} {}/{}{port}): {}",
                        r.kind,
                        r.namespace,
                        r.name,
                        parent.kind,
                        parent.namespace,
                        parent.name,
                        says(cond)
                    ),
                );
            }
        }
    }
    for p in &store.policies {
        for cond in p.conditions.iter().filter(|c| c.status != "True") {
            c.found(
                Status::Warning,
                format!("{} {}/{}: {}", p.kind, p.namespace, p.name, says(cond)),
            );
        }
    }
    c.hint_unless_ok(
        "each listed resource applies nothing (or only part) until what it names exists or its \
         conflict is gone; docs/traffic.md and docs/policy.md (\"Status\") explain each reason",
    )
}

fn parse(der: &[u8]) -> Option<X509Certificate<'_>> {
    X509Certificate::from_der(der).ok().map(|(_, c)| c)
}

fn subject(c: &X509Certificate<'_>) -> String {
    c.subject().to_string()
}

/// `valid from .. to ..` of a certificate.
fn validity(c: &X509Certificate<'_>) -> String {
    format!(
        "valid from {} to {}",
        unix_to_rfc3339(c.validity().not_before.timestamp()),
        unix_to_rfc3339(c.validity().not_after.timestamp())
    )
}

/// Whether `c` is valid at `now` (else the finding), and whether it expires within `warn`.
fn time_findings(
    c: &X509Certificate<'_>,
    now: i64,
    warn: Duration,
    what: &str,
    valid: &mut Check,
    expiry: &mut Check,
) {
    let (nb, na) = (
        c.validity().not_before.timestamp(),
        c.validity().not_after.timestamp(),
    );
    if now < nb || now > na {
        let state = if now > na { "expired" } else { "not valid yet" };
        valid.found(
            Status::Error,
            format!("{what} {} is {state}: {}", subject(c), validity(c)),
        );
    } else if na - now < warn.as_secs() as i64 {
        expiry.found(
            Status::Warning,
            format!(
                "{what} {} expires at {} (in {})",
                subject(c),
                unix_to_rfc3339(na),
                human(Duration::from_secs((na - now) as u64))
            ),
        );
    }
}

/// The issuer and anchors checks of the CA in force, at `now` (Unix seconds).
pub fn identity_checks(now: i64, anchors: &[Vec<u8>], issuer: &[u8]) -> Vec<Check> {
    let days = CA_EXPIRY_WARNING.as_secs() / 86400;
    let mut issuer_valid = Check::new(
        "identity-issuer-valid",
        SECTION_IDENTITY,
        "issuer certificate is within its validity period",
    );
    let mut issuer_expiry = Check::new(
        "identity-issuer-expiry",
        SECTION_IDENTITY,
        &format!("issuer certificate is valid for at least {days} days"),
    );
    let mut chain = Check::new(
        "identity-issuer-chain",
        SECTION_IDENTITY,
        "issuer certificate is signed by a trust anchor",
    );
    let mut anchors_valid = Check::new(
        "identity-anchors-valid",
        SECTION_IDENTITY,
        "trust anchors are within their validity period",
    );
    let mut anchors_expiry = Check::new(
        "identity-anchors-expiry",
        SECTION_IDENTITY,
        &format!("trust anchors are valid for at least {days} days"),
    );
    let parsed: Vec<_> = anchors.iter().filter_map(|a| parse(a)).collect();
    if parsed.is_empty() {
        anchors_valid.found(Status::Error, "the control plane holds no trust anchor");
    }
    for a in &parsed {
        time_findings(
            a,
            now,
            CA_EXPIRY_WARNING,
            "trust anchor",
            &mut anchors_valid,
            &mut anchors_expiry,
        );
    }
    match parse(issuer) {
        None => issuer_valid.found(Status::Error, "the issuer certificate does not parse"),
        Some(c) => {
            time_findings(
                &c,
                now,
                CA_EXPIRY_WARNING,
                "issuer",
                &mut issuer_valid,
                &mut issuer_expiry,
            );
            if !parsed
                .iter()
                .any(|a| c.verify_signature(Some(a.public_key())).is_ok())
            {
                chain.found(
                    Status::Error,
                    format!(
                        "issuer {} (issued by {}) is signed by none of the {} trust anchor(s)",
                        subject(&c),
                        c.issuer(),
                        parsed.len()
                    ),
                );
            }
        }
    }
    let renew = "make a new issuer signed by the trust anchor (or rotate the anchor with \
                 `weft identity rotate`, docs/identity.md); running control planes reading \
                 --identity-dir pick it up within seconds";
    vec![
        issuer_valid.hint_unless_ok(renew),
        issuer_expiry.hint_unless_ok(renew),
        chain.hint_unless_ok(
            "issuer.crt must be signed by a certificate of trust-anchors.pem in the identity \
             directory: restore the matching pair",
        ),
        anchors_valid.hint_unless_ok(
            "rotate the trust anchor (`weft identity rotate --stage bundle|issue|retire`, \
             docs/identity.md)",
        ),
        anchors_expiry.hint_unless_ok(
            "rotate the trust anchor before it expires (`weft identity rotate --stage bundle`, \
             docs/identity.md)",
        ),
    ]
}

/// The per-proxy checks over every meshed proxy's facts, at `now` (Unix seconds); `lifetime` is
/// the control plane's leaf lifetime, `anchors` its trust anchors (DER).
pub fn data_plane_checks(
    now: i64,
    lifetime: Duration,
    anchors: &[Vec<u8>],
    proxies: &[ProxyFacts],
) -> Vec<Check> {
    let n = proxies.len();
    let mut ready = Check::new(
        "proxies-ready",
        SECTION_DATA_PLANE,
        &format!("data plane proxies are ready ({n} meshed)"),
    );
    let mut certs = Check::new(
        "proxies-certificates",
        SECTION_DATA_PLANE,
        "data plane proxies hold valid certificates, not expiring soon",
    );
    let probed = (proxies.iter())
        .filter(|p| p.chains_to.is_some() || p.chain_error.is_some())
        .count();
    let mut same = Check::new(
        "proxies-trust-anchors",
        SECTION_DATA_PLANE,
        &format!(
            "data plane proxies are on the control plane's trust anchors ({probed} of {n} probed)"
        ),
    );
    let mut clocks = Check::new(
        "proxies-clock-skew",
        SECTION_DATA_PLANE,
        &format!(
            "data plane proxies' clocks are within {}s of the control plane's",
            CLOCK_SKEW_WARNING.as_secs()
        ),
    );
    let warn_left = (lifetime.as_secs_f64() * LEAF_EXPIRY_WARNING_FRACTION) as i64;
    let ours: Vec<String> = anchors.iter().map(|der| ca::fingerprint(der)).collect();
    let join = |fingerprints: &[&String]| -> String {
        fingerprints
            .iter()
            .map(|f| f.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    for p in proxies {
        let who = p.who();
        if let Some(e) = &p.not_ready {
            ready.found(Status::Error, format!("{who}: {e}"));
        }
        if let Some(e) = &p.metrics_error {
            // A proxy that did not answer at all is already reported as not ready.
            if p.not_ready.is_none() {
                certs.found(
                    Status::Error,
                    format!("{who}: cannot read its metrics: {e}"),
                );
            }
            continue;
        }
        if !p.identity {
            certs.found(
                Status::Warning,
                format!("{who}: identity is off (its connections are not mTLS)"),
            );
            continue;
        }
        match p.cert_not_after {
            None => certs.found(Status::Error, format!("{who}: no certificate yet")),
            Some(t) if t <= now => certs.found(
                Status::Error,
                format!("{who}: its certificate expired at {}", unix_to_rfc3339(t)),
            ),
            Some(t) if t - now < warn_left => certs.found(
                Status::Warning,
                format!(
                    "{who}: its certificate expires at {} (in {}): it has missed its renewal",
                    unix_to_rfc3339(t),
                    human(Duration::from_secs((t - now) as u64))
                ),
            ),
            Some(_) => {}
        }
        // A proxy whose workload names no port but its admin (a client) cannot be probed: it
        // is left out of the count in the description, not reported as a problem.
        if let Some(e) = &p.chain_error {
            same.found(Status::Error, format!("{who}: {e}"));
        }
        if let Some(theirs) = &p.trust_anchor_fingerprints {
            // Exact: each of our anchors must be one of theirs (else they refuse certificates
            // issued under it); theirs beyond ours are a rotation not finished (or not ours).
            let missing: Vec<&String> = ours.iter().filter(|f| !theirs.contains(f)).collect();
            let extra: Vec<&String> = theirs.iter().filter(|f| !ours.contains(f)).collect();
            if !missing.is_empty() {
                same.found(
                    Status::Error,
                    format!(
                        "{who}: does not trust the control plane's anchor(s) {}",
                        join(&missing)
                    ),
                );
            }
            if !extra.is_empty() {
                same.found(
                    Status::Warning,
                    format!(
                        "{who}: also trusts anchor(s) the control plane does not: {}",
                        join(&extra)
                    ),
                );
            }
        } else if let Some(k) = p.trust_anchors {
            if k != anchors.len() as u64 {
                same.found(
                    Status::Warning,
                    format!(
                        "{who}: holds {k} trust anchor(s), the control plane {}",
                        anchors.len()
                    ),
                );
            }
        }
        if let (Some(skew), Some(within)) = (p.clock_skew_secs, p.clock_skew_uncertainty_secs) {
            if skew.abs() - within > CLOCK_SKEW_WARNING.as_secs_f64() {
                clocks.found(
                    Status::Warning,
                    format!("{who}: its clock is {}", skew_words(skew, within)),
                );
            }
        }
    }
    vec![
        ready.hint_unless_ok(
            "a proxy is ready once discovery answers and it holds its first certificate; read \
             its log (`weft run` shows it) and check it can reach the control plane's gRPC port",
        ),
        certs.hint_unless_ok(
            "a proxy renews its certificate at about 70% of its life through Identity.Certify: \
             a missing or old certificate means it cannot reach the control plane or is refused \
             (its log says why; identity_cert_refresh_total{result=\"failure\"} counts it)",
        ),
        same.hint_unless_ok(
            "the proxy must trust the anchors the control plane publishes \
             (GET /v1/identity/trust-anchors, WEFT_PROXY_IDENTITY_TRUST_ANCHORS_FILE); during a \
             rotation distribute the bundle to every proxy before `--stage issue`",
        ),
        clocks.hint_unless_ok(
            "synchronize the machines' clocks (NTP): certificates are backdated by only 10s, \
             a peer further behind refuses fresh certificates",
        ),
    ]
}

/// `3.0s ahead of the control plane's (±0.6s)`.
pub fn skew_words(skew: f64, within: f64) -> String {
    let side = if skew >= 0.0 { "ahead of" } else { "behind" };
    format!(
        "{:.1}s {side} the control plane's (±{within:.1}s)",
        skew.abs()
    )
}

/// `3d 4h`, `5h 2m`, `42s`: a remaining lifetime for people.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    let (days, hours, mins) = (s / 86400, s % 86400 / 3600, s % 3600 / 60);
    if days > 0 {
        format!("{days}d {hours}h")
    } else if hours > 0 {
        format!("{hours}h {mins}m")
    } else if mins > 0 {
        format!("{mins}m {}s", s % 60)
    } else {
        format!("{s}s")
    }
}

/// The skew of a clock that stamped `Date: date` (whole seconds, truncated) on an answer we saw
/// between `sent` and `received` (our clock): the middle of what is possible, and the half-width
/// of that interval. Positive: that clock is ahead of ours.
pub fn skew_from_date(date: i64, sent: SystemTime, received: SystemTime) -> (f64, f64) {
    let secs = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64())
    };
    let (t0, t1) = (secs(sent), secs(received).max(secs(sent)));
    // Their time at the answer lies in [date, date + 1); ours in [t0, t1].
    let (low, high) = (date as f64 - t1, date as f64 + 1.0 - t0);
    ((low + high) / 2.0, (high - low) / 2.0)
}

/// An HTTP `Date` header (IMF-fixdate, `Sun, 06 Nov 1994 08:49:37 GMT`, what every current
/// server sends) as Unix seconds.
pub fn parse_http_date(s: &str) -> Option<i64> {
    let mut parts = s.split_whitespace();
    let _weekday = parts.next()?;
    let day: u8 = parts.next()?.parse().ok()?;
    let month = match parts.next()? {
        "Jan" => time::Month::January,
        "Feb" => time::Month::February,
        "Mar" => time::Month::March,
        "Apr" => time::Month::April,
        "May" => time::Month::May,
        "Jun" => time::Month::June,
        "Jul" => time::Month::July,
        "Aug" => time::Month::August,
        "Sep" => time::Month::September,
        "Oct" => time::Month::October,
        "Nov" => time::Month::November,
        "Dec" => time::Month::December,
        _ => return None,
    };
    let year: i32 = parts.next()?.parse().ok()?;
    let mut hms = parts.next()?.split(':').map(|p| p.parse::<u8>().ok());
    let (h, m, sec) = (hms.next()??, hms.next()??, hms.next()??);
    if parts.next()? != "GMT" || parts.next().is_some() {
        return None;
    }
    let date = time::Date::from_calendar_date(year, month, day).ok()?;
    let t = time::Time::from_hms(h, m, sec).ok()?;
    Some(
        time::PrimitiveDateTime::new(date, t)
            .assume_utc()
            .unix_timestamp(),
    )
}

/// The fingerprint of the anchor (of `anchors`, DER) that `chain` (DER, leaf first, as a TLS
/// server presents it) leads to, or why it leads to none.
pub fn chain_anchor(chain: &[Vec<u8>], anchors: &[Vec<u8>]) -> Result<String, String> {
    let certs: Vec<_> = chain.iter().filter_map(|c| parse(c)).collect();
    if certs.len() != chain.len() {
        return Err("it presented a certificate that does not parse".into());
    }
    let roots: Vec<_> = anchors.iter().map(|a| (a, parse(a))).collect();
    let Some(mut current) = certs.first() else {
        return Err("it presented no certificate".into());
    };
    // Each step moves up one certificate of the chain; a longer walk would loop.
    for _ in 0..certs.len() {
        let signed = |by: &X509Certificate<'_>| current.verify_signature(Some(by.public_key()));
        if let Some((der, _)) = roots
            .iter()
            .find(|(_, a)| a.as_ref().is_some_and(|a| signed(a).is_ok()))
        {
            return Ok(ca::fingerprint(der));
        }
        match certs[1..].iter().find(|c| signed(c).is_ok()) {
            Some(next) => current = next,
            None => break,
        }
    }
    // Anchors of two CAs often share their names: the signer's key id tells them apart.
    let key_id = authority_key_id(current)
        .map(|id| format!(", key id {id}"))
        .unwrap_or_default();
    Err(format!(
        "its certificate chain ends at {} (issued by {}{key_id}), signed by none of the control \
         plane's {} trust anchor(s)",
        subject(current),
        current.issuer(),
        anchors.len()
    ))
}

/// The authority key identifier of a certificate (its signer's subject key identifier), as
/// `openssl x509 -text` shows it: colon-separated hex.
fn authority_key_id(c: &X509Certificate<'_>) -> Option<String> {
    c.extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            x509_parser::extensions::ParsedExtension::AuthorityKeyIdentifier(aki) => {
                let id = aki.key_identifier.as_ref()?;
                let hex: Vec<String> = id.0.iter().map(|b| format!("{b:02X}")).collect();
                Some(hex.join(":"))
            }
            _ => None,
        })
}

/// The DNS names of a leaf certificate (its subjectAltName).
pub fn dns_names(der: &[u8]) -> Vec<String> {
    let Some(c) = parse(der) else {
        return Vec::new();
    };
    let Ok(Some(san)) = c.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
#[path = "check_tests.rs"]
mod tests;
