//! Read-only views of the controller's state, published by the engine after
//! each change and served by the API as JSON.
//!
//! Field names here are the JSON contract of `vigilctl` and the web view.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::baseline::Baseline;
use crate::graph::{EdgeIndex, EdgeStats, Graph};
use crate::inventory::Inventory;
use crate::model::{Alert, EdgeKey, Mode, Modes, NodeId, Quarantine, WorkloadId, rfc3339};

/// A node of the graph view.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeView {
    /// Stable id: `internet`, `workload:NS/NAME` or `external:HOST:PORT`.
    pub id: String,
    /// `workload`, `external` or `internet`.
    pub kind: String,
    /// Namespace of a workload, `null` otherwise.
    pub namespace: Option<String>,
    /// Workload name, `host:port`, or `internet`.
    pub name: String,
    /// Whether the node is part of the baseline (workloads only; other nodes
    /// are part of it when an edge to them is).
    pub in_baseline: bool,
    /// Sidecars of this workload connected now.
    pub sidecars: usize,
    /// The account that owns the workload, empty when unknown.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tenant: String,
    /// The profile whose baseline the workload shares (its name when it
    /// has none).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub profile: String,
}

/// An edge of the graph view.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EdgeView {
    /// Source node id (shared by the views this edge has had).
    pub source: Arc<str>,
    /// Target node id.
    pub target: Arc<str>,
    /// Requests (or connections) seen.
    pub requests: u64,
    /// Whether the edge was learned as normal.
    pub in_baseline: bool,
    /// Whether traffic on it violated the baseline.
    pub violation: bool,
    /// Requests the proxies denied.
    pub denied: u64,
    /// Failed requests (5xx or no response).
    pub errors: u64,
    /// Bytes sent by callers.
    pub bytes_in: u64,
    /// Bytes sent back.
    pub bytes_out: u64,
    /// Mean latency in milliseconds.
    pub mean_latency_ms: f64,
    /// Request counts per `METHOD path-template`.
    pub endpoints: BTreeMap<String, u64>,
    /// Protocols seen on the edge (shared with the edge's previous view
    /// while they stay the same).
    #[serde(default)]
    pub protocols: Arc<[String]>,
    /// Requests per HTTP status (`0`: none, e.g. a tunnel).
    #[serde(default)]
    pub statuses: BTreeMap<u16, u64>,
    /// The endpoints (`METHOD path-template`) of this call in the baseline
    /// (of the caller's and callee's profiles).
    #[serde(default)]
    pub baseline_endpoints: Arc<[String]>,
    /// RFC 3339 time of the first request.
    pub first_seen: String,
    /// RFC 3339 time of the latest request.
    pub last_seen: String,
    /// This view as JSON, encoded once (by [`Snapshot::warm`], or by the
    /// first reader that needs it first) and kept as long as the view is
    /// (see [`GraphJson`]).
    #[serde(skip)]
    pub json: EncodedOnce,
}

impl EdgeView {
    /// This view as JSON, encoded once.
    fn encoded(&self) -> &[u8] {
        self.json.0.get_or_init(|| {
            // Most views encode to 300-500 bytes: one allocation.
            let mut out = Vec::with_capacity(512);
            match serde_json::to_writer(&mut out, self) {
                Ok(()) => out.into(),
                Err(_) => bytes::Bytes::new(),
            }
        })
    }
}

/// The whole graph view.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GraphView {
    /// Nodes, sorted by id; shared with the previous snapshot while none
    /// changed (see [`Views`]).
    pub nodes: Arc<[NodeView]>,
    /// Edges, sorted by (source, target); shared with the previous
    /// snapshot where they did not change (see [`Views`]).
    pub edges: EdgeList,
}

/// Views per run of an [`EdgeList`] built whole; a run that grows to twice
/// this is split in two.
const RUN: usize = 16;

/// The edges of a graph view, sorted by (source, target), as a list of
/// runs of views ([`RUN`] to twice that, but the last). A snapshot shares
/// with the one before it each run none of whose edges changed or were
/// added, so that publishing a snapshot of 50,000 edges of which a few
/// thousand changed costs a few thousand references counted, not 50,000,
/// and so does dropping the one before. A new edge changes only the run
/// it sorts into. It reads as one list: [`EdgeList::iter`], indexing (by
/// a walk over the runs: for tests) and JSON as an array.
#[derive(Clone, Debug, Default)]
pub struct EdgeList {
    runs: Vec<Arc<[Arc<EdgeView>]>>,
    len: usize,
}

impl EdgeList {
    /// Number of edges.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there is no edge.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The edges in order.
    pub fn iter(&self) -> EdgeIter<'_> {
        self.runs.iter().flat_map(|run| run.iter())
    }

    /// The runs, in order: each shared with the snapshot before unless
    /// one of its edges changed or was added.
    pub fn runs(&self) -> &[Arc<[Arc<EdgeView>]>] {
        &self.runs
    }

    /// The edge at `i` in order (found by walking the runs).
    pub fn get(&self, mut i: usize) -> Option<&Arc<EdgeView>> {
        for run in &self.runs {
            match run.get(i) {
                Some(edge) => return Some(edge),
                None => i -= run.len(),
            }
        }
        None
    }
}

#[cfg(test)]
impl EdgeList {
    /// A list of these runs (tests: runs cut where a test wants them).
    pub(crate) fn from_runs(runs: Vec<Vec<Arc<EdgeView>>>) -> Self {
        EdgeList {
            len: runs.iter().map(Vec::len).sum(),
            runs: runs.into_iter().map(Arc::from).collect(),
        }
    }
}

impl std::ops::Index<usize> for EdgeList {
    type Output = Arc<EdgeView>;

    fn index(&self, i: usize) -> &Arc<EdgeView> {
        self.get(i).expect("an edge index within the list")
    }
}

/// The edges of an [`EdgeList`] in order.
pub type EdgeIter<'a> = std::iter::FlatMap<
    std::slice::Iter<'a, Arc<[Arc<EdgeView>]>>,
    std::slice::Iter<'a, Arc<EdgeView>>,
    fn(&'a Arc<[Arc<EdgeView>]>) -> std::slice::Iter<'a, Arc<EdgeView>>,
>;

impl<'a> IntoIterator for &'a EdgeList {
    type Item = &'a Arc<EdgeView>;
    type IntoIter = EdgeIter<'a>;

    fn into_iter(self) -> EdgeIter<'a> {
        self.iter()
    }
}

impl FromIterator<Arc<EdgeView>> for EdgeList {
    fn from_iter<I: IntoIterator<Item = Arc<EdgeView>>>(edges: I) -> Self {
        let all: Vec<_> = edges.into_iter().collect();
        EdgeList {
            len: all.len(),
            runs: all.chunks(RUN).map(Arc::from).collect(),
        }
    }
}

impl From<Vec<Arc<EdgeView>>> for EdgeList {
    fn from(edges: Vec<Arc<EdgeView>>) -> Self {
        edges.into_iter().collect()
    }
}

impl PartialEq for EdgeList {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().eq(other.iter())
    }
}

impl Serialize for EdgeList {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for EdgeList {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Vec::<Arc<EdgeView>>::deserialize(deserializer).map(EdgeList::from)
    }
}

/// Counts for `vigilctl status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Registered workloads.
    pub workloads: usize,
    /// Sidecars connected now.
    pub sidecars_connected: usize,
    /// Graph nodes.
    pub nodes: usize,
    /// Graph edges.
    pub edges: usize,
    /// Workloads in the baseline.
    pub baseline_workloads: usize,
    /// Edges in the baseline.
    pub baseline_edges: usize,
    /// Alerts.
    pub alerts: usize,
    /// Observations the sidecars reported as dropped (their buffers were full).
    pub dropped_observations: u64,
}

/// Everything the API serves, as of the engine's latest step.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Snapshot {
    /// Namespace modes.
    pub modes: Modes,
    /// The graph.
    pub graph: GraphView,
    /// Alerts, newest first.
    pub alerts: Arc<[Alert]>,
    /// Counts.
    pub counts: Counts,
    /// Quarantined workloads by `ns/name`.
    pub quarantined: BTreeMap<String, Quarantine>,
    /// Learning stability of each namespace whose baseline grew.
    pub stability: BTreeMap<String, crate::stability::Stability>,
    /// Bytes of the edges' JSON together (without separators), summed
    /// once, by [`Snapshot::warm`] or the first read: what a read needs for
    /// its Content-Length without visiting 50,000 views.
    #[serde(skip)]
    pub edges_json_len: DerivedOnce<usize>,
}

/// A value derived once from the view or snapshot that holds it (by the
/// first that needs it); equal whatever it holds, as it follows from the
/// rest.
#[derive(Clone, Debug)]
pub struct DerivedOnce<T>(std::sync::OnceLock<T>);

impl<T> Default for DerivedOnce<T> {
    fn default() -> Self {
        DerivedOnce(std::sync::OnceLock::new())
    }
}

impl<T> PartialEq for DerivedOnce<T> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// A view's JSON, encoded once.
pub type EncodedOnce = DerivedOnce<bytes::Bytes>;

/// Pieces of [`GraphJson`] are about this long (and at most one edge's
/// JSON longer).
pub const PIECE: usize = 64 << 10;

/// The graph view of a snapshot as JSON (`{"nodes":[...],"edges":[...]}`),
/// in pieces of about [`PIECE`] bytes, for `GET /api/v1/graph` to stream.
/// The nodes are encoded when it is made; each edge's JSON is its view's,
/// encoded once for as long as the view is kept from snapshot to snapshot
/// (and usually ahead of any read: [`Snapshot::warm`]), so a read of a
/// graph of 50,000 edges costs the encoding of its nodes and a copy of
/// its edges' bytes, piece by piece, with no buffer of the whole (19 MB).
#[derive(Debug)]
pub struct GraphJson<S> {
    snapshot: S,
    /// The opening and the nodes, until the first piece.
    head: Option<Vec<u8>>,
    /// The next edge to copy: its run and its place in the run.
    next: (usize, usize),
    /// Edges copied.
    copied: usize,
    /// Length of the whole JSON.
    len: usize,
    /// The closing was sent.
    ended: bool,
}

impl<S: std::ops::Deref<Target = Snapshot>> GraphJson<S> {
    /// The JSON of `snapshot`'s graph, to be read piece by piece; encodes
    /// its nodes and the edges no reader or warming encoded yet.
    pub fn new(snapshot: S) -> Self {
        // Plain data: encoding cannot fail.
        let nodes = serde_json::to_vec(&snapshot.graph.nodes).unwrap_or_else(|_| b"[]".into());
        let mut head = Vec::with_capacity(PIECE.max(nodes.len() + 32));
        head.extend_from_slice(b"{\"nodes\":");
        head.extend_from_slice(&nodes);
        head.extend_from_slice(b",\"edges\":[");
        let edges = &snapshot.graph.edges;
        let edges_len = *snapshot
            .edges_json_len
            .0
            .get_or_init(|| edges.iter().map(|e| e.encoded().len()).sum());
        let len = head.len() + edges_len + edges.len().saturating_sub(1) + 2;
        GraphJson {
            snapshot,
            head: Some(head),
            next: (0, 0),
            copied: 0,
            len,
            ended: false,
        }
    }

    /// Length in bytes of the whole JSON (the pieces together): the
    /// response's Content-Length.
    pub fn content_length(&self) -> usize {
        self.len
    }
}

impl<S: std::ops::Deref<Target = Snapshot>> Iterator for GraphJson<S> {
    type Item = bytes::Bytes;

    fn next(&mut self) -> Option<bytes::Bytes> {
        if self.ended {
            return None;
        }
        let mut out = self
            .head
            .take()
            .unwrap_or_else(|| Vec::with_capacity(PIECE));
        let edges = &self.snapshot.graph.edges;
        while let Some(run) = edges.runs.get(self.next.0)
            && out.len() < PIECE
        {
            let Some(edge) = run.get(self.next.1) else {
                self.next = (self.next.0 + 1, 0);
                continue;
            };
            if self.copied > 0 {
                out.push(b',');
            }
            out.extend_from_slice(edge.encoded());
            self.next.1 += 1;
            self.copied += 1;
        }
        if self.copied == edges.len() {
            out.extend_from_slice(b"]}");
            self.ended = true;
        }
        Some(out.into())
    }
}

impl Snapshot {
    /// The graph view as JSON, whole: the bytes
    /// `serde_json::to_vec(&self.graph)` gives, assembled from each edge's
    /// own encoding (see [`GraphJson`]).
    pub fn graph_json(&self) -> Vec<u8> {
        let pieces = GraphJson::new(self);
        let mut out = Vec::with_capacity(pieces.content_length());
        for piece in pieces {
            out.extend_from_slice(&piece);
        }
        out
    }

    /// Encodes the JSON of the edge views that no reader has encoded yet
    /// (those this snapshot's build made) and returns how many, so that
    /// the next graph read copies bytes instead of encoding. The
    /// controller runs it off the engine thread for each snapshot
    /// published (see `app`); it walks the edges from the last, so a reader
    /// that arrives meanwhile (walking from the first) shares the work
    /// instead of waiting on it.
    /// It also sums the edges' JSON lengths for the reads' Content-Length.
    pub fn warm(&self) -> usize {
        let (mut encoded, mut len) = (0, 0);
        for edge in self.graph.edges.iter().rev() {
            if edge.json.0.get().is_none() {
                encoded += 1;
            }
            len += edge.encoded().len();
        }
        // A reader that summed first found the same.
        let _ = self.edges_json_len.0.set(len);
        encoded
    }
}

/// The state the engine builds a snapshot from.
pub struct Parts<'a> {
    /// Modes.
    pub modes: &'a Modes,
    /// Inventory.
    pub inventory: &'a Inventory,
    /// Graph.
    pub graph: &'a Graph,
    /// Baseline.
    pub baseline: &'a Baseline,
    /// Alerts.
    pub alerts: &'a BTreeMap<String, Alert>,
    /// Observations reported dropped.
    pub dropped: u64,
    /// Quarantined workloads.
    pub quarantined: &'a BTreeMap<WorkloadId, Quarantine>,
    /// When each namespace's baseline grew.
    pub growth: &'a BTreeMap<String, crate::stability::Growth>,
}

/// The destination of an alert as a short label: `host:port`, `ns/name` or
/// `internet`.
pub fn label(node: &NodeId) -> String {
    match node {
        NodeId::Internet => "internet".to_owned(),
        NodeId::Workload(id) => id.to_string(),
        NodeId::External(authority) => authority.clone(),
    }
}

fn node_view(node: &NodeId, parts: &Parts<'_>) -> NodeView {
    let (namespace, name, in_baseline, sidecars) = match node {
        NodeId::Workload(id) => (
            Some(id.namespace.clone()),
            id.name.clone(),
            parts.baseline.has_workload(&parts.inventory.profile_of(id)),
            parts.inventory.connected_of(id),
        ),
        other => (None, label(other), false, 0),
    };
    let (tenant, profile) = match node {
        NodeId::Workload(id) => parts.inventory.get(id).map_or_else(Default::default, |r| {
            (
                r.tenant.clone(),
                if r.profile.is_empty() {
                    id.name.clone()
                } else {
                    r.profile.clone()
                },
            )
        }),
        _ => Default::default(),
    };
    NodeView {
        id: node.to_string(),
        kind: node.kind().to_owned(),
        namespace,
        name,
        in_baseline,
        sidecars,
        tenant,
        profile,
    }
}

/// The view of the edge `s -> t`.
fn edge_view(s: &NodeId, t: &NodeId, stats: &EdgeStats, parts: &Parts<'_>) -> EdgeView {
    let key = (
        parts.inventory.baseline_node(s),
        parts.inventory.baseline_node(t),
    );
    let known = parts.baseline.known(&key);
    let fixed = Fixed {
        source: s.to_string().into(),
        target: t.to_string().into(),
        in_baseline: known.is_some_and(|k| k.edge),
        baseline_endpoints: known
            .into_iter()
            .flat_map(|k| k.endpoints())
            .cloned()
            .collect(),
        protocols: stats.protocols.iter().cloned().collect(),
    };
    view_of(stats, fixed)
}

/// What an edge's view shows beside its counts: its ids, what the baseline
/// knows of it, its protocols. A view rebuilt because only the statistics
/// changed shares these with the view it replaces instead of copying them.
struct Fixed {
    source: Arc<str>,
    target: Arc<str>,
    in_baseline: bool,
    baseline_endpoints: Arc<[String]>,
    protocols: Arc<[String]>,
}

impl Fixed {
    /// `kept`'s, for its edge's new `stats`: the protocols are shared while
    /// they are the same.
    fn of(kept: &EdgeView, stats: &EdgeStats) -> Self {
        let protocols = if kept.protocols.iter().eq(&stats.protocols) {
            kept.protocols.clone()
        } else {
            stats.protocols.iter().cloned().collect()
        };
        Fixed {
            source: kept.source.clone(),
            target: kept.target.clone(),
            in_baseline: kept.in_baseline,
            baseline_endpoints: kept.baseline_endpoints.clone(),
            protocols,
        }
    }
}

/// The view of an edge from its statistics and what else it shows.
fn view_of(stats: &EdgeStats, fixed: Fixed) -> EdgeView {
    EdgeView {
        source: fixed.source,
        target: fixed.target,
        requests: stats.requests,
        in_baseline: fixed.in_baseline,
        violation: stats.violation,
        denied: stats.denied,
        errors: stats.errors,
        bytes_in: stats.bytes_in,
        bytes_out: stats.bytes_out,
        mean_latency_ms: if stats.requests == 0 {
            0.0
        } else {
            stats.latency_sum_us as f64 / stats.requests as f64 / 1000.0
        },
        endpoints: stats.endpoints.clone(),
        protocols: fixed.protocols,
        statuses: stats.statuses.clone(),
        baseline_endpoints: fixed.baseline_endpoints,
        first_seen: rfc3339(stats.first_seen),
        last_seen: rfc3339(stats.last_seen),
        json: EncodedOnce::default(),
    }
}

/// The views kept from one snapshot to the next, so that a snapshot
/// rebuilds only the edges whose statistics changed since the last one
/// (and shares the others with it): with 50,000 edges, a second of reports
/// touches a few thousand. The node views are shared whole until one of
/// them may have changed.
///
/// An edge's view depends on its statistics and on the baseline and
/// inventory (whether the edge is in the baseline, its baseline
/// endpoints). The engine marks the edges a report touched
/// ([`Views::touch`]) and the edges whose baseline entry a report
/// learned ([`Views::learned`]), and makes the whole cache stale
/// ([`Views::invalidate`]) on anything else but reads and
/// disconnections: a registration, any other command, a reload.
///
/// The alerts, sorted newest first, are shared too until
/// [`Views::alerts_changed`] (the engine marks it wherever it raises one)
/// or [`Views::invalidate`].
///
/// A node's view depends on the inventory (its sidecars, tenant and
/// profile) and on whether the baseline has its profile. The node views
/// are rebuilt when the graph has a node they do not show, after
/// [`Views::invalidate`], and after [`Views::nodes_changed`]: a
/// disconnection, or a report that learned a workload. Debug builds check
/// every kept set against a fresh build.
#[derive(Debug)]
pub struct Views {
    /// Each edge's view, by the edge's graph handle (see [`Graph::find`]).
    slots: Vec<Option<Arc<EdgeView>>>,
    /// The views in order of (source id, target id), the order of
    /// [`GraphView::edges`], in runs (see [`EdgeList`]), by run id: a
    /// run's id stays while runs are split around it.
    runs: Vec<Run>,
    /// The run ids, in order.
    run_order: Vec<u32>,
    /// The id of the run that holds each handle's view, by handle.
    run_of: Vec<u32>,
    /// Edges whose statistics changed since the last build: a kept view
    /// keeps what the baseline knows of its edge (its ids too).
    touched: Handles,
    /// Edges whose baseline entry changed since the last build: rebuilt
    /// whole.
    relearned: Handles,
    /// Every view must be rebuilt.
    stale: bool,
    /// Edge views the last build built.
    built: usize,
    /// The node views, sorted by id, kept for the graph's node count.
    nodes: Kept<NodeView>,
    /// The alerts, newest first.
    alerts: Kept<Alert>,
}

/// A list built from the engine's state and shared whole from snapshot to
/// snapshot until it is marked changed or `of` (what it was built for,
/// such as how many nodes) differs.
#[derive(Debug)]
struct Kept<T> {
    list: Option<(Arc<[T]>, usize)>,
}

impl<T> Default for Kept<T> {
    fn default() -> Self {
        Kept { list: None }
    }
}

impl<T: PartialEq> Kept<T> {
    /// The next [`Kept::get`] builds the list again.
    fn changed(&mut self) {
        self.list = None;
    }

    /// The list kept for `of`, or `build`'s. Debug builds check a kept
    /// list against a fresh build, and panic with `unmarked` when they
    /// differ: a change the engine did not mark.
    fn get(&mut self, of: usize, build: impl Fn() -> Arc<[T]>, unmarked: &str) -> Arc<[T]> {
        match &self.list {
            Some((kept, was)) if *was == of => {
                debug_assert!(**kept == *build(), "{unmarked}");
                kept.clone()
            }
            _ => self.list.insert((build(), of)).0.clone(),
        }
    }
}

/// A run of edge views in order: their handles, and the views as the last
/// [`EdgeList`] holds them (to be shared with the next unless `dirty`).
#[derive(Debug, Default)]
struct Run {
    handles: Vec<EdgeIndex>,
    views: Arc<[Arc<EdgeView>]>,
    /// A view of the run was replaced or added since `views` was built.
    dirty: bool,
}

/// Where edges are in the graph: the graph's own numbers, so a fast hash
/// is enough.
type Handles = HashSet<EdgeIndex, foldhash::fast::RandomState>;

impl Default for Views {
    fn default() -> Self {
        Views {
            slots: Vec::new(),
            runs: Vec::new(),
            run_order: Vec::new(),
            run_of: Vec::new(),
            touched: Handles::default(),
            relearned: Handles::default(),
            stale: true,
            built: 0,
            nodes: Kept::default(),
            alerts: Kept::default(),
        }
    }
}

impl Views {
    /// The statistics of the edges at `handles` (see [`Graph::find`])
    /// changed (and nothing else did).
    pub fn touch(&mut self, handles: impl IntoIterator<Item = EdgeIndex>) {
        if !self.stale {
            self.touched.extend(handles);
        }
    }

    /// The baseline learned `keys` (edges as the baseline knows them:
    /// workloads as their profiles): the views of every graph edge they
    /// stand for (any member of either profile) are rebuilt, since whether
    /// an edge is in the baseline, and its baseline endpoints, come from
    /// its key. A learned DNS name or destination touches only its edges.
    pub fn learned<'a>(
        &mut self,
        keys: impl IntoIterator<Item = &'a EdgeKey>,
        inventory: &Inventory,
        graph: &Graph,
    ) {
        if self.stale {
            return;
        }
        for (a, b) in keys {
            let (sources, targets) = (members(a, inventory), members(b, inventory));
            for s in &sources {
                for t in &targets {
                    if let Some(at) = graph.find(&(s.clone(), t.clone())) {
                        self.relearned.insert(at);
                    }
                }
            }
        }
    }

    /// Something other than edge statistics changed: the next build
    /// rebuilds every view.
    pub fn invalidate(&mut self) {
        self.stale = true;
        self.touched.clear();
        self.relearned.clear();
        self.nodes.changed();
        self.alerts.changed();
    }

    /// An alert was raised or counted again: the next build sorts the
    /// alerts again.
    pub fn alerts_changed(&mut self) {
        self.alerts.changed();
    }

    /// The alerts, newest first: those kept, unless marked changed.
    fn alerts(&mut self, parts: &Parts<'_>) -> Arc<[Alert]> {
        let sorted = || sorted_alerts(parts);
        self.alerts
            .get(0, sorted, "an alert changed without Views::alerts_changed")
    }

    /// A node's view may have changed (a sidecar disconnected, the
    /// baseline learned a workload): the next build rebuilds the node
    /// views.
    pub fn nodes_changed(&mut self) {
        self.nodes.changed();
    }

    /// The node views, sorted by id: those kept, unless the graph has a
    /// node more or they were marked changed.
    fn nodes(&mut self, parts: &Parts<'_>) -> Arc<[NodeView]> {
        let built = || node_views(parts);
        self.nodes.get(
            parts.graph.len().0,
            built,
            "a node view changed without Views::nodes_changed",
        )
    }

    /// How many views the last snapshot built (the others it shared with
    /// the one before).
    pub fn built(&self) -> usize {
        self.built
    }

    /// The ids of the view at `at`, which is kept.
    fn ids(&self, at: EdgeIndex) -> (&str, &str) {
        let view = self.slots[at.index()].as_ref().expect("an ordered view");
        (&view.source, &view.target)
    }

    /// Brings the views up to date with `parts`; the edges, sorted by
    /// (source, target).
    fn refresh(&mut self, parts: &Parts<'_>) -> EdgeList {
        if self.stale {
            self.built = parts.graph.len().1;
            // A view equal to the one kept is kept (with its encoded JSON,
            // and the web view's delta sees it unchanged by pointer). The
            // handles may stand for other edges after a reload: equal
            // views have equal ids.
            let old = std::mem::take(&mut self.slots);
            let mut order = Vec::with_capacity(self.built);
            for (at, s, t, stats) in parts.graph.edges_at() {
                let view = edge_view(s, t, stats, parts);
                let view = match old.get(at.index()) {
                    Some(Some(kept)) if **kept == view => kept.clone(),
                    _ => Arc::new(view),
                };
                put(&mut self.slots, at, view);
                order.push(at);
            }
            order.sort_unstable_by(|a, b| self.ids(*a).cmp(&self.ids(*b)));
            self.stale = false;
            self.runs.clear();
            self.run_order.clear();
            self.run_of.clear();
            self.run_of.resize(self.slots.len(), u32::MAX);
            for handles in order.chunks(RUN) {
                let id = self.runs.len() as u32;
                for at in handles {
                    self.run_of[at.index()] = id;
                }
                self.runs.push(Run {
                    handles: handles.to_vec(),
                    views: Arc::from([]),
                    dirty: true,
                });
                self.run_order.push(id);
            }
        } else {
            let relearned = std::mem::take(&mut self.relearned);
            if !relearned.is_empty() {
                self.touched.retain(|at| !relearned.contains(at));
            }
            self.built = self.touched.len() + relearned.len();
            let touched = std::mem::take(&mut self.touched);
            let all = (touched.iter().map(|&at| (at, false)))
                .chain(relearned.iter().map(|&at| (at, true)));
            for (at, learned) in all {
                let (Some(stats), Some((s, t))) = (parts.graph.edge_at(at), parts.graph.ends(at))
                else {
                    // Edges are never removed from a graph; a reload
                    // invalidates every view.
                    continue;
                };
                let kept = self.slots.get(at.index()).and_then(Option::as_ref);
                let view = match kept {
                    // Only statistics changed: the kept view's ids and
                    // baseline entry stand (no profile or baseline lookup).
                    Some(kept) if !learned => view_of(stats, Fixed::of(kept, stats)),
                    _ => edge_view(s, t, stats, parts),
                };
                let new = kept.is_none();
                put(&mut self.slots, at, view);
                if new {
                    self.insert(at);
                } else {
                    self.runs[self.run_of[at.index()] as usize].dirty = true;
                }
            }
            self.touched = touched;
            self.touched.clear();
        }
        let (mut runs, mut len) = (Vec::with_capacity(self.run_order.len()), 0);
        for &id in &self.run_order {
            let run = &mut self.runs[id as usize];
            if run.dirty {
                let slots = &self.slots;
                run.views = (run.handles.iter())
                    .map(|at| slots[at.index()].clone().expect("an ordered view"))
                    .collect();
                run.dirty = false;
            }
            len += run.handles.len();
            runs.push(run.views.clone());
        }
        debug_assert_eq!(len, parts.graph.len().1);
        EdgeList { runs, len }
    }

    /// Puts the new view at `at` (in its slot already) in its place in
    /// order: in the run it sorts into, which is split in two when it
    /// grows to twice [`RUN`].
    fn insert(&mut self, at: EdgeIndex) {
        if self.run_of.len() < self.slots.len() {
            self.run_of.resize(self.slots.len(), u32::MAX);
        }
        let key = self.ids(at);
        // The last run whose first view sorts before the new one (or the
        // first run).
        let place = self
            .run_order
            .partition_point(|&id| self.ids(self.runs[id as usize].handles[0]) < key)
            .saturating_sub(1);
        let Some(&id) = self.run_order.get(place) else {
            self.run_of[at.index()] = 0;
            self.runs.push(Run {
                handles: vec![at],
                views: Arc::from([]),
                dirty: true,
            });
            self.run_order.push(0);
            return;
        };
        let run = &self.runs[id as usize];
        let i = run.handles.partition_point(|&o| self.ids(o) < key);
        let run = &mut self.runs[id as usize];
        run.handles.insert(i, at);
        run.dirty = true;
        self.run_of[at.index()] = id;
        if run.handles.len() >= 2 * RUN {
            let handles = run.handles.split_off(RUN);
            let next = self.runs.len() as u32;
            for at in &handles {
                self.run_of[at.index()] = next;
            }
            self.runs.push(Run {
                handles,
                views: Arc::from([]),
                dirty: true,
            });
            self.run_order.insert(place + 1, next);
        }
    }
}

/// Puts `view` in `slots` at `at`, growing them as needed.
fn put(slots: &mut Vec<Option<Arc<EdgeView>>>, at: EdgeIndex, view: impl Into<Arc<EdgeView>>) {
    let at = at.index();
    if slots.len() <= at {
        slots.resize(at + 1, None);
    }
    slots[at] = Some(view.into());
}

/// The graph nodes a baseline node stands for: a profile's member
/// workloads (and a workload of that name), or the node itself.
fn members(node: &NodeId, inventory: &Inventory) -> Vec<NodeId> {
    match node {
        NodeId::Workload(profile) => std::iter::once(profile)
            .chain(inventory.members_of(profile).filter(|id| *id != profile))
            .map(|id| NodeId::Workload(id.clone()))
            .collect(),
        other => vec![other.clone()],
    }
}

/// Every alert, newest first, then by key.
fn sorted_alerts(parts: &Parts<'_>) -> Arc<[Alert]> {
    // The map is in key order and the sort is stable: alerts seen in the
    // same second stay in key order.
    let mut alerts: Vec<Alert> = parts.alerts.values().cloned().collect();
    alerts.sort_by(|a, b| b.last_seen.cmp(&a.last_seen));
    alerts.into()
}

/// Every node's view, sorted by id.
fn node_views(parts: &Parts<'_>) -> Arc<[NodeView]> {
    let mut nodes: Vec<_> = parts.graph.nodes().map(|n| node_view(n, parts)).collect();
    nodes.sort_by(|a, b| a.id.cmp(&b.id));
    nodes.into()
}

/// Builds the snapshot: every view from `parts` (see [`Views`]).
pub fn build(parts: &Parts<'_>) -> Snapshot {
    build_with(parts, &mut Views::default())
}

/// Builds the snapshot, rebuilding only the edge views `views` says
/// changed.
pub fn build_with(parts: &Parts<'_>, views: &mut Views) -> Snapshot {
    let nodes = views.nodes(parts);
    let edges = views.refresh(parts);
    let alerts = views.alerts(parts);
    let (baseline_workloads, baseline_edges) = parts.baseline.len();
    let counts = Counts {
        workloads: parts.inventory.workloads().count(),
        sidecars_connected: parts.inventory.connected(),
        nodes: nodes.len(),
        edges: edges.len(),
        baseline_workloads,
        baseline_edges,
        alerts: alerts.len(),
        dropped_observations: parts.dropped,
    };
    Snapshot {
        modes: parts.modes.clone(),
        graph: GraphView { nodes, edges },
        alerts,
        counts,
        quarantined: parts
            .quarantined
            .iter()
            .map(|(id, q)| (id.to_string(), q.clone()))
            .collect(),
        stability: {
            let now = crate::model::now_unix();
            parts
                .growth
                .iter()
                .map(|(ns, g)| (ns.clone(), crate::stability::stability(g, now)))
                .collect()
        },
        edges_json_len: DerivedOnce::default(),
    }
}

/// The mode label of every namespace the snapshot knows, plus the default.
pub fn namespace_modes(snapshot: &Snapshot) -> BTreeMap<String, Mode> {
    let mut out = snapshot.modes.namespaces.clone();
    for node in snapshot.graph.nodes.iter() {
        if let Some(ns) = &node.namespace {
            out.entry(ns.clone())
                .or_insert_with(|| snapshot.modes.of(ns));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::outbound;

    struct State {
        modes: Modes,
        inventory: Inventory,
        graph: Graph,
        baseline: Baseline,
        alerts: BTreeMap<String, Alert>,
        quarantined: BTreeMap<WorkloadId, Quarantine>,
        growth: BTreeMap<String, crate::stability::Growth>,
    }

    impl State {
        fn empty() -> Self {
            State {
                modes: Modes::default(),
                inventory: Inventory::default(),
                graph: Graph::default(),
                baseline: Baseline::default(),
                alerts: BTreeMap::new(),
                quarantined: BTreeMap::new(),
                growth: BTreeMap::new(),
            }
        }

        fn parts(&self) -> Parts<'_> {
            Parts {
                modes: &self.modes,
                inventory: &self.inventory,
                graph: &self.graph,
                baseline: &self.baseline,
                alerts: &self.alerts,
                dropped: 0,
                quarantined: &self.quarantined,
                growth: &self.growth,
            }
        }
    }

    fn workload(name: &str) -> NodeId {
        NodeId::Workload(WorkloadId::new("ns", name).unwrap())
    }

    /// The graph a snapshot built from kept views shows is the one a build
    /// from scratch shows, step after step, and an edge nothing touched is
    /// shared with the previous snapshot rather than rebuilt. `a1` and
    /// `a2` share the profile `a`: learning `a -> db` shows on both edges.
    #[test]
    fn kept_views_match_a_full_build() {
        let mut state = State::empty();
        for name in ["a1", "a2"] {
            let found = crate::inventory::Discovered {
                id: WorkloadId::new("ns", name).unwrap(),
                profile: "a".into(),
                ..Default::default()
            };
            state.inventory.discover(&found, 1_800_000_000);
        }
        let pypi: EdgeKey = (workload("a1"), NodeId::External("pypi.org:443".into()));
        let db1: EdgeKey = (workload("a1"), workload("db"));
        let db2: EdgeKey = (workload("a2"), workload("db"));
        let pool: EdgeKey = (workload("a2"), NodeId::External("pool.example:3333".into()));
        let a_db: EdgeKey = (workload("a"), workload("db"));
        let dns: EdgeKey = (workload("a"), NodeId::External("pypi.org:53".into()));
        let mut views = Views::default();
        let mut previous: Option<Snapshot> = None;
        // (step, edges recorded and touched, baseline key learned,
        // edges whose view changes)
        type Step<'a> = (
            &'a str,
            &'a [&'a EdgeKey],
            Option<&'a EdgeKey>,
            &'a [&'a EdgeKey],
        );
        let pool_a: EdgeKey = (workload("a"), NodeId::External("pool.example:3333".into()));
        let steps: [Step<'_>; 8] = [
            ("first reports", &[&pypi, &db1, &db2], None, &[]),
            ("the same edge again", &[&pypi], None, &[&pypi]),
            ("a new edge", &[&pool], None, &[&pool]),
            ("learning for a profile", &[], Some(&a_db), &[&db1, &db2]),
            ("learning what has no edge", &[], Some(&dns), &[]),
            // A kept view keeps what the baseline knows of its edge.
            ("a report on a learned edge", &[&db1], None, &[&db1]),
            // Reported and learned at once: learned wins.
            ("a report that learns", &[&pool], Some(&pool_a), &[&pool]),
            ("nothing", &[], None, &[]),
        ];
        for (step, touched, learned, changed) in steps {
            for (i, edge) in touched.iter().enumerate() {
                let mut obs = outbound(&edge.1.to_string(), None, 1 + i as u64);
                obs.latency_sum_us = 700;
                state.graph.record(edge, &obs, 1_800_000_000 + i as u64);
            }
            views.touch(touched.iter().filter_map(|e| state.graph.find(e)));
            if let Some(key) = learned {
                state.baseline.learn_edge(key);
                views.learned([key], &state.inventory, &state.graph);
            }
            let kept = build_with(&state.parts(), &mut views);
            let full = build(&state.parts());
            assert_eq!(kept.graph, full.graph, "{step}");
            // The JSON assembled from each edge's own encoding is the
            // graph's, edges kept from the last snapshot included.
            assert_eq!(
                kept.graph_json(),
                serde_json::to_vec(&kept.graph).unwrap(),
                "{step}"
            );
            if let Some(previous) = &previous {
                for edge in &kept.graph.edges {
                    let ids = |e: &&EdgeKey| {
                        (
                            Arc::<str>::from(e.0.to_string()),
                            Arc::<str>::from(e.1.to_string()),
                        )
                    };
                    let is = (edge.source.clone(), edge.target.clone());
                    let before = previous
                        .graph
                        .edges
                        .iter()
                        .find(|e| (&e.source, &e.target) == (&is.0, &is.1));
                    if let Some(before) = before {
                        assert_eq!(
                            Arc::ptr_eq(before, edge),
                            !changed.iter().map(ids).any(|c| c == is),
                            "{step}: {} -> {} rebuilt only if it changed",
                            edge.source,
                            edge.target
                        );
                    }
                }
            }
            previous = Some(kept);
        }
        let last = previous.unwrap();
        assert_eq!(last.graph.edges.len(), 4);
        let in_baseline: Vec<_> = (last.graph.edges.iter())
            .filter(|e| e.in_baseline)
            .map(|e| &*e.source)
            .collect();
        // a1 -> db, a2 -> db (profile a), and a2 -> the pool, learned as
        // it was reported.
        assert_eq!(
            in_baseline,
            ["workload:ns/a1", "workload:ns/a2", "workload:ns/a2"]
        );
    }

    /// A rebuild of every view (after a registration or any other
    /// command) keeps the views that did not change, with their encoded
    /// JSON, and replaces those that did.
    #[test]
    fn a_full_rebuild_keeps_the_views_that_did_not_change() {
        let mut state = State::empty();
        let pypi: EdgeKey = (workload("a"), NodeId::External("pypi.org:443".into()));
        let db: EdgeKey = (workload("a"), workload("db"));
        let mut views = Views::default();
        for edge in [&pypi, &db] {
            state
                .graph
                .record(edge, &outbound("x", None, 1), 1_800_000_000);
        }
        let before = build_with(&state.parts(), &mut views);
        assert_eq!(
            before.graph_json(),
            serde_json::to_vec(&before.graph).unwrap()
        );
        state.baseline.learn_edge(&db);
        views.invalidate();
        let after = build_with(&state.parts(), &mut views);
        let find = |snap: &Snapshot, target: &str| {
            let edge = snap.graph.edges.iter().find(|e| &*e.target == target);
            edge.unwrap().clone()
        };
        let pypi_ids = pypi.1.to_string();
        assert!(Arc::ptr_eq(
            &find(&before, &pypi_ids),
            &find(&after, &pypi_ids)
        ));
        let (db_before, db_after) = (
            find(&before, "workload:ns/db"),
            find(&after, "workload:ns/db"),
        );
        assert!(!Arc::ptr_eq(&db_before, &db_after));
        assert!(!db_before.in_baseline && db_after.in_baseline);
        assert_eq!(
            after.graph_json(),
            serde_json::to_vec(&after.graph).unwrap()
        );
    }

    /// Warming encodes the views no reader has encoded, once: after it, a
    /// snapshot that kept every view but one has one view to encode, and
    /// the graph JSON assembled from the warmed views is serde_json's.
    #[test]
    fn warming_encodes_each_new_view_once() {
        let mut state = State::empty();
        let edges: Vec<EdgeKey> = ["pypi.org:443", "github.com:443", "pool.example:3333"]
            .iter()
            .map(|d| (workload("a"), NodeId::External((*d).into())))
            .collect();
        let mut views = Views::default();
        for edge in &edges {
            let obs = outbound(&edge.1.to_string(), None, 1);
            state.graph.record(edge, &obs, 1_800_000_000);
        }
        let first = build_with(&state.parts(), &mut views);
        assert_eq!(first.warm(), 3, "a first snapshot: every view");
        assert_eq!(first.warm(), 0, "warmed already");
        let serde_len = serde_json::to_vec(&first.graph).unwrap().len();
        assert_eq!(
            GraphJson::new(&first).content_length(),
            serde_len,
            "the summed length"
        );
        assert_eq!(
            first.graph_json(),
            serde_json::to_vec(&first.graph).unwrap()
        );
        let obs = outbound(&edges[2].1.to_string(), None, 1);
        state.graph.record(&edges[2], &obs, 1_800_000_001);
        views.touch(state.graph.find(&edges[2]));
        let second = build_with(&state.parts(), &mut views);
        assert_eq!(second.warm(), 1, "only the view a report touched");
        assert_eq!(
            second.graph_json(),
            serde_json::to_vec(&second.graph).unwrap()
        );
        // A reader that came first leaves nothing to warm.
        views.touch(state.graph.find(&edges[0]));
        let third = build_with(&state.parts(), &mut views);
        third.graph_json();
        assert_eq!(third.warm(), 0);
    }

    /// The graph JSON comes in pieces of about [`PIECE`] bytes that add up
    /// to its announced length and, together, to serde_json's encoding; a
    /// graph without edges is one piece.
    #[test]
    fn the_graph_json_comes_in_pieces() {
        let mut state = State::empty();
        for i in 0..600 {
            let edge: EdgeKey = (
                workload(&format!("w{}", i % 7)),
                NodeId::External(format!("svc-{i}.example.com:443")),
            );
            let obs = outbound(&edge.1.to_string(), None, 1 + i);
            state.graph.record(&edge, &obs, 1_800_000_000);
        }
        let many = build(&state.parts());
        let empty = build(&State::empty().parts());
        for (name, snapshot, at_least) in [("600 edges", &many, 3), ("no edge", &empty, 1)] {
            let json = GraphJson::new(snapshot);
            let len = json.content_length();
            let pieces: Vec<bytes::Bytes> = json.collect();
            assert!(pieces.len() >= at_least, "{name}: {} pieces", pieces.len());
            let longest_edge = (snapshot.graph.edges.iter())
                .map(|e| e.encoded().len() + 1)
                .max()
                .unwrap_or(0);
            for piece in &pieces[1..] {
                assert!(piece.len() <= PIECE + longest_edge + 2, "{name}");
            }
            let whole = pieces.concat();
            assert_eq!(whole.len(), len, "{name}: the Content-Length");
            assert_eq!(
                whole,
                serde_json::to_vec(&snapshot.graph).unwrap(),
                "{name}"
            );
        }
    }

    /// A snapshot shares with the one before it every run of edge views
    /// none of whose edges changed; a new edge changes only the run it
    /// sorts into, which splits in two at twice [`RUN`]; the list stays
    /// the one a full build gives, in order, whatever was touched or
    /// inserted where.
    #[test]
    fn edge_runs_are_shared_unless_an_edge_in_them_changed() {
        let mut state = State::empty();
        let host = |name: &str| NodeId::External(format!("{name}.example:443"));
        let edge = |name: &str| (workload("a"), host(name));
        let mut views = Views::default();
        let record = |state: &mut State, views: &mut Views, name: &str, at: u64| {
            let key = edge(name);
            state.graph.ensure_node(&key.1);
            state
                .graph
                .record(&key, &outbound(&key.1.to_string(), None, 1), at);
            views.touch(state.graph.find(&key));
        };
        // 100 edges: runs of 16, the last of 4.
        for i in 0..100 {
            record(&mut state, &mut views, &format!("h{i:03}"), 1_800_000_000);
        }
        let check = |views: &mut Views, state: &State| {
            let kept = build_with(&state.parts(), views);
            assert_eq!(kept.graph, build(&state.parts()).graph);
            let runs: Vec<usize> = kept.graph.edges.runs.iter().map(|r| r.len()).collect();
            let n = kept.graph.edges.len();
            assert_eq!(runs.iter().sum::<usize>(), n);
            assert!(runs.iter().all(|&r| r < 2 * RUN), "{runs:?}");
            kept
        };
        let first = check(&mut views, &state);
        assert_eq!(first.graph.edges.runs.len(), 7);
        // Whether each run of `b` is one of `a`'s, shared.
        let shared = |a: &Snapshot, b: &Snapshot| -> Vec<bool> {
            let old = &a.graph.edges.runs;
            (b.graph.edges.runs.iter())
                .map(|run| old.iter().any(|o| Arc::ptr_eq(o, run)))
                .collect()
        };
        // One edge counts up: only its run is new.
        record(&mut state, &mut views, "h040", 1_800_000_001);
        let second = check(&mut views, &state);
        assert_eq!(second.graph.edges[40].requests, 2);
        assert_eq!(
            shared(&first, &second),
            [true, true, false, true, true, true, true]
        );
        // A new edge between h040 and h041 (place 41), and one counting
        // up before it: their two runs are rebuilt.
        record(&mut state, &mut views, "h0405", 1_800_000_002);
        record(&mut state, &mut views, "h001", 1_800_000_002);
        let third = check(&mut views, &state);
        assert_eq!(&*third.graph.edges[41].target, "external:h0405.example:443");
        assert_eq!(&*third.graph.edges[42].target, "external:h041.example:443");
        assert_eq!(third.graph.edges.len(), 101);
        assert_eq!(
            shared(&second, &third),
            [false, true, false, true, true, true, true]
        );
        // A new edge at the very end, and nothing else: a new last run.
        record(&mut state, &mut views, "z", 1_800_000_003);
        let fourth = check(&mut views, &state);
        assert_eq!(&*fourth.graph.edges[101].target, "external:z.example:443");
        assert_eq!(
            shared(&third, &fourth),
            [true, true, true, true, true, true, false]
        );
        // 15 more into the run of h0405 (17 views): at 32 it splits in
        // two, the rest shared.
        for k in 0..15 {
            record(
                &mut state,
                &mut views,
                &format!("h040x{k:02}"),
                1_800_000_004,
            );
        }
        let split = check(&mut views, &state);
        assert_eq!(
            shared(&fourth, &split),
            [true, true, false, false, true, true, true, true]
        );
        let runs: Vec<usize> = split.graph.edges.runs.iter().map(|r| r.len()).collect();
        assert_eq!(runs, [16, 16, 16, 16, 16, 16, 16, 5]);
        assert_eq!(
            &*split.graph.edges[42].target,
            "external:h040x00.example:443"
        );
        assert_eq!(&*split.graph.edges[57].target, "external:h041.example:443");
        // h041, moved to the new run by the split, counts up: that run.
        record(&mut state, &mut views, "h041", 1_800_000_005);
        let moved = check(&mut views, &state);
        assert_eq!(moved.graph.edges[57].requests, 2);
        assert_eq!(
            shared(&split, &moved),
            [true, true, true, false, true, true, true, true]
        );
        // Nothing: every run shared. A full rebuild: equal lists.
        let fifth = check(&mut views, &state);
        assert!(shared(&moved, &fifth).iter().all(|&s| s));
        views.invalidate();
        let sixth = check(&mut views, &state);
        assert_eq!(fifth.graph.edges, sixth.graph.edges);
        // The list reads as one, from either end and as JSON.
        let ids: Vec<&str> = sixth.graph.edges.iter().map(|e| &*e.target).collect();
        let mut reversed: Vec<&str> = sixth.graph.edges.iter().rev().map(|e| &*e.target).collect();
        reversed.reverse();
        assert_eq!(ids, reversed);
        let json = serde_json::to_vec(&sixth.graph.edges).unwrap();
        let back: EdgeList = serde_json::from_slice(&json).unwrap();
        assert_eq!(back, sixth.graph.edges);
        assert_eq!(
            sixth.graph_json(),
            serde_json::to_vec(&sixth.graph).unwrap()
        );
    }

    /// The node views are shared whole from snapshot to snapshot until
    /// the graph has a new node or one may have changed (a disconnection,
    /// a learned workload, anything else that invalidates), and then show
    /// the change.
    #[test]
    fn node_views_are_shared_until_one_may_have_changed() {
        let mut state = State::empty();
        let a = WorkloadId::new("ns", "a").unwrap();
        let found = crate::inventory::Discovered {
            id: a.clone(),
            ..Default::default()
        };
        state.inventory.discover(&found, 1_800_000_000);
        state.inventory.set_connected(&a, true);
        state.graph.ensure_node(&workload("a"));
        let mut views = Views::default();
        let first = build_with(&state.parts(), &mut views);
        let node = |s: &Snapshot, id: &str| s.graph.nodes.iter().find(|n| n.id == id).cloned();
        assert_eq!(node(&first, "workload:ns/a").unwrap().sidecars, 1);
        // Edge statistics alone: the same node views.
        let pypi: EdgeKey = (workload("a"), NodeId::External("pypi.org:443".into()));
        state.graph.ensure_node(&pypi.1);
        let second = build_with(&state.parts(), &mut views);
        assert!(!Arc::ptr_eq(&first.graph.nodes, &second.graph.nodes));
        assert!(
            node(&second, "external:pypi.org:443").is_some(),
            "a new node shows"
        );
        let obs = outbound("pypi.org:443", None, 1);
        state.graph.record(&pypi, &obs, 1_800_000_001);
        views.touch(state.graph.find(&pypi));
        let third = build_with(&state.parts(), &mut views);
        assert!(Arc::ptr_eq(&second.graph.nodes, &third.graph.nodes));
        assert_eq!(third.graph.edges.len(), 1);
        // A disconnection.
        state.inventory.set_connected(&a, false);
        views.nodes_changed();
        let fourth = build_with(&state.parts(), &mut views);
        assert_eq!(node(&fourth, "workload:ns/a").unwrap().sidecars, 0);
        // A learned workload.
        assert!(state.baseline.learn_workload(&a));
        views.nodes_changed();
        let fifth = build_with(&state.parts(), &mut views);
        assert!(node(&fifth, "workload:ns/a").unwrap().in_baseline);
        // Anything else rebuilds them too, equal when nothing changed.
        views.invalidate();
        let sixth = build_with(&state.parts(), &mut views);
        assert!(!Arc::ptr_eq(&fifth.graph.nodes, &sixth.graph.nodes));
        assert_eq!(fifth.graph.nodes, sixth.graph.nodes);
        assert_eq!(sixth.graph, build(&state.parts()).graph);
    }

    /// An edge's new view shares with its previous one what did not
    /// change (ids, baseline entry, protocols) and shows what did.
    #[test]
    fn a_rebuilt_edge_view_shares_what_did_not_change() {
        let mut state = State::empty();
        let pypi: EdgeKey = (workload("a"), NodeId::External("pypi.org:443".into()));
        let mut views = Views::default();
        let record =
            |state: &mut State, views: &mut Views, obs: &crate::model::Observation, at: u64| {
                state.graph.record(&pypi, obs, at);
                views.touch(state.graph.find(&pypi));
            };
        record(
            &mut state,
            &mut views,
            &outbound("pypi.org:443", None, 1),
            1,
        );
        let first = build_with(&state.parts(), &mut views);
        record(
            &mut state,
            &mut views,
            &outbound("pypi.org:443", None, 2),
            2,
        );
        let second = build_with(&state.parts(), &mut views);
        let (a, b) = (&first.graph.edges[0], &second.graph.edges[0]);
        assert_eq!(b.requests, 3, "the new counts show");
        assert!(Arc::ptr_eq(&a.source, &b.source) && Arc::ptr_eq(&a.target, &b.target));
        assert!(Arc::ptr_eq(&a.protocols, &b.protocols));
        assert!(Arc::ptr_eq(&a.baseline_endpoints, &b.baseline_endpoints));
        // A protocol not seen before: a new list that shows it.
        let tls = crate::model::Observation {
            protocol: crate::model::Protocol::Tls,
            ..outbound("pypi.org:443", None, 1)
        };
        record(&mut state, &mut views, &tls, 3);
        let third = build_with(&state.parts(), &mut views);
        assert_eq!(third.graph.edges[0].protocols[..], ["http1", "tls"]);
        assert_eq!(third.graph, build(&state.parts()).graph);
    }

    /// The alerts come newest first, in key order within a second, and
    /// are shared from snapshot to snapshot until one is raised or
    /// counted again ([`Views::alerts_changed`]) or anything invalidates.
    #[test]
    fn alerts_are_sorted_once_and_shared_until_one_changes() {
        let mut state = State::empty();
        let alert = |destination: &str, last_seen: &str| -> Alert {
            serde_json::from_value(serde_json::json!({
                "kind": "unknown_egress", "namespace": "ns", "workload": "a",
                "destination": destination, "action": "blocked", "count": 1,
                "first_seen": "2026-01-01T00:00:00Z", "last_seen": last_seen,
            }))
            .unwrap()
        };
        let put = |state: &mut State, a: Alert| {
            state.alerts.insert(a.key(), a);
        };
        put(&mut state, alert("b:1", "2026-01-01T00:00:05Z"));
        put(&mut state, alert("a:1", "2026-01-01T00:00:05Z"));
        put(&mut state, alert("c:1", "2026-01-01T00:00:09Z"));
        let mut views = Views::default();
        let order = |s: &Snapshot| -> Vec<String> {
            s.alerts.iter().map(|a| a.destination.clone()).collect()
        };
        let first = build_with(&state.parts(), &mut views);
        assert_eq!(order(&first), ["c:1", "a:1", "b:1"]);
        let second = build_with(&state.parts(), &mut views);
        assert!(Arc::ptr_eq(&first.alerts, &second.alerts));
        // b counted again, later.
        put(&mut state, alert("b:1", "2026-01-01T00:00:10Z"));
        views.alerts_changed();
        let third = build_with(&state.parts(), &mut views);
        assert_eq!(order(&third), ["b:1", "c:1", "a:1"]);
        assert_eq!(third.counts.alerts, 3);
        views.invalidate();
        let fourth = build_with(&state.parts(), &mut views);
        assert!(!Arc::ptr_eq(&third.alerts, &fourth.alerts));
        assert_eq!(third.alerts, fourth.alerts);
    }

    /// An alert that changed without [`Views::alerts_changed`] is caught
    /// by debug builds rather than shown stale.
    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "an alert changed without Views::alerts_changed")]
    fn an_alert_change_not_marked_is_caught() {
        let mut state = State::empty();
        let mut views = Views::default();
        build_with(&state.parts(), &mut views);
        let alert: Alert = serde_json::from_value(serde_json::json!({
            "kind": "unknown_egress", "namespace": "ns", "workload": "a",
            "destination": "pool:3333", "action": "blocked", "count": 1,
            "first_seen": "2026-01-01T00:00:00Z", "last_seen": "2026-01-01T00:00:00Z",
        }))
        .unwrap();
        state.alerts.insert(alert.key(), alert);
        build_with(&state.parts(), &mut views);
    }

    /// A node view that changed without [`Views::nodes_changed`] is
    /// caught by debug builds rather than shown stale.
    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "a node view changed without Views::nodes_changed")]
    fn a_node_change_not_marked_is_caught() {
        let mut state = State::empty();
        let a = WorkloadId::new("ns", "a").unwrap();
        state.graph.ensure_node(&workload("a"));
        let mut views = Views::default();
        build_with(&state.parts(), &mut views);
        state.baseline.learn_workload(&a);
        build_with(&state.parts(), &mut views);
    }

    /// An edge whose statistics changed without being touched keeps its
    /// old view: what makes [`Views::touch`] the engine's duty.
    #[test]
    fn an_untouched_change_is_not_seen() {
        let mut state = State::empty();
        let edge: EdgeKey = (workload("a"), NodeId::External("pypi.org:443".into()));
        let mut views = Views::default();
        state
            .graph
            .record(&edge, &outbound("pypi.org:443", None, 1), 1_800_000_000);
        assert_eq!(
            build_with(&state.parts(), &mut views).graph.edges[0].requests,
            1
        );
        state
            .graph
            .record(&edge, &outbound("pypi.org:443", None, 1), 1_800_000_001);
        assert_eq!(
            build_with(&state.parts(), &mut views).graph.edges[0].requests,
            1
        );
        views.touch(state.graph.find(&edge));
        assert_eq!(
            build_with(&state.parts(), &mut views).graph.edges[0].requests,
            2
        );
    }
}
