//! The inbound HTTP access log (`WEFT_PROXY_ACCESS_LOG`, Linkerd's `LINKERD2_PROXY_ACCESS_LOG`):
//! one line per request the inbound side served, on stderr, apart from the diagnostic log (the
//! `WEFT_PROXY_LOG` filter does not apply to it), in the `apache` or the `json` format.
//!
//! Off (the default) the request path pays one branch per request (`inbound` checks an
//! `Option`) and nothing else. On, [`logged`] takes the request's head before it is forwarded,
//! counts the request and response body bytes, and writes the line when the response body ends
//! (or is dropped), so `total_ns` covers the whole exchange.

use crate::{
    config::AccessLogFormat,
    http::{self, Body, BoxError},
};
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::{header, Request, Response, Version};
use std::{
    fmt::Write as _,
    future::Future,
    io::Write as _,
    net::SocketAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc,
    },
    task::{Context, Poll},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

/// Serves `req` through `handle` and writes its access log line when the response ends.
/// `client_id`: the client's verified mTLS identity, if any.
pub async fn logged<B, F, Fut>(
    format: AccessLogFormat,
    client_addr: SocketAddr,
    client_id: Option<String>,
    req: Request<B>,
    handle: F,
) -> Response<Body>
where
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
    F: FnOnce(Request<Body>) -> Fut,
    Fut: Future<Output = Response<Body>>,
{
    let started = Instant::now();
    let head = Head::of(&req, client_addr, client_id);
    let request_bytes = Arc::new(AtomicU64::new(0));
    let counted = request_bytes.clone();
    let req = req.map(move |inner| http::boxed(Counted { inner, n: counted }));

    // Processing time: the time spent polling the request's future until the response head,
    // that is the proxy's own work, without the waits for the application.
    let mut fut = std::pin::pin!(handle(req));
    let mut processing = Duration::ZERO;
    let resp = std::future::poll_fn(|cx| {
        let t = Instant::now();
        let polled = fut.as_mut().poll(cx);
        processing += t.elapsed();
        polled
    })
    .await;

    let status = resp.status().as_u16();
    resp.map(|inner| {
        http::boxed(Logged {
            inner,
            response_bytes: 0,
            entry: Some(Entry {
                format,
                head,
                status,
                started,
                processing,
                request_bytes,
            }),
        })
    })
}

/// What the line says about the request, taken before it is forwarded.
struct Head {
    timestamp: SystemTime,
    client_addr: SocketAddr,
    client_id: Option<String>,
    method: String,
    uri: String,
    version: &'static str,
    host: Option<String>,
    user_agent: Option<String>,
    trace_id: Option<String>,
}

impl Head {
    fn of<B>(req: &Request<B>, client_addr: SocketAddr, client_id: Option<String>) -> Head {
        let header = |name| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        Head {
            timestamp: SystemTime::now(),
            client_addr,
            client_id,
            method: req.method().to_string(),
            uri: req.uri().to_string(),
            version: version(req.version()),
            host: http::authority_of(req),
            user_agent: header(header::USER_AGENT),
            trace_id: trace_id(req.headers()),
        }
    }
}

fn version(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/?",
    }
}

/// The request's trace id: W3C `traceparent` (`00-TRACEID-SPANID-FLAGS`), else B3's
/// `x-b3-traceid`.
fn trace_id(headers: &hyper::HeaderMap) -> Option<String> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(id) = get("traceparent").and_then(|tp| tp.split('-').nth(1)) {
        if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Some(id.to_ascii_lowercase());
        }
    }
    get("x-b3-traceid")
        .filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_ascii_lowercase)
}

/// Everything but the response bytes, which the response body counts.
struct Entry {
    format: AccessLogFormat,
    head: Head,
    status: u16,
    started: Instant,
    processing: Duration,
    request_bytes: Arc<AtomicU64>,
}

impl Entry {
    fn line(&self, response_bytes: u64) -> String {
        let h = &self.head;
        let total_ns = nanos(self.started.elapsed());
        let processing_ns = nanos(self.processing);
        let request_bytes = self.request_bytes.load(Relaxed);
        let timestamp = rfc3339(h.timestamp);
        match self.format {
            AccessLogFormat::Json => {
                let line = serde_json::json!({
                    "client.addr": h.client_addr.to_string(),
                    "client.id": h.client_id,
                    "host": h.host,
                    "method": h.method,
                    "processing_ns": processing_ns,
                    "request_bytes": request_bytes,
                    "response_bytes": response_bytes,
                    "status": self.status,
                    "timestamp": timestamp,
                    "total_ns": total_ns,
                    "trace_id": h.trace_id,
                    "uri": h.uri,
                    "user_agent": h.user_agent,
                    "version": h.version,
                });
                format!("{line}\n")
            }
            AccessLogFormat::Apache => {
                let dash = |v: &Option<String>| v.as_deref().map_or("-".to_string(), quote_free);
                let mut line = String::with_capacity(256);
                let _ = writeln!(
                    line,
                    "{} {} - [{}] \"{} {} {}\" {} {} \"{}\" \"{}\" {} {} {} {}",
                    h.client_addr,
                    dash(&h.client_id),
                    timestamp,
                    quote_free(&h.method),
                    quote_free(&h.uri),
                    h.version,
                    self.status,
                    response_bytes,
                    dash(&h.user_agent),
                    dash(&h.host),
                    request_bytes,
                    processing_ns,
                    total_ns,
                    dash(&h.trace_id),
                );
                line
            }
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A value safe inside an Apache-format line: `"` and `\` escaped, control bytes as `\xNN`.
fn quote_free(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// `2026-12-06T02:40:01.123456789Z`.
fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, day) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_nanos()
    )
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// The request body, counting its data bytes.
struct Counted<B> {
    inner: B,
    n: Arc<AtomicU64>,
}

impl<B> http_body::Body for Counted<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                this.n.fetch_add(data.len() as u64, Relaxed);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The response body: counts its data bytes and writes the line when it is done with (ended,
/// failed, or dropped by a client that went away).
struct Logged {
    inner: Body,
    response_bytes: u64,
    entry: Option<Entry>,
}

impl http_body::Body for Logged {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.response_bytes += data.len() as u64;
                }
            }
            Poll::Ready(None | Some(Err(_))) => this.write(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Logged {
    fn write(&mut self) {
        if let Some(entry) = self.entry.take() {
            let line = entry.line(self.response_bytes);
            // One write of the whole line: lines from concurrent requests do not interleave.
            let _ = std::io::stderr().lock().write_all(line.as_bytes());
        }
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        self.write();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let t = UNIX_EPOCH + Duration::new(1_796_351_401, 123_456_789);
        assert_eq!(rfc3339(t), "2026-12-04T02:30:01.123456789Z");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(&rfc3339(leap)[..10], "2000-02-29");
    }

    #[test]
    fn trace_ids_from_w3c_or_b3() {
        let mut h = hyper::HeaderMap::new();
        assert_eq!(trace_id(&h), None);
        h.insert("x-b3-traceid", "80F198EE56343BA8".parse().unwrap());
        assert_eq!(trace_id(&h).as_deref(), Some("80f198ee56343ba8"));
        h.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        assert_eq!(
            trace_id(&h).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
    }

    #[test]
    fn apache_values_are_escaped() {
        assert_eq!(quote_free(r#"a "b" \c"#), r#"a \"b\" \\c"#);
        assert_eq!(quote_free("x\ny"), "x\\x0ay");
    }
}
