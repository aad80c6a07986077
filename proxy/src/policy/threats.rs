//! The policy's threat list (`denied_names`): the names and networks the
//! controller lists (mining pools), compiled into a matcher with the rules
//! both ends share ([`vigil_proto::threat`]). Kept in the policy cache as the
//! entries themselves, compiled again on load.
//!
//! Tier 2: pure.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use vigil_proto::threat::{Matcher, PatternError, parse_pattern};

/// A compiled threat list. Cheap to clone (shared).
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(try_from = "Vec<String>", into = "Vec<String>")]
pub struct DeniedNames {
    entries: Arc<[String]>,
    matcher: Arc<Matcher<()>>,
}

impl DeniedNames {
    /// Compiles `entries` (`domain`, `*.domain`, IP or CIDR); the first bad
    /// entry is the error.
    pub fn compile<I, S>(entries: I) -> Result<Self, (String, PatternError)>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut matcher = Matcher::new();
        let mut kept = Vec::new();
        for entry in entries {
            let entry = entry.into();
            match parse_pattern(&entry) {
                Ok(pattern) => {
                    matcher.insert(pattern, ());
                    kept.push(entry);
                }
                Err(e) => return Err((entry, e)),
            }
        }
        Ok(DeniedNames {
            entries: kept.into(),
            matcher: Arc::new(matcher),
        })
    }

    /// The entry listing a name a client gave (`host`, `host:port`, an IP
    /// literal; any case, a trailing dot, an IDN spelling).
    pub fn listing(&self, name: &str) -> Option<String> {
        self.matcher.lookup(name).map(|m| m.entry)
    }

    /// The entry listing the address `ip`.
    pub fn listing_ip(&self, ip: IpAddr) -> Option<String> {
        self.matcher.lookup_ip(ip).map(|m| m.entry)
    }

    /// Whether `name` is listed.
    pub fn lists(&self, name: &str) -> bool {
        !self.is_empty() && self.matcher.lookup(name).is_some()
    }

    /// Whether the address `ip` is listed.
    pub fn lists_ip(&self, ip: IpAddr) -> bool {
        !self.is_empty() && self.matcher.lookup_ip(ip).is_some()
    }

    /// How many entries it holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl fmt::Debug for DeniedNames {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.entries.iter()).finish()
    }
}

impl PartialEq for DeniedNames {
    fn eq(&self, other: &Self) -> bool {
        self.entries == other.entries
    }
}

impl Eq for DeniedNames {}

impl TryFrom<Vec<String>> for DeniedNames {
    type Error = String;

    fn try_from(entries: Vec<String>) -> Result<Self, Self::Error> {
        Self::compile(entries).map_err(|(entry, e)| format!("denied name {entry:?}: {e}"))
    }
}

impl From<DeniedNames> for Vec<String> {
    fn from(names: DeniedNames) -> Self {
        names.entries.to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table the controller's feeds are held to as well.
    #[test]
    fn the_shared_cases() {
        for (entries, name, want) in vigil_proto::threat::SHARED_CASES {
            let names = DeniedNames::compile(entries.iter().copied()).unwrap();
            assert_eq!(
                names.listing(name).as_deref(),
                *want,
                "{entries:?} {name:?}"
            );
            assert_eq!(names.lists(name), want.is_some(), "{entries:?} {name:?}");
        }
    }

    #[test]
    fn addresses_bad_entries_and_serde() {
        let names = DeniedNames::compile(["pool.example", "203.0.113.0/24"]).unwrap();
        assert!(names.lists_ip("203.0.113.9".parse().unwrap()));
        assert!(names.lists_ip("::ffff:203.0.113.9".parse().unwrap()));
        assert!(!names.lists_ip("198.51.100.1".parse().unwrap()));
        assert_eq!(names.len(), 2);
        let (entry, _) = DeniedNames::compile(["ok.example", "*.com"]).unwrap_err();
        assert_eq!(entry, "*.com");
        let json = serde_json::to_string(&names).unwrap();
        assert_eq!(json, r#"["pool.example","203.0.113.0/24"]"#);
        let back: DeniedNames = serde_json::from_str(&json).unwrap();
        assert_eq!(back, names);
        assert!(back.lists("POOL.example.:3333"));
        let err = serde_json::from_str::<DeniedNames>(r#"["a..b"]"#).unwrap_err();
        assert!(err.to_string().contains("a..b"), "{err}");
        assert!(!DeniedNames::default().lists("pool.example"));
    }

    fn listed(enforce: bool, enforce_threats: bool, quarantined: bool) -> super::super::Policy {
        super::super::Policy {
            version: 4,
            enforce,
            enforce_threats,
            quarantined,
            allowed_authorities: ["xmr.pool.test:443".to_owned(), "pypi.test:443".to_owned()]
                .into(),
            allowed_addrs: ["203.0.113.9:3333".parse().unwrap()].into(),
            allowed_sources: ["internet".to_owned()].into(),
            denied_names: DeniedNames::compile(["*.pool.test", "203.0.113.0/24"]).unwrap(),
            ..super::super::Policy::allow_all()
        }
    }

    #[test]
    fn threats_and_quarantine_override_the_baseline() {
        use super::super::*;
        let threat = Decision::Deny {
            reason: THREAT_REASON,
        };
        let quarantine = Decision::Deny {
            reason: QUARANTINE_REASON,
        };
        let at = |s: &str| Some(s.parse::<SocketAddr>().unwrap());
        // (policy, authority, resolved, decision)
        let cases = [
            // Learned, but listed: refused while threats are enforced.
            (listed(true, true, false), "xmr.pool.test:443", None, threat),
            (
                listed(true, true, false),
                "XMR.POOL.test.:443",
                None,
                threat,
            ),
            (
                listed(true, true, false),
                "pypi.test:443",
                None,
                Decision::Allow,
            ),
            // A learned name that resolved to a listed address.
            (
                listed(true, true, false),
                "pypi.test:443",
                at("203.0.113.7:443"),
                threat,
            ),
            // By address, learned address included.
            (
                listed(true, true, false),
                "203.0.113.9:3333",
                at("203.0.113.9:3333"),
                threat,
            ),
            // Threats not enforced (alert-only, learning): the baseline decides.
            (
                listed(true, false, false),
                "xmr.pool.test:443",
                None,
                Decision::Allow,
            ),
            (
                listed(false, false, false),
                "xmr.pool.test:3333",
                None,
                Decision::Allow,
            ),
            // Threats enforced without enforcement of the baseline.
            (
                listed(false, true, false),
                "xmr.pool.test:3333",
                None,
                threat,
            ),
            // Quarantine: everything, in every mode.
            (
                listed(false, false, true),
                "pypi.test:443",
                None,
                quarantine,
            ),
            (
                listed(true, true, true),
                "xmr.pool.test:443",
                None,
                quarantine,
            ),
        ];
        for (policy, authority, resolved, want) in cases {
            let got = evaluate_outbound(&policy, authority, resolved);
            assert_eq!(got, want, "{authority} {resolved:?}");
        }
        assert_eq!(
            evaluate_inbound(&listed(true, true, false), None),
            Decision::Allow
        );
        assert_eq!(
            evaluate_inbound(&listed(false, false, true), None),
            quarantine
        );
        assert_eq!(
            evaluate_inbound(&listed(false, false, true), Some("default/web")),
            quarantine
        );
        // DNS
        let dns = [
            (listed(true, true, false), "xmr.pool.test", threat),
            (listed(true, true, false), "pypi.test", Decision::Allow),
            (listed(false, true, false), "a.pool.test", threat),
            (listed(false, false, false), "a.pool.test", Decision::Allow),
            (listed(false, false, true), "pypi.test", quarantine),
            (
                listed(true, false, false),
                "never.test",
                Decision::Deny { reason: DNS_REASON },
            ),
        ];
        for (policy, name, want) in dns {
            assert_eq!(evaluate_dns(&policy, name), want, "{name}");
        }
    }

    #[test]
    fn health_checks_are_exact_paths_without_upgrades() {
        use super::super::is_health_check;
        use http::Method;
        let paths = ["/healthz".to_owned(), "/api/status".to_owned()];
        // (method, path, upgrade, body, is a health check)
        let cases = [
            (Method::GET, "/healthz", false, false, true),
            (Method::HEAD, "/healthz", false, false, true),
            (Method::GET, "/api/status", false, false, true),
            (Method::GET, "/healthz", true, false, false),
            (Method::GET, "/healthz/", false, false, false),
            (Method::GET, "/healthz/../api/contents", false, false, false),
            (Method::GET, "/HEALTHZ", false, false, false),
            (Method::GET, "/api", false, false, false),
            (Method::GET, "/", false, false, false),
            // A channel into the notebook, not a probe.
            (Method::POST, "/healthz", false, false, false),
            (Method::PUT, "/healthz", false, true, false),
            (Method::GET, "/healthz", false, true, false),
            (Method::OPTIONS, "/healthz", false, false, false),
        ];
        for (method, path, upgrade, body, want) in cases {
            assert_eq!(
                is_health_check(&paths, &method, path, upgrade, body),
                want,
                "{method} {path} upgrade {upgrade} body {body}"
            );
        }
        assert!(!is_health_check(
            &[],
            &Method::GET,
            "/healthz",
            false,
            false
        ));
    }

    #[test]
    fn the_protobuf_policy_carries_threats_and_quarantine() {
        use super::super::*;
        let p = Policy::try_from(v1::Policy {
            version: 5,
            denied_names: vec!["*.pool.test".into(), "198.51.100.0/24".into()],
            enforce_threats: true,
            quarantined: true,
            ..Default::default()
        })
        .unwrap();
        assert!(p.enforce_threats && p.quarantined);
        assert!(p.denied_names.lists("a.pool.test:3333"));
        let bad = v1::Policy {
            version: 6,
            denied_names: vec!["ok.test".into(), "*.com".into()],
            ..Default::default()
        };
        let err = Policy::try_from(bad).unwrap_err();
        assert!(
            matches!(&err, PolicyError::BadDeniedName { version: 6, value, .. } if value == "*.com"),
            "{err}"
        );
        // Kept in the policy cache, and read back compiled.
        let json = serde_json::to_string(&p).unwrap();
        let back: Policy = serde_json::from_str(&json).unwrap();
        assert_eq!(back, p);
        assert!(back.quarantined && back.denied_names.lists_ip("198.51.100.9".parse().unwrap()));
        // A cache written before these fields existed still loads.
        let old: Policy = serde_json::from_str(
            r#"{"version":3,"enforce":true,"allowed_authorities":[],
                "allowed_addrs":[],"allowed_sources":[],"mode":"enforcement"}"#,
        )
        .unwrap();
        assert!(!old.quarantined && !old.enforce_threats && old.denied_names.is_empty());
    }
}
