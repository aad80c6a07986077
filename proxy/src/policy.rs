//! The policy a proxy enforces, and the pure decisions taken with it.
//!
//! Tier 2: depends only on the proto crate (for the `TryFrom` conversion at
//! the edge). No I/O.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use vigil_proto::v1;

mod threats;
pub use threats::DeniedNames;

/// The source name policies use for callers without a Vigil identity.
pub const INTERNET: &str = "internet";

/// Why traffic to (or a DNS query for) a threat-listed destination is
/// refused.
pub const THREAT_REASON: &str = "threat-listed destination";
/// Why everything a quarantined workload sends or is sent is refused.
pub const QUARANTINE_REASON: &str = "workload quarantined";
/// Why a destination outside the baseline is refused.
pub const BASELINE_REASON: &str = "destination not in baseline";
/// Why a DNS query for a name outside the baseline is refused.
pub const DNS_REASON: &str = "name not in baseline";

/// A policy received from the controller, in domain form.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Increases with every change the controller makes.
    pub version: u64,
    /// When false everything is forwarded (and still observed).
    pub enforce: bool,
    /// Outbound destinations allowed by name, lower-case `host:port`.
    pub allowed_authorities: HashSet<String>,
    /// Outbound destinations allowed by resolved address.
    pub allowed_addrs: HashSet<SocketAddr>,
    /// Inbound callers allowed: `ns/name` or `internet`.
    pub allowed_sources: HashSet<String>,
    /// Human-readable mode, e.g. `learning` or `enforcement`.
    pub mode: String,
    /// The IPs each workload (`ns/name`) the baseline lets call this one
    /// calls from: a `vigil-source` header naming one is believed only from
    /// these.
    #[serde(default)]
    pub source_ips: HashMap<String, HashSet<IpAddr>>,
    /// Threat-listed destinations (mining pools): `domain`, `*.domain`,
    /// IPs and CIDRs.
    #[serde(default)]
    pub denied_names: DeniedNames,
    /// Whether `denied_names` are refused (else only reported), whatever
    /// the allowed lists say.
    #[serde(default)]
    pub enforce_threats: bool,
    /// Quarantine: all traffic is refused but health checks, in every mode.
    #[serde(default)]
    pub quarantined: bool,
}

impl Policy {
    /// The policy used before the controller has sent one: allow everything.
    pub fn allow_all() -> Self {
        Policy {
            version: 0,
            enforce: false,
            allowed_authorities: HashSet::new(),
            allowed_addrs: HashSet::new(),
            allowed_sources: HashSet::new(),
            mode: "unknown".to_string(),
            source_ips: HashMap::new(),
            denied_names: DeniedNames::default(),
            enforce_threats: false,
            quarantined: false,
        }
    }

    /// The policy of `--default-policy deny` when the controller has sent
    /// none in time: block everything (fail closed).
    pub fn deny_all() -> Self {
        Policy {
            enforce: true,
            mode: "no policy from the controller".to_string(),
            ..Self::allow_all()
        }
    }

    /// Whether this came from the controller (version 0 never does).
    pub fn is_from_controller(&self) -> bool {
        self.version > 0
    }
}

/// What a proxy does before its first policy arrives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DefaultPolicy {
    /// Forward (fail open): the workload works while the controller is away.
    Allow,
    /// Block (fail closed): nothing passes until a policy arrives.
    Deny,
}

impl DefaultPolicy {
    /// The policy applied.
    pub fn policy(self) -> Policy {
        match self {
            Self::Allow => Policy::allow_all(),
            Self::Deny => Policy::deny_all(),
        }
    }
}

/// The shared, swappable current policy.
pub type PolicyRx = tokio::sync::watch::Receiver<Arc<Policy>>;

/// Whether `now` is another policy than `then`, the one something was last
/// judged by (none: never judged), so that it must be judged again. The
/// same `Arc`, or one with equal content, is not. Version numbers do not
/// tell: they are the controller's count, which starts again when it
/// restarts, so one number can name two policies.
pub fn differs(then: Option<&Arc<Policy>>, now: &Arc<Policy>) -> bool {
    then.is_none_or(|then| !Arc::ptr_eq(then, now) && **then != **now)
}

/// The policy to judge by now: the controller's latest; before the first
/// one arrives, a wait for it until `deadline` (`--policy-wait-ms` after
/// start), then `default` (`--default-policy`). The one place requests,
/// streams and DNS queries get their policy from.
pub async fn current(
    rx: &PolicyRx,
    deadline: tokio::time::Instant,
    default: &Arc<Policy>,
) -> Arc<Policy> {
    let current = rx.borrow().clone();
    if current.is_from_controller() {
        return current;
    }
    let mut rx = rx.clone();
    let first = rx.wait_for(|p| p.is_from_controller());
    match tokio::time::timeout_at(deadline, first).await {
        Ok(Ok(policy)) => policy.clone(),
        _ => default.clone(),
    }
}

/// Why a protobuf policy was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    /// An `allowed_addrs` entry is not `ip:port`.
    #[error("policy version {version}: allowed address {value:?} is not ip:port")]
    BadAddr {
        /// Policy version.
        version: u64,
        /// The offending entry.
        value: String,
    },
    /// A `denied_names` entry is not a domain, `*.domain` or CIDR.
    #[error("policy version {version}: denied name {value:?}: {source}")]
    BadDeniedName {
        /// Policy version.
        version: u64,
        /// The offending entry.
        value: String,
        /// What is wrong with it.
        source: vigil_proto::threat::PatternError,
    },
    /// A `source_ips` entry is not an IP address.
    #[error("policy version {version}: source IP {value:?} of {source_name} is not an IP address")]
    BadIp {
        /// Policy version.
        version: u64,
        /// The workload it belongs to.
        source_name: String,
        /// The offending entry.
        value: String,
    },
}

impl TryFrom<v1::Policy> for Policy {
    type Error = PolicyError;

    fn try_from(p: v1::Policy) -> Result<Self, Self::Error> {
        let allowed_addrs = p
            .allowed_addrs
            .iter()
            .map(|a| {
                a.parse::<SocketAddr>().map_err(|_| PolicyError::BadAddr {
                    version: p.version,
                    value: a.clone(),
                })
            })
            .collect::<Result<_, _>>()?;
        let source_ips = p
            .source_ips
            .into_iter()
            .map(|(name, ips)| {
                let ips = ips
                    .ips
                    .iter()
                    .map(|ip| {
                        ip.parse::<IpAddr>()
                            .map(|ip| ip.to_canonical())
                            .map_err(|_| PolicyError::BadIp {
                                version: p.version,
                                source_name: name.clone(),
                                value: ip.clone(),
                            })
                    })
                    .collect::<Result<_, _>>()?;
                Ok((name, ips))
            })
            .collect::<Result<_, _>>()?;
        let denied_names = DeniedNames::compile(p.denied_names).map_err(|(value, source)| {
            PolicyError::BadDeniedName {
                version: p.version,
                value,
                source,
            }
        })?;
        Ok(Policy {
            source_ips,
            denied_names,
            enforce_threats: p.enforce_threats,
            quarantined: p.quarantined,
            version: p.version,
            enforce: p.enforce,
            allowed_authorities: p
                .allowed_authorities
                .iter()
                .map(|a| a.to_ascii_lowercase())
                .collect(),
            allowed_addrs,
            allowed_sources: p.allowed_sources.into_iter().collect(),
            mode: p.mode,
        })
    }
}

/// The outcome of evaluating a policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Forward the request.
    Allow,
    /// Refuse it, for this reason.
    Deny {
        /// Short human-readable reason.
        reason: &'static str,
    },
}

impl Decision {
    /// True for [`Decision::Deny`].
    pub fn is_deny(&self) -> bool {
        matches!(self, Decision::Deny { .. })
    }
}

/// Whether traffic that names `names` (the authority judged, and any other
/// name the client gave for the same destination) or goes to `ip` is
/// refused as threat-listed: when the policy enforces its threat list and
/// one of them is on it, whatever the allowed lists say.
pub fn threat_denied(policy: &Policy, names: &[&str], ip: Option<IpAddr>) -> bool {
    policy.enforce_threats
        && (names.iter().any(|name| policy.denied_names.lists(name))
            || ip.is_some_and(|ip| policy.denied_names.lists_ip(ip)))
}

/// Decides whether the local workload may call `authority` (`host:port`),
/// which resolved to `resolved` when known: never while quarantined, never
/// a threat-listed one while threats are enforced, else by the baseline.
pub fn evaluate_outbound(
    policy: &Policy,
    authority: &str,
    resolved: Option<SocketAddr>,
) -> Decision {
    if policy.quarantined {
        return Decision::Deny {
            reason: QUARANTINE_REASON,
        };
    }
    if threat_denied(policy, &[authority], resolved.map(|a| a.ip())) {
        return Decision::Deny {
            reason: THREAT_REASON,
        };
    }
    if !policy.enforce
        || policy
            .allowed_authorities
            .contains(&authority.to_ascii_lowercase())
        || resolved.is_some_and(|addr| policy.allowed_addrs.contains(&addr))
    {
        Decision::Allow
    } else {
        Decision::Deny {
            reason: BASELINE_REASON,
        }
    }
}

/// The host of an authority: `pypi.org` of `pypi.org:443`, the authority
/// itself when it has no port (a name learned from DNS).
fn authority_host(authority: &str) -> &str {
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => host,
        _ => authority,
    }
}

/// The decision on the pod's DNS query for `name`: refused while
/// quarantined, refused for a threat-listed name while threats are enforced
/// (even one the baseline holds), else as [`dns_allowed`] says.
pub fn evaluate_dns(policy: &Policy, name: &str) -> Decision {
    if policy.quarantined {
        Decision::Deny {
            reason: QUARANTINE_REASON,
        }
    } else if threat_denied(policy, &[name], None) {
        Decision::Deny {
            reason: THREAT_REASON,
        }
    } else if !dns_allowed(policy, name) {
        Decision::Deny { reason: DNS_REASON }
    } else {
        Decision::Allow
    }
}

/// Whether the sidecar may ask the system resolver for `name`, a name a
/// client gave (`Host`, `:authority`, a TLS name, an explicit-proxy
/// request): only when the pod's own query for it would be answered
/// ([`evaluate_dns`]), so that no name the pod may not look up leaves the
/// pod in the sidecar's queries (see `resolve::Lookup`).
pub fn may_look_up(policy: &Policy, name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !evaluate_dns(policy, name).is_deny()
}

/// Whether the baseline lets the pod look up `name` (lower case, no
/// trailing dot; quarantine and threats aside, see [`evaluate_dns`]): yes
/// when not enforcing, or when the name or a parent domain of it with at
/// least two labels (`pypi.org` for `files.pypi.org`, never `org`) is an
/// allowed authority itself (a name learned from DNS has no port) or the
/// host of one. Anything else is refused, which also stops data smuggled
/// out in made-up names.
pub fn dns_allowed(policy: &Policy, name: &str) -> bool {
    if !policy.enforce {
        return true;
    }
    let name = name.to_ascii_lowercase();
    let mut candidates = vec![name.as_str()];
    let mut rest = name.as_str();
    while let Some((_, parent)) = rest.split_once('.') {
        if parent.contains('.') {
            candidates.push(parent);
        }
        rest = parent;
    }
    policy
        .allowed_authorities
        .iter()
        .map(|a| authority_host(a))
        .any(|host| candidates.contains(&host))
}

/// Who an inbound caller is, once its `vigil-source` claim is checked
/// against the IP it called from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// No claim: the internet.
    Internet,
    /// A registered workload, calling from one of its IPs.
    Verified(String),
    /// A name the policy has no IPs for (a caller outside this workload's
    /// baseline, or one without a registered sidecar): kept as claimed and
    /// reported with the caller's IP, which the controller checks. Only a
    /// policy that allows it lets it in, and a policy lists the IPs of
    /// every registered caller it allows.
    Unverified(String),
    /// A registered workload's name, from an IP that is not its: someone
    /// else (a client through an ingress, say) claiming to be it. Treated
    /// as the internet.
    Spoofed(String),
}

impl Caller {
    /// The identity used for policy and telemetry: `None` is the internet.
    pub fn identity(&self) -> Option<&str> {
        match self {
            Caller::Verified(name) | Caller::Unverified(name) => Some(name),
            Caller::Internet | Caller::Spoofed(_) => None,
        }
    }
}

/// Checks an inbound caller's claimed identity against the IP (`peer`) it
/// called from.
pub fn identify_caller(policy: &Policy, claimed: Option<&str>, peer: IpAddr) -> Caller {
    let Some(name) = claimed else {
        return Caller::Internet;
    };
    match policy.source_ips.get(name) {
        None => Caller::Unverified(name.to_owned()),
        Some(ips) if ips.contains(&peer.to_canonical()) => Caller::Verified(name.to_owned()),
        Some(_) => Caller::Spoofed(name.to_owned()),
    }
}

/// Decides whether `source` (`ns/name`, `None` for the internet) may call
/// the local workload: never while it is quarantined (health checks aside:
/// see [`is_health_check`]), else by the baseline.
pub fn evaluate_inbound(policy: &Policy, source: Option<&str>) -> Decision {
    if policy.quarantined {
        return Decision::Deny {
            reason: QUARANTINE_REASON,
        };
    }
    if !policy.enforce || policy.allowed_sources.contains(source.unwrap_or(INTERNET)) {
        Decision::Allow
    } else {
        Decision::Deny {
            reason: "source not in baseline",
        }
    }
}

/// Whether an inbound HTTP request is a health check that a quarantine
/// still lets through, from any caller: a `GET` or `HEAD` (what the
/// kubelet's probes send) without a body, whose path (without the query)
/// is exactly one of `health_paths` (`--health-path`, the pod's probes),
/// asking for no upgrade (a probe never does; an upgrade would be a stream
/// into the workload). Anything more would be a channel into a quarantined
/// notebook for whoever can reach it.
pub fn is_health_check(
    health_paths: &[String],
    method: &http::Method,
    path: &str,
    upgrade: bool,
    body: bool,
) -> bool {
    (method == http::Method::GET || method == http::Method::HEAD)
        && !body
        && !upgrade
        && health_paths.iter().any(|p| p == path)
}

/// The most response body bytes a health check passed through a
/// quarantine may carry (the kubelet reads 10 KiB of a probe's answer);
/// past it the response is cut, so that a quarantined notebook cannot
/// stream out through its probe path.
pub const HEALTH_BODY_MAX: u64 = 64 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    fn enforced() -> Policy {
        Policy::try_from(v1::Policy {
            version: 3,
            enforce: true,
            allowed_authorities: vec!["API.example.com:443".into(), "db:5432".into()],
            allowed_addrs: vec!["10.0.0.7:4143".into()],
            allowed_sources: vec!["default/web".into(), "internet".into()],
            mode: "enforcement".into(),
            source_ips: [(
                "default/web".to_owned(),
                v1::SourceIps {
                    ips: vec!["10.0.0.5".into(), "fd00::5".into()],
                },
            )]
            .into(),
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn outbound() {
        let p = enforced();
        let open = Policy::allow_all();
        let deny = Decision::Deny {
            reason: BASELINE_REASON,
        };
        let addr = |s: &str| Some(s.parse().unwrap());
        let cases = [
            (&p, "api.example.com:443", None, Decision::Allow),
            (&p, "Api.Example.com:443", None, Decision::Allow),
            (&p, "api.example.com:80", None, deny),
            (&p, "pool.example.com:3333", None, deny),
            (&p, "svc:80", addr("10.0.0.7:4143"), Decision::Allow),
            (&p, "svc:80", addr("10.0.0.8:4143"), deny),
            (&open, "pool.example.com:3333", None, Decision::Allow),
        ];
        for (policy, authority, resolved, want) in cases {
            assert_eq!(
                evaluate_outbound(policy, authority, resolved),
                want,
                "{authority}"
            );
        }
    }

    #[test]
    fn dns_names_are_allowed_when_they_or_a_learned_domain_are_known() {
        let p = Policy {
            allowed_authorities: [
                "pypi.org:443",
                "db:5432",
                "github.com",
                "10.0.0.7:8000",
                "[fd66::2]:443",
            ]
            .map(String::from)
            .into(),
            ..enforced()
        };
        let cases = [
            ("pypi.org", true),
            ("PyPI.org", true),
            ("files.pypi.org", true),
            ("a.b.files.pypi.org", true),
            ("db", true),
            ("github.com", true),
            ("api.github.com", true),
            ("codeload.github.com", true),
            // Never the bare top-level domain, nor a sibling of a name.
            ("org", false),
            ("evil.org", false),
            ("pypi.org.evil.test", false),
            ("xpypi.org", false),
            ("db.evil.test", false),
            ("6578666974.evil.test", false),
            ("never-seen.test", false),
            ("10.0.0.7", true),
            ("", false),
            (".", false),
        ];
        for (name, want) in cases {
            assert_eq!(dns_allowed(&p, name), want, "{name}");
        }
        let open = Policy::allow_all();
        assert!(
            dns_allowed(&open, "6578666974.evil.test"),
            "learning lets it pass"
        );
        assert_eq!(authority_host("[fd66::2]:443"), "[fd66::2]");
        assert_eq!(authority_host("pypi.org"), "pypi.org");
    }

    /// The sidecar looks a client's name up only when the pod's own query
    /// for it would be answered: a name made up to carry data out is not
    /// sent to the system resolver in enforcement, nor anything while
    /// quarantined, nor a threat-listed name while threats are enforced.
    #[test]
    fn the_sidecar_looks_up_only_names_the_pod_may_look_up() {
        let known = Policy {
            allowed_authorities: ["pypi.org:443".to_owned()].into(),
            ..enforced()
        };
        let quarantined = Policy {
            quarantined: true,
            ..Policy::allow_all()
        };
        let threats = Policy {
            denied_names: DeniedNames::compile(vec!["*.pool.example".to_owned()]).unwrap(),
            enforce_threats: true,
            ..Policy::allow_all()
        };
        let exfil = "6578666974.attacker.example";
        let cases = [
            ("learning", Policy::allow_all(), exfil, true),
            ("enforced, learned", known.clone(), "files.pypi.org", true),
            (
                "enforced, learned, trailing dot",
                known.clone(),
                "pypi.org.",
                true,
            ),
            ("enforced, made up", known, exfil, false),
            ("quarantined", quarantined, "pypi.org", false),
            ("threat-listed", threats.clone(), "xmr.pool.example", false),
            ("threats enforced, another name", threats, exfil, true),
        ];
        for (what, policy, name, want) in cases {
            assert_eq!(may_look_up(&policy, name), want, "{what}: {name}");
        }
    }

    #[test]
    fn inbound() {
        let mut p = enforced();
        assert_eq!(evaluate_inbound(&p, Some("default/web")), Decision::Allow);
        assert_eq!(evaluate_inbound(&p, None), Decision::Allow);
        assert!(evaluate_inbound(&p, Some("default/miner")).is_deny());
        p.allowed_sources.remove(INTERNET);
        assert!(evaluate_inbound(&p, None).is_deny());
        assert_eq!(
            evaluate_inbound(&Policy::allow_all(), Some("x/y")),
            Decision::Allow
        );
    }

    #[test]
    fn a_claimed_source_is_believed_only_from_its_ips() {
        let p = enforced();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let web = || "default/web".to_owned();
        let cases = [
            (None, "203.0.113.9", Caller::Internet),
            (Some("default/web"), "10.0.0.5", Caller::Verified(web())),
            (
                Some("default/web"),
                "::ffff:10.0.0.5",
                Caller::Verified(web()),
            ),
            (Some("default/web"), "fd00::5", Caller::Verified(web())),
            (Some("default/web"), "203.0.113.9", Caller::Spoofed(web())),
            (
                Some("default/new"),
                "10.0.0.9",
                Caller::Unverified("default/new".into()),
            ),
        ];
        for (claimed, peer, want) in cases {
            let got = identify_caller(&p, claimed, ip(peer));
            assert_eq!(got, want, "{claimed:?} from {peer}");
        }
        // A spoofed claim is the internet: judged (and recorded) as such.
        let spoofed = identify_caller(&p, Some("default/web"), ip("203.0.113.9"));
        assert_eq!(spoofed.identity(), None);
        let mut no_internet = p.clone();
        no_internet.allowed_sources.remove(INTERNET);
        assert!(evaluate_inbound(&no_internet, spoofed.identity()).is_deny());
        assert_eq!(
            Caller::Unverified("a/b".into()).identity(),
            Some("a/b"),
            "an unknown name is kept, and only a policy that allows it lets it in"
        );
    }

    /// What judges a body again: another policy, not another number.
    #[test]
    fn a_policy_differs_by_content_not_by_version() {
        let judged = Arc::new(enforced());
        let restarted = Arc::new(Policy {
            quarantined: true,
            ..enforced()
        });
        let cases = [
            (None, judged.clone(), true, "never judged"),
            (Some(&judged), judged.clone(), false, "the same policy"),
            (Some(&judged), Arc::new(enforced()), false, "sent again"),
            (
                Some(&judged),
                restarted,
                true,
                "same version, other content",
            ),
            (
                Some(&judged),
                Arc::new(Policy {
                    version: 4,
                    ..enforced()
                }),
                true,
                "another version",
            ),
        ];
        for (then, now, differs, case) in cases {
            assert_eq!(super::differs(then, &now), differs, "{case}");
        }
    }

    #[test]
    fn conversion() {
        let p = enforced();
        assert_eq!(p.version, 3);
        assert!(p.allowed_authorities.contains("api.example.com:443"));
        assert!(p.allowed_addrs.contains(&"10.0.0.7:4143".parse().unwrap()));
        let bad = v1::Policy {
            version: 9,
            allowed_addrs: vec!["10.0.0.7".into()],
            ..Default::default()
        };
        assert_eq!(
            Policy::try_from(bad),
            Err(PolicyError::BadAddr {
                version: 9,
                value: "10.0.0.7".into()
            })
        );
        let bad = v1::Policy {
            version: 10,
            source_ips: [(
                "a/b".to_owned(),
                v1::SourceIps {
                    ips: vec!["nope".into()],
                },
            )]
            .into(),
            ..Default::default()
        };
        assert_eq!(
            Policy::try_from(bad),
            Err(PolicyError::BadIp {
                version: 10,
                source_name: "a/b".into(),
                value: "nope".into()
            })
        );
    }
}
