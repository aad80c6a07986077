//! Read-only views of the controller's state, published by the engine after
//! each change and served by the API as JSON.
//!
//! Field names here are the JSON contract of `vigilctl` and the web view.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::baseline::Baseline;
use crate::graph::Graph;
use crate::inventory::Inventory;
use crate::model::{Alert, Mode, Modes, NodeId, Quarantine, WorkloadId, rfc3339};

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
    /// Source node id.
    pub source: String,
    /// Target node id.
    pub target: String,
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
    /// Protocols seen on the edge.
    #[serde(default)]
    pub protocols: Vec<String>,
    /// Requests per HTTP status (`0`: none, e.g. a tunnel).
    #[serde(default)]
    pub statuses: BTreeMap<u16, u64>,
    /// The endpoints (`METHOD path-template`) of this call in the baseline
    /// (of the caller's and callee's profiles).
    #[serde(default)]
    pub baseline_endpoints: Vec<String>,
    /// RFC 3339 time of the first request.
    pub first_seen: String,
    /// RFC 3339 time of the latest request.
    pub last_seen: String,
}

/// The whole graph view.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GraphView {
    /// Nodes, sorted by id.
    pub nodes: Vec<NodeView>,
    /// Edges, sorted by (source, target).
    pub edges: Vec<EdgeView>,
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
    pub alerts: Vec<Alert>,
    /// Counts.
    pub counts: Counts,
    /// Quarantined workloads by `ns/name`.
    pub quarantined: BTreeMap<String, Quarantine>,
    /// Learning stability of each namespace whose baseline grew.
    pub stability: BTreeMap<String, crate::stability::Stability>,
    /// `graph` as JSON, encoded once, on first use (see
    /// [`Snapshot::graph_json`]).
    #[serde(skip)]
    pub graph_json: EncodedOnce,
}

/// JSON encoded once per snapshot; equal whatever it holds (it is derived
/// from the snapshot).
#[derive(Clone, Debug, Default)]
pub struct EncodedOnce(std::sync::OnceLock<bytes::Bytes>);

impl PartialEq for EncodedOnce {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Snapshot {
    /// The graph view as JSON: encoded by the first reader of this
    /// snapshot, shared by the others (`GET /api/v1/graph` of a large
    /// graph costs a copy, not an encoding, per request).
    pub fn graph_json(&self) -> bytes::Bytes {
        self.graph_json
            .0
            .get_or_init(|| {
                serde_json::to_vec(&self.graph)
                    .map(Into::into)
                    .unwrap_or_default()
            })
            .clone()
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

/// Builds the snapshot.
pub fn build(parts: &Parts<'_>) -> Snapshot {
    let mut nodes: Vec<_> = parts.graph.nodes().map(|n| node_view(n, parts)).collect();
    nodes.sort_by(|a, b| a.id.cmp(&b.id));
    let mut edges: Vec<_> = parts
        .graph
        .edges()
        .map(|(s, t, stats)| EdgeView {
            source: s.to_string(),
            target: t.to_string(),
            requests: stats.requests,
            in_baseline: parts.baseline.has_edge(&(
                parts.inventory.baseline_node(s),
                parts.inventory.baseline_node(t),
            )),
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
            protocols: stats.protocols.iter().cloned().collect(),
            statuses: stats.statuses.clone(),
            baseline_endpoints: {
                let key = (
                    parts.inventory.baseline_node(s),
                    parts.inventory.baseline_node(t),
                );
                parts.baseline.endpoints_of(&key).cloned().collect()
            },
            first_seen: rfc3339(stats.first_seen),
            last_seen: rfc3339(stats.last_seen),
        })
        .collect();
    edges.sort_by(|a, b| (&a.source, &a.target).cmp(&(&b.source, &b.target)));
    let mut alerts: Vec<Alert> = parts.alerts.values().cloned().collect();
    alerts.sort_by(|a, b| {
        b.last_seen
            .cmp(&a.last_seen)
            .then_with(|| a.key().cmp(&b.key()))
    });
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
        graph_json: EncodedOnce::default(),
    }
}

/// The mode label of every namespace the snapshot knows, plus the default.
pub fn namespace_modes(snapshot: &Snapshot) -> BTreeMap<String, Mode> {
    let mut out = snapshot.modes.namespaces.clone();
    for node in &snapshot.graph.nodes {
        if let Some(ns) = &node.namespace {
            out.entry(ns.clone())
                .or_insert_with(|| snapshot.modes.of(ns));
        }
    }
    out
}
