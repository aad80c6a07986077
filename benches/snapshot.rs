//! Micro-benchmark of the controller's snapshot: the graph view the API and
//! the web view read, built on the engine thread after changes. A graph of
//! 5,000 workloads with 10 destinations each (50,000 edges, all in the
//! baseline), built from scratch and from the views kept since the last
//! snapshot with 1% and 10% of the edges touched (a second of reports
//! touches the edges that carried traffic in it); and its JSON (what the
//! first `GET /api/v1/graph` of a snapshot encodes) with every edge new
//! and with 1% touched; and the web view's delta between two snapshots
//! (what each open live stream computes, four times a second) with 1% and
//! 10% of the edges touched.
//!
//! `cargo bench --bench snapshot`

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use vigil_controller::baseline::Baseline;
use vigil_controller::graph::Graph;
use vigil_controller::inventory::{Discovered, Inventory};
use vigil_controller::model::{
    Direction, EdgeKey, Modes, NodeId, Observation, Protocol, WorkloadId,
};
use vigil_controller::snapshot::{Parts, Snapshot, Views, build, build_with};

const WORKLOADS: usize = 5_000;
const DESTINATIONS: usize = 10;

struct State {
    modes: Modes,
    inventory: Inventory,
    graph: Graph,
    baseline: Baseline,
    edges: Vec<EdgeKey>,
}

impl State {
    fn parts(&self) -> Parts<'_> {
        static EMPTY_ALERTS: BTreeMap<String, vigil_controller::model::Alert> = BTreeMap::new();
        static EMPTY_QUARANTINED: BTreeMap<WorkloadId, vigil_controller::model::Quarantine> =
            BTreeMap::new();
        static EMPTY_GROWTH: BTreeMap<String, vigil_controller::stability::Growth> =
            BTreeMap::new();
        Parts {
            modes: &self.modes,
            inventory: &self.inventory,
            graph: &self.graph,
            baseline: &self.baseline,
            alerts: &EMPTY_ALERTS,
            dropped: 0,
            quarantined: &EMPTY_QUARANTINED,
            growth: &EMPTY_GROWTH,
        }
    }
}

fn observation(authority: &str) -> Observation {
    Observation {
        direction: Direction::Outbound,
        protocol: Protocol::Http1,
        source: None,
        claimed_source: None,
        claimed_authority: None,
        source_ip: None,
        authority: authority.into(),
        resolved_addr: None,
        method: "GET".into(),
        path: "/api/items/{id}".into(),
        status: 200,
        count: 3,
        denied: 0,
        bytes_in: 300,
        bytes_out: 2000,
        latency_sum_us: 4500,
    }
}

fn state() -> State {
    let mut state = State {
        modes: Modes::default(),
        inventory: Inventory::default(),
        graph: Graph::default(),
        baseline: Baseline::default(),
        edges: Vec::new(),
    };
    let now = 1_800_000_000;
    for w in 0..WORKLOADS {
        let id = WorkloadId::new("load", &format!("w{w}")).expect("a name");
        state.inventory.discover(
            &Discovered {
                id: id.clone(),
                ..Discovered::default()
            },
            now,
        );
        for d in 0..DESTINATIONS {
            let target = if d % 2 == 0 {
                NodeId::Workload(
                    WorkloadId::new("load", &format!("w{}", (w + d + 1) % WORKLOADS))
                        .expect("a name"),
                )
            } else {
                NodeId::External(format!("svc-{}.example.com:443", (w * 7 + d) % 2000))
            };
            let edge = (NodeId::Workload(id.clone()), target);
            state
                .graph
                .record(&edge, &observation(&edge.1.to_string()), now);
            state.baseline.learn_edge(&edge);
            state.edges.push(edge);
        }
    }
    state
}

/// The graph JSON of `snapshot`, returned with it: Criterion drops a
/// routine's output after timing it, so the time is the encoding's alone,
/// not also the freeing of 50,000 views no longer shared.
fn encoded(snapshot: Snapshot) -> (Vec<u8>, Snapshot) {
    (snapshot.graph_json(), snapshot)
}

fn snapshot(c: &mut Criterion) {
    let state = state();
    let mut group = c.benchmark_group("snapshot");
    group.sample_size(10);
    group.bench_function("build/50k_edges", |b| {
        b.iter(|| black_box(build(&state.parts())))
    });
    for touched in [state.edges.len() / 100, state.edges.len() / 10] {
        let mut views = Views::default();
        build_with(&state.parts(), &mut views);
        group.bench_function(format!("kept_views/50k_edges_{touched}_touched"), |b| {
            b.iter_batched_ref(
                || (),
                |()| {
                    views.touch(
                        (state.edges.iter())
                            .step_by(state.edges.len() / touched)
                            .filter_map(|e| state.graph.find(e)),
                    );
                    black_box(build_with(&state.parts(), &mut views))
                },
                BatchSize::SmallInput,
            )
        });
    }
    // `GET /api/v1/graph`: the first reader of a snapshot encodes it.
    group.bench_function("json/50k_edges_all_new", |b| {
        b.iter_batched(
            || build(&state.parts()),
            |snapshot| black_box(encoded(snapshot)),
            BatchSize::LargeInput,
        )
    });
    // The same once the controller warmed the snapshot (as it does for
    // each one it publishes): the reader encodes the nodes and copies.
    group.bench_function("json/50k_edges_warmed", |b| {
        b.iter_batched(
            || {
                let snapshot = build(&state.parts());
                snapshot.warm();
                snapshot
            },
            |snapshot| black_box(encoded(snapshot)),
            BatchSize::LargeInput,
        )
    });
    // For reference: the whole graph encoded in one pass by serde_json.
    group.bench_function("json/50k_edges_one_pass", |b| {
        b.iter_batched(
            || build(&state.parts()),
            |snapshot| {
                let json = serde_json::to_vec(&snapshot.graph);
                black_box((snapshot, json))
            },
            BatchSize::LargeInput,
        )
    });
    let mut views = Views::default();
    build_with(&state.parts(), &mut views).graph_json();
    let touched = state.edges.len() / 100;
    group.bench_function(format!("json/50k_edges_{touched}_touched"), |b| {
        b.iter_batched(
            || {
                views.touch(
                    (state.edges.iter())
                        .step_by(100)
                        .filter_map(|e| state.graph.find(e)),
                );
                build_with(&state.parts(), &mut views)
            },
            |snapshot| black_box(encoded(snapshot)),
            BatchSize::LargeInput,
        )
    });
    // The live stream's delta between consecutive snapshots.
    for touched in [state.edges.len() / 100, state.edges.len() / 10] {
        let mut views = Views::default();
        let old = build_with(&state.parts(), &mut views);
        views.touch(
            (state.edges.iter())
                .step_by(state.edges.len() / touched)
                .filter_map(|e| state.graph.find(e)),
        );
        let new = build_with(&state.parts(), &mut views);
        group.bench_function(format!("web_delta/50k_edges_{touched}_touched"), |b| {
            b.iter(|| black_box(vigil_controller::web::delta::diff(&old, &new)))
        });
    }
    group.finish();
}

criterion_group!(benches, snapshot);
criterion_main!(benches);
