//! The decisions of `GET /v1/check` on real certificates (rcgen) and on proxies' facts.

use super::*;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

const DAY: i64 = 86400;
const ID: &str = "web.default.serviceaccount.identity.weft.cluster.local";

fn at(unix: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(unix).expect("timestamp")
}

/// A certificate and its key, to sign others with.
struct Cert {
    der: Vec<u8>,
    params: CertificateParams,
    key: KeyPair,
}

impl Cert {
    fn issuer(&self) -> Issuer<'_, &KeyPair> {
        Issuer::from_params(&self.params, &self.key)
    }
}

fn params(cn: &str, from: i64, to: i64, ca: bool) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    p.distinguished_name = dn;
    if ca {
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
    } else {
        p.subject_alt_names = vec![SanType::DnsName(ID.try_into().expect("ia5"))];
    }
    p.not_before = at(from);
    p.not_after = at(to);
    // As `weft identity init` makes them: a signed certificate names its signer's key.
    p.use_authority_key_identifier_extension = true;
    p
}

/// A certificate valid from `from` to `to` (Unix seconds), self-signed or signed by `by`.
fn cert(cn: &str, from: i64, to: i64, ca: bool, by: Option<&Cert>) -> Cert {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let p = params(cn, from, to, ca);
    let c = match by {
        None => p.self_signed(&key).expect("self-signed"),
        Some(by) => p.signed_by(&key, &by.issuer()).expect("signed"),
    };
    Cert {
        der: c.der().to_vec(),
        params: p,
        key,
    }
}

fn now() -> i64 {
    crate::clock::unix_now()
}

fn find<'a>(checks: &'a [Check], id: &str) -> &'a Check {
    checks
        .iter()
        .find(|c| c.id == id)
        .unwrap_or_else(|| panic!("no check {id} in {checks:#?}"))
}

fn statuses(checks: &[Check]) -> Vec<(&str, Status)> {
    checks.iter().map(|c| (c.id.as_str(), c.status)).collect()
}

#[test]
fn a_fresh_ca_passes_every_identity_check() {
    let t = now();
    let anchor = cert("root", t - DAY, t + 3650 * DAY, true, None);
    let issuer = cert("issuer", t - DAY, t + 365 * DAY, true, Some(&anchor));
    let checks = identity_checks(t, std::slice::from_ref(&anchor.der), &issuer.der);
    assert!(
        checks
            .iter()
            .all(|c| c.status == Status::Ok && c.hint.is_none()),
        "{checks:#?}"
    );
    assert_eq!(checks.len(), 5);
    // The CA `weft control` makes by itself passes too.
    let ca = Ca::ephemeral("cluster.local", "weft", Duration::from_secs(3600)).expect("ca");
    let anchors = ca::pem_certificates(ca.trust_anchors_pem().as_bytes()).expect("pem");
    let checks = identity_checks(t, &anchors, ca.issuer_der());
    assert!(checks.iter().all(|c| c.status == Status::Ok), "{checks:#?}");
}

#[test]
fn an_issuer_expiring_within_60_days_warns_and_an_expired_one_fails() {
    let t = now();
    let anchor = cert("root", t - DAY, t + 3650 * DAY, true, None);
    let soon = cert("issuer", t - DAY, t + 10 * DAY, true, Some(&anchor));
    let checks = identity_checks(t, std::slice::from_ref(&anchor.der), &soon.der);
    let expiry = find(&checks, "identity-issuer-expiry");
    assert_eq!(expiry.status, Status::Warning, "{checks:#?}");
    assert!(
        expiry.details[0].contains("CN=issuer expires at"),
        "{expiry:?}"
    );
    assert!(expiry.details[0].contains("(in 9d 23h)") || expiry.details[0].contains("(in 10d 0h)"));
    assert!(expiry
        .hint
        .as_deref()
        .unwrap_or("")
        .contains("weft identity rotate"));
    assert_eq!(find(&checks, "identity-issuer-valid").status, Status::Ok);

    let expired = cert("issuer", t - 10 * DAY, t - DAY, true, Some(&anchor));
    let checks = identity_checks(t, std::slice::from_ref(&anchor.der), &expired.der);
    let valid = find(&checks, "identity-issuer-valid");
    assert_eq!(valid.status, Status::Error, "{checks:#?}");
    assert!(
        valid.details[0].contains("is expired: valid from"),
        "{valid:?}"
    );
    // Still signed by the anchor: only the time checks speak.
    assert_eq!(find(&checks, "identity-issuer-chain").status, Status::Ok);
}

#[test]
fn an_issuer_signed_by_another_anchor_fails_the_chain_check() {
    let t = now();
    let ours = cert("root", t - DAY, t + 3650 * DAY, true, None);
    let theirs = cert("other-root", t - DAY, t + 3650 * DAY, true, None);
    let issuer = cert("issuer", t - DAY, t + 365 * DAY, true, Some(&theirs));
    let checks = identity_checks(t, std::slice::from_ref(&ours.der), &issuer.der);
    let chain = find(&checks, "identity-issuer-chain");
    assert_eq!(chain.status, Status::Error, "{checks:#?}");
    assert!(
        chain.details[0].contains("issued by CN=other-root")
            && chain.details[0].contains("none of the 1"),
        "{chain:?}"
    );
    assert!(chain.hint.is_some());
}

#[test]
fn anchors_expiring_soon_warn_and_expired_anchors_fail() {
    let t = now();
    let old = cert("old-root", t - 400 * DAY, t - DAY, true, None);
    let soon = cert("root", t - DAY, t + 30 * DAY, true, None);
    let issuer = cert("issuer", t - DAY, t + 20 * DAY, true, Some(&soon));
    let checks = identity_checks(t, &[old.der.clone(), soon.der.clone()], &issuer.der);
    assert_eq!(
        statuses(&checks),
        vec![
            ("identity-issuer-valid", Status::Ok),
            ("identity-issuer-expiry", Status::Warning),
            ("identity-issuer-chain", Status::Ok),
            ("identity-anchors-valid", Status::Error),
            ("identity-anchors-expiry", Status::Warning),
        ]
    );
    assert!(find(&checks, "identity-anchors-valid").details[0].contains("CN=old-root is expired"));
    no_double_spaces(&checks);
    assert!(find(&checks, "identity-anchors-expiry").details[0].contains("CN=root expires at"));
}

#[test]
fn a_proxy_chain_leads_to_the_anchor_that_issued_it_or_to_none() {
    let t = now();
    let anchor = cert("root", t - DAY, t + 3650 * DAY, true, None);
    let issuer = cert("issuer", t - DAY, t + 365 * DAY, true, Some(&anchor));
    let leaf = cert("leaf", t - 60, t + DAY, false, Some(&issuer));
    let other = cert("other-root", t - DAY, t + 3650 * DAY, true, None);
    let chain = vec![leaf.der.clone(), issuer.der.clone()];

    let fp = chain_anchor(&chain, &[other.der.clone(), anchor.der.clone()]).expect("chains");
    assert_eq!(fp, ca::fingerprint(&anchor.der));
    assert_eq!(dns_names(&leaf.der), vec![ID.to_string()]);

    // The mesh's anchors rotated to `other`, but the proxy still holds a leaf of the old chain.
    let err =
        chain_anchor(&chain, std::slice::from_ref(&other.der)).expect_err("mismatched anchors");
    assert!(
        err.contains("ends at CN=issuer (issued by CN=root, key id ")
            && err.ends_with("), signed by none of the control plane's 1 trust anchor(s)"),
        "{err}"
    );
    // The key id is the one of the anchor that signed the issuer: another root's differs.
    let id = |e: &str| {
        e.split("key id ")
            .nth(1)
            .and_then(|r| r.split(')').next())
            .map(str::to_string)
    };
    let other_issuer = cert("issuer", t - DAY, t + 365 * DAY, true, Some(&other));
    let other_leaf = cert("leaf", t - 60, t + DAY, false, Some(&other_issuer));
    let err2 = chain_anchor(
        &[other_leaf.der.clone(), other_issuer.der.clone()],
        std::slice::from_ref(&anchor.der),
    )
    .expect_err("other CA");
    assert!(
        id(&err).is_some_and(|i| i.len() == 59 && i.contains(':')),
        "{err}"
    );
    assert_ne!(id(&err), id(&err2), "{err}\n{err2}");
    // A leaf presented without its issuer leads nowhere either.
    let err =
        chain_anchor(&chain[..1], std::slice::from_ref(&anchor.der)).expect_err("no intermediate");
    assert!(
        err.contains("ends at CN=leaf (issued by CN=issuer, key id "),
        "{err}"
    );
    assert!(chain_anchor(&[], std::slice::from_ref(&anchor.der)).is_err());
}

fn healthy(name: &str, t: i64) -> ProxyFacts {
    ProxyFacts {
        namespace: "default".into(),
        name: name.into(),
        admin: Some(([127, 0, 0, 1], 4191).into()),
        clock_skew_secs: Some(0.2),
        clock_skew_uncertainty_secs: Some(0.5),
        identity: true,
        cert_not_after: Some(t + 20 * 3600),
        trust_anchors: Some(1),
        tls_probe: Some(([127, 0, 0, 1], 4143).into()),
        chains_to: Some("sha256:aa".into()),
        ..ProxyFacts::default()
    }
}

#[test]
fn healthy_proxies_pass_every_data_plane_check() {
    let t = now();
    let day = Duration::from_secs(DAY as u64);
    let anchors = vec![vec![0u8]];
    let checks = data_plane_checks(t, day, &anchors, &[healthy("a", t), healthy("b", t)]);
    assert!(checks.iter().all(|c| c.status == Status::Ok), "{checks:#?}");
    assert_eq!(
        find(&checks, "proxies-ready").description,
        "data plane proxies are ready (2 meshed)"
    );
    assert_eq!(
        find(&checks, "proxies-trust-anchors").description,
        "data plane proxies are on the control plane's trust anchors (2 of 2 probed)"
    );
    // A client (its workload names no port but its admin) cannot be probed: not a problem,
    // only not counted.
    let mut client = healthy("client", t);
    (client.tls_probe, client.chains_to) = (None, None);
    let checks = data_plane_checks(t, day, &anchors, &[healthy("a", t), client]);
    let same = find(&checks, "proxies-trust-anchors");
    assert_eq!(same.status, Status::Ok, "{same:?}");
    assert!(same.description.ends_with("(1 of 2 probed)"), "{same:?}");
    // No meshed proxy: nothing to fail.
    let checks = data_plane_checks(t, day, &anchors, &[]);
    assert!(checks.iter().all(|c| c.status == Status::Ok), "{checks:#?}");
}

#[test]
fn expiring_expired_and_missing_proxy_certificates() {
    let t = now();
    let day = Duration::from_secs(DAY as u64);
    let anchors = vec![vec![0u8]];
    // 20% of a 24 h lifetime is 4.8 h: 4 h left warns, 5 h does not.
    let mut expiring = healthy("expiring", t);
    expiring.cert_not_after = Some(t + 4 * 3600);
    let mut fine = healthy("fine", t);
    fine.cert_not_after = Some(t + 5 * 3600);
    let checks = data_plane_checks(t, day, &anchors, &[expiring, fine]);
    let certs = find(&checks, "proxies-certificates");
    assert_eq!(certs.status, Status::Warning, "{certs:?}");
    assert_eq!(certs.details.len(), 1, "{certs:?}");
    assert!(certs.details[0].starts_with("default/expiring: its certificate expires at"));
    assert!(certs.details[0].contains("(in 4h 0m)") || certs.details[0].contains("(in 3h 59m)"));

    let mut expired = healthy("expired", t);
    expired.cert_not_after = Some(t - 60);
    let mut none = healthy("none", t);
    none.cert_not_after = None;
    none.chains_to = None;
    let mut off = healthy("off", t);
    off.identity = false;
    off.cert_not_after = None;
    let checks = data_plane_checks(t, day, &anchors, &[expired, none, off]);
    let certs = find(&checks, "proxies-certificates");
    assert_eq!(certs.status, Status::Error, "{certs:?}");
    assert!(certs.details[0].starts_with("default/expired: its certificate expired at"));
    assert_eq!(certs.details[1], "default/none: no certificate yet");
    assert_eq!(
        certs.details[2],
        "default/off: identity is off (its connections are not mTLS)"
    );
    assert!(certs
        .hint
        .as_deref()
        .unwrap_or("")
        .contains("Identity.Certify"));
}

#[test]
fn mismatched_anchors_not_ready_proxies_and_skewed_clocks() {
    let t = now();
    let day = Duration::from_secs(DAY as u64);
    let anchors = vec![vec![0u8]];
    let mut foreign = healthy("foreign", t);
    foreign.chains_to = None;
    foreign.chain_error = Some("its certificate chain ends at CN=x".into());
    let mut two = healthy("two", t);
    two.trust_anchors = Some(2);
    let mut down = healthy("down", t);
    down.not_ready =
        Some("GET http://127.0.0.1:4191/ready answered 503 Service Unavailable".into());
    let mut ahead = healthy("ahead", t);
    ahead.clock_skew_secs = Some(12.0);
    ahead.clock_skew_uncertainty_secs = Some(0.6);
    // 5.5 s ± 1 s may be under 5 s: not a warning.
    let mut maybe = healthy("maybe", t);
    maybe.clock_skew_secs = Some(-5.5);
    maybe.clock_skew_uncertainty_secs = Some(1.0);
    let checks = data_plane_checks(t, day, &anchors, &[foreign, two, down, ahead, maybe]);
    assert_eq!(
        statuses(&checks),
        vec![
            ("proxies-ready", Status::Error),
            ("proxies-certificates", Status::Ok),
            ("proxies-trust-anchors", Status::Error),
            ("proxies-clock-skew", Status::Warning),
        ]
    );
    let same = find(&checks, "proxies-trust-anchors");
    assert_eq!(
        same.details,
        vec![
            "default/foreign: its certificate chain ends at CN=x".to_string(),
            "default/two: holds 2 trust anchor(s), the control plane 1".to_string(),
        ]
    );
    assert_eq!(
        find(&checks, "proxies-ready").details,
        vec!["default/down: GET http://127.0.0.1:4191/ready answered 503 Service Unavailable"]
    );
    no_double_spaces(&checks);
    assert_eq!(
        find(&checks, "proxies-clock-skew").details,
        vec!["default/ahead: its clock is 12.0s ahead of the control plane's (±0.6s)"]
    );
}

#[test]
fn anchors_are_compared_by_fingerprint_when_the_proxy_exports_them() {
    let t = now();
    let day = Duration::from_secs(DAY as u64);
    let (ours, old) = (vec![1u8, 2, 3], vec![4u8, 5, 6]);
    let anchors = vec![ours.clone()];
    let fp = |der: &Vec<u8>| crate::ca::fingerprint(der);
    let mut same = healthy("same", t);
    same.trust_anchor_fingerprints = Some(vec![fp(&ours)]);
    // Mid-rotation on the proxy's side: ours and an old one. Trusted, but not finished.
    let mut both = healthy("both", t);
    both.trust_anchors = Some(2);
    both.trust_anchor_fingerprints = Some(vec![fp(&old), fp(&ours)]);
    // The same count as ours, another anchor: the count alone would have passed it.
    let mut other = healthy("other", t);
    other.trust_anchor_fingerprints = Some(vec![fp(&old)]);
    let checks = data_plane_checks(t, day, &anchors, &[same, both, other]);
    let check = find(&checks, "proxies-trust-anchors");
    assert_eq!(check.status, Status::Error, "{check:#?}");
    assert_eq!(
        check.details,
        vec![
            format!(
                "default/both: also trusts anchor(s) the control plane does not: {}",
                fp(&old)
            ),
            format!(
                "default/other: does not trust the control plane's anchor(s) {}",
                fp(&ours)
            ),
            format!(
                "default/other: also trusts anchor(s) the control plane does not: {}",
                fp(&old)
            ),
        ]
    );
    no_double_spaces(&checks);
}

#[test]
fn rejected_documents_fail_the_store_check_with_their_errors() {
    let ok = store_check(&StoreStatus::default());
    assert_eq!((ok.status, ok.hint.is_none()), (Status::Ok, true));
    let status = StoreStatus {
        errors: vec![
            "services.yaml: document 2: spec.ports[0].port: must be 1..65535, got 0".into(),
        ],
        ..StoreStatus::default()
    };
    let bad = store_check(&status);
    assert_eq!(bad.status, Status::Error);
    assert_eq!(bad.details, status.errors);
    assert!(bad
        .hint
        .as_deref()
        .unwrap_or("")
        .contains("last good version"));
    assert_eq!(bad.docs, DOCS);
}

#[test]
fn http_dates_and_the_skew_they_bound() {
    assert_eq!(
        parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
        Some(784111777)
    );
    assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 UTC"), None);
    assert_eq!(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"), None);
    let base = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
    // Sent at 1000.0, answered at 1000.2; their Date says 1010: their clock read 1010.0 to
    // 1010.999 while ours read 1000.0 to 1000.2: they are 9.8 s to 11 s ahead.
    let (skew, within) = skew_from_date(1010, base, base + Duration::from_millis(200));
    assert!(
        (skew - 10.4).abs() < 1e-9 && (within - 0.6).abs() < 1e-9,
        "{skew} ± {within}"
    );
    assert_eq!(
        skew_words(-12.04, 0.55),
        "12.0s behind the control plane's (±0.6s)"
    );
    assert_eq!(human(Duration::from_secs(90)), "1m 30s");
}

#[test]
fn routes_and_policies_not_accepted_warn() {
    use crate::index::routes::{Condition, ParentRefStatus, ParentStatus};
    use crate::index::{PolicyStatus, RouteStatus};
    let cond = |kind, status, reason, message: &str| Condition {
        kind,
        status,
        reason,
        message: message.into(),
    };
    let mut store = StoreStatus {
        routes: vec![RouteStatus {
            group: "gateway.networking.k8s.io",
            kind: "HTTPRoute",
            namespace: "default".into(),
            name: "web-canary".into(),
            parents: vec![ParentStatus {
                parent_ref: ParentRefStatus {
                    group: "core".into(),
                    kind: "Service".into(),
                    namespace: "default".into(),
                    name: "web".into(),
                    port: Some(8080),
                },
                controller_name: "weft",
                conditions: vec![
                    cond("Accepted", "True", "Accepted", ""),
                    cond("ResolvedRefs", "True", "ResolvedRefs", ""),
                ],
            }],
        }],
        ..StoreStatus::default()
    };
    let ok = statuses_check(&store);
    assert_eq!((ok.status, ok.details.len()), (Status::Ok, 0), "{ok:?}");

    store.routes[0].parents[0].conditions[1] = cond(
        "ResolvedRefs",
        "False",
        "BackendNotFound",
        "no Service default/web-v2",
    );
    store.policies.push(PolicyStatus {
        group: "policy.linkerd.io",
        kind: "AuthorizationPolicy",
        namespace: "default".into(),
        name: "web-authz".into(),
        conditions: vec![cond("Accepted", "False", "TargetNotFound", "")],
        target_ref: None,
    });
    let warn = statuses_check(&store);
    assert_eq!(warn.status, Status::Warning, "{warn:?}");
    assert_eq!(
        warn.details,
        vec![
            "HTTPRoute default/web-canary (parent Service default/web:8080): ResolvedRefs \
             BackendNotFound: no Service default/web-v2",
            "AuthorizationPolicy default/web-authz: Accepted TargetNotFound",
        ]
    );
    assert!(warn.hint.is_some());
    no_double_spaces(&[warn]);
}

/// A hint is one line of words: no run of spaces left by a broken string continuation.
fn no_double_spaces(checks: &[Check]) {
    for c in checks {
        let hint = c.hint.as_deref().unwrap_or_default();
        assert!(!hint.contains("  "), "{}: {hint:?}", c.id);
    }
}
