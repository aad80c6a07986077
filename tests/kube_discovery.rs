//! Discovery end to end: a real controller (`--kubernetes on`) whose
//! kube-rs client reaches, through a kubeconfig, a loopback server that
//! replays recorded list and watch responses of `tests/fixtures/k8s`
//! (a kind cluster's kube-system pods, Deployments, Services,
//! EndpointSlices and Namespaces, a Kubeflow notebook pod, the recorded
//! watch BOOKMARK and the 410 Gone watch ERROR). The watch events' objects
//! are recorded ones whose resourceVersions were raised above the list's,
//! as a live server's would be. A gRPC client registers and reports like
//! a sidecar.

mod common;
#[path = "kube/controller.rs"]
mod controller;
#[path = "kube/replay.rs"]
mod replay;
#[path = "kube/support.rs"]
mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use vigil_proto::v1;

use common::{Controller, bin, spawn_proc, wait_for};
use controller::{Sidecar, sidecar, start_named};
use replay::{Replay, Step, Watch, empty_list};
use support::fixture_json;

const PODS: &str = "/api/v1/pods";

/// The recorded Kubeflow notebook pod as a watch would carry it.
fn notebook_pod(resource_version: &str) -> Value {
    let mut pod = fixture_json("kubeflow/notebook-pod-istio-injected-minikf.converted.json");
    pod["apiVersion"] = json!("v1");
    pod["kind"] = json!("Pod");
    pod["metadata"]["resourceVersion"] = json!(resource_version);
    pod
}

/// The recorded `default` namespace renamed `kubeflow-user`: a Kubeflow
/// profile owned by `user@example.com`.
fn kubeflow_namespace() -> Value {
    let mut ns = fixture_json("api/namespacelist-vm-test.json")["items"][0].clone();
    ns["metadata"]["name"] = json!("kubeflow-user");
    ns["metadata"]["labels"] = json!({"kubernetes.io/metadata.name": "kubeflow-user",
        "app.kubernetes.io/part-of": "kubeflow-profile"});
    ns["metadata"]["annotations"] = json!({"owner": "user@example.com"});
    ns
}

/// The API as the test plays it; the gate holds the first pod watch.
fn cluster(api: &Replay, gate: tokio::sync::watch::Receiver<bool>) {
    let mut namespaces = fixture_json("api/namespacelist-vm-test.json");
    namespaces["items"]
        .as_array_mut()
        .unwrap()
        .push(kubeflow_namespace());
    api.serve("/api/v1/namespaces", vec![namespaces], vec![]);
    let pods = fixture_json("api/podlist-kube-system-k8s-v1.36.json");
    assert_eq!(pods["metadata"]["resourceVersion"], "554");
    // The relist after the 410: one coredns pod went while the watch was
    // gone, the notebook is there.
    let mut relisted = pods.clone();
    relisted["metadata"]["resourceVersion"] = json!("700");
    let items = relisted["items"].as_array_mut().unwrap();
    items.retain(|p| p["metadata"]["name"] != "coredns-589f44dc88-lxdzt");
    items.push(notebook_pod("650"));
    let bookmark = fixture_json_line(
        "api/watch-pods-sendInitialEvents-bookmark-k8s-v1.36.ndjson",
        "BOOKMARK",
    );
    let mut bookmark = bookmark;
    bookmark["object"]["metadata"]["resourceVersion"] = json!("610");
    let gone = fixture_json_line("api/doc-example-watch-error-410-expired.ndjson", "ERROR");
    api.serve(
        PODS,
        vec![pods, relisted],
        vec![
            Watch {
                steps: vec![
                    Step::Gate(gate),
                    Step::Event(json!({"type": "ADDED", "object": notebook_pod("600")})),
                    Step::Event(bookmark),
                ],
                hold: false,
            },
            Watch {
                steps: vec![Step::Event(gone)],
                hold: false,
            },
        ],
    );
    api.serve(
        "/api/v1/services",
        vec![fixture_json("api/servicelist-kube-dns-vm-test.json")],
        vec![],
    );
    api.serve(
        "/apis/discovery.k8s.io/v1/endpointslices",
        vec![fixture_json("api/endpointslicelist-vm-test-EDITED.json")],
        vec![],
    );
    api.serve(
        "/apis/apps/v1/deployments",
        vec![fixture_json(
            "api/deploymentlist-kube-system-k8s-v1.36.json",
        )],
        vec![],
    );
    api.serve(
        "/apis/apps/v1/statefulsets",
        vec![empty_list("apps/v1", "StatefulSetList", "554")],
        vec![],
    );
    api.serve(
        "/apis/batch/v1/jobs",
        vec![empty_list("batch/v1", "JobList", "554")],
        vec![],
    );
}

/// The first line of an ndjson fixture whose `type` is `kind`.
fn fixture_json_line(path: &str, kind: &str) -> Value {
    support::fixture_text(path)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|e| e["type"] == kind)
        .unwrap_or_else(|| panic!("no {kind} event in {path}"))
}

fn start_controller(dir: &std::path::Path, api: &Replay) -> Controller {
    start_named(dir, api, "vigil-controller", &[])
}

/// The sidecar of `lab/notebook`.
async fn notebook_sidecar(ctl: &Controller, token: &str) -> Sidecar {
    let identity = v1::Identity {
        workload: "notebook".into(),
        namespace: "lab".into(),
        instance: "discovery-test".into(),
        ..Default::default()
    };
    sidecar(ctl, token, identity).await
}

/// The `spoofed_source` alert count of the notebook for `claimed`.
fn spoofed(ctl: &Controller, claimed: &str) -> u64 {
    let alerts = ctl.json(&["alerts"]);
    alerts
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["kind"] == "spoofed_source" && a["destination"] == claimed)
        .map_or(0, |a| a["count"].as_u64().unwrap())
}

/// One inbound call to the notebook claiming `claimed` from `ip`, a claim
/// its sidecar could not check (no one calls the notebook): the controller
/// checks the IP against the discovered pod IPs.
fn claim(claimed: &str, ip: &str) -> v1::Observation {
    v1::Observation {
        direction: v1::Direction::Inbound.into(),
        protocol: v1::Protocol::Http1.into(),
        source: claimed.into(),
        source_ip: ip.into(),
        method: "GET".into(),
        path: "/".into(),
        status: 200,
        count: 1,
        ..Default::default()
    }
}

/// Reports claims of coredns from each of `ips`, then a marker (kindnet
/// claimed from an IP never its own), and returns by how much coredns's
/// `spoofed_source` count grew once the marker's alert shows: the snapshot
/// that shows the marker shows the claims before it.
fn coredns_spoofed_by(
    ctl: &Controller,
    rt: &tokio::runtime::Runtime,
    sidecar: &Sidecar,
    seq: &mut u64,
    ips: &[&str],
) -> u64 {
    let before = spoofed(ctl, "kube-system/coredns");
    let marker = spoofed(ctl, "kube-system/kindnet");
    for observations in [
        ips.iter()
            .map(|ip| claim("kube-system/coredns", ip))
            .collect(),
        vec![claim("kube-system/kindnet", "192.0.2.1")],
    ] {
        *seq += 1;
        let batch = v1::ReportBatch {
            identity: Some(sidecar.identity.clone()),
            seq: *seq,
            observations,
            dropped: 0,
        };
        rt.block_on(sidecar.reports.send(batch)).unwrap();
    }
    wait_for("the marker's spoofed_source alert", || {
        (spoofed(ctl, "kube-system/kindnet") > marker).then_some(())
    });
    spoofed(ctl, "kube-system/coredns") - before
}

fn outbound(authority: &str, resolved: &str) -> v1::Observation {
    v1::Observation {
        direction: v1::Direction::Outbound.into(),
        protocol: v1::Protocol::Tcp.into(),
        authority: authority.into(),
        resolved_addr: resolved.into(),
        count: 1,
        ..Default::default()
    }
}

#[test]
fn discovery_names_workloads_from_the_api_and_resumes_its_watches() {
    let dir = tempfile::tempdir().unwrap();
    let api = Replay::start();
    let (open, gate) = tokio::sync::watch::channel(false);
    cluster(&api, gate);
    let ctl = start_controller(dir.path(), &api);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let token = std::fs::read_to_string(common::sidecar_token_file(
        &dir.path().join("vigil-controller"),
    ))
    .unwrap();
    let sidecar = rt.block_on(notebook_sidecar(&ctl, token.trim()));
    let mut seq = 0;

    // Listed: coredns's two pods prove its calls (the controller's check
    // of a claim a sidecar could not check), before any sidecar of it runs;
    // any other IP is an impostor.
    // Until coredns is discovered it calls from no IP: all three claims
    // are an impostor's; once its pods are listed, only the third.
    let claims = ["10.244.0.2", "10.244.0.3", "192.0.2.7"];
    wait_for("coredns's pods proving its calls", || {
        (coredns_spoofed_by(&ctl, &rt, &sidecar, &mut seq, &claims) == 1).then_some(())
    });
    let graph = ctl.json(&["graph"]);
    let nodes: Vec<&str> = graph["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["id"].as_str())
        .collect();
    for node in [
        "workload:kube-system/coredns",
        "workload:kube-system/kindnet",
        "workload:kube-system/kube-proxy",
        "workload:kube-system/etcd-v1.36-control-plane",
    ] {
        assert!(nodes.contains(&node), "{node} in {nodes:?}");
    }

    // East-west: the service address and a pod IP (any port) name the
    // workload, not an address outside.
    seq += 1;
    let batch = v1::ReportBatch {
        identity: Some(sidecar.identity.clone()),
        seq,
        observations: vec![
            outbound("kube-dns.kube-system.svc:53", "10.96.0.10:53"),
            outbound("10.244.0.3:9153", "10.244.0.3:9153"),
        ],
        dropped: 0,
    };
    rt.block_on(sidecar.reports.send(batch)).unwrap();
    let edge = ctl.wait_edge("workload:lab/notebook", "workload:kube-system/coredns", 2);
    assert_eq!(edge["requests"], 2, "{edge}");
    let graph = ctl.json(&["graph"]);
    let outside: Vec<&Value> = graph["edges"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["target"].as_str().unwrap().contains("10."))
        .collect();
    assert!(outside.is_empty(), "{outside:?}");

    // Enforcement in the notebook's namespace, then the watch goes on: a
    // new notebook of a profile outside the baseline is a new_deployment,
    // named with its tenant, though no sidecar of it ever ran.
    ctl.set_mode(&["enforcement", "--namespace", "kubeflow-user"]);
    open.send(true).unwrap();
    let alert = ctl.wait_alert("new_deployment", "asa232rstudio", None);
    assert_eq!(alert["namespace"], "kubeflow-user", "{alert}");
    assert_eq!(alert["tenant"], "user@example.com", "{alert}");

    // The bookmark moved the watch on: the next watch resumes from it, gets
    // 410 Gone, and the watcher lists again (one coredns pod gone).
    wait_for("the pod 10.244.0.2 gone from coredns", || {
        (coredns_spoofed_by(&ctl, &rt, &sidecar, &mut seq, &["10.244.0.2"]) == 1).then_some(())
    });
    assert_eq!(
        coredns_spoofed_by(&ctl, &rt, &sidecar, &mut seq, &["10.244.0.3"]),
        0,
        "the pod that is left still proves coredns's calls"
    );
    let calls = wait_for("the watch after the relist", || {
        let calls = api.calls(PODS);
        (calls.len() >= 5).then_some(calls)
    });
    // (watch?, resourceVersion): list, watch from the list's version, watch
    // from the bookmark's, the relist after the 410, watch from its version.
    let want = [
        (false, ""),
        (true, "554"),
        (true, "610"),
        (false, ""),
        (true, "700"),
    ];
    let got: Vec<(bool, &str)> = calls.iter().map(|(w, rv)| (*w, rv.as_str())).collect();
    assert_eq!(got, want, "pod requests: {:?}", api.requests());
    // One alert only, though the relist shows the notebook again.
    let alerts = ctl.json(&["alerts"]);
    let new: Vec<&Value> = alerts
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["kind"] == "new_deployment")
        .collect();
    assert_eq!(new.len(), 1, "{alerts}");
    assert!(
        ctl.proc.log().contains("Kubernetes watch failed"),
        "the 410 is logged"
    );
}

#[test]
fn kubernetes_on_without_an_api_is_a_start_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(bin("vigil-controller"));
    cmd.args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--sidecar-token-file")
        .arg(common::sidecar_token_file(dir.path()))
        .env("VIGIL_KUBERNETES", "on")
        .env("KUBECONFIG", dir.path().join("missing-kubeconfig"))
        .env("HOME", dir.path())
        .env_remove("KUBERNETES_SERVICE_HOST");
    let mut proc = spawn_proc("vigil-controller", cmd, dir.path());
    let status = proc.wait_exit();
    assert!(!status.success());
    let log = proc.log();
    assert!(
        log.contains("--kubernetes on, but no Kubernetes API configuration"),
        "{log}"
    );
}

/// Every kind discovery watches, served empty.
fn empty_cluster(api: &Replay) {
    let core = [
        ("/api/v1/namespaces", "v1", "NamespaceList"),
        (PODS, "v1", "PodList"),
    ];
    api.serve_empty(&core, "10");
    api.serve_empty(replay::WORKLOAD_LISTS, "10");
}

fn policy(namespace: &str, name: &str, mode: &str, resource_version: &str) -> Value {
    json!({"apiVersion": "vigil.io/v1alpha1", "kind": "VigilPolicy",
        "metadata": {"name": name, "namespace": namespace, "resourceVersion": resource_version,
                     "uid": format!("{namespace}-{name}")},
        "spec": {"mode": mode}})
}

#[test]
fn a_vigil_policy_sets_its_namespaces_mode() {
    let dir = tempfile::tempdir().unwrap();
    let api = Replay::start();
    empty_cluster(&api);
    let (open, gate) = tokio::sync::watch::channel(false);
    let mut list = empty_list("vigil.io/v1alpha1", "VigilPolicyList", "20");
    list["items"] = json!([
        policy("lab", "default", "enforcement", "15"),
        // Not the namespace's `default` policy: ignored.
        policy("lab2", "draft", "enforcement", "16"),
    ]);
    api.serve(
        "/apis/vigil.io/v1alpha1/vigilpolicies",
        vec![list],
        vec![Watch {
            steps: vec![
                Step::Gate(gate),
                Step::Event(json!({"type": "MODIFIED",
                    "object": policy("lab", "default", "alert-only", "21")})),
            ],
            hold: true,
        }],
    );
    let ctl = start_controller(dir.path(), &api);
    let mode_of = |ns: &str| {
        let modes = ctl.json(&["mode"]);
        let mode = &modes["namespaces"][ns];
        match (mode["mode"].as_str(), mode["alert_only"].as_bool()) {
            (Some("enforcement"), Some(true)) => "alert-only".to_owned(),
            (Some(m), _) => m.to_owned(),
            (None, _) => String::new(),
        }
    };
    wait_for("lab in enforcement from its VigilPolicy", || {
        (mode_of("lab") == "enforcement").then_some(())
    });
    assert_eq!(mode_of("lab2"), "", "{}", ctl.json(&["mode"]));
    // kubectl edits the policy: the watch carries the change.
    open.send(true).unwrap();
    wait_for("lab in alert-only", || {
        (mode_of("lab") == "alert-only").then_some(())
    });
    let audit = ctl.json(&["audit"]);
    let by_kubernetes = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["actor"] == "kubernetes" && e["target"] == "lab")
        .count();
    assert_eq!(by_kubernetes, 2, "{audit}");
}

fn holder(api: &Replay) -> Option<String> {
    let lease = api.lease("vigil-system", "vigil-controller")?;
    lease["spec"]["holderIdentity"].as_str().map(str::to_owned)
}

#[test]
fn one_replica_leads_through_a_lease_and_another_takes_over() {
    let dir = tempfile::tempdir().unwrap();
    let api = Replay::start();
    empty_cluster(&api);
    let flags = |id: &'static str| ["--identity", id, "--lease-duration", "3"];
    let mut a = start_named(dir.path(), &api, "controller-a", &flags("a"));
    wait_for("a holds the Lease", || {
        (holder(&api).as_deref() == Some("a")).then_some(())
    });
    wait_for("a says it leads", || {
        a.proc
            .log()
            .contains("this controller is the leader")
            .then_some(())
    });
    let b = start_named(dir.path(), &api, "controller-b", &flags("b"));
    wait_for("b follows a", || {
        let log = b.proc.log();
        (log.contains("this controller follows") && log.contains("leader=a")).then_some(())
    });
    assert_eq!(holder(&api).as_deref(), Some("a"));
    // a crashes without a word: b takes the Lease once a has not renewed
    // it for its duration (3 s here; 15 s by default).
    a.proc.kill();
    let crashed = std::time::Instant::now();
    wait_for("b takes over", || {
        (holder(&api).as_deref() == Some("b")).then_some(())
    });
    // a renewed at most 2 s before it died and b waits 3 s from the last
    // renewal it saw: never sooner than 1 s after the crash.
    assert!(
        crashed.elapsed() >= Duration::from_secs(1),
        "not before the lease ran out"
    );
    // It says so once it has the Lease (the log line follows the write).
    wait_for("b says it leads", || {
        b.proc
            .log()
            .contains("this controller is the leader")
            .then_some(())
    });
    let lease = api.lease("vigil-system", "vigil-controller").unwrap();
    assert_eq!(lease["spec"]["leaseTransitions"], 1, "{lease}");
    // b stops cleanly: it hands the Lease back, and a new replica leads at once.
    let mut b = b;
    b.proc.terminate();
    assert_eq!(holder(&api), None, "released on a clean stop");
    let c = start_named(dir.path(), &api, "controller-c", &flags("c"));
    wait_for("c leads", || {
        (holder(&api).as_deref() == Some("c")).then_some(())
    });
    drop(c);
}

#[test]
fn the_leader_writes_a_mode_set_with_vigilctl_into_the_vigil_policy() {
    let dir = tempfile::tempdir().unwrap();
    let api = Replay::start();
    empty_cluster(&api);
    let mut list = empty_list("vigil.io/v1alpha1", "VigilPolicyList", "20");
    list["items"] = json!([policy("lab", "default", "enforcement", "15")]);
    api.serve("/apis/vigil.io/v1alpha1/vigilpolicies", vec![list], vec![]);
    let flags = ["--identity", "a", "--lease-duration", "3"];
    let ctl = start_named(dir.path(), &api, "controller-a", &flags);
    wait_for("a leads", || {
        (holder(&api).as_deref() == Some("a")).then_some(())
    });
    ctl.set_mode(&["enforcement", "--alert-only", "--namespace", "jhub"]);
    let path = "/apis/vigil.io/v1alpha1/namespaces/jhub/vigilpolicies/default";
    let (_, written) = wait_for("jhub's VigilPolicy written", || {
        api.patches().into_iter().find(|(p, _)| p == path)
    });
    assert_eq!(written["kind"], "VigilPolicy", "{written}");
    assert_eq!(written["metadata"]["name"], "default");
    assert_eq!(written["spec"]["mode"], "alert-only", "{written}");
    // lab's mode came from its policy: nothing to write back.
    let requests = api.requests();
    assert!(
        api.patches()
            .iter()
            .all(|(p, _)| !p.contains("/namespaces/lab/")),
        "{requests:?}"
    );
}

#[test]
fn the_baseline_lives_in_vigil_baselines() {
    let dir = tempfile::tempdir().unwrap();
    let api = Replay::start();
    empty_cluster(&api);
    api.serve(
        "/apis/vigil.io/v1alpha1/vigilpolicies",
        vec![empty_list("vigil.io/v1alpha1", "VigilPolicyList", "20")],
        vec![],
    );
    // A baseline reviewed in Git: lab's jupyter profile may reach files.example.
    let mut list = empty_list("vigil.io/v1alpha1", "VigilBaselineList", "30");
    list["items"] = json!([{"apiVersion": "vigil.io/v1alpha1", "kind": "VigilBaseline",
        "metadata": {"name": "jupyter", "namespace": "lab", "resourceVersion": "25", "uid": "b1"},
        "spec": {"profile": "jupyter", "edges": [{"from": "workload:lab/jupyter",
            "to": "external:files.example:443", "endpoints": ["GET /data/{name}"]}]}}]);
    api.serve("/apis/vigil.io/v1alpha1/vigilbaselines", vec![list], vec![]);
    let flags = ["--identity", "a", "--lease-duration", "3"];
    let ctl = start_named(dir.path(), &api, "controller-a", &flags);
    wait_for("lab's baseline from its VigilBaselines", || {
        let (ok, out, _) = ctl.vigilctl(&["baseline", "export", "--namespace", "lab"]);
        (ok && out.contains("external:files.example:443") && out.contains("GET /data/{name}"))
            .then_some(())
    });
    let audit = ctl.json(&["audit"]);
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["actor"] == "kubernetes"),
        "{audit}"
    );

    // A sidecar of lab/notebook learns an edge: the leader writes its
    // profile's resource, and leaves jupyter's (already so) alone.
    wait_for("a leads", || {
        (holder(&api).as_deref() == Some("a")).then_some(())
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let token =
        std::fs::read_to_string(common::sidecar_token_file(&dir.path().join("controller-a")))
            .unwrap();
    let sidecar = rt.block_on(notebook_sidecar(&ctl, token.trim()));
    let batch = v1::ReportBatch {
        identity: Some(sidecar.identity.clone()),
        seq: 1,
        observations: vec![outbound("pypi.org:443", "")],
        dropped: 0,
    };
    rt.block_on(sidecar.reports.send(batch)).unwrap();
    let path = "/apis/vigil.io/v1alpha1/namespaces/lab/vigilbaselines/notebook";
    let (_, written) = wait_for("lab/notebook's VigilBaseline written", || {
        api.patches().into_iter().find(|(p, o)| {
            p == path
                && o["spec"]["edges"]
                    .to_string()
                    .contains("external:pypi.org:443")
        })
    });
    assert_eq!(written["spec"]["profile"], "notebook", "{written}");
    assert_eq!(written["spec"]["edges"][0]["from"], "workload:lab/notebook");
    assert!(
        api.patches()
            .iter()
            .all(|(p, _)| !p.ends_with("/vigilbaselines/jupyter")),
        "{:?}",
        api.patches()
    );
}
