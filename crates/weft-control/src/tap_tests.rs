use super::*;
use crate::own_cert::renew_after;
use std::time::{Duration, SystemTime};
use x509_parser::prelude::{FromDer, X509Certificate};

#[test]
fn the_tap_identity_is_named_after_the_control_namespace() {
    assert_eq!(
        resource::tap_identity(&Defaults::default()),
        "tap.weft.serviceaccount.identity.weft.cluster.local"
    );
    let d = Defaults {
        trust_domain: "example.org".into(),
        control_namespace: "mesh".into(),
    };
    assert_eq!(
        resource::tap_identity(&d),
        "tap.mesh.serviceaccount.identity.mesh.example.org"
    );
}

#[test]
fn the_leaf_carries_the_tap_identity_and_chains_to_the_issuer() {
    let ca = Ca::ephemeral("cluster.local", "weft", Duration::from_secs(3600)).expect("ca");
    let name = resource::tap_identity(&Defaults::default());
    let now = SystemTime::now();
    let cert = issue(&ca, &name, "spiffe://cluster.local/ns/weft/sa/tap", now).expect("issue");
    assert_eq!(cert.chain.len(), 2);
    assert_eq!(cert.chain[1], ca.issuer_der());
    let (_, leaf) = X509Certificate::from_der(&cert.chain[0]).expect("x509");
    let sans: Vec<String> = leaf
        .subject_alternative_name()
        .expect("san")
        .expect("present")
        .value
        .general_names
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert!(sans.contains(&format!("DNSName({name})")), "{sans:?}");
    // The key is the certificate's.
    let key = rcgen::KeyPair::try_from(cert.key.as_slice()).expect("pkcs8");
    assert_eq!(
        leaf.public_key().subject_public_key.data.as_ref(),
        key.public_key_raw()
    );
}

#[test]
fn renewal_comes_at_seventy_percent_of_the_life() {
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    assert_eq!(
        renew_after(t0, t0 + Duration::from_secs(1000)),
        Duration::from_secs(700)
    );
    assert_eq!(renew_after(t0, t0), Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn the_certificate_is_renewed_before_it_expires_and_when_the_ca_changes() {
    let ca =
        Arc::new(Ca::ephemeral("cluster.local", "weft", Duration::from_secs(100)).expect("ca"));
    let (ca_tx, ca_rx) = watch::channel(ca);
    let (_stop, stop_rx) = watch::channel(false);
    let (tap, task) = start(&Defaults::default(), ca_rx, stop_rx);
    tokio::spawn(task);
    let first = tap.cert().expect("issued at start");
    let mut rx = tap.watch();
    rx.mark_unchanged();
    // 70 s of a 100 s life (the paused clock advances by itself while every task waits).
    tokio::time::timeout(Duration::from_secs(80), rx.changed())
        .await
        .expect("renewed before expiry")
        .expect("sender alive");
    let second = tap.cert().expect("renewed");
    assert_ne!(first.chain[0], second.chain[0]);
    // A new CA: a leaf from it at once.
    let other =
        Arc::new(Ca::ephemeral("cluster.local", "weft", Duration::from_secs(100)).expect("ca"));
    ca_tx.send_replace(other.clone());
    tokio::time::timeout(Duration::from_secs(1), rx.changed())
        .await
        .expect("renewed on a CA change")
        .expect("sender alive");
    assert_eq!(tap.cert().expect("cert").chain[1], other.issuer_der());
}
