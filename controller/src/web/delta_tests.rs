use std::collections::BTreeMap;

use serde_json::json;

use super::*;
use crate::model::Modes;

fn node(id: &str, in_baseline: bool) -> NodeView {
    NodeView {
        id: format!("workload:{id}"),
        kind: "workload".into(),
        namespace: Some(id.split('/').next().unwrap().into()),
        name: id.split('/').nth(1).unwrap().into(),
        in_baseline,
        sidecars: 1,
        tenant: String::new(),
        profile: String::new(),
    }
}

fn edge(source: &str, target: &str, requests: u64, violation: bool) -> Arc<EdgeView> {
    Arc::new(EdgeView {
        source: source.into(),
        target: target.into(),
        requests,
        in_baseline: !violation,
        violation,
        denied: 0,
        errors: 0,
        bytes_in: 0,
        bytes_out: 0,
        mean_latency_ms: 1.0,
        endpoints: BTreeMap::new(),
        protocols: ["http1".to_owned()].into(),
        statuses: BTreeMap::new(),
        baseline_endpoints: Arc::from([]),
        first_seen: "2026-01-01T00:00:00Z".into(),
        last_seen: "2026-01-01T00:00:00Z".into(),
        json: Default::default(),
    })
}

fn alert(workload: &str, destination: &str, count: u64) -> Alert {
    serde_json::from_value(json!({
        "kind": "unknown_egress", "namespace": "ns", "workload": workload,
        "destination": destination, "action": "blocked", "count": count,
        "first_seen": "2026-01-01T00:00:00Z", "last_seen": "2026-01-01T00:00:00Z",
    }))
    .expect("an alert")
}

/// A snapshot of these; its edges sorted by ids, as the engine's are.
fn snap(nodes: Vec<NodeView>, mut edges: Vec<Arc<EdgeView>>, alerts: Vec<Alert>) -> Snapshot {
    edges.sort_by(|a, b| (&a.source, &a.target).cmp(&(&b.source, &b.target)));
    Snapshot {
        graph: GraphView {
            nodes: nodes.into(),
            edges: edges.into(),
        },
        alerts: alerts.into(),
        ..Snapshot::default()
    }
}

#[test]
fn only_what_changed_is_sent() {
    let a = node("ns/a", true);
    let b = node("ns/b", true);
    let c = node("ns/c", false);
    let ab = edge("workload:ns/a", "workload:ns/b", 3, false);
    let ab4 = edge("workload:ns/a", "workload:ns/b", 4, false);
    let ac = edge("workload:ns/a", "workload:ns/c", 1, true);
    let pool = alert("a", "pool:3333", 1);
    let pool2 = alert("a", "pool:3333", 2);
    let ab_key: EdgeIds = ("workload:ns/a".into(), "workload:ns/b".into());
    struct Case {
        name: &'static str,
        old: Snapshot,
        new: Snapshot,
        nodes: (Vec<NodeView>, Vec<String>),
        edges: (Vec<Arc<EdgeView>>, Vec<EdgeIds>),
        alerts: (Vec<Alert>, Vec<String>),
    }
    let cases = vec![
        Case {
            name: "nothing changed",
            old: snap(vec![a.clone(), b.clone()], vec![ab.clone()], vec![]),
            new: snap(vec![a.clone(), b.clone()], vec![ab.clone()], vec![]),
            nodes: (vec![], vec![]),
            edges: (vec![], vec![]),
            alerts: (vec![], vec![]),
        },
        Case {
            name: "a count went up: that edge only",
            old: snap(vec![a.clone(), b.clone()], vec![ab.clone()], vec![]),
            new: snap(vec![a.clone(), b.clone()], vec![ab4.clone()], vec![]),
            nodes: (vec![], vec![]),
            edges: (vec![ab4.clone()], vec![]),
            alerts: (vec![], vec![]),
        },
        Case {
            name: "a new node, a violating edge and its alert",
            old: snap(vec![a.clone(), b.clone()], vec![ab.clone()], vec![]),
            new: snap(
                vec![a.clone(), b.clone(), c.clone()],
                vec![ab.clone(), ac.clone()],
                vec![pool.clone()],
            ),
            nodes: (vec![c.clone()], vec![]),
            edges: (vec![ac.clone()], vec![]),
            alerts: (vec![pool.clone()], vec![]),
        },
        Case {
            name: "an alert repeated",
            old: snap(vec![], vec![], vec![pool.clone()]),
            new: snap(vec![], vec![], vec![pool2.clone()]),
            nodes: (vec![], vec![]),
            edges: (vec![], vec![]),
            alerts: (vec![pool2.clone()], vec![]),
        },
        Case {
            name: "removals by key",
            old: snap(
                vec![a.clone(), b.clone()],
                vec![ab.clone()],
                vec![pool.clone()],
            ),
            new: snap(vec![a.clone()], vec![], vec![]),
            nodes: (vec![], vec!["workload:ns/b".into()]),
            edges: (vec![], vec![ab_key.clone()]),
            alerts: (vec![], vec!["unknown_egress|ns/a|pool:3333".into()]),
        },
        Case {
            name: "a node joined the baseline",
            old: snap(vec![c.clone()], vec![], vec![]),
            new: snap(vec![node("ns/c", true)], vec![], vec![]),
            nodes: (vec![node("ns/c", true)], vec![]),
            edges: (vec![], vec![]),
            alerts: (vec![], vec![]),
        },
    ];
    for case in cases {
        let d = diff(&case.old, &case.new);
        assert_eq!(
            (d.nodes.upsert, d.nodes.remove),
            case.nodes,
            "{}",
            case.name
        );
        assert_eq!(
            (d.edges.upsert, d.edges.remove),
            case.edges,
            "{}",
            case.name
        );
        assert_eq!(
            (d.alerts.upsert, d.alerts.remove),
            case.alerts,
            "{}",
            case.name
        );
    }
}

#[test]
fn modes_and_counts_are_sent_when_they_change() {
    let old = snap(vec![node("ns/a", true)], vec![], vec![]);
    assert!(diff(&old, &old).is_empty());
    let mut new = old.clone();
    new.modes = Modes {
        default: Mode::Learning,
        namespaces: [("ns".to_owned(), Mode::Enforcement { alert_only: true })].into(),
    };
    let d = diff(&old, &new);
    assert_eq!(
        d.modes.map(|m| m.namespaces["ns"]),
        Some(Mode::Enforcement { alert_only: true })
    );
    assert!(d.counts.is_none());
    let mut counted = old.clone();
    counted.counts.alerts = 1;
    let d = diff(&old, &counted);
    assert_eq!(d.counts.map(|c| c.alerts), Some(1));
    assert!(d.modes.is_none());
    let mut quarantined = old.clone();
    quarantined.quarantined.insert(
        "ns/a".into(),
        serde_json::from_value(
            json!({"since": "2026-01-01T00:00:00Z", "actor": "admin", "reason": "miner"}),
        )
        .unwrap(),
    );
    let d = diff(&old, &quarantined);
    assert_eq!(d.quarantined.map(|q| q.len()), Some(1));
    assert!(
        diff(&quarantined, &old)
            .quarantined
            .is_some_and(|q| q.is_empty()),
        "a release"
    );
}

#[test]
fn a_delta_is_small_beside_the_whole_graph() {
    // 500 workloads in 10 namespaces, 5,000 edges; one edge counts up.
    let nodes: Vec<NodeView> = (0..500)
        .map(|i| node(&format!("ns{}/w{i}", i % 10), true))
        .collect();
    let edges: Vec<Arc<EdgeView>> = (0..5000)
        .map(|i| {
            edge(
                &nodes[i % 500].id,
                &nodes[(i % 500 + i / 500 + 1) % 500].id,
                1,
                false,
            )
        })
        .collect();
    let old = snap(nodes.clone(), edges.clone(), vec![]);
    let mut changed = edges.clone();
    Arc::make_mut(&mut changed[42]).requests += 1;
    let counted_up = changed[42].clone();
    let new = snap(nodes.clone(), changed, vec![]);
    let full = Full::json(&new);
    assert_eq!(full, serde_json::to_string(&Full::of(&new)).unwrap());
    let delta = serde_json::to_string(&diff(&old, &new)).unwrap();
    assert!(
        delta.len() * 100 < full.len(),
        "delta {} bytes, full {} bytes",
        delta.len(),
        full.len()
    );
    assert_eq!(diff(&old, &new).edges.upsert, vec![counted_up]);
}

/// The first event, assembled from the graph's cached JSON, is the JSON of
/// [`Full`]: with alerts, quarantines, modes and stability, and with none.
#[test]
fn the_full_event_is_the_json_of_full() {
    let a = node("ns/a", true);
    let pool = edge("workload:ns/a", "external:pool.example:3333", 2, true);
    let mut busy = snap(
        vec![a.clone()],
        vec![pool],
        vec![alert("a", "pool:3333", 2)],
    );
    busy.modes = Modes {
        default: Mode::Enforcement { alert_only: false },
        namespaces: [("ns".to_owned(), Mode::Learning)].into(),
    };
    busy.quarantined.insert(
        "ns/a".into(),
        Quarantine {
            since: "2026-01-01T00:00:00Z".into(),
            actor: "admin".into(),
            reason: "pool".into(),
        },
    );
    busy.counts.edges = 1;
    for (name, snapshot) in [("empty", Snapshot::default()), ("busy", busy)] {
        let event = Full::json(&snapshot);
        assert_eq!(
            event,
            serde_json::to_string(&Full::of(&snapshot)).unwrap(),
            "{name}"
        );
        let parsed: serde_json::Value = serde_json::from_str(&event).unwrap();
        assert!(parsed["graph"]["edges"].is_array(), "{name}");
    }
}

/// The merge walk over two sorted edge lists finds what a diff by keys
/// finds, however the two are cut into runs and whichever runs they share:
/// changed, added and removed edges at the start, middle and end, lists
/// empty, every edge changed.
#[test]
fn edge_changes_by_merge_walk_are_those_by_keys() {
    let e = |i: usize, requests: u64| {
        edge(
            "workload:ns/a",
            &format!("external:h{i:03}:443"),
            requests,
            false,
        )
    };
    let base: Vec<Arc<EdgeView>> = (0..100).map(|i| e(i, 1)).collect();
    let cut = |edges: &[Arc<EdgeView>], at: &[usize]| -> Vec<Vec<Arc<EdgeView>>> {
        let mut runs = Vec::new();
        let mut from = 0;
        for &to in at.iter().chain([&edges.len()]) {
            runs.push(edges[from..to].to_vec());
            from = to;
        }
        runs
    };
    let sixteens = |edges: &[Arc<EdgeView>]| {
        let at: Vec<usize> = (16..edges.len()).step_by(16).collect();
        cut(edges, &at)
    };
    let old = EdgeList::from_runs(sixteens(&base));
    let with = |f: &dyn Fn(&mut Vec<Arc<EdgeView>>)| {
        let mut edges = base.clone();
        f(&mut edges);
        edges
    };
    // New lists whose runs share old's where they hold the same views.
    let sharing = |edges: Vec<Arc<EdgeView>>, at: &[usize]| {
        let runs = cut(&edges, at);
        let old_runs = old.runs();
        let runs: Vec<Arc<[Arc<EdgeView>]>> = (runs.into_iter())
            .map(|run| {
                (old_runs.iter())
                    .find(|o| {
                        o.len() == run.len() && o.iter().zip(&run).all(|(a, b)| Arc::ptr_eq(a, b))
                    })
                    .cloned()
                    .unwrap_or_else(|| Arc::from(run))
            })
            .collect();
        let flat: Vec<Arc<EdgeView>> = runs.iter().flat_map(|r| r.iter().cloned()).collect();
        (
            EdgeList::from_runs(runs.iter().map(|r| r.to_vec()).collect()),
            flat,
            runs,
        )
    };
    let cases: Vec<(&str, EdgeList)> = vec![
        ("the same runs", old.clone()),
        (
            "the same views, cut anew",
            EdgeList::from_runs(cut(&base, &[10, 20, 77])),
        ),
        ("one changed", {
            let edges = with(&|v| v[40] = e(40, 2));
            sharing(edges, &[16, 32, 48, 64, 80, 96]).0
        }),
        ("one added in the middle, its run split", {
            let edges =
                with(&|v| v.insert(41, edge("workload:ns/a", "external:h040x:443", 1, false)));
            sharing(edges, &[16, 32, 41, 49, 65, 81, 97]).0
        }),
        ("added first and last", {
            let edges = with(&|v| {
                v.insert(0, edge("workload:ns/0", "external:x:1", 1, false));
                v.push(edge("workload:ns/z", "external:x:1", 1, false));
            });
            sharing(edges, &[1, 17, 33, 49, 65, 81, 97]).0
        }),
        ("removed first, middle and last", {
            let edges = with(&|v| {
                v.pop();
                v.remove(50);
                v.remove(0);
            });
            sharing(edges, &[15, 31, 47, 62, 78, 94]).0
        }),
        (
            "equal views, allocated anew",
            EdgeList::from((0..100).map(|i| e(i, 1)).collect::<Vec<_>>()),
        ),
        (
            "every one changed",
            EdgeList::from((0..100).map(|i| e(i, 2)).collect::<Vec<_>>()),
        ),
        ("none left", EdgeList::default()),
    ];
    for (name, new) in &cases {
        for (old, new) in [(&old, new), (new, &old)] {
            let by_keys = diff_with(
                old.iter(),
                new.iter(),
                |e| (e.source.clone(), e.target.clone()),
                |a, b| Arc::ptr_eq(a, b) || a == b,
            );
            let walked = diff_edges(old, new);
            assert_eq!(walked, by_keys, "{name}");
        }
    }
    // The cases above are not all empty (the check would pass on
    // nothing).
    let changed = diff_edges(&old, &cases[2].1);
    assert_eq!(changed.upsert, [e(40, 2)]);
    assert!(changed.remove.is_empty());
    let removed = diff_edges(&old, &cases[5].1);
    assert_eq!(removed.remove.len(), 3);
    assert_eq!(&*removed.remove[0].1, "external:h000:443");
    assert!(diff_edges(&old, &cases[6].1).upsert.is_empty());
    assert_eq!(diff_edges(&old, &cases[7].1).upsert.len(), 100);
    assert_eq!(diff_edges(&old, &cases[8].1).remove.len(), 100);
}
