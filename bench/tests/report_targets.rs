//! bench/report.py's target checks (issue 17's targets against Envoy, per layout), by their
//! Python unit tests (bench/test_report.py): the report that says a target is met is itself
//! tested.

use std::process::Command;

#[test]
fn report_target_checks_pass_their_unit_tests() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/test_report.py");
    let out = match Command::new("python3").arg(script).output() {
        Ok(out) => out,
        Err(e) => {
            weft_testbed::skip_or_fail(&format!("python3 is not runnable ({e})"));
            return;
        }
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "bench/test_report.py failed:\n{stderr}"
    );
    assert!(stderr.contains("\nOK"), "no test ran:\n{stderr}");
}
