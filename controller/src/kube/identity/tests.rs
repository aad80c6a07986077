use serde_json::json;

use super::*;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn owners_map_to_workloads() {
    let hash = labels(&[("pod-template-hash", "767df6d6b")]);
    let none = labels(&[]);
    let cases = [
        ("ReplicaSet", "web-767df6d6b", &hash, ("Deployment", "web")),
        (
            "ReplicaSet",
            "my-web-767df6d6b",
            &hash,
            ("Deployment", "my-web"),
        ),
        // The label names another hash: the ReplicaSet stands alone.
        (
            "ReplicaSet",
            "web-5d9c7b8f4",
            &hash,
            ("ReplicaSet", "web-5d9c7b8f4"),
        ),
        // No label: a hash-looking suffix is still stripped.
        (
            "ReplicaSet",
            "coredns-7db6d8ff4d",
            &none,
            ("Deployment", "coredns"),
        ),
        (
            "ReplicaSet",
            "standalone",
            &none,
            ("ReplicaSet", "standalone"),
        ),
        ("StatefulSet", "db", &none, ("StatefulSet", "db")),
        (
            "DaemonSet",
            "kube-proxy",
            &none,
            ("DaemonSet", "kube-proxy"),
        ),
        ("Job", "backup", &none, ("Job", "backup")),
        ("Job", "nightly-29123456", &none, ("CronJob", "nightly")),
        ("Job", "batch-12", &none, ("Job", "batch-12")),
        (
            "Node",
            "kind-control-plane",
            &none,
            ("Node", "kind-control-plane"),
        ),
    ];
    for (kind, name, l, (want_kind, want_name)) in cases {
        assert_eq!(
            owner_workload(kind, name, l),
            (want_kind.to_string(), want_name.to_string()),
            "{kind}/{name}"
        );
    }
}

#[test]
fn notebooks_and_jupyterhub_pods_are_named_for_what_users_see() {
    let ns = Namespace {
        name: "kubeflow-user".into(),
        ..Namespace::default()
    };
    let notebook = json!({"metadata": {"name": "asa-0", "labels": {"notebook-name": "asa", "statefulset": "asa"},
        "ownerReferences": [{"kind": "StatefulSet", "name": "asa", "controller": true}]},
        "spec": {"containers": [{"name": "asa", "image": "kubeflownotebookswg/jupyter-scipy:v1.8.0"}]}});
    let id = identify(&notebook, &ns);
    assert_eq!(
        (id.owner_kind.as_str(), id.workload.as_str()),
        ("Notebook", "asa")
    );
    assert_eq!(id.profile, "kubeflownotebookswg/jupyter-scipy");
    assert_eq!(id.namespace, "kubeflow-user");
    assert_eq!(id.service_account, "default");

    let hub = json!({"metadata": {"name": "jupyter-alice", "labels": {"hub.jupyter.org/username": "alice"},
        "annotations": {"hub.jupyter.org/username": "alice@example.com"}},
        "spec": {"serviceAccountName": "hub-user", "containers": [{"name": "notebook", "image": "quay.io/jupyterhub/k8s-singleuser-sample:4.4.0"}]}});
    let id = identify(&hub, &ns);
    assert_eq!(
        (id.owner_kind.as_str(), id.workload.as_str()),
        ("JupyterHub", "jupyter-alice")
    );
    assert_eq!(id.tenant, "alice@example.com");
    assert_eq!(id.service_account, "hub-user");
    assert_eq!(id.profile, "jupyterhub/k8s-singleuser-sample");

    let unnamed = json!({"metadata": {"generateName": "batch-"}, "spec": {"containers": []}});
    assert_eq!(identify(&unnamed, &ns).workload, "batch");
}

#[test]
fn tenants_come_from_jupyterhub_or_the_kubeflow_profile_owner() {
    let profile = Namespace {
        name: "kubeflow-user-example-com".into(),
        labels: labels(&[("app.kubernetes.io/part-of", "kubeflow-profile")]),
        annotations: labels(&[("owner", "user@example.com")]),
    };
    let plain = Namespace {
        annotations: labels(&[("owner", "someone@example.com")]),
        ..Namespace::default()
    };
    let pod = |annotations: Value, labels: Value| json!({"metadata": {"name": "p", "annotations": annotations, "labels": labels}, "spec": {"containers": []}});
    let cases = [
        (pod(json!({}), json!({})), &profile, "user@example.com"),
        // Only a profile namespace's owner counts.
        (pod(json!({}), json!({})), &plain, ""),
        (
            pod(json!({"hub.jupyter.org/username": "bob"}), json!({})),
            &profile,
            "bob",
        ),
        // A raw name with characters a tenant may not hold: the escaped label.
        (
            pod(
                json!({"hub.jupyter.org/username": "bob smith"}),
                json!({"hub.jupyter.org/username": "bob-20smith"}),
            ),
            &plain,
            "bob-20smith",
        ),
    ];
    for (pod, ns, want) in cases {
        assert_eq!(identify(&pod, ns).tenant, want, "{pod}");
    }
}

#[test]
fn profiles_come_from_the_label_or_the_image_repository() {
    let cases = [
        (
            "jupyter/scipy-notebook:2024-01-15",
            "jupyter/scipy-notebook",
        ),
        (
            "quay.io/jupyterhub/k8s-singleuser-sample:4.4.0",
            "jupyterhub/k8s-singleuser-sample",
        ),
        ("localhost:5000/team/nb@sha256:abc", "team/nb"),
        ("registry:5000/Team/NB:1", "team/nb"),
        ("nginx", "nginx"),
        ("", ""),
    ];
    for (image, want) in cases {
        assert_eq!(image_profile(image), want, "{image}");
    }
    let ns = Namespace::default();
    let labelled = json!({"metadata": {"name": "p", "labels": {"vigil.io/profile": "team-a"}},
        "spec": {"containers": [{"name": "c", "image": "nginx"}]}});
    assert_eq!(identify(&labelled, &ns).profile, "team-a");
    let bad = json!({"metadata": {"name": "p", "labels": {"vigil.io/profile": "/etc"}},
        "spec": {"containers": [{"name": "c", "image": "nginx"}]}});
    assert_eq!(identify(&bad, &ns).profile, "nginx");
}
