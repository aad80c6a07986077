//! DNS messages, pure: what a client's query asks, the answers the
//! listener builds itself (`REFUSED`, `FORMERR`, `SERVFAIL`), and the
//! addresses an upstream response gives the queried name.
//!
//! Parsing and building use `hickory-proto`; nothing here does I/O.

use std::collections::HashMap;
use std::net::IpAddr;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};

/// Longest name accepted, in bytes of its text form without the trailing
/// dot (RFC 1035: 255 bytes on the wire).
pub const MAX_NAME: usize = 253;
/// Longest label accepted, in bytes.
pub const MAX_LABEL: usize = 63;
/// Size of a DNS header: shorter input is not a message.
const HEADER_LEN: usize = 12;

/// The response codes the listener answers with itself.
pub mod rcode {
    /// No error.
    pub const NOERROR: u16 = 0;
    /// The query is malformed.
    pub const FORMERR: u16 = 1;
    /// The upstream resolver did not answer.
    pub const SERVFAIL: u16 = 2;
    /// The name does not exist.
    pub const NXDOMAIN: u16 = 3;
    /// Not a standard query.
    pub const NOTIMP: u16 = 4;
    /// Refused by policy (or a name too long to be real).
    pub const REFUSED: u16 = 5;
}

/// The one question of a client's query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Question {
    /// The message id.
    pub id: u16,
    /// The name, lower case, without the trailing dot (`.` for the root).
    pub name: String,
    /// The query type as DNS writes it: `A`, `AAAA`, `TYPE65280`.
    pub qtype: String,
}

/// What the listener does with a message a client sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Incoming {
    /// A standard query of one well-formed name: judged, then forwarded.
    Query(Question),
    /// Answered at once with `rcode` (`response` is that answer), never
    /// forwarded; `question` when a name could be read.
    Reject {
        /// The response code.
        rcode: u16,
        /// The answer to send.
        response: Vec<u8>,
        /// The (first) question, when there is one.
        question: Option<Question>,
    },
    /// Not a query (a response, or shorter than a header): dropped.
    Ignore,
}

/// The text form of `name`: lower case, no trailing dot, `.` for the root.
pub fn name_text(name: &Name) -> String {
    let text = name.to_lowercase().to_ascii();
    let bare = text.strip_suffix('.').unwrap_or(&text);
    if bare.is_empty() {
        ".".to_owned()
    } else {
        bare.to_owned()
    }
}

/// Whether `name`'s labels and length are those of a real name.
fn well_formed(name: &Name) -> bool {
    let mut len = 0usize;
    for label in name.iter() {
        if label.is_empty() || label.len() > MAX_LABEL {
            return false;
        }
        len += label.len() + 1;
    }
    len.saturating_sub(1) <= MAX_NAME
}

/// The query type's text: its mnemonic, or `TYPEn` (RFC 3597) when it has
/// none.
pub fn type_text(qtype: RecordType) -> String {
    match qtype {
        RecordType::Unknown(code) => format!("TYPE{code}"),
        known => known.to_string(),
    }
}

/// Reads what a client sent: a query to judge and forward, one to answer
/// at once, or something to drop.
pub fn inspect(bytes: &[u8]) -> Incoming {
    if bytes.len() < HEADER_LEN || bytes[2] & 0x80 != 0 {
        return Incoming::Ignore;
    }
    let Ok(message) = Message::from_vec(bytes) else {
        return reject(bytes, rcode::FORMERR, None);
    };
    let question = message.queries.first().map(|q| Question {
        id: message.metadata.id,
        name: name_text(q.name()),
        qtype: type_text(q.query_type()),
    });
    if message.metadata.op_code != OpCode::Query {
        return reject(bytes, rcode::NOTIMP, question);
    }
    match (&question, message.queries.as_slice()) {
        (Some(question), [only]) if well_formed(only.name()) => Incoming::Query(question.clone()),
        (Some(_), [only]) if !well_formed(only.name()) => reject(bytes, rcode::REFUSED, question),
        _ => reject(bytes, rcode::FORMERR, question),
    }
}

fn reject(query: &[u8], code: u16, question: Option<Question>) -> Incoming {
    Incoming::Reject {
        rcode: code,
        response: answer(query, code),
        question,
    }
}

/// The answer with response code `code` to `query`: same id, operation
/// and RD/CD bits, its questions echoed when it parses (only the id
/// otherwise). Empty when `query` is shorter than a header.
pub fn answer(query: &[u8], code: u16) -> Vec<u8> {
    if query.len() < HEADER_LEN {
        return Vec::new();
    }
    let code = <ResponseCode as From<u16>>::from(code);
    let message = match Message::from_vec(query) {
        Ok(parsed) => {
            let mut out = Message::error_msg(
                parsed.metadata.id,
                parsed.metadata.op_code,
                ResponseCode::NoError,
            );
            out.metadata.recursion_desired = parsed.metadata.recursion_desired;
            out.metadata.checking_disabled = parsed.metadata.checking_disabled;
            out.metadata.recursion_available = true;
            out.metadata.response_code = code;
            out.queries = parsed.queries;
            out
        }
        Err(_) => {
            let id = u16::from_be_bytes([query[0], query[1]]);
            Message::error_msg(id, OpCode::Query, code)
        }
    };
    message.to_vec().unwrap_or_default()
}

/// What an upstream response said about a question.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The response code.
    pub rcode: u16,
    /// The addresses (A and AAAA) given to the queried name, directly or
    /// through a CNAME chain, each with its TTL in seconds (the smallest
    /// along the chain).
    pub addresses: Vec<(IpAddr, u32)>,
}

/// Reads `response` as the answer to `question`: `None` unless it parses
/// and is a response with the same id and question.
pub fn read_response(response: &[u8], question: &Question) -> Option<Answer> {
    let message = Message::from_vec(response).ok()?;
    let first = message.queries.first()?;
    if message.metadata.message_type != MessageType::Response
        || message.metadata.id != question.id
        || name_text(first.name()) != question.name
        || type_text(first.query_type()) != question.qtype
    {
        return None;
    }
    Some(Answer {
        rcode: u16::from(message.metadata.response_code),
        addresses: addresses_of(&message, &question.name),
    })
}

/// The A/AAAA records of the answer section that belong to `name`:
/// its own, and those of the names a CNAME chain from it reaches.
fn addresses_of(message: &Message, name: &str) -> Vec<(IpAddr, u32)> {
    // Names reached from `name`, with the smallest TTL on the way there.
    let mut reached: HashMap<String, u32> = HashMap::from([(name.to_owned(), u32::MAX)]);
    // Each pass follows one more link; a chain is at most as long as the
    // answer section (loops stop when nothing new is reached).
    for _ in 0..message.answers.len() {
        let mut grew = false;
        for record in &message.answers {
            let RData::CNAME(target) = &record.data else {
                continue;
            };
            let Some(&ttl) = reached.get(&name_text(&record.name)) else {
                continue;
            };
            let target = name_text(&target.0);
            let ttl = ttl.min(record.ttl);
            let known = reached.get(&target).copied();
            if known.is_none_or(|t| t < ttl) {
                reached.insert(target, ttl);
                grew = true;
            }
        }
        if !grew {
            break;
        }
    }
    let mut out: Vec<(IpAddr, u32)> = Vec::new();
    for record in &message.answers {
        let (Some(ip), Some(&ttl)) = (record.data.ip_addr(), reached.get(&name_text(&record.name)))
        else {
            continue;
        };
        let ttl = ttl.min(record.ttl);
        match out.iter_mut().find(|(known, _)| *known == ip) {
            Some(entry) => entry.1 = entry.1.max(ttl),
            None => out.push((ip, ttl)),
        }
    }
    out
}

#[cfg(test)]
mod tests;
