//! `weft control`'s logs are plain text when stderr is not a terminal: with stderr to a pipe
//! (how a service manager, `weft run` or a log collector reads it) no ANSI escape appears, and
//! the fields are plain values (RFC 3339 times, no Rust debug forms).

use std::io::{BufRead as _, BufReader, Read as _};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

#[test]
fn control_logs_to_a_pipe_carry_no_colour_codes() {
    let store = std::env::temp_dir().join(format!("weft-control-logs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&store);
    std::fs::create_dir_all(&store).expect("store dir");
    // One bad file so a warning (whose level is coloured on a terminal) is logged too.
    std::fs::write(
        store.join("bad.yaml"),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\n",
    )
    .expect("bad file");
    let mut child = Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(["control", "--store"])
        .arg(&store)
        .args(["--grpc-addr", "127.0.0.1:0", "--api-addr", "127.0.0.1:0"])
        .env_remove("NO_COLOR")
        .env("WEFT_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn weft control");
    let stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(Duration::from_secs(30));
    // SIGTERM is a normal stop: the process logs "shutting down" and exits 0.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = stderr.read_to_end(&mut text);
        let _ = tx.send(text);
    });
    let logs = rx.recv_timeout(Duration::from_secs(30));
    if logs.is_err() {
        let _ = child.kill();
    }
    let status = child.wait().expect("wait");
    let _ = std::fs::remove_dir_all(&store);

    let line = line.expect("no listening line within 30 s");
    assert!(line.contains("\"event\":\"listening\""), "{line:?}");
    let logs =
        String::from_utf8_lossy(&logs.expect("stderr did not close within 30 s")).to_string();
    assert!(status.success(), "exit {status:?}; stderr:\n{logs}");
    for expected in [
        "control plane listening",
        "unknown kind \"Pod\"",
        "shutting down",
    ] {
        assert!(logs.contains(expected), "no {expected:?} in:\n{logs}");
    }
    assert!(
        !logs.contains('\u{1b}'),
        "ANSI escape in piped logs:\n{logs}"
    );
    assert!(
        !logs.contains("SystemTime {"),
        "debug-formatted time in:\n{logs}"
    );
}
