//! The engine: the one writer of the controller's state.
//!
//! It runs on its own thread (store commits are blocking fsyncs), takes typed
//! [`Command`]s from `ingest` and `api`, applies them in order
//! (report -> graph -> baseline -> verdict -> alert -> policy), writes the
//! changes of the reports queued together in one store transaction (see
//! `group`), then publishes a fresh [`Snapshot`] for readers and new
//! policies for the sidecars whose policy the change touched.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, watch};

use crate::baseline::Baseline;
use crate::detect::{self, Finding, Hits, Input, NoThreats, Threats, Verdict};
use crate::graph::{EdgeIndex, Graph, NodeIndex};
use crate::inventory::Inventory;
use crate::metrics::{EngineMetrics, ViolationLabels};
use crate::model::{
    Action, Alert, AlertKind, AuditEntry, Direction, EdgeKey, Evidence, Mode, Modes, NodeId,
    OVERFLOW, Observation, Quarantine, WorkloadId, alert_id, alert_key, now_unix, rfc3339,
};
use crate::policy::{self, Policies};
use crate::simulate::History;
use crate::snapshot::{self, Parts, Snapshot, label};
use crate::stability::Growth;
use crate::store::{Changes, Loaded, Store, StoreError};

mod group;
mod handle;
mod resources;
mod response;

pub use handle::{Command, EngineError, Handle, ImportSizes, PolicyRx, Registration, Stopper};
pub use resources::{EGRESS_WINDOW_SECS, ResourceSummary};
pub use response::{ResponseError, accepts, import_changes};

/// How the engine responds on its own, and what it keeps.
#[derive(Clone, Debug)]
pub struct Options {
    /// Alert kinds that quarantine the offending workload at once
    /// (`--auto-quarantine`).
    pub auto_quarantine: BTreeSet<AlertKind>,
    /// How long observations are kept for dry runs, seconds
    /// (`--history-retention`).
    pub history_retention: u64,
    /// How stale the snapshot may be after reports alone (zero: published
    /// before every acknowledgement); see [`PUBLISH_EVERY`].
    pub publish_every: Duration,
    /// How long a group of reports and registrations may wait for more
    /// before its transaction (zero: written as soon as the queue is
    /// empty); see [`COMMIT_LINGER`].
    pub commit_linger: Duration,
}

/// The controller's snapshot pace: after reports alone, the API reads a
/// state at most this old (or four times the last snapshot's build time,
/// when that is longer).
pub const PUBLISH_EVERY: Duration = Duration::from_millis(100);

/// The controller's group commit linger: when reports come together (the
/// last round staged several), a round that holds reports or
/// registrations waits at most this long after its first command, and
/// while more keep coming, for others to share its transaction. A
/// transaction's fixed cost (the commit, its fsync, the pages every group
/// dirties) is then shared by more reports: with 5,000 sidecars reporting
/// once a second, the engine thread went from 0.83 to 0.73 of a core (20 ms
/// gave 0.71: little more, at four times the wait). A report that comes
/// alone does not wait.
pub const COMMIT_LINGER: Duration = Duration::from_millis(5);

impl Default for Options {
    fn default() -> Self {
        Options {
            auto_quarantine: BTreeSet::new(),
            history_retention: 24 * 3600,
            publish_every: Duration::ZERO,
            commit_linger: Duration::ZERO,
        }
    }
}

/// What an alert names beside its workload: the destination (or claimed
/// identity), for `name_mismatch` the name the workload gave, for `threat`
/// the feed that lists it; and the traffic behind it.
#[derive(Debug, Default)]
struct About<'a> {
    destination: String,
    claimed: Option<String>,
    listed: Option<String>,
    obs: Option<&'a Observation>,
    /// `resource_spike`: the CPU and the egress beside it.
    resource: Option<crate::model::ResourceEvidence>,
}

impl<'a> About<'a> {
    fn of(finding: Finding, obs: &'a Observation) -> Self {
        About {
            destination: finding.about,
            claimed: finding.claimed,
            listed: finding.listed,
            obs: Some(obs),
            resource: None,
        }
    }
}

/// The workload whose report is applied, as the graph and the baseline
/// know it (looked up once per report, not per observation).
struct Reporter<'a> {
    id: &'a WorkloadId,
    /// Its graph node.
    node: NodeId,
    /// Where that node is in the graph, if it was there when the report
    /// came (a node is never removed while a report is applied).
    at: Option<NodeIndex>,
    /// Its baseline identity (its profile).
    profile: NodeId,
}

impl<'a> Reporter<'a> {
    fn new(id: &'a WorkloadId, inventory: &Inventory, graph: &Graph) -> Self {
        let node = NodeId::Workload(id.clone());
        Reporter {
            id,
            profile: inventory.baseline_node(&node),
            at: graph.node(&node),
            node,
        }
    }
}

/// Distinct destinations the controller tracks per workload; traffic to
/// new ones past this is counted under [`OVERFLOW`] (and alerted once, as
/// `limit_reached`).
pub const MAX_PEERS: usize = 1000;

/// Alert events buffered per subscriber; a subscriber that falls further
/// behind skips the oldest (and is told how many).
const ALERT_EVENTS: usize = 4096;
/// Most sidecar processes whose last applied batch is remembered (for
/// duplicates); past it the half used longest ago is forgotten.
pub const MAX_SEQS: usize = 100_000;

/// Commands queued before senders wait.
const QUEUE: usize = 1024;

/// A reply held back until the snapshot that includes its change is out.
type Reply = Box<dyn FnOnce() + Send>;

/// All state, owned by the engine thread.
struct Engine {
    store: Store,
    modes: Modes,
    inventory: Inventory,
    graph: Graph,
    baseline: Baseline,
    alerts: BTreeMap<String, Alert>,
    policies: Policies,
    dropped: u64,
    /// Last applied batch per sidecar process: (seq, unix seconds).
    /// Each sidecar process's last applied batch (at most [`MAX_SEQS`]).
    seqs: HashMap<String, (u64, u64)>,
    metrics: EngineMetrics,
    /// The threat lists the `threat` detector consults.
    threats: Arc<dyn Threats + Send>,
    /// Their entries, as pushed to the sidecars.
    denied_names: Arc<BTreeSet<String>>,
    /// Every alert raised or updated, once it is durable (notifiers).
    alert_events: broadcast::Sender<Alert>,
    /// Quarantined workloads.
    quarantined: BTreeMap<WorkloadId, Quarantine>,
    /// The newest audit entries, oldest first.
    audit_log: Vec<AuditEntry>,
    /// The next audit sequence number.
    next_audit: u64,
    /// How the engine responds on its own.
    options: Options,
    /// Recent observations, for dry runs.
    history: History,
    /// The next history row number.
    history_seq: u64,
    /// When each namespace's baseline grew.
    growth: BTreeMap<String, Growth>,
    /// CPU baselines per profile and the state of each pod.
    resources: crate::resource::Tracker,
    /// The edge and node views kept between snapshots.
    views: snapshot::Views,
}

/// Loads the state from `store` and starts the engine thread, with the
/// default [`Options`].
pub fn spawn(
    store: Store,
    registry: &mut prometheus_client::registry::Registry,
) -> Result<(Handle, std::thread::JoinHandle<()>), StoreError> {
    spawn_with(store, registry, Options::default())
}

/// Loads the state from `store` and starts the engine thread.
pub fn spawn_with(
    store: Store,
    registry: &mut prometheus_client::registry::Registry,
    options: Options,
) -> Result<(Handle, std::thread::JoinHandle<()>), StoreError> {
    let loaded = store.load()?;
    if loaded.skipped > 0 {
        tracing::warn!(
            rows = loaded.skipped,
            "some stored rows were unreadable and are ignored"
        );
    }
    let epoch = store.next_policy_epoch()?;
    let mut engine = Engine {
        store,
        modes: Modes::default(),
        inventory: Inventory::default(),
        graph: Graph::default(),
        baseline: Baseline::default(),
        alerts: BTreeMap::new(),
        policies: Policies::from_epoch(epoch),
        dropped: 0,
        seqs: HashMap::new(),
        metrics: EngineMetrics::register(registry),
        threats: Arc::new(NoThreats),
        denied_names: Arc::default(),
        alert_events: broadcast::channel(ALERT_EVENTS).0,
        quarantined: BTreeMap::new(),
        audit_log: Vec::new(),
        next_audit: 0,
        history: History::new(options.history_retention),
        history_seq: 0,
        options,
        growth: BTreeMap::new(),
        resources: crate::resource::Tracker::default(),
        views: snapshot::Views::default(),
    };
    engine.load_state(loaded);
    let alerts_tx = engine.alert_events.clone();
    let (tx, rx) = mpsc::channel(QUEUE);
    let (snap_tx, snap_rx) = watch::channel(Arc::new(engine.snapshot()));
    let thread = std::thread::Builder::new()
        .name("vigil-engine".into())
        .spawn(move || engine.run(rx, snap_tx))
        .expect("spawning the engine thread");
    Ok((
        Handle {
            tx,
            snapshot: snap_rx,
            alerts: alerts_tx,
        },
        thread,
    ))
}

impl Engine {
    fn snapshot(&mut self) -> Snapshot {
        let parts = Parts {
            modes: &self.modes,
            inventory: &self.inventory,
            graph: &self.graph,
            baseline: &self.baseline,
            alerts: &self.alerts,
            dropped: self.dropped,
            quarantined: &self.quarantined,
            growth: &self.growth,
        };
        let snapshot = snapshot::build_with(&parts, &mut self.views);
        (self.metrics.edge_views_built).inc_by(self.views.built() as u64);
        snapshot
    }

    /// Applies one command; returns its reply, to be sent once the snapshot
    /// that includes it is published.
    fn apply(&mut self, cmd: Command) -> Option<Reply> {
        // Reads change nothing, a disconnection only its node, and reports
        // and registrations mark what they change when their group is
        // written (`flush`); a person's change may change any edge's view.
        if group::by_a_person(&cmd) {
            self.views.invalidate();
        }
        match cmd {
            Command::Register {
                registration,
                reply,
            } => {
                // The loop groups registrations; one alone is its own group.
                let mut group = vec![group::Staged::register(self, &registration, reply)];
                let mut replies = Vec::new();
                self.flush(&mut group, &mut replies);
                replies.pop()
            }
            Command::Disconnect { id } => {
                self.inventory.set_connected(&id, false);
                // Its node shows its sidecars.
                self.views.nodes_changed();
                self.metrics
                    .sidecars_connected
                    .set(self.inventory.connected() as i64);
                tracing::info!(workload = %id, "sidecar disconnected");
                None
            }
            Command::Report { batch, reply } => {
                // The loop groups reports; one alone is its own group.
                let mut group = vec![group::Staged::stage(self, batch, reply)];
                let mut replies = Vec::new();
                self.flush(&mut group, &mut replies);
                replies.pop()
            }
            Command::SetMode {
                namespace,
                mode,
                actor,
                reply,
            } => {
                let result = self.set_mode(namespace, mode, &actor);
                Some(Box::new(move || drop(reply.send(result))))
            }
            Command::Quarantine {
                id,
                on,
                actor,
                reply,
            } => {
                let result = if on {
                    self.quarantine(&id, &actor, "by request")
                } else {
                    self.release(&id, &actor)
                };
                Some(Box::new(move || drop(reply.send(result))))
            }
            Command::Accept {
                alert_id,
                actor,
                reply,
            } => {
                let result = self.accept(&alert_id, &actor);
                Some(Box::new(move || drop(reply.send(result))))
            }
            Command::Import {
                baseline,
                namespace,
                merge,
                actor,
                reply,
            } => {
                let result = self.import(&baseline, namespace.as_deref(), merge, &actor);
                Some(Box::new(move || drop(reply.send(result))))
            }
            Command::Export { reply } => {
                let baseline = Box::new(self.baseline.clone());
                Some(Box::new(move || drop(reply.send(Ok(baseline)))))
            }
            Command::Simulate {
                namespace,
                since,
                reply,
            } => {
                let report = crate::simulate::simulate(
                    &self.history,
                    since,
                    namespace.as_deref(),
                    &self.baseline,
                    &self.inventory,
                    &*self.threats,
                );
                Some(Box::new(move || drop(reply.send(Ok(report)))))
            }
            Command::Audit { reply } => {
                let log = self.audit_log.clone();
                Some(Box::new(move || drop(reply.send(Ok(log)))))
            }
            Command::Shutdown => None,
            Command::ResourceSamples {
                samples,
                rule,
                reply,
            } => {
                let result = self.resource_samples(&samples, &rule);
                Some(Box::new(move || drop(reply.send(result))))
            }
            Command::Discovered { found, reply } => {
                let result = self.discovered(&found);
                Some(Box::new(move || drop(reply.send(result))))
            }
            Command::SetThreats {
                threats,
                denied_names,
            } => {
                tracing::info!(entries = denied_names.len(), "threat lists updated");
                self.threats = threats;
                self.denied_names = denied_names;
                self.republish(None);
                None
            }
        }
    }

    /// Applies a registration in memory and returns what to write, whether
    /// the workload moved to another profile, and the workloads it took an
    /// inbound address from (their source IPs change too; see
    /// [`Engine::registered`], once it is written).
    fn stage_register(
        &mut self,
        registration: &Registration,
    ) -> (Changes, bool, BTreeSet<WorkloadId>) {
        let Registration {
            id,
            addrs,
            version,
            from,
            tenant,
            profile,
        } = registration;
        let (addrs, from): (&[SocketAddr], Option<IpAddr>) = (addrs, *from);
        let now = now_unix();
        let mut changes = Changes::default();
        // A known workload that moves to another profile leaves the peers
        // of its old one: every policy is recompiled then (rare).
        let before = self
            .inventory
            .get(id)
            .map(|_| self.inventory.profile_of(id));
        let pod_ips = self.inventory.get(id).map_or(&[][..], |r| &r.pod_ips[..]);
        let (addrs, refused): (Vec<SocketAddr>, Vec<SocketAddr>) = addrs
            .iter()
            .partition(|a| crate::inventory::may_advertise(**a, from, pod_ips));
        // A pod's sidecar bound to 0.0.0.0 advertises loopback, which says
        // nothing from another host: that one is dropped quietly.
        if refused.iter().any(|a| !a.ip().is_loopback()) {
            tracing::warn!(workload = %id, ?refused, ?from, "a registration advertised inbound addresses that are neither the address it came from nor pod IPs of the workload; ignored");
        }
        let addrs = addrs.as_slice();
        let mut displaced = self.inventory.owners_of(addrs);
        if let Some(owner) = from.and_then(|ip| self.inventory.registered_from_owner(ip)) {
            displaced.insert(owner.clone());
        }
        displaced.remove(id);
        self.inventory.register(id, addrs, version, from, now);
        let record = self.inventory.set_labels(id, tenant, profile).clone();
        let member = self.inventory.profile_of(id);
        let moved = before.is_some_and(|before| before != member);
        changes.workloads.push((id.clone(), record));
        self.graph.ensure_node(&NodeId::Workload(id.clone()));
        let mode = self.modes.of(&id.namespace);
        if mode == Mode::Learning && self.baseline.learn_workload(&member) {
            changes.baseline_workloads.push(member.clone());
            let growth = self.growth.entry(id.namespace.clone()).or_default();
            growth.grew(now, 1);
            changes.growth = Some(self.growth.clone());
        }
        if let Some(verdict) = detect::check_workload(mode, &self.baseline, &member) {
            tracing::warn!(workload = %id, action = ?verdict.action, "new deployment outside the baseline");
            let hits = Hits {
                count: 1,
                denied: 0,
            };
            self.raise(&mut changes, verdict, id, About::default(), hits, now);
        }
        tracing::info!(workload = %id, ?addrs, "sidecar registered");
        (changes, moved, displaced)
    }

    /// Once the registrations of `ids` are written: they are connected,
    /// and their own policies and those that name them (their addresses,
    /// their source IPs), or name a workload they took an address from
    /// (`displaced`), are published; no other policy changes, unless one
    /// `moved` to another profile (every policy then).
    fn registered(&mut self, ids: &[WorkloadId], displaced: &BTreeSet<WorkloadId>, moved: bool) {
        for id in ids {
            self.inventory.set_connected(id, true);
        }
        self.metrics
            .sidecars_connected
            .set(self.inventory.connected() as i64);
        if moved {
            self.republish(None);
        } else {
            let changed: Vec<WorkloadId> = ids.iter().chain(displaced).cloned().collect();
            let affected = policy::affected(&[], &[], &changed, &self.baseline, &self.inventory);
            self.republish(Some(&affected));
        }
        for id in ids {
            self.publish_policy(id);
        }
    }

    fn discovered(&mut self, found: &[crate::inventory::Discovered]) -> Result<(), EngineError> {
        let now = now_unix();
        let mut changes = Changes::default();
        for item in found {
            let (record, new) = self.inventory.discover(item, now);
            let record = record.clone();
            let id = &item.id;
            changes.workloads.push((id.clone(), record));
            self.graph.ensure_node(&NodeId::Workload(id.clone()));
            let mode = self.modes.of(&id.namespace);
            let member = self.inventory.profile_of(id);
            if mode == Mode::Learning && self.baseline.learn_workload(&member) {
                changes.baseline_workloads.push(member.clone());
                self.growth
                    .entry(id.namespace.clone())
                    .or_default()
                    .grew(now, 1);
                changes.growth = Some(self.growth.clone());
            }
            if new && let Some(verdict) = detect::check_workload(mode, &self.baseline, &member) {
                tracing::warn!(workload = %id, action = ?verdict.action, "new deployment seen by the Kubernetes API");
                let hits = Hits {
                    count: 1,
                    denied: 0,
                };
                self.raise(&mut changes, verdict, id, About::default(), hits, now);
            }
        }
        self.commit(&changes)?;
        self.remember_audit(&changes);
        // Discovery may move a workload between profiles: every policy.
        self.republish(None);
        Ok(())
    }

    /// Applies one observation of `reporter` (in a namespace in `mode`):
    /// graph, baseline or verdicts and alerts. Returns where the edge it
    /// touched is in the graph.
    fn observe(
        &mut self,
        changes: &mut Changes,
        mode: Mode,
        reporter: &Reporter<'_>,
        obs: &Observation,
        now: u64,
    ) -> Option<EdgeIndex> {
        let mut edge = self.edge_of(reporter, obs)?;
        // Looked up once: whether it is new, then where to count it (the
        // reporter's own end is known already).
        let known = match obs.direction {
            Direction::Outbound => self.graph.find_with(&edge, reporter.at, None),
            Direction::Inbound => self.graph.find_with(&edge, None, reporter.at),
        };
        let (reporter, reporter_profile) = (reporter.id, &reporter.profile);
        let overflow = self.is_overflow(&edge, known.is_some());
        if overflow {
            let folded = NodeId::External(OVERFLOW.to_owned());
            if self.graph.edge(&(edge.0.clone(), folded.clone())).is_none() {
                let verdict = Verdict {
                    kind: AlertKind::LimitReached,
                    action: Action::Flagged,
                };
                let about = About {
                    destination: OVERFLOW.to_owned(),
                    obs: Some(obs),
                    ..About::default()
                };
                self.raise(changes, verdict, reporter, about, Hits::of(obs), now);
            }
            self.metrics.overflowed.inc_by(obs.count);
            edge.1 = folded;
        }
        let ix = match known.filter(|_| !overflow) {
            Some(ix) => ix,
            None => self.graph.insert(&edge),
        };
        self.graph.record_at(ix, obs, now);
        if obs.count == 0 {
            // A long stream's later report: its bytes so far. The stream
            // was judged when it was counted (and is again whenever its
            // protocol changes, which the sidecar counts anew).
            return Some(ix);
        }
        let about = match obs.direction {
            Direction::Outbound => label(&edge.1),
            Direction::Inbound => label(&edge.0),
        };
        // The reporter's side as its profile, looked up once per report.
        let baseline_edge = match obs.direction {
            Direction::Outbound => (
                reporter_profile.clone(),
                self.inventory.baseline_node(&edge.1),
            ),
            Direction::Inbound => (NodeId::Internet, reporter_profile.clone()),
        };
        let judgement = detect::judge(
            &Input::new(
                mode,
                &self.baseline,
                &*self.threats,
                &baseline_edge,
                &about,
                obs,
            ),
            overflow,
        );
        for learn in judgement.learn {
            response::learn_into(&mut self.baseline, changes, learn);
        }
        let hits = Hits::of(obs);
        for finding in judgement.findings {
            self.graph.mark_violation_at(ix);
            let verdict = finding.verdict.seen(hits);
            self.raise(
                changes,
                verdict,
                reporter,
                About::of(finding, obs),
                hits,
                now,
            );
        }
        Some(ix)
    }

    /// Whether `edge` would be a workload's new destination past
    /// [`MAX_PEERS`] (or is the overflow itself): such traffic is counted
    /// under [`OVERFLOW`], never learned, so a flood of unique names costs
    /// bounded memory and time. `exists`: the graph has `edge` already.
    fn is_overflow(&self, edge: &EdgeKey, exists: bool) -> bool {
        match &edge.1 {
            NodeId::External(name) if name == OVERFLOW => true,
            _ => {
                matches!(edge.0, NodeId::Workload(_))
                    && !exists
                    && self.graph.out_degree(&edge.0) >= MAX_PEERS
            }
        }
    }

    /// The graph edge an observation belongs to. Inbound calls from another
    /// sidecar are counted by that sidecar's outbound report, so only calls
    /// from the internet (no Vigil identity) make inbound edges.
    fn edge_of(&self, reporter: &Reporter<'_>, obs: &Observation) -> Option<EdgeKey> {
        let me = reporter.node.clone();
        match obs.direction {
            Direction::Outbound => Some((me, self.inventory.destination(reporter.id, obs))),
            Direction::Inbound if obs.source.is_none() => Some((NodeId::Internet, me)),
            Direction::Inbound => None,
        }
    }

    /// Replaces the durable state in memory with what was `loaded`
    /// (connection counts and policy channels stay).
    fn load_state(&mut self, loaded: Loaded) {
        self.views.invalidate();
        self.modes = loaded.modes;
        self.baseline = loaded.baseline;
        self.alerts = loaded
            .alerts
            .into_iter()
            .map(|mut a| {
                a.upgrade();
                (a.key(), a)
            })
            .collect();
        self.seqs = loaded.report_seqs;
        self.quarantined = loaded.quarantined;
        self.growth = loaded.growth;
        self.resources.restore(loaded.resource_baselines);
        self.history = History::new(self.options.history_retention);
        let (seen, next) = loaded.history;
        for seen in seen {
            self.history.push(seen);
        }
        self.history_seq = next;
        self.audit_log = loaded.audit;
        self.next_audit = loaded.next_audit;
        self.graph = Graph::default();
        self.inventory.clear_records();
        // Oldest first, so that the newest registration owns a reused address.
        let mut workloads = loaded.workloads;
        workloads.sort_by_key(|(_, record)| record.last_seen);
        for (id, record) in workloads {
            self.graph.ensure_node(&NodeId::Workload(id.clone()));
            self.inventory.restore(id, record);
        }
        for (key, stats) in loaded.edges {
            self.graph.restore_edge(&key, stats);
        }
    }

    /// Writes one step's changes, timed. When the write fails, the step was
    /// already applied in memory: memory is reloaded from the store so that
    /// it never runs ahead of disk (the sender re-sends, nothing is counted
    /// twice).
    fn commit(&mut self, changes: &Changes) -> Result<(), StoreError> {
        self.commit_all(&[changes])
    }

    /// [`Engine::commit`] of several steps in one transaction.
    fn commit_all(&mut self, all: &[&Changes]) -> Result<(), StoreError> {
        let start = std::time::Instant::now();
        let graph = &self.graph;
        let result = self.store.write_all(all, |at| {
            let (source, target) = graph.ends(at)?;
            let stats = graph.edge_at(at)?;
            Some(crate::store::EdgeNow {
                source,
                target,
                stats,
            })
        });
        self.metrics
            .commit_seconds
            .observe(start.elapsed().as_secs_f64());
        if result.is_ok() && self.alert_events.receiver_count() > 0 {
            for alert in all.iter().flat_map(|changes| &changes.alerts) {
                // No subscriber is not an error.
                let _ = self.alert_events.send(alert.clone());
            }
        }
        if let Err(e) = &result {
            tracing::error!(error = %e, "store write failed; reloading the state from the store");
            match self.store.load() {
                Ok(loaded) => self.load_state(loaded),
                Err(e) => tracing::error!(error = %e, "reloading the store failed too"),
            }
        }
        result
    }

    fn raise(
        &mut self,
        changes: &mut Changes,
        verdict: Verdict,
        id: &WorkloadId,
        about: About<'_>,
        hits: Hits,
        now: u64,
    ) {
        let About {
            destination,
            claimed,
            listed,
            obs,
            resource,
        } = about;
        let Hits { count, denied } = hits;
        self.metrics
            .violations
            .get_or_create(&ViolationLabels {
                kind: verdict.kind.into(),
            })
            .inc_by(count);
        let key = alert_key(verdict.kind, &id.namespace, &id.name, &destination);
        let at = rfc3339(now);
        let tenant = self.inventory.tenant_of(id);
        self.views.alerts_changed();
        let alert = self.alerts.entry(key).or_insert_with_key(|key| Alert {
            id: alert_id(key),
            kind: verdict.kind,
            severity: verdict.kind.severity(),
            namespace: id.namespace.clone(),
            workload: id.name.clone(),
            tenant: String::new(),
            destination,
            action: verdict.action,
            count: 0,
            denied: 0,
            first_seen: at.clone(),
            last_seen: at.clone(),
            claimed: None,
            explanation: String::new(),
            evidence: Evidence::default(),
        });
        if claimed.is_some() {
            alert.claimed = claimed;
        }
        if listed.is_some() {
            alert.evidence.listed = listed;
        }
        if resource.is_some() {
            alert.evidence.resource = resource;
        }
        if let Some(obs) = obs {
            alert.evidence.add(obs);
        }
        if !tenant.is_empty() {
            tenant.clone_into(&mut alert.tenant);
        }
        alert.count = alert.count.saturating_add(count);
        alert.denied = alert.denied.saturating_add(denied);
        alert.action = verdict.action;
        alert.last_seen = at;
        alert.explanation = crate::explain::explain(alert);
        if verdict.kind != AlertKind::NewDeployment || alert.count == 1 {
            tracing::warn!(kind = alert.kind.as_str(), id = %alert.id, workload = %id, destination = %alert.destination, action = ?alert.action, "violation");
        }
        let auto = self.options.auto_quarantine.contains(&verdict.kind)
            && !self.quarantined.contains_key(id);
        let reason = format!("{} alert {}", alert.kind.as_str(), alert.id);
        changes.alerts.push(alert.clone());
        if auto {
            self.quarantine_into(changes, id, "auto-quarantine", &reason);
        }
    }

    fn set_mode(
        &mut self,
        namespace: Option<String>,
        mode: Mode,
        actor: &str,
    ) -> Result<Modes, EngineError> {
        let mut modes = self.modes.clone();
        let target = namespace.clone().unwrap_or_else(|| "*".to_owned());
        let old = match &namespace {
            Some(ns) => self.modes.of(ns).label(),
            None => self.modes.default.label(),
        };
        match namespace {
            Some(ns) => {
                modes.namespaces.insert(ns, mode);
            }
            None => {
                modes.default = mode;
                modes.namespaces.clear();
            }
        }
        let mut changes = Changes {
            modes: Some(modes.clone()),
            ..Changes::default()
        };
        self.audit(
            &mut changes,
            actor,
            "mode",
            &target,
            old.to_owned(),
            mode.label().to_owned(),
        );
        self.commit(&changes)?;
        self.remember_audit(&changes);
        self.modes = modes;
        tracing::info!(modes = ?self.modes, "mode changed");
        self.republish(None);
        Ok(self.modes.clone())
    }

    /// Recompiles and publishes the policy of every workload with a channel
    /// (`None`), or of those in `only` that have one; unchanged policies
    /// are not re-sent.
    fn republish(&mut self, only: Option<&BTreeSet<WorkloadId>>) {
        let ids: Vec<WorkloadId> = match only {
            None => self.policies.workloads().cloned().collect(),
            Some(set) => set
                .iter()
                .filter(|id| self.policies.has(id))
                .cloned()
                .collect(),
        };
        for id in &ids {
            self.publish_policy(id);
        }
    }

    /// Compiles and publishes the policy of `id` (creating its channel).
    fn publish_policy(&mut self, id: &WorkloadId) {
        let inputs = policy::Inputs {
            baseline: &self.baseline,
            graph: &self.graph,
            inventory: &self.inventory,
            denied_names: &self.denied_names,
            quarantined: &self.quarantined,
        };
        let mode = self.modes.of(&id.namespace);
        let spec = policy::compile(id, mode, &inputs);
        if self.policies.publish(id, spec) {
            self.metrics.policy_updates.inc();
            tracing::debug!(workload = %id, mode = mode.label(), "policy published");
        }
    }
}

#[cfg(test)]
mod tests;
