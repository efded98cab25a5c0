//! Fuzz harnesses for the control plane's parsers of untrusted input: store files and
//! registration bodies (resource YAML), and the CSR of `Identity.Certify`. Each asserts what must
//! hold for every input (a panic is a finding). `fuzz/fuzz_targets/*.rs` call them under
//! libFuzzer, and `tests/fuzz_corpus.rs` replays the committed corpus and crash inputs on stable.

use crate::ca::{check_csr, Ca, CertifyError};
use crate::documents::{identity, in_force, parse_yaml_documents, state, InForce};
use crate::grpc::identity::requested_identity;
use crate::resource::{validate_one, Defaults, Resource};
use rcgen::PublicKeyData;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The file name the YAML harness gives its input.
const FILE: &str = "fuzz.yaml";

/// A store file's text, the way the file store takes it: every refused document says where
/// and why, every accepted one has the identity its source names, a Service or ExternalWorkload
/// re-validates from its canonical document to itself, and applying the same file again
/// changes nothing.
pub fn resource_yaml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let defaults = Defaults::default();
    let parsed = parse_yaml_documents(FILE, text, &defaults);
    for bad in &parsed.bad {
        assert!(
            !bad.errors.is_empty(),
            "document {} refused silently",
            bad.index
        );
        let place = format!("{FILE}: document {}", bad.index);
        for e in &bad.errors {
            assert!(e.starts_with(&place), "{e:?} does not say where");
        }
    }
    for doc in &parsed.docs {
        assert_eq!(identity(&doc.source), Some(doc.key()), "{:?}", doc.source);
        let canonical = match &doc.resource {
            Resource::Service(s) => Some(s.to_document()),
            Resource::Workload(w) => Some(w.to_document()),
            _ => None,
        };
        if let Some(canonical) = canonical {
            assert_eq!(
                validate_one(&canonical, "canonical", &defaults).as_ref(),
                Ok(&doc.resource),
                "the canonical document {canonical} validates differently"
            );
        }
    }
    let files = [(FILE, &parsed)];
    let (first, _) = in_force(&files, &InForce::new());
    assert!(first.len() <= parsed.docs.len());
    for (key, doc) in &first {
        assert_eq!(key, &doc.key());
    }
    let (again, _) = in_force(&files, &first);
    assert_eq!(
        again, first,
        "applying the same file twice changed what is in force"
    );
    let _ = state(&first);
}

/// A Certify request (`identity` line, then the CSR bytes, DER or PEM): the CSR check refuses
/// with a precise error or accepts, PEM and DER of the same request are judged alike, and an
/// accepted CSR gets a leaf for exactly the requested name and the CSR's key, signed by the
/// issuer.
pub fn csr(data: &[u8]) {
    let split = data.iter().position(|b| *b == b'\n').unwrap_or(data.len());
    let requested = requested_identity(&String::from_utf8_lossy(&data[..split]));
    let csr = data.get(split + 1..).unwrap_or_default();
    if requested.is_empty() {
        return; // Refused before the CSR is looked at.
    }
    let checked = check_csr(csr, &requested);
    if !csr.trim_ascii_start().starts_with(b"-----BEGIN") {
        let pem = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", csr.to_vec()));
        assert_eq!(
            check_csr(pem.as_bytes(), &requested).is_ok(),
            checked.is_ok(),
            "PEM and DER of one CSR judged differently"
        );
    }
    let key = match checked {
        Ok(key) => key,
        Err(CertifyError::InvalidCsr(reason)) => {
            assert!(!reason.is_empty());
            return;
        }
        Err(e) => panic!("a CSR check failed other than as an invalid CSR: {e}"),
    };
    let ca = ca();
    let issued = match ca.certify(csr, &requested, None, SystemTime::now()) {
        Ok(issued) => issued,
        Err(CertifyError::InvalidCsr(_)) => return,
        Err(e) => panic!("a checked CSR could not be signed: {e}"),
    };
    let (_, leaf) = X509Certificate::from_der(&issued.leaf).expect("the leaf parses");
    let sans: Vec<&GeneralName> = leaf
        .subject_alternative_name()
        .expect("one SAN extension")
        .expect("SANs")
        .value
        .general_names
        .iter()
        .collect();
    assert_eq!(sans, [&GeneralName::DNSName(&requested)]);
    assert_eq!(&*leaf.public_key().subject_public_key.data, key.der_bytes());
    let (_, issuer) = X509Certificate::from_der(ca.issuer_der()).expect("the issuer parses");
    leaf.verify_signature(Some(issuer.public_key()))
        .expect("the leaf is signed by the issuer");
}

/// One CA for every run (making one per input would dwarf the check itself).
fn ca() -> &'static Ca {
    static CA: OnceLock<Ca> = OnceLock::new();
    CA.get_or_init(|| {
        Ca::ephemeral("cluster.local", "weft", Duration::from_secs(3600)).expect("a CA")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn harnesses_take_real_inputs() {
        resource_yaml(
            b"apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  ports:\n  - port: 80\n",
        );
        let id = "web.default.serviceaccount.identity.weft.cluster.local";
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let mut p = rcgen::CertificateParams::new(vec![id.to_string()]).expect("params");
        p.distinguished_name = rcgen::DistinguishedName::new();
        let mut input = format!("{id}\n").into_bytes();
        input.extend_from_slice(p.serialize_request(&key).expect("csr").der());
        csr(&input);
    }
}
