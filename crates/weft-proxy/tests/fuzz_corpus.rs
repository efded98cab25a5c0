//! The fuzz corpus and every crash input (`fuzz/corpus/`, `fuzz/regressions/`) through the
//! proxy's fuzz harnesses, on stable: what the fuzzers found stays fixed without cargo-fuzz.

use weft_proxy::fuzzing;
use weft_testbed::fuzz::replay;

#[test]
fn detect() {
    assert!(replay("detect", fuzzing::detect) > 0);
}

#[test]
fn http1_head() {
    assert!(replay("http1_head", fuzzing::http1_head) > 0);
}

#[test]
fn client_hello() {
    assert!(replay("client_hello", fuzzing::client_hello) > 0);
}

#[test]
fn transport_header() {
    assert!(replay("transport_header", fuzzing::transport_header) > 0);
}

#[test]
fn env() {
    assert!(replay("env", fuzzing::env) > 0);
}
