use std::path::PathBuf;

use super::*;
use crate::model::WorkloadId;

fn chart_crds() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../charts/vigil/crds/vigil.io.yaml")
}

#[test]
fn the_charts_crds_are_the_generated_ones() {
    let generated = crds_yaml();
    if std::env::var_os("VIGIL_WRITE_CRDS").is_some() {
        std::fs::write(chart_crds(), &generated).unwrap();
    }
    let chart = std::fs::read_to_string(chart_crds()).unwrap_or_default();
    assert!(
        chart == generated,
        "charts/vigil/crds/vigil.io.yaml is stale: run VIGIL_WRITE_CRDS=1 cargo nextest run --workspace -E 'test(the_charts_crds_are_the_generated_ones)'"
    );
    for name in ["vigilpolicies.vigil.io", "vigilbaselines.vigil.io"] {
        assert!(generated.contains(&format!("name: {name}")), "{name}");
    }
}

#[test]
fn a_policy_mode_is_the_engines_mode() {
    let table = [
        ("learning", Mode::Learning),
        ("enforcement", Mode::Enforcement { alert_only: false }),
        ("alert-only", Mode::Enforcement { alert_only: true }),
    ];
    for (text, mode) in table {
        let object = serde_json::json!({"apiVersion": "vigil.io/v1alpha1", "kind": "VigilPolicy",
            "metadata": {"name": "default", "namespace": "lab"}, "spec": {"mode": text}});
        let policy: VigilPolicy = serde_json::from_value(object).unwrap();
        assert_eq!(Mode::from(policy.spec.mode), mode, "{text}");
        assert_eq!(PolicyMode::from(mode), policy.spec.mode);
    }
    let bad = serde_json::json!({"mode": "block-everything"});
    let err = serde_json::from_value::<VigilPolicySpec>(bad)
        .unwrap_err()
        .to_string();
    assert!(err.contains("block-everything"), "{err}");
}

#[test]
fn each_profile_has_a_valid_distinct_resource_name() {
    let table = [
        ("coredns", "coredns"),
        (
            "jupyterhub.k8s-singleuser-sample",
            "jupyterhub.k8s-singleuser-sample",
        ),
        ("Jupyter_Base", "jupyter-base-"),
        ("_x_", "x-"),
        ("__", "profile-"),
    ];
    for (profile, prefix) in table {
        let name = resource_name(profile);
        assert!(name.starts_with(prefix), "{profile} -> {name}");
        assert!(name.len() <= 253);
    }
    assert_ne!(resource_name("A_b"), resource_name("a-b"));
    assert_ne!(resource_name("a_b"), resource_name("a-b"));
}

fn sample() -> Baseline {
    let wl = |ns: &str, n: &str| NodeId::Workload(WorkloadId::new(ns, n).unwrap());
    let ext = |a: &str| NodeId::External(a.into());
    let mut b = Baseline::default();
    for (ns, name) in [
        ("lab", "jupyter.base"),
        ("lab", "postgres"),
        ("other", "web"),
    ] {
        b.learn_workload(&WorkloadId::new(ns, name).unwrap());
    }
    let pypi = (wl("lab", "jupyter.base"), ext("pypi.org:443"));
    b.learn_edge(&pypi);
    b.learn_endpoint(&pypi, "GET /simple/{name}/");
    b.learn_edge(&(wl("lab", "jupyter.base"), wl("lab", "postgres")));
    b.learn_edge(&(NodeId::Internet, wl("lab", "jupyter.base")));
    b.learn_edge(&(wl("other", "web"), wl("lab", "postgres")));
    b
}

#[test]
fn a_namespaces_baseline_round_trips_through_its_resources() {
    let baseline = sample();
    let resources = baseline_resources(&baseline, "lab");
    let names: Vec<&str> = resources.keys().map(String::as_str).collect();
    assert_eq!(names, ["jupyter.base", "postgres"]);
    let jupyter = &resources["jupyter.base"];
    assert_eq!(jupyter.edges.len(), 3, "{jupyter:?}");
    assert_eq!(jupyter.edges[0].from, "internet");
    assert!(
        resources["postgres"].edges.is_empty(),
        "other's edge is other's"
    );
    let back =
        baseline_from_resources("lab", resources.iter().map(|(n, s)| (n.as_str(), s))).unwrap();
    let lab_only = crate::baseline_doc::restrict(&baseline, Some("lab"));
    let without_other: Vec<_> = lab_only
        .edges()
        .filter(|e| !matches!(&e.0, NodeId::Workload(id) if id.namespace == "other"))
        .cloned()
        .collect();
    let got: Vec<_> = back.edges().cloned().collect();
    assert_eq!(got, without_other);
    let workloads: Vec<String> = back.workloads().map(ToString::to_string).collect();
    assert_eq!(workloads, ["lab/jupyter.base", "lab/postgres"]);
    assert!(back.has_endpoint(
        &(
            NodeId::Workload(WorkloadId::new("lab", "jupyter.base").unwrap()),
            NodeId::External("pypi.org:443".into())
        ),
        "GET /simple/{name}/"
    ));
}

#[test]
fn a_resource_cannot_speak_for_another_profile_or_namespace() {
    let foreign = [
        ("workload:other/web", "external:pool.example:3333"),
        ("workload:lab/postgres", "external:pool.example:3333"),
        ("internet", "workload:other/web"),
    ];
    for (from, to) in foreign {
        let spec = VigilBaselineSpec {
            profile: "jupyter.base".into(),
            edges: vec![BaselineEdge {
                from: from.into(),
                to: to.into(),
                endpoints: vec![],
            }],
        };
        let err = baseline_from_resources("lab", [("jupyter.base", &spec)]).unwrap_err();
        assert!(
            matches!(&err, CrdError::ForeignEdge { name, .. } if name == "jupyter.base"),
            "{from} -> {to}: {err}"
        );
        assert!(
            err.to_string().contains("VigilBaseline lab/jupyter.base"),
            "{err}"
        );
    }
}

#[test]
fn a_bad_value_is_refused_naming_the_namespace() {
    let spec = VigilBaselineSpec {
        profile: "Not A Profile!".into(),
        edges: vec![],
    };
    let err = baseline_from_resources("lab", [("x", &spec)]).unwrap_err();
    assert!(matches!(err, CrdError::Doc { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with("VigilBaselines of namespace lab: line"),
        "{err}"
    );
}
