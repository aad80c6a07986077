use super::*;
use crate::kube::crd::BaselineEdge;
use crate::model::{NodeId, WorkloadId};

fn wl(ns: &str, name: &str) -> NodeId {
    NodeId::Workload(WorkloadId::new(ns, name).unwrap())
}

/// The engine's baseline: lab/jupyter calls pypi; other/web calls lab/db.
fn engine() -> Baseline {
    let mut b = Baseline::default();
    for (ns, n) in [("lab", "jupyter"), ("lab", "db"), ("other", "web")] {
        b.learn_workload(&WorkloadId::new(ns, n).unwrap());
    }
    b.learn_edge(&(
        wl("lab", "jupyter"),
        NodeId::External("pypi.org:443".into()),
    ));
    b.learn_edge(&(wl("other", "web"), wl("lab", "db")));
    b
}

fn spec(profile: &str, to: &[&str]) -> VigilBaselineSpec {
    VigilBaselineSpec {
        profile: profile.into(),
        edges: to
            .iter()
            .map(|t| BaselineEdge {
                from: format!("workload:lab/{profile}"),
                to: (*t).into(),
                endpoints: vec![],
            })
            .collect(),
    }
}

#[test]
fn the_leader_writes_each_profile_it_has_that_the_cluster_lacks() {
    let current = engine();
    let none = BTreeMap::new();
    let writes = to_write(&current, &none);
    let keys: Vec<String> = writes
        .iter()
        .map(|((ns, n), _)| format!("{ns}/{n}"))
        .collect();
    assert_eq!(keys, ["lab/db", "lab/jupyter", "other/web"]);
    let all: BTreeMap<Key, VigilBaselineSpec> = writes.into_iter().collect();
    assert!(to_write(&current, &all).is_empty(), "nothing once written");
}

#[test]
fn what_to_import_for_a_namespace() {
    let current = engine();
    let same = baseline_resources(&current, "lab");
    let kubectl: BTreeMap<String, VigilBaselineSpec> = [
        (
            "jupyter".to_owned(),
            spec("jupyter", &["external:files.example:443"]),
        ),
        ("db".to_owned(), spec("db", &[])),
    ]
    .into();
    let nothing = BTreeMap::new();
    assert!(
        to_import("lab", &BTreeMap::new(), &current, &nothing).is_none(),
        "none: left alone"
    );
    assert!(
        to_import("lab", &same, &current, &nothing).is_none(),
        "already so"
    );
    let own: BTreeMap<Key, VigilBaselineSpec> = kubectl
        .iter()
        .map(|(n, s)| (("lab".to_owned(), n.clone()), s.clone()))
        .collect();
    assert!(
        to_import("lab", &kubectl, &current, &own).is_none(),
        "our own write"
    );
    let imported = to_import("lab", &kubectl, &current, &nothing)
        .unwrap()
        .unwrap();
    let edges: Vec<String> = imported
        .edges()
        .map(|(a, b)| format!("{a} -> {b}"))
        .collect();
    assert_eq!(
        edges,
        [
            "workload:lab/jupyter -> external:files.example:443",
            // other/web's edge into lab is other's: kept.
            "workload:other/web -> workload:lab/db",
        ]
    );
}

#[test]
fn a_foreign_edge_is_an_error_not_an_import() {
    let mut bad = spec("jupyter", &[]);
    bad.edges.push(BaselineEdge {
        from: "workload:other/web".into(),
        to: "external:pool.example:3333".into(),
        endpoints: vec![],
    });
    let resources: BTreeMap<String, VigilBaselineSpec> = [("jupyter".to_owned(), bad)].into();
    let result = to_import("lab", &resources, &engine(), &BTreeMap::new()).unwrap();
    assert!(result.is_err());
}
