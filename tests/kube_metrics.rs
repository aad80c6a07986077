//! CPU beside the network, end to end: a real controller (`--kubernetes
//! on`) whose kube-rs client reaches a loopback server replaying the
//! Kubernetes API (`tests/kube/replay.rs`): recorded pods (a kind
//! cluster's kube-system, and notebook pods of `lab` made from one of them
//! with the injected `vigil-proxy` container) and `metrics.k8s.io`
//! PodMetrics lists made from the recorded PodMetrics with other names and
//! numbers. First the metrics API is absent (metrics-server not
//! installed), then quiet numbers are learned, then in enforcement one
//! notebook pod spikes while its sidecar reports egress to a pool: one
//! `resource_spike` alert shows the CPU with the egress beside it, and the
//! CPU baseline survives a restart. No live cluster: see the README.

mod common;
#[path = "kube/controller.rs"]
mod controller;
#[path = "kube/replay.rs"]
mod replay;
#[path = "kube/support.rs"]
mod support;

use serde_json::{Value, json};
use vigil_proto::v1;

use common::{Controller, wait_for};
use controller::{Sidecar, sidecar};
use replay::Replay;
use support::fixture_json;

const METRICS: &str = "/apis/metrics.k8s.io/v1beta1/pods";
const PROFILE: &str = "jupyter-scipy";

/// The recorded coredns pod as notebook pod `lab/name` of StatefulSet
/// `notebook` (profile [`PROFILE`]), with the sidecar when `injected`.
fn lab_pod(name: &str, injected: bool) -> Value {
    let list = fixture_json("api/podlist-kube-system-k8s-v1.36.json");
    let mut pod = list["items"][0].clone();
    pod["metadata"]["namespace"] = json!("lab");
    pod["metadata"]["name"] = json!(name);
    pod["metadata"]["labels"] = json!({"vigil.io/profile": PROFILE});
    pod["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "notebook",
                "uid": "5f0c1d2e-0000-4000-8000-000000000001", "controller": true}]);
    pod["spec"]["containers"][0]["name"] = json!("notebook");
    if injected {
        pod["spec"]["containers"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "vigil-proxy", "image": "ghcr.io/vigil-mesh/vigil-proxy:0.1.0"}));
    }
    pod
}

/// The API as the test plays it (the metrics API not yet served).
fn cluster(api: &Replay) {
    let mut namespaces = fixture_json("api/namespacelist-vm-test.json");
    let mut lab = namespaces["items"][0].clone();
    lab["metadata"]["name"] = json!("lab");
    lab["metadata"]["labels"] = json!({"kubernetes.io/metadata.name": "lab"});
    namespaces["items"].as_array_mut().unwrap().push(lab);
    api.serve("/api/v1/namespaces", vec![namespaces], vec![]);
    let mut pods = fixture_json("api/podlist-kube-system-k8s-v1.36.json");
    pods["items"].as_array_mut().unwrap().extend([
        lab_pod("notebook-0", true),
        lab_pod("notebook-1", true),
        lab_pod("broken-0", true),
        lab_pod("plain-0", false),
    ]);
    api.serve("/api/v1/pods", vec![pods], vec![]);
    api.serve_empty(replay::WORKLOAD_LISTS, "554");
    api.serve_empty(replay::VIGIL_LISTS, "554");
}

/// The recorded PodMetrics renamed to `ns/name`, with `containers`' CPU.
fn pod_metrics(ns: &str, name: &str, containers: &[(&str, &str)]) -> Value {
    let mut m = fixture_json("api/doc-example-podmetrics-kube-scheduler-minikube.json");
    m["metadata"]["namespace"] = json!(ns);
    m["metadata"]["name"] = json!(name);
    m["metadata"]["selfLink"] = json!(format!("{METRICS}/namespaces/{ns}/pods/{name}"));
    m["containers"] = containers
        .iter()
        .map(|(c, cpu)| json!({"name": c, "usage": {"cpu": cpu, "memory": "22244Ki"}}))
        .collect();
    m
}

/// A PodMetricsList measured at second `t`: the recorded kube-scheduler
/// PodMetrics (not Vigil's, at `scheduler` CPU), a pod with a malformed
/// quantity, one without the sidecar, and the two notebook pods at `nb0`
/// and `nb1`.
fn poll(t: u32, scheduler: &str, nb0: &str, nb1: &str) -> Value {
    let mut recorded = fixture_json("api/doc-example-podmetrics-kube-scheduler-minikube.json");
    recorded["containers"][0]["usage"]["cpu"] = json!(scheduler);
    let mut list = json!({"kind": "PodMetricsList", "apiVersion": "metrics.k8s.io/v1beta1",
           "metadata": {"selfLink": METRICS}, "items": [
        recorded,
        pod_metrics("lab", "broken-0", &[("notebook", "12 cores"), ("vigil-proxy", "2m")]),
        pod_metrics("lab", "plain-0", &[("notebook", "3500m")]),
        pod_metrics("lab", "notebook-0", &[("notebook", nb0), ("vigil-proxy", "4m")]),
        pod_metrics("lab", "notebook-1", &[("notebook", nb1), ("vigil-proxy", "3m")]),
    ]});
    let at = format!(
        "2026-11-30T{:02}:{:02}:{:02}Z",
        t / 3600,
        t / 60 % 60,
        t % 60
    );
    for item in list["items"].as_array_mut().unwrap() {
        item["timestamp"] = json!(at);
    }
    list
}

/// Polls from second `from` on, one measurement every 15 s (the metrics
/// API answers the last one again once they are used up).
fn polls_of(from: u32, scheduler: &str, nb0: &str, nb1: &str) -> Vec<Value> {
    (0..60)
        .map(|i| poll(from + 15 * i, scheduler, nb0, nb1))
        .collect()
}

fn start_controller(dir: &std::path::Path, api: &Replay) -> Controller {
    let flags = ["--resource-poll", "200ms", "--resource-min-samples", "6"];
    let flags = [&flags[..], &["--resource-spike-samples", "2"]].concat();
    controller::start_named(dir, api, "vigil-controller", &flags)
}

/// The notebook's sidecar: registers as `lab/notebook` of [`PROFILE`] and
/// reports `observations`.
async fn notebook_sidecar(
    ctl: &Controller,
    token: &str,
    observations: Vec<v1::Observation>,
) -> Sidecar {
    let identity = v1::Identity {
        workload: "notebook".into(),
        namespace: "lab".into(),
        instance: "metrics-test".into(),
        profile: PROFILE.into(),
        ..Default::default()
    };
    let sidecar = sidecar(ctl, token, identity).await;
    let batch = v1::ReportBatch {
        identity: Some(sidecar.identity.clone()),
        seq: 1,
        observations,
        dropped: 0,
    };
    sidecar.reports.send(batch).await.unwrap();
    sidecar
}

/// The `resource_spike` alerts, as `vigilctl alerts --kind resource_spike
/// --json` shows them.
fn spikes(ctl: &Controller) -> Vec<Value> {
    ctl.json(&["alerts", "--kind", "resource_spike"])
        .as_array()
        .unwrap()
        .clone()
}

/// Waits for `n` more polls of the metrics API.
fn polls(api: &Replay, n: usize) {
    let before = api.calls(METRICS).len();
    wait_for(&format!("{n} more polls"), || {
        (api.calls(METRICS).len() >= before + n).then_some(())
    });
}

#[test]
fn a_cpu_spike_of_an_injected_pod_is_alerted_once_with_its_egress_beside_it() {
    let dir = tempfile::tempdir().unwrap();
    let api = Replay::start();
    cluster(&api);
    let ctl = start_controller(dir.path(), &api);

    // No metrics-server: said once, and the controller keeps going.
    wait_for("the absent metrics API logged", || {
        ctl.proc
            .log()
            .contains("metrics.k8s.io) is not served")
            .then_some(())
    });
    polls(&api, 3);
    let log = ctl.proc.log();
    assert_eq!(log.matches("metrics.k8s.io) is not served").count(), 1);

    // metrics-server arrives: quiet notebooks are learned (6 samples).
    api.serve(METRICS, polls_of(0, "9559630n", "120m", "150m"), vec![]);
    wait_for("the CPU baseline of the profile", || {
        ctl.proc.log().contains("CPU baseline ready").then_some(())
    });
    polls(&api, 3);
    let log = ctl.proc.log();
    assert!(log.contains("metrics API is served"), "{log}");
    assert!(log.contains(&format!("profile=lab/{PROFILE}")), "{log}");
    // The malformed quantity skips its pod, said once, never a crash.
    assert_eq!(log.matches("lab/broken-0").count(), 1, "{log}");
    assert!(
        log.contains("12 cores") && log.contains("is not a Kubernetes quantity"),
        "{log}"
    );

    // Enforcement; the notebook's sidecar reports egress to a pool.
    ctl.set_mode(&["enforcement", "--namespace", "lab"]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let token = std::fs::read_to_string(common::sidecar_token_file(
        &dir.path().join("vigil-controller"),
    ))
    .unwrap();
    let egress = v1::Observation {
        direction: v1::Direction::Outbound.into(),
        protocol: v1::Protocol::Tls.into(),
        authority: "pool.example:443".into(),
        count: 1,
        bytes_in: 48_000,
        bytes_out: 9_000,
        ..Default::default()
    };
    let _sidecar = rt.block_on(notebook_sidecar(&ctl, token.trim(), vec![egress]));
    ctl.wait_edge("workload:lab/notebook", "external:pool.example:443", 1);
    assert!(spikes(&ctl).is_empty());

    // notebook-0 spikes; so does the scheduler (not Vigil's) and the pod
    // without the sidecar.
    api.serve(METRICS, polls_of(3600, "4", "2500m", "140m"), vec![]);
    let alert = ctl.wait_alert("resource_spike", "notebook", Some("pod:notebook-0"));
    assert_eq!(alert["action"], "flagged", "a signal, not a block: {alert}");
    let r = &alert["evidence"]["resource"];
    assert_eq!(r["pod"], "notebook-0", "{alert}");
    assert_eq!(r["profile"], format!("lab/{PROFILE}"), "{alert}");
    assert_eq!(r["cpu_millicores"], 2504, "the sidecar's 4m too: {alert}");
    let baseline = r["baseline_millicores"].as_u64().unwrap();
    assert!((120..250).contains(&baseline), "{alert}");
    assert_eq!(r["egress"][0]["destination"], "pool.example:443", "{alert}");
    assert_eq!(r["egress"][0]["bytes_sent"], 48_000, "{alert}");
    assert_eq!(r["egress"][0]["violation"], true, "{alert}");
    let sentence = alert["explanation"].as_str().unwrap();
    assert!(
        sentence.contains("ran at 2504m of CPU")
            && sentence.contains("48.0 kB to pool.example:443"),
        "{sentence}"
    );
    // The table shows it too.
    let (ok, table, err) = ctl.vigilctl(&["alerts", "--kind", "resource_spike"]);
    assert!(ok, "{err}");
    assert!(
        table.contains("resource_spike") && table.contains("pod:notebook-0"),
        "{table}"
    );

    // More polls of the same spike: still one alert, raised once; nothing
    // for the quiet pod, the scheduler or the pod without the sidecar.
    polls(&api, 5);
    let all = spikes(&ctl);
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0]["count"], 1, "{all:?}");
    drop(_sidecar);

    // A restart: the baseline was stored. In enforcement nothing is
    // learned, yet notebook-1's spike is judged at once.
    let mut ctl = ctl;
    ctl.proc.terminate();
    api.serve(METRICS, polls_of(7200, "9559630n", "130m", "3100m"), vec![]);
    let ctl = start_controller(dir.path(), &api);
    let alert = ctl.wait_alert("resource_spike", "notebook", Some("pod:notebook-1"));
    assert_eq!(
        alert["evidence"]["resource"]["cpu_millicores"], 3103,
        "{alert}"
    );
    assert_eq!(spikes(&ctl).len(), 2);
}
