//! Which destination a redirected connection is judged as.
//!
//! On a redirected connection the client chooses both the address it
//! connects to and the name it shows (`Host`, `:authority`, TLS SNI). The
//! address is what actually happens on the wire; the name is a claim. A name
//! is believed only when the real destination is an address that name
//! resolved to (for the sidecar, or for the pod: the lookup is the caller's);
//! otherwise the connection is judged by its real `ip:port`, and the name is
//! kept as a mismatch: the client lied about where it is going.
//!
//! [`Judge`] is the one decision on traffic once its destination (or
//! caller) is known: requests, tunnels, streams and upgrades alike, at
//! their start and again whenever the policy changes.
//!
//! Tier 2: pure, no I/O; used by HTTP, h2c, TLS and `CONNECT` alike.

use std::net::{IpAddr, SocketAddr};

use crate::model::{Direction, Protocol, Record};
use crate::policy::{
    Decision, Policy, QUARANTINE_REASON, THREAT_REASON, evaluate_inbound, evaluate_outbound,
    threat_denied,
};

/// A redirected destination, judged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Judged {
    /// What policy judges and telemetry records: `name:port` with the real
    /// port when the name is bound to the real destination, else the real
    /// destination `ip:port`.
    pub authority: String,
    /// The name the client gave, `host:port` as given, when it is not bound
    /// to the real destination.
    pub mismatch: Option<String>,
}

/// A name a client gave: `host` (lower case; `[v6]` or a bare IP literal
/// allowed) and the port it named, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Claim<'a> {
    /// Host name or IP literal.
    pub host: &'a str,
    /// The port the client named (the Host header's, say); the real port is
    /// the destination's either way.
    pub port: Option<u16>,
}

impl Claim<'_> {
    /// The IP when the host is an IP literal (`10.0.0.1`, `[fd66::2]`).
    pub fn ip(&self) -> Option<IpAddr> {
        let bare = self.host.trim_start_matches('[').trim_end_matches(']');
        bare.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
    }

    fn as_given(&self, real_port: u16) -> String {
        format!("{}:{}", self.host, self.port.unwrap_or(real_port))
    }
}

/// Judges the real destination `dst` of a redirected connection against
/// the name the client gave (`None`: no name, judged by address), which
/// resolved to `resolved` (the caller's lookup; ignored for IP literals).
pub fn judge(claim: Option<Claim<'_>>, dst: SocketAddr, resolved: &[IpAddr]) -> Judged {
    let real = SocketAddr::new(dst.ip().to_canonical(), dst.port());
    let by_address = |mismatch| Judged {
        authority: real.to_string(),
        mismatch,
    };
    let Some(claim) = claim.filter(|c| !c.host.is_empty()) else {
        return by_address(None);
    };
    match claim.ip() {
        Some(ip) if ip == real.ip() => by_address(None),
        Some(_) => by_address(Some(claim.as_given(real.port()))),
        None if resolved.iter().any(|ip| ip.to_canonical() == real.ip()) => Judged {
            authority: format!("{}:{}", claim.host, real.port()),
            mismatch: None,
        },
        None => by_address(Some(claim.as_given(real.port()))),
    }
}

/// Why a mismatched name is refused.
pub const MISMATCH_REASON: &str = "the name does not match the destination address";

impl Judged {
    /// How traffic to the real destination `dst` is judged from now on.
    pub fn judge(&self, dst: SocketAddr) -> Judge {
        Judge::Outbound {
            authority: self.authority.clone(),
            dst: Some(dst),
            mismatch: self.mismatch.is_some(),
            claimed: self.mismatch.clone(),
        }
    }
}

/// Why mining is refused.
pub const MINING_REASON: &str = "mining protocol";

/// What a stream is judged as whenever the policy changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Judge {
    /// An outbound stream to `authority` (at `dst` when known); `mismatch`
    /// when the client named a destination it does not go to.
    Outbound {
        /// The judged authority.
        authority: String,
        /// The real destination.
        dst: Option<SocketAddr>,
        /// The name given did not match `dst`.
        mismatch: bool,
        /// Another name the client gave for this destination, when it is
        /// not `authority`: the name of a mismatch, or the TLS name inside
        /// a `CONNECT` tunnel. Checked against the threat list too.
        claimed: Option<String>,
    },
    /// An inbound stream from `source` (`None`: the internet).
    Inbound {
        /// The caller.
        source: Option<String>,
    },
}

impl Judge {
    /// How the stream a request was upgraded into is judged: as the request
    /// was (its destination, or its caller).
    pub fn of_record(record: &Record) -> Self {
        match record.direction {
            Direction::Outbound => Judge::Outbound {
                authority: record.authority.clone(),
                dst: record.resolved,
                mismatch: !record.claimed_authority.is_empty(),
                claimed: (!record.claimed_authority.is_empty())
                    .then(|| record.claimed_authority.clone()),
            },
            Direction::Inbound => Judge::Inbound {
                source: (!record.source.is_empty()).then(|| record.source.clone()),
            },
        }
    }

    /// The decision on a stream speaking `protocol` under `policy`: a
    /// quarantine refuses everything; while threats are enforced, a
    /// threat-listed destination (the authority, another name the client
    /// gave, or the real address) is refused whatever the baseline holds;
    /// no baseline ever allows mining, and a lie about the destination is
    /// refused in enforcement whatever the baseline holds.
    pub fn decide(&self, policy: &Policy, protocol: Protocol) -> Decision {
        if policy.quarantined {
            return Decision::Deny {
                reason: QUARANTINE_REASON,
            };
        }
        if let Judge::Outbound {
            authority,
            dst,
            claimed,
            ..
        } = self
        {
            let names = [authority.as_str(), claimed.as_deref().unwrap_or_default()];
            if threat_denied(policy, &names, dst.map(|d| d.ip())) {
                return Decision::Deny {
                    reason: THREAT_REASON,
                };
            }
        }
        if policy.enforce && protocol == Protocol::Stratum {
            return Decision::Deny {
                reason: MINING_REASON,
            };
        }
        match self {
            Judge::Outbound { mismatch: true, .. } if policy.enforce => Decision::Deny {
                reason: MISMATCH_REASON,
            },
            Judge::Outbound { authority, dst, .. } => evaluate_outbound(policy, authority, *dst),
            Judge::Inbound { source } => evaluate_inbound(policy, source.as_deref()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(host: &str, port: Option<u16>) -> Option<Claim<'_>> {
        Some(Claim { host, port })
    }

    #[test]
    fn a_name_is_believed_only_for_an_address_it_resolved_to() {
        let dst: SocketAddr = "10.66.0.2:8000".parse().unwrap();
        let dst6: SocketAddr = "[fd66::2]:443".parse().unwrap();
        let pypi: Vec<IpAddr> = vec!["10.66.0.9".parse().unwrap(), "10.66.0.2".parse().unwrap()];
        let elsewhere: Vec<IpAddr> = vec!["10.66.0.9".parse().unwrap()];
        let bound = |a: &str| Judged {
            authority: a.into(),
            mismatch: None,
        };
        let lie = |a: &str, m: &str| Judged {
            authority: a.into(),
            mismatch: Some(m.into()),
        };
        let cases = [
            // No name: the address is all there is.
            (None, dst, &pypi[..], bound("10.66.0.2:8000")),
            (claim("", None), dst, &pypi[..], bound("10.66.0.2:8000")),
            // A name that resolved to the real destination (one of several).
            (
                claim("pypi.test", None),
                dst,
                &pypi[..],
                bound("pypi.test:8000"),
            ),
            // `Host: learned:80` to another real port: the real port counts.
            (
                claim("pypi.test", Some(80)),
                dst,
                &pypi[..],
                bound("pypi.test:8000"),
            ),
            // A learned name sent to a never-seen IP.
            (
                claim("pypi.test", Some(8000)),
                dst,
                &elsewhere[..],
                lie("10.66.0.2:8000", "pypi.test:8000"),
            ),
            // A name that does not resolve at all.
            (
                claim("pypi.test", None),
                dst,
                &[][..],
                lie("10.66.0.2:8000", "pypi.test:8000"),
            ),
            // IP literals are compared, never looked up.
            (
                claim("10.66.0.2", Some(80)),
                dst,
                &[][..],
                bound("10.66.0.2:8000"),
            ),
            (
                claim("10.66.0.7", None),
                dst,
                &pypi[..],
                lie("10.66.0.2:8000", "10.66.0.7:8000"),
            ),
            // IPv6, with and without brackets, and v4-mapped destinations.
            (
                claim("[fd66::2]", Some(443)),
                dst6,
                &[][..],
                bound("[fd66::2]:443"),
            ),
            (
                claim("files.test", None),
                dst6,
                &["fd66::2".parse().unwrap()][..],
                bound("files.test:443"),
            ),
            (
                claim("pypi.test", None),
                "[::ffff:10.66.0.2]:8000".parse().unwrap(),
                &pypi[..],
                bound("pypi.test:8000"),
            ),
        ];
        for (claim, dst, resolved, want) in cases {
            assert_eq!(judge(claim, dst, resolved), want, "{claim:?} -> {dst}");
        }
    }

    #[test]
    fn a_mismatch_is_refused_in_enforcement_even_to_a_learned_address() {
        let dst: SocketAddr = "10.66.0.2:8000".parse().unwrap();
        let learned = |enforce| Policy {
            enforce,
            allowed_authorities: ["pypi.test:8000".to_string()].into(),
            allowed_addrs: [dst].into(),
            ..Policy::allow_all()
        };
        let deny = Decision::Deny {
            reason: MISMATCH_REASON,
        };
        let decide = |enforce, claim, resolved: &[IpAddr]| {
            let judged = judge(claim, dst, resolved);
            let decision = judged.judge(dst).decide(&learned(enforce), Protocol::Http1);
            (judged, decision)
        };
        let pypi = claim("pypi.test", None);
        let right: Vec<IpAddr> = vec![dst.ip()];
        let wrong: Vec<IpAddr> = vec!["10.66.0.9".parse().unwrap()];
        // (enforce, claim, resolved, decision)
        let cases = [
            (true, pypi, &right[..], Decision::Allow),
            (true, pypi, &wrong[..], deny),
            (true, claim("evil.test", None), &wrong[..], deny),
            (true, None, &wrong[..], Decision::Allow),
            // Learning and alert-only: passes, judged by address, reported.
            (false, pypi, &wrong[..], Decision::Allow),
        ];
        for (enforce, claim, resolved, want) in cases {
            let (_, decision) = decide(enforce, claim, resolved);
            assert_eq!(decision, want, "enforce={enforce} {claim:?} {resolved:?}");
        }
        // A name outside the baseline that does match is judged by name.
        let (judged, decision) = decide(true, claim("new.test", None), &right);
        assert_eq!(judged.authority, "new.test:8000");
        assert_eq!(
            decision,
            Decision::Allow,
            "the learned address still allows it"
        );
    }

    #[test]
    fn a_listed_destination_is_refused_by_any_name_or_address_it_goes_by() {
        use crate::policy::{DeniedNames, QUARANTINE_REASON, THREAT_REASON};
        let pool_ip: SocketAddr = "203.0.113.9:443".parse().unwrap();
        let cdn_ip: SocketAddr = "198.51.100.4:443".parse().unwrap();
        // Learned while learning: the pool's name and the CDN's.
        let policy = |enforce, enforce_threats, quarantined| Policy {
            enforce,
            enforce_threats,
            quarantined,
            allowed_authorities: ["xmr.pool.test:443", "cdn.test:443"]
                .map(String::from)
                .into(),
            allowed_addrs: [pool_ip, cdn_ip].into(),
            allowed_sources: ["internet".to_owned()].into(),
            denied_names: DeniedNames::compile(["*.pool.test", "203.0.113.0/24"]).unwrap(),
            ..Policy::allow_all()
        };
        let out = |authority: &str, dst, claimed: Option<&str>| Judge::Outbound {
            authority: authority.into(),
            dst: Some(dst),
            mismatch: false,
            claimed: claimed.map(String::from),
        };
        let threat = Decision::Deny {
            reason: THREAT_REASON,
        };
        let quarantine = Decision::Deny {
            reason: QUARANTINE_REASON,
        };
        let enforcing = policy(true, true, false);
        // (judge, protocol, decision)
        let cases = [
            // TLS named by SNI, CONNECT by authority, HTTP by Host.
            (
                out("xmr.pool.test:443", cdn_ip, None),
                Protocol::Tls,
                threat,
            ),
            (
                out("XMR.pool.test.:443", cdn_ip, None),
                Protocol::Tcp,
                threat,
            ),
            (
                out("xmr.pool.test:443", cdn_ip, None),
                Protocol::Http1,
                threat,
            ),
            // A learned CONNECT name with a listed TLS name inside.
            (
                out("cdn.test:443", cdn_ip, Some("xmr.pool.test")),
                Protocol::Tls,
                threat,
            ),
            // A learned name that goes to a listed address.
            (out("cdn.test:443", pool_ip, None), Protocol::Tls, threat),
            // A bare address in a listed network, learned or not.
            (out("203.0.113.9:443", pool_ip, None), Protocol::Tcp, threat),
            // Nothing listed: the baseline allows it.
            (
                out("cdn.test:443", cdn_ip, None),
                Protocol::Tls,
                Decision::Allow,
            ),
            (
                Judge::Inbound { source: None },
                Protocol::Http1,
                Decision::Allow,
            ),
        ];
        for (judge, protocol, want) in cases {
            assert_eq!(judge.decide(&enforcing, protocol), want, "{judge:?}");
        }
        let listed = out("xmr.pool.test:443", cdn_ip, None);
        // Threats reported only (alert-only, learning): the baseline decides.
        assert_eq!(
            listed.decide(&policy(true, false, false), Protocol::Tls),
            Decision::Allow
        );
        // Quarantine: every stream, both ways, in every mode.
        for p in [policy(false, false, true), policy(true, true, true)] {
            for judge in [
                out("cdn.test:443", cdn_ip, None),
                listed.clone(),
                Judge::Inbound { source: None },
                Judge::Inbound {
                    source: Some("default/web".into()),
                },
            ] {
                assert_eq!(judge.decide(&p, Protocol::Http1), quarantine, "{judge:?}");
            }
        }
        // A mismatched name is checked too (judged by address, else allowed).
        let lie = judge(
            Some(Claim {
                host: "xmr.pool.test",
                port: None,
            }),
            cdn_ip,
            &[],
        )
        .judge(cdn_ip);
        assert_eq!(
            lie.decide(&policy(false, true, false), Protocol::Tls),
            threat
        );
        // A record's claimed name is kept when a request becomes a stream.
        let mut record = Record::new(Direction::Outbound, Protocol::Http1);
        record.authority = cdn_ip.to_string();
        record.resolved = Some(cdn_ip);
        record.claimed_authority = "xmr.pool.test:443".into();
        assert_eq!(
            Judge::of_record(&record).decide(&policy(false, true, false), Protocol::Tcp),
            threat
        );
    }
}
