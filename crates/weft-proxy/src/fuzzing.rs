//! Fuzz harnesses: one function per parser the proxy runs on bytes a peer or an operator chose.
//! Each takes arbitrary bytes, drives the real code with them and asserts what must hold for
//! every input (a panic is a finding). `fuzz/fuzz_targets/*.rs` call them under libFuzzer, and
//! `tests/fuzz_corpus.rs` replays the committed corpus and crash inputs through them on stable.

use crate::{
    config::{Config, ConfigError},
    detect::{self, Outcome, Protocol},
    http as h,
    mtls::{self, ClientHello, Peeked, TransportHeader},
    trace::propagation::{self as trace, Outgoing, Read},
};
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, Uri, Version};
use std::{
    collections::HashMap,
    future::Future,
    io,
    pin::{pin, Pin},
    task::{Context, Poll, Waker},
    time::Duration,
};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

/// Protocol detection ([`detect::detect_outcome`] over a stream that arrives in chunks): it
/// decides at the first chunk whose bytes decide, every later byte agrees with that decision,
/// the replayed stream is exactly the input, and an undecided input is always decided by more
/// bytes (detection cannot wait forever on a chatty client).
pub fn detect(data: &[u8]) {
    let Some((&chunk, data)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk % 64) + 1;
    let decided = detect::classify(&exact(data));
    let (outcome, replayed, consumed, last) = block_on(async {
        let (outcome, mut io) = detect::detect_outcome(Chunks::new(data, chunk), HOUR)
            .await
            .expect("in-memory reads do not fail");
        let consumed = io.prefix().len();
        let last = io.get_ref().last;
        let mut replayed = Vec::new();
        io.read_to_end(&mut replayed)
            .await
            .expect("in-memory reads do not fail");
        (outcome, replayed, consumed, last)
    });
    assert_eq!(replayed, data, "the stream replays every byte read");
    match outcome {
        Outcome::Decided(p) => {
            assert_eq!(detect::classify(&data[..consumed]), Some(p));
            let before = consumed - last;
            assert_eq!(
                detect::classify(&data[..before]),
                None,
                "detection read past the bytes that decided"
            );
            assert_eq!(decided, Some(p), "more bytes changed the decision");
        }
        Outcome::Closed => {
            assert_eq!(consumed, data.len());
            assert_eq!(decided, None);
        }
        Outcome::Timeout => panic!("an always-ready stream timed out"),
    }
    if decided.is_none() {
        let mut more = data.to_vec();
        more.resize(data.len() + 8 * 1024, b'a');
        assert!(detect::classify(&more).is_some(), "never decides");
    }
}

/// The HTTP/1 request head as the proxy handles it once hyper parsed it: detection agrees with
/// every request line the `http` types accept, hop-by-hop stripping leaves no hop-by-hop header,
/// the HTTP/1 → HTTP/2 → HTTP/1 conversion between proxies keeps method, path and authority and
/// leaves exactly one `Host`, and trace headers read back as written.
pub fn http1_head(data: &[u8]) {
    let Some(Head {
        line,
        method,
        target,
        version,
        headers,
    }) = request_head(data)
    else {
        return;
    };
    let mut req = Request::new(h::empty());
    *req.method_mut() = method;
    *req.uri_mut() = target;
    *req.version_mut() = if version == 0 {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    *req.headers_mut() = headers;
    // hyper takes bytes past ASCII in a target (as obs-text), and methods of any length;
    // detection leaves those to the opaque relay, which still carries them. (Control bytes the
    // `http` types let through, in a fragment, httparse refuses before they are a request.)
    let visible = line.iter().all(|b| b.is_ascii_graphic() || *b == b' ');
    if visible && req.method().as_str().len() <= detect::MAX_METHOD_LEN {
        let mut line = line.to_vec();
        line.extend_from_slice(b"\r\n");
        assert_eq!(
            detect::classify(&line),
            Some(Protocol::Http1),
            "a request line the HTTP stack accepts is not detected as HTTP/1: {:?}",
            String::from_utf8_lossy(&line)
        );
    }

    let _ = h::is_upgrade(&req);
    let _ = h::is_grpc(&req);
    let _ = h::grpc_status(req.headers());
    trace_round_trip(req.headers());

    let mut stripped = req.headers().clone();
    h::strip_hop_by_hop(&mut stripped, false);
    let named: Vec<String> = connection_tokens(req.headers());
    for name in ["connection", "upgrade", "keep-alive", "proxy-connection"]
        .iter()
        .copied()
        .chain(named.iter().map(String::as_str))
        .chain(["transfer-encoding"])
    {
        assert!(!stripped.contains_key(name), "{name} survived stripping");
    }

    let method = req.method().clone();
    let authority = h::authority_of(&req);
    let target = |req: &Request<h::Body>| {
        req.uri()
            .path_and_query()
            .map_or(("/".to_string(), None), |p| {
                (p.path().to_string(), p.query().map(str::to_string))
            })
    };
    let path = target(&req);
    h::upgrade_to_h2(&mut req);
    assert_eq!(req.version(), Version::HTTP_2);
    assert!(!req.headers().contains_key(header::CONNECTION));
    assert!(h::take_orig_http1(&mut req), "the peer sees l5d-orig-proto");
    assert_eq!(req.version(), Version::HTTP_11);
    assert!(!req.headers().contains_key(h::L5D_ORIG_PROTO));
    assert_eq!(req.method(), method);
    if authority.is_some() {
        // Without a readable authority (no Host, or only ones that are not visible ASCII) the
        // headers go on as the client sent them: nothing names the one Host to keep.
        assert!(req.headers().get_all(header::HOST).iter().count() <= 1);
    }
    if method != Method::CONNECT {
        assert!(
            req.uri().authority().is_none(),
            "origin-form after to_http1"
        );
        // An authority the URI cannot carry leaves the target as it was.
        let carried = authority.as_deref().is_none_or(|a| {
            a.parse::<::http::uri::Authority>().is_ok() && HeaderValue::from_str(a).is_ok()
        });
        if carried {
            assert_eq!(target(&req), path, "the path changed on the way");
            if let Some(a) = &authority {
                assert_eq!(
                    h::authority_of(&req).as_deref(),
                    Some(a.as_str()),
                    "the authority changed on the way"
                );
            }
        }
    }
}

/// The ClientHello peek ([`mtls::peek_client_hello`] over a stream in chunks): it stops at the
/// first chunk that decides, more bytes never change the verdict, what it read is a prefix of
/// the input, a parsed hello re-encodes to itself, and where rustls reads the same hello it
/// finds the same SNI and ALPN.
pub fn client_hello(data: &[u8]) {
    let Some((&chunk, data)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk % 64) + 1;
    let verdict = mtls::parse_client_hello(&exact(data));
    let mut io = Chunks::new(data, chunk);
    let (peeked, buf) = block_on(async {
        mtls::peek_client_hello(&mut io, HOUR)
            .await
            .expect("in-memory reads do not fail")
    });
    assert_eq!(&data[..buf.len()], &buf[..], "the peek keeps what it read");
    match &verdict {
        None => assert!(
            matches!(peeked, Peeked::NotTls | Peeked::Malformed),
            "an unfinished hello at EOF is {peeked:?}"
        ),
        Some(v) => {
            assert_eq!(&peeked, v, "more bytes changed the verdict");
            let before = buf.len() - io.last;
            assert_eq!(mtls::parse_client_hello(&data[..before]), None);
        }
    }
    let Some(Peeked::Hello(hello)) = verdict else {
        return;
    };
    if let Some(sni) = &hello.sni {
        assert!(!sni.ends_with('.') && sni.to_ascii_lowercase() == *sni);
    }
    if let Some(encoded) = encode_client_hello(&hello) {
        assert_eq!(
            mtls::parse_client_hello(&encoded),
            Some(Peeked::Hello(hello.clone())),
            "a parsed hello does not re-encode to itself"
        );
    }
    if let Some((sni, alpn)) = rustls_view(data) {
        if let Some(sni) = sni {
            let sni = sni.trim_end_matches('.').to_ascii_lowercase();
            assert_eq!(hello.sni.as_deref(), Some(sni.as_str()), "SNI differs");
        }
        if let Some(alpn) = alpn {
            assert_eq!(hello.alpn, alpn, "ALPN differs from rustls's");
        }
    }
}

/// The transport header: whatever [`TransportHeader::read`] accepts re-encodes to a header that
/// reads back equal, it reads exactly the header and never the bytes after it, and a header made
/// from the input's bytes survives write → read.
pub fn transport_header(data: &[u8]) {
    let mut rest = data;
    let read = poll_ready(TransportHeader::read(&mut rest));
    let consumed = data.len() - rest.len();
    if let Ok(header) = &read {
        let len = u32::from_be_bytes(
            data[mtls::TRANSPORT_PREFACE.len()..][..4]
                .try_into()
                .expect("4 bytes"),
        );
        assert_eq!(
            consumed,
            mtls::TRANSPORT_PREFACE.len() + 4 + len as usize,
            "read past the header"
        );
        assert_ne!(header.port, 0);
        assert_ne!(header.name.as_deref(), Some(""));
        assert_ne!(header.client_id.as_deref(), Some(""));
        assert_eq!(&read_back(&header.encode()), header);
    }
    if data.len() >= mtls::TRANSPORT_PREFACE.len() && !data.starts_with(mtls::TRANSPORT_PREFACE) {
        assert!(matches!(read, Err(mtls::HeaderError::Preface)));
    }

    // A header from the bytes themselves, followed by the rest of them.
    let [p0, p1, proto, tail @ ..] = data else {
        return;
    };
    let port = u16::from_be_bytes([*p0, *p1]).max(1);
    let protocol = match proto % 3 {
        0 => None,
        1 => Some(mtls::SessionProtocol::Http1),
        _ => Some(mtls::SessionProtocol::Http2),
    };
    // NUL-separated: the name, then the caller a gateway names (`client_id`), then what follows.
    let field = |bytes: &[u8]| {
        let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
        let text = String::from_utf8(bytes[..end].to_vec())
            .ok()
            .filter(|t| !t.is_empty());
        (text, end)
    };
    let (name, split) = field(tail);
    let (client_id, used) = match tail.get(split + 1..) {
        Some(after) => {
            let (client, end) = field(after);
            (client, split + 1 + end)
        }
        None => (None, split),
    };
    let header = TransportHeader {
        port,
        name,
        protocol,
        client_id,
    };
    let mut wire = header.encode();
    wire.extend_from_slice(&tail[used..]);
    let mut rest = &wire[..];
    let got = poll_ready(TransportHeader::read(&mut rest)).expect("an encoded header reads");
    assert_eq!(got, header);
    assert_eq!(rest, &tail[used..], "bytes after the header were consumed");
}

/// The proxy's environment (`NAME=VALUE` entries separated by NUL bytes, as in
/// `/proc/PID/environ`): [`Config::from_env`] reports, never panics;
/// it reads the same way twice; every error names a proxy variable, and one that quotes a value
/// names a variable that is set.
pub fn env(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let vars: HashMap<String, String> = text
        .split('\0')
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let first = Config::from_env(&vars);
    let again = Config::from_env(&vars);
    match (&first, &again) {
        (Ok(c), Ok(_)) => assert!(c.worker_threads() >= 1),
        (Err(e), Err(f)) => {
            assert_eq!(e, f, "the same environment reads differently");
            check_errors(e, &vars);
        }
        _ => panic!("the same environment reads differently"),
    }
}

fn check_errors(e: &ConfigError, vars: &HashMap<String, String>) {
    assert!(!e.errors.is_empty(), "an error without a variable");
    assert!(e.to_string().lines().count() >= e.errors.len());
    for v in &e.errors {
        assert!(
            v.name.starts_with("WEFT_PROXY_") || v.name.starts_with("LINKERD2_PROXY_"),
            "{v:?}"
        );
        if v.value.is_some() {
            assert!(
                vars.contains_key(v.name),
                "a value quoted for an unset {v:?}"
            );
        }
    }
}

/// Far longer than any harness runs: a stream that is always ready never waits on it.
const HOUR: Duration = Duration::from_secs(3600);

/// An owned copy of exactly `data`'s length: reading past the end hits the allocation's end
/// instead of a neighbour's bytes (which the sanitizers then report).
fn exact(data: &[u8]) -> Box<[u8]> {
    data.into()
}

/// The bytes of `data`, at most `chunk` per read, then end of stream.
struct Chunks<'a> {
    data: &'a [u8],
    chunk: usize,
    /// The size of the last read that returned bytes.
    last: usize,
}

impl<'a> Chunks<'a> {
    fn new(data: &'a [u8], chunk: usize) -> Self {
        Chunks {
            data,
            chunk,
            last: 0,
        }
    }
}

impl AsyncRead for Chunks<'_> {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let n = this.chunk.min(this.data.len()).min(out.remaining());
        out.put_slice(&this.data[..n]);
        this.data = &this.data[n..];
        if n > 0 {
            this.last = n;
        }
        Poll::Ready(Ok(()))
    }
}

/// Runs `f` on this thread's runtime (timeouts need tokio's clock).
fn block_on<F: Future>(f: F) -> F::Output {
    thread_local! {
        static RT: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a current-thread runtime");
    }
    RT.with(|rt| rt.block_on(f))
}

/// Polls a future that cannot wait (it reads from memory) to its end.
fn poll_ready<F: Future>(f: F) -> F::Output {
    match pin!(f).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("an in-memory read waited"),
    }
}

fn read_back(wire: &[u8]) -> TransportHeader {
    let mut rest = wire;
    let h = poll_ready(TransportHeader::read(&mut rest)).expect("an encoded header reads");
    assert!(rest.is_empty());
    h
}

/// A request head as the `http` types accept it.
struct Head<'a> {
    /// The request line as received (without its line end).
    line: &'a [u8],
    method: Method,
    target: Uri,
    /// The minor version: 0 or 1.
    version: u8,
    headers: HeaderMap,
}

/// `METHOD SP target SP HTTP/1.d` then `name: value` lines; `None` when the `http` types refuse
/// any of it.
fn request_head(data: &[u8]) -> Option<Head<'_>> {
    let mut lines = data
        .split(|b| *b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let first = lines.next()?;
    let mut parts = first.split(|b| *b == b' ');
    let method = Method::from_bytes(parts.next()?).ok()?;
    let target = Uri::try_from(parts.next()?).ok()?;
    let version = match parts.next()? {
        b"HTTP/1.0" => 0,
        b"HTTP/1.1" => 1,
        _ => return None,
    };
    if parts.next().is_some() {
        return None;
    }
    let mut headers = HeaderMap::new();
    for line in lines.take_while(|l| !l.is_empty()) {
        let colon = line.iter().position(|b| *b == b':')?;
        let name = HeaderName::from_bytes(&line[..colon]).ok()?;
        let value = HeaderValue::from_bytes(line[colon + 1..].trim_ascii()).ok()?;
        headers.append(name, value);
    }
    Some(Head {
        line: first,
        method,
        target,
        version,
        headers,
    })
}

/// The header names a `Connection` header lists (the hop-by-hop ones it adds).
fn connection_tokens(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

/// A context that reads back writes back, and reads back as what was written.
fn trace_round_trip(headers: &HeaderMap) {
    let Read::Context(ctx) = trace::read(headers) else {
        return;
    };
    let out = Outgoing {
        trace_id: ctx.trace_id,
        span_id: ctx.parent,
        parent: None,
        debug: ctx.debug,
        short_id: ctx.short_id,
    };
    let mut written = headers.clone();
    trace::write(&mut written, ctx.formats, &out);
    match trace::read(&written) {
        Read::Context(again) => {
            assert_eq!(again.trace_id, ctx.trace_id);
            assert_eq!(again.parent, ctx.parent);
            assert_eq!(
                again.formats, ctx.formats,
                "written formats read differently"
            );
        }
        other => panic!("written trace headers read as {other:?}"),
    }
}

/// One ClientHello record carrying `hello`'s SNI and ALPN; `None` when they do not fit.
fn encode_client_hello(hello: &ClientHello) -> Option<Vec<u8>> {
    fn u16_len(v: &[u8]) -> Option<[u8; 2]> {
        u16::try_from(v.len()).ok().map(u16::to_be_bytes)
    }
    let mut exts = Vec::new();
    if let Some(sni) = &hello.sni {
        let mut entry = vec![0];
        entry.extend_from_slice(&u16_len(sni.as_bytes())?);
        entry.extend_from_slice(sni.as_bytes());
        let mut list = u16_len(&entry)?.to_vec();
        list.extend_from_slice(&entry);
        exts.extend_from_slice(&[0, 0]);
        exts.extend_from_slice(&u16_len(&list)?);
        exts.extend_from_slice(&list);
    }
    if !hello.alpn.is_empty() {
        let mut protos = Vec::new();
        for p in &hello.alpn {
            protos.push(u8::try_from(p.len()).ok()?);
            protos.extend_from_slice(p);
        }
        let mut list = u16_len(&protos)?.to_vec();
        list.extend_from_slice(&protos);
        exts.extend_from_slice(&[0, 16]);
        exts.extend_from_slice(&u16_len(&list)?);
        exts.extend_from_slice(&list);
    }
    let mut body = vec![3, 3];
    body.extend_from_slice(&[0; 32]); // random
    body.extend_from_slice(&[0, 0, 2, 0x13, 0x01, 1, 0]); // session id, one suite, no compression
    body.extend_from_slice(&u16_len(&exts)?);
    body.extend_from_slice(&exts);
    let mut msg = vec![1];
    msg.extend_from_slice(&u32::try_from(body.len()).ok()?.to_be_bytes()[1..]);
    msg.extend_from_slice(&body);
    let mut record = vec![0x16, 3, 1];
    record.extend_from_slice(&u16_len(&msg)?);
    record.extend_from_slice(&msg);
    Some(record)
}

/// What rustls's server reads from the same bytes (SNI, ALPN), when it reads a ClientHello.
type RustlsView = (Option<String>, Option<Vec<Vec<u8>>>);

fn rustls_view(mut data: &[u8]) -> Option<RustlsView> {
    let mut acceptor = rustls::server::Acceptor::default();
    while !data.is_empty() {
        if acceptor.read_tls(&mut data).ok()? == 0 {
            break;
        }
    }
    let accepted = acceptor.accept().ok()??;
    let hello = accepted.client_hello();
    let sni = hello.server_name().map(str::to_string);
    let alpn = hello.alpn().map(|a| a.map(<[u8]>::to_vec).collect());
    Some((sni, alpn))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::H2_PREFACE;

    #[test]
    fn harnesses_take_real_inputs() {
        detect(&[7, b'G', b'E', b'T', b' ', b'/', b' ', b'H']);
        let mut h2 = vec![3];
        h2.extend_from_slice(H2_PREFACE);
        detect(&h2);
        http1_head(b"GET http://web:8080/x HTTP/1.1\r\nHost: web:8080\r\nConnection: x-a\r\nx-a: 1\r\n\r\n");
        env(b"WEFT_PROXY_DESTINATION_SVC_ADDR=127.0.0.1:8086\0WEFT_PROXY_POLICY_WORKLOAD=default:web");
        let header = TransportHeader {
            port: 8080,
            name: Some("web.default.svc.cluster.local".into()),
            protocol: Some(mtls::SessionProtocol::Http2),
            client_id: Some("frontend.east.serviceaccount.identity.weft.cluster.local".into()),
        };
        transport_header(&header.encode());
        let hello = ClientHello {
            sni: Some("web.default.svc.cluster.local".into()),
            alpn: vec![mtls::TRANSPORT_ALPN.to_vec()],
        };
        let mut wire = vec![5];
        wire.extend(encode_client_hello(&hello).expect("fits"));
        client_hello(&wire);
    }
}
