//! Protocol detection on the first bytes of a connection: HTTP/1.x, HTTP/2
//! with prior knowledge, TLS (with its SNI and ALPN), Stratum mining, or
//! opaque.
//!
//! Pure logic on bytes (tier 2): nothing here does I/O. The caller peeks at
//! the connection, calls [`detect`] with everything read so far, and reads
//! more while it answers [`Detection::NeedMore`]. At EOF or on a peek timeout
//! with `NeedMore`, the caller should treat the stream as
//! [`Protocol::Opaque`]. Depends on nothing else in the crate.
//!
//! The answer depends only on the first [`MAX_PEEK`] bytes, and once it is
//! `Done` for some bytes it stays the same for any bytes appended to them.

pub mod stratum;
pub mod tls;
pub mod websocket;

pub use stratum::{Stratum, looks_like_stratum, parse_stratum};
pub use tls::{ClientHello, TlsError, parse_client_hello};

/// Past this many bytes without a decision, the stream is opaque.
pub const MAX_PEEK: usize = 16 * 1024;

/// The HTTP/2 connection preface a client with prior knowledge sends.
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Longest method token of an HTTP/1.x request line with another method
/// (WebDAV's `PROPFIND`, `MKCOL`, ...).
const MAX_METHOD: usize = 32;
/// Longest request line with another method: past it, the stream is opaque.
const MAX_REQUEST_LINE: usize = 8 * 1024;

/// The common HTTP/1.x request methods, each followed by the space of a
/// request line: decided on these first bytes alone. Any other method is
/// decided on its whole request line (see [`detect_request_line`]). (`PRI`
/// is only the HTTP/2 preface.) An h2c upgrade is HTTP/1.x with an
/// `Upgrade: h2c` header, so it is detected as [`Protocol::Http1`] (the
/// HTTP layer then declines the offer).
const HTTP1_METHODS: &[&[u8]] = &[
    b"GET ",
    b"HEAD ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"CONNECT ",
    b"OPTIONS ",
    b"TRACE ",
    b"PATCH ",
];

/// The application protocol of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Protocol {
    /// An HTTP/1.x request line (including an h2c upgrade request).
    Http1,
    /// The HTTP/2 prior-knowledge preface.
    Http2,
    /// A TLS ClientHello, with what it asks for.
    Tls(ClientHello),
    /// A Stratum mining message (the miner's or the pool's).
    Stratum(Stratum),
    /// A TLS handshake record whose ClientHello cannot be read (malformed,
    /// or longer than [`tls::MAX_CLIENT_HELLO_LEN`]) though a server may
    /// accept it: the name it gives is unknown, so it is not "no name".
    UnreadableTls,
    /// Anything else.
    Opaque,
}

/// What a stream whose ClientHello cannot be read is recorded as claiming
/// (its `claimed_authority`): a name that cannot be checked is judged as
/// one that does not go where the stream goes.
pub const UNREADABLE_TLS: &str = "(unreadable TLS ClientHello)";

impl Protocol {
    /// A short fixed name, for metric labels and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Protocol::Http1 => "http1",
            Protocol::Http2 => "http2",
            Protocol::Tls(_) => "tls",
            Protocol::Stratum(_) => "stratum",
            Protocol::UnreadableTls => "tls-unreadable",
            Protocol::Opaque => "opaque",
        }
    }
}

/// The answer of [`detect`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detection {
    /// The protocol is decided.
    Done(Protocol),
    /// The bytes so far are a prefix of something recognisable: read more.
    NeedMore,
}

/// Detects the protocol from the first bytes of a connection.
pub fn detect(buf: &[u8]) -> Detection {
    let buf = buf.get(..MAX_PEEK).unwrap_or(buf);
    match detect_unbounded(buf) {
        Detection::NeedMore if buf.len() >= MAX_PEEK => Detection::Done(Protocol::Opaque),
        other => other,
    }
}

/// The rules in order, without the size cap.
fn detect_unbounded(buf: &[u8]) -> Detection {
    use Detection::{Done, NeedMore};
    let Some(&first) = buf.first() else {
        return NeedMore;
    };
    if buf.starts_with(H2_PREFACE) {
        return Done(Protocol::Http2);
    }
    if H2_PREFACE.starts_with(buf) {
        return NeedMore;
    }
    if first == 0x16 {
        return match parse_client_hello(buf) {
            Ok(hello) => Done(Protocol::Tls(hello)),
            Err(TlsError::Incomplete) => NeedMore,
            Err(TlsError::NotTls) => Done(Protocol::Opaque),
            Err(TlsError::Malformed(_)) => Done(Protocol::UnreadableTls),
        };
    }
    if matches!(first, b'\r' | b'\n') {
        // HTTP servers skip empty lines before a request line (RFC 9112,
        // section 2.2; hyper's parser does), so such a request is HTTP, not
        // an opaque stream that hides its path and its `Host`.
        let rest = past_empty_lines(buf);
        if rest.first().is_some_and(u8::is_ascii_uppercase) {
            return detect_http1(rest);
        }
    }
    if matches!(first, b'{' | b' ' | b'\t' | b'\r' | b'\n') {
        return detect_json_line(buf);
    }
    detect_http1(buf)
}

/// An HTTP/1.x request line: one of the common methods, or another that
/// looks like one.
fn detect_http1(buf: &[u8]) -> Detection {
    if HTTP1_METHODS.iter().any(|m| buf.starts_with(m)) {
        return Detection::Done(Protocol::Http1);
    }
    if HTTP1_METHODS.iter().any(|m| m.starts_with(buf)) {
        return Detection::NeedMore;
    }
    detect_request_line(buf)
}

/// `buf` past the empty lines (`CRLF` or a bare `LF`) an HTTP server skips
/// before a request line, as hyper's parser does.
fn past_empty_lines(mut buf: &[u8]) -> &[u8] {
    loop {
        buf = match buf {
            [b'\r', b'\n', rest @ ..] | [b'\n', rest @ ..] => rest,
            _ => return buf,
        };
    }
}

/// An HTTP/1.x request line with another method: `METHOD SP target SP
/// HTTP/1.x CRLF`, the method in upper case (as every registered one is).
fn detect_request_line(buf: &[u8]) -> Detection {
    use Detection::{Done, NeedMore};
    let is_method = |b: &u8| b.is_ascii_uppercase() || matches!(b, b'-' | b'_');
    let method = buf.iter().take_while(|b| is_method(b)).count();
    if method == buf.len() {
        return if method <= MAX_METHOD {
            NeedMore
        } else {
            Done(Protocol::Opaque)
        };
    }
    if method == 0 || method > MAX_METHOD || buf[method] != b' ' || &buf[..method] == b"PRI" {
        return Done(Protocol::Opaque);
    }
    let window = buf.get(..MAX_REQUEST_LINE).unwrap_or(buf);
    let Some(end) = window.iter().position(|b| *b == b'\n') else {
        return if buf.len() < MAX_REQUEST_LINE {
            NeedMore
        } else {
            Done(Protocol::Opaque)
        };
    };
    let line = &buf[method + 1..end];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let target_ok = |t: &[u8]| !t.is_empty() && t.iter().all(|b| b.is_ascii_graphic());
    match line.iter().rposition(|b| *b == b' ') {
        Some(sp)
            if target_ok(&line[..sp]) && matches!(&line[sp + 1..], b"HTTP/1.1" | b"HTTP/1.0") =>
        {
            Done(Protocol::Http1)
        }
        _ => Done(Protocol::Opaque),
    }
}

/// A stream that opens with `{`, or with blank space (blank lines too)
/// before it: Stratum once its first line is complete. Blank space alone
/// needs more; blank space before anything else is opaque.
fn detect_json_line(buf: &[u8]) -> Detection {
    let buf = stratum::skip_blank(buf);
    match buf.first() {
        None => return Detection::NeedMore,
        Some(b'{') => {}
        Some(_) => return Detection::Done(Protocol::Opaque),
    }
    let window = buf.get(..stratum::MAX_LINE).unwrap_or(buf);
    if !window.contains(&b'\n') {
        return if buf.len() < stratum::MAX_LINE {
            Detection::NeedMore
        } else {
            Detection::Done(Protocol::Opaque)
        };
    }
    match parse_stratum(buf) {
        Some(found) => Detection::Done(Protocol::Stratum(found)),
        None => Detection::Done(Protocol::Opaque),
    }
}

#[cfg(test)]
mod testdata;
#[cfg(test)]
mod tests;
