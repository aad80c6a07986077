//! Name resolution for outbound destinations: IP literals, then the
//! `--hosts-file` overrides, then the system resolver.
//!
//! The hosts-file parser is pure; `Resolver::resolve` does the I/O.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

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

/// Resolves `host` + `port` to one socket address.
#[derive(Clone, Debug, Default)]
pub struct Resolver {
    hosts: HashMap<String, IpAddr>,
}

impl Resolver {
    /// A resolver with these hosts-file overrides.
    pub fn new(hosts: HashMap<String, IpAddr>) -> Self {
        Resolver { hosts }
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

    /// Resolves `host:port`, using the system resolver last.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<SocketAddr, ResolveError> {
        if let Some(addr) = self.resolve_static(host, port) {
            return Ok(addr);
        }
        let mut addrs = tokio::net::lookup_host((host, port))
            .await
            .map_err(|source| ResolveError::Lookup {
                host: host.to_string(),
                source,
            })?;
        addrs.next().ok_or_else(|| ResolveError::NoAddress {
            host: host.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
