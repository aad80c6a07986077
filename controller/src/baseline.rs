//! The baseline: what a namespace normally does, learned in learning mode.
//!
//! Pure data and updates, no I/O: the engine persists what these functions
//! report as new. Depends only on `model`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use crate::model::{EdgeKey, NodeId, WorkloadId};

/// Most API endpoints learned per edge: past it, new endpoints of that
/// edge are no longer learned (a flood of unique paths costs bounded
/// memory), and are judged by the edge alone.
pub const MAX_ENDPOINTS_PER_EDGE: usize = 256;

/// The workloads (as their profiles), edges and API endpoints learned as
/// normal.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Baseline {
    workloads: BTreeSet<WorkloadId>,
    /// Every edge, hashed: every observation asks whether its edge is
    /// here, which a B-tree of id pairs answered with a dozen string
    /// comparisons. (The ids come from the notebook: the hash is std's
    /// keyed SipHash, which resists a flood of colliding names.)
    edges: HashSet<EdgeKey>,
    endpoints: HashMap<EdgeKey, BTreeSet<String>>,
    /// The targets of each edge source, in order: `edges` by source.
    targets: BTreeMap<NodeId, BTreeSet<NodeId>>,
    /// The sources of each edge target: `edges` indexed the other way.
    sources: BTreeMap<NodeId, BTreeSet<NodeId>>,
}

impl Baseline {
    /// Adds an API endpoint (`METHOD path-template`) of `edge`; true when
    /// it was not known before (and the edge had room for it).
    pub fn learn_endpoint(&mut self, edge: &EdgeKey, endpoint: &str) -> bool {
        let set = match self.endpoints.get_mut(edge) {
            Some(set) => set,
            None => self.endpoints.entry(edge.clone()).or_default(),
        };
        if set.contains(endpoint) || set.len() >= MAX_ENDPOINTS_PER_EDGE {
            return false;
        }
        set.insert(endpoint.to_owned())
    }

    /// Whether `endpoint` of `edge` was seen while learning.
    pub fn has_endpoint(&self, edge: &EdgeKey, endpoint: &str) -> bool {
        self.endpoints
            .get(edge)
            .is_some_and(|set| set.contains(endpoint))
    }

    /// Whether any endpoint of `edge` was learned (false for a baseline
    /// from before endpoints were learned, or an edge past its cap).
    pub fn has_endpoints(&self, edge: &EdgeKey) -> bool {
        self.endpoints
            .get(edge)
            .is_some_and(|set| !set.is_empty() && set.len() < MAX_ENDPOINTS_PER_EDGE)
    }

    /// The learned endpoints of `edge`.
    pub fn endpoints_of(&self, edge: &EdgeKey) -> impl Iterator<Item = &String> {
        self.endpoints.get(edge).into_iter().flatten()
    }

    /// Every learned workload (as its profile).
    pub fn workloads(&self) -> impl Iterator<Item = &WorkloadId> {
        self.workloads.iter()
    }

    /// Every learned edge, in order (sorted here: exports and imports
    /// ask, not observations).
    pub fn edges(&self) -> impl Iterator<Item = &EdgeKey> {
        let mut all: Vec<&EdgeKey> = self.edges.iter().collect();
        all.sort_unstable();
        all.into_iter()
    }

    /// Removes everything of namespace `namespace` (every namespace when
    /// `None`): before an import replaces it.
    pub fn clear(&mut self, namespace: Option<&str>) {
        let Some(ns) = namespace else {
            *self = Baseline::default();
            return;
        };
        let touches = |node: &NodeId| matches!(node, NodeId::Workload(id) if id.namespace == ns);
        self.workloads.retain(|id| id.namespace != ns);
        self.edges.retain(|(s, t)| !touches(s) && !touches(t));
        self.sources.retain(|t, set| {
            set.retain(|s| !touches(s));
            !touches(t) && !set.is_empty()
        });
        self.targets.retain(|s, set| {
            set.retain(|t| !touches(t));
            !touches(s) && !set.is_empty()
        });
        self.endpoints
            .retain(|(s, t), _| !touches(s) && !touches(t));
    }

    /// Adds a workload; true when it was not known before.
    pub fn learn_workload(&mut self, id: &WorkloadId) -> bool {
        !self.workloads.contains(id) && self.workloads.insert(id.clone())
    }

    /// Adds an edge; true when it was not known before.
    pub fn learn_edge(&mut self, edge: &EdgeKey) -> bool {
        if self.edges.contains(edge) {
            return false;
        }
        self.sources
            .entry(edge.1.clone())
            .or_default()
            .insert(edge.0.clone());
        self.targets
            .entry(edge.0.clone())
            .or_default()
            .insert(edge.1.clone());
        self.edges.insert(edge.clone())
    }

    /// Whether the workload was seen while learning.
    pub fn has_workload(&self, id: &WorkloadId) -> bool {
        self.workloads.contains(id)
    }

    /// Whether the edge was seen while learning.
    pub fn has_edge(&self, edge: &EdgeKey) -> bool {
        self.edges.contains(edge)
    }

    /// Baseline destinations of `source`, in order (an index lookup).
    pub fn targets_of<'a>(&'a self, source: &'a NodeId) -> impl Iterator<Item = &'a NodeId> + 'a {
        self.targets.get(source).into_iter().flatten()
    }

    /// Baseline callers of `target`, in order (an index lookup).
    pub fn sources_of<'a>(&'a self, target: &'a NodeId) -> impl Iterator<Item = &'a NodeId> + 'a {
        self.sources.get(target).into_iter().flatten()
    }

    /// Number of workloads and edges in the baseline.
    pub fn len(&self) -> (usize, usize) {
        (self.workloads.len(), self.edges.len())
    }

    /// Whether nothing was learned yet.
    pub fn is_empty(&self) -> bool {
        self.workloads.is_empty() && self.edges.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wl(name: &str) -> NodeId {
        NodeId::Workload(WorkloadId::new("default", name).unwrap())
    }

    #[test]
    fn learning_reports_only_what_is_new() {
        let mut b = Baseline::default();
        let id = WorkloadId::new("default", "web").unwrap();
        assert!(b.learn_workload(&id));
        assert!(!b.learn_workload(&id));
        let edge = (wl("web"), NodeId::External("pypi.org:443".into()));
        assert!(b.learn_edge(&edge));
        assert!(!b.learn_edge(&edge));
        assert!(b.has_edge(&edge));
        assert!(!b.has_edge(&(wl("web"), wl("db"))));
        assert_eq!(b.len(), (1, 1));
    }

    #[test]
    fn targets_and_sources_follow_direction() {
        let mut b = Baseline::default();
        b.learn_edge(&(wl("web"), wl("db")));
        b.learn_edge(&(NodeId::Internet, wl("web")));
        b.learn_edge(&(wl("api"), wl("db")));
        let targets: Vec<_> = b.targets_of(&wl("web")).cloned().collect();
        assert_eq!(targets, vec![wl("db")]);
        let mut sources: Vec<_> = b.sources_of(&wl("db")).cloned().collect();
        sources.sort();
        assert_eq!(sources, vec![wl("api"), wl("web")]);
        let web = wl("web");
        assert_eq!(b.sources_of(&web).next(), Some(&NodeId::Internet));
    }

    #[test]
    fn edges_and_targets_come_out_in_order_whatever_the_learning_order() {
        let mut b = Baseline::default();
        let pypi = NodeId::External("pypi.org:443".into());
        let learned = [
            (wl("web"), wl("db")),
            (wl("api"), pypi.clone()),
            (NodeId::Internet, wl("web")),
            (wl("web"), pypi.clone()),
            (wl("web"), wl("cache")),
            (wl("api"), wl("db")),
        ];
        for edge in &learned {
            b.learn_edge(edge);
        }
        let mut sorted = learned.to_vec();
        sorted.sort();
        assert_eq!(b.edges().cloned().collect::<Vec<_>>(), sorted);
        assert_eq!(
            b.targets_of(&wl("web")).cloned().collect::<Vec<_>>(),
            vec![wl("cache"), wl("db"), pypi.clone()]
        );
        for edge in &learned {
            assert!(b.has_edge(edge), "{edge:?}");
            let reversed = (edge.1.clone(), edge.0.clone());
            assert!(!b.has_edge(&reversed), "{reversed:?}");
        }
    }

    #[test]
    fn the_indexes_forget_a_cleared_namespace() {
        let mut b = Baseline::default();
        let other = NodeId::Workload(WorkloadId::new("lab", "nb").unwrap());
        let pypi = NodeId::External("pypi.org:443".into());
        b.learn_edge(&(wl("web"), wl("db")));
        b.learn_edge(&(other.clone(), wl("db")));
        b.learn_edge(&(other.clone(), pypi.clone()));
        b.learn_edge(&(wl("web"), pypi.clone()));
        b.clear(Some("default"));
        let table: [(&NodeId, Vec<NodeId>, Vec<NodeId>); 4] = [
            (&wl("db"), vec![], vec![]),
            (&wl("web"), vec![], vec![]),
            (&pypi, vec![other.clone()], vec![]),
            (&other, vec![], vec![pypi.clone()]),
        ];
        for (node, sources, targets) in table {
            assert_eq!(
                b.sources_of(node).cloned().collect::<Vec<_>>(),
                sources,
                "{node}"
            );
            assert_eq!(
                b.targets_of(node).cloned().collect::<Vec<_>>(),
                targets,
                "{node}"
            );
        }
        b.clear(None);
        assert_eq!(b.sources_of(&pypi).count(), 0);
    }
}
