//! Threat intelligence: lists of mining-pool names the controller knows
//! (a feed compiled in, [`BUILTIN`], plus `--threat-feed` files), matched
//! with the rules both ends share ([`vigil_proto::threat`]).
//!
//! A feed file holds one entry a line: `domain` (that name only),
//! `*.domain` (its subdomains, not the domain itself), an IP or a CIDR; `#`
//! starts a comment. A bad line is an error naming the file and the line.
//! [`reload`] loads the files at start, reloads them on SIGHUP and when they
//! change, and publishes [`Feeds`] through a `watch` channel, so the engine
//! (alerts, and the `denied_names` pushed to sidecars) and the API see each
//! new list at once.
//!
//! Ports never list anything: a miner can use any port, and the usual
//! pool ports (Falco's `miner_ports`, [`MINER_PORTS`]) are also common
//! service ports (8080, 8888). [`is_miner_port`] is evidence only: traffic
//! to a listed name on one of them is all the more certainly a miner.
//!
//! Pure but for [`reload`]; depends on nothing of the engine.

pub mod api;
pub mod reload;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;
use vigil_proto::threat::{Matcher, PatternError, parse_pattern};

pub use reload::{Reloader, ThreatMetrics};

/// The built-in feed's name.
pub const BUILTIN_FEED: &str = "builtin";

/// The built-in feed (see the sources at its top).
pub const BUILTIN: &str = include_str!("builtin.txt");

/// Ports mining pools commonly listen on: Falco's `miner_ports`
/// (falcosecurity/rules, Apache-2.0). Evidence, never a listing.
pub const MINER_PORTS: &[u16] = &[
    25, 3333, 3334, 3335, 3336, 3357, 4444, 5555, 5556, 5588, 5730, 6099, 6666, 7777, 7778, 8000,
    8001, 8008, 8080, 8118, 8333, 8888, 8899, 9332, 9999, 14433, 14444, 45560, 45700,
];

/// Whether `port` is one mining pools commonly listen on ([`MINER_PORTS`]).
pub fn is_miner_port(port: u16) -> bool {
    MINER_PORTS.contains(&port)
}

/// Why a feed was refused.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// A line is not an entry.
    #[error("threat feed {feed}, line {line}: {source}")]
    Line {
        /// The feed (a file's path, or `builtin`).
        feed: String,
        /// The line, from 1.
        line: usize,
        /// What is wrong with it.
        source: PatternError,
    },
    /// The file could not be read.
    #[error("threat feed {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// One feed: its name and its entries, in file order, as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Feed {
    /// Its name: `builtin`, or the file's path.
    pub name: Arc<str>,
    /// Its entries, normalised.
    pub entries: Vec<vigil_proto::threat::Pattern>,
}

/// Parses a feed's text; the first bad line is the error.
pub fn parse_feed(name: &str, text: &str) -> Result<Feed, FeedError> {
    let mut entries = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let entry = line.split('#').next().unwrap_or_default().trim();
        if entry.is_empty() {
            continue;
        }
        let pattern = parse_pattern(entry).map_err(|source| FeedError::Line {
            feed: name.to_owned(),
            line: index + 1,
            source,
        })?;
        entries.push(pattern);
    }
    Ok(Feed {
        name: name.into(),
        entries,
    })
}

/// Reads and parses the feed file at `path` (named by its path).
pub fn read_feed(path: &Path) -> Result<Feed, FeedError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| FeedError::Read {
        path: name.clone(),
        source,
    })?;
    parse_feed(&name, &text)
}

/// The built-in feed, parsed.
pub fn builtin() -> Feed {
    parse_feed(BUILTIN_FEED, BUILTIN).expect("the built-in feed is checked by a test")
}

/// Where a name was found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Listing {
    /// The feed that lists it (`builtin`, or a file's path).
    pub feed: String,
    /// The entry that matched, normalised (`*.nanopool.org`).
    pub entry: String,
}

/// Every feed in force, compiled: what is listed, and by which feed. An
/// entry in several feeds is reported as the first one's (the built-in
/// feed first, then the files in the order given).
#[derive(Clone, Debug, Default)]
pub struct Feeds {
    matcher: Matcher<Arc<str>>,
    denied_names: Arc<BTreeSet<String>>,
    feeds: Vec<(Arc<str>, usize)>,
}

impl Feeds {
    /// Compiles `feeds`, in order of precedence.
    pub fn new<'a>(feeds: impl IntoIterator<Item = &'a Feed>) -> Self {
        let mut matcher = Matcher::new();
        let mut names = Vec::new();
        for feed in feeds {
            for entry in &feed.entries {
                matcher.insert(entry.clone(), feed.name.clone());
            }
            names.push((feed.name.clone(), feed.entries.len()));
        }
        let denied_names = matcher.entries().map(|(p, _)| p.to_string()).collect();
        Feeds {
            matcher,
            denied_names: Arc::new(denied_names),
            feeds: names,
        }
    }

    /// Where `name` is listed: a host name or IP literal, with or without a
    /// port (`pool.example:3333`); any case, a trailing dot, an IDN spelling.
    pub fn lookup(&self, name: &str) -> Option<Listing> {
        self.matcher.lookup(name).map(|m| Listing {
            feed: m.value.to_string(),
            entry: m.entry,
        })
    }

    /// Where the address `ip` is listed.
    pub fn lookup_ip(&self, ip: std::net::IpAddr) -> Option<Listing> {
        self.matcher.lookup_ip(ip).map(|m| Listing {
            feed: m.value.to_string(),
            entry: m.entry,
        })
    }

    /// Every entry, normalised and sorted, for the policy's
    /// `denied_names` (`PolicySpec::denied_names`).
    pub fn denied_names(&self) -> Arc<BTreeSet<String>> {
        self.denied_names.clone()
    }

    /// How many distinct entries are in force.
    pub fn len(&self) -> usize {
        self.matcher.len()
    }

    /// Whether none are.
    pub fn is_empty(&self) -> bool {
        self.matcher.is_empty()
    }

    /// The feeds, in order of precedence, with how many entries each holds.
    pub fn feeds(&self) -> &[(Arc<str>, usize)] {
        &self.feeds
    }
}

impl crate::detect::Threats for Feeds {
    /// `feed: entry`, e.g. `builtin: *.supportxmr.com`.
    fn listed(&self, host: &str) -> Option<String> {
        self.lookup(host)
            .map(|l| format!("{}: {}", l.feed, l.entry))
    }

    fn listed_ip(&self, ip: std::net::IpAddr) -> Option<String> {
        self.lookup_ip(ip)
            .map(|l| format!("{}: {}", l.feed, l.entry))
    }
}

/// Hands every list `feeds` publishes to the engine (the `threat` detector,
/// and the `denied_names` of every sidecar's policy), the current one
/// first, until either side stops.
pub async fn feed_engine(mut feeds: api::FeedsRx, engine: crate::engine::Handle) {
    loop {
        let current = feeds.borrow_and_update().clone();
        let denied_names = current.denied_names();
        if engine.set_threats(current, denied_names).await.is_err() {
            return;
        }
        if feeds.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests;
