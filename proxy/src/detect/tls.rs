//! TLS ClientHello reader: the server name (SNI) and the ALPN protocols a
//! client offers, read from the first bytes of a connection.
//!
//! Pure and total: it takes a byte slice, never panics, never indexes out of
//! range, and answers [`TlsError::Incomplete`] while every byte seen so far is
//! consistent with a ClientHello that has not fully arrived. A ClientHello
//! split across several handshake records is reassembled. Depends on nothing
//! else in the crate.

use std::borrow::Cow;

use thiserror::Error;

/// Content type of a TLS handshake record.
const CONTENT_HANDSHAKE: u8 = 0x16;
/// Handshake message type of a ClientHello.
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
/// Length of a TLS record header: type, version (2), length (2).
const RECORD_HEADER_LEN: usize = 5;
/// Largest record payload a peer may send (RFC 8446 section 5.1).
const MAX_RECORD_LEN: usize = 1 << 14;
/// Largest ClientHello we reassemble; real ones, even with post-quantum key
/// shares, are a few KiB.
pub const MAX_CLIENT_HELLO_LEN: usize = 16 * 1024;
/// Extension type of server_name (RFC 6066).
const EXT_SERVER_NAME: u16 = 0;
/// Extension type of application_layer_protocol_negotiation (RFC 7301).
const EXT_ALPN: u16 = 16;
/// Name type of a DNS host name inside server_name.
const NAME_TYPE_HOST: u8 = 0;
/// Longest DNS name, in bytes.
const MAX_HOSTNAME_LEN: usize = 253;
/// Longest DNS label, in bytes.
const MAX_LABEL_LEN: usize = 63;

/// What a client asks for in its ClientHello.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientHello {
    /// The `host_name` of the server_name extension, validated as a DNS name
    /// and lowercased; `None` when the client sent none.
    pub sni: Option<String>,
    /// The ALPN protocol names in the client's order (`h2`, `http/1.1`, ...);
    /// empty when the client sent no ALPN extension.
    pub alpn: Vec<String>,
}

/// Why the bytes are not (yet) a ClientHello.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum TlsError {
    /// Every byte so far fits a ClientHello, but more are needed to finish it.
    #[error("incomplete TLS ClientHello: read more bytes and try again")]
    Incomplete,
    /// The first record header is not a TLS handshake record.
    #[error("not a TLS handshake record")]
    NotTls,
    /// It starts like TLS, but a length, a type or a value is invalid.
    #[error("malformed TLS ClientHello: {0}")]
    Malformed(&'static str),
}

/// Parses the ClientHello at the start of `buf` (record layer included).
///
/// Bytes after the ClientHello are ignored, so the answer for a prefix that
/// holds a whole ClientHello never changes as more bytes arrive.
pub fn parse_client_hello(buf: &[u8]) -> Result<ClientHello, TlsError> {
    check_first_header(buf)?;
    let message = reassemble(buf)?;
    parse_body(&message)
}

/// Checks the bytes of the first record header that have arrived.
fn check_first_header(buf: &[u8]) -> Result<(), TlsError> {
    match buf {
        [] => Err(TlsError::Incomplete),
        [t, ..] if *t != CONTENT_HANDSHAKE => Err(TlsError::NotTls),
        [_, major, ..] if *major != 3 => Err(TlsError::NotTls),
        [_, _, minor, ..] if *minor > 4 => Err(TlsError::NotTls),
        _ => Ok(()),
    }
}

/// Collects the first handshake message (header excluded) from the handshake
/// records at the start of `buf`. Borrows when one record holds it all.
fn reassemble(buf: &[u8]) -> Result<Cow<'_, [u8]>, TlsError> {
    let (first, mut rest) = next_record(buf)?;
    if let Some(len) = message_len(first)?
        && let Some(body) = first.get(4..4 + len)
    {
        return Ok(Cow::Borrowed(body));
    }
    let mut joined = first.to_vec();
    loop {
        let (fragment, after) = next_record(rest)?;
        rest = after;
        joined.extend_from_slice(fragment);
        if let Some(len) = message_len(&joined)?
            && joined.len() >= 4 + len
        {
            joined.truncate(4 + len);
            joined.drain(..4);
            return Ok(Cow::Owned(joined));
        }
    }
}

/// Splits the next complete handshake record off `buf`: its payload and what
/// follows it.
fn next_record(buf: &[u8]) -> Result<(&[u8], &[u8]), TlsError> {
    let Some((header, rest)) = buf.split_first_chunk::<RECORD_HEADER_LEN>() else {
        // A partial header of a later record: check what is there.
        return match buf {
            [t, ..] if *t != CONTENT_HANDSHAKE => Err(TlsError::Malformed("interleaved record")),
            [_, major, ..] if *major != 3 => Err(TlsError::Malformed("record version")),
            _ => Err(TlsError::Incomplete),
        };
    };
    let [content, major, _minor, hi, lo] = *header;
    if content != CONTENT_HANDSHAKE {
        return Err(TlsError::Malformed("interleaved record"));
    }
    if major != 3 {
        return Err(TlsError::Malformed("record version"));
    }
    let len = usize::from(u16::from_be_bytes([hi, lo]));
    if len == 0 {
        return Err(TlsError::Malformed("empty record"));
    }
    if len > MAX_RECORD_LEN {
        return Err(TlsError::Malformed("record too long"));
    }
    match (rest.get(..len), rest.get(len..)) {
        (Some(payload), Some(after)) => Ok((payload, after)),
        _ => Err(TlsError::Incomplete),
    }
}

/// Reads the handshake header at the start of `data`: `None` until its four
/// bytes are there, then the body length of a ClientHello.
fn message_len(data: &[u8]) -> Result<Option<usize>, TlsError> {
    if data
        .first()
        .is_some_and(|kind| *kind != HANDSHAKE_CLIENT_HELLO)
    {
        return Err(TlsError::Malformed("not a ClientHello"));
    }
    let Some([_, a, b, c]) = data.first_chunk::<4>().copied() else {
        return Ok(None);
    };
    let len = usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c);
    if len > MAX_CLIENT_HELLO_LEN {
        return Err(TlsError::Malformed("ClientHello too long"));
    }
    Ok(Some(len))
}

/// A bounds-checked cursor over a complete message: running out of bytes
/// here means a length field lied, so it is `Malformed`, not `Incomplete`.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], TlsError> {
        let Some((head, tail)) = self.buf.split_at_checked(n) else {
            return Err(TlsError::Malformed(what));
        };
        self.buf = tail;
        Ok(head)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, TlsError> {
        let (&b, tail) = self.buf.split_first().ok_or(TlsError::Malformed(what))?;
        self.buf = tail;
        Ok(b)
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, TlsError> {
        let (&bytes, tail) = self
            .buf
            .split_first_chunk::<2>()
            .ok_or(TlsError::Malformed(what))?;
        self.buf = tail;
        Ok(u16::from_be_bytes(bytes))
    }

    /// Reads a vector with a one-byte length prefix.
    fn vec8(&mut self, what: &'static str) -> Result<&'a [u8], TlsError> {
        let len = self.u8(what)?;
        self.take(usize::from(len), what)
    }

    /// Reads a vector with a two-byte length prefix.
    fn vec16(&mut self, what: &'static str) -> Result<&'a [u8], TlsError> {
        let len = self.u16(what)?;
        self.take(usize::from(len), what)
    }
}

/// Parses a complete ClientHello body.
fn parse_body(body: &[u8]) -> Result<ClientHello, TlsError> {
    let mut r = Reader::new(body);
    let [major, _minor] = r.u16("version")?.to_be_bytes();
    if major != 3 {
        return Err(TlsError::Malformed("client version"));
    }
    r.take(32, "random")?;
    if r.vec8("session id")?.len() > 32 {
        return Err(TlsError::Malformed("session id too long"));
    }
    let suites = r.vec16("cipher suites")?;
    if suites.is_empty() || suites.len() % 2 != 0 {
        return Err(TlsError::Malformed("cipher suites"));
    }
    if r.vec8("compression methods")?.is_empty() {
        return Err(TlsError::Malformed("compression methods"));
    }
    if r.is_empty() {
        // A ClientHello may end here: no extensions at all.
        return Ok(ClientHello::default());
    }
    let extensions = r.vec16("extensions")?;
    if !r.is_empty() {
        return Err(TlsError::Malformed("trailing bytes"));
    }
    parse_extensions(extensions)
}

/// Walks the extensions, keeping server_name and ALPN.
fn parse_extensions(extensions: &[u8]) -> Result<ClientHello, TlsError> {
    let mut r = Reader::new(extensions);
    let mut hello = ClientHello::default();
    let (mut seen_sni, mut seen_alpn) = (false, false);
    while !r.is_empty() {
        let kind = r.u16("extension type")?;
        let data = r.vec16("extension length")?;
        match kind {
            EXT_SERVER_NAME => {
                if std::mem::replace(&mut seen_sni, true) {
                    return Err(TlsError::Malformed("duplicate server_name"));
                }
                hello.sni = parse_server_name(data)?;
            }
            EXT_ALPN => {
                if std::mem::replace(&mut seen_alpn, true) {
                    return Err(TlsError::Malformed("duplicate ALPN"));
                }
                hello.alpn = parse_alpn(data)?;
            }
            _ => {}
        }
    }
    Ok(hello)
}

/// Parses the server_name extension: the one `host_name` entry, if any.
fn parse_server_name(data: &[u8]) -> Result<Option<String>, TlsError> {
    let mut outer = Reader::new(data);
    let list = outer.vec16("server name list")?;
    if !outer.is_empty() {
        return Err(TlsError::Malformed("server_name trailing bytes"));
    }
    if list.is_empty() {
        return Err(TlsError::Malformed("empty server name list"));
    }
    let mut r = Reader::new(list);
    let mut sni = None;
    while !r.is_empty() {
        let name_type = r.u8("server name type")?;
        let name = r.vec16("server name")?;
        if name_type != NAME_TYPE_HOST || sni.is_some() {
            // The first host_name is the one servers (OpenSSL) read.
            continue;
        }
        sni = Some(validate_hostname(name)?);
    }
    Ok(sni)
}

/// Checks that `name` is a DNS name (letters, digits, `-`, `_`, non-empty
/// labels of at most 63 bytes) and lowercases it, without the trailing dot
/// of a fully qualified name (servers strip it: `pool.example.` is
/// `pool.example`).
fn validate_hostname(name: &[u8]) -> Result<String, TlsError> {
    let name = name.strip_suffix(b".").unwrap_or(name);
    if name.is_empty() || name.len() > MAX_HOSTNAME_LEN {
        return Err(TlsError::Malformed("host_name length"));
    }
    let valid_byte = |b: &u8| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_';
    for label in name.split(|b| *b == b'.') {
        if label.is_empty() || label.len() > MAX_LABEL_LEN || !label.iter().all(valid_byte) {
            return Err(TlsError::Malformed("host_name characters"));
        }
    }
    // Only ASCII is left, so this conversion cannot fail.
    String::from_utf8(name.to_ascii_lowercase())
        .map_err(|_| TlsError::Malformed("host_name characters"))
}

/// Parses the ALPN extension: a non-empty list of non-empty UTF-8 names.
fn parse_alpn(data: &[u8]) -> Result<Vec<String>, TlsError> {
    let mut outer = Reader::new(data);
    let list = outer.vec16("ALPN list")?;
    if !outer.is_empty() {
        return Err(TlsError::Malformed("ALPN trailing bytes"));
    }
    if list.is_empty() {
        return Err(TlsError::Malformed("empty ALPN list"));
    }
    let mut r = Reader::new(list);
    let mut protocols = Vec::new();
    while !r.is_empty() {
        let name = r.vec8("ALPN protocol")?;
        if name.is_empty() {
            return Err(TlsError::Malformed("empty ALPN protocol"));
        }
        let name = std::str::from_utf8(name).map_err(|_| TlsError::Malformed("ALPN protocol"))?;
        protocols.push(name.to_owned());
    }
    Ok(protocols)
}

#[cfg(test)]
mod tests;
