//! Trace context headers: W3C `traceparent` (version 00; `tracestate` is left as it came), B3
//! multi-header (`x-b3-*`) and B3 single (`b3`). Reading never fails a request: a malformed
//! header counts as absent. Writing replaces the ids in the format(s) that came in, so the next
//! hop sees this proxy's span as its parent.

use http::{HeaderMap, HeaderName, HeaderValue};

pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
pub const B3: HeaderName = HeaderName::from_static("b3");
pub const B3_TRACE_ID: HeaderName = HeaderName::from_static("x-b3-traceid");
pub const B3_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-spanid");
pub const B3_PARENT_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-parentspanid");
pub const B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
pub const B3_FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");

pub type TraceId = [u8; 16];
pub type SpanId = [u8; 8];

/// A caller's sampling decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sampled {
    Yes,
    No,
    /// B3 without a decision (`x-b3-sampled` absent): the receiver decides.
    Deferred,
}

/// Which headers carried the context (and so get rewritten).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Formats {
    pub w3c: bool,
    pub b3_multi: bool,
    pub b3_single: bool,
}

/// The context a request arrived with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Incoming {
    pub trace_id: TraceId,
    /// The caller's span: this hop's span's parent.
    pub parent: SpanId,
    pub sampled: Sampled,
    /// B3 `d` / `x-b3-flags: 1` (implies sampled; kept when rewriting).
    pub debug: bool,
    /// A 64-bit B3 trace id (the upper half is zero): written back in 16 hex digits.
    pub short_id: bool,
    pub formats: Formats,
}

/// What the headers say: a context, an explicit "not sampled" without ids (`b3: 0`), nothing,
/// or something malformed (treated as nothing, and counted).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Read {
    Context(Incoming),
    Unsampled,
    None,
    Malformed,
}

/// Reads the request's context: W3C first, then B3 single, then B3 multi. Formats that carry
/// the same trace id are all rewritten later; a different one is left alone.
pub fn read(headers: &HeaderMap) -> Read {
    let w3c = headers
        .get(&TRACEPARENT)
        .map(|v| parse_traceparent(v.as_bytes()));
    let single = headers.get(&B3).map(|v| parse_b3_single(v.as_bytes()));
    let multi = match headers.get(&B3_TRACE_ID) {
        Some(_) => Some(parse_b3_multi(headers)),
        None if headers.contains_key(&B3_SAMPLED) => Some(parse_b3_multi(headers)),
        None => None,
    };
    let mut malformed = false;
    let mut chosen: Option<Incoming> = None;
    let mut unsampled = false;
    for (parsed, mark) in [
        (w3c, Format::W3c),
        (single, Format::B3Single),
        (multi, Format::B3Multi),
    ] {
        match parsed {
            None => {}
            Some(Err(Malformed)) => malformed = true,
            Some(Ok(None)) => unsampled = unsampled || chosen.is_none(),
            Some(Ok(Some(ctx))) => match &mut chosen {
                None => chosen = Some(mark.set(ctx)),
                Some(c) if c.trace_id == ctx.trace_id => c.formats = mark.set(*c).formats,
                Some(_) => {}
            },
        }
    }
    match chosen {
        Some(c) => Read::Context(c),
        None if unsampled => Read::Unsampled,
        None if malformed => Read::Malformed,
        None => Read::None,
    }
}

#[derive(Clone, Copy)]
enum Format {
    W3c,
    B3Single,
    B3Multi,
}

impl Format {
    fn set(self, mut ctx: Incoming) -> Incoming {
        match self {
            Format::W3c => ctx.formats.w3c = true,
            Format::B3Single => ctx.formats.b3_single = true,
            Format::B3Multi => ctx.formats.b3_multi = true,
        }
        ctx
    }
}

/// A header that does not parse (treated as absent).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Malformed;

/// Parsed ids; `Ok(None)`: a valid "not sampled" without ids.
type Parsed = Result<Option<Incoming>, Malformed>;

fn context(trace_id: TraceId, parent: SpanId, sampled: Sampled, short_id: bool) -> Incoming {
    Incoming {
        trace_id,
        parent,
        sampled,
        debug: false,
        short_id,
        formats: Formats::default(),
    }
}

/// `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`, lower-case, ids not all zero.
pub fn parse_traceparent(v: &[u8]) -> Parsed {
    if v.len() != 55 || &v[..3] != b"00-" || v[35] != b'-' || v[52] != b'-' {
        return Err(Malformed);
    }
    let trace_id: TraceId = hex(&v[3..35])?;
    let parent: SpanId = hex(&v[36..52])?;
    let [flags]: [u8; 1] = hex(&v[53..55])?;
    if trace_id == [0; 16] || parent == [0; 8] {
        return Err(Malformed);
    }
    let sampled = if flags & 1 == 1 {
        Sampled::Yes
    } else {
        Sampled::No
    };
    Ok(Some(context(trace_id, parent, sampled, false)))
}

/// `{trace id}-{span id}[-{1|0|d}[-{parent span id}]]`, or just `0`, `1` or `d`.
pub fn parse_b3_single(v: &[u8]) -> Parsed {
    let v = std::str::from_utf8(v).map_err(|_| Malformed)?;
    match v {
        "0" => return Ok(None),
        // A decision without ids: nothing to continue.
        "1" | "d" => return Err(Malformed),
        _ => {}
    }
    let mut parts = v.split('-');
    let (trace_id, short_id) = b3_trace_id(parts.next().ok_or(Malformed)?)?;
    let parent: SpanId = hex(parts.next().ok_or(Malformed)?.as_bytes())?;
    let (sampled, debug) = match parts.next() {
        None => (Sampled::Deferred, false),
        Some("1") => (Sampled::Yes, false),
        Some("d") => (Sampled::Yes, true),
        Some("0") => (Sampled::No, false),
        Some(_) => return Err(Malformed),
    };
    if let Some(p) = parts.next() {
        let _: SpanId = hex(p.as_bytes())?;
    }
    if parts.next().is_some() || parent == [0; 8] {
        return Err(Malformed);
    }
    let mut ctx = context(trace_id, parent, sampled, short_id);
    ctx.debug = debug;
    Ok(Some(ctx))
}

/// `x-b3-traceid` (16 or 32 hex), `x-b3-spanid`, optional `x-b3-sampled` (`1`/`0`, or
/// `true`/`false`) and `x-b3-flags: 1` (debug).
pub fn parse_b3_multi(headers: &HeaderMap) -> Parsed {
    let get = |name: &HeaderName| headers.get(name).map(HeaderValue::as_bytes);
    let debug = get(&B3_FLAGS) == Some(b"1");
    let sampled = match get(&B3_SAMPLED) {
        _ if debug => Sampled::Yes,
        None => Sampled::Deferred,
        Some(b"1") | Some(b"true") => Sampled::Yes,
        Some(b"0") | Some(b"false") => Sampled::No,
        Some(_) => return Err(Malformed),
    };
    let Some(trace) = get(&B3_TRACE_ID) else {
        // `x-b3-sampled: 0` alone is a valid "do not sample".
        return match sampled {
            Sampled::No => Ok(None),
            _ => Err(Malformed),
        };
    };
    let (trace_id, short_id) = b3_trace_id(std::str::from_utf8(trace).map_err(|_| Malformed)?)?;
    let parent: SpanId = hex(get(&B3_SPAN_ID).ok_or(Malformed)?)?;
    if parent == [0; 8] {
        return Err(Malformed);
    }
    let mut ctx = context(trace_id, parent, sampled, short_id);
    ctx.debug = debug;
    Ok(Some(ctx))
}

/// A B3 trace id: 32 hex digits, or 16 (64 bits, widened with zeros in front).
fn b3_trace_id(s: &str) -> Result<(TraceId, bool), Malformed> {
    let id = match s.len() {
        32 => (hex(s.as_bytes())?, false),
        16 => {
            let low: [u8; 8] = hex(s.as_bytes())?;
            let mut id = [0; 16];
            id[8..].copy_from_slice(&low);
            (id, true)
        }
        _ => return Err(Malformed),
    };
    if id.0 == [0; 16] {
        return Err(Malformed);
    }
    Ok(id)
}

/// Lower-case hex digits (B3 and W3C both require lower case) into `N` bytes.
fn hex<const N: usize>(s: &[u8]) -> Result<[u8; N], Malformed> {
    if s.len() != 2 * N {
        return Err(Malformed);
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        _ => Err(Malformed),
    };
    let mut out = [0; N];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Ok(out)
}

/// Lower-case hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

/// The context this hop passes on: the trace, this hop's span as the parent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outgoing {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    /// The caller's span, for B3's `parentspanid` (none for a trace this proxy started).
    pub parent: Option<SpanId>,
    pub debug: bool,
    pub short_id: bool,
}

/// Rewrites `formats`' headers so the next hop's parent is `out.span_id` (always sampled:
/// only sampled requests are rewritten).
pub fn write(headers: &mut HeaderMap, formats: Formats, out: &Outgoing) {
    let trace = if out.short_id {
        to_hex(&out.trace_id[8..])
    } else {
        to_hex(&out.trace_id)
    };
    let span = to_hex(&out.span_id);
    let value = |s: String| HeaderValue::try_from(s).expect("hex is a valid header value");
    if formats.w3c {
        // W3C ids are always 128 bits.
        let v = format!("00-{}-{span}-01", to_hex(&out.trace_id));
        headers.insert(TRACEPARENT, value(v));
    }
    if formats.b3_single {
        let flag = if out.debug { "d" } else { "1" };
        let v = match &out.parent {
            Some(p) => format!("{trace}-{span}-{flag}-{}", to_hex(p)),
            None => format!("{trace}-{span}-{flag}"),
        };
        headers.insert(B3, value(v));
    }
    if formats.b3_multi {
        headers.insert(B3_TRACE_ID, value(trace));
        headers.insert(B3_SPAN_ID, value(span));
        match &out.parent {
            Some(p) => headers.insert(B3_PARENT_SPAN_ID, value(to_hex(p))),
            None => headers.remove(B3_PARENT_SPAN_ID),
        };
        // Debug implies sampled: B3 says not to send both.
        if !out.debug {
            headers.insert(B3_SAMPLED, HeaderValue::from_static("1"));
        }
    }
}
