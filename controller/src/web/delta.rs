//! What the live stream sends: the whole state once ([`Full`]), then only
//! what changed between two snapshots ([`Delta`], from [`diff`], a pure
//! function), so a graph of 5,000 edges is not re-sent for one new request.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::Serialize;

use crate::model::{Alert, Mode, Quarantine};
use crate::snapshot::{Counts, EdgeList, EdgeView, GraphView, NodeView, Snapshot, namespace_modes};
use crate::stability::Stability;

/// The modes as the web view shows them, with each namespace's learning
/// stability.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ModesView {
    /// Mode of namespaces without their own.
    pub default: Mode,
    /// Mode of every known namespace.
    pub namespaces: BTreeMap<String, Mode>,
    /// Learning stability of each namespace whose baseline grew.
    pub stability: BTreeMap<String, Stability>,
}

impl ModesView {
    /// The modes of `snapshot`.
    pub fn of(snapshot: &Snapshot) -> Self {
        Self {
            default: snapshot.modes.default,
            namespaces: namespace_modes(snapshot),
            stability: snapshot.stability.clone(),
        }
    }
}

/// The first event of a stream: everything.
#[derive(Debug, Serialize)]
pub struct Full<'a> {
    /// The graph.
    pub graph: &'a GraphView,
    /// Alerts, newest first.
    pub alerts: &'a [Alert],
    /// Modes.
    pub modes: ModesView,
    /// Counts.
    pub counts: &'a Counts,
    /// Quarantined workloads by `ns/name`.
    pub quarantined: &'a BTreeMap<String, Quarantine>,
}

impl<'a> Full<'a> {
    /// All of `snapshot`.
    pub fn of(snapshot: &'a Snapshot) -> Self {
        Self {
            graph: &snapshot.graph,
            alerts: &snapshot.alerts,
            modes: ModesView::of(snapshot),
            counts: &snapshot.counts,
            quarantined: &snapshot.quarantined,
        }
    }

    /// All of `snapshot` as JSON, the bytes `serde_json` gives for
    /// [`Full::of`], with each edge copied from its view's own encoding
    /// (kept from snapshot to snapshot and warmed ahead of reads: see
    /// [`Snapshot::graph_json`]) rather than encoded again for each web
    /// view opened: on a graph of 50,000 edges, a copy instead of the
    /// better part of 100 ms.
    pub fn json(snapshot: &'a Snapshot) -> String {
        /// [`Full`] but the graph, in the same order.
        #[derive(Serialize)]
        struct Rest<'a> {
            alerts: &'a [Alert],
            modes: ModesView,
            counts: &'a Counts,
            quarantined: &'a BTreeMap<String, Quarantine>,
        }
        let full = Full::of(snapshot);
        let rest = Rest {
            alerts: full.alerts,
            modes: full.modes,
            counts: full.counts,
            quarantined: full.quarantined,
        };
        // Plain data (string keys, no map with other keys): encoding
        // cannot fail, and JSON is UTF-8.
        let rest = serde_json::to_string(&rest).unwrap_or_else(|_| "{}".into());
        let graph = snapshot.graph_json();
        let graph = std::str::from_utf8(&graph).unwrap_or("{}");
        let mut out = String::with_capacity(graph.len() + rest.len() + 16);
        out.push_str("{\"graph\":");
        out.push_str(graph);
        match rest.strip_prefix('{') {
            Some(fields) if fields != "}" => {
                out.push(',');
                out.push_str(fields);
            }
            _ => out.push('}'),
        }
        out
    }
}

/// Items added or changed (whole), and the keys of those removed.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Changes<T, K> {
    /// New or changed items.
    pub upsert: Vec<T>,
    /// Keys of removed items.
    pub remove: Vec<K>,
}

impl<T, K> Default for Changes<T, K> {
    fn default() -> Self {
        Self {
            upsert: Vec::new(),
            remove: Vec::new(),
        }
    }
}

impl<T, K> Changes<T, K> {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.upsert.is_empty() && self.remove.is_empty()
    }
}

/// An edge's (source id, target id), as its views share them.
pub type EdgeIds = (Arc<str>, Arc<str>);

/// What changed between two snapshots.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Delta {
    /// Nodes, removed by id.
    pub nodes: Changes<NodeView, String>,
    /// Edges, removed by `[source, target]`.
    pub edges: Changes<Arc<EdgeView>, EdgeIds>,
    /// Alerts, removed by [`alert_id`].
    pub alerts: Changes<Alert, String>,
    /// The modes, when they changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub modes: Option<ModesView>,
    /// The counts, when they changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counts: Option<Counts>,
    /// All quarantined workloads, when that changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quarantined: Option<BTreeMap<String, Quarantine>>,
}

impl Delta {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
            && self.edges.is_empty()
            && self.alerts.is_empty()
            && self.modes.is_none()
            && self.counts.is_none()
            && self.quarantined.is_none()
    }
}

/// How the web view names an alert: its storage key,
/// `kind|namespace/workload|destination` (the same for every repeat).
pub fn alert_id(alert: &Alert) -> String {
    alert.key()
}

/// Diffs two lists by key: `(upserts, removed keys)`.
fn diff_by<T: Clone + PartialEq, K: Eq + std::hash::Hash + Clone>(
    old: &[T],
    new: &[T],
    key: impl Fn(&T) -> K,
) -> Changes<T, K> {
    diff_with(old.iter(), new.iter(), key, T::eq)
}

/// [`diff_by`] with `same` telling whether an item is unchanged.
fn diff_with<'a, T: Clone + 'a, K: Eq + std::hash::Hash + Clone>(
    old: impl Iterator<Item = &'a T> + Clone,
    new: impl Iterator<Item = &'a T>,
    key: impl Fn(&T) -> K,
    same: impl Fn(&T, &T) -> bool,
) -> Changes<T, K> {
    let before: HashMap<K, &T> = old.clone().map(|t| (key(t), t)).collect();
    let mut seen = std::collections::HashSet::with_capacity(new.size_hint().0);
    let mut changes = Changes::default();
    for item in new {
        let k = key(item);
        if before.get(&k).is_none_or(|old| !same(old, item)) {
            changes.upsert.push(item.clone());
        }
        seen.insert(k);
    }
    // In the old order, so the result is deterministic.
    for item in old {
        let k = key(item);
        if !seen.contains(&k) {
            changes.remove.push(k);
        }
    }
    changes
}

/// What changed from the edges `old` to the edges `new`, both sorted by
/// (source, target) as snapshots hold them: one merge walk over the two,
/// which steps over a run of views the two snapshots share (see
/// [`EdgeList`]) at once, and compares an edge's two views by pointer
/// before field by field (a view the engine did not rebuild is the same
/// allocation in both). Added or changed edges come in `new`'s order,
/// removed ones in `old`'s. A graph of 50,000 edges of which a few
/// thousand changed costs a few thousand comparisons, with no key copied
/// or hashed.
pub fn diff_edges(old: &EdgeList, new: &EdgeList) -> Changes<Arc<EdgeView>, EdgeIds> {
    debug_assert!(sorted(old) && sorted(new), "edge lists sorted by ids");
    let key = |e: &Arc<EdgeView>| (e.source.clone(), e.target.clone());
    let (a, b) = (old.runs(), new.runs());
    // (run, place in the run) in each.
    let (mut i, mut j) = ((0, 0), (0, 0));
    let mut changes = Changes::default();
    loop {
        while a.get(i.0).is_some_and(|run| i.1 == run.len()) {
            i = (i.0 + 1, 0);
        }
        while b.get(j.0).is_some_and(|run| j.1 == run.len()) {
            j = (j.0 + 1, 0);
        }
        match (a.get(i.0), b.get(j.0)) {
            (None, None) => break,
            (Some(run), None) => {
                changes.remove.extend(run[i.1..].iter().map(key));
                i = (i.0 + 1, 0);
            }
            (None, Some(run)) => {
                changes.upsert.extend(run[j.1..].iter().cloned());
                j = (j.0 + 1, 0);
            }
            (Some(ra), Some(rb)) if i.1 == 0 && j.1 == 0 && Arc::ptr_eq(ra, rb) => {
                i.0 += 1;
                j.0 += 1;
            }
            (Some(ra), Some(rb)) => {
                let (x, y) = (&ra[i.1], &rb[j.1]);
                let order = (&*x.source, &*x.target).cmp(&(&*y.source, &*y.target));
                match order {
                    std::cmp::Ordering::Less => {
                        changes.remove.push(key(x));
                        i.1 += 1;
                    }
                    std::cmp::Ordering::Greater => {
                        changes.upsert.push(y.clone());
                        j.1 += 1;
                    }
                    std::cmp::Ordering::Equal => {
                        if !(Arc::ptr_eq(x, y) || x == y) {
                            changes.upsert.push(y.clone());
                        }
                        i.1 += 1;
                        j.1 += 1;
                    }
                }
            }
        }
    }
    changes
}

/// Whether `edges` are in order of (source, target), each once.
fn sorted(edges: &EdgeList) -> bool {
    let ids: Vec<_> = edges.iter().map(|e| (&e.source, &e.target)).collect();
    ids.windows(2).all(|w| w[0] < w[1])
}

/// What changed from `old` to `new`.
pub fn diff(old: &Snapshot, new: &Snapshot) -> Delta {
    let modes = (ModesView::of(old) != ModesView::of(new)).then(|| ModesView::of(new));
    Delta {
        // Node views are shared whole while none changed.
        nodes: if Arc::ptr_eq(&old.graph.nodes, &new.graph.nodes) {
            Changes::default()
        } else {
            diff_by(&old.graph.nodes, &new.graph.nodes, |n| n.id.clone())
        },
        edges: diff_edges(&old.graph.edges, &new.graph.edges),
        // Shared whole while none was raised or counted again.
        alerts: if Arc::ptr_eq(&old.alerts, &new.alerts) {
            Changes::default()
        } else {
            diff_by(&old.alerts, &new.alerts, alert_id)
        },
        modes,
        counts: (old.counts != new.counts).then(|| new.counts.clone()),
        quarantined: (old.quarantined != new.quarantined).then(|| new.quarantined.clone()),
    }
}

#[cfg(test)]
#[path = "delta_tests.rs"]
mod tests;
