//! The DNS answers the pod received through the sidecar's DNS listener:
//! name -> addresses, each until its TTL (at least [`MIN_KEEP`]) runs out.
//! The listener writes, [`super::Resolver::addresses`] reads, so a name a
//! client shows is believed for an address the pod was told it has.
//!
//! An answer binds the name it was asked for only as a client's resolver
//! would use it: a short name (fewer dots than `ndots`) is bound only after
//! every search name before it was answered NXDOMAIN
//! ([`super::SearchList`]), so a notebook that asks a public name which is
//! also a cluster name (`db.shop`, `postgres.dev`) directly cannot bind the
//! cluster name to an address of its choosing.
//!
//! Bounded: at most [`MAX_NAMES`] names (expired ones go first, then the
//! least recently answered) and [`MAX_ADDRESSES`] addresses a name; at
//! most [`MAX_NAMES`] NXDOMAIN names, each for [`MISSING_KEEP`]. The clock
//! is passed in, so tests need no sleeps.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Shortest time an answer is kept, whatever its TTL: a client that
/// connects a little after the TTL ran out (or got a TTL of 0) is not
/// refused for it.
pub const MIN_KEEP: Duration = Duration::from_secs(30);
/// Longest time an answer is kept, whatever its TTL.
pub const MAX_KEEP: Duration = Duration::from_secs(24 * 3600);
/// Most names kept.
pub const MAX_NAMES: usize = 10_000;
/// Most addresses kept for one name (the latest answers win).
pub const MAX_ADDRESSES: usize = 64;
/// How long a name answered NXDOMAIN counts as missing: a resolver asks
/// the search names and then the name itself within its own timeouts.
pub const MISSING_KEEP: Duration = Duration::from_secs(30);
/// The DNS response code for a name that does not exist.
const NXDOMAIN: u16 = 3;

use super::SearchList;

/// One name's addresses, each with when it expires, and when it was last
/// answered.
#[derive(Debug)]
struct Entry {
    addresses: Vec<(IpAddr, Instant)>,
    answered: Instant,
}

/// The store itself (see the module docs).
#[derive(Debug)]
pub struct AnswerStore {
    entries: HashMap<String, Entry>,
    max_names: usize,
    search: SearchList,
    /// Names answered NXDOMAIN, until when they count as missing; and the
    /// same in the order they came (all are kept alike, so the oldest go
    /// first).
    missing: HashMap<String, Instant>,
    missing_order: VecDeque<(String, Instant)>,
}

impl Default for AnswerStore {
    fn default() -> Self {
        Self::new(MAX_NAMES)
    }
}

impl AnswerStore {
    /// An empty store of at most `max_names` names.
    pub fn new(max_names: usize) -> Self {
        Self::with_search(max_names, SearchList::default())
    }

    /// An empty store of at most `max_names` names for a pod whose resolver
    /// uses `search`.
    pub fn with_search(max_names: usize, search: SearchList) -> Self {
        AnswerStore {
            entries: HashMap::new(),
            max_names: max_names.max(1),
            search,
            missing: HashMap::new(),
            missing_order: VecDeque::new(),
        }
    }

    /// What the pod was answered at `now` for `name` (lower case, no
    /// trailing dot): `rcode`, and the addresses the answer gave the name.
    /// NXDOMAIN marks the name missing for [`MISSING_KEEP`]. The addresses
    /// are kept as `name`'s ([`AnswerStore::insert`]) only when every name
    /// a resolver asks before it ([`SearchList::asked_before`]) is marked
    /// missing: otherwise a client asking for `name` is answered by one of
    /// those, not by this answer. Returns whether they were kept.
    pub fn answered(
        &mut self,
        name: &str,
        rcode: u16,
        addresses: &[(IpAddr, u32)],
        now: Instant,
    ) -> bool {
        if rcode == NXDOMAIN {
            self.mark_missing(name, now);
            return false;
        }
        if addresses.is_empty() {
            return false;
        }
        let missing = |asked: &String| self.missing.get(asked).is_some_and(|until| *until > now);
        if !self.search.asked_before(name).all(|asked| missing(&asked)) {
            return false;
        }
        self.insert(name, addresses, now);
        true
    }

    fn mark_missing(&mut self, name: &str, now: Instant) {
        let until = now + MISSING_KEEP;
        while self.missing_order.len() >= self.max_names
            || self
                .missing_order
                .front()
                .is_some_and(|(_, until)| *until <= now)
        {
            let Some((old, old_until)) = self.missing_order.pop_front() else {
                break;
            };
            if self.missing.get(&old) == Some(&old_until) {
                self.missing.remove(&old);
            }
        }
        self.missing.insert(name.to_owned(), until);
        self.missing_order.push_back((name.to_owned(), until));
    }

    /// How many names are kept.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no name is kept.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Keeps `addresses` (with their TTLs in seconds) as `name`'s,
    /// answered at `now`, beside its unexpired earlier ones.
    pub fn insert(&mut self, name: &str, addresses: &[(IpAddr, u32)], now: Instant) {
        if addresses.is_empty() {
            return;
        }
        if !self.entries.contains_key(name) && self.entries.len() >= self.max_names {
            self.evict(now);
        }
        let entry = self.entries.entry(name.to_owned()).or_insert(Entry {
            addresses: Vec::new(),
            answered: now,
        });
        entry.answered = now;
        entry.addresses.retain(|(_, until)| *until > now);
        for (ip, ttl) in addresses {
            let keep = Duration::from_secs(u64::from(*ttl)).clamp(MIN_KEEP, MAX_KEEP);
            let until = now + keep;
            let ip = ip.to_canonical();
            match entry.addresses.iter_mut().find(|(known, _)| *known == ip) {
                Some(known) => known.1 = known.1.max(until),
                None => entry.addresses.push((ip, until)),
            }
        }
        if entry.addresses.len() > MAX_ADDRESSES {
            // The soonest to expire go first.
            entry
                .addresses
                .sort_by_key(|(_, until)| std::cmp::Reverse(*until));
            entry.addresses.truncate(MAX_ADDRESSES);
        }
    }

    /// `name`'s addresses that have not expired at `now`.
    pub fn get(&self, name: &str, now: Instant) -> Vec<IpAddr> {
        self.entries.get(name).map_or_else(Vec::new, |entry| {
            entry
                .addresses
                .iter()
                .filter(|(_, until)| *until > now)
                .map(|(ip, _)| *ip)
                .collect()
        })
    }

    /// The names whose unexpired addresses at `now` include `ip`, the most
    /// recently answered first (a UDP flow to `ip` is named by them).
    pub fn names_of(&self, ip: IpAddr, now: Instant) -> Vec<String> {
        let ip = ip.to_canonical();
        let mut names: Vec<(&String, Instant)> = self
            .entries
            .iter()
            .filter(|(_, e)| {
                e.addresses
                    .iter()
                    .any(|(a, until)| *a == ip && *until > now)
            })
            .map(|(name, e)| (name, e.answered))
            .collect();
        names.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        names.into_iter().map(|(name, _)| name.clone()).collect()
    }

    /// Makes room for one name: drops every expired name, else the least
    /// recently answered one.
    fn evict(&mut self, now: Instant) {
        self.entries
            .retain(|_, e| e.addresses.iter().any(|(_, until)| *until > now));
        if self.entries.len() < self.max_names {
            return;
        }
        let oldest = self
            .entries
            .iter()
            .min_by_key(|(_, e)| e.answered)
            .map(|(name, _)| name.clone());
        if let Some(name) = oldest {
            self.entries.remove(&name);
        }
    }
}

/// A shared [`AnswerStore`]: the DNS listener writes, the resolver reads.
#[derive(Clone, Debug, Default)]
pub struct PodAnswers {
    store: Arc<Mutex<AnswerStore>>,
    search: Arc<SearchList>,
}

impl PodAnswers {
    /// Answers for a pod whose resolver uses `search`.
    pub fn new(search: SearchList) -> Self {
        PodAnswers {
            store: Arc::new(Mutex::new(AnswerStore::with_search(
                MAX_NAMES,
                search.clone(),
            ))),
            search: Arc::new(search),
        }
    }

    /// The pod's search list.
    pub fn search(&self) -> &SearchList {
        &self.search
    }

    /// What the pod was answered for `name` (see [`AnswerStore::answered`]);
    /// whether the addresses were kept.
    pub fn answered(&self, name: &str, rcode: u16, addresses: &[(IpAddr, u32)]) -> bool {
        self.store
            .lock()
            .map(|mut store| store.answered(name, rcode, addresses, Instant::now()))
            .unwrap_or(false)
    }

    /// Keeps the addresses an answer gave `name` whatever the search list
    /// (see [`AnswerStore::insert`]).
    #[cfg(test)]
    pub fn insert(&self, name: &str, addresses: &[(IpAddr, u32)]) {
        if let Ok(mut store) = self.store.lock() {
            store.insert(name, addresses, Instant::now());
        }
    }

    /// The names the pod was told have `ip` (see [`AnswerStore::names_of`]).
    pub fn names_of(&self, ip: IpAddr) -> Vec<String> {
        self.store
            .lock()
            .map(|store| store.names_of(ip, Instant::now()))
            .unwrap_or_default()
    }

    /// `name`'s unexpired addresses.
    pub fn get(&self, name: &str) -> Vec<IpAddr> {
        self.store
            .lock()
            .map(|store| store.get(name, Instant::now()))
            .unwrap_or_default()
    }

    /// How many names are kept.
    pub fn len(&self) -> usize {
        self.store.lock().map(|s| s.len()).unwrap_or(0)
    }

    /// Whether no name is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn answers_are_kept_for_their_ttl_but_at_least_min_keep() {
        let t0 = Instant::now();
        let s = |secs: u64| t0 + Duration::from_secs(secs);
        let mut store = AnswerStore::default();
        store.insert(
            "pypi.test",
            &[(ip("10.0.0.1"), 0), (ip("10.0.0.2"), 300)],
            t0,
        );
        store.insert("six.test", &[(ip("::ffff:10.0.0.9"), 60)], t0);
        store.insert("empty.test", &[], t0);
        // (name, when, addresses)
        let cases = [
            ("pypi.test", s(0), vec![ip("10.0.0.1"), ip("10.0.0.2")]),
            ("pypi.test", s(29), vec![ip("10.0.0.1"), ip("10.0.0.2")]),
            ("pypi.test", s(30), vec![ip("10.0.0.2")]),
            ("pypi.test", s(299), vec![ip("10.0.0.2")]),
            ("pypi.test", s(300), vec![]),
            ("six.test", s(59), vec![ip("10.0.0.9")]),
            ("empty.test", s(0), vec![]),
            ("never.test", s(0), vec![]),
        ];
        for (name, when, want) in cases {
            assert_eq!(store.get(name, when), want, "{name} at {:?}", when - t0);
        }
        // A later answer extends an address, never shortens it.
        store.insert("pypi.test", &[(ip("10.0.0.2"), 1)], s(10));
        assert_eq!(store.get("pypi.test", s(299)), vec![ip("10.0.0.2")]);
        store.insert("pypi.test", &[(ip("10.0.0.1"), 1000)], s(10));
        assert_eq!(store.get("pypi.test", s(1000)), vec![ip("10.0.0.1")]);
        // A huge TTL is capped.
        store.insert("far.test", &[(ip("10.0.0.5"), u32::MAX)], t0);
        assert!(store.get("far.test", t0 + MAX_KEEP).is_empty());
    }

    #[test]
    fn names_of_an_address_are_the_unexpired_ones_latest_first() {
        let mut store = AnswerStore::default();
        let t0 = Instant::now();
        store.insert("old.test", &[(ip("10.0.0.1"), 60)], t0);
        store.insert(
            "new.test",
            &[(ip("10.0.0.1"), 600)],
            t0 + Duration::from_secs(1),
        );
        store.insert("other.test", &[(ip("10.0.0.2"), 60)], t0);
        let names = store.names_of(ip("::ffff:10.0.0.1"), t0 + Duration::from_secs(2));
        assert_eq!(names, ["new.test", "old.test"]);
        assert_eq!(
            store.names_of(ip("10.0.0.1"), t0 + Duration::from_secs(100)),
            ["new.test"]
        );
        assert!(store.names_of(ip("10.0.0.3"), t0).is_empty());
    }

    #[test]
    fn the_store_is_bounded_expired_names_first_then_the_oldest() {
        let t0 = Instant::now();
        let s = |secs: u64| t0 + Duration::from_secs(secs);
        let mut store = AnswerStore::new(3);
        store.insert("short.test", &[(ip("10.0.0.1"), 30)], s(0));
        store.insert("old.test", &[(ip("10.0.0.2"), 600)], s(1));
        store.insert("new.test", &[(ip("10.0.0.3"), 600)], s(2));
        // Full: the expired name goes.
        store.insert("fourth.test", &[(ip("10.0.0.4"), 600)], s(40));
        assert_eq!(store.len(), 3);
        assert!(store.get("short.test", s(40)).is_empty());
        assert_eq!(store.get("old.test", s(40)), vec![ip("10.0.0.2")]);
        // Full and nothing expired: the least recently answered goes.
        store.insert("old.test", &[(ip("10.0.0.2"), 600)], s(41));
        store.insert("fifth.test", &[(ip("10.0.0.5"), 600)], s(42));
        assert_eq!(store.len(), 3);
        assert!(
            store.get("new.test", s(42)).is_empty(),
            "new.test was the oldest answer"
        );
        for kept in ["old.test", "fourth.test", "fifth.test"] {
            assert_eq!(store.get(kept, s(42)).len(), 1, "{kept}");
        }
        // A name's addresses are bounded too, the longest-lived kept.
        let many: Vec<(IpAddr, u32)> = (0..(MAX_ADDRESSES as u32 + 6))
            .map(|i| (IpAddr::from([10, 1, (i / 256) as u8, i as u8]), 100 + i))
            .collect();
        store.insert("many.test", &many, s(50));
        let kept = store.get("many.test", s(50));
        assert_eq!(kept.len(), MAX_ADDRESSES);
        assert!(!kept.contains(&IpAddr::from([10, 1, 0, 0])));
    }

    /// A pod in namespace `ns` of a cluster (`ndots:5`).
    fn pod_search() -> SearchList {
        SearchList {
            domains: vec!["ns.svc.cluster.local".into(), "svc.cluster.local".into()],
            ndots: 5,
        }
    }

    #[test]
    fn a_short_name_is_bound_only_after_its_search_names_were_nxdomain() {
        const NOERROR: u16 = 0;
        const SERVFAIL: u16 = 2;
        let t0 = Instant::now();
        let ms = |ms: u64| t0 + Duration::from_millis(ms);
        let evil = [(ip("203.0.113.9"), 300)];
        let cluster = [(ip("10.96.0.7"), 5)];
        let cdn = [(ip("151.101.0.223"), 60)];
        // Each case: the answers the pod got, in order (name, rcode,
        // addresses, when in ms), then the name a client shows and the
        // addresses it is bound to.
        type Step<'a> = (&'a str, u16, &'a [(IpAddr, u32)], u64);
        let cases: [(&str, Vec<Step>, &str, Vec<IpAddr>); 8] = [
            (
                "a resolver: every search name NXDOMAIN, then the name",
                vec![
                    ("pypi.org.ns.svc.cluster.local", NXDOMAIN, &[], 0),
                    ("pypi.org.svc.cluster.local", NXDOMAIN, &[], 1),
                    ("pypi.org", NOERROR, &cdn, 2),
                ],
                "pypi.org",
                vec![ip("151.101.0.223")],
            ),
            (
                "the notebook asks a public db.shop directly (dig db.shop)",
                vec![("db.shop", NOERROR, &evil, 0)],
                "db.shop",
                vec![],
            ),
            (
                "the Service db in namespace shop exists: its search name answers",
                vec![
                    ("db.shop.ns.svc.cluster.local", NXDOMAIN, &[], 0),
                    ("db.shop.svc.cluster.local", NOERROR, &cluster, 1),
                    ("db.shop", NOERROR, &evil, 2),
                ],
                "db.shop",
                vec![],
            ),
            (
                "a search name has four dots: asked alone, it is short too",
                vec![("db.shop.svc.cluster.local", NOERROR, &cluster, 0)],
                "db.shop.svc.cluster.local",
                vec![],
            ),
            (
                "one search name missing is not enough",
                vec![
                    ("db.shop.ns.svc.cluster.local", NXDOMAIN, &[], 0),
                    ("db.shop", NOERROR, &evil, 1),
                ],
                "db.shop",
                vec![],
            ),
            (
                "a search name that failed (SERVFAIL) may exist",
                vec![
                    ("db.shop.ns.svc.cluster.local", NXDOMAIN, &[], 0),
                    ("db.shop.svc.cluster.local", SERVFAIL, &[], 1),
                    ("db.shop", NOERROR, &evil, 2),
                ],
                "db.shop",
                vec![],
            ),
            (
                "NXDOMAIN marks run out",
                vec![
                    ("db.shop.ns.svc.cluster.local", NXDOMAIN, &[], 0),
                    ("db.shop.svc.cluster.local", NXDOMAIN, &[], 0),
                    ("db.shop", NOERROR, &evil, 30_000),
                ],
                "db.shop",
                vec![],
            ),
            (
                "five dots: asked as it is first, bound at once",
                vec![("a.b.c.d.e.f", NOERROR, &evil, 0)],
                "a.b.c.d.e.f",
                vec![ip("203.0.113.9")],
            ),
        ];
        for (what, steps, name, want) in cases {
            let mut store = AnswerStore::with_search(MAX_NAMES, pod_search());
            let mut last = t0;
            for (asked, rcode, addresses, at) in steps {
                last = ms(at);
                store.answered(asked, rcode, addresses, last);
            }
            assert_eq!(store.get(name, last), want, "{what}");
        }
        // Without a search list (no resolv.conf), an answer binds its name.
        let mut store = AnswerStore::default();
        assert!(store.answered("db.shop", NOERROR, &evil, t0));
        assert_eq!(store.get("db.shop", t0), [ip("203.0.113.9")]);
    }

    #[test]
    fn nxdomain_marks_are_bounded_oldest_first() {
        let t0 = Instant::now();
        let s = |secs: u64| t0 + Duration::from_secs(secs);
        let search = SearchList {
            domains: vec!["svc".into()],
            ndots: 5,
        };
        let mut store = AnswerStore::with_search(2, search);
        let answer = [(ip("10.0.0.1"), 60)];
        // A flood of unique missing names pushes the oldest mark out: the
        // name it let bind is then judged by the sidecar's own lookup.
        store.answered("a.test.svc", NXDOMAIN, &[], s(0));
        store.answered("b.test.svc", NXDOMAIN, &[], s(1));
        store.answered("flood.svc", NXDOMAIN, &[], s(2));
        assert!(!store.answered("a.test", 0, &answer, s(3)));
        assert!(store.answered("b.test", 0, &answer, s(3)));
        // A name marked again is kept until its latest mark runs out.
        store.answered("c.test.svc", NXDOMAIN, &[], s(4));
        store.answered("c.test.svc", NXDOMAIN, &[], s(20));
        assert!(store.answered("c.test", 0, &answer, s(40)));
        assert!(!store.answered("c.test", 0, &answer, s(51)));
        assert!(store.missing.len() <= 2 && store.missing_order.len() <= 2);
    }
}
