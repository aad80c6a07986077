//! The baseline: what a namespace normally does, learned in learning mode.
//!
//! Pure data and updates, no I/O: the engine persists what these functions
//! report as new. Depends only on `model`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

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
    /// What is known of each call, hashed: every observation asks about
    /// its own call once (see [`Baseline::known`]), which a B-tree of id
    /// pairs answered with a dozen string comparisons. (The ids come from
    /// the notebook: the hash is std's keyed SipHash, which resists a flood
    /// of colliding names.)
    calls: HashMap<EdgeKey, Known>,
    /// How many of `calls` are learned edges.
    edge_count: usize,
    /// The targets of each edge source, in order: the edges by source.
    targets: BTreeMap<NodeId, BTreeSet<NodeId>>,
    /// The sources of each edge target: the edges indexed the other way.
    sources: BTreeMap<NodeId, BTreeSet<NodeId>>,
}

/// What the baseline knows of one call (an [`EdgeKey`]): whether the call
/// itself was learned, and its API endpoints. Endpoints may be learned on
/// a call whose edge is not (yet) learned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Known {
    /// The call was seen while learning.
    pub edge: bool,
    endpoints: BTreeSet<String>,
}

impl Known {
    /// Whether `endpoint` of this call was seen while learning.
    pub fn has_endpoint(&self, endpoint: &str) -> bool {
        self.endpoints.contains(endpoint)
    }

    /// Whether any endpoint of this call was learned (false for a
    /// baseline from before endpoints were learned, or a call past its
    /// cap).
    pub fn has_endpoints(&self) -> bool {
        !self.endpoints.is_empty() && self.endpoints.len() < MAX_ENDPOINTS_PER_EDGE
    }

    /// The learned endpoints, in order.
    pub fn endpoints(&self) -> impl Iterator<Item = &String> {
        self.endpoints.iter()
    }
}

impl Baseline {
    /// What is known of `edge`, found with one hashed lookup; `None` when
    /// nothing is.
    pub fn known(&self, edge: &EdgeKey) -> Option<&Known> {
        self.calls.get(edge)
    }

    /// Adds an API endpoint (`METHOD path-template`) of `edge`; true when
    /// it was not known before (and the edge had room for it).
    pub fn learn_endpoint(&mut self, edge: &EdgeKey, endpoint: &str) -> bool {
        let known = match self.calls.get_mut(edge) {
            Some(known) => known,
            None => self.calls.entry(edge.clone()).or_default(),
        };
        if known.endpoints.contains(endpoint) || known.endpoints.len() >= MAX_ENDPOINTS_PER_EDGE {
            return false;
        }
        known.endpoints.insert(endpoint.to_owned())
    }

    /// Whether `endpoint` of `edge` was seen while learning.
    pub fn has_endpoint(&self, edge: &EdgeKey, endpoint: &str) -> bool {
        self.known(edge).is_some_and(|k| k.has_endpoint(endpoint))
    }

    /// Whether any endpoint of `edge` was learned (false for a baseline
    /// from before endpoints were learned, or an edge past its cap).
    pub fn has_endpoints(&self, edge: &EdgeKey) -> bool {
        self.known(edge).is_some_and(Known::has_endpoints)
    }

    /// The learned endpoints of `edge`.
    pub fn endpoints_of(&self, edge: &EdgeKey) -> impl Iterator<Item = &String> {
        self.known(edge).into_iter().flat_map(Known::endpoints)
    }

    /// Every learned workload (as its profile).
    pub fn workloads(&self) -> impl Iterator<Item = &WorkloadId> {
        self.workloads.iter()
    }

    /// Every learned edge, in order (sorted here: exports and imports
    /// ask, not observations).
    pub fn edges(&self) -> impl Iterator<Item = &EdgeKey> {
        let mut all: Vec<&EdgeKey> = self
            .calls
            .iter()
            .filter_map(|(edge, known)| known.edge.then_some(edge))
            .collect();
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
        self.calls.retain(|(s, t), _| !touches(s) && !touches(t));
        self.edge_count = self.calls.values().filter(|k| k.edge).count();
        self.sources.retain(|t, set| {
            set.retain(|s| !touches(s));
            !touches(t) && !set.is_empty()
        });
        self.targets.retain(|s, set| {
            set.retain(|t| !touches(t));
            !touches(s) && !set.is_empty()
        });
    }

    /// Adds a workload; true when it was not known before.
    pub fn learn_workload(&mut self, id: &WorkloadId) -> bool {
        !self.workloads.contains(id) && self.workloads.insert(id.clone())
    }

    /// Adds an edge; true when it was not known before.
    pub fn learn_edge(&mut self, edge: &EdgeKey) -> bool {
        let known = match self.calls.get_mut(edge) {
            Some(known) if known.edge => return false,
            Some(known) => known,
            None => self.calls.entry(edge.clone()).or_default(),
        };
        known.edge = true;
        self.edge_count += 1;
        self.sources
            .entry(edge.1.clone())
            .or_default()
            .insert(edge.0.clone());
        self.targets
            .entry(edge.0.clone())
            .or_default()
            .insert(edge.1.clone());
        true
    }

    /// Whether the workload was seen while learning.
    pub fn has_workload(&self, id: &WorkloadId) -> bool {
        self.workloads.contains(id)
    }

    /// Whether the edge was seen while learning.
    pub fn has_edge(&self, edge: &EdgeKey) -> bool {
        self.known(edge).is_some_and(|k| k.edge)
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
        (self.workloads.len(), self.edge_count)
    }

    /// Whether nothing was learned yet.
    pub fn is_empty(&self) -> bool {
        self.workloads.is_empty() && self.edge_count == 0
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

    /// Endpoints and edges share one entry per call: an endpoint learned
    /// on a call whose edge is not learned does not make it an edge, and
    /// the counts follow edges alone, through learning and clearing.
    #[test]
    fn a_calls_endpoints_and_its_edge_are_known_apart() {
        let mut b = Baseline::default();
        let other = NodeId::Workload(WorkloadId::new("lab", "nb").unwrap());
        let call = (wl("web"), wl("db"));
        assert!(b.known(&call).is_none());
        assert!(b.learn_endpoint(&call, "GET /rows/{id}"));
        let known = b.known(&call).unwrap();
        assert!(!known.edge && known.has_endpoint("GET /rows/{id}"));
        assert!(!b.has_edge(&call) && b.has_endpoints(&call));
        assert_eq!(b.len(), (0, 0));
        assert!(b.is_empty(), "endpoints alone are no edge");
        assert_eq!(b.edges().count(), 0);
        assert!(b.learn_edge(&call));
        assert!(!b.learn_edge(&call));
        assert!(b.known(&call).unwrap().edge);
        assert!(
            b.has_endpoint(&call, "GET /rows/{id}"),
            "kept by learning the edge"
        );
        b.learn_edge(&(other.clone(), wl("db")));
        b.learn_endpoint(&(other.clone(), wl("web")), "POST /x");
        assert_eq!(b.len(), (0, 2));
        b.clear(Some("lab"));
        assert_eq!(b.len(), (0, 1));
        assert!(b.known(&(other.clone(), wl("web"))).is_none());
        assert_eq!(b.edges().collect::<Vec<_>>(), [&call]);
        b.clear(None);
        assert!(b.is_empty() && b.known(&call).is_none());
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
