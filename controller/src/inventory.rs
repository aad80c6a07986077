//! The inventory: workloads known from sidecar registration, the addresses
//! they are reached at, and how many sidecars are connected now.
//!
//! Resolves the destination a proxy reported into a graph node. Depends only
//! on `model`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::model::{NodeId, Observation, WorkloadId};

/// A workload as the Kubernetes API shows it (discovery).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Discovered {
    /// Its identity (namespace, and the name of its owner).
    pub id: WorkloadId,
    /// The IPs of its running pods.
    pub pod_ips: Vec<IpAddr>,
    /// `ip:port` of the services that select it.
    pub service_addrs: Vec<SocketAddr>,
    /// The account that owns it, empty when unknown.
    pub tenant: String,
    /// Its profile, empty for its own name.
    pub profile: String,
}

/// What the controller remembers of a registered workload.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadRecord {
    /// Addresses of its inbound listener, as its sidecar advertised them.
    pub inbound_addrs: Vec<SocketAddr>,
    /// Version of its sidecar.
    pub proxy_version: String,
    /// Unix seconds of the first registration.
    pub first_seen: u64,
    /// Unix seconds of the latest registration.
    pub last_seen: u64,
    /// The IP its sidecar's latest registration came from (its pod IP in
    /// a cluster), when known.
    #[serde(default)]
    pub registered_from: Option<IpAddr>,
    /// The account that owns it (`--tenant` of its sidecar), empty when
    /// unknown.
    #[serde(default)]
    pub tenant: String,
    /// Its profile (`--profile` of its sidecar), empty for its own name.
    #[serde(default)]
    pub profile: String,
    /// The IPs of its pods, from the Kubernetes API (any port of one is
    /// the workload).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pod_ips: Vec<IpAddr>,
    /// Whether the Kubernetes API reported it (not only a sidecar).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub discovered: bool,
}

impl WorkloadRecord {
    /// The name the baseline knows a workload of this record by: its
    /// profile (`/` written as `.`, so that it is a valid name), else its
    /// own name.
    pub fn profile_name<'a>(&'a self, name: &'a str) -> std::borrow::Cow<'a, str> {
        if self.profile.is_empty() {
            name.into()
        } else {
            self.profile.replace('/', ".").into()
        }
    }
}

/// Registered workloads and connected sidecars.
#[derive(Debug, Default)]
pub struct Inventory {
    workloads: BTreeMap<WorkloadId, WorkloadRecord>,
    by_addr: HashMap<SocketAddr, WorkloadId>,
    by_ip: HashMap<IpAddr, WorkloadId>,
    /// The workload whose latest registration came from an IP (the newest
    /// registration owns a reused IP).
    by_from: HashMap<IpAddr, WorkloadId>,
    connected: HashMap<WorkloadId, usize>,
    /// The workloads each baseline identity stands for (see
    /// [`Inventory::members_of`]), kept with the records.
    members: HashMap<WorkloadId, BTreeSet<WorkloadId>>,
}

/// The baseline identity of `id` with `record`: its profile in its
/// namespace, else itself.
fn profile_key(id: &WorkloadId, record: &WorkloadRecord) -> WorkloadId {
    WorkloadId {
        namespace: id.namespace.clone(),
        name: record.profile_name(&id.name).into_owned(),
    }
}

impl Inventory {
    /// Takes `id` out of the members index (before its profile changes).
    fn unindex(&mut self, id: &WorkloadId) {
        let Some(record) = self.workloads.get(id) else {
            return;
        };
        let key = profile_key(id, record);
        if let Some(set) = self.members.get_mut(&key) {
            set.remove(id);
            if set.is_empty() {
                self.members.remove(&key);
            }
        }
    }

    /// Puts `id` into the members index under its current profile.
    fn reindex(&mut self, id: &WorkloadId) {
        if let Some(record) = self.workloads.get(id) {
            self.members
                .entry(profile_key(id, record))
                .or_default()
                .insert(id.clone());
        }
    }

    /// Records a registration that came from `from`; returns the updated
    /// record. Of `addrs`, only those a registration from `from` may
    /// advertise are kept ([`may_advertise`]).
    pub fn register(
        &mut self,
        id: &WorkloadId,
        addrs: &[SocketAddr],
        version: &str,
        from: Option<IpAddr>,
        now: u64,
    ) -> &WorkloadRecord {
        let new = !self.workloads.contains_key(id);
        let record = self.workloads.entry(id.clone()).or_default();
        record.registered_from = from.map(|ip| ip.to_canonical());
        // Loopback is every local sidecar's: no one owns it.
        if let Some(ip) = record.registered_from.filter(|ip| !ip.is_loopback()) {
            self.by_from.insert(ip, id.clone());
        }
        if record.first_seen == 0 {
            record.first_seen = now;
        }
        record.last_seen = now;
        record.proxy_version = version.to_owned();
        for addr in addrs {
            if !may_advertise(*addr, from, &record.pod_ips) {
                continue;
            }
            if !record.inbound_addrs.contains(addr) {
                record.inbound_addrs.push(*addr);
            }
            // The newest registration owns an address (a restarted pod may
            // reuse an IP).
            self.by_addr.insert(*addr, id.clone());
        }
        let record = self.workloads.get_mut(id).expect("inserted above");
        let excess = record.inbound_addrs.len().saturating_sub(MAX_INBOUND_ADDRS);
        for old in record.inbound_addrs.drain(..excess) {
            if self.by_addr.get(&old) == Some(id) {
                self.by_addr.remove(&old);
            }
        }
        if new {
            self.reindex(id);
        }
        &self.workloads[id]
    }

    /// The workload whose latest registration came from `ip`, if any.
    pub fn registered_from_owner(&self, ip: IpAddr) -> Option<&WorkloadId> {
        self.by_from.get(&ip.to_canonical())
    }

    /// The workloads that own `addrs` now (see [`Inventory::register`]:
    /// the newest registration owns an address), each once.
    pub fn owners_of(&self, addrs: &[SocketAddr]) -> BTreeSet<WorkloadId> {
        addrs
            .iter()
            .filter_map(|addr| self.by_addr.get(addr).cloned())
            .collect()
    }

    /// Records the tenant and profile a sidecar of `id` registered with.
    pub fn set_labels(&mut self, id: &WorkloadId, tenant: &str, profile: &str) -> &WorkloadRecord {
        self.unindex(id);
        let record = self.workloads.entry(id.clone()).or_default();
        tenant.clone_into(&mut record.tenant);
        profile.clone_into(&mut record.profile);
        self.reindex(id);
        &self.workloads[id]
    }

    /// The tenant of `id`, empty when unknown.
    pub fn tenant_of(&self, id: &WorkloadId) -> &str {
        self.workloads.get(id).map_or("", |r| r.tenant.as_str())
    }

    /// The identity the baseline knows `id` by: its profile in its
    /// namespace (see [`WorkloadRecord::profile_name`]).
    pub fn profile_of(&self, id: &WorkloadId) -> WorkloadId {
        match self.workloads.get(id) {
            Some(record) if !record.profile.is_empty() => WorkloadId {
                namespace: id.namespace.clone(),
                name: record.profile_name(&id.name).into_owned(),
            },
            _ => id.clone(),
        }
    }

    /// `node` as the baseline knows it: workloads as their profiles.
    pub fn baseline_node(&self, node: &NodeId) -> NodeId {
        match node {
            NodeId::Workload(id) => NodeId::Workload(self.profile_of(id)),
            other => other.clone(),
        }
    }

    /// The workloads the baseline identity `profile` stands for: those of
    /// that profile, and a workload of that name without a profile, in
    /// order (an index lookup, not a scan).
    pub fn members_of<'a>(
        &'a self,
        profile: &'a WorkloadId,
    ) -> impl Iterator<Item = &'a WorkloadId> + 'a {
        self.members.get(profile).into_iter().flatten()
    }

    /// Records what the Kubernetes API says of `id`: its pods' IPs (the
    /// newest report owns an IP), its services' `ip:port`s, tenant and
    /// profile. Returns the record and whether the workload was unknown.
    pub fn discover(&mut self, found: &Discovered, now: u64) -> (&WorkloadRecord, bool) {
        let id = &found.id;
        let new = !self.workloads.contains_key(id);
        self.unindex(id);
        let record = self.workloads.entry(id.clone()).or_default();
        if record.first_seen == 0 {
            record.first_seen = now;
        }
        record.last_seen = now;
        record.discovered = true;
        if !found.tenant.is_empty() {
            found.tenant.clone_into(&mut record.tenant);
        }
        if !found.profile.is_empty() {
            found.profile.clone_into(&mut record.profile);
        }
        for ip in &record.pod_ips {
            if self.by_ip.get(ip) == Some(id) {
                self.by_ip.remove(ip);
            }
        }
        record.pod_ips = found.pod_ips.iter().map(|ip| ip.to_canonical()).collect();
        for ip in &record.pod_ips {
            self.by_ip.insert(*ip, id.clone());
        }
        for addr in &found.service_addrs {
            if !record.inbound_addrs.contains(addr) {
                record.inbound_addrs.push(*addr);
            }
            self.by_addr.insert(*addr, id.clone());
        }
        self.reindex(id);
        (&self.workloads[id], new)
    }

    /// Restores a record read back from the store.
    pub fn restore(&mut self, id: WorkloadId, record: WorkloadRecord) {
        if let Some(ip) = record.registered_from.filter(|ip| !ip.is_loopback()) {
            self.by_from.insert(ip, id.clone());
        }
        for addr in &record.inbound_addrs {
            self.by_addr.insert(*addr, id.clone());
        }
        for ip in &record.pod_ips {
            self.by_ip.insert(*ip, id.clone());
        }
        self.unindex(&id);
        self.workloads.insert(id.clone(), record);
        self.reindex(&id);
    }

    /// Forgets every record (connection counts stay), before a restore.
    pub fn clear_records(&mut self) {
        self.workloads.clear();
        self.by_addr.clear();
        self.by_ip.clear();
        self.by_from.clear();
        self.members.clear();
    }

    /// Counts a sidecar connection of `id` (true) or its end (false).
    pub fn set_connected(&mut self, id: &WorkloadId, up: bool) {
        let n = self.connected.entry(id.clone()).or_default();
        if up {
            *n += 1;
        } else {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.connected.remove(id);
            }
        }
    }

    /// Number of sidecars connected now.
    pub fn connected(&self) -> usize {
        self.connected.values().sum()
    }

    /// Sidecars of `id` connected now.
    pub fn connected_of(&self, id: &WorkloadId) -> usize {
        self.connected.get(id).copied().unwrap_or(0)
    }

    /// All registered workloads.
    pub fn workloads(&self) -> impl Iterator<Item = (&WorkloadId, &WorkloadRecord)> {
        self.workloads.iter()
    }

    /// The IPs `id` calls from: those of the inbound addresses it owns
    /// (the newest registration owns a reused address) and the one its
    /// latest registration came from, unless a newer registration of
    /// another workload came from it; unspecified ones say nothing.
    pub fn source_ips(&self, id: &WorkloadId) -> BTreeSet<IpAddr> {
        let Some(record) = self.workloads.get(id) else {
            return BTreeSet::new();
        };
        // An IP another workload has since registered from, or been given
        // as a pod IP, is that one's now, whatever port this one advertised.
        // (Loopback is every local sidecar's: it says nothing of who.)
        let taken = |ip: IpAddr| {
            let ip = ip.to_canonical();
            !ip.is_loopback()
                && [self.by_from.get(&ip), self.by_ip.get(&ip)]
                    .into_iter()
                    .flatten()
                    .any(|owner| owner != id)
        };
        record
            .inbound_addrs
            .iter()
            .filter(|addr| self.by_addr.get(addr) == Some(id) && !taken(addr.ip()))
            .map(|addr| addr.ip())
            .chain(
                record
                    .registered_from
                    .filter(|ip| ip.is_loopback() || self.by_from.get(ip) == Some(id)),
            )
            .chain(
                record
                    .pod_ips
                    .iter()
                    .copied()
                    .filter(|ip| self.by_ip.get(ip) == Some(id)),
            )
            .map(|ip| ip.to_canonical())
            .filter(|ip| !ip.is_unspecified())
            .collect()
    }

    /// Checks an inbound observation's claim that the sidecar could not
    /// (it reported the caller's IP, [`Observation::source_ip`]): a
    /// workload claimed from an IP that is not one of its own is the
    /// internet claiming it (`claimed_source`, as a sidecar reports a
    /// spoofed claim itself). A workload the controller does not know calls
    /// from no IP: claiming one is never a meshed call, which the caller's
    /// own report would draw, so such calls are never hidden from the graph.
    /// The IP is cleared either way.
    ///
    /// [`Observation::source_ip`]: crate::model::Observation::source_ip
    pub fn check_claim(&self, obs: &mut crate::model::Observation) {
        let Some(ip) = obs.source_ip.take() else {
            return;
        };
        let Some(claimed) = &obs.source else {
            return;
        };
        if !self.source_ips(claimed).contains(&ip) {
            obs.claimed_source = obs.source.take();
        }
    }

    /// The record of one workload.
    pub fn get(&self, id: &WorkloadId) -> Option<&WorkloadRecord> {
        self.workloads.get(id)
    }

    /// The graph node an outbound observation of `reporter` went to: a
    /// workload when the resolved address (or, failing that, the host name)
    /// is one of ours, else an external destination.
    pub fn destination(&self, reporter: &WorkloadId, obs: &Observation) -> NodeId {
        if let Some(id) = obs.resolved_addr.and_then(|a| {
            self.by_addr
                .get(&a)
                .or_else(|| self.by_ip.get(&a.ip().to_canonical()))
        }) {
            return NodeId::Workload(id.clone());
        }
        let host = obs
            .authority
            .rsplit_once(':')
            .map_or(obs.authority.as_str(), |(h, _)| h);
        if let Some(id) = self.by_host(reporter, host) {
            return NodeId::Workload(id);
        }
        NodeId::External(obs.authority.clone())
    }

    /// Matches Kubernetes-style names: `name` (same namespace), `name.ns`,
    /// `name.ns.svc` and `name.ns.svc.cluster.local`.
    fn by_host(&self, reporter: &WorkloadId, host: &str) -> Option<WorkloadId> {
        let (name, rest) = host.split_once('.').unwrap_or((host, ""));
        let namespace = match rest.split('.').next() {
            Some("") | None => reporter.namespace.as_str(),
            Some(ns) => {
                let tail = &rest[ns.len()..];
                if !matches!(tail, "" | ".svc" | ".svc.cluster.local") {
                    return None;
                }
                ns
            }
        };
        let id = WorkloadId {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        };
        self.workloads.contains_key(&id).then_some(id)
    }
}

/// Most inbound addresses kept for one workload (its replicas' addresses
/// over time); past it the oldest go, so that repeated registrations with
/// new ports cannot grow a record, and every caller's policy, without end.
pub const MAX_INBOUND_ADDRS: usize = 1024;

/// Whether a registration that came from `from` may advertise `addr` as
/// its workload's inbound address: its IP is the one the registration came
/// from, or one of the workload's pod IPs from the Kubernetes API. The
/// callers of a workload are allowed its inbound addresses (their policies'
/// `allowed_addrs`), so an address taken on a registration's word would let
/// whoever holds a sidecar token open any address to them: register as a
/// baseline peer with a mining pool's `ip:port`, and every caller may dial it.
pub fn may_advertise(addr: SocketAddr, from: Option<IpAddr>, pod_ips: &[IpAddr]) -> bool {
    let ip = addr.ip().to_canonical();
    from.is_some_and(|from| from.to_canonical() == ip) || pod_ips.contains(&ip)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::outbound;

    #[test]
    fn a_claim_a_sidecar_could_not_check_is_checked_against_the_ips_of_the_workload() {
        let mut inv = Inventory::default();
        let web = WorkloadId::new("lab", "web").unwrap();
        inv.register(&web, &[], "0", Some("10.0.0.5".parse().unwrap()), 1);
        let claim = |name: &str, ip: Option<&str>| {
            let mut obs = outbound("", None, 1);
            obs.direction = crate::model::Direction::Inbound;
            obs.source = Some(WorkloadId::new("lab", name).unwrap());
            obs.source_ip = ip.map(|ip| ip.parse().unwrap());
            obs
        };
        // (claim, IP it came from, source after, claimed_source after)
        let cases = [
            ("web", Some("10.0.0.5"), Some("lab/web"), None),
            ("web", Some("10.0.0.6"), None, Some("lab/web")),
            ("ghost", Some("10.0.0.6"), None, Some("lab/ghost")),
            ("web", None, Some("lab/web"), None),
        ];
        for (name, ip, source, claimed) in cases {
            let mut obs = claim(name, ip);
            inv.check_claim(&mut obs);
            let show = |id: &Option<WorkloadId>| id.as_ref().map(ToString::to_string);
            assert_eq!(
                (
                    show(&obs.source).as_deref(),
                    show(&obs.claimed_source).as_deref()
                ),
                (source, claimed),
                "{name} from {ip:?}"
            );
            assert_eq!(obs.source_ip, None, "the IP is cleared");
        }
    }

    #[test]
    fn a_workload_calls_from_the_ips_it_owns_and_registered_from() {
        let mut inv = Inventory::default();
        let (a, b) = (
            WorkloadId::new("lab", "a").unwrap(),
            WorkloadId::new("lab", "b").unwrap(),
        );
        let addr = "10.0.0.7:4143".parse().unwrap();
        inv.register(&a, &[addr], "0", Some("10.0.0.7".parse().unwrap()), 1);
        assert_eq!(inv.source_ips(&a), ["10.0.0.7".parse().unwrap()].into());
        // a's pod restarts elsewhere and b's new pod gets its old IP.
        let moved = "10.0.0.8:4143".parse().unwrap();
        inv.register(&a, &[moved], "0", Some("10.0.0.8".parse().unwrap()), 2);
        inv.register(&b, &[addr], "0", Some("10.0.0.7".parse().unwrap()), 3);
        assert_eq!(
            inv.source_ips(&a),
            ["10.0.0.8".parse().unwrap()].into(),
            "an IP now owned by b is no longer a's"
        );
        assert_eq!(inv.source_ips(&b), ["10.0.0.7".parse().unwrap()].into());
        assert!(
            inv.source_ips(&WorkloadId::new("lab", "c").unwrap())
                .is_empty()
        );
    }

    #[test]
    fn a_registration_advertises_only_its_own_or_its_pods_addresses() {
        let sa = |s: &str| s.parse::<SocketAddr>().unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let pods = [ip("10.1.0.7"), ip("fd00::7")];
        // (address, registration came from, may advertise)
        let cases = [
            ("10.0.0.9:4143", Some("10.0.0.9"), true),
            ("127.0.0.1:4143", Some("127.0.0.1"), true),
            ("10.1.0.7:4143", Some("10.0.0.9"), true),
            ("[fd00::7]:4143", Some("10.1.0.7"), true),
            ("[::ffff:10.0.0.9]:4143", Some("10.0.0.9"), true),
            ("10.0.0.9:4143", Some("::ffff:10.0.0.9"), true),
            // A pool's address, or the loopback a pod's sidecar binds.
            ("203.0.113.5:443", Some("10.0.0.9"), false),
            ("127.0.0.1:4143", Some("10.0.0.9"), false),
            ("0.0.0.0:4143", Some("10.0.0.9"), false),
            // Where the registration came from is unknown.
            ("10.0.0.9:4143", None, false),
        ];
        for (addr, from, want) in cases {
            assert_eq!(
                may_advertise(sa(addr), from.map(ip), &pods),
                want,
                "{addr} from {from:?}"
            );
        }
        let mut inv = Inventory::default();
        let db = WorkloadId::new("shop", "db").unwrap();
        let record = inv.register(
            &db,
            &[sa("10.0.0.9:4143"), sa("203.0.113.5:443")],
            "0",
            Some(ip("10.0.0.9")),
            1,
        );
        assert_eq!(record.inbound_addrs, [sa("10.0.0.9:4143")]);
        // A newer registration of another workload from that IP (a reused
        // pod IP) takes it: db no longer calls from it.
        let nb = WorkloadId::new("shop", "nb").unwrap();
        inv.register(&nb, &[], "0", Some(ip("10.0.0.9")), 2);
        assert_eq!(inv.registered_from_owner(ip("10.0.0.9")), Some(&nb));
        assert_eq!(inv.source_ips(&nb), [ip("10.0.0.9")].into());
        // db still owns 10.0.0.9:4143 as an address, but not its IP.
        assert!(inv.source_ips(&db).is_empty(), "{:?}", inv.source_ips(&db));
    }

    #[test]
    fn repeated_registrations_keep_a_bounded_list_of_addresses() {
        let mut inv = Inventory::default();
        let db = WorkloadId::new("shop", "db").unwrap();
        let from: IpAddr = "10.0.0.9".parse().unwrap();
        for round in 0..20u16 {
            let addrs: Vec<SocketAddr> = (0..64)
                .map(|i| SocketAddr::new(from, 1000 + round * 64 + i))
                .collect();
            inv.register(&db, &addrs, "0", Some(from), u64::from(round));
        }
        let kept = &inv.get(&db).unwrap().inbound_addrs;
        assert_eq!(kept.len(), MAX_INBOUND_ADDRS);
        // The newest are kept, the oldest are no one's any more.
        assert_eq!(
            kept.last(),
            Some(&SocketAddr::new(from, 1000 + 20 * 64 - 1))
        );
        let oldest = SocketAddr::new(from, 1000);
        assert!(!kept.contains(&oldest));
        assert!(inv.owners_of(&[oldest]).is_empty());
    }

    #[test]
    fn destinations_resolve_by_address_then_by_name() {
        let mut inv = Inventory::default();
        let web = WorkloadId::new("shop", "web").unwrap();
        let db = WorkloadId::new("shop", "db").unwrap();
        inv.register(
            &db,
            &["10.0.0.7:5432".parse().unwrap()],
            "0.1.0",
            "10.0.0.7".parse().ok(),
            1,
        );
        let wl = |id: &WorkloadId| NodeId::Workload(id.clone());
        let table = [
            (outbound("anything:1", Some("10.0.0.7:5432"), 1), wl(&db)),
            (outbound("db:5432", None, 1), wl(&db)),
            (outbound("db.shop:5432", None, 1), wl(&db)),
            (outbound("db.shop.svc.cluster.local:5432", None, 1), wl(&db)),
            (
                outbound("db.other:5432", None, 1),
                NodeId::External("db.other:5432".into()),
            ),
            (
                outbound("db.shop.evil.com:443", None, 1),
                NodeId::External("db.shop.evil.com:443".into()),
            ),
            (
                outbound("pypi.org:443", Some("1.2.3.4:443"), 1),
                NodeId::External("pypi.org:443".into()),
            ),
        ];
        for (o, expected) in table {
            assert_eq!(inv.destination(&web, &o), expected, "{}", o.authority);
        }
    }

    #[test]
    fn discovered_pods_and_services_name_east_west_destinations() {
        let mut inv = Inventory::default();
        let web = WorkloadId::new("shop", "web").unwrap();
        let db = WorkloadId::new("shop", "db").unwrap();
        let found = Discovered {
            id: db.clone(),
            pod_ips: vec!["10.1.0.7".parse().unwrap()],
            service_addrs: vec!["10.96.0.20:5432".parse().unwrap()],
            tenant: "alice".into(),
            profile: "postgres".into(),
        };
        let (record, new) = inv.discover(&found, 5);
        assert!(new && record.discovered);
        let wl = NodeId::Workload(db.clone());
        for addr in ["10.1.0.7:5432", "10.1.0.7:9187", "10.96.0.20:5432"] {
            let o = outbound("x:1", Some(addr), 1);
            assert_eq!(inv.destination(&web, &o), wl, "{addr}");
        }
        let other = outbound("x:1", Some("10.96.0.20:80"), 1);
        assert_eq!(
            inv.destination(&web, &other),
            NodeId::External("x:1".into())
        );
        assert!(inv.source_ips(&db).contains(&"10.1.0.7".parse().unwrap()));
        assert_eq!(inv.profile_of(&db).name, "postgres");
        // The pod moves: its old IP is no longer db's.
        let moved = Discovered {
            pod_ips: vec!["10.1.0.9".parse().unwrap()],
            ..found
        };
        assert!(!inv.discover(&moved, 6).1);
        let o = outbound("x:1", Some("10.1.0.7:5432"), 1);
        assert_eq!(inv.destination(&web, &o), NodeId::External("x:1".into()));
    }

    #[test]
    fn members_follow_profiles_as_they_change() {
        let mut inv = Inventory::default();
        let w = |name: &str| WorkloadId::new("lab", name).unwrap();
        let members = |inv: &Inventory, profile: &str| -> Vec<String> {
            inv.members_of(&w(profile))
                .map(|id| id.name.clone())
                .collect()
        };
        inv.register(&w("nb-bob"), &[], "0", None, 1);
        inv.register(&w("nb-alice"), &[], "0", None, 1);
        inv.set_labels(&w("nb-alice"), "alice", "jupyter");
        inv.set_labels(&w("nb-bob"), "bob", "jupyter");
        inv.restore(
            w("nb-carol"),
            WorkloadRecord {
                profile: "team/jupyter".into(),
                ..WorkloadRecord::default()
            },
        );
        let found = Discovered {
            id: w("db"),
            ..Discovered::default()
        };
        inv.discover(&found, 2);
        let table = [
            ("jupyter", vec!["nb-alice", "nb-bob"]),
            ("team.jupyter", vec!["nb-carol"]),
            ("nb-bob", vec![]),
            ("db", vec!["db"]),
        ];
        for (profile, want) in table {
            assert_eq!(members(&inv, profile), want, "{profile}");
        }
        // bob's sidecar comes back without a profile; db gets one.
        inv.set_labels(&w("nb-bob"), "bob", "");
        inv.discover(
            &Discovered {
                profile: "postgres".into(),
                ..found
            },
            3,
        );
        let table = [
            ("jupyter", vec!["nb-alice"]),
            ("nb-bob", vec!["nb-bob"]),
            ("db", vec![]),
            ("postgres", vec!["db"]),
        ];
        for (profile, want) in table {
            assert_eq!(members(&inv, profile), want, "{profile}");
        }
        inv.clear_records();
        assert!(members(&inv, "nb-alice").is_empty());
        assert!(members(&inv, "postgres").is_empty());
    }

    #[test]
    fn connections_are_counted_per_workload() {
        let mut inv = Inventory::default();
        let web = WorkloadId::new("shop", "web").unwrap();
        inv.set_connected(&web, true);
        inv.set_connected(&web, true);
        inv.set_connected(&web, false);
        assert_eq!(inv.connected(), 1);
        inv.set_connected(&web, false);
        inv.set_connected(&web, false);
        assert_eq!(inv.connected(), 0);
    }
}
