//! Stratum recogniser: tells cryptocurrency-mining traffic (Stratum V1,
//! XMRig's Monero login, Ethereum stratum) from other line-delimited JSON.
//!
//! Pure: it reads a byte slice and never panics. It classifies the *mining*
//! protocol, not JSON-RPC in general: `{"method":"eth_blockNumber"}` is an
//! ordinary Ethereum node call, not mining, so it is not Stratum (the caller
//! treats it as opaque). Batches (`[{...}]`) are not recognised. Depends on
//! nothing else in the crate.

use serde_json::Value;

/// A Stratum line is at most this many bytes, its `\n` included.
pub const MAX_LINE: usize = 4 * 1024;
/// An agent string is cut to at most this many characters.
pub const MAX_AGENT_CHARS: usize = 128;

/// The JSON-RPC methods that only miners send.
pub const MINING_METHODS: &[&str] = &[
    "mining.subscribe",
    "mining.authorize",
    "mining.submit",
    "mining.extranonce.subscribe",
    "mining.configure",
    "login",
    "eth_submitLogin",
    "eth_getWork",
];

/// A recognised Stratum request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stratum {
    /// The JSON-RPC method, one of [`MINING_METHODS`].
    pub method: String,
    /// The mining software the client names, when the method carries it:
    /// the first string of `params` for `mining.subscribe`, `params.agent`
    /// for `login`. Cut to [`MAX_AGENT_CHARS`] characters.
    pub agent: Option<String>,
}

/// Recognises the first line of a stream as Stratum.
///
/// The line must end with `\n` within the first [`MAX_LINE`] bytes (a
/// trailing `\r` is allowed); `None` while it has not, so a caller that may
/// still receive the newline should wait (as [`super::detect`] does).
pub fn parse_stratum(buf: &[u8]) -> Option<Stratum> {
    let window = buf.get(..MAX_LINE).unwrap_or(buf);
    let end = window.iter().position(|b| *b == b'\n')?;
    classify(window.get(..end)?)
}

/// Whether `buf` is a Stratum request, newline-terminated or not: meant for a
/// complete message such as an HTTP request body (getwork over HTTP).
pub fn looks_like_stratum(buf: &[u8]) -> bool {
    parse_stratum(buf).is_some()
        || (buf.len() <= MAX_LINE && !buf.contains(&b'\n') && classify(buf).is_some())
}

/// Parses one line of JSON and keeps it when it is a mining request.
fn classify(line: &[u8]) -> Option<Stratum> {
    let value: Value = serde_json::from_slice(line).ok()?;
    let object = value.as_object()?;
    let method = object.get("method")?.as_str()?;
    if !MINING_METHODS.contains(&method) {
        return None;
    }
    let params = object.get("params");
    let agent = match method {
        "mining.subscribe" => params
            .and_then(Value::as_array)
            .and_then(|p| p.first())
            .and_then(Value::as_str),
        "login" => {
            // `login` is a common method name: only XMRig's shape, with a
            // wallet in params.login, counts as mining.
            let params = params?.as_object()?;
            params.get("login")?.as_str()?;
            params.get("agent").and_then(Value::as_str)
        }
        _ => None,
    };
    Some(Stratum {
        method: method.to_owned(),
        agent: agent.map(|a| a.chars().take(MAX_AGENT_CHARS).collect()),
    })
}

#[cfg(test)]
mod tests;
