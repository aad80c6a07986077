//! The pure part of the UDP relay: what a datagram that reached it is (a
//! flow's, or one to drop), how a flow is named and judged, and the bounded
//! table of open flows.
//!
//! Tier 2: no I/O; the clock never appears (flows end on their own idle
//! timers, in the relay).

use std::collections::HashMap;
use std::net::SocketAddr;

use crate::destination::Judge;
use crate::model::{Direction, Protocol, Record};
use crate::policy::Policy;

use super::quic;

/// A flow: the app's socket and the destination it sent to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// The app's address (its source address and port, as the kernel saw
    /// them).
    pub client: SocketAddr,
    /// Where it sent the datagram (the original destination).
    pub dst: SocketAddr,
}

/// Why a datagram is dropped without a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Drop {
    /// Sent straight to the relay's own address (not redirected), or to
    /// loopback: nothing to relay, and the relay is not a way out.
    Direct,
    /// The flow table is full.
    Full,
    /// The flow's queue is full (the upstream socket cannot keep up).
    Backlog,
}

impl Drop {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Drop::Direct => "direct",
            Drop::Full => "full",
            Drop::Backlog => "backlog",
        }
    }
}

/// What a datagram received with its original destination `dst`, by the
/// relay listening on `local`, is. Redirected datagrams never have a
/// loopback or local destination (init leaves those alone), so one that
/// does was sent to the relay itself.
pub fn classify(client: SocketAddr, dst: SocketAddr, local: SocketAddr) -> Result<FlowKey, Drop> {
    let (client, dst) = (canonical(client), canonical(dst));
    if dst == canonical(local) || dst.ip().is_loopback() || dst.ip().is_unspecified() {
        return Err(Drop::Direct);
    }
    Ok(FlowKey { client, dst })
}

fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// The protocol of a flow whose first datagram is `first`.
pub fn protocol(first: &[u8]) -> Protocol {
    if quic::is_quic(first) {
        Protocol::Quic
    } else {
        Protocol::Udp
    }
}

/// The authority a flow to `dst` is judged and recorded as: `name:port`
/// for a name the pod's DNS answers bind to `dst`'s IP (`names`, the most
/// recently answered first; one the policy allows on that port wins),
/// else `ip:port`.
pub fn authority(dst: SocketAddr, names: &[String], policy: &Policy) -> String {
    let dst = canonical(dst);
    let named: Vec<String> = names
        .iter()
        .map(|name| format!("{}:{}", name.to_ascii_lowercase(), dst.port()))
        .collect();
    named
        .iter()
        .find(|a| policy.allowed_authorities.contains(*a))
        .or(named.first())
        .cloned()
        .unwrap_or_else(|| dst.to_string())
}

/// How a flow is judged, now and on every policy change.
pub fn judge(key: &FlowKey, authority: &str) -> Judge {
    Judge::Outbound {
        authority: authority.to_owned(),
        dst: Some(key.dst),
        mismatch: false,
        claimed: None,
    }
}

/// A flow's record before anything is counted.
pub fn record(key: &FlowKey, authority: &str, protocol: Protocol) -> Record {
    Record {
        authority: authority.to_owned(),
        resolved: Some(key.dst),
        ..Record::new(Direction::Outbound, protocol)
    }
}

/// The open flows, at most `max`; each entry carries the flow's id, so a
/// flow that ends removes itself and never a newer one with its key.
#[derive(Debug)]
pub struct FlowTable<T> {
    flows: HashMap<FlowKey, (u64, T)>,
    max: usize,
    next_id: u64,
}

impl<T> FlowTable<T> {
    /// An empty table of at most `max` flows.
    pub fn new(max: usize) -> Self {
        FlowTable {
            flows: HashMap::new(),
            max: max.max(1),
            next_id: 0,
        }
    }

    /// The open flow of `key`.
    pub fn get(&self, key: &FlowKey) -> Option<&T> {
        self.flows.get(key).map(|(_, flow)| flow)
    }

    /// Opens a flow for `key` (which has none); its id, or
    /// [`Drop::Full`].
    pub fn insert(&mut self, key: FlowKey, flow: T) -> Result<u64, Drop> {
        if self.flows.len() >= self.max {
            return Err(Drop::Full);
        }
        self.next_id += 1;
        self.flows.insert(key, (self.next_id, flow));
        Ok(self.next_id)
    }

    /// Removes the flow `id` of `key`, if it is still the one open.
    pub fn remove(&mut self, key: &FlowKey, id: u64) {
        if self.flows.get(key).is_some_and(|(open, _)| *open == id) {
            self.flows.remove(key);
        }
    }

    /// How many flows are open.
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    /// Whether no flow is open.
    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_datagram_to_the_relay_itself_or_to_loopback_is_dropped() {
        let local = addr("127.0.0.1:4154");
        let client = addr("10.66.0.1:40000");
        let cases = [
            ("127.0.0.1:4154", Err(Drop::Direct)),
            ("127.0.0.2:9", Err(Drop::Direct)),
            ("[::ffff:127.0.0.1]:4154", Err(Drop::Direct)),
            ("[::1]:4154", Err(Drop::Direct)),
            ("0.0.0.0:9", Err(Drop::Direct)),
            (
                "10.66.0.2:9999",
                Ok(FlowKey {
                    client,
                    dst: addr("10.66.0.2:9999"),
                }),
            ),
            (
                "[::ffff:10.66.0.2]:443",
                Ok(FlowKey {
                    client,
                    dst: addr("10.66.0.2:443"),
                }),
            ),
        ];
        for (dst, want) in cases {
            assert_eq!(classify(client, addr(dst), local), want, "{dst}");
        }
        let v6 = classify(
            addr("[fd66::1]:5"),
            addr("[fd66::2]:443"),
            addr("[::1]:4154"),
        );
        assert!(v6.is_ok());
    }

    #[test]
    fn a_flow_is_named_by_the_pods_answers_an_allowed_name_first() {
        let dst = addr("10.66.0.2:443");
        let mut policy = Policy::allow_all();
        let names = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(authority(dst, &[], &policy), "10.66.0.2:443");
        assert_eq!(
            authority(dst, &names(&["New.test", "old.test"]), &policy),
            "new.test:443"
        );
        policy.enforce = true;
        policy.allowed_authorities = ["old.test:443".to_string()].into();
        assert_eq!(
            authority(dst, &names(&["new.test", "old.test"]), &policy),
            "old.test:443"
        );
        // Learned on another port only: the real port counts.
        assert_eq!(
            authority(addr("10.66.0.2:51820"), &names(&["old.test"]), &policy),
            "old.test:51820"
        );
        let v6 = authority(addr("[fd66::2]:443"), &[], &policy);
        assert_eq!(v6, "[fd66::2]:443");
    }

    #[test]
    fn a_flow_is_judged_by_its_destination_in_enforcement() {
        let key = FlowKey {
            client: addr("10.66.0.1:40000"),
            dst: addr("10.66.0.2:9999"),
        };
        let learned = Policy {
            enforce: true,
            allowed_authorities: ["10.66.0.2:9999".to_string()].into(),
            ..Policy::allow_all()
        };
        let cases = [
            (Policy::allow_all(), "10.66.0.3:9999", Protocol::Udp, false),
            (learned.clone(), "10.66.0.2:9999", Protocol::Udp, false),
            (learned.clone(), "10.66.0.2:9999", Protocol::Quic, false),
            (learned.clone(), "10.66.0.3:9999", Protocol::Udp, true),
            (learned.clone(), "10.66.0.2:9999", Protocol::Stratum, true),
        ];
        for (policy, authority, protocol, denied) in cases {
            let key = FlowKey {
                dst: authority.parse().unwrap(),
                ..key
            };
            let decision = judge(&key, authority).decide(&policy, protocol);
            assert_eq!(decision.is_deny(), denied, "{authority} {protocol:?}");
        }
        let record = record(&key, "quic.test:9999", Protocol::Quic);
        assert_eq!(
            (record.count, record.resolved, record.authority.as_str()),
            (1, Some(key.dst), "quic.test:9999")
        );
    }

    #[test]
    fn the_table_is_bounded_and_a_flow_removes_only_itself() {
        let mut table = FlowTable::new(2);
        let key = |port| FlowKey {
            client: addr(&format!("10.66.0.1:{port}")),
            dst: addr("10.66.0.2:9"),
        };
        let first = table.insert(key(1), "a").unwrap();
        table.insert(key(2), "b").unwrap();
        assert_eq!(table.insert(key(3), "c"), Err(Drop::Full));
        table.remove(&key(1), first);
        let again = table.insert(key(1), "a2").unwrap();
        table.remove(&key(1), first);
        assert_eq!(table.get(&key(1)), Some(&"a2"), "an old id removes nothing");
        table.remove(&key(1), again);
        assert_eq!(table.len(), 1);
    }
}
