use serde_json::{Value, json};

use super::*;
use crate::kube::admission::parse;

fn review(group: &str, kind: &str, operation: &str, object: Value) -> Review {
    let request = json!({"uid": "u-1", "kind": {"group": group, "version": "v1", "kind": kind},
        "resource": {"group": group, "version": "v1", "resource": "x"},
        "namespace": "lab", "operation": operation, "userInfo": {"username": "alice"},
        "object": object, "oldObject": null, "dryRun": false});
    let body =
        json!({"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1", "request": request});
    parse(body.to_string().as_bytes()).expect("a valid review")
}

fn lab() -> Namespace {
    Namespace {
        name: "lab".into(),
        ..Namespace::default()
    }
}

fn template(image: &str, labels: Value) -> Value {
    json!({"metadata": {"labels": labels}, "spec": {"containers": [{"name": "main", "image": image}]}})
}

fn owner(kind: &str, name: &str, image: &str, labels: Value) -> Value {
    json!({"metadata": {"name": name}, "spec": {"template": template(image, labels)}})
        .as_object()
        .map(|o| {
            let mut o = o.clone();
            o.insert("kind".into(), json!(kind));
            Value::Object(o)
        })
        .unwrap()
}

#[test]
fn each_workload_kind_is_named_and_profiled_as_its_sidecar_would_be() {
    let miner = "docker.io/xmrig/xmrig:6.21";
    let pod = json!({"metadata": {"generateName": "web-7d4b9c6f5-", "ownerReferences": [
            {"kind": "ReplicaSet", "name": "web-7d4b9c6f5", "controller": true}],
            "labels": {"pod-template-hash": "7d4b9c6f5"}},
        "spec": {"containers": [{"name": "main", "image": miner}]}});
    let table = [
        (
            "apps",
            "Deployment",
            owner("Deployment", "web", miner, json!({})),
            "web",
            "xmrig/xmrig",
        ),
        (
            "apps",
            "StatefulSet",
            owner("StatefulSet", "db", "postgres:16", json!({})),
            "db",
            "postgres",
        ),
        (
            "batch",
            "Job",
            owner("Job", "nightly-29012345", "python:3.12", json!({})),
            "nightly",
            "python",
        ),
        ("", "Pod", pod, "web", "xmrig/xmrig"),
        // The label names the profile, whatever the image.
        (
            "apps",
            "Deployment",
            owner(
                "Deployment",
                "nb",
                miner,
                json!({"vigil.io/profile": "jupyter/scipy-notebook"}),
            ),
            "nb",
            "jupyter/scipy-notebook",
        ),
    ];
    for (group, kind, object, workload, profile) in table {
        let w = workload_of(&review(group, kind, "CREATE", object), &lab())
            .unwrap_or_else(|| panic!("{kind} is checked"));
        assert_eq!(w.kind, kind);
        assert_eq!(w.id.to_string(), format!("lab/{workload}"), "{kind}");
        assert_eq!(w.profile, profile, "{kind}");
        assert_eq!(
            w.baseline_id().name,
            profile.replace('/', "."),
            "{kind}: the baseline keys profiles with / written ."
        );
    }
}

#[test]
fn other_kinds_and_operations_are_not_checked() {
    let deployment = owner("Deployment", "web", "nginx", json!({}));
    let table = [
        ("apps", "Deployment", "UPDATE"),
        ("apps", "Deployment", "DELETE"),
        ("apps", "ReplicaSet", "CREATE"),
        ("", "ConfigMap", "CREATE"),
        ("extensions", "Deployment", "CREATE"),
    ];
    for (group, kind, op) in table {
        let r = review(group, kind, op, deployment.clone());
        assert_eq!(workload_of(&r, &lab()), None, "{group}/{kind} {op}");
    }
}

#[test]
fn the_mode_and_the_baseline_decide() {
    let r = review(
        "apps",
        "Deployment",
        "CREATE",
        owner("Deployment", "miner", "xmrig/xmrig", json!({})),
    );
    let w = workload_of(&r, &lab()).unwrap();
    let enforcement = Mode::Enforcement { alert_only: false };
    let alert_only = Mode::Enforcement { alert_only: true };
    assert_eq!(decide(&w, Mode::Learning, false), Verdict::Admit);
    assert_eq!(decide(&w, enforcement, true), Verdict::Admit);
    assert_eq!(decide(&w, alert_only, true), Verdict::Admit);
    let Verdict::Deny(message) = decide(&w, enforcement, false) else {
        panic!("denied in enforcement")
    };
    assert!(
        message.contains("profile xmrig/xmrig (Deployment miner) is not in its baseline"),
        "{message}"
    );
    let Verdict::Warn(warning) = decide(&w, alert_only, false) else {
        panic!("warned in alert-only")
    };
    assert!(warning.contains("profile xmrig/xmrig"), "{warning}");

    let allowed = AdmissionResponse::from(&r.request);
    let denied = apply(allowed.clone(), &decide(&w, enforcement, false));
    assert!(!denied.allowed);
    assert!(denied.result.message.contains("xmrig/xmrig"));
    let warned = apply(allowed.clone(), &decide(&w, alert_only, false));
    assert!(warned.allowed);
    assert_eq!(warned.warnings.unwrap().len(), 1);
    assert!(apply(allowed.clone(), &Verdict::Admit).allowed);
}

#[test]
fn without_an_image_or_label_the_profile_is_the_workload_name() {
    let r = review(
        "",
        "Pod",
        "CREATE",
        json!({"metadata": {"name": "solo"},
        "spec": {"containers": [{"name": "main", "image": "???"}]}}),
    );
    let w = workload_of(&r, &lab()).unwrap();
    assert_eq!(w.profile, "");
    assert_eq!(w.profile_label(), "solo");
    assert_eq!(w.baseline_id().to_string(), "lab/solo");
}
