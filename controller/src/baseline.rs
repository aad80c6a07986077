//! The baseline: what a namespace normally does, learned in learning mode.
//!
//! Pure data and updates, no I/O: the engine persists what these functions
//! report as new. Depends only on `model`.

use std::collections::BTreeSet;

use crate::model::{EdgeKey, NodeId, WorkloadId};

/// The workloads and edges learned as normal.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Baseline {
    workloads: BTreeSet<WorkloadId>,
    edges: BTreeSet<EdgeKey>,
}

impl Baseline {
    /// Adds a workload; true when it was not known before.
    pub fn learn_workload(&mut self, id: &WorkloadId) -> bool {
        !self.workloads.contains(id) && self.workloads.insert(id.clone())
    }

    /// Adds an edge; true when it was not known before.
    pub fn learn_edge(&mut self, edge: &EdgeKey) -> bool {
        !self.edges.contains(edge) && self.edges.insert(edge.clone())
    }

    /// Whether the workload was seen while learning.
    pub fn has_workload(&self, id: &WorkloadId) -> bool {
        self.workloads.contains(id)
    }

    /// Whether the edge was seen while learning.
    pub fn has_edge(&self, edge: &EdgeKey) -> bool {
        self.edges.contains(edge)
    }

    /// Baseline destinations of `source`.
    pub fn targets_of<'a>(&'a self, source: &'a NodeId) -> impl Iterator<Item = &'a NodeId> + 'a {
        self.edges
            .iter()
            .filter(move |(s, _)| s == source)
            .map(|(_, t)| t)
    }

    /// Baseline callers of `target`.
    pub fn sources_of<'a>(&'a self, target: &'a NodeId) -> impl Iterator<Item = &'a NodeId> + 'a {
        self.edges
            .iter()
            .filter(move |(_, t)| t == target)
            .map(|(s, _)| s)
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
}
