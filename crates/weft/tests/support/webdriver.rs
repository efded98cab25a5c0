//! A real browser for the dashboard test: Debian's headless `chromium` driven by `chromedriver`
//! over the W3C WebDriver HTTP/JSON protocol, with the tests' own HTTP/1 client (no WebDriver
//! crate). Only what the test needs: a session, navigation, running a script in the page,
//! screenshots, and the browser's console log (`POST /session/{id}/se/log`, which chromedriver
//! drains on every read, so the entries are kept here).
//!
//! Included by the tests that use it (`#[path]`), not by `support`: other test binaries need no
//! browser. chromedriver runs in its own process group; dropping the [`Browser`] kills that group, so
//! no chromium outlives a failed test.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::process::Command;

use crate::support::{free_port, http_request, set_pdeathsig, which, ChildProc, TempDir, SOON};

/// Bound on one WebDriver command (starting a session launches chromium: give it room on a
/// busy machine).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// What chromium runs with: headless, no sandbox (tests run as root), nothing fetched from the
/// network behind our back, a fresh profile.
const ARGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1400,1000",
];

/// The programs the browser needs, when one is missing: why.
pub fn missing() -> Option<String> {
    for program in ["chromium", "chromedriver"] {
        if which(program).is_none() {
            return Some(format!(
                "needs {program} (Debian packages chromium and chromium-driver)"
            ));
        }
    }
    None
}

/// One chromedriver with one chromium session.
pub struct Browser {
    driver: ChildProc,
    addr: SocketAddr,
    session: String,
    /// Every browser log entry read so far.
    pub log: Vec<Value>,
    _profile: TempDir,
}

impl Browser {
    /// Starts chromedriver on a free port and opens a session (chromium with [`ARGS`], its
    /// console captured at every level).
    pub async fn start(log_dir: &Path) -> Browser {
        let port = free_port();
        let mut cmd =
            Command::new(which("chromedriver").expect("chromedriver (checked by missing())"));
        cmd.arg(format!("--port={port}"))
            .arg(format!(
                "--log-path={}",
                log_dir.join("chromedriver.log").display()
            ))
            .process_group(0);
        set_pdeathsig(&mut cmd);
        let driver = ChildProc::spawn("chromedriver", cmd, log_dir);
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let profile = TempDir::new("chromium-profile");
        let mut browser = Browser {
            driver,
            addr,
            session: String::new(),
            log: Vec::new(),
            _profile: profile,
        };
        let ready = tokio::time::timeout(SOON, async {
            loop {
                if let Ok((200, body)) = http_request(addr, "GET", "/status", None).await {
                    if serde_json::from_str::<Value>(&body)
                        .is_ok_and(|v| v["value"]["ready"] == true)
                    {
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
        assert!(
            ready.is_ok(),
            "chromedriver not ready within {SOON:?}: {}",
            browser.driver.stderr_tail(2000)
        );
        let chromium = which("chromium").expect("chromium (checked by missing())");
        let mut args: Vec<String> = ARGS.iter().map(|a| a.to_string()).collect();
        args.push(format!(
            "--user-data-dir={}",
            browser._profile.path().display()
        ));
        let session = browser
            .command(
                "POST",
                "/session",
                json!({"capabilities": {"alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {"binary": chromium, "args": args},
                    "goog:loggingPrefs": {"browser": "ALL"},
                }}}),
            )
            .await;
        browser.session = session["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no sessionId in {session}"))
            .to_string();
        browser
    }

    /// One WebDriver command: its `value`, or a panic with the driver's error.
    async fn command(&self, method: &str, path: &str, body: Value) -> Value {
        let body = (method == "POST").then(|| body.to_string());
        let answer =
            tokio::time::timeout(COMMAND_TIMEOUT, http_request(self.addr, method, path, body))
                .await
                .unwrap_or_else(|_| {
                    panic!("WebDriver {method} {path}: no answer in {COMMAND_TIMEOUT:?}")
                })
                .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        let (status, text) = answer;
        let doc: Value = serde_json::from_str(&text).unwrap_or_else(|e| {
            panic!("WebDriver {method} {path}: {status}: not JSON ({e}): {text}")
        });
        assert_eq!(status, 200, "WebDriver {method} {path}: {doc}");
        doc["value"].clone()
    }

    fn session_path(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    /// Navigates to `url` (returns once the page has loaded).
    pub async fn goto(&self, url: &str) {
        self.command("POST", &self.session_path("/url"), json!({"url": url}))
            .await;
    }

    /// Runs `script` (a function body: `return ...` gives the answer) in the page.
    pub async fn eval(&self, script: &str) -> Value {
        self.command(
            "POST",
            &self.session_path("/execute/sync"),
            json!({"script": script, "args": []}),
        )
        .await
    }

    /// Polls `script` until it answers something other than `null`/`false`, bounded by
    /// `timeout`; panics with `what` and the last answer otherwise.
    pub async fn wait_for(&self, what: &str, timeout: Duration, script: &str) -> Value {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let value = self.eval(script).await;
            if !value.is_null() && value != Value::Bool(false) {
                return value;
            }
            if tokio::time::Instant::now() >= deadline {
                let status = self
                    .eval("return document.getElementById('status')?.textContent ?? null")
                    .await;
                panic!("timed out after {timeout:?} waiting for: {what} (page status: {status})");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Saves a PNG of the viewport at `path`.
    pub async fn screenshot(&self, path: &Path) {
        let data = self
            .command("GET", &self.session_path("/screenshot"), Value::Null)
            .await;
        let png = base64_decode(data.as_str().expect("screenshot is a string"))
            .expect("screenshot is base64");
        assert!(png.starts_with(b"\x89PNG"), "screenshot is not a PNG");
        std::fs::write(path, png).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }

    /// Reads the browser log entries logged since the last read (also kept in [`Browser::log`]).
    pub async fn read_log(&mut self) -> Vec<Value> {
        let entries = self
            .command(
                "POST",
                &self.session_path("/se/log"),
                json!({"type": "browser"}),
            )
            .await;
        let entries = entries.as_array().cloned().unwrap_or_default();
        self.log.extend(entries.iter().cloned());
        entries
    }

    /// Ends the session (chromium quits), then chromedriver's process group goes as on drop.
    pub async fn quit(self) {
        let path = self.session_path("");
        let _ = tokio::time::timeout(
            COMMAND_TIMEOUT,
            http_request(self.addr, "DELETE", &path, None),
        )
        .await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(pid) = self.driver.id() {
            // SAFETY: kill(2) on the process group chromedriver leads (it was started with
            // process_group(0)): chromedriver and the chromium it started.
            unsafe {
                libc::kill(-(pid as i32), libc::SIGKILL);
            }
        }
    }
}

/// Standard base64 (what WebDriver screenshots are), padding optional.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let bytes: Vec<u8> = text
        .bytes()
        .filter(|b| !b.is_ascii_whitespace() && *b != b'=')
        .collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= value(*c)? << (18 - 6 * i);
        }
        let take = match chunk.len() {
            4 => 3,
            3 => 2,
            2 => 1,
            _ => return None,
        };
        out.extend_from_slice(&n.to_be_bytes()[1..1 + take]);
    }
    Some(out)
}

#[test]
fn base64_decodes_what_it_should() {
    assert_eq!(base64_decode("aGVsbG8=").as_deref(), Some(&b"hello"[..]));
    assert_eq!(base64_decode("aGVsbG8h").as_deref(), Some(&b"hello!"[..]));
    assert_eq!(base64_decode("aGk").as_deref(), Some(&b"hi"[..]));
    assert_eq!(base64_decode("a"), None);
    assert_eq!(base64_decode("a*=="), None);
}
