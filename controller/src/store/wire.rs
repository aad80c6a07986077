//! Protobuf field writers for the store's hand-written row encoders
//! (`edge_row`, `history_row`). Those rows are encoded on the engine's
//! busiest path, so they are written straight from borrowed fields instead
//! of first copying every string into a prost message; each row's tests
//! check that the bytes equal prost's derived encoding of the same message,
//! which is also what decodes them.

use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};

/// A varint field, left out when zero (as proto3 leaves out defaults).
pub(super) fn put_u64(tag: u32, value: u64, buf: &mut Vec<u8>) {
    if value != 0 {
        encode_key(tag, WireType::Varint, buf);
        encode_varint(value, buf);
    }
}

/// A string field, written even when empty (a repeated or optional one;
/// a plain proto3 string is left out by its caller when empty).
pub(super) fn put_str(tag: u32, value: &str, buf: &mut Vec<u8>) {
    put_bytes(tag, &[value.as_bytes()], buf);
}

/// A length-delimited field whose bytes are `parts`, one after the other.
pub(super) fn put_bytes(tag: u32, parts: &[&[u8]], buf: &mut Vec<u8>) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(parts.iter().map(|p| p.len() as u64).sum(), buf);
    for part in parts {
        buf.extend_from_slice(part);
    }
}

/// One entry of a `map<string, uint64>` field: a message of the key
/// (field 1) and the value (field 2), each left out when default.
pub(super) fn put_str_entry(tag: u32, key: &str, value: u64, buf: &mut Vec<u8>) {
    let key_len = if key.is_empty() {
        0
    } else {
        1 + encoded_len_varint(key.len() as u64) + key.len()
    };
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint((key_len + varint_len(value)) as u64, buf);
    if !key.is_empty() {
        put_str(1, key, buf);
    }
    put_u64(2, value, buf);
}

/// One entry of a `map<uint32, uint64>` field, as [`put_str_entry`].
pub(super) fn put_u32_entry(tag: u32, key: u32, value: u64, buf: &mut Vec<u8>) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint((varint_len(u64::from(key)) + varint_len(value)) as u64, buf);
    put_u64(1, u64::from(key), buf);
    put_u64(2, value, buf);
}

/// The encoded length of a varint field (tags below 16: a one-byte key),
/// 0 when it is left out.
fn varint_len(value: u64) -> usize {
    if value == 0 {
        0
    } else {
        1 + encoded_len_varint(value)
    }
}
