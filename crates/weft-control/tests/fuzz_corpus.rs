//! The fuzz corpus and every crash input (`fuzz/corpus/`, `fuzz/regressions/`) through the
//! control plane's fuzz harnesses, on stable: what the fuzzers found stays fixed without
//! cargo-fuzz.

use weft_control::fuzzing;
use weft_testbed::fuzz::replay;

#[test]
fn resource_yaml() {
    assert!(replay("resource_yaml", fuzzing::resource_yaml) > 0);
}

#[test]
fn csr() {
    assert!(replay("csr", fuzzing::csr) > 0);
}
