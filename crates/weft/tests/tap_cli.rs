//! `weft tap` and `weft top` against a stub control-plane API that streams recorded NDJSON tap
//! events. `weft tap` prints Linkerd's lines (or the JSON lines) and reports the API's errors;
//! `weft top` runs in a real terminal (tmux): the table appears, is redrawn with new counts as
//! events arrive, and `q` quits, leaving the alternate screen and the terminal's cooked mode
//! restored.

mod support;

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::{skip_or_fail, which, SOON};

/// The NDJSON events of one request `id` to `path`.
fn request(id: u32, path: &str, status: u16, duration_us: u64) -> Vec<String> {
    let base = |t: &str| {
        serde_json::json!({
            "direction": "inbound", "source": format!("10.1.0.9:{}", 40000 + id),
            "destination": "10.1.0.2:8080", "source_meta": {"tls": "true"},
            "destination_meta": {}, "route_meta": {}, "id": format!("1:{id}"), "type": t,
        })
    };
    let mut req = base("request_init");
    req["method"] = "GET".into();
    req["path"] = path.into();
    req["authority"] = "web:8080".into();
    let mut rsp = base("response_init");
    rsp["status"] = status.into();
    rsp["latency_us"] = (duration_us / 2).into();
    let mut end = base("response_end");
    end["duration_us"] = duration_us.into();
    end["response_bytes"] = 10.into();
    end["grpc_status"] = serde_json::Value::Null;
    end["reset_code"] = serde_json::Value::Null;
    [req, rsp, end].iter().map(|v| format!("{v}\n")).collect()
}

/// A stub API answering one `GET /v1/tap/...` with a chunked NDJSON stream: the batches sent on
/// `batches`, each as they come; once `batches` is dropped, the stream ends. Reports the
/// request line.
fn stub_api(batches: mpsc::Receiver<Vec<String>>) -> (SocketAddr, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (seen_tx, seen) = mpsc::channel();
    std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(conn.try_clone().unwrap());
        let mut first = String::new();
        reader.read_line(&mut first).unwrap();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                break;
            }
        }
        let _ = seen_tx.send(first);
        let mut conn = conn;
        conn.write_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\ntransfer-encoding: chunked\r\n\r\n",
        )
        .unwrap();
        for batch in batches {
            for line in batch {
                let chunk = format!("{:x}\r\n{line}\r\n", line.len());
                if conn.write_all(chunk.as_bytes()).is_err() {
                    return;
                }
            }
        }
        let _ = conn.write_all(b"0\r\n\r\n");
        let mut rest = String::new();
        let _ = reader.read_line(&mut rest);
    });
    (addr, seen)
}

struct Session(String);

impl Session {
    fn capture(&self) -> String {
        let out = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &self.0])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until the pane satisfies `pred`; panics with the pane's text if it never does.
    fn wait_for(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + SOON;
        loop {
            let pane = self.capture();
            if pred(&pane) {
                return pane;
            }
            assert!(
                Instant::now() < deadline,
                "pane never showed {what}:\n{pane}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.0])
            .status();
    }
}

/// The table line of `path`, split into cells.
fn row<'a>(pane: &'a str, path: &str) -> Option<Vec<&'a str>> {
    pane.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cells| cells.get(3) == Some(&path))
}

#[test]
fn top_redraws_its_table_in_place_and_q_restores_the_terminal() {
    if which("tmux").is_none() {
        skip_or_fail("tmux is not installed");
        return;
    }
    let (batches, rx) = mpsc::channel();
    let (api, seen) = stub_api(rx);
    let name = format!("weft-top-{}", std::process::id());
    let script = format!(
        "{} top web -n demo --path /books --api-addr {api}; echo EXITED=$?; stty -a; echo STTY-DONE; sleep 60",
        support::weft_bin().display()
    );
    let status = Command::new("tmux")
        .args([
            "new-session",
            "-d",
            "-x",
            "200",
            "-y",
            "50",
            "-s",
            &name,
            "sh",
            "-c",
            &script,
        ])
        .status()
        .expect("tmux new-session");
    assert!(status.success());
    let session = Session(name);

    let first = seen.recv_timeout(SOON).expect("weft top asked the API");
    assert!(
        first.starts_with("GET /v1/tap/demo/web?max_rps=100&path=/books "),
        "{first}"
    );
    let mut batch = Vec::new();
    for (id, path, status, us) in [
        (1, "/books", 200, 800),
        (2, "/books", 200, 400),
        (3, "/books", 500, 600),
    ] {
        batch.extend(request(id, path, status, us));
    }
    batches.send(batch).unwrap();
    let pane = session.wait_for("3 /books requests", |p| {
        // Counted and ended: the third one's failure is in the rate.
        row(p, "/books").is_some_and(|r| r.get(4) == Some(&"3") && r.get(8) == Some(&"66.67%"))
    });
    assert!(
        pane.contains("Source") && pane.contains("Success Rate"),
        "{pane}"
    );
    let books = row(&pane, "/books").unwrap();
    assert_eq!(
        books[..4],
        ["10.1.0.9", "10.1.0.2:8080", "GET", "/books"],
        "{pane}"
    );
    assert_eq!(books[5..], ["400µs", "800µs", "600µs", "66.67%"], "{pane}");

    // More requests: the same table, redrawn with new counts, sorted by count.
    let mut batch = Vec::new();
    for (id, path) in [(4, "/books"), (5, "/books/1"), (6, "/books")] {
        batch.extend(request(id, path, 200, 100));
    }
    batches.send(batch).unwrap();
    let pane = session.wait_for("5 /books requests and /books/1", |p| {
        row(p, "/books").is_some_and(|r| r.get(4) == Some(&"5")) && row(p, "/books/1").is_some()
    });
    let lines: Vec<&str> = pane.lines().collect();
    let at = |path: &str| {
        lines
            .iter()
            .position(|l| l.split_whitespace().nth(3) == Some(path))
    };
    assert!(at("/books") < at("/books/1"), "sorted by count:\n{pane}");
    assert_eq!(
        pane.matches("Success Rate").count(),
        1,
        "redrawn in place:\n{pane}"
    );
    assert_eq!(
        row(&pane, "/books").unwrap()[5],
        "100µs",
        "best latency updated:\n{pane}"
    );

    // q quits: exit status 0, the alternate screen is gone, the terminal is cooked again.
    let ok = Command::new("tmux")
        .args(["send-keys", "-t", &session.0, "q"])
        .status()
        .unwrap();
    assert!(ok.success());
    let pane = session.wait_for("the exit and the terminal's flags", |p| {
        p.contains("STTY-DONE")
    });
    assert!(pane.contains("EXITED=0"), "{pane}");
    assert!(
        !pane.contains("Success Rate"),
        "the table left with the alternate screen:\n{pane}"
    );
    let flags: Vec<&str> = pane.split_whitespace().collect();
    for flag in ["icanon", "echo", "isig"] {
        assert!(flags.contains(&flag), "{flag} restored:\n{pane}");
        assert!(
            !flags.contains(&format!("-{flag}").as_str()),
            "{flag} restored:\n{pane}"
        );
    }
}

#[test]
fn tap_prints_linkerds_lines_and_json_lines() {
    for (format, expected) in [
        (
            "text",
            vec![
                "req id=1:1 proxy=in  src=10.1.0.9:40001 dst=10.1.0.2:8080 tls=true :method=GET \
                 :authority=web:8080 :path=/books",
                "rsp id=1:1 proxy=in  src=10.1.0.9:40001 dst=10.1.0.2:8080 tls=true :status=200 \
                 latency=250µs",
                "end id=1:1 proxy=in  src=10.1.0.9:40001 dst=10.1.0.2:8080 tls=true \
                 duration=500µs response-length=10B",
            ],
        ),
        (
            "json",
            request(1, "/books", 200, 500)
                .iter()
                .map(|l| l.trim())
                .collect(),
        ),
    ] {
        let (batches, rx) = mpsc::channel();
        let (api, seen) = stub_api(rx);
        batches.send(request(1, "/books", 200, 500)).unwrap();
        drop(batches); // the stream ends after them, as when the proxy's limit is reached
        let out = Command::new(support::weft_bin())
            .args([
                "tap",
                "demo/web",
                "--limit",
                "1",
                "--headers",
                "-o",
                format,
                "--api-addr",
            ])
            .arg(api.to_string())
            .stdin(Stdio::null())
            .output()
            .expect("weft tap runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let first = seen.recv_timeout(SOON).expect("asked");
        assert!(
            first.starts_with("GET /v1/tap/demo/web?max_rps=100&limit=1&headers=true "),
            "{first}"
        );
        let stdout = String::from_utf8(out.stdout).unwrap();
        let lines: Vec<&str> = stdout.lines().collect();
        let expected: Vec<String> = expected.iter().map(|l| l.to_string()).collect();
        assert_eq!(lines, expected, "{format}");
    }
}

#[test]
fn tap_reports_the_apis_error() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let api = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(conn.try_clone().unwrap());
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap_or(0) > 0 && !line.ends_with("\r\n\r\n") {}
        let body = r#"{"error":"workload demo/x has no linkerd-tap port"}"#;
        let mut conn = conn;
        let _ = write!(
            conn,
            "HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
    });
    let out = Command::new(support::weft_bin())
        .args(["tap", "x", "-n", "demo", "--api-addr", &api.to_string()])
        .stdin(Stdio::null())
        .output()
        .expect("weft tap runs");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("404 Not Found: workload demo/x has no linkerd-tap port"),
        "{stderr}"
    );
}
