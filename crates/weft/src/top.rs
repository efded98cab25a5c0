//! `weft top`: a live table of a workload's requests (Linkerd's `viz top`), grouped by source,
//! destination, method and path and sorted by count, redrawn in place from the same tap stream
//! as `weft tap`. The terminal is in raw mode on the alternate screen while it runs (plain ANSI
//! escapes and termios, no TUI library); `q` or Ctrl-C quits and restores it.

use std::collections::HashMap;
use std::io::Write as _;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;

use crate::tap::TapTarget;

/// How often the table is redrawn when something changed.
const REDRAW: Duration = Duration::from_millis(250);

/// `weft top`: the busiest request paths of a workload, live.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    weft top demo/web\n  \
    weft top books -n demo --path /books\n  \
    weft top demo/traffic --to demo/web --max-rps 50\n\n\
    Columns: Source (the client's address), Destination, Method, Path, Count (requests seen), \
    Best/Worst/Last (latency to the end of the response), Success Rate (responses below 500 \
    with no gRPC error). Press q or Ctrl-C to quit. Needs a terminal. Reads the control \
    plane's GET /v1/tap/...; see docs/observability.md.")]
pub struct TopArgs {
    #[command(flatten)]
    pub target: TapTarget,
}

/// One row of the table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Row {
    pub source: String,
    pub destination: String,
    pub method: String,
    pub path: String,
    pub count: u64,
    pub best_us: Option<u64>,
    pub worst_us: Option<u64>,
    pub last_us: Option<u64>,
    pub ended: u64,
    pub succeeded: u64,
}

/// A row's key: source host, destination, method, path.
type Key = (String, String, String, String);

/// The table's state: rows by key, and the open requests by id.
#[derive(Debug, Default)]
pub struct Table {
    rows: HashMap<Key, Row>,
    /// id → (row key, HTTP status once known).
    open: HashMap<String, (Key, Option<u64>)>,
}

/// The source without its (ephemeral) port: one row per client, not per connection.
fn host(addr: &str) -> String {
    match addr.parse::<std::net::SocketAddr>() {
        Ok(a) => a.ip().to_string(),
        Err(_) => addr.to_string(),
    }
}

impl Table {
    /// Folds one API event in.
    pub fn add(&mut self, ev: &Value) {
        let text = |v: &Value| v.as_str().unwrap_or("-").to_string();
        let id = text(&ev["id"]);
        match ev["type"].as_str() {
            Some("request_init") => {
                let key = (
                    host(ev["source"].as_str().unwrap_or("-")),
                    text(&ev["destination"]),
                    text(&ev["method"]),
                    text(&ev["path"]),
                );
                let row = self.rows.entry(key.clone()).or_insert_with(|| Row {
                    source: key.0.clone(),
                    destination: key.1.clone(),
                    method: key.2.clone(),
                    path: key.3.clone(),
                    ..Row::default()
                });
                row.count += 1;
                self.open.insert(id, (key, None));
            }
            Some("response_init") => {
                if let Some((_, status)) = self.open.get_mut(&id) {
                    *status = ev["status"].as_u64();
                }
            }
            Some("response_end") => {
                let Some((key, status)) = self.open.remove(&id) else {
                    return;
                };
                let Some(row) = self.rows.get_mut(&key) else {
                    return;
                };
                row.ended += 1;
                let grpc_ok = ev["grpc_status"].as_u64().is_none_or(|c| c == 0);
                let http_ok = status.is_some_and(|s| s < 500);
                if grpc_ok && http_ok && ev["reset_code"].is_null() {
                    row.succeeded += 1;
                }
                if let Some(d) = ev["duration_us"].as_u64() {
                    row.best_us = Some(row.best_us.map_or(d, |b| b.min(d)));
                    row.worst_us = Some(row.worst_us.map_or(d, |w| w.max(d)));
                    row.last_us = Some(d);
                }
            }
            _ => {}
        }
    }

    /// Rows by count, then by key, at most `max`.
    pub fn rows(&self, max: usize) -> Vec<&Row> {
        let mut rows: Vec<&Row> = self.rows.values().collect();
        rows.sort_by(|a, b| {
            (b.count.cmp(&a.count)).then_with(|| {
                (&a.source, &a.destination, &a.method, &a.path).cmp(&(
                    &b.source,
                    &b.destination,
                    &b.method,
                    &b.path,
                ))
            })
        });
        rows.truncate(max);
        rows
    }

    /// The table as lines of text (header first).
    pub fn render(&self, max_rows: usize) -> Vec<String> {
        let latency = |us: Option<u64>| match us {
            None => "-".to_string(),
            Some(us) if us >= 10_000 => format!("{}ms", us / 1000),
            Some(us) => format!("{us}µs"),
        };
        let mut cells = vec![[
            "Source",
            "Destination",
            "Method",
            "Path",
            "Count",
            "Best",
            "Worst",
            "Last",
            "Success Rate",
        ]
        .map(String::from)];
        for r in self.rows(max_rows) {
            let rate = if r.ended == 0 {
                "-".to_string()
            } else {
                format!("{:.2}%", 100.0 * r.succeeded as f64 / r.ended as f64)
            };
            cells.push([
                r.source.clone(),
                r.destination.clone(),
                r.method.clone(),
                r.path.clone(),
                r.count.to_string(),
                latency(r.best_us),
                latency(r.worst_us),
                latency(r.last_us),
                rate,
            ]);
        }
        crate::show::columns(&cells)
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// The terminal in raw mode on the alternate screen; dropping it puts everything back.
struct Screen {
    saved: libc::termios,
}

impl Screen {
    fn enter() -> anyhow::Result<Screen> {
        // SAFETY: termios is plain data; tcgetattr fills it or fails.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        if unsafe { libc::tcgetattr(libc::STDIN_FILENO, &mut saved) } != 0 {
            anyhow::bail!(
                "weft top needs a terminal on stdin ({}); use `weft tap -o json` in scripts",
                std::io::Error::last_os_error()
            );
        }
        let mut raw = saved;
        // No line buffering, no echo, and Ctrl-C arrives as a byte (we quit and restore).
        raw.c_lflag &= !(libc::ICANON | libc::ECHO | libc::ISIG | libc::IEXTEN);
        raw.c_cc[libc::VMIN] = 1;
        raw.c_cc[libc::VTIME] = 0;
        // SAFETY: setting attributes of our own stdin from a valid struct.
        if unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &raw) } != 0 {
            anyhow::bail!(
                "setting the terminal to raw mode: {}",
                std::io::Error::last_os_error()
            );
        }
        let mut out = std::io::stdout();
        // Alternate screen, cursor hidden.
        let _ = out.write_all(b"\x1b[?1049h\x1b[?25l");
        let _ = out.flush();
        Ok(Screen { saved })
    }

    /// Terminal height and width (24x80 when unknown).
    fn size() -> (usize, usize) {
        // SAFETY: TIOCGWINSZ fills a winsize or fails.
        let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
        let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0;
        if ok && ws.ws_row > 0 {
            (ws.ws_row as usize, ws.ws_col as usize)
        } else {
            (24, 80)
        }
    }

    fn draw(&self, title: &str, status: &str, lines: &[String]) {
        let (_, width) = Screen::size();
        let mut frame = String::from("\x1b[H\x1b[2J");
        for line in [title, status]
            .into_iter()
            .chain(lines.iter().map(String::as_str))
        {
            let cut: String = line.chars().take(width).collect();
            frame.push_str(&cut);
            frame.push_str("\r\n");
        }
        let mut out = std::io::stdout();
        let _ = out.write_all(frame.as_bytes());
        let _ = out.flush();
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        let mut out = std::io::stdout();
        let _ = out.write_all(b"\x1b[?25h\x1b[?1049l");
        let _ = out.flush();
        // SAFETY: restoring the attributes read in `enter`.
        unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &self.saved) };
    }
}

enum Input {
    Event(Value),
    Ended(Result<(), String>),
    Quit,
}

pub async fn run(args: TopArgs) -> anyhow::Result<()> {
    let (ns, name) = args.target.workload();
    let path = args.target.path(0, false);
    let api = args.target.api.addr;
    let (tx, mut rx) = mpsc::channel::<Input>(256);

    // Keys: a thread, since stdin reads block.
    let keys = tx.clone();
    std::thread::spawn(move || {
        use std::io::Read as _;
        let mut b = [0u8; 1];
        let mut stdin = std::io::stdin();
        while let Ok(1) = stdin.read(&mut b) {
            if matches!(b[0], b'q' | b'Q' | 0x03) {
                let _ = keys.blocking_send(Input::Quit);
                return;
            }
        }
    });
    let screen = Screen::enter()?;
    let events = tx.clone();
    let tap = tokio::spawn(async move {
        let result = crate::tap::stream(api, &path, |line| {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                return Ok(true);
            };
            Ok(events.try_send(Input::Event(v)).is_ok() || !events.is_closed())
        })
        .await;
        let _ = events
            .send(Input::Ended(result.map_err(|e| format!("{e:#}"))))
            .await;
    });

    let title = format!("weft top {ns}/{name}    (press q to quit)");
    let mut table = Table::default();
    let mut status = "waiting for requests...".to_string();
    let mut dirty = true;
    let mut ticks = tokio::time::interval(REDRAW);
    let mut seen = 0u64;
    let outcome = loop {
        tokio::select! {
            input = rx.recv() => match input {
                Some(Input::Event(ev)) => {
                    if ev["type"] == "request_init" {
                        seen += 1;
                        status = format!("{seen} requests tapped");
                    }
                    table.add(&ev);
                    dirty = true;
                }
                Some(Input::Ended(Ok(()))) => {
                    status = format!("{seen} requests tapped; the tap ended (press q to quit)");
                    dirty = true;
                }
                Some(Input::Ended(Err(e))) => break Err(anyhow::anyhow!(e)),
                Some(Input::Quit) | None => break Ok(()),
            },
            _ = ticks.tick() => {
                if dirty {
                    let (height, _) = Screen::size();
                    screen.draw(&title, &status, &table.render(height.saturating_sub(4)));
                    dirty = false;
                }
            }
        }
    };
    tap.abort();
    drop(screen);
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(t: &str, id: &str, extra: Value) -> Value {
        let mut v = json!({"type": t, "id": id, "source": "10.0.0.1:5000",
            "destination": "10.0.0.2:8080"});
        v.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        v
    }

    #[test]
    fn requests_fold_into_rows_sorted_by_count() {
        let mut t = Table::default();
        for (i, path, status, dur) in [(1, "/a", 200, 300), (2, "/a", 500, 900), (3, "/b", 200, 50)]
        {
            let id = format!("1:{i}");
            t.add(&ev(
                "request_init",
                &id,
                json!({"method": "GET", "path": path}),
            ));
            t.add(&ev("response_init", &id, json!({"status": status})));
            t.add(&ev(
                "response_end",
                &id,
                json!({"duration_us": dur, "grpc_status": null, "reset_code": null}),
            ));
        }
        // A request still open counts but has no latency yet.
        t.add(&ev(
            "request_init",
            "1:4",
            json!({"method": "GET", "path": "/b"}),
        ));
        t.add(&ev(
            "request_init",
            "1:5",
            json!({"method": "GET", "path": "/b"}),
        ));
        let rows = t.rows(10);
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].path.as_str(), rows[0].count), ("/b", 3));
        assert_eq!((rows[1].path.as_str(), rows[1].count), ("/a", 2));
        assert_eq!(
            rows[1].source, "10.0.0.1",
            "the client's port is not part of the key"
        );
        assert_eq!(
            (rows[1].best_us, rows[1].worst_us, rows[1].last_us),
            (Some(300), Some(900), Some(900))
        );
        let lines = t.render(10);
        assert!(lines[0].starts_with("Source"), "{lines:?}");
        assert!(lines[0].contains("Success Rate"));
        assert!(
            lines[1].contains("/b") && lines[1].contains("100.00%"),
            "{lines:?}"
        );
        assert!(
            lines[2].contains("/a") && lines[2].contains("50.00%") && lines[2].contains("900µs"),
            "{lines:?}"
        );
        assert_eq!(t.render(1).len(), 2, "at most max rows");
    }

    #[test]
    fn a_grpc_error_is_a_failure() {
        let mut t = Table::default();
        t.add(&ev(
            "request_init",
            "1:1",
            json!({"method": "POST", "path": "/x.Y/Z"}),
        ));
        t.add(&ev("response_init", "1:1", json!({"status": 200})));
        t.add(&ev(
            "response_end",
            "1:1",
            json!({"duration_us": 20_000, "grpc_status": 14, "reset_code": null}),
        ));
        let lines = t.render(5);
        assert!(
            lines[1].contains("0.00%") && lines[1].contains("20ms"),
            "{lines:?}"
        );
    }
}
