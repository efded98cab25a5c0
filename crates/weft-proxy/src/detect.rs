//! Protocol detection: HTTP/1, HTTP/2 prior knowledge, or opaque TCP.
//!
//! Detection reads the first bytes of a connection into a buffer and returns the connection
//! wrapped in [`Prefixed`], which replays those bytes before reading from the socket again, so
//! whatever serves the connection next sees it from its first byte.
//!
//! The decision is taken as soon as the bytes allow it: the 24-byte HTTP/2 preface means HTTP/2;
//! a request line `METHOD SP target SP HTTP/1.x` means HTTP/1; the first byte that cannot belong to
//! either means opaque. A client that sends nothing within the timeout (a server-speaks-first
//! protocol such as SMTP or MySQL) is opaque too.

use bytes::{Buf, BytesMut};
use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

use crate::metrics::DetectResult;

/// The HTTP/2 connection preface a prior-knowledge client sends first (RFC 9113 §3.4).
pub const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Give up looking for an HTTP/1 request line after this many bytes: it is not HTTP we can parse.
const MAX_DETECT_BYTES: usize = 8 * 1024;

/// Methods are short tokens; a longer run of token characters is not a request line.
pub const MAX_METHOD_LEN: usize = 32;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    Http2,
    Opaque,
}

/// How detection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The bytes decided it: HTTP/1, HTTP/2 or not HTTP (opaque).
    Decided(Protocol),
    /// Nothing decisive within the timeout (a server-speaks-first client, or an incomplete
    /// line): opaque.
    Timeout,
    /// The peer half-closed first: what it sent is relayed as opaque bytes.
    Closed,
}

impl Outcome {
    /// The protocol the connection is served as.
    pub fn protocol(self) -> Protocol {
        match self {
            Outcome::Decided(p) => p,
            Outcome::Timeout | Outcome::Closed => Protocol::Opaque,
        }
    }

    /// The `protocol_detection_total` result.
    pub fn result(self) -> DetectResult {
        match self {
            Outcome::Decided(Protocol::Http1) => DetectResult::Http1,
            Outcome::Decided(Protocol::Http2) => DetectResult::Http2,
            Outcome::Decided(Protocol::Opaque) => DetectResult::Opaque,
            Outcome::Timeout => DetectResult::Timeout,
            Outcome::Closed => DetectResult::Closed,
        }
    }
}

/// Reads from `io` until the protocol is known (or `timeout` passes, or the peer closes) and
/// returns it with a stream that replays every byte read.
pub async fn detect<S>(io: S, timeout: Duration) -> io::Result<(Protocol, Prefixed<S>)>
where
    S: AsyncRead + Unpin,
{
    let (outcome, io) = detect_outcome(io, timeout).await?;
    Ok((outcome.protocol(), io))
}

/// [`detect`], saying how it ended.
pub async fn detect_outcome<S>(mut io: S, timeout: Duration) -> io::Result<(Outcome, Prefixed<S>)>
where
    S: AsyncRead + Unpin,
{
    let mut buf = BytesMut::with_capacity(1024);
    let deadline = tokio::time::Instant::now() + timeout;
    let outcome = loop {
        if let Some(p) = classify(&buf) {
            break Outcome::Decided(p);
        }
        match tokio::time::timeout_at(deadline, io.read_buf(&mut buf)).await {
            Err(_) => break Outcome::Timeout,
            Ok(Ok(0)) => break Outcome::Closed,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
        }
    };
    Ok((outcome, Prefixed::new(buf, io)))
}

/// Classifies the bytes read so far; `None` means more bytes are needed.
pub fn classify(buf: &[u8]) -> Option<Protocol> {
    // Only the first MAX_DETECT_BYTES count, however many arrived: the decision must not depend
    // on how the peer's bytes were split into reads (a 9 KiB request line read at once would
    // otherwise be HTTP/1, and the same line read in pieces opaque).
    let buf = &buf[..buf.len().min(MAX_DETECT_BYTES)];
    if buf.is_empty() {
        return None;
    }
    let n = buf.len().min(H2_PREFACE.len());
    if buf[..n] == H2_PREFACE[..n] {
        return (n == H2_PREFACE.len()).then_some(Protocol::Http2);
    }
    let decided = classify_http1(buf);
    if decided.is_none() && buf.len() >= MAX_DETECT_BYTES {
        return Some(Protocol::Opaque);
    }
    decided
}

/// Looks for `METHOD SP request-target SP HTTP/1.<digit>` followed by CR or LF.
fn classify_http1(buf: &[u8]) -> Option<Protocol> {
    let opaque = Some(Protocol::Opaque);

    let method_len = buf.iter().take_while(|b| is_tchar(**b)).count();
    if method_len > MAX_METHOD_LEN {
        return opaque;
    }
    let &after_method = buf.get(method_len)?;
    if method_len == 0 || after_method != b' ' {
        return opaque;
    }

    let rest = &buf[method_len + 1..];
    let target_len = rest.iter().take_while(|b| is_vchar(**b)).count();
    let &after_target = rest.get(target_len)?;
    if target_len == 0 || after_target != b' ' {
        return opaque;
    }

    let version = &rest[target_len + 1..];
    const WANT: &[u8] = b"HTTP/1.";
    let n = version.len().min(WANT.len());
    if version[..n] != WANT[..n] {
        return opaque;
    }
    match version.get(WANT.len()) {
        None => return None,
        Some(d) if !d.is_ascii_digit() => return opaque,
        Some(_) => {}
    }
    match version.get(WANT.len() + 1) {
        None => None,
        Some(b'\r' | b'\n') => Some(Protocol::Http1),
        Some(_) => opaque,
    }
}

/// RFC 9110 token characters.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Visible ASCII: what a request-target is made of.
fn is_vchar(b: u8) -> bool {
    (0x21..=0x7e).contains(&b)
}

/// A stream that yields `prefix` before reading from `inner`; writes go straight to `inner`.
#[derive(Debug)]
pub struct Prefixed<S> {
    prefix: BytesMut,
    inner: S,
}

impl<S> Prefixed<S> {
    pub fn new(prefix: BytesMut, inner: S) -> Self {
        Prefixed { prefix, inner }
    }

    /// The bytes not yet replayed.
    pub fn prefix(&self) -> &[u8] {
        &self.prefix
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(out.remaining());
            out.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            if this.prefix.is_empty() {
                // Replayed: free the detection buffer rather than hold it for the connection's
                // lifetime (an advanced BytesMut keeps its whole allocation).
                this.prefix = BytesMut::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, out)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[test]
    fn http1_request_lines() {
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Some(Protocol::Http1));
        assert_eq!(
            classify(b"POST /x?y=1 HTTP/1.0\r\nHost: a\r\n"),
            Some(Protocol::Http1)
        );
        assert_eq!(
            classify(b"GET http://web.default.svc.cluster.local:8080/x HTTP/1.1\r\n"),
            Some(Protocol::Http1)
        );
        assert_eq!(
            classify(b"CONNECT web:443 HTTP/1.1\r\n"),
            Some(Protocol::Http1)
        );
        assert_eq!(classify(b"GET / HTTP/1.1\n"), Some(Protocol::Http1));
    }

    #[test]
    fn incomplete_http1_needs_more() {
        for prefix in [
            &b"G"[..],
            b"GET",
            b"GET ",
            b"GET /inde",
            b"GET / ",
            b"GET / HTT",
            b"GET / HTTP/1.",
            b"GET / HTTP/1.1",
        ] {
            assert_eq!(
                classify(prefix),
                None,
                "{:?}",
                String::from_utf8_lossy(prefix)
            );
        }
    }

    #[test]
    fn h2_preface() {
        assert_eq!(classify(H2_PREFACE), Some(Protocol::Http2));
        assert_eq!(classify(&H2_PREFACE[..10]), None);
        let mut more = H2_PREFACE.to_vec();
        more.extend_from_slice(&[0, 0, 0, 4]);
        assert_eq!(classify(&more), Some(Protocol::Http2));
        // Starts like the preface, then diverges: "PRI" is a token, so it reads as HTTP/1.
        assert_eq!(classify(b"PRI /x HTTP/1.1\r\n"), Some(Protocol::Http1));
    }

    #[test]
    fn opaque_as_soon_as_ruled_out() {
        assert_eq!(classify(b"\x16\x03\x01"), Some(Protocol::Opaque)); // TLS ClientHello
        assert_eq!(classify(b"*1\r\n$4\r\nPING\r\n"), Some(Protocol::Opaque)); // Redis
        assert_eq!(classify(b"GET\r\n"), Some(Protocol::Opaque));
        assert_eq!(classify(b"GET  "), Some(Protocol::Opaque));
        assert_eq!(classify(b"GET / SSH-2.0"), Some(Protocol::Opaque));
        assert_eq!(classify(b"GET / HTTP/2.0\r\n"), Some(Protocol::Opaque));
        assert_eq!(classify(b"GET / HTTP/1.x"), Some(Protocol::Opaque));
        assert_eq!(classify(b"GET / HTTP/1.1 x"), Some(Protocol::Opaque));
        assert_eq!(classify(b"hello world\n"), Some(Protocol::Opaque));
        assert_eq!(classify(&[b'A'; 40]), Some(Protocol::Opaque));
    }

    #[test]
    fn endless_target_is_opaque() {
        let mut line = b"GET /".to_vec();
        line.resize(MAX_DETECT_BYTES, b'a');
        assert_eq!(classify(&line), Some(Protocol::Opaque));
    }

    /// Found by the `detect` fuzz target: a request line longer than the detection limit was
    /// HTTP/1 when it arrived in one read and opaque when it arrived in pieces.
    #[test]
    fn a_line_past_the_limit_is_opaque_however_it_arrives() {
        let mut line = b"GET /".to_vec();
        line.resize(MAX_DETECT_BYTES + 100, b'a');
        line.extend_from_slice(b" HTTP/1.1\r\n");
        assert_eq!(classify(&line[..MAX_DETECT_BYTES]), Some(Protocol::Opaque));
        assert_eq!(classify(&line), Some(Protocol::Opaque));
    }

    #[tokio::test]
    async fn detect_replays_bytes_over_a_socket() {
        let (mut client, server) = tokio::io::duplex(64);
        client
            .write_all(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let (p, mut io) = detect(server, Duration::from_secs(1)).await.unwrap();
        assert_eq!(p, Protocol::Http1);
        let mut got = vec![0u8; 28];
        io.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n");
    }

    #[tokio::test]
    async fn detect_decides_on_split_preface() {
        let (mut client, server) = tokio::io::duplex(64);
        let task = tokio::spawn(async move { detect(server, Duration::from_secs(5)).await });
        client.write_all(&H2_PREFACE[..7]).await.unwrap();
        tokio::task::yield_now().await;
        client.write_all(&H2_PREFACE[7..]).await.unwrap();
        let (p, io) = task.await.unwrap().unwrap();
        assert_eq!(p, Protocol::Http2);
        assert_eq!(io.prefix(), &H2_PREFACE[..]);
    }

    #[tokio::test(start_paused = true)]
    async fn silent_client_is_opaque_after_timeout() {
        let (_client, server) = tokio::io::duplex(64);
        let start = tokio::time::Instant::now();
        let (p, io) = detect(server, Duration::from_secs(1)).await.unwrap();
        assert_eq!(p, Protocol::Opaque);
        assert!(io.prefix().is_empty());
        assert_eq!(start.elapsed(), Duration::from_secs(1));
    }

    #[tokio::test]
    async fn eof_before_decision_is_opaque_and_keeps_bytes() {
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(b"GET /").await.unwrap();
        client.shutdown().await.unwrap();
        let (outcome, io) = detect_outcome(server, Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(outcome, Outcome::Closed);
        assert_eq!(outcome.protocol(), Protocol::Opaque);
        assert_eq!(outcome.result(), DetectResult::Closed);
        assert_eq!(io.prefix(), b"GET /");
    }

    #[tokio::test(start_paused = true)]
    async fn outcomes_name_how_detection_ended() {
        let (_client, server) = tokio::io::duplex(64);
        let (outcome, _) = detect_outcome(server, Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(outcome.result(), DetectResult::Timeout);
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(H2_PREFACE).await.unwrap();
        let (outcome, _) = detect_outcome(server, Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(outcome.result(), DetectResult::Http2);
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(b"\x16\x03\x01").await.unwrap();
        let (outcome, _) = detect_outcome(server, Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(outcome.result(), DetectResult::Opaque);
    }
}
