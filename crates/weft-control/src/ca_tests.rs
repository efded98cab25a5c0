use super::*;

const ID: &str = "web.default.serviceaccount.identity.weft.cluster.local";
const SPIFFE: &str = "spiffe://cluster.local/ns/default/sa/web";

/// A CSR with the given SANs, signed by a fresh P-256 key.
fn csr(sans: Vec<SanType>) -> Vec<u8> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let mut p = CertificateParams::default();
    p.subject_alt_names = sans;
    p.serialize_request(&key).expect("csr").der().to_vec()
}

fn dns(name: &str) -> SanType {
    SanType::DnsName(name.try_into().expect("ia5"))
}

fn invalid(e: Result<Issued, CertifyError>) -> String {
    match e {
        Err(CertifyError::InvalidCsr(m)) => m,
        other => panic!("expected InvalidCsr, got {other:?}"),
    }
}

#[test]
fn certify_issues_a_leaf_with_dns_and_spiffe_sans_chained_to_the_anchor() {
    let ca = Ca::ephemeral("cluster.local", "weft", Duration::from_secs(3600)).expect("ca");
    let now = SystemTime::now();
    let issued = ca
        .certify(&csr(vec![dns(ID)]), ID, Some(SPIFFE), now)
        .expect("certify");

    let (_, leaf) = X509Certificate::from_der(&issued.leaf).expect("leaf parses");
    let sans: Vec<String> = leaf
        .subject_alternative_name()
        .expect("san ext")
        .expect("has sans")
        .value
        .general_names
        .iter()
        .map(|n| format!("{n:?}"))
        .collect();
    assert_eq!(
        sans,
        vec![format!("DNSName({ID:?})"), format!("URI({SPIFFE:?})")]
    );
    assert!(!leaf.is_ca());

    // leaf <- issuer <- anchor
    let (_, issuer) = X509Certificate::from_der(&issued.intermediates[0]).expect("issuer");
    leaf.verify_signature(Some(issuer.public_key()))
        .expect("leaf signed by issuer");
    let anchors = pem_certificates(ca.trust_anchors_pem().as_bytes()).expect("anchors");
    let (_, anchor) = X509Certificate::from_der(&anchors[0]).expect("anchor");
    issuer
        .verify_signature(Some(anchor.public_key()))
        .expect("issuer signed by anchor");

    // Lifetime: about one hour, valid_until matches the certificate.
    let not_after = leaf.validity().not_after.timestamp();
    assert_eq!(unix(issued.valid_until), not_after);
    let life = not_after - unix(now);
    assert!((3590..=3600).contains(&life), "lifetime {life}s");
}

#[test]
fn certify_accepts_pem_and_never_outlives_the_issuer() {
    let ca = Ca::ephemeral(
        "cluster.local",
        "weft",
        Duration::from_secs(10 * 365 * 24 * 3600),
    )
    .expect("ca");
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let mut p = CertificateParams::default();
    p.subject_alt_names = vec![dns(ID)];
    let pem = p.serialize_request(&key).expect("csr").pem().expect("pem");
    let issued = ca
        .certify(pem.as_bytes(), ID, None, SystemTime::now())
        .expect("certify pem");
    assert_eq!(issued.valid_until, ca.issuer_not_after());
}

#[test]
fn csr_rules_refuse_precisely() {
    let ca = Ca::ephemeral("cluster.local", "weft", DEFAULT_CERT_LIFETIME).expect("ca");
    let now = SystemTime::now();
    let m = invalid(ca.certify(b"garbage", ID, None, now));
    assert!(m.starts_with("malformed CSR"), "{m}");
    let m = invalid(ca.certify(&csr(vec![]), ID, None, now));
    assert!(m.contains("no DNS SAN"), "{m}");
    let m = invalid(ca.certify(
        &csr(vec![dns(
            "other.default.serviceaccount.identity.weft.cluster.local",
        )]),
        ID,
        None,
        now,
    ));
    assert!(m.contains("does not match"), "{m}");
    let m = invalid(ca.certify(&csr(vec![dns(ID), dns("x.example")]), ID, None, now));
    assert!(m.contains("2 DNS SANs"), "{m}");
    let m = invalid(ca.certify(
        &csr(vec![
            dns(ID),
            SanType::IpAddress("127.0.0.1".parse().expect("ip")),
        ]),
        ID,
        None,
        now,
    ));
    assert!(m.contains("IP address"), "{m}");
    let m = invalid(ca.certify(
        &csr(vec![dns(ID), SanType::URI(SPIFFE.try_into().expect("ia5"))]),
        ID,
        None,
        now,
    ));
    assert!(m.contains("URI"), "{m}");
    let m = invalid(ca.certify(
        &csr(vec![
            dns(ID),
            SanType::Rfc822Name("a@b.c".try_into().expect("ia5")),
        ]),
        ID,
        None,
        now,
    ));
    assert!(m.contains("email"), "{m}");

    // A CSR whose signature was tampered with (last byte of the signature flipped).
    let mut bad = csr(vec![dns(ID)]);
    let last = bad.len() - 1;
    bad[last] ^= 0x01;
    let m = invalid(ca.certify(&bad, ID, None, now));
    assert!(m.contains("signature") || m.starts_with("malformed"), "{m}");
}

#[test]
fn init_writes_a_directory_that_loads_and_refuses_to_overwrite() {
    let dir = crate::test_dir("ca-init");
    let g = generate("example.org", "weft").expect("generate");
    write_dir(&dir, &g).expect("write");
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.join(ISSUER_KEY_FILE))
            .expect("key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let ca = Ca::load(&dir, DEFAULT_CERT_LIFETIME).expect("load");
    assert_eq!(ca.trust_anchors_pem(), g.anchor_cert_pem);
    ca.certify(&csr(vec![dns(ID)]), ID, Some(SPIFFE), SystemTime::now())
        .expect("certify from a loaded CA");
    match write_dir(&dir, &g) {
        Err(CaError::Exists(p)) => assert!(p.ends_with(TRUST_ANCHORS_FILE)),
        other => panic!("expected Exists, got {other:?}"),
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn load_reports_missing_files_foreign_issuers_and_wrong_keys() {
    let dir = crate::test_dir("ca-load");
    match Ca::load(&dir, DEFAULT_CERT_LIFETIME) {
        Err(CaError::Io { path, .. }) => assert!(path.ends_with(TRUST_ANCHORS_FILE)),
        other => panic!("expected Io, got {other:?}"),
    }
    let a = generate("cluster.local", "weft").expect("a");
    let b = generate("cluster.local", "weft").expect("b");
    write_dir(&dir, &a).expect("write");

    // The key of another issuer.
    std::fs::write(dir.join(ISSUER_KEY_FILE), &b.issuer_key_pem).expect("swap key");
    let e = Ca::load(&dir, DEFAULT_CERT_LIFETIME).expect_err("wrong key");
    assert!(e.to_string().contains("is not the key"), "{e}");

    // An issuer from another anchor.
    std::fs::write(dir.join(ISSUER_CERT_FILE), &b.issuer_cert_pem).expect("swap cert");
    let e = Ca::load(&dir, DEFAULT_CERT_LIFETIME).expect_err("foreign issuer");
    assert!(
        e.to_string().contains("not signed by any certificate"),
        "{e}"
    );

    // A key where certificates belong.
    std::fs::write(dir.join(TRUST_ANCHORS_FILE), &a.anchor_key_pem).expect("bad anchors");
    let e = Ca::load(&dir, DEFAULT_CERT_LIFETIME).expect_err("bad anchors");
    assert!(e.to_string().contains("unexpected PEM block"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_second_cluster_gets_its_own_issuer_under_the_first_ones_anchor() {
    let west = generate("cluster.local", "weft").expect("west");
    let east = generate_issuer_for(
        &west.anchor_cert_pem,
        &west.anchor_key_pem,
        &issuer_name("cluster.local", "weft"),
    )
    .expect("east's issuer");
    assert_eq!(east.anchor_cert_pem, west.anchor_cert_pem);
    assert_ne!(east.issuer_key_pem, west.issuer_key_pem);

    // East's directory has no anchor key: it stays with whoever keeps the anchor offline.
    let dir = crate::test_dir("ca-second-cluster");
    write_dir(&dir, &east).expect("write");
    assert!(!dir.join(TRUST_ANCHOR_KEY_FILE).exists());
    let ca = Ca::load(&dir, DEFAULT_CERT_LIFETIME).expect("east's CA loads");
    let issued = ca
        .certify(&csr(vec![dns(ID)]), ID, Some(SPIFFE), SystemTime::now())
        .expect("certify");
    let anchors = pem_certificates(west.anchor_cert_pem.as_bytes()).expect("anchors");
    let (_, anchor) = X509Certificate::from_der(&anchors[0]).expect("anchor");
    let (_, issuer) = X509Certificate::from_der(&issued.intermediates[0]).expect("issuer");
    issuer
        .verify_signature(Some(anchor.public_key()))
        .expect("east's issuer is signed by west's anchor");
    assert_eq!(ca.issuer_anchor(), fingerprint(&anchors[0]));

    // A key that belongs to no anchor of the bundle is refused, naming the bundle.
    let other = generate("cluster.local", "weft").expect("other");
    match generate_issuer_for(&west.anchor_cert_pem, &other.anchor_key_pem, "x") {
        Err(CaError::Invalid { reason, .. }) => assert!(reason.contains("anchor key"), "{reason}"),
        other => panic!("expected Invalid, got {:?}", other.map(|_| ())),
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn csrs_too_large_or_of_unsupported_keys_are_refused_by_name() {
    let ca = Ca::ephemeral("cluster.local", "weft", DEFAULT_CERT_LIFETIME).expect("ca");
    let now = SystemTime::now();
    // A valid CSR padded past the limit: refused for its size before it is parsed.
    let mut huge = csr(vec![dns(ID)]);
    huge.resize(MAX_CSR + 1, 0);
    let m = invalid(ca.certify(&huge, ID, None, now));
    assert_eq!(
        m,
        format!("CSR is {} bytes; at most 16384 are accepted", MAX_CSR + 1)
    );

    // An RSA key (made by openssl, public: a CSR carries no private key).
    let rsa = include_bytes!("../tests/fixtures/certify/rsa-2048.csr.der");
    let m = invalid(ca.certify(
        rsa,
        "web-1.default.serviceaccount.identity.weft.cluster.local",
        None,
        now,
    ));
    assert!(m.starts_with("unsupported CSR public key: RSA;"), "{m}");

    // An algorithm nobody knows: the P-256 CSR's id-ecPublicKey (1.2.840.10045.2.1) renamed.
    let mut unknown = csr(vec![dns(ID)]);
    let oid = [0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
    let at = unknown
        .windows(oid.len())
        .position(|w| w == oid)
        .expect("id-ecPublicKey in the CSR");
    unknown[at + oid.len() - 1] = 0x7f;
    let m = invalid(ca.certify(&unknown, ID, None, now));
    assert!(
        m.starts_with("unsupported CSR public key: algorithm 1.2.840.10045.2.127;"),
        "{m}"
    );

    // ECDSA P-384 and Ed25519 are certified.
    for alg in [&rcgen::PKCS_ECDSA_P384_SHA384, &rcgen::PKCS_ED25519] {
        let key = KeyPair::generate_for(alg).expect("key");
        let mut p = CertificateParams::default();
        p.subject_alt_names = vec![dns(ID)];
        let der = p.serialize_request(&key).expect("csr").der().to_vec();
        ca.certify(&der, ID, None, now)
            .expect("a supported key is certified");
    }
}
