//! The service graph: workloads, external destinations and the internet as
//! nodes, calls as edges with request statistics (petgraph).
//!
//! Owned by the engine task (its only writer). Depends only on `model`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use petgraph::stable_graph::StableDiGraph;
pub use petgraph::stable_graph::{EdgeIndex, NodeIndex};
use petgraph::visit::{EdgeRef, IntoEdgeReferences};
use serde::{Deserialize, Serialize};

use crate::model::{EdgeKey, NodeId, Observation, with_endpoint};

/// Most distinct authorities kept per edge (names the destination went by).
const MAX_AUTHORITIES: usize = 16;
/// Most distinct endpoints (`METHOD path`) kept per edge.
const MAX_ENDPOINTS: usize = 64;
/// Most distinct status codes counted per edge.
const MAX_STATUSES: usize = 24;

/// Statistics of one edge.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct EdgeStats {
    /// Requests (or connections) seen.
    pub requests: u64,
    /// Requests the proxies denied.
    pub denied: u64,
    /// Requests that failed: status 5xx or no status.
    pub errors: u64,
    /// Bytes sent by callers.
    pub bytes_in: u64,
    /// Bytes sent back to callers.
    pub bytes_out: u64,
    /// Sum of latencies, microseconds.
    pub latency_sum_us: u64,
    /// Names the destination was reached by (bounded).
    pub authorities: BTreeSet<String>,
    /// Request counts per `METHOD path-template` (bounded).
    pub endpoints: BTreeMap<String, u64>,
    /// Protocols seen: `http1`, `http2`, `grpc`, `tls`, `tcp`, `stratum`.
    pub protocols: BTreeSet<String>,
    /// Unix seconds of the first request.
    pub first_seen: u64,
    /// Unix seconds of the latest request.
    pub last_seen: u64,
    /// Whether traffic on this edge violated the baseline.
    pub violation: bool,
    /// Requests answered per HTTP status (0: no status, e.g. a tunnel or
    /// a request refused before it had one), bounded.
    pub statuses: BTreeMap<u16, u64>,
}

impl EdgeStats {
    fn add(&mut self, obs: &Observation, now: u64) {
        if self.first_seen == 0 {
            self.first_seen = now;
        }
        self.last_seen = now;
        self.requests = self.requests.saturating_add(obs.count);
        self.denied = self.denied.saturating_add(obs.denied);
        if obs.status == 0 || obs.status >= 500 {
            self.errors = self
                .errors
                .saturating_add(obs.count - obs.denied.min(obs.count));
        }
        self.bytes_in = self.bytes_in.saturating_add(obs.bytes_in);
        self.bytes_out = self.bytes_out.saturating_add(obs.bytes_out);
        self.latency_sum_us = self.latency_sum_us.saturating_add(obs.latency_sum_us);
        if !obs.authority.is_empty() && self.authorities.len() < MAX_AUTHORITIES {
            self.authorities.insert(obs.authority.clone());
        }
        if !self.protocols.contains(obs.protocol.as_str()) {
            self.protocols.insert(obs.protocol.as_str().to_owned());
        }
        if obs.count > 0 {
            if let Some(n) = self.statuses.get_mut(&obs.status) {
                *n = n.saturating_add(obs.count);
            } else if self.statuses.len() < MAX_STATUSES {
                self.statuses.insert(obs.status, obs.count);
            }
        }
        if !obs.method.is_empty() {
            with_endpoint(&obs.method, &obs.path, |endpoint| {
                if let Some(n) = self.endpoints.get_mut(endpoint) {
                    *n = n.saturating_add(obs.count);
                } else if self.endpoints.len() < MAX_ENDPOINTS {
                    self.endpoints.insert(endpoint.to_owned(), obs.count);
                }
            });
        }
    }
}

/// The graph itself.
#[derive(Debug, Default)]
pub struct Graph {
    graph: StableDiGraph<NodeId, EdgeStats>,
    index: HashMap<NodeId, NodeIndex>,
    /// Each edge by its ends: petgraph's own `find_edge` walks the source's
    /// list of edges, up to [`crate::engine::MAX_PEERS`] long. The keys are
    /// the graph's own indices, never a sender's bytes, so a fast hash with
    /// no flooding resistance is enough.
    edges: HashMap<(NodeIndex, NodeIndex), EdgeIndex, foldhash::fast::RandomState>,
}

impl Graph {
    /// Adds a node if it is missing and returns its index.
    pub fn ensure_node(&mut self, id: &NodeId) -> NodeIndex {
        if let Some(&ix) = self.index.get(id) {
            return ix;
        }
        let ix = self.graph.add_node(id.clone());
        self.index.insert(id.clone(), ix);
        ix
    }

    fn edge_mut(&mut self, key: &EdgeKey) -> &mut EdgeStats {
        let ix = self.insert(key);
        &mut self.graph[ix]
    }

    /// Adds an observation to the edge `key`, creating nodes as needed.
    pub fn record(&mut self, key: &EdgeKey, obs: &Observation, now: u64) -> &EdgeStats {
        let stats = self.edge_mut(key);
        stats.add(obs, now);
        stats
    }

    /// Where the edge `key` is, if it exists: a handle for
    /// [`Graph::record_at`], so that an observation looks its edge up once.
    pub fn find(&self, key: &EdgeKey) -> Option<EdgeIndex> {
        self.find_with(key, None, None)
    }

    /// Where the edge `key` is, added (without traffic) if it is missing.
    pub fn insert(&mut self, key: &EdgeKey) -> EdgeIndex {
        let a = self.ensure_node(&key.0);
        let b = self.ensure_node(&key.1);
        let graph = &mut self.graph;
        *self
            .edges
            .entry((a, b))
            .or_insert_with(|| graph.add_edge(a, b, EdgeStats::default()))
    }

    /// The ends of the edge at `ix`, which [`Graph::find`] or
    /// [`Graph::insert`] gave (edges are never removed).
    pub fn ends(&self, ix: EdgeIndex) -> Option<(&NodeId, &NodeId)> {
        let (a, b) = self.graph.edge_endpoints(ix)?;
        Some((&self.graph[a], &self.graph[b]))
    }

    /// All edges as (where the edge is, source, target, statistics).
    pub fn edges_at(&self) -> impl Iterator<Item = (EdgeIndex, &NodeId, &NodeId, &EdgeStats)> {
        (&self.graph).edge_references().map(|e| {
            let (source, target) = (&self.graph[e.source()], &self.graph[e.target()]);
            (e.id(), source, target, e.weight())
        })
    }

    /// The statistics of the edge at `ix`.
    pub fn edge_at(&self, ix: EdgeIndex) -> Option<&EdgeStats> {
        self.graph.edge_weight(ix)
    }

    /// Where the node `id` is, if it exists.
    pub fn node(&self, id: &NodeId) -> Option<NodeIndex> {
        self.index.get(id).copied()
    }

    /// [`Graph::find`] with the index of one end known already (`source`
    /// or `target`, which [`Graph::node`] gave for `key`'s own end): one
    /// node looked up instead of two.
    pub fn find_with(
        &self,
        key: &EdgeKey,
        source: Option<NodeIndex>,
        target: Option<NodeIndex>,
    ) -> Option<EdgeIndex> {
        debug_assert!(source.is_none_or(|a| self.node(&key.0) == Some(a)));
        debug_assert!(target.is_none_or(|b| self.node(&key.1) == Some(b)));
        let a = source.or_else(|| self.node(&key.0))?;
        let b = target.or_else(|| self.node(&key.1))?;
        self.edges.get(&(a, b)).copied()
    }

    /// [`Graph::record`] for the edge at `ix`, which [`Graph::find`] or
    /// [`Graph::insert`] gave.
    pub fn record_at(&mut self, ix: EdgeIndex, obs: &Observation, now: u64) {
        self.graph[ix].add(obs, now);
    }

    /// Marks the edge at `ix` as violating the baseline.
    pub fn mark_violation_at(&mut self, ix: EdgeIndex) {
        self.graph[ix].violation = true;
    }

    /// Restores an edge read back from the store.
    pub fn restore_edge(&mut self, key: &EdgeKey, stats: EdgeStats) {
        *self.edge_mut(key) = stats;
    }

    /// The statistics of an edge, if it exists.
    pub fn edge(&self, key: &EdgeKey) -> Option<&EdgeStats> {
        self.find(key).map(|ix| &self.graph[ix])
    }

    /// How many edges leave `node` (its distinct peers, for an outbound
    /// caller).
    pub fn out_degree(&self, node: &NodeId) -> usize {
        self.index.get(node).map_or(0, |&ix| {
            self.graph
                .edges_directed(ix, petgraph::Direction::Outgoing)
                .count()
        })
    }

    /// All nodes.
    pub fn nodes(&self) -> impl Iterator<Item = &NodeId> {
        self.graph.node_weights()
    }

    /// All edges as (source, target, statistics).
    pub fn edges(&self) -> impl Iterator<Item = (&NodeId, &NodeId, &EdgeStats)> {
        self.edges_at()
            .map(|(_, source, target, stats)| (source, target, stats))
    }

    /// Number of nodes and edges.
    pub fn len(&self) -> (usize, usize) {
        (self.graph.node_count(), self.graph.edge_count())
    }

    /// Whether the graph has no nodes.
    pub fn is_empty(&self) -> bool {
        self.graph.node_count() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{WorkloadId, outbound};

    fn obs(authority: &str, path: &str, status: u16, count: u64) -> Observation {
        Observation {
            path: path.into(),
            status,
            bytes_in: 10,
            bytes_out: 100,
            latency_sum_us: 500,
            ..outbound(authority, None, count)
        }
    }

    #[test]
    fn observations_accumulate_on_one_edge() {
        let mut g = Graph::default();
        let web = NodeId::Workload(WorkloadId::new("default", "web").unwrap());
        let key = (web.clone(), NodeId::External("pypi.org:443".into()));
        g.record(&key, &obs("pypi.org:443", "/simple", 200, 3), 10);
        let stats = g
            .record(&key, &obs("pypi.org:443", "/simple", 503, 2), 20)
            .clone();
        assert_eq!(stats.requests, 5);
        assert_eq!(stats.errors, 2);
        assert_eq!(stats.statuses, [(200, 3), (503, 2)].into());
        assert_eq!(stats.bytes_out, 200);
        assert_eq!((stats.first_seen, stats.last_seen), (10, 20));
        assert_eq!(stats.endpoints.get("GET /simple"), Some(&5));
        assert_eq!(g.len(), (2, 1));
        assert_eq!(g.edge(&key), Some(&stats));
        assert_eq!(g.edge(&(key.1.clone(), web)), None);
    }

    #[test]
    fn endpoints_and_authorities_are_bounded() {
        let mut g = Graph::default();
        let key = (NodeId::Internet, NodeId::External("x:80".into()));
        for i in 0..1000 {
            g.record(
                &key,
                &obs(&format!("h{i}:80"), &format!("/p{i}"), 200, 1),
                1,
            );
        }
        let stats = g.edge(&key).unwrap();
        assert_eq!(stats.requests, 1000);
        assert_eq!(stats.endpoints.len(), MAX_ENDPOINTS);
        assert_eq!(stats.authorities.len(), MAX_AUTHORITIES);
    }

    #[test]
    fn each_of_many_peers_is_found_as_itself() {
        let mut g = Graph::default();
        let web = NodeId::Workload(WorkloadId::new("default", "web").unwrap());
        let peer = |i: usize| NodeId::External(format!("h{i}:443"));
        for i in 0..1500 {
            let count = i as u64 + 1;
            g.record(&(web.clone(), peer(i)), &obs("h:443", "/", 200, count), 1);
        }
        // Edges into the same targets from elsewhere, and one restored.
        g.record(&(NodeId::Internet, peer(7)), &obs("h:443", "/", 200, 99), 1);
        let restored = EdgeStats {
            requests: 5,
            ..EdgeStats::default()
        };
        g.restore_edge(&(peer(3), peer(4)), restored.clone());
        assert_eq!(g.out_degree(&web), 1500);
        for i in 0..1500 {
            let key = (web.clone(), peer(i));
            let ix = g.find(&key).expect("recorded");
            assert_eq!(g.find_with(&key, g.node(&web), None), Some(ix), "{i}");
            assert_eq!(g.find_with(&key, None, g.node(&peer(i))), Some(ix), "{i}");
            assert_eq!(g.graph[ix].requests, i as u64 + 1, "{i}");
            g.record_at(ix, &obs("h:443", "/", 200, 1), 2);
            assert_eq!(g.edge(&key).unwrap().requests, i as u64 + 2, "{i}");
        }
        assert_eq!(g.edge(&(NodeId::Internet, peer(7))).unwrap().requests, 99);
        assert_eq!(g.edge(&(peer(3), peer(4))), Some(&restored));
        assert_eq!(g.edge(&(peer(4), peer(3))), None);
        assert_eq!(g.find(&(peer(7), web.clone())), None);
        let unknown = (web.clone(), NodeId::External("new:443".into()));
        assert_eq!(g.find_with(&unknown, g.node(&web), None), None);
        assert_eq!(g.len(), (1502, 1502));
    }
}
