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
use std::sync::{Arc, Mutex};
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

/// How long a name resolved by the system resolver is reused. The system
/// resolver does not report record TTLs; ten seconds keeps a sidecar from
/// calling it on every request while following DNS changes promptly.
pub const DNS_CACHE_TTL: Duration = Duration::from_secs(10);
/// Most names cached; when full, expired entries are dropped, then all.
pub const DNS_CACHE_SIZE: usize = 4096;

/// Names resolved by the system resolver (every address of each), with
/// when they were resolved.
#[derive(Debug, Default)]
struct DnsCache {
    entries: HashMap<String, (Arc<[IpAddr]>, Instant)>,
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
}

/// Resolves `host` + `port` to one socket address.
#[derive(Clone, Debug, Default)]
pub struct Resolver {
    hosts: HashMap<String, IpAddr>,
    cache: Arc<Mutex<DnsCache>>,
    pod: PodAnswers,
}

impl Resolver {
    /// A resolver with these hosts-file overrides.
    pub fn new(hosts: HashMap<String, IpAddr>) -> Self {
        Resolver {
            hosts,
            cache: Arc::default(),
            pod: PodAnswers::default(),
        }
    }

    /// The DNS answers the pod received, shared with the DNS listener
    /// (which writes them).
    pub fn pod_answers(&self) -> PodAnswers {
        self.pod.clone()
    }

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
    pub async fn resolve(&self, host: &str, port: u16) -> Result<SocketAddr, ResolveError> {
        if let Some(addr) = self.resolve_static(host, port) {
            return Ok(addr);
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
    pub async fn addresses_reaching(&self, host: &str, dst: IpAddr) -> Arc<[IpAddr]> {
        if self.resolve_static(host, 0).is_none() {
            let pod = self.pod.get(&host.to_ascii_lowercase());
            if pod.contains(&dst) {
                return pod.into();
            }
        }
        self.addresses(host).await
    }

    /// The system resolver's answers for `host`, cached; never empty.
    async fn lookup(&self, host: &str) -> Result<Arc<[IpAddr]>, ResolveError> {
        let host = host.to_ascii_lowercase();
        if let Some(ips) = self.cached(&host) {
            return Ok(ips);
        }
        let addrs = tokio::net::lookup_host((host.as_str(), 0))
            .await
            .map_err(|source| ResolveError::Lookup {
                host: host.clone(),
                source,
            })?;
        let mut ips: Vec<IpAddr> = Vec::new();
        for addr in addrs {
            if !ips.contains(&addr.ip()) {
                ips.push(addr.ip());
            }
        }
        if ips.is_empty() {
            return Err(ResolveError::NoAddress { host });
        }
        let ips: Arc<[IpAddr]> = ips.into();
        if let Ok(mut cache) = self.cache.lock() {
            cache.put(&host, ips.clone(), Instant::now());
        }
        Ok(ips)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let first = resolver.resolve("LocalHost", 80).await.unwrap();
        assert!(first.ip().is_loopback());
        assert!(resolver.cached("localhost").unwrap().contains(&first.ip()));
        assert!(resolver.addresses("LOCALHOST").await.contains(&first.ip()));
        assert!(resolver.addresses("no-such-name.invalid").await.is_empty());
        assert_eq!(resolver.resolve("localhost", 81).await.unwrap().port(), 81);
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
            .addresses_reaching("localhost", ip("10.66.0.3"))
            .await;
        assert_eq!(&pod_only[..], &[ip("10.66.0.3")]);
        let other = resolver
            .addresses_reaching("localhost", ip("127.0.0.1"))
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
        let r = Resolver::new(parse_hosts("api 10.0.0.1").unwrap());
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(r.resolve("API", 80).await.unwrap(), addr("10.0.0.1:80"));
        assert_eq!(
            r.resolve("127.0.0.1", 81).await.unwrap(),
            addr("127.0.0.1:81")
        );
        assert_eq!(r.resolve("[::1]", 82).await.unwrap(), addr("[::1]:82"));
    }
}
