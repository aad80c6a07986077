//! The stored form of one report's observations in the dry-run history:
//! a protobuf message (prost).
//!
//! Every acknowledged report adds a history row in the same transaction as
//! its graph changes, so the row's encoding is on the engine's busiest
//! path. As JSON it was about 8% of the engine thread's samples at 5,000
//! sidecars; this message is smaller and several times cheaper to encode.
//! Protobuf's rules (unknown fields skipped, absent fields zero) keep rows
//! written by one version readable by the next. Field numbers and the
//! protocol and direction numbers below are the format: never reuse one.

use std::sync::Arc;

use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint};

use super::wire::{put_bytes, put_str, put_u64};

use crate::model::{Direction, Observation, Protocol, WorkloadId};
use crate::simulate::Seen;
use crate::store::HistoryStep;

/// One report's observations, as stored.
#[derive(Clone, PartialEq, Message)]
struct HistoryRow {
    #[prost(message, repeated, tag = "1")]
    seen: Vec<SeenRow>,
}

/// One [`Seen`], flattened.
#[derive(Clone, PartialEq, Message)]
struct SeenRow {
    #[prost(uint64, tag = "1")]
    at: u64,
    /// `namespace/name`.
    #[prost(string, tag = "2")]
    reporter: String,
    /// [`DIRECTIONS`].
    #[prost(uint32, tag = "3")]
    direction: u32,
    /// [`PROTOCOLS`]; a number this version does not know reads as
    /// [`Protocol::Unknown`].
    #[prost(uint32, tag = "4")]
    protocol: u32,
    #[prost(string, optional, tag = "5")]
    source: Option<String>,
    #[prost(string, optional, tag = "6")]
    claimed_source: Option<String>,
    #[prost(string, optional, tag = "7")]
    claimed_authority: Option<String>,
    #[prost(string, optional, tag = "8")]
    source_ip: Option<String>,
    #[prost(string, tag = "9")]
    authority: String,
    #[prost(string, optional, tag = "10")]
    resolved_addr: Option<String>,
    #[prost(string, tag = "11")]
    method: String,
    #[prost(string, tag = "12")]
    path: String,
    #[prost(uint32, tag = "13")]
    status: u32,
    #[prost(uint64, tag = "14")]
    count: u64,
    #[prost(uint64, tag = "15")]
    denied: u64,
    #[prost(uint64, tag = "16")]
    bytes_in: u64,
    #[prost(uint64, tag = "17")]
    bytes_out: u64,
    #[prost(uint64, tag = "18")]
    latency_sum_us: u64,
}

/// Directions by their stored number (0 is never written: a row without
/// one is not a row of this shape).
const DIRECTIONS: [(u32, Direction); 2] = [(1, Direction::Inbound), (2, Direction::Outbound)];

/// Protocols by their stored number.
const PROTOCOLS: [(u32, Protocol); 10] = [
    (1, Protocol::Http1),
    (2, Protocol::Http2),
    (3, Protocol::Grpc),
    (4, Protocol::Tls),
    (5, Protocol::Tcp),
    (6, Protocol::Stratum),
    (7, Protocol::Dns),
    (8, Protocol::Udp),
    (9, Protocol::Quic),
    (10, Protocol::Unknown),
];

/// Why a stored row is not a report's observations.
#[derive(Debug, thiserror::Error)]
pub enum RowError {
    /// Not a protobuf message of this shape.
    #[error("{0}")]
    Decode(#[from] prost::DecodeError),
    /// A field that does not hold what it should.
    #[error("bad {field}: {value:?}")]
    Field {
        /// The field.
        field: &'static str,
        /// What it held.
        value: String,
    },
}

/// `value`'s stored number in `table`.
fn number<T: PartialEq + Copy>(table: &[(u32, T)], value: T) -> u32 {
    (table.iter())
        .find(|(_, v)| *v == value)
        .map_or(0, |(n, _)| *n)
}

/// The value `table` stores as `n`.
fn value_of<T: Copy>(table: &[(u32, T)], n: u32) -> Option<T> {
    table.iter().find(|(m, _)| *m == n).map(|(_, v)| *v)
}

/// `seen` (one report's observations) as a stored row: the bytes
/// [`HistoryRow`]'s derived encoding would give, written straight from the
/// borrowed fields (no owned copy of every string first; a test checks
/// the two are equal byte for byte).
pub fn encode(seen: &[Seen]) -> Vec<u8> {
    encode_rows(
        seen.len(),
        seen.iter().map(|s| (s.at, &*s.reporter, &s.obs)),
    )
}

/// The row of a report's counted observations (`None`: it has none).
pub fn encode_report(step: &HistoryStep) -> Option<Vec<u8>> {
    let mut counted = (step.observations.iter())
        .filter(|o| o.count > 0)
        .peekable();
    counted.peek()?;
    let rows = counted.map(|o| (step.at, &*step.reporter, o));
    Some(encode_rows(step.observations.len(), rows))
}

/// The row of `seen`, about `len` of them: (unix seconds, reporter,
/// observation).
fn encode_rows<'a>(
    len: usize,
    seen: impl Iterator<Item = (u64, &'a WorkloadId, &'a Observation)>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(len * 96);
    let mut one = Vec::with_capacity(128);
    let mut text = String::new();
    for (at, reporter, obs) in seen {
        one.clear();
        encode_seen(at, reporter, obs, &mut one, &mut text);
        encode_key(1, WireType::LengthDelimited, &mut out);
        encode_varint(one.len() as u64, &mut out);
        out.extend_from_slice(&one);
    }
    out
}

/// One [`SeenRow`]'s fields, in field order, defaults left out as prost
/// leaves them out (an optional field is written whenever it is set).
fn encode_seen(
    at: u64,
    reporter: &WorkloadId,
    o: &Observation,
    buf: &mut Vec<u8>,
    text: &mut String,
) {
    put_u64(1, at, buf);
    put_id(2, reporter, buf);
    put_u64(3, u64::from(number(&DIRECTIONS, o.direction)), buf);
    put_u64(4, u64::from(number(&PROTOCOLS, o.protocol)), buf);
    if let Some(id) = &o.source {
        put_id(5, id, buf);
    }
    if let Some(id) = &o.claimed_source {
        put_id(6, id, buf);
    }
    if let Some(name) = &o.claimed_authority {
        put_str(7, name, buf);
    }
    if let Some(ip) = o.source_ip {
        put_display(8, ip, text, buf);
    }
    if !o.authority.is_empty() {
        put_str(9, &o.authority, buf);
    }
    if let Some(addr) = o.resolved_addr {
        put_display(10, addr, text, buf);
    }
    if !o.method.is_empty() {
        put_str(11, &o.method, buf);
    }
    if !o.path.is_empty() {
        put_str(12, &o.path, buf);
    }
    put_u64(13, u64::from(o.status), buf);
    put_u64(14, o.count, buf);
    put_u64(15, o.denied, buf);
    put_u64(16, o.bytes_in, buf);
    put_u64(17, o.bytes_out, buf);
    put_u64(18, o.latency_sum_us, buf);
}

/// A workload as `namespace/name`.
fn put_id(tag: u32, id: &WorkloadId, buf: &mut Vec<u8>) {
    let parts = [id.namespace.as_bytes(), b"/", id.name.as_bytes()];
    put_bytes(tag, &parts, buf);
}

/// A string field holding `value`'s `Display`.
fn put_display(tag: u32, value: impl std::fmt::Display, text: &mut String, buf: &mut Vec<u8>) {
    use std::fmt::Write;
    text.clear();
    let _ = write!(text, "{value}");
    put_str(tag, text, buf);
}

/// Parses a field, or says which one did not parse.
fn parse<T: std::str::FromStr>(field: &'static str, value: String) -> Result<T, RowError> {
    value.parse().map_err(|_| RowError::Field { field, value })
}

fn parse_opt<T: std::str::FromStr>(
    field: &'static str,
    value: Option<String>,
) -> Result<Option<T>, RowError> {
    value.map(|v| parse(field, v)).transpose()
}

/// The observations a stored row holds.
pub fn decode(bytes: &[u8]) -> Result<Vec<Seen>, RowError> {
    let row = HistoryRow::decode(bytes)?;
    (row.seen.into_iter())
        .map(|r| {
            let direction = value_of(&DIRECTIONS, r.direction).ok_or_else(|| RowError::Field {
                field: "direction",
                value: r.direction.to_string(),
            })?;
            let protocol = value_of(&PROTOCOLS, r.protocol).unwrap_or(Protocol::Unknown);
            let status = u16::try_from(r.status).map_err(|_| RowError::Field {
                field: "status",
                value: r.status.to_string(),
            })?;
            Ok(Seen {
                at: r.at,
                reporter: Arc::new(parse("reporter", r.reporter)?),
                obs: Observation {
                    direction,
                    protocol,
                    source: parse_opt("source", r.source)?,
                    claimed_source: parse_opt("claimed_source", r.claimed_source)?,
                    claimed_authority: r.claimed_authority,
                    source_ip: parse_opt("source_ip", r.source_ip)?,
                    authority: r.authority,
                    resolved_addr: parse_opt("resolved_addr", r.resolved_addr)?,
                    method: r.method,
                    path: r.path,
                    status,
                    count: r.count,
                    denied: r.denied,
                    bytes_in: r.bytes_in,
                    bytes_out: r.bytes_out,
                    latency_sum_us: r.latency_sum_us,
                },
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> WorkloadId {
        s.parse().unwrap()
    }

    /// Every field set, at the edge of its range.
    fn full() -> Seen {
        Seen {
            at: u64::MAX,
            reporter: id("lab/jupyter-alice").into(),
            obs: Observation {
                direction: Direction::Inbound,
                protocol: Protocol::Grpc,
                source: Some(id("lab/dashboard")),
                claimed_source: Some(id("lab/api")),
                claimed_authority: Some("pypi.org:443".to_owned()),
                source_ip: Some("fd00::7".parse().unwrap()),
                authority: "10.0.0.9:8080".to_owned(),
                resolved_addr: Some("10.0.0.9:8080".parse().unwrap()),
                method: "POST".to_owned(),
                path: "/vigil.Api/{id}".to_owned(),
                status: 65535,
                count: 3,
                denied: 1,
                bytes_in: u64::MAX,
                bytes_out: 9,
                latency_sum_us: 4_000_000_000,
            },
        }
    }

    /// Nothing optional set: an outbound tunnel.
    fn sparse() -> Seen {
        Seen {
            at: 1_800_000_000,
            reporter: id("lab/xmrig").into(),
            obs: crate::model::outbound("pool.minexmr.com:4444", None, 1),
        }
    }

    #[test]
    fn rows_read_back_as_written() {
        let every_protocol: Vec<Seen> = (PROTOCOLS.iter())
            .map(|(_, protocol)| {
                let mut s = sparse();
                s.obs.protocol = *protocol;
                s
            })
            .collect();
        let cases: [(&str, Vec<Seen>); 4] = [
            ("empty", vec![]),
            ("every field", vec![full()]),
            ("a report of two", vec![full(), sparse()]),
            ("every protocol", every_protocol),
        ];
        for (name, seen) in cases {
            assert_eq!(decode(&encode(&seen)).unwrap(), seen, "{name}");
        }
    }

    #[test]
    fn a_report_is_written_as_its_counted_observations() {
        let (a, b) = (full(), sparse());
        let mut stream = sparse();
        stream.obs.count = 0;
        let step = |observations: Vec<Observation>| HistoryStep {
            at: a.at,
            seq: 3,
            reporter: a.reporter.clone(),
            observations,
            oldest: 0,
        };
        let mut b_then = b.clone();
        (b_then.at, b_then.reporter) = (a.at, a.reporter.clone());
        let row = encode_report(&step(vec![a.obs.clone(), stream.obs, b.obs.clone()]));
        assert_eq!(
            decode(&row.expect("two counted")).unwrap(),
            [a.clone(), b_then],
            "the stream's later report is left out; the others are the report's"
        );
        let mut quiet = a.obs.clone();
        quiet.count = 0;
        assert_eq!(encode_report(&step(vec![quiet])), None, "nothing counted");
        assert_eq!(encode_report(&step(vec![])), None, "an empty report");
    }

    /// What prost's derived encoding of the same row gives.
    fn derived(seen: &[Seen]) -> Vec<u8> {
        let id = |id: &Option<WorkloadId>| id.as_ref().map(WorkloadId::to_string);
        let seen = (seen.iter())
            .map(|s| {
                let o = &s.obs;
                SeenRow {
                    at: s.at,
                    reporter: s.reporter.to_string(),
                    direction: number(&DIRECTIONS, o.direction),
                    protocol: number(&PROTOCOLS, o.protocol),
                    source: id(&o.source),
                    claimed_source: id(&o.claimed_source),
                    claimed_authority: o.claimed_authority.clone(),
                    source_ip: o.source_ip.map(|ip| ip.to_string()),
                    authority: o.authority.clone(),
                    resolved_addr: o.resolved_addr.map(|a| a.to_string()),
                    method: o.method.clone(),
                    path: o.path.clone(),
                    status: u32::from(o.status),
                    count: o.count,
                    denied: o.denied,
                    bytes_in: o.bytes_in,
                    bytes_out: o.bytes_out,
                    latency_sum_us: o.latency_sum_us,
                }
            })
            .collect();
        HistoryRow { seen }.encode_to_vec()
    }

    /// The hand-written encoder gives the derived encoding's bytes: every
    /// field, zero and empty values, an optional empty string.
    #[test]
    fn rows_are_the_derived_encoding() {
        let mut zeros = sparse();
        zeros.obs.count = 0;
        zeros.obs.authority.clear();
        zeros.obs.method.clear();
        zeros.obs.path.clear();
        zeros.obs.status = 0;
        zeros.obs.claimed_authority = Some(String::new());
        let cases: [(&str, Vec<Seen>); 4] = [
            ("empty", vec![]),
            ("every field", vec![full()]),
            ("a report of two", vec![full(), sparse()]),
            ("zeros and an empty optional string", vec![zeros]),
        ];
        for (name, seen) in cases {
            assert_eq!(encode(&seen), derived(&seen), "{name}");
        }
    }

    #[test]
    fn a_row_is_smaller_than_its_json() {
        let seen = vec![full(), sparse()];
        let json = serde_json::to_vec(&seen).unwrap();
        assert!(
            encode(&seen).len() * 2 < json.len(),
            "{} bytes against {}",
            encode(&seen).len(),
            json.len()
        );
    }

    /// A protocol a newer version added reads as unknown, not as an error:
    /// the history keeps it.
    #[test]
    fn a_newer_protocol_reads_as_unknown() {
        let mut row = HistoryRow::decode(encode(&[sparse()]).as_slice()).unwrap();
        row.seen[0].protocol = 99;
        let seen = decode(&row.encode_to_vec()).unwrap();
        assert_eq!(seen[0].obs.protocol, Protocol::Unknown);
    }

    #[test]
    fn garbage_is_an_error() {
        let bad = |edit: fn(&mut SeenRow)| {
            let mut row = HistoryRow::decode(encode(&[full()]).as_slice()).unwrap();
            edit(&mut row.seen[0]);
            row.encode_to_vec()
        };
        let json = serde_json::to_vec(&[full()]).unwrap();
        let cases: [(&str, Vec<u8>, &str); 8] = [
            (
                "a truncated varint",
                vec![0x0a, 0x02, 0x08, 0xff],
                "invalid varint",
            ),
            (
                "a length past the end",
                vec![0x0a, 0x7f, 0x08],
                "buffer underflow",
            ),
            ("JSON", json, ""),
            ("no direction", bad(|r| r.direction = 0), "bad direction"),
            (
                "a status above 65535",
                bad(|r| r.status = 70_000),
                "bad status",
            ),
            (
                "a reporter without a namespace",
                bad(|r| r.reporter = "x".into()),
                "bad reporter",
            ),
            (
                "a source IP that is not one",
                bad(|r| r.source_ip = Some("10.0.0".into())),
                "bad source_ip",
            ),
            (
                "an address without a port",
                bad(|r| r.resolved_addr = Some("10.0.0.1".into())),
                "bad resolved_addr",
            ),
        ];
        for (name, bytes, says) in cases {
            let error = decode(&bytes).expect_err(name).to_string();
            assert!(error.contains(says), "{name}: {error}");
        }
    }
}
