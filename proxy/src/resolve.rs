//! Name resolution for outbound destinations: IP literals, then the
//! `--hosts-file` overrides, then the system resolver; and the addresses a
//! name is bound to, which add the DNS answers the pod itself received
//! ([`answers`]).
//!
//! The hosts-file and resolv.conf parsers are pure; `Resolver::resolve`
//! does the I/O.

pub mod answers;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

pub use answers::PodAnswers;

/// Why a hosts file or a name could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// A hosts-file line has no IP address token.
    #[error("hosts file line {line}: expected `name ip` or `ip name...`, found {text:?}")]
    BadHostsLine {
        /// 1-based line number.
        line: usize,
        /// The line's text.
        text: String,
    },
    /// The system resolver failed.
    #[error("cannot resolve {host}: {source}")]
    Lookup {
        /// The host name.
        host: String,
        /// The resolver's error.
        source: std::io::Error,
    },
    /// The system resolver returned no address.
    #[error("cannot resolve {host}: no address")]
    NoAddress {
        /// The host name.
        host: String,
    },
    /// The policy does not let the pod look the name up, so the sidecar
    /// does not either (see [`Lookup`]).
    #[error("not looked up: the policy does not allow looking up {host}")]
    NotAllowed {
        /// The host name.
        host: String,
    },
}

/// Whether a name a client gave may be sent to the system resolver. A
/// lookup leaves the pod as a DNS query whoever makes it: a made-up
/// `<data>.attacker.example` carries data out in the query itself, even
/// when the connection that named it is refused. So the sidecar looks up
/// only what the pod's own query would be answered for
/// (`policy::may_look_up`); otherwise only a hosts-file entry, an IP
/// literal or the DNS answers the pod already received are used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// The system resolver may be asked.
    Allowed,
    /// Only what is known without a query.
    Known,
}

impl Lookup {
    /// [`Lookup::Allowed`] when `allowed`, else [`Lookup::Known`].
    pub fn allowed_if(allowed: bool) -> Self {
        if allowed { Self::Allowed } else { Self::Known }
    }
}

/// Parses a hosts file: `name ip` or `ip name...` per line (whichever token
/// is an IP), `#` starts a comment, blank lines are ignored.
pub fn parse_hosts(text: &str) -> Result<HashMap<String, IpAddr>, ResolveError> {
    let mut hosts = HashMap::new();
    for (index, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let tokens: Vec<&str> = line.split_whitespace().collect();
        let bad = || ResolveError::BadHostsLine {
            line: index + 1,
            text: raw.to_string(),
        };
        if tokens.len() < 2 {
            return Err(bad());
        }
        let (ip, names): (IpAddr, Vec<&str>) = if let Ok(ip) = tokens[0].parse() {
            (ip, tokens[1..].to_vec())
        } else if let (2, Ok(ip)) = (tokens.len(), tokens[1].parse()) {
            (ip, vec![tokens[0]])
        } else {
            return Err(bad());
        };
        if names.iter().any(|n| n.parse::<IpAddr>().is_ok()) {
            return Err(bad());
        }
        for name in names {
            hosts.insert(name.to_ascii_lowercase(), ip);
        }
    }
    Ok(hosts)
}

/// The first `nameserver` of a resolv.conf text, if any (`#` and `;`
/// start comments; an IPv6 zone such as `fe80::1%eth0` is not supported).
pub fn parse_resolv_conf(text: &str) -> Option<IpAddr> {
    text.lines().find_map(|line| {
        let line = line.split(['#', ';']).next().unwrap_or("");
        let mut tokens = line.split_whitespace();
        match (tokens.next(), tokens.next()) {
            (Some("nameserver"), Some(ip)) => ip.parse().ok(),
            _ => None,
        }
    })
}

/// What a stub resolver (glibc, musl, Go's) does with a name that has
/// fewer dots than `ndots` (resolv.conf `search` and `options ndots:`): it
/// asks the name with each search domain appended, in order, and asks the
/// name as it is only when none of those exists. In a Kubernetes pod
/// (`ndots:5`, `search <ns>.svc.cluster.local svc.cluster.local
/// cluster.local`) `db.shop` is the Service `db` of namespace `shop`, even
/// when `db.shop` is also a public name (`shop` is a top-level domain).
///
/// So an answer for the name as it is says what a client reaches by that
/// name only when the listener saw every search name before it answered
/// NXDOMAIN ([`answers::AnswerStore::answered`]); a notebook that asks the
/// public `db.shop` directly (dig, or its own DNS code) binds nothing.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SearchList {
    /// The search domains, lower case, without a trailing dot.
    pub domains: Vec<String>,
    /// Names with at least this many dots are asked as they are first.
    pub ndots: usize,
}

impl Default for SearchList {
    /// No search domains, `ndots:1` (the C library's defaults).
    fn default() -> Self {
        SearchList {
            domains: Vec::new(),
            ndots: 1,
        }
    }
}

/// The longest name DNS can carry, in characters (without the final dot).
const MAX_NAME_LEN: usize = 253;
/// resolv.conf caps `ndots` at 15.
const MAX_NDOTS: usize = 15;

impl SearchList {
    /// The search list of a resolv.conf text: the last `search` or
    /// `domain` line wins (a `domain` is a list of one), `options ndots:n`
    /// (at most 15; 1 by default).
    pub fn parse(text: &str) -> SearchList {
        let mut list = SearchList::default();
        for line in text.lines() {
            let line = line.split(['#', ';']).next().unwrap_or("");
            let mut tokens = line.split_whitespace();
            match tokens.next() {
                Some("search" | "domain") => {
                    list.domains = tokens
                        .map(|d| d.trim_end_matches('.').to_ascii_lowercase())
                        .filter(|d| !d.is_empty())
                        .collect();
                }
                Some("options") => {
                    for option in tokens {
                        if let Some(n) = option.strip_prefix("ndots:")
                            && let Ok(n) = n.parse::<usize>()
                        {
                            list.ndots = n.min(MAX_NDOTS);
                        }
                    }
                }
                _ => {}
            }
        }
        list
    }

    /// The names `name` is a search name of: `name` without one of the
    /// search domains (`pypi.org` for `pypi.org.<ns>.svc.cluster.local`).
    pub fn searched<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.domains.iter().filter_map(move |domain| {
            name.strip_suffix(domain.as_str())?
                .strip_suffix('.')
                .filter(|short| !short.is_empty())
        })
    }

    /// The names a stub resolver asks before `name` itself (lower case,
    /// no trailing dot), in order: none when `name` has `ndots` dots or
    /// more, and none that would be too long to ask.
    pub fn asked_before<'a>(&'a self, name: &'a str) -> impl Iterator<Item = String> + 'a {
        let short = name != "." && name.matches('.').count() < self.ndots;
        self.domains
            .iter()
            .filter(move |_| short)
            .map(move |domain| format!("{name}.{domain}"))
            .filter(|full| full.len() <= MAX_NAME_LEN)
    }
}

/// How long a name resolved by the system resolver is reused. The system
/// resolver does not report record TTLs; ten seconds keeps a sidecar from
/// calling it on every request while following DNS changes promptly.
pub const DNS_CACHE_TTL: Duration = Duration::from_secs(10);
/// Most names cached; when full, expired entries are dropped, then all.
pub const DNS_CACHE_SIZE: usize = 4096;

/// Lookups in flight kept before those no request waits for any more are
/// dropped (see [`DnsCache::flight`]).
const FLIGHTS_KEPT: usize = 64;

/// Names resolved by the system resolver (every address of each), with
/// when they were resolved; and the lookups in flight, one per name.
#[derive(Debug, Default)]
struct DnsCache {
    entries: HashMap<String, (Arc<[IpAddr]>, Instant)>,
    flights: HashMap<String, Flight>,
}

/// One system lookup of a name, shared by every request that needs the
/// name while it runs: a burst of connections to a name not cached yet
/// makes one `getaddrinfo`, not one each queued on the bounded blocking
/// threads. If the request running it goes away, a waiting one takes over
/// (tokio's `OnceCell`).
type Flight = Arc<tokio::sync::OnceCell<Result<Arc<[IpAddr]>, Failure>>>;

/// A failed lookup, as every request that shared it reports it.
#[derive(Clone, Debug)]
enum Failure {
    /// The system resolver failed: its error's kind and text.
    Lookup(std::io::ErrorKind, String),
    /// It answered with no address.
    NoAddress,
}

impl Failure {
    fn error(self, host: String) -> ResolveError {
        match self {
            Failure::Lookup(kind, text) => ResolveError::Lookup {
                host,
                source: std::io::Error::new(kind, text),
            },
            Failure::NoAddress => ResolveError::NoAddress { host },
        }
    }
}

impl DnsCache {
    fn get(&self, host: &str, now: Instant) -> Option<Arc<[IpAddr]>> {
        let (ips, at) = self.entries.get(host)?;
        (now.duration_since(*at) < DNS_CACHE_TTL).then(|| ips.clone())
    }

    fn put(&mut self, host: &str, ips: Arc<[IpAddr]>, now: Instant) {
        if self.entries.len() >= DNS_CACHE_SIZE {
            self.entries
                .retain(|_, (_, at)| now.duration_since(*at) < DNS_CACHE_TTL);
            if self.entries.len() >= DNS_CACHE_SIZE {
                self.entries.clear();
            }
        }
        self.entries.insert(host.to_owned(), (ips, now));
    }

    /// The lookup of `host` in flight, or a new one. A flight whose every
    /// request went away (cancelled before it ended) is held by this map
    /// alone: such flights are dropped once [`FLIGHTS_KEPT`] are kept, so a
    /// flood of unique names cannot grow the map beyond the requests that
    /// wait.
    fn flight(&mut self, host: &str) -> Flight {
        if let Some(flight) = self.flights.get(host) {
            return flight.clone();
        }
        if self.flights.len() >= FLIGHTS_KEPT {
            self.flights
                .retain(|_, flight| Arc::strong_count(flight) > 1);
        }
        let flight = Flight::default();
        self.flights.insert(host.to_owned(), flight.clone());
        flight
    }

    /// `flight` has ended: later lookups read the cache (or, after a
    /// failure, try again).
    fn land(&mut self, host: &str, flight: &Flight) {
        if self
            .flights
            .get(host)
            .is_some_and(|kept| Arc::ptr_eq(kept, flight))
        {
            self.flights.remove(host);
        }
    }
}

/// What the system resolver answers for a name (before deduplication).
type Answer = std::io::Result<Vec<IpAddr>>;

/// A system lookup under way.
type Asking = std::pin::Pin<Box<dyn Future<Output = Answer> + Send>>;

/// The system resolver: `getaddrinfo` on the runtime's blocking threads
/// (`tokio::net::lookup_host`); tests put their own in its place.
#[derive(Clone)]
struct System(Arc<dyn Fn(String) -> Asking + Send + Sync>);

impl Default for System {
    fn default() -> Self {
        System(Arc::new(|host: String| {
            Box::pin(async move {
                let addrs = tokio::net::lookup_host((host.as_str(), 0)).await?;
                Ok(addrs.map(|addr| addr.ip()).collect())
            })
        }))
    }
}

impl std::fmt::Debug for System {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("System")
    }
}

/// Resolves `host` + `port` to one socket address.
#[derive(Clone, Debug, Default)]
pub struct Resolver {
    hosts: HashMap<String, IpAddr>,
    cache: Arc<Mutex<DnsCache>>,
    pod: PodAnswers,
    system: System,
}

impl Resolver {
    /// A resolver with these hosts-file overrides, for a pod whose
    /// resolver uses `search`.
    pub fn new(hosts: HashMap<String, IpAddr>, search: SearchList) -> Self {
        Resolver {
            hosts,
            pod: PodAnswers::new(search),
            ..Resolver::default()
        }
    }

    /// The DNS answers the pod received, shared with the DNS listener
    /// (which writes them).
    pub fn pod_answers(&self) -> PodAnswers {
        self.pod.clone()
    }

    #[cfg(test)]
    fn cached(&self, host: &str) -> Option<Arc<[IpAddr]>> {
        self.cache.lock().ok()?.get(host, Instant::now())
    }

    /// Resolves without I/O when possible (IP literal or hosts file).
    pub fn resolve_static(&self, host: &str, port: u16) -> Option<SocketAddr> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Some(SocketAddr::new(ip, port));
        }
        self.hosts
            .get(&host.to_ascii_lowercase())
            .map(|ip| SocketAddr::new(*ip, port))
    }

    /// Resolves `host:port` to its first address, using the system resolver
    /// last (its answers are reused for [`DNS_CACHE_TTL`]).
    pub async fn resolve(
        &self,
        host: &str,
        port: u16,
        lookup: Lookup,
    ) -> Result<SocketAddr, ResolveError> {
        if let Some(addr) = self.resolve_static(host, port) {
            return Ok(addr);
        }
        if lookup == Lookup::Known {
            return match self.pod.get(&host.to_ascii_lowercase()).first() {
                Some(&ip) => Ok(SocketAddr::new(ip, port)),
                None => Err(ResolveError::NotAllowed {
                    host: host.to_owned(),
                }),
            };
        }
        let ips = self.lookup(host).await?;
        Ok(SocketAddr::new(ips[0], port))
    }

    /// Every address `host` resolves to (one for an IP literal or a
    /// hosts-file name): the sidecar's own lookup and the unexpired DNS
    /// answers the pod received for it; empty when neither knows it. This is
    /// what a name a client gives is checked against (see
    /// [`crate::destination`]).
    pub async fn addresses(&self, host: &str) -> Arc<[IpAddr]> {
        if let Some(addr) = self.resolve_static(host, 0) {
            return Arc::new([addr.ip()]);
        }
        let pod = self.pod.get(&host.to_ascii_lowercase());
        let own = self.lookup(host).await.unwrap_or_else(|_| Arc::new([]));
        if pod.iter().all(|ip| own.contains(ip)) {
            return own;
        }
        let mut all = own.to_vec();
        all.extend(pod.into_iter().filter(|ip| !own.contains(ip)));
        all.into()
    }

    /// [`Resolver::addresses`] for checking whether `host` reaches `dst`:
    /// when the pod's own DNS answers already hold `dst` (the usual case once
    /// the pod's DNS goes through the sidecar), they are the answer, with no
    /// lookup of the sidecar's own on the request's path.
    /// With [`Lookup::Known`], no lookup at all: the pod's answers alone.
    pub async fn addresses_reaching(
        &self,
        host: &str,
        dst: IpAddr,
        lookup: Lookup,
    ) -> Arc<[IpAddr]> {
        if self.resolve_static(host, 0).is_none() {
            let pod = self.pod.get(&host.to_ascii_lowercase());
            if pod.contains(&dst) || lookup == Lookup::Known {
                return pod.into();
            }
        }
        self.addresses(host).await
    }

    /// The system resolver's answers for `host`, cached; never empty.
    /// Concurrent lookups of one name share one (see [`Flight`]).
    async fn lookup(&self, host: &str) -> Result<Arc<[IpAddr]>, ResolveError> {
        let host = host.to_ascii_lowercase();
        let flight = {
            let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(ips) = cache.get(&host, Instant::now()) {
                return Ok(ips);
            }
            cache.flight(&host)
        };
        let result = flight.get_or_init(|| self.ask(&host)).await.clone();
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .land(&host, &flight);
        result.map_err(|f| f.error(host))
    }

    /// One system lookup of `host` (lowercase): its distinct addresses,
    /// cached when there are any.
    async fn ask(&self, host: &str) -> Result<Arc<[IpAddr]>, Failure> {
        let answer = (self.system.0)(host.to_owned())
            .await
            .map_err(|e| Failure::Lookup(e.kind(), e.to_string()))?;
        let mut ips: Vec<IpAddr> = Vec::new();
        for ip in answer {
            if !ips.contains(&ip) {
                ips.push(ip);
            }
        }
        if ips.is_empty() {
            return Err(Failure::NoAddress);
        }
        let ips: Arc<[IpAddr]> = ips.into();
        if let Ok(mut cache) = self.cache.lock() {
            cache.put(host, ips.clone(), Instant::now());
        }
        Ok(ips)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A resolver whose system lookups are counted and each wait for a
    /// permit of `gate`; the `n`th lookup (from 1) answers `answer(n)`.
    fn gated(
        gate: Arc<tokio::sync::Semaphore>,
        answer: fn(usize) -> Answer,
    ) -> (Resolver, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let resolver = Resolver {
            system: System(Arc::new(move |_host| {
                let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
                let gate = gate.clone();
                Box::pin(async move {
                    gate.acquire().await.unwrap().forget();
                    answer(n)
                })
            })),
            ..Resolver::default()
        };
        (resolver, calls)
    }

    fn ten(_: usize) -> Answer {
        Ok(vec![
            "10.0.0.1".parse().unwrap(),
            "10.0.0.1".parse().unwrap(),
        ])
    }

    /// Lets every spawned task run to where it waits.
    async fn settle() {
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn concurrent_lookups_of_a_name_share_one() {
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let (resolver, calls) = gated(gate.clone(), ten);
        let mut waiting = tokio::task::JoinSet::new();
        for i in 0..32 {
            let resolver = resolver.clone();
            // Any case: names are looked up lowercase.
            let name = if i % 2 == 0 {
                "pool.example"
            } else {
                "Pool.Example"
            };
            waiting.spawn(async move { resolver.addresses(name).await });
        }
        settle().await;
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "one lookup for 32 requests"
        );
        gate.add_permits(1);
        while let Some(answer) = waiting.join_next().await {
            assert_eq!(
                &answer.unwrap()[..],
                &["10.0.0.1".parse::<IpAddr>().unwrap()]
            );
        }
        // Then the cache answers, and nothing stays in flight.
        assert_eq!(
            resolver
                .resolve("pool.example", 443, Lookup::Allowed)
                .await
                .unwrap()
                .port(),
            443
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(resolver.cache.lock().unwrap().flights.is_empty());
    }

    #[tokio::test]
    async fn a_failed_lookup_is_shared_then_tried_again() {
        fn fail_first(n: usize) -> Answer {
            match n {
                1 => Err(std::io::Error::other("SERVFAIL")),
                2 => Ok(vec![]),
                _ => ten(n),
            }
        }
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let (resolver, calls) = gated(gate.clone(), fail_first);
        let (a, b) = (resolver.clone(), resolver.clone());
        let first =
            tokio::spawn(async move { a.resolve("pool.example", 80, Lookup::Allowed).await });
        let second =
            tokio::spawn(async move { b.resolve("pool.example", 80, Lookup::Allowed).await });
        settle().await;
        gate.add_permits(3);
        for failed in [first.await.unwrap(), second.await.unwrap()] {
            let e = failed.unwrap_err();
            assert!(e.to_string().contains("SERVFAIL"), "{e}");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // A failure is not kept: the next request looks the name up again.
        let e = resolver
            .resolve("pool.example", 80, Lookup::Allowed)
            .await
            .unwrap_err();
        assert!(matches!(e, ResolveError::NoAddress { .. }), "{e}");
        assert!(
            resolver
                .resolve("pool.example", 80, Lookup::Allowed)
                .await
                .is_ok()
        );
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_waiting_request_takes_over_from_one_that_went_away() {
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let (resolver, calls) = gated(gate.clone(), ten);
        let (a, b) = (resolver.clone(), resolver.clone());
        let first = tokio::spawn(async move { a.addresses("pool.example").await });
        settle().await;
        let second = tokio::spawn(async move { b.addresses("pool.example").await });
        settle().await;
        first.abort();
        settle().await;
        // The second request runs the lookup itself.
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        gate.add_permits(1);
        assert_eq!(second.await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn lookups_no_request_waits_for_are_not_kept() {
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let (resolver, _) = gated(gate, ten);
        for i in 0..(FLIGHTS_KEPT * 4) {
            let r = resolver.clone();
            let name = format!("n{i}.example");
            let lookup = tokio::spawn(async move { r.addresses(&name).await });
            settle().await;
            lookup.abort();
        }
        settle().await;
        let kept = resolver.cache.lock().unwrap().flights.len();
        assert!(kept <= FLIGHTS_KEPT, "{kept} flights kept");
    }

    #[test]
    fn dns_answers_expire_and_the_cache_is_bounded() {
        let mut cache = DnsCache::default();
        let t0 = Instant::now();
        let ips: Arc<[IpAddr]> = Arc::new(["10.1.2.3".parse().unwrap()]);
        cache.put("pypi.org", ips.clone(), t0);
        assert_eq!(
            cache.get("pypi.org", t0 + Duration::from_secs(9)),
            Some(ips.clone())
        );
        assert_eq!(cache.get("pypi.org", t0 + DNS_CACHE_TTL), None);
        for i in 0..(DNS_CACHE_SIZE + 10) {
            cache.put(&format!("h{i}"), ips.clone(), t0);
        }
        assert!(cache.entries.len() <= DNS_CACHE_SIZE);
    }

    #[tokio::test]
    async fn system_answers_are_cached() {
        let resolver = Resolver::default();
        let first = resolver
            .resolve("LocalHost", 80, Lookup::Allowed)
            .await
            .unwrap();
        assert!(first.ip().is_loopback());
        assert!(resolver.cached("localhost").unwrap().contains(&first.ip()));
        assert!(resolver.addresses("LOCALHOST").await.contains(&first.ip()));
        assert!(resolver.addresses("no-such-name.invalid").await.is_empty());
        assert_eq!(
            resolver
                .resolve("localhost", 81, Lookup::Allowed)
                .await
                .unwrap()
                .port(),
            81
        );
    }

    #[tokio::test]
    async fn addresses_add_what_the_pod_was_answered() {
        let resolver = Resolver::default();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(resolver.addresses("pod-only.invalid").await.is_empty());
        resolver
            .pod_answers()
            .insert("pod-only.invalid", &[(ip("10.66.0.2"), 60)]);
        assert_eq!(
            &resolver.addresses("Pod-Only.invalid").await[..],
            &[ip("10.66.0.2")]
        );
        resolver
            .pod_answers()
            .insert("localhost", &[(ip("10.66.0.3"), 60)]);
        let both = resolver.addresses("localhost").await;
        assert!(both.iter().any(|ip| ip.is_loopback()), "{both:?}");
        assert!(both.contains(&ip("10.66.0.3")), "{both:?}");
        // The pod's answer reaching the destination is enough: no lookup.
        let pod_only = resolver
            .addresses_reaching("localhost", ip("10.66.0.3"), Lookup::Allowed)
            .await;
        assert_eq!(&pod_only[..], &[ip("10.66.0.3")]);
        let other = resolver
            .addresses_reaching("localhost", ip("127.0.0.1"), Lookup::Allowed)
            .await;
        assert!(other.contains(&ip("127.0.0.1")), "{other:?}");
    }

    #[test]
    fn resolv_conf() {
        let cases = [
            (
                "nameserver 10.96.0.10\nsearch default.svc\n",
                Some("10.96.0.10"),
            ),
            (
                "# c\nsearch x\n  nameserver   fd00::a # comment\nnameserver 1.1.1.1\n",
                Some("fd00::a"),
            ),
            ("; nameserver 10.0.0.1\noptions ndots:5\n", None),
            ("nameserver nope\nnameserver 10.0.0.2\n", Some("10.0.0.2")),
            ("", None),
        ];
        for (text, want) in cases {
            let want = want.map(|s| s.parse::<IpAddr>().unwrap());
            assert_eq!(parse_resolv_conf(text), want, "{text:?}");
        }
    }

    #[test]
    fn search_list() {
        const POD: &str = "nameserver 10.96.0.10\nsearch jupyter.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n";
        // (resolv.conf, search domains, ndots)
        let cases: [(&str, &[&str], usize); 7] = [
            (
                POD,
                &[
                    "jupyter.svc.cluster.local",
                    "svc.cluster.local",
                    "cluster.local",
                ],
                5,
            ),
            ("nameserver 10.0.0.1\n", &[], 1),
            // The last of `search` and `domain` wins; a `domain` is a list
            // of one; trailing dots and case go.
            (
                "search a.test b.test\ndomain Corp.Example.\n",
                &["corp.example"],
                1,
            ),
            (
                "domain x.test\nsearch A.test. b.test # c\n",
                &["a.test", "b.test"],
                1,
            ),
            // ndots is capped at 15; a bad value keeps the last good one.
            ("options ndots:2 rotate\noptions ndots:99\n", &[], 15),
            ("options ndots:3\noptions ndots:x\n", &[], 3),
            ("; search commented.test\n#options ndots:4\n", &[], 1),
        ];
        for (text, domains, ndots) in cases {
            let list = SearchList::parse(text);
            assert_eq!(list.domains, domains, "{text:?}");
            assert_eq!(list.ndots, ndots, "{text:?}");
        }
    }

    #[test]
    fn names_asked_before_a_name() {
        let pod = SearchList {
            domains: vec!["ns.svc.cluster.local".into(), "svc.cluster.local".into()],
            ndots: 5,
        };
        let long = format!("{}.x", "a".repeat(240));
        // (name, the names a resolver asks first)
        let cases: [(&str, &[&str]); 5] = [
            (
                "db.shop",
                &["db.shop.ns.svc.cluster.local", "db.shop.svc.cluster.local"],
            ),
            (
                "pypi.org",
                &[
                    "pypi.org.ns.svc.cluster.local",
                    "pypi.org.svc.cluster.local",
                ],
            ),
            // Five dots: asked as it is first.
            ("a.b.c.d.e.f", &[]),
            (".", &[]),
            // Too long with a domain appended: a resolver cannot ask it.
            (&long, &[]),
        ];
        for (name, want) in cases {
            let asked: Vec<String> = pod.asked_before(name).collect();
            assert_eq!(asked, want, "{name}");
        }
        // ndots:1 (no Kubernetes): a dotted name is asked as it is.
        let plain = SearchList {
            domains: vec!["corp.example".into()],
            ndots: 1,
        };
        assert_eq!(plain.asked_before("db.shop").count(), 0);
        // And back: what a search name was asked for.
        assert_eq!(
            pod.searched("pypi.org.svc.cluster.local")
                .collect::<Vec<_>>(),
            ["pypi.org"]
        );
        assert_eq!(
            pod.searched("pypi.org.ns.svc.cluster.local")
                .collect::<Vec<_>>(),
            ["pypi.org", "pypi.org.ns"]
        );
        assert_eq!(pod.searched("svc.cluster.local").count(), 0);
        assert_eq!(pod.searched("xsvc.cluster.local").count(), 0);
        assert_eq!(
            plain.asked_before("db").collect::<Vec<_>>(),
            ["db.corp.example"]
        );
    }

    #[test]
    fn hosts_file() {
        let text =
            "# comment\n\napi 10.0.0.1\n10.0.0.2 db db.local # trailing\n::1 six\nAPI2 10.0.0.3\n";
        let hosts = parse_hosts(text).unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(hosts["api"], ip("10.0.0.1"));
        assert_eq!(hosts["db"], ip("10.0.0.2"));
        assert_eq!(hosts["db.local"], ip("10.0.0.2"));
        assert_eq!(hosts["six"], ip("::1"));
        assert_eq!(hosts["api2"], ip("10.0.0.3"));
        assert_eq!(hosts.len(), 5);
    }

    #[test]
    fn bad_hosts_lines() {
        let cases = [
            ("api 10.0.0.1\nlonely\n", 2),
            ("name other\n", 1),
            ("# x\n\nname other more\n", 3),
            ("10.0.0.1 10.0.0.2\n", 1),
        ];
        for (text, want_line) in cases {
            match parse_hosts(text) {
                Err(ResolveError::BadHostsLine { line, .. }) => {
                    assert_eq!(line, want_line, "{text:?}")
                }
                other => panic!("{text:?}: {other:?}"),
            }
        }
        let msg = parse_hosts("oops\n").unwrap_err().to_string();
        assert!(msg.contains("line 1"), "{msg}");
    }

    #[tokio::test]
    async fn resolves_statically_first() {
        let r = Resolver::new(parse_hosts("api 10.0.0.1").unwrap(), SearchList::default());
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(
            r.resolve("API", 80, Lookup::Allowed).await.unwrap(),
            addr("10.0.0.1:80")
        );
        assert_eq!(
            r.resolve("127.0.0.1", 81, Lookup::Allowed).await.unwrap(),
            addr("127.0.0.1:81")
        );
        assert_eq!(
            r.resolve("[::1]", 82, Lookup::Allowed).await.unwrap(),
            addr("[::1]:82")
        );
    }

    /// A name the policy does not let the pod look up is never sent to the
    /// system resolver: only the pod's own answers and what needs no query
    /// (IP literals) are used, and a name neither knows does not resolve.
    #[tokio::test]
    async fn a_name_not_allowed_is_never_looked_up() {
        let gate = Arc::new(tokio::sync::Semaphore::new(100));
        let (resolver, calls) = gated(gate, ten);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let exfil = "6578666c.attacker.example";
        let e = (resolver.resolve(exfil, 443, Lookup::Known).await).unwrap_err();
        assert!(matches!(e, ResolveError::NotAllowed { .. }), "{e}");
        let dst = ip("10.0.0.1");
        assert!((resolver.addresses_reaching(exfil, dst, Lookup::Known).await).is_empty());
        assert_eq!(
            resolver
                .resolve("10.0.0.9", 80, Lookup::Known)
                .await
                .unwrap(),
            "10.0.0.9:80".parse().unwrap()
        );
        resolver
            .pod_answers()
            .insert("pypi.org", &[(ip("10.0.0.7"), 60)]);
        assert_eq!(
            resolver
                .resolve("PyPI.org", 443, Lookup::Known)
                .await
                .unwrap(),
            "10.0.0.7:443".parse().unwrap()
        );
        assert_eq!(
            &resolver
                .addresses_reaching("pypi.org", dst, Lookup::Known)
                .await[..],
            &[ip("10.0.0.7")],
            "the pod's answers, not a lookup, even when they miss the destination"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 0, "no system lookup");
        resolver.resolve(exfil, 443, Lookup::Allowed).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1, "looked up when allowed");
    }
}
