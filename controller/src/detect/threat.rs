//! `threat`: a destination on a threat list (a mining pool), named by Host,
//! SNI, CONNECT authority or DNS query, or reached by a listed address. An
//! alert of high severity in every mode, blocked in enforcement even when
//! the baseline has it, and never learned.

use super::{Check, Detector, Finding, Input};
use crate::model::AlertKind;

/// What the detector asks of the threat lists (the controller's feeds).
pub trait Threats: Sync {
    /// The feed and entry that list `host` (a name without port, or an IP),
    /// e.g. `builtin: *.supportxmr.com`; `None` when it is not listed.
    fn listed(&self, host: &str) -> Option<String>;

    /// [`Threats::listed`] for an address (a sidecar's resolved
    /// destination, on nearly every outbound observation), without
    /// writing it out to be parsed back.
    fn listed_ip(&self, ip: std::net::IpAddr) -> Option<String> {
        self.listed(&ip.to_string())
    }
}

/// No threat lists.
pub struct NoThreats;

impl Threats for NoThreats {
    fn listed(&self, _host: &str) -> Option<String> {
        None
    }
}

/// The host of `host:port`, `[v6]:port` or a bare name.
fn host_of(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            host
        }
        _ => authority,
    }
}

/// The threat-list detector.
pub struct Threat;

impl Detector for Threat {
    fn check(&self, input: &Input<'_>) -> Check {
        let obs = input.obs;
        let names = [
            Some(obs.authority.as_str()),
            obs.claimed_authority.as_deref(),
        ];
        let listed = (names.into_iter().flatten())
            .filter(|name| !name.is_empty())
            .find_map(|name| input.threats.listed(host_of(name)))
            .or_else(|| (obs.resolved_addr).and_then(|a| input.threats.listed_ip(a.ip())));
        match listed {
            Some(listed) => Check::abnormal(Finding {
                listed: Some(listed),
                ..Finding::new(AlertKind::Threat, input.mode.action(), input.about)
            }),
            None => Check::normal(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::host_of;

    #[test]
    fn hosts_are_cut_from_authorities() {
        for (authority, host) in [
            ("pool.example.com:443", "pool.example.com"),
            ("pool.example.com", "pool.example.com"),
            ("10.0.0.1:3333", "10.0.0.1"),
            ("[fd00::1]:443", "fd00::1"),
            ("fd00::1", "fd00::1"),
        ] {
            assert_eq!(host_of(authority), host, "{authority}");
        }
    }
}
