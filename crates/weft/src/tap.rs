//! `weft tap`: the requests a workload's proxy sees, live, from the control plane's
//! `GET /v1/tap/{ns}/{workload}` (Linkerd's `viz tap` shape): one `req`, `rsp` and `end` line per
//! request, or the API's JSON lines. The stream reader and the filters are shared with
//! `weft top` (`top.rs`).

use std::net::SocketAddr;

use anyhow::{bail, Context as _};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// Which workload to tap and which of its requests: what `weft tap` and `weft top` share.
#[derive(Debug, clap::Args)]
pub struct TapTarget {
    /// The workload: `NAMESPACE/NAME`, or `NAME` with `-n`.
    #[arg(value_name = "WORKLOAD")]
    pub workload: String,
    /// The workload's namespace when WORKLOAD has none.
    #[arg(short = 'n', long, default_value = "default", value_name = "NS")]
    pub namespace: String,
    /// Only requests to this destination, `NAMESPACE/NAME` (a workload, or a service with
    /// `--to-kind service`).
    #[arg(long, value_name = "NS/NAME")]
    pub to: Option<String>,
    /// What `--to` names.
    #[arg(long, value_enum, default_value = "workload", requires = "to")]
    pub to_kind: ToKind,
    /// Only requests whose path starts with this.
    #[arg(long, value_name = "PREFIX")]
    pub path: Option<String>,
    /// Only requests with this HTTP method.
    #[arg(long, value_name = "METHOD")]
    pub method: Option<String>,
    /// Only requests with exactly this authority.
    #[arg(long, value_name = "AUTHORITY")]
    pub authority: Option<String>,
    /// At most this many requests per second are shown (the rest are dropped by the control
    /// plane).
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub max_rps: u32,
    #[command(flatten)]
    pub api: crate::get::ApiAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ToKind {
    Workload,
    Service,
}

impl TapTarget {
    /// `(namespace, name)` of the workload.
    pub fn workload(&self) -> (String, String) {
        match self.workload.split_once('/') {
            Some((ns, name)) => (ns.to_string(), name.to_string()),
            None => (self.namespace.clone(), self.workload.clone()),
        }
    }

    /// The API path with its query (`limit` 0: as many as the proxy allows).
    pub fn path(&self, limit: u32, headers: bool) -> String {
        let (ns, name) = self.workload();
        let mut q = vec![format!("max_rps={}", self.max_rps)];
        if let Some(to) = &self.to {
            q.push(format!("to={}", encode(to)));
            let kind = match self.to_kind {
                ToKind::Workload => "workload",
                ToKind::Service => "service",
            };
            q.push(format!("to_kind={kind}"));
        }
        for (k, v) in [
            ("path", &self.path),
            ("method", &self.method),
            ("authority", &self.authority),
        ] {
            if let Some(v) = v {
                q.push(format!("{k}={}", encode(v)));
            }
        }
        if limit > 0 {
            q.push(format!("limit={limit}"));
        }
        if headers {
            q.push("headers=true".into());
        }
        format!("/v1/tap/{}/{}?{}", encode(&ns), encode(&name), q.join("&"))
    }
}

/// Percent-encodes everything but unreserved characters and `/`.
fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `weft tap`: print every tapped request's events as they happen.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    weft tap demo/web\n  \
    weft tap books -n demo --path /books --method GET\n  \
    weft tap demo/traffic --to demo/web --to-kind workload -o json\n  \
    weft tap demo/web --limit 10 --headers -o json\n\n\
    Each request prints `req` (method, authority, path), `rsp` (status, latency since the \
    request) and `end` (duration, response bytes, gRPC status) lines with the proxy's side \
    (proxy=in|out), source, destination and whether the connection was mTLS. The control \
    plane dials the proxy's tap server (port `linkerd-tap`, 4190 in a pod) with its tap \
    identity. Ends with Ctrl-C, or after --limit requests. See docs/observability.md.")]
pub struct TapArgs {
    #[command(flatten)]
    pub target: TapTarget,
    /// Stop after this many requests (0: until interrupted).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub limit: u32,
    /// Include request and response headers (and trailers) in the JSON output.
    #[arg(long)]
    pub headers: bool,
    /// Output: Linkerd's text lines, or the API's JSON lines.
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    pub output: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

pub async fn run(args: TapArgs) -> anyhow::Result<()> {
    use std::io::Write as _;
    let path = args.target.path(args.limit, args.headers);
    let stdout = std::io::stdout();
    stream(args.target.api.addr, &path, |line| {
        let mut out = stdout.lock();
        let printed = match args.output {
            Format::Json => writeln!(out, "{line}"),
            Format::Text => match serde_json::from_str::<Value>(line) {
                Ok(ev) => writeln!(out, "{}", text_line(&ev)),
                Err(_) => Ok(()),
            },
        };
        // A closed pipe (`weft tap ... | head`) ends the tap.
        Ok(printed.and_then(|_| out.flush()).is_ok())
    })
    .await
}

/// Opens `GET path` on the API and calls `on_line` with each line of the streamed answer until
/// it returns false or the stream ends. A non-2xx answer is an error with the API's message.
pub async fn stream(
    api: SocketAddr,
    path: &str,
    mut on_line: impl FnMut(&str) -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let tcp = tokio::net::TcpStream::connect(api)
        .await
        .with_context(|| format!("connecting to the control plane API at {api}"))?;
    let _ = tcp.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .with_context(|| format!("HTTP handshake with {api}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let request = http::Request::get(path)
        .header(http::header::HOST, api.to_string())
        .body(Empty::<Bytes>::new())?;
    let response = sender
        .send_request(request)
        .await
        .with_context(|| format!("GET {path}"))?;
    let status = response.status();
    let mut body = response.into_body();
    if !status.is_success() {
        let bytes = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let msg = serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
        bail!("GET {path}: {status}: {msg}");
    }
    let mut pending = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.with_context(|| format!("reading GET {path}"))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        pending.extend_from_slice(&data);
        while let Some(i) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=i).collect();
            let line = String::from_utf8_lossy(&line);
            if !line.trim().is_empty() && !on_line(line.trim())? {
                return Ok(());
            }
        }
    }
    Ok(())
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("-")
}

/// One event as Linkerd's `viz tap` prints it.
pub fn text_line(ev: &Value) -> String {
    let inbound = ev["direction"] == "inbound";
    // The mTLS status of the connection the request came in on (inbound) or left on (outbound).
    let tls = if inbound {
        &ev["source_meta"]["tls"]
    } else {
        &ev["destination_meta"]["tls"]
    };
    let common = format!(
        "id={} proxy={:<3} src={} dst={} tls={}",
        s(&ev["id"]),
        if inbound { "in" } else { "out" },
        s(&ev["source"]),
        s(&ev["destination"]),
        tls.as_str().unwrap_or("no_identity"),
    );
    match ev["type"].as_str() {
        Some("request_init") => format!(
            "req {common} :method={} :authority={} :path={}",
            s(&ev["method"]),
            s(&ev["authority"]),
            s(&ev["path"])
        ),
        Some("response_init") => format!(
            "rsp {common} :status={} latency={}µs",
            ev["status"], ev["latency_us"]
        ),
        Some("response_end") => {
            let mut line = format!("end {common}");
            if let Some(code) = ev["grpc_status"].as_u64() {
                line.push_str(&format!(" grpc-status={}", grpc_status_name(code)));
            }
            if let Some(code) = ev["reset_code"].as_u64() {
                line.push_str(&format!(" reset-error={code}"));
            }
            line.push_str(&format!(
                " duration={}µs response-length={}B",
                ev["duration_us"], ev["response_bytes"]
            ));
            line
        }
        _ => format!("??? {common}"),
    }
}

/// gRPC status codes by name, as Linkerd prints them (`grpc-status=OK`).
pub fn grpc_status_name(code: u64) -> String {
    const NAMES: [&str; 17] = [
        "OK",
        "Canceled",
        "Unknown",
        "InvalidArgument",
        "DeadlineExceeded",
        "NotFound",
        "AlreadyExists",
        "PermissionDenied",
        "ResourceExhausted",
        "FailedPrecondition",
        "Aborted",
        "OutOfRange",
        "Unimplemented",
        "Internal",
        "Unavailable",
        "DataLoss",
        "Unauthenticated",
    ];
    NAMES
        .get(code as usize)
        .map_or_else(|| code.to_string(), |n| n.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;
    use serde_json::json;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        tap: TapArgs,
    }

    fn parse(args: &[&str]) -> TapArgs {
        Cli::try_parse_from(std::iter::once("weft").chain(args.iter().copied()))
            .expect("valid")
            .tap
    }

    #[test]
    fn the_query_carries_every_filter() {
        let a = parse(&["books", "-n", "demo"]);
        assert_eq!(a.target.path(0, false), "/v1/tap/demo/books?max_rps=100");
        let a = parse(&[
            "demo/web",
            "--to",
            "demo/books",
            "--to-kind",
            "service",
            "--path",
            "/a b",
            "--method",
            "POST",
            "--authority",
            "x:80",
            "--max-rps",
            "5",
            "--limit",
            "3",
            "--headers",
        ]);
        assert_eq!(
            a.target.path(a.limit, a.headers),
            "/v1/tap/demo/web?max_rps=5&to=demo/books&to_kind=service&path=/a%20b\
             &method=POST&authority=x%3A80&limit=3&headers=true"
        );
    }

    #[test]
    fn events_print_as_linkerds_lines() {
        let base = json!({
            "direction": "inbound", "source": "10.0.0.1:4000", "destination": "10.0.0.2:8080",
            "source_meta": {"tls": "true"}, "destination_meta": {}, "id": "1:2",
        });
        let with = |extra: Value| {
            let mut v = base.clone();
            v.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            text_line(&v)
        };
        assert_eq!(
            with(
                json!({"type": "request_init", "method": "GET", "authority": "web:8080", "path": "/"})
            ),
            "req id=1:2 proxy=in  src=10.0.0.1:4000 dst=10.0.0.2:8080 tls=true :method=GET \
             :authority=web:8080 :path=/"
        );
        assert_eq!(
            with(json!({"type": "response_init", "status": 200, "latency_us": 1234})),
            "rsp id=1:2 proxy=in  src=10.0.0.1:4000 dst=10.0.0.2:8080 tls=true :status=200 \
             latency=1234µs"
        );
        assert_eq!(
            with(
                json!({"type": "response_end", "duration_us": 2000, "response_bytes": 12,
                        "grpc_status": 0, "reset_code": null})
            ),
            "end id=1:2 proxy=in  src=10.0.0.1:4000 dst=10.0.0.2:8080 tls=true grpc-status=OK \
             duration=2000µs response-length=12B"
        );
        let out = json!({"direction": "outbound", "source": "a", "destination": "b", "id": "1:3",
            "destination_meta": {"tls": "no_identity"}, "type": "response_end",
            "duration_us": 5, "response_bytes": 0, "grpc_status": null, "reset_code": 2});
        assert_eq!(
            text_line(&out),
            "end id=1:3 proxy=out src=a dst=b tls=no_identity reset-error=2 duration=5µs \
             response-length=0B"
        );
    }
}
