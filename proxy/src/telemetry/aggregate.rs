//! Pure aggregation of request records into report batches.

use std::collections::{HashMap, HashSet};

use vigil_proto::v1;

use crate::model::{Direction, Protocol, Record};

/// The default cap on distinct keys per interval.
pub const MAX_KEYS: usize = 10_000;
/// Distinct path templates remembered per destination (per caller inbound);
/// past it, new paths are reported as [`OTHER_PATH`], so a scanner walking
/// random paths cannot blow up memory or the controller's graph.
pub const MAX_TEMPLATES_PER_DESTINATION: usize = 100;
/// Destinations whose templates are remembered; paths to further ones are
/// reported as [`OTHER_PATH`].
pub const MAX_TRACKED_DESTINATIONS: usize = 1024;
/// The path reported for templates past the bounds.
pub const OTHER_PATH: &str = "/{other}";

/// Which path templates have been reported, per destination, for the life
/// of the process (bounded both ways).
#[derive(Debug, Default)]
struct Templates {
    /// Outbound by destination, inbound by caller (looked up by `&str`, so
    /// a request's record costs no key built to find its templates).
    outbound: HashMap<String, HashSet<String>>,
    inbound: HashMap<String, HashSet<String>>,
}

impl Templates {
    /// `path` if it is known or there is room for it, else [`OTHER_PATH`].
    fn admit(&mut self, direction: Direction, peer: &str, path: String) -> String {
        if path.is_empty() {
            return path;
        }
        let tracked = self.outbound.len() + self.inbound.len();
        let seen = match direction {
            Direction::Outbound => &mut self.outbound,
            Direction::Inbound => &mut self.inbound,
        };
        // Looked up by `&str`, once: a known peer's name is neither copied
        // nor hashed twice.
        let paths = match seen.get_mut(peer) {
            Some(paths) => paths,
            None if tracked >= MAX_TRACKED_DESTINATIONS => return OTHER_PATH.to_owned(),
            None => seen.entry(peer.to_owned()).or_default(),
        };
        if paths.contains(&path) {
            return path;
        }
        if paths.len() >= MAX_TEMPLATES_PER_DESTINATION {
            return OTHER_PATH.to_owned();
        }
        paths.insert(path.clone());
        path
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    direction: Direction,
    protocol: Protocol,
    source: String,
    authority: String,
    resolved: Option<std::net::SocketAddr>,
    method: String,
    path: String,
    status: u16,
    claimed_source: String,
    claimed_authority: String,
    source_ip: Option<std::net::IpAddr>,
}

impl Key {
    /// The key new records are counted under once the aggregator is full.
    fn overflow(self) -> Key {
        let outbound = self.direction == Direction::Outbound;
        Key {
            direction: self.direction,
            protocol: self.protocol,
            source: String::new(),
            authority: if outbound {
                OVERFLOW.to_owned()
            } else {
                String::new()
            },
            resolved: None,
            method: String::new(),
            path: String::new(),
            status: 0,
            claimed_source: String::new(),
            claimed_authority: String::new(),
            source_ip: None,
        }
    }
}

/// The destination records are counted under once the aggregator is full.
pub use vigil_proto::OVERFLOW_AUTHORITY as OVERFLOW;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Stats {
    count: u64,
    denied: u64,
    latency_sum_us: u64,
    latency_max_us: u64,
    bytes_in: u64,
    bytes_out: u64,
}

/// Merges records over one interval.
#[derive(Debug)]
pub struct Aggregator {
    map: HashMap<Key, Stats>,
    max_keys: usize,
    dropped: u64,
    next_seq: u64,
    templates: Templates,
}

impl Aggregator {
    /// An empty aggregator holding at most `max_keys` distinct keys.
    pub fn new(max_keys: usize) -> Self {
        Aggregator {
            map: HashMap::new(),
            max_keys,
            dropped: 0,
            next_seq: 1,
            templates: Templates::default(),
        }
    }

    /// Merges one record; counts it as dropped when the key cap is reached.
    pub fn add(&mut self, r: Record) {
        let peer = match r.direction {
            Direction::Outbound => &r.authority,
            Direction::Inbound => &r.source,
        };
        let path = self.templates.admit(r.direction, peer, r.path);
        let key = Key {
            direction: r.direction,
            protocol: r.protocol,
            source: r.source,
            authority: r.authority,
            resolved: r.resolved,
            method: r.method,
            path,
            status: r.status,
            claimed_source: r.claimed_source,
            claimed_authority: r.claimed_authority,
            source_ip: r.source_ip,
        };
        // One lookup while there is room (the usual case).
        let stats = if self.map.len() < self.max_keys || self.map.contains_key(&key) {
            self.map.entry(key).or_default()
        } else {
            // Full: what is new is counted, not dropped, under one key per
            // direction and protocol, so a flood of unique names still
            // reaches the controller (denials included) in bounded space.
            self.map.entry(key.overflow()).or_default()
        };
        stats.count += r.count;
        // A denial is always a counted event (denied never exceeds count).
        stats.denied += u64::from(r.denied && r.count > 0);
        stats.latency_sum_us = stats.latency_sum_us.saturating_add(r.latency_us);
        stats.latency_max_us = stats.latency_max_us.max(r.latency_us);
        stats.bytes_in = stats.bytes_in.saturating_add(r.bytes_in);
        stats.bytes_out = stats.bytes_out.saturating_add(r.bytes_out);
    }

    /// Counts `n` records lost before they reached the aggregator.
    pub fn add_dropped(&mut self, n: u64) {
        self.dropped += n;
    }

    /// Takes everything merged so far as a batch with the next sequence
    /// number, or `None` when there is nothing to report.
    pub fn take_batch(&mut self, identity: &v1::Identity) -> Option<v1::ReportBatch> {
        if self.map.is_empty() && self.dropped == 0 {
            return None;
        }
        let observations = self
            .map
            .drain()
            .map(|(k, s)| v1::Observation {
                direction: k.direction.to_proto() as i32,
                protocol: k.protocol.to_proto() as i32,
                source: k.source,
                authority: k.authority,
                resolved_addr: k.resolved.map(|a| a.to_string()).unwrap_or_default(),
                method: k.method,
                path: k.path,
                status: u32::from(k.status),
                count: s.count,
                denied: s.denied,
                latency_sum_us: s.latency_sum_us,
                latency_max_us: s.latency_max_us,
                bytes_in: s.bytes_in,
                bytes_out: s.bytes_out,
                claimed_source: k.claimed_source,
                claimed_authority: k.claimed_authority,
                source_ip: k.source_ip.map(|ip| ip.to_string()).unwrap_or_default(),
            })
            .collect();
        let seq = self.next_seq;
        self.next_seq += 1;
        Some(v1::ReportBatch {
            identity: Some(identity.clone()),
            seq,
            observations,
            dropped: std::mem::take(&mut self.dropped),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(path: &str, status: u16, latency_us: u64, denied: bool) -> Record {
        Record {
            authority: "api:80".into(),
            resolved: Some("10.0.0.1:80".parse().unwrap()),
            method: "GET".into(),
            path: path.into(),
            status,
            latency_us,
            bytes_in: 10,
            bytes_out: 100,
            denied,
            ..Record::new(Direction::Outbound, Protocol::Http1)
        }
    }

    #[test]
    fn merges_by_key() {
        let mut agg = Aggregator::new(MAX_KEYS);
        let id = v1::Identity::default();
        assert_eq!(agg.take_batch(&id), None);
        agg.add(record("/a", 200, 10, false));
        agg.add(record("/a", 200, 30, false));
        agg.add(record("/a", 403, 5, true));
        agg.add(record("/b", 200, 7, false));
        let batch = agg.take_batch(&id).unwrap();
        assert_eq!(batch.seq, 1);
        assert_eq!(batch.observations.len(), 3);
        let a = batch
            .observations
            .iter()
            .find(|o| o.path == "/a" && o.status == 200)
            .unwrap();
        assert_eq!(
            (a.count, a.denied, a.latency_sum_us, a.latency_max_us),
            (2, 0, 40, 30)
        );
        assert_eq!((a.bytes_in, a.bytes_out), (20, 200));
        assert_eq!(a.resolved_addr, "10.0.0.1:80");
        let denied = batch.observations.iter().find(|o| o.status == 403).unwrap();
        assert_eq!(denied.denied, 1);
        assert_eq!(agg.take_batch(&id), None);
        agg.add(record("/a", 200, 1, false));
        assert_eq!(agg.take_batch(&id).unwrap().seq, 2);
    }

    #[test]
    fn past_the_key_cap_new_destinations_are_counted_under_the_overflow() {
        let mut agg = Aggregator::new(2);
        agg.add(record("/a", 200, 1, false));
        agg.add(record("/b", 200, 1, false));
        // A flood of unique denied destinations: none is lost.
        for i in 0..1000 {
            let mut r = record("/", 403, 1, true);
            r.authority = format!("x{i}.pool.test:3333");
            agg.add(r);
        }
        agg.add(record("/a", 200, 1, false)); // existing keys still merge
        agg.add_dropped(5);
        let batch = agg.take_batch(&v1::Identity::default()).unwrap();
        assert_eq!(batch.observations.len(), 3, "{:?}", batch.observations);
        assert_eq!(batch.dropped, 5, "counted, not dropped");
        let overflow = batch
            .observations
            .iter()
            .find(|o| o.authority == OVERFLOW)
            .unwrap();
        assert_eq!((overflow.count, overflow.denied), (1000, 1000));
        let total: u64 = batch.observations.iter().map(|o| o.count).sum();
        assert_eq!(total, 1003);
        // A batch with only drops is still reported; then the count resets.
        agg.add_dropped(1);
        assert_eq!(agg.take_batch(&v1::Identity::default()).unwrap().dropped, 1);
    }

    #[test]
    fn a_scanner_cannot_grow_templates_past_the_bound() {
        let mut agg = Aggregator::new(MAX_KEYS);
        for i in 0..(MAX_TEMPLATES_PER_DESTINATION + 500) {
            agg.add(record(&format!("/probe-{i}"), 404, 1, false));
        }
        agg.add(record("/probe-0", 404, 1, false)); // a known template stays itself
        let mut other = record("/fresh", 200, 1, false);
        other.authority = "other:80".into(); // other destinations are unaffected
        agg.add(other);
        let batch = agg.take_batch(&v1::Identity::default()).unwrap();
        let to_api: Vec<_> = batch
            .observations
            .iter()
            .filter(|o| o.authority == "api:80")
            .collect();
        assert_eq!(
            to_api.len(),
            MAX_TEMPLATES_PER_DESTINATION + 1,
            "100 templates + {OTHER_PATH}"
        );
        let overflow = to_api.iter().find(|o| o.path == OTHER_PATH).unwrap();
        assert_eq!(overflow.count, 500);
        assert_eq!(
            to_api.iter().find(|o| o.path == "/probe-0").unwrap().count,
            2
        );
        assert!(batch.observations.iter().any(|o| o.path == "/fresh"));
        assert_eq!(batch.dropped, 0);
    }

    /// Past [`MAX_TRACKED_DESTINATIONS`], a new destination's paths are
    /// reported as [`OTHER_PATH`]; those already tracked keep theirs.
    #[test]
    fn a_flood_of_destinations_cannot_grow_templates_past_the_bound() {
        let mut templates = Templates::default();
        for i in 0..MAX_TRACKED_DESTINATIONS {
            let path = templates.admit(Direction::Outbound, &format!("d{i}:80"), "/a".into());
            assert_eq!(path, "/a");
        }
        let late = templates.admit(Direction::Outbound, "late:80", "/a".into());
        assert_eq!(late, OTHER_PATH);
        let inbound = templates.admit(Direction::Inbound, "ns/caller", "/a".into());
        assert_eq!(inbound, OTHER_PATH, "the bound counts both directions");
        let known = templates.admit(Direction::Outbound, "d7:80", "/b".into());
        assert_eq!(known, "/b");
        assert_eq!(
            templates.outbound.len() + templates.inbound.len(),
            MAX_TRACKED_DESTINATIONS
        );
    }
}
