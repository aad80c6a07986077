//! Threat-list matching: the one set of rules by which both ends decide
//! whether a destination is listed (a mining pool, say). The controller
//! matches names against its feeds (to alert, and for `vigilctl threats
//! check`); the sidecar matches the names and addresses of traffic against
//! the policy's `denied_names` (to refuse it). Sharing the code here, in the
//! contract crate both depend on, keeps the two from drifting apart.
//!
//! An entry ([`Pattern`]) is one of:
//! - `domain`: that name exactly (`pool.example.com`, not its subdomains);
//! - `*.domain`: every subdomain of `domain`, at any depth, but **not**
//!   `domain` itself, as a DNS or certificate wildcard (`*.nanopool.org`
//!   lists `xmr-eu1.nanopool.org`; list `nanopool.org` too to include it).
//!   A wildcard needs at least two labels after `*.` (`*.com` is refused:
//!   it would list a whole top-level domain);
//! - an IP address or a CIDR (`198.51.100.7`, `203.0.113.0/24`,
//!   `2001:db8::/32`): addresses, matched against IP literals a client names
//!   and the real address traffic goes to.
//!
//! Names are compared as A-labels (IDNA/UTS 46: `pööl.example` is
//! `xn--pl-fkaa.example`), in lower case, without a trailing dot, on both
//! sides. Pure: no I/O.

use std::borrow::Cow;
use std::collections::HashMap;

/// A list's entries by name.
type Entries<T> = HashMap<String, T, foldhash::fast::RandomState>;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

/// Longest name accepted (RFC 1035, without the trailing dot).
pub const MAX_NAME_LEN: usize = 253;

/// One threat-list entry, normalised (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Pattern {
    /// This name exactly.
    Name(String),
    /// Every subdomain of this name (not the name itself).
    Subdomains(String),
    /// Addresses in this network (a single address is a /32 or /128).
    Net(IpNet),
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Name(name) => f.write_str(name),
            Pattern::Subdomains(name) => write!(f, "*.{name}"),
            Pattern::Net(net) if net.prefix_len() == net.max_prefix_len() => {
                write!(f, "{}", net.addr())
            }
            Pattern::Net(net) => write!(f, "{net}"),
        }
    }
}

/// Why an entry was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// Nothing but spaces.
    #[error("empty entry")]
    Empty,
    /// A `*` anywhere but as the whole first label.
    #[error("{0:?}: a wildcard must be the whole first label, as in *.example.com")]
    BadWildcard(String),
    /// `*.com`: a whole top-level domain.
    #[error("{0:?} would list a whole top-level domain: name at least two labels after *.")]
    TooBroad(String),
    /// Not a host name (after IDNA).
    #[error("{value:?} is not a domain name, *.domain or CIDR: {why}")]
    BadName {
        /// The entry.
        value: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// An `ip/len` whose address or length is wrong.
    #[error("{0:?} is not a CIDR (such as 203.0.113.0/24 or 2001:db8::/32)")]
    BadCidr(String),
}

/// Parses one entry: `domain`, `*.domain`, an IP or a CIDR (host bits are
/// cleared: `10.1.2.3/8` is `10.0.0.0/8`).
pub fn parse_pattern(text: &str) -> Result<Pattern, PatternError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(PatternError::Empty);
    }
    if let Some(net) = parse_net(text)? {
        return Ok(Pattern::Net(net));
    }
    let bad = |why| PatternError::BadName {
        value: text.to_owned(),
        why,
    };
    match text.strip_prefix("*.") {
        Some(rest) if rest.contains('*') => Err(PatternError::BadWildcard(text.to_owned())),
        Some(rest) => {
            let name = normalize_name(rest).map_err(bad)?;
            if !name.contains('.') {
                return Err(PatternError::TooBroad(text.to_owned()));
            }
            Ok(Pattern::Subdomains(name.into_owned()))
        }
        None if text.contains('*') => Err(PatternError::BadWildcard(text.to_owned())),
        None => Ok(Pattern::Name(
            normalize_name(text).map_err(bad)?.into_owned(),
        )),
    }
}

/// An IP or CIDR entry; `Ok(None)` when `text` is not one (a name).
fn parse_net(text: &str) -> Result<Option<IpNet>, PatternError> {
    if let Some((addr, _)) = text.split_once('/') {
        if addr.parse::<IpAddr>().is_err() {
            // Not an address before the slash: a (bad) name.
            return Ok(None);
        }
        return text
            .parse::<IpNet>()
            .map(|net| Some(canonical_net(net.trunc())))
            .map_err(|_| PatternError::BadCidr(text.to_owned()));
    }
    Ok(parse_ip_literal(text).map(IpNet::from))
}

/// An IPv4-mapped IPv6 network (`::ffff:10.0.0.0/104`) as the IPv4 one.
fn canonical_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => IpNet::new(IpAddr::V4(v4), v6.prefix_len() - 96).unwrap_or(net),
            None => net,
        },
        _ => net,
    }
}

/// An IP literal as a client names it (`10.0.0.1`, `fd66::2`, `[fd66::2]`),
/// IPv4-mapped IPv6 as IPv4.
pub fn parse_ip_literal(host: &str) -> Option<IpAddr> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

/// A name as the lists compare it: A-labels (IDNA), lower case, no trailing
/// dot; or why it is not a host name. Cheap (no allocation) for a name that
/// is already so.
pub fn normalize_name(name: &str) -> Result<Cow<'_, str>, &'static str> {
    let name = name.strip_suffix('.').unwrap_or(name);
    let plain = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b);
    let ascii: Cow<'_, str> = if name.bytes().all(plain) {
        Cow::Borrowed(name)
    } else if name.is_ascii() {
        Cow::Owned(name.to_ascii_lowercase())
    } else {
        let mapped = idna::domain_to_ascii_cow(name.as_bytes(), idna::AsciiDenyList::URL)
            .map_err(|_| "not a valid internationalised name (IDNA)")?;
        Cow::Owned(mapped.into_owned())
    };
    check_labels(&ascii)?;
    Ok(ascii)
}

fn check_labels(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty name");
    }
    if name.len() > MAX_NAME_LEN {
        return Err("longer than 253 characters");
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("empty label (two dots in a row, or a leading dot)");
        }
        if label.len() > 63 {
            return Err("a label longer than 63 characters");
        }
        let ok = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_';
        if !label.bytes().all(ok) {
            return Err("only letters, digits, '-' and '_' may make up a label");
        }
    }
    Ok(())
}

/// The host of a name or authority: `pool.example` of `pool.example:3333`,
/// `[fd66::2]` of `[fd66::2]:443`, the text itself when it has no port.
pub fn authority_host(authority: &str) -> &str {
    if authority.starts_with('[') {
        return match authority.find(']') {
            Some(end) => &authority[..=end],
            None => authority,
        };
    }
    match authority.rsplit_once(':') {
        // One colon: host:port. Several: a bare IPv6 address.
        Some((host, port)) if !host.contains(':') && port.parse::<u16>().is_ok() => host,
        _ => authority,
    }
}

/// A match: the entry that listed a name (as written by [`Pattern`]'s
/// `Display`) and what was stored with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Match<'a, T> {
    /// The entry, normalised (`*.nanopool.org`, `203.0.113.0/24`).
    pub entry: String,
    /// The value stored with it (the feed that listed it, say).
    pub value: &'a T,
}

/// A compiled set of entries, each with a value (`()` when only "listed or
/// not" matters). Names are found by hash lookups of the name and each of
/// its parent domains; networks by a scan (lists hold few).
///
/// The entries come from the lists, never from the traffic looked up, so
/// a fast hash without flooding resistance serves: a name looked up cannot
/// make a table slower, only an entry put in it could.
#[derive(Clone, Debug)]
pub struct Matcher<T> {
    names: Entries<T>,
    subdomains: Entries<T>,
    nets: Vec<(IpNet, T)>,
}

impl<T> Default for Matcher<T> {
    fn default() -> Self {
        Matcher {
            names: Entries::default(),
            subdomains: Entries::default(),
            nets: Vec::new(),
        }
    }
}

impl<T> Matcher<T> {
    /// An empty matcher.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `pattern` with `value`; false (and the first value kept) when
    /// it is already there.
    pub fn insert(&mut self, pattern: Pattern, value: T) -> bool {
        let map = match pattern {
            Pattern::Name(name) => (&mut self.names, name),
            Pattern::Subdomains(name) => (&mut self.subdomains, name),
            Pattern::Net(net) => {
                if self.nets.iter().any(|(n, _)| *n == net) {
                    return false;
                }
                self.nets.push((net, value));
                return true;
            }
        };
        match map.0.entry(map.1) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(value);
                true
            }
        }
    }

    /// How many entries it holds.
    pub fn len(&self) -> usize {
        self.names.len() + self.subdomains.len() + self.nets.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every entry with its value, in no particular order.
    pub fn entries(&self) -> impl Iterator<Item = (Pattern, &T)> {
        let names = self
            .names
            .iter()
            .map(|(n, v)| (Pattern::Name(n.clone()), v));
        let subs = self
            .subdomains
            .iter()
            .map(|(n, v)| (Pattern::Subdomains(n.clone()), v));
        let nets = self.nets.iter().map(|(n, v)| (Pattern::Net(*n), v));
        names.chain(subs).chain(nets)
    }

    /// The entry listing `name`: a host name, an IP literal, or either with
    /// a port (`pool.example:3333`, `[fd66::2]:443`). Case, a trailing dot
    /// and IDN spellings do not matter. A name that is not a host name is
    /// never listed.
    pub fn lookup(&self, name: &str) -> Option<Match<'_, T>> {
        let host = authority_host(name.trim());
        if let Some(ip) = parse_ip_literal(host) {
            return self.lookup_ip(ip);
        }
        let host = normalize_name(host).ok()?;
        if let Some(value) = self.names.get(host.as_ref()) {
            return Some(Match {
                entry: host.into_owned(),
                value,
            });
        }
        let mut rest = host.as_ref();
        while let Some((_, parent)) = rest.split_once('.') {
            if let Some(value) = self.subdomains.get(parent) {
                return Some(Match {
                    entry: format!("*.{parent}"),
                    value,
                });
            }
            rest = parent;
        }
        None
    }

    /// The entry listing the address `ip`.
    pub fn lookup_ip(&self, ip: IpAddr) -> Option<Match<'_, T>> {
        let ip = ip.to_canonical();
        self.nets
            .iter()
            .find(|(net, _)| net.contains(&ip))
            .map(|(net, value)| Match {
                entry: Pattern::Net(*net).to_string(),
                value,
            })
    }
}

/// The cases both ends test their matching against: (entries, name looked
/// up, the entry that lists it). Kept here so the controller's feeds and the
/// sidecar's policy are held to the same table.
pub const SHARED_CASES: &[(&[&str], &str, Option<&str>)] = &[
    // Exact names: case, a trailing dot, a port do not matter.
    (
        &["pool.example.com"],
        "pool.example.com",
        Some("pool.example.com"),
    ),
    (
        &["pool.example.com"],
        "POOL.Example.COM",
        Some("pool.example.com"),
    ),
    (
        &["pool.example.com"],
        "pool.example.com.",
        Some("pool.example.com"),
    ),
    (
        &["Pool.Example.com."],
        "pool.example.com:3333",
        Some("pool.example.com"),
    ),
    (
        &["pool.example.com"],
        "pool.example.com.:443",
        Some("pool.example.com"),
    ),
    // ... but an exact name lists neither its subdomains nor its parent.
    (&["pool.example.com"], "eu.pool.example.com", None),
    (&["pool.example.com"], "example.com", None),
    (&["pool.example.com"], "xpool.example.com", None),
    (&["pool.example.com"], "pool.example.com.evil.test", None),
    // Wildcards: subdomains at any depth, not the domain itself.
    (
        &["*.nanopool.org"],
        "xmr-eu1.nanopool.org",
        Some("*.nanopool.org"),
    ),
    (
        &["*.nanopool.org"],
        "a.b.nanopool.org:14433",
        Some("*.nanopool.org"),
    ),
    (
        &["*.nanopool.org"],
        "XMR.NanoPool.org.",
        Some("*.nanopool.org"),
    ),
    (&["*.nanopool.org"], "nanopool.org", None),
    (&["*.nanopool.org"], "evilnanopool.org", None),
    (
        &["*.nanopool.org", "nanopool.org"],
        "nanopool.org",
        Some("nanopool.org"),
    ),
    // The exact entry wins over a wildcard that also matches.
    (
        &["*.example.com", "a.example.com"],
        "a.example.com",
        Some("a.example.com"),
    ),
    // IDN: either spelling of an entry lists either spelling of a name.
    (
        &["pööl.example"],
        "xn--pl-fkaa.example",
        Some("xn--pl-fkaa.example"),
    ),
    (
        &["xn--pl-fkaa.example"],
        "PÖÖL.example",
        Some("xn--pl-fkaa.example"),
    ),
    (
        &["*.bücher.example"],
        "pool.xn--bcher-kva.example",
        Some("*.xn--bcher-kva.example"),
    ),
    // A look-alike is another name.
    (&["pool.example.com"], "p\u{043e}ol.example.com", None),
    // Addresses and networks, as IP literals with or without a port.
    (&["203.0.113.0/24"], "203.0.113.77", Some("203.0.113.0/24")),
    (
        &["203.0.113.0/24"],
        "203.0.113.77:3333",
        Some("203.0.113.0/24"),
    ),
    (&["203.0.113.0/24"], "203.0.114.1", None),
    (&["198.51.100.7"], "198.51.100.7:443", Some("198.51.100.7")),
    (
        &["198.51.100.7"],
        "[::ffff:198.51.100.7]:443",
        Some("198.51.100.7"),
    ),
    (
        &["2001:db8::/32"],
        "[2001:db8::1]:443",
        Some("2001:db8::/32"),
    ),
    (
        &["2001:db8::/32"],
        "2001:db8:ffff::9",
        Some("2001:db8::/32"),
    ),
    (&["2001:db8::/32"], "2001:db9::1", None),
    // A name is never an address, and garbage is never listed.
    (&["203.0.113.0/24"], "203.0.113.77.nip.io", None),
    (&["*.example.com"], "", None),
    (&["*.example.com"], "a b.example.com", None),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher(entries: &[&str]) -> Matcher<()> {
        let mut m = Matcher::new();
        for e in entries {
            m.insert(parse_pattern(e).unwrap(), ());
        }
        m
    }

    #[test]
    fn shared_cases() {
        for (entries, name, want) in SHARED_CASES {
            let got = matcher(entries).lookup(name).map(|m| m.entry);
            assert_eq!(got.as_deref(), *want, "{entries:?} lookup {name:?}");
        }
    }

    #[test]
    fn entries_are_parsed_and_normalised() {
        let cases = [
            ("pool.example.com", "pool.example.com"),
            ("  POOL.example.COM.  ", "pool.example.com"),
            ("*.NanoPool.org", "*.nanopool.org"),
            ("bücher.example", "xn--bcher-kva.example"),
            ("10.1.2.3/8", "10.0.0.0/8"),
            ("198.51.100.7", "198.51.100.7"),
            ("198.51.100.7/32", "198.51.100.7"),
            ("[2001:db8::1]", "2001:db8::1"),
            ("2001:DB8::/32", "2001:db8::/32"),
            ("::ffff:10.0.0.0/104", "10.0.0.0/8"),
            ("_srv.example.com", "_srv.example.com"),
            ("miner", "miner"),
        ];
        for (text, want) in cases {
            assert_eq!(parse_pattern(text).unwrap().to_string(), want, "{text}");
        }
    }

    #[test]
    fn bad_entries_say_what_is_wrong() {
        let cases = [
            ("", "empty"),
            ("   ", "empty"),
            ("*.com", "top-level"),
            ("*", "wildcard"),
            ("*.", "not a domain"),
            ("a.*.example.com", "wildcard"),
            ("*.*.example.com", "wildcard"),
            ("*example.com", "wildcard"),
            ("pool..example.com", "empty label"),
            (".example.com", "empty label"),
            ("pool example.com", "only letters"),
            ("pool.example.com:3333", "only letters"),
            (
                "http://pool.example.com",
                "not a domain name, *.domain or CIDR",
            ),
            ("10.0.0.0/33", "not a CIDR"),
            ("10.0.0.0/x", "not a CIDR"),
            ("10.0.0/8", "not a domain name, *.domain or CIDR"),
            ("pool.example.com/24", "not a domain name, *.domain or CIDR"),
            (&"a".repeat(64), "63"),
            (&format!("{}.com", "a.".repeat(127)), "253"),
        ];
        for (text, want) in cases {
            let err = parse_pattern(text).unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn the_first_value_is_kept_and_entries_list_back() {
        let mut m = Matcher::new();
        assert!(m.insert(parse_pattern("pool.example").unwrap(), "builtin"));
        assert!(!m.insert(parse_pattern("POOL.example.").unwrap(), "file"));
        assert!(m.insert(parse_pattern("*.pool.example").unwrap(), "file"));
        assert!(m.insert(parse_pattern("10.0.0.0/8").unwrap(), "file"));
        assert!(!m.insert(parse_pattern("10.9.9.9/8").unwrap(), "file"));
        assert_eq!(m.len(), 3);
        assert_eq!(m.lookup("pool.example").unwrap().value, &"builtin");
        let mut listed: Vec<String> = m.entries().map(|(p, _)| p.to_string()).collect();
        listed.sort();
        assert_eq!(listed, ["*.pool.example", "10.0.0.0/8", "pool.example"]);
        assert!(Matcher::<()>::new().is_empty());
    }

    #[test]
    fn authority_hosts() {
        let cases = [
            ("pool.example:3333", "pool.example"),
            ("pool.example", "pool.example"),
            ("[fd66::2]:443", "[fd66::2]"),
            ("[fd66::2]", "[fd66::2]"),
            ("fd66::2", "fd66::2"),
            ("10.0.0.1:80", "10.0.0.1"),
            ("pool.example:http", "pool.example:http"),
        ];
        for (authority, host) in cases {
            assert_eq!(authority_host(authority), host, "{authority}");
        }
    }
}
