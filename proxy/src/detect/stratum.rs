//! Stratum recogniser: tells cryptocurrency-mining traffic (Stratum V1,
//! XMRig's Monero protocol, Ethereum stratum) from other line-delimited
//! JSON, in either direction: the miner's requests and the pool's jobs.
//!
//! Pure: it reads byte slices and never panics. It classifies the *mining*
//! protocol, not JSON-RPC in general: `{"method":"eth_blockNumber"}` is an
//! ordinary Ethereum node call, not mining, so it is not Stratum (the caller
//! treats it as opaque). [`parse_stratum`] reads the first line of a stream
//! (after any blank space); batches (`[{...}]`) are not recognised there.
//! [`StratumScanner`] looks further: for a stream already under way, it finds
//! a Stratum message anywhere in its first [`SCAN_LIMIT`] bytes. Depends on
//! nothing else in the crate.

use serde_json::{Map, Value};

/// A Stratum line is at most this many bytes, its `\n` included (leading
/// blank space aside).
pub const MAX_LINE: usize = 4 * 1024;
/// An agent string is cut to at most this many characters.
pub const MAX_AGENT_CHARS: usize = 128;
/// [`StratumScanner`] looks at this many bytes of a direction, then stops.
pub const SCAN_LIMIT: usize = 16 * 1024;

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

/// The JSON-RPC methods that only pools send (notifications to the miner).
/// `job` counts only in XMRig's shape, with `params.blob` and
/// `params.target` strings.
pub const POOL_METHODS: &[&str] = &[
    "mining.notify",
    "mining.set_difficulty",
    "mining.set_extranonce",
    "mining.set_target",
    "mining.set_version_mask",
    "job",
];

/// The [`Stratum::method`] given to a pool's reply to XMRig's `login` (a
/// reply names no method): `job`, as the reply hands out the first job.
pub const LOGIN_REPLY_METHOD: &str = "job";

/// A recognised Stratum message, from the miner or from the pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stratum {
    /// The JSON-RPC method, one of [`MINING_METHODS`] or [`POOL_METHODS`]
    /// ([`LOGIN_REPLY_METHOD`] for the pool's reply to `login`).
    pub method: String,
    /// The mining software the client names, when the method carries it:
    /// the first string of `params` for `mining.subscribe`, `params.agent`
    /// for `login`. Cut to [`MAX_AGENT_CHARS`] characters.
    pub agent: Option<String>,
}

/// Recognises the first line of a stream as Stratum.
///
/// Leading blank space (spaces, tabs, CR, LF: blank lines too) is skipped.
/// The line must then end with `\n` within [`MAX_LINE`] bytes (a trailing
/// `\r` is allowed); `None` while it has not, so a caller that may still
/// receive the newline should wait (as [`super::detect`] does).
pub fn parse_stratum(buf: &[u8]) -> Option<Stratum> {
    let buf = skip_blank(buf);
    let window = buf.get(..MAX_LINE).unwrap_or(buf);
    let end = window.iter().position(|b| *b == b'\n')?;
    classify(window.get(..end)?)
}

/// Whether `buf` is a Stratum message, newline-terminated or not: meant for
/// a complete message such as an HTTP request body (getwork over HTTP).
pub fn looks_like_stratum(buf: &[u8]) -> bool {
    let buf = skip_blank(buf);
    parse_stratum(buf).is_some()
        || (buf.len() <= MAX_LINE && !buf.contains(&b'\n') && classify(buf).is_some())
}

/// `buf` without its leading JSON whitespace (space, tab, CR, LF).
pub(crate) fn skip_blank(buf: &[u8]) -> &[u8] {
    let start = buf
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
        .unwrap_or(buf.len());
    buf.get(start..).unwrap_or_default()
}

/// Parses one JSON object and keeps it when it is a mining message: a call
/// (request or notification) with a mining method, or XMRig's login reply.
fn classify(json: &[u8]) -> Option<Stratum> {
    let value: Value = serde_json::from_slice(json).ok()?;
    let object = value.as_object()?;
    let call = object
        .get("method")
        .and_then(Value::as_str)
        .and_then(|method| classify_call(method, object.get("params")));
    // XMRig takes any message with an id as a reply, method or not.
    call.or_else(|| classify_login_reply(object))
}

/// A request or notification with one of the mining methods.
fn classify_call(method: &str, params: Option<&Value>) -> Option<Stratum> {
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
        "job" => {
            // So is `job`: only XMRig's, with a blob and a target.
            if !is_job(params?.as_object()?) {
                return None;
            }
            None
        }
        _ if MINING_METHODS.contains(&method) || POOL_METHODS.contains(&method) => None,
        _ => return None,
    };
    Some(Stratum {
        method: method.to_owned(),
        agent: agent.map(|a| a.chars().take(MAX_AGENT_CHARS).collect()),
    })
}

/// A pool's reply to XMRig's `login`: `result.job` holds the first job.
fn classify_login_reply(object: &Map<String, Value>) -> Option<Stratum> {
    let job = object.get("result")?.get("job")?.as_object()?;
    is_job(job).then(|| Stratum {
        method: LOGIN_REPLY_METHOD.to_owned(),
        agent: None,
    })
}

/// An XMRig job: a `blob` to hash and a `target` to beat, both strings.
fn is_job(job: &Map<String, Value>) -> bool {
    let is_string = |key| job.get(key).is_some_and(Value::is_string);
    is_string("blob") && is_string("target")
}

/// Finds Stratum in one direction of a stream that may be under way: fed
/// the direction's bytes in pieces as they come, it reports the first
/// Stratum message in the first [`SCAN_LIMIT`] bytes, then stops looking.
///
/// Each line (up to `\n`) is read as JSON text: every top-level object in it
/// is classified as soon as it closes (with the rules of [`parse_stratum`]),
/// so a line needs no `\n` (a JSON message in a WebSocket frame has none),
/// text or junk before it on the line is ignored, and an object of a batch
/// counts. A byte that cannot occur in JSON abandons the current object, so
/// binary junk does not hide what follows it. An object longer than
/// [`MAX_LINE`] is skipped. Memory is bounded (one object of at most
/// [`MAX_LINE`] bytes) and so is work: nothing after [`SCAN_LIMIT`] bytes.
#[derive(Debug, Default)]
pub struct StratumScanner {
    /// Bytes fed so far, at most [`SCAN_LIMIT`].
    seen: usize,
    /// A Stratum message was reported.
    found: bool,
    /// Brackets open in the current top-level object (0: outside one).
    depth: usize,
    /// Inside a string of the current object.
    in_string: bool,
    /// Just after a backslash in that string.
    escaped: bool,
    /// The current object so far, while it is at most [`MAX_LINE`] bytes.
    object: Vec<u8>,
    /// The current object outgrew [`MAX_LINE`]: followed, not kept.
    overlong: bool,
}

impl StratumScanner {
    /// A scanner at the start of what it will be fed.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next bytes of this direction; returns the first Stratum
    /// message found (once; later calls return None).
    pub fn feed(&mut self, bytes: &[u8]) -> Option<Stratum> {
        if self.is_done() {
            return None;
        }
        let room = SCAN_LIMIT.saturating_sub(self.seen);
        let bytes = bytes.get(..room).unwrap_or(bytes);
        self.seen += bytes.len();
        let mut found = None;
        for &byte in bytes {
            if self.step(byte) {
                if !self.overlong {
                    found = classify(&self.object);
                }
                self.object.clear();
                self.overlong = false;
                if found.is_some() {
                    break;
                }
            }
        }
        self.found = found.is_some();
        if self.is_done() {
            // Nothing more to look at: give the buffer back.
            self.object = Vec::new();
        }
        found
    }

    /// True once it found Stratum or passed SCAN_LIMIT bytes (then feed is a
    /// no-op).
    pub fn is_done(&self) -> bool {
        self.found || self.seen >= SCAN_LIMIT
    }

    /// Follows one byte; true when it closed a top-level object.
    fn step(&mut self, byte: u8) -> bool {
        if byte == b'\n' {
            // JSON strings hold no raw newline: every line starts afresh.
            self.abandon();
            return false;
        }
        if self.depth == 0 {
            if byte == b'{' {
                self.depth = 1;
                self.keep(byte);
            }
            return false;
        }
        if !self.follow(byte) {
            self.abandon();
            return false;
        }
        self.keep(byte);
        self.depth == 0
    }

    /// Tracks strings and brackets inside an object; false when `byte`
    /// cannot occur there in JSON.
    fn follow(&mut self, byte: u8) -> bool {
        if self.in_string {
            if self.escaped {
                self.escaped = false;
            } else if byte == b'\\' {
                self.escaped = true;
            } else if byte == b'"' {
                self.in_string = false;
            }
            // Control characters must be escaped in a JSON string.
            return byte >= 0x20;
        }
        match byte {
            b'"' => self.in_string = true,
            b'{' | b'[' => self.depth += 1,
            b'}' | b']' => self.depth = self.depth.saturating_sub(1),
            b' ' | b'\t' | b'\r' => {}
            _ => return byte.is_ascii_graphic(),
        }
        true
    }

    /// Keeps a byte of the current object while it fits in [`MAX_LINE`].
    fn keep(&mut self, byte: u8) {
        if self.overlong {
            return;
        }
        if self.object.len() < MAX_LINE {
            self.object.push(byte);
        } else {
            self.overlong = true;
            self.object.clear();
        }
    }

    /// Drops the current object: back outside any.
    fn abandon(&mut self) {
        self.depth = 0;
        self.in_string = false;
        self.escaped = false;
        self.object.clear();
        self.overlong = false;
    }
}

#[cfg(test)]
mod tests;
