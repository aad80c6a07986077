//! Policy: compiles what each workload may do from its namespace's mode and
//! the baseline, and hands it to the sidecars through one `watch` channel per
//! workload.
//!
//! `compile` is pure; `Policies` only keeps the channels and version numbers.
//! Depends on `model`, `baseline`, `graph` and `inventory`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::watch;

use crate::baseline::Baseline;
use crate::graph::Graph;
use crate::inventory::Inventory;
use crate::model::{Mode, NodeId, WorkloadId};

/// The source name for callers without a Vigil identity.
pub const INTERNET_SOURCE: &str = "internet";

/// What one workload's sidecar enforces.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PolicySpec {
    /// Increases with every change.
    pub version: u64,
    /// The namespace's mode.
    pub mode: Mode,
    /// Whether the proxy blocks what is not allowed below.
    pub enforce: bool,
    /// Outbound destinations allowed by name, `host:port`.
    pub allowed_authorities: BTreeSet<String>,
    /// Outbound destinations allowed by address (baseline workloads).
    pub allowed_addrs: BTreeSet<SocketAddr>,
    /// Inbound callers allowed: `ns/name` or `internet`.
    pub allowed_sources: BTreeSet<String>,
    /// The IPs each workload (`ns/name`) the baseline lets call this one
    /// calls from (in every mode), so that a sidecar believes a
    /// `vigil-source` header only from its owner. Only its callers: a
    /// workload that registers changes the policies of its peers alone.
    pub source_ips: SourceIps,
    /// Threat-listed destinations (`domain`, `*.domain`, CIDR), shared by
    /// every workload's policy.
    pub denied_names: Arc<BTreeSet<String>>,
    /// Whether the sidecar refuses `denied_names` (enforcement) or only
    /// reports them.
    pub enforce_threats: bool,
    /// The workload is quarantined: all traffic but health checks refused.
    pub quarantined: bool,
}

/// The IPs workloads call from (see [`Inventory::source_ips`]: those of
/// the inbound addresses its sidecar advertised, the one it registered
/// from, its pod IPs), by `ns/name`.
pub type SourceIps = BTreeMap<String, BTreeSet<IpAddr>>;

/// What every workload's policy is compiled from.
pub struct Inputs<'a> {
    /// The baseline (workloads as their profiles).
    pub baseline: &'a Baseline,
    /// The graph: the names peers were reached by.
    pub graph: &'a Graph,
    /// Registered workloads: their profiles and addresses.
    pub inventory: &'a Inventory,
    /// Threat-listed destinations, shared by every policy.
    pub denied_names: &'a Arc<BTreeSet<String>>,
    /// Quarantined workloads.
    pub quarantined: &'a BTreeMap<WorkloadId, crate::model::Quarantine>,
}

/// Compiles the policy of `id` (version left at 0) in `mode`.
pub fn compile(id: &WorkloadId, mode: Mode, inputs: &Inputs<'_>) -> PolicySpec {
    let Inputs {
        baseline,
        graph,
        inventory,
        denied_names,
        quarantined,
    } = *inputs;
    let mut spec = PolicySpec {
        version: 0,
        mode,
        enforce: mode.blocks(),
        allowed_authorities: BTreeSet::new(),
        allowed_addrs: BTreeSet::new(),
        allowed_sources: BTreeSet::new(),
        source_ips: SourceIps::new(),
        denied_names: denied_names.clone(),
        enforce_threats: mode.blocks(),
        quarantined: quarantined.contains_key(id),
    };
    let me = NodeId::Workload(id.clone());
    let profile = inventory.baseline_node(&me);
    // Callers: their IPs in every mode (a learned caller is checked by the
    // sidecar, any other claim by the controller), allowed when enforcing.
    for source in baseline.sources_of(&profile) {
        match source {
            NodeId::Internet if spec.enforce => {
                spec.allowed_sources.insert(INTERNET_SOURCE.to_owned());
            }
            NodeId::Workload(peer_profile) => {
                for peer in inventory.members_of(peer_profile) {
                    let name = peer.to_string();
                    spec.source_ips
                        .insert(name.clone(), inventory.source_ips(peer));
                    if spec.enforce {
                        spec.allowed_sources.insert(name);
                    }
                }
            }
            NodeId::Internet | NodeId::External(_) => {}
        }
    }
    if !spec.enforce {
        return spec;
    }
    for target in baseline.targets_of(&profile) {
        match target {
            NodeId::External(authority) => {
                spec.allowed_authorities.insert(authority.clone());
            }
            NodeId::Workload(peer_profile) => {
                for peer in inventory.members_of(peer_profile) {
                    if let Some(record) = inventory.get(peer) {
                        spec.allowed_addrs
                            .extend(record.inbound_addrs.iter().copied());
                    }
                    let edge = (me.clone(), NodeId::Workload(peer.clone()));
                    if let Some(stats) = graph.edge(&edge) {
                        spec.allowed_authorities
                            .extend(stats.authorities.iter().cloned());
                    }
                }
            }
            NodeId::Internet => {}
        }
    }
    spec
}

/// The workloads whose policy a change may alter, beside a change of mode
/// or threat lists (which alter every policy): the members of
/// both ends of each baseline edge learned (`edges`, workloads as their
/// profiles: the caller's allowed destinations, the callee's allowed
/// sources), each workload quarantined or released, and, for each
/// workload that (re)registered, the members of the profiles its profile
/// calls or is called by in the baseline (their allowed addresses, sources
/// and source IPs name it). Endpoints and statistics are in no policy.
pub fn affected(
    edges: &[crate::model::EdgeKey],
    quarantined: &[WorkloadId],
    registered: &[WorkloadId],
    baseline: &Baseline,
    inventory: &Inventory,
) -> BTreeSet<WorkloadId> {
    let mut out = BTreeSet::new();
    let members_of = |node: &NodeId, out: &mut BTreeSet<WorkloadId>| {
        if let NodeId::Workload(profile) = node {
            out.extend(inventory.members_of(profile).cloned());
        }
    };
    for (source, target) in edges {
        members_of(source, &mut out);
        members_of(target, &mut out);
    }
    out.extend(quarantined.iter().cloned());
    for id in registered {
        let profile = inventory.baseline_node(&NodeId::Workload(id.clone()));
        for peer in baseline
            .targets_of(&profile)
            .chain(baseline.sources_of(&profile))
        {
            members_of(peer, &mut out);
        }
        out.insert(id.clone());
    }
    out
}

/// The policy channels, one per workload.
#[derive(Debug, Default)]
pub struct Policies {
    channels: HashMap<WorkloadId, watch::Sender<Arc<PolicySpec>>>,
    version: u64,
}

/// Versions a run may number before its range meets the next epoch's.
const VERSIONS_PER_EPOCH: u64 = 1 << 32;

impl Policies {
    /// Channels whose versions start above those of every earlier epoch
    /// (one per controller start, [`crate::store::Store::next_policy_epoch`]):
    /// a sidecar, and `vigil_proxy_policy_version`, never see the number go
    /// back when the controller restarts.
    pub fn from_epoch(epoch: u64) -> Self {
        Policies {
            channels: HashMap::new(),
            version: epoch.saturating_mul(VERSIONS_PER_EPOCH),
        }
    }

    /// Publishes `spec` for `id` if it differs from the current one; a new
    /// version number is assigned then. Returns whether it changed.
    pub fn publish(&mut self, id: &WorkloadId, mut spec: PolicySpec) -> bool {
        if let Some(tx) = self.channels.get(id) {
            let current = tx.borrow();
            spec.version = current.version;
            if **current == spec {
                return false;
            }
        }
        self.version += 1;
        spec.version = self.version;
        let spec = Arc::new(spec);
        match self.channels.get(id) {
            Some(tx) => {
                tx.send_replace(spec);
            }
            None => {
                self.channels.insert(id.clone(), watch::Sender::new(spec));
            }
        }
        true
    }

    /// A receiver of `id`'s policy; `publish` must have run for `id`.
    pub fn subscribe(&self, id: &WorkloadId) -> Option<watch::Receiver<Arc<PolicySpec>>> {
        self.channels.get(id).map(watch::Sender::subscribe)
    }

    /// Workloads with a policy channel.
    pub fn workloads(&self) -> impl Iterator<Item = &WorkloadId> {
        self.channels.keys()
    }

    /// Whether `id` has a policy channel.
    pub fn has(&self, id: &WorkloadId) -> bool {
        self.channels.contains_key(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile_with(
        id: &WorkloadId,
        mode: Mode,
        baseline: &Baseline,
        graph: &Graph,
        inventory: &Inventory,
    ) -> PolicySpec {
        let inputs = Inputs {
            baseline,
            graph,
            inventory,
            denied_names: &Arc::default(),
            quarantined: &BTreeMap::new(),
        };
        compile(id, mode, &inputs)
    }
    use crate::model::outbound;

    const ENFORCE: Mode = Mode::Enforcement { alert_only: false };

    fn fixture() -> (WorkloadId, Baseline, Graph, Inventory) {
        let web = WorkloadId::new("shop", "web").unwrap();
        let db = WorkloadId::new("shop", "db").unwrap();
        let wl = |id: &WorkloadId| NodeId::Workload(id.clone());
        let mut inv = Inventory::default();
        inv.register(
            &db,
            &["127.0.0.1:5432".parse().unwrap()],
            "0",
            "127.0.0.1".parse().ok(),
            1,
        );
        let mut b = Baseline::default();
        let mut g = Graph::default();
        let to_db = (wl(&web), wl(&db));
        let obs = outbound("db:5432", None, 1);
        g.record(&to_db, &obs, 1);
        b.learn_edge(&to_db);
        b.learn_edge(&(wl(&web), NodeId::External("pypi.org:443".into())));
        b.learn_edge(&(NodeId::Internet, wl(&web)));
        b.learn_edge(&(wl(&db), wl(&web)));
        (web, b, g, inv)
    }

    #[test]
    fn enforcement_allows_exactly_the_baseline() {
        let (web, b, g, inv) = fixture();
        let spec = compile_with(&web, ENFORCE, &b, &g, &inv);
        assert!(spec.enforce);
        let authorities: Vec<_> = spec
            .allowed_authorities
            .iter()
            .map(String::as_str)
            .collect();
        assert_eq!(authorities, ["db:5432", "pypi.org:443"]);
        assert_eq!(
            spec.allowed_addrs.iter().collect::<Vec<_>>(),
            [&"127.0.0.1:5432".parse::<SocketAddr>().unwrap()]
        );
        let sources: Vec<_> = spec.allowed_sources.iter().map(String::as_str).collect();
        assert_eq!(sources, ["internet", "shop/db"]);
    }

    #[test]
    fn a_policy_names_the_ips_of_the_callers_its_baseline_allows_and_no_others() {
        let (web, mut b, g, mut inv) = fixture();
        let lab = WorkloadId::new("lab", "nb").unwrap();
        let addrs = [
            "10.1.2.3:4143".parse().unwrap(),
            "[::ffff:10.1.2.4]:4143".parse().unwrap(),
            "0.0.0.0:4143".parse().unwrap(),
        ];
        // Registered from 10.1.2.4: the other addresses are not its to
        // advertise.
        inv.register(&lab, &addrs, "0", Some("10.1.2.4".parse().unwrap()), 1);
        let db = ("shop/db".to_owned(), ["127.0.0.1".parse().unwrap()].into());
        let nb = (
            "lab/nb".to_owned(),
            ["10.1.2.4"].map(|ip| ip.parse().unwrap()).into(),
        );
        for mode in [Mode::Learning, ENFORCE] {
            let spec = compile_with(&web, mode, &b, &g, &inv);
            assert_eq!(
                spec.source_ips,
                [db.clone()].into(),
                "{mode:?}: a registered workload that does not call web is not in its policy"
            );
        }
        b.learn_edge(&(NodeId::Workload(lab.clone()), NodeId::Workload(web.clone())));
        for mode in [Mode::Learning, ENFORCE] {
            let spec = compile_with(&web, mode, &b, &g, &inv);
            assert_eq!(
                spec.source_ips,
                [db.clone(), nb.clone()].into(),
                "{mode:?}: once learned, with the IP it registered from; mapped IPv4 made plain, 0.0.0.0 left out"
            );
        }
        let db_id = WorkloadId::new("shop", "db").unwrap();
        inv.register(&web, &[], "0", None, 1);
        assert!(
            compile_with(&db_id, ENFORCE, &b, &g, &inv)
                .source_ips
                .keys()
                .eq(["shop/web"]),
            "db's only caller is web"
        );
    }

    #[test]
    fn learning_and_alert_only_do_not_enforce() {
        let (web, b, g, inv) = fixture();
        for mode in [Mode::Learning, Mode::Enforcement { alert_only: true }] {
            let spec = compile_with(&web, mode, &b, &g, &inv);
            assert!(!spec.enforce);
            assert!(spec.allowed_authorities.is_empty());
        }
    }

    #[test]
    fn a_change_alters_the_policies_of_the_workloads_it_names() {
        let w = |name: &str| WorkloadId::new("shop", name).unwrap();
        let node = |name: &str| NodeId::Workload(w(name));
        let mut inv = Inventory::default();
        for name in ["web", "db", "cache", "nb-1", "nb-2"] {
            inv.register(&w(name), &[], "0", None, 1);
        }
        inv.set_labels(&w("nb-1"), "", "jupyter");
        inv.set_labels(&w("nb-2"), "", "jupyter");
        let mut b = Baseline::default();
        b.learn_edge(&(node("web"), node("db")));
        b.learn_edge(&(node("jupyter"), node("web")));
        b.learn_edge(&(node("cache"), NodeId::External("redis.io:443".into())));
        let pypi = (node("jupyter"), NodeId::External("pypi.org:443".into()));
        let names = |set: BTreeSet<WorkloadId>| -> Vec<String> {
            set.into_iter().map(|id| id.name).collect()
        };
        type Case<'a> = (
            &'a str,
            Vec<crate::model::EdgeKey>,
            Vec<WorkloadId>,
            Vec<WorkloadId>,
            Vec<&'a str>,
        );
        let cases: Vec<Case<'_>> = vec![
            ("nothing", vec![], vec![], vec![], vec![]),
            (
                "an external edge: its caller's profile",
                vec![pypi.clone()],
                vec![],
                vec![],
                vec!["nb-1", "nb-2"],
            ),
            (
                "an east-west edge: both ends",
                vec![(node("web"), node("db"))],
                vec![],
                vec![],
                vec!["db", "web"],
            ),
            (
                "from the internet",
                vec![(NodeId::Internet, node("web"))],
                vec![],
                vec![],
                vec!["web"],
            ),
            (
                "a quarantine",
                vec![],
                vec![w("cache")],
                vec![],
                vec!["cache"],
            ),
            (
                "web registers: its callers and callees",
                vec![],
                vec![],
                vec![w("web")],
                vec!["db", "nb-1", "nb-2", "web"],
            ),
            (
                "a notebook registers: the profile's peers",
                vec![],
                vec![],
                vec![w("nb-2")],
                vec!["nb-2", "web"],
            ),
            (
                "cache registers: only itself",
                vec![],
                vec![],
                vec![w("cache")],
                vec!["cache"],
            ),
        ];
        for (why, edges, quarantined, registered, want) in cases {
            let got = affected(&edges, &quarantined, &registered, &b, &inv);
            assert_eq!(names(got), want, "{why}");
        }
    }

    #[test]
    fn a_later_epoch_numbers_above_an_earlier_one() {
        let (web, b, g, inv) = fixture();
        let mut first = Policies::from_epoch(1);
        for mode in [Mode::Learning, ENFORCE, Mode::Learning] {
            first.publish(&web, compile_with(&web, mode, &b, &g, &inv));
        }
        let last_of_first = first.subscribe(&web).unwrap().borrow().version;
        // The controller restarted: the same policy comes first.
        let mut second = Policies::from_epoch(2);
        second.publish(&web, compile_with(&web, Mode::Learning, &b, &g, &inv));
        let first_of_second = second.subscribe(&web).unwrap().borrow().version;
        assert_eq!(last_of_first, VERSIONS_PER_EPOCH + 3);
        assert_eq!(first_of_second, 2 * VERSIONS_PER_EPOCH + 1);
    }

    #[test]
    fn publishing_bumps_the_version_only_on_change() {
        let (web, b, g, inv) = fixture();
        let mut policies = Policies::default();
        assert!(policies.publish(&web, compile_with(&web, Mode::Learning, &b, &g, &inv)));
        let mut rx = policies.subscribe(&web).unwrap();
        assert_eq!(rx.borrow_and_update().version, 1);
        assert!(!policies.publish(&web, compile_with(&web, Mode::Learning, &b, &g, &inv)));
        assert!(!rx.has_changed().unwrap());
        assert!(policies.publish(&web, compile_with(&web, ENFORCE, &b, &g, &inv)));
        assert!(rx.has_changed().unwrap());
        let spec = rx.borrow_and_update();
        assert_eq!(spec.version, 2);
        assert!(spec.enforce);
    }
}
