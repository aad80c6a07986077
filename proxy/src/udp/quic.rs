//! Recognising QUIC in a flow's first datagram: a long-header packet
//! (RFC 8999, the version-independent invariants) of a version clients
//! speak (QUIC v1, RFC 9000; v2, RFC 9369; the IETF drafts), with the
//! fixed bit set and connection IDs of at most 20 bytes, as RFC 9000
//! requires of both.
//!
//! Nothing is decrypted: the SNI inside a v1 Initial is protected with
//! keys derived from the destination connection ID, and reading it would
//! need HKDF, AES and the reassembly of CRYPTO frames spread over several
//! datagrams. A QUIC flow is named like any UDP flow, by its destination.
//!
//! Tier 2: pure, no I/O; fuzzed (`quic_header`).

/// QUIC version 1 (RFC 9000).
pub const VERSION_1: u32 = 0x0000_0001;
/// QUIC version 2 (RFC 9369).
pub const VERSION_2: u32 = 0x6b33_43cf;
/// The longest connection ID QUIC v1 and v2 allow.
pub const MAX_CID: usize = 20;

/// A long-header packet's type (RFC 9000 section 17.2; v2 numbers them
/// differently).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PacketType {
    /// A client's first packet.
    Initial,
    /// Early data.
    ZeroRtt,
    /// The handshake.
    Handshake,
    /// A server's retry.
    Retry,
}

/// What the long header of a QUIC packet says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LongHeader {
    /// The version.
    pub version: u32,
    /// The packet type.
    pub packet_type: PacketType,
    /// Destination connection ID length.
    pub dcid_len: usize,
    /// Source connection ID length.
    pub scid_len: usize,
}

/// Whether `version` is one clients speak: v1, v2, or an IETF draft
/// (`0xff0000xx`).
pub fn is_known_version(version: u32) -> bool {
    version == VERSION_1 || version == VERSION_2 || version >> 8 == 0x00ff_0000
}

/// Reads the long header at the start of `datagram`; `None` when it is not
/// a QUIC long-header packet of a known version (a short header, a version
/// negotiation, an unknown version, the fixed bit clear, a connection ID
/// too long or cut off).
pub fn long_header(datagram: &[u8]) -> Option<LongHeader> {
    let (&first, rest) = datagram.split_first()?;
    if first & 0xc0 != 0xc0 {
        return None;
    }
    let version = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
    if !is_known_version(version) {
        return None;
    }
    let dcid_len = usize::from(*rest.get(4)?);
    let scid_at = 5 + dcid_len;
    let scid_len = usize::from(*rest.get(scid_at)?);
    if dcid_len > MAX_CID || scid_len > MAX_CID || rest.len() < scid_at + 1 + scid_len {
        return None;
    }
    let bits = (first >> 4) & 0x03;
    // v2 rotates the type numbers by one (RFC 9369 section 3.2).
    let bits = if version == VERSION_2 {
        (bits + 3) % 4
    } else {
        bits
    };
    let packet_type = match bits {
        0 => PacketType::Initial,
        1 => PacketType::ZeroRtt,
        2 => PacketType::Handshake,
        _ => PacketType::Retry,
    };
    Some(LongHeader {
        version,
        packet_type,
        dcid_len,
        scid_len,
    })
}

/// Whether a flow whose first datagram is `datagram` speaks QUIC: a long
/// header of a known version that a client sends first (Initial or 0-RTT).
pub fn is_quic(datagram: &[u8]) -> bool {
    long_header(datagram)
        .is_some_and(|h| matches!(h.packet_type, PacketType::Initial | PacketType::ZeroRtt))
}

#[cfg(test)]
mod tests;
