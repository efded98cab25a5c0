use super::*;
use crate::ca_reload::{Ledger, Records};
use std::time::SystemTime;

fn init(tag: &str) -> PathBuf {
    let dir = crate::test_dir(&format!("rotation-{tag}"));
    let g = ca::generate("cluster.local", "weft").expect("generate");
    ca::write_dir(&dir, &g).expect("write");
    dir
}

fn anchors_in_bundle(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join(ca::TRUST_ANCHORS_FILE)).expect("bundle");
    ca::pem_certificates(text.as_bytes())
        .expect("pem")
        .iter()
        .map(|a| ca::fingerprint(a))
        .collect()
}

#[test]
fn pem_encoding_round_trips() {
    let g = ca::generate("cluster.local", "weft").expect("generate");
    let der = ca::pem_certificates(g.anchor_cert_pem.as_bytes()).expect("pem");
    assert_eq!(pem(&der[0]), g.anchor_cert_pem.replace("\r\n", "\n"));
    for len in 0..7 {
        let bytes: Vec<u8> = (0..len).collect();
        let text = pem(&bytes);
        let (_, parsed) = x509_parser::pem::parse_x509_pem(text.as_bytes()).expect("parse");
        assert_eq!(parsed.contents, bytes);
    }
}

#[tokio::test]
async fn a_full_rotation_moves_the_bundle_and_the_issuer_through_each_stage() {
    let dir = init("full");
    let old = anchors_in_bundle(&dir);
    assert_eq!(status(&dir).expect("status").stage, Stage::None);

    let a = prepare(&dir).expect("prepare");
    assert_eq!(a.old_anchors, old);
    let bundle = anchors_in_bundle(&dir);
    assert_eq!(bundle, vec![old[0].clone(), a.new_anchor.clone()]);
    // Still issuing from the old issuer.
    let ca = Ca::load(&dir, ca::DEFAULT_CERT_LIFETIME).expect("load after prepare");
    assert_eq!(ca.issuer_anchor(), old[0]);
    let s = status(&dir).expect("status");
    assert_eq!(s.stage, Stage::Bundle);
    assert!(s.prepared_issuer.is_some());
    assert_eq!(
        s.anchors
            .iter()
            .map(|a| a.role.as_str())
            .collect::<Vec<_>>(),
        ["old", "new"]
    );
    assert!(matches!(
        prepare(&dir),
        Err(RotationError::WrongStage { .. })
    ));
    assert!(matches!(
        retire(&dir, false),
        Err(RotationError::WrongStage { .. })
    ));

    issue(&dir).expect("issue");
    let ca = Ca::load(&dir, ca::DEFAULT_CERT_LIFETIME).expect("load after issue");
    assert_eq!(ca.issuer_anchor(), a.new_anchor);
    assert_eq!(anchors_in_bundle(&dir).len(), 2);
    assert!(!dir.join(NEXT_DIR).exists());

    // No control plane ever recorded anything: refused without --force.
    let e = retire(&dir, false).expect_err("no ledger");
    assert!(matches!(e, RotationError::NoLedger { .. }), "{e}");

    // A live leaf under the old anchor holds the retirement back.
    let ledger = Ledger::new(&a.new_anchor);
    ledger.record(&old[0], SystemTime::now() + Duration::from_secs(3600));
    ledger.record(&a.new_anchor, SystemTime::now() + Duration::from_secs(3600));
    ledger.flush(&Records::Dir(dir.clone())).await;
    let e = retire(&dir, false).expect_err("live leaves");
    assert!(
        matches!(e, RotationError::LiveLeaves { live: 1, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("still live"), "{e}");
    let s = status(&dir).expect("status");
    assert_eq!(s.anchors[0].live_leaves, 1);
    assert_eq!(s.anchors[1].live_leaves, 1);
    assert!(
        s.next_step.contains("wait until the 1 live"),
        "{}",
        s.next_step
    );

    // Once the old leaves are gone, only the settling time is left.
    std::fs::remove_dir_all(dir.join(ca_reload::LEDGER_DIR)).expect("rm ledger");
    let ledger = Ledger::new(&a.new_anchor);
    ledger.record(&a.new_anchor, SystemTime::now() + Duration::from_secs(3600));
    ledger.flush(&Records::Dir(dir.clone())).await;
    let e = retire(&dir, false).expect_err("settling");
    assert!(matches!(e, RotationError::Settling { .. }), "{e}");
    let mut state = read_state(&dir).expect("state").expect("some");
    state.issuing_since = Some(unix_now() - 10);
    write_state(&dir, &state).expect("backdate");

    retire(&dir, false).expect("retire");
    assert_eq!(anchors_in_bundle(&dir), vec![a.new_anchor.clone()]);
    let ca = Ca::load(&dir, ca::DEFAULT_CERT_LIFETIME).expect("load after retire");
    assert_eq!(ca.issuer_anchor(), a.new_anchor);
    let s = status(&dir).expect("status");
    assert_eq!(s.stage, Stage::Complete);
    assert_eq!(s.anchors.len(), 1);
    assert_eq!(s.anchors[0].role, "current");
    assert!(render_text(&s).contains("rotation stage: complete"));
    // The replaced files are archived.
    let archived = dir.join(RETIRED_DIR).join(state.started.to_string());
    assert!(archived.join(ca::ISSUER_KEY_FILE).exists());
    assert!(archived.join(ca::TRUST_ANCHORS_FILE).exists());

    // And a second rotation can start.
    prepare(&dir).expect("second prepare");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn leaf_counts_drop_expired_leaves() {
    let counts = LeafCount::of(&[(100, 2), (200, 3), (50, 7)], 150);
    assert_eq!(
        counts,
        LeafCount {
            live: 3,
            latest_expiry: 200
        }
    );
    assert_eq!(LeafCount::of(&[(100, 2)], 100).live, 0);
}
