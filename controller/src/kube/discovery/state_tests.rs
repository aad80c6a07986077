//! Table tests of the discovery reducer on recorded API payloads
//! (`tests/fixtures/k8s`, or `$VIGIL_K8S_FIXTURES`).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use serde_json::{Value, json};

use super::*;

fn fixture(path: &str) -> Value {
    let dir = std::env::var_os("VIGIL_K8S_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/k8s"));
    let file = dir.join(path);
    let text = std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("{}: {e} (the fixtures live in tests/fixtures/k8s; VIGIL_K8S_FIXTURES names another copy)", file.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn items(path: &str) -> Vec<Value> {
    fixture(path)["items"].as_array().unwrap().clone()
}

fn typed<T: serde::de::DeserializeOwned>(value: &Value) -> T {
    serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("{e}: {value}"))
}

/// A whole list as the watcher hands it: Init, InitApply each, InitDone.
fn listed<T: serde::de::DeserializeOwned>(
    cluster: &mut Cluster,
    objects: &[Value],
    wrap: fn(Event<T>) -> Change,
) {
    cluster.apply(wrap(Event::Init));
    for o in objects {
        cluster.apply(wrap(Event::InitApply(typed(o))));
    }
    cluster.apply(wrap(Event::InitDone));
}

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

fn addrs(list: &[&str]) -> Vec<SocketAddr> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

fn by_name(found: &[Discovered], name: &str) -> Discovered {
    found
        .iter()
        .find(|d| d.id.name == name)
        .unwrap_or_else(|| panic!("{name} not in {found:#?}"))
        .clone()
}

/// The recorded kube-system cluster: its namespaces and pods.
fn kind_cluster() -> (Cluster, Vec<Discovered>) {
    let mut cluster = Cluster::default();
    listed(
        &mut cluster,
        &items("api/namespacelist-vm-test.json"),
        Change::Namespace,
    );
    listed(
        &mut cluster,
        &items("api/podlist-kube-system-k8s-v1.36.json"),
        Change::Pod,
    );
    let found = cluster.drain();
    (cluster, found)
}

#[test]
fn a_listed_cluster_names_each_workload_by_its_owner() {
    let (_, found) = kind_cluster();
    let names: Vec<&str> = found.iter().map(|d| d.id.name.as_str()).collect();
    // ReplicaSet coredns-589f44dc88 is Deployment coredns (its hash
    // stripped); DaemonSets are themselves; a static pod's mirror (owned
    // by its Node) is its own workload.
    assert_eq!(
        names,
        [
            "coredns",
            "etcd-v1.36-control-plane",
            "kindnet",
            "kube-apiserver-v1.36-control-plane",
            "kube-controller-manager-v1.36-control-plane",
            "kube-proxy",
            "kube-scheduler-v1.36-control-plane",
        ]
    );
    let table: [(&str, &[&str], &str); 3] = [
        ("coredns", &["10.244.0.2", "10.244.0.3"], "coredns/coredns"),
        // On the host's network: 172.18.0.3 is the node's, not theirs.
        ("kindnet", &[], "kindest/kindnetd"),
        ("etcd-v1.36-control-plane", &[], "etcd"),
    ];
    for (name, want_ips, profile) in table {
        let d = by_name(&found, name);
        assert_eq!(d.id.namespace, "kube-system");
        assert_eq!(d.pod_ips, ips(want_ips), "{name}");
        assert_eq!(d.profile, profile, "{name}");
        assert!(d.service_addrs.is_empty(), "{name}");
    }
}

#[test]
fn nothing_is_handed_out_until_a_list_is_whole() {
    let pods = items("api/podlist-kube-system-k8s-v1.36.json");
    let mut cluster = Cluster::default();
    cluster.apply(Change::Pod(Event::Init));
    cluster.apply(Change::Pod(Event::InitApply(typed(&pods[0]))));
    assert_eq!(cluster.drain(), vec![]);
    cluster.apply(Change::Pod(Event::InitDone));
    let found = cluster.drain();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].pod_ips, ips(&["10.244.0.3"]));
}

#[test]
fn the_same_object_again_hands_out_nothing() {
    let (mut cluster, _) = kind_cluster();
    let pods = items("api/podlist-kube-system-k8s-v1.36.json");
    cluster.apply(Change::Pod(Event::Apply(typed(&pods[0]))));
    assert_eq!(cluster.drain(), vec![]);
    // A relist that finds the same pods: nothing either.
    listed(&mut cluster, &pods, Change::Pod);
    assert_eq!(cluster.drain(), vec![]);
}

#[test]
fn a_relist_forgets_what_was_deleted_meanwhile() {
    let (mut cluster, _) = kind_cluster();
    let pods = items("api/podlist-kube-system-k8s-v1.36.json");
    // After a 410 Gone the watcher lists again: one coredns pod is gone.
    let kept: Vec<Value> = pods
        .iter()
        .filter(|p| p["metadata"]["name"] != "coredns-589f44dc88-lxdzt")
        .cloned()
        .collect();
    listed(&mut cluster, &kept, Change::Pod);
    let found = cluster.drain();
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].id.name, "coredns");
    assert_eq!(found[0].pod_ips, ips(&["10.244.0.3"]));
}

#[test]
fn a_workload_whose_pods_are_gone_is_handed_out_once_without_ips() {
    let (mut cluster, _) = kind_cluster();
    let pods = items("api/podlist-kube-system-k8s-v1.36.json");
    for pod in &pods[..2] {
        cluster.apply(Change::Pod(Event::Delete(typed(pod))));
    }
    let found = cluster.drain();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].id.name, "coredns");
    assert!(found[0].pod_ips.is_empty());
    assert_eq!(found[0].profile, "coredns/coredns", "kept for the engine");
    assert_eq!(cluster.drain(), vec![]);
    assert!(cluster.workloads().all(|d| d.id.name != "coredns"));
}

#[test]
fn an_ended_pod_gives_up_its_ip() {
    let (mut cluster, _) = kind_cluster();
    let mut pod = items("api/podlist-kube-system-k8s-v1.36.json")[0].clone();
    pod["status"]["phase"] = json!("Succeeded");
    cluster.apply(Change::Pod(Event::Apply(typed(&pod))));
    let found = cluster.drain();
    assert_eq!(found[0].pod_ips, ips(&["10.244.0.2"]));
}

#[test]
fn a_service_address_names_the_workload_its_slices_list() {
    let (mut cluster, _) = kind_cluster();
    listed(
        &mut cluster,
        &items("api/servicelist-kube-dns-vm-test.json"),
        Change::Service,
    );
    // Without slices yet, the selector (k8s-app: kube-dns) picks coredns.
    let found = cluster.drain();
    assert_eq!(found.len(), 1);
    let want = addrs(&["10.96.0.10:53", "10.96.0.10:9153"]);
    assert_eq!(found[0].service_addrs, want);
    // The recorded slice's targetRef names a pod of another recording:
    // its address (10.244.0.3) still finds coredns, so nothing changes.
    listed(
        &mut cluster,
        &items("api/endpointslicelist-vm-test-EDITED.json"),
        Change::EndpointSlice,
    );
    assert_eq!(cluster.drain(), vec![]);
}

#[test]
fn a_service_over_two_workloads_names_neither() {
    let (mut cluster, _) = kind_cluster();
    let mut service = items("api/servicelist-kube-dns-vm-test.json")[0].clone();
    service["spec"]["selector"] = json!({"tier": "control-plane"});
    cluster.apply(Change::Service(Event::Apply(typed(&service))));
    assert_eq!(cluster.drain(), vec![]);
    // A slice that lists the two coredns pods by name: one workload.
    let mut slice = items("api/endpointslicelist-vm-test-EDITED.json")[1].clone();
    slice["endpoints"] = json!([
        {"addresses": ["10.244.0.2"], "targetRef": {"kind": "Pod", "name": "coredns-589f44dc88-lxdzt"}},
        {"addresses": ["10.244.0.3"], "targetRef": {"kind": "Pod", "name": "coredns-589f44dc88-4fpns"}},
    ]);
    cluster.apply(Change::EndpointSlice(Event::Apply(typed(&slice))));
    let found = cluster.drain();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].service_addrs.len(), 2);
    // An endpoint of kindnet joins: two workloads, the address names none.
    let mut more = slice.clone();
    more["metadata"]["name"] = json!("kube-dns-extra");
    more["endpoints"] = json!([{"addresses": ["172.18.0.3"],
        "targetRef": {"kind": "Pod", "name": "kindnet-4pxt7"}}]);
    cluster.apply(Change::EndpointSlice(Event::Apply(typed(&more))));
    let found = cluster.drain();
    assert_eq!(found.len(), 1);
    assert!(found[0].service_addrs.is_empty());
}

#[test]
fn a_headless_service_has_no_address() {
    let (mut cluster, _) = kind_cluster();
    let mut service = items("api/servicelist-kube-dns-vm-test.json")[0].clone();
    service["spec"]["clusterIP"] = json!("None");
    cluster.apply(Change::Service(Event::Apply(typed(&service))));
    assert_eq!(cluster.drain(), vec![]);
}

#[test]
fn an_owner_is_a_workload_before_its_first_pod() {
    let mut cluster = Cluster::default();
    listed(
        &mut cluster,
        &items("api/deploymentlist-kube-system-k8s-v1.36.json"),
        Change::Deployment,
    );
    let found = cluster.drain();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].id.name, "coredns");
    assert!(found[0].pod_ips.is_empty());
    assert_eq!(found[0].profile, "coredns/coredns");
    // Its pods join the same workload.
    listed(
        &mut cluster,
        &items("api/podlist-kube-system-k8s-v1.36.json"),
        Change::Pod,
    );
    let coredns = by_name(&cluster.drain(), "coredns");
    assert_eq!(coredns.pod_ips, ips(&["10.244.0.2", "10.244.0.3"]));
    assert_eq!(
        cluster
            .workloads()
            .filter(|d| d.id.name == "coredns")
            .count(),
        1
    );
}

/// The recorded Kubeflow notebook pod, in its namespace.
fn notebook() -> Value {
    let mut pod = fixture("kubeflow/notebook-pod-istio-injected-minikf.converted.json");
    pod["apiVersion"] = json!("v1");
    pod["kind"] = json!("Pod");
    pod
}

#[test]
fn a_kubeflow_notebook_is_its_notebook_and_its_tenant_the_profile_owner() {
    let mut cluster = Cluster::default();
    cluster.apply(Change::Pod(Event::Apply(typed(&notebook()))));
    let found = cluster.drain();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].id.to_string(), "kubeflow-user/asa232rstudio");
    assert_eq!(found[0].pod_ips, ips(&["172.17.0.80"]));
    assert_eq!(
        found[0].profile,
        "j1r0q0g6/notebooks/notebook-servers/rstudio-tidyverse"
    );
    assert_eq!(found[0].tenant, "", "the namespace is not known yet");
    // The namespace arrives: a Kubeflow profile owned by a user.
    let mut ns = items("api/namespacelist-vm-test.json")[0].clone();
    ns["metadata"]["name"] = json!("kubeflow-user");
    ns["metadata"]["labels"] = json!({"app.kubernetes.io/part-of": "kubeflow-profile"});
    ns["metadata"]["annotations"] = json!({"owner": "user@example.com"});
    cluster.apply(Change::Namespace(Event::Apply(typed(&ns))));
    let found = cluster.drain();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].tenant, "user@example.com");
}

#[test]
fn a_statefulset_of_a_notebook_and_its_pod_agree() {
    let mut cluster = Cluster::default();
    let pod = notebook();
    let statefulset = json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "asa232rstudio", "namespace": "kubeflow-user"},
        "spec": {"selector": {"matchLabels": {"statefulset": "asa232rstudio"}},
                 "serviceName": "", "template": {"metadata": {"labels": pod["metadata"]["labels"]},
                 "spec": pod["spec"]}},
    });
    cluster.apply(Change::StatefulSet(Event::Apply(typed(&statefulset))));
    cluster.apply(Change::Pod(Event::Apply(typed(&pod))));
    let found = cluster.drain();
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].id.name, "asa232rstudio");
}

#[test]
fn a_cronjob_job_is_its_cronjob() {
    let mut cluster = Cluster::default();
    let job = json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "report-29012345", "namespace": "analytics"},
        "spec": {"template": {"metadata": {}, "spec": {"containers": [
            {"name": "main", "image": "python:3.12"}]}}},
    });
    cluster.apply(Change::Job(Event::Apply(typed(&job))));
    let found = cluster.drain();
    assert_eq!(found[0].id.to_string(), "analytics/report");
    assert_eq!(found[0].profile, "python");
}

#[test]
fn the_recorded_watch_stream_applies_as_events() {
    // Each line of the recorded chunked watch body is one WatchEvent.
    let text = std::fs::read_to_string(
        std::env::var_os("VIGIL_K8S_FIXTURES")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/k8s")
            })
            .join("api/watch-pods-kube-system-k8s-v1.36.ndjson"),
    )
    .unwrap();
    let mut cluster = Cluster::default();
    for line in text.lines() {
        let event: kube::core::WatchEvent<Pod> = serde_json::from_str(line).unwrap();
        if let kube::core::WatchEvent::Added(pod) = event {
            cluster.apply(Change::Pod(Event::Apply(pod)));
        }
    }
    let found = cluster.drain();
    let coredns = by_name(&found, "coredns");
    assert_eq!(coredns.pod_ips, ips(&["10.244.0.2", "10.244.0.3"]));
    assert_eq!(found.len(), 4, "{found:#?}");
}
