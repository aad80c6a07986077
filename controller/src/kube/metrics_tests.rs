//! Table tests of the CPU poller's pure parts, on the recorded PodMetrics
//! and pods of `tests/fixtures/k8s`.

use std::path::PathBuf;

use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher::Event;
use serde_json::{Value, json};

use super::*;
use crate::kube::discovery::Change;

fn fixture(path: &str) -> Value {
    let dir = std::env::var_os("VIGIL_K8S_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/k8s"));
    let text = std::fs::read_to_string(dir.join(path)).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn intervals_read_with_their_units() {
    let ok = [
        ("30s", Duration::from_secs(30)),
        ("30", Duration::from_secs(30)),
        ("500ms", Duration::from_millis(500)),
        ("100ms", Duration::from_millis(100)),
        ("2m", Duration::from_secs(120)),
        ("1h", Duration::from_secs(3600)),
        ("0", Duration::ZERO),
        ("0s", Duration::ZERO),
    ];
    for (text, want) in ok {
        assert_eq!(parse_interval(text), Ok(want), "{text}");
    }
    for bad in [
        "", "s", "-1s", "1.5s", "10x", "1d", "99ms", "2d", "25h", " 30s",
    ] {
        let e = parse_interval(bad).unwrap_err();
        assert!(e.contains(&format!("{bad:?}")), "{bad}: {e}");
    }
}

#[test]
fn errors_back_off_from_the_interval_to_five_minutes() {
    let poll = Duration::from_secs(30);
    let table = [(0, 30), (1, 60), (2, 120), (3, 240), (4, 300), (40, 300)];
    for (failures, secs) in table {
        assert_eq!(
            backoff(poll, failures),
            Duration::from_secs(secs),
            "{failures}"
        );
    }
    assert_eq!(
        backoff(Duration::from_secs(600), 3),
        Duration::from_secs(600)
    );
}

#[test]
fn the_flags_give_the_rule_and_refuse_nonsense() {
    use clap::Parser;
    #[derive(clap::Parser)]
    struct Wrap {
        #[command(flatten)]
        args: ResourceArgs,
    }
    let args = ResourceArgs::default();
    assert_eq!(args.resource_poll, Duration::from_secs(30));
    assert_eq!(args.rule(), Rule::default());
    let args = Wrap::try_parse_from([
        "v",
        "--resource-poll",
        "200ms",
        "--resource-spike-factor",
        "3.5",
        "--resource-spike-floor",
        "1",
        "--resource-spike-samples",
        "2",
        "--resource-min-samples",
        "5",
    ])
    .unwrap()
    .args;
    let rule = args.rule();
    assert_eq!((rule.factor, rule.floor_m), (3.5, 1000.0));
    assert_eq!((rule.samples, rule.min_samples), (2, 5));
    for bad in [
        ["--resource-spike-factor", "1"],
        ["--resource-spike-factor", "NaN"],
        ["--resource-spike-floor", "half"],
        ["--resource-spike-floor", "-1"],
        ["--resource-spike-samples", "0"],
        ["--resource-min-samples", "0"],
        ["--resource-poll", "soon"],
    ] {
        let e = Wrap::try_parse_from(["v", bad[0], bad[1]]).err();
        assert!(e.is_some(), "{bad:?}");
    }
    let e = Wrap::try_parse_from(["v", "--resource-spike-floor", "half"])
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("\"half\" is not a Kubernetes quantity"), "{e}");
}

/// The recorded coredns pod, moved to `lab` as pod `name` of StatefulSet
/// `notebook`, with the sidecar when `injected`.
fn lab_pod(name: &str, injected: bool) -> Value {
    let list = fixture("api/podlist-kube-system-k8s-v1.36.json");
    let mut pod = list["items"][0].clone();
    pod["metadata"]["namespace"] = json!("lab");
    pod["metadata"]["name"] = json!(name);
    pod["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "notebook",
                "uid": "5f0c1d2e-0000-4000-8000-000000000001", "controller": true}]);
    pod["spec"]["containers"][0]["name"] = json!("notebook");
    if injected {
        let sidecar =
            json!({"name": "vigil-proxy", "image": "ghcr.io/vigil-mesh/vigil-proxy:0.1.0"});
        pod["spec"]["containers"]
            .as_array_mut()
            .unwrap()
            .push(sidecar);
    }
    pod
}

/// The recorded PodMetrics renamed to `ns/name` with `containers`.
fn metrics(ns: &str, name: &str, containers: &[(&str, &str)]) -> DynamicObject {
    let mut m = fixture("api/doc-example-podmetrics-kube-scheduler-minikube.json");
    m["metadata"]["namespace"] = json!(ns);
    m["metadata"]["name"] = json!(name);
    m["containers"] = containers
        .iter()
        .map(|(c, cpu)| json!({"name": c, "usage": {"cpu": cpu, "memory": "22244Ki"}}))
        .collect();
    serde_json::from_value(m).unwrap()
}

#[test]
fn only_injected_pods_are_read_named_by_their_workload_with_all_their_cpu() {
    let mut cluster = Cluster::default();
    let mut pods = fixture("api/podlist-kube-system-k8s-v1.36.json")["items"]
        .as_array()
        .unwrap()
        .clone();
    pods.extend([
        lab_pod("notebook-0", true),
        lab_pod("notebook-1", true),
        lab_pod("broken-0", true),
        lab_pod("plain-0", false),
    ]);
    cluster.apply(Change::Pod(Event::Init));
    for pod in pods {
        let pod: Pod = serde_json::from_value(pod).unwrap();
        cluster.apply(Change::Pod(Event::InitApply(pod)));
    }
    cluster.apply(Change::Pod(Event::InitDone));
    // As recorded: a pod without the sidecar, not Vigil's.
    let recorded: DynamicObject = serde_json::from_value(fixture(
        "api/doc-example-podmetrics-kube-scheduler-minikube.json",
    ))
    .unwrap();
    let items = vec![
        recorded,
        metrics(
            "kube-system",
            "coredns-589f44dc88-4fpns",
            &[("coredns", "2")],
        ),
        metrics(
            "lab",
            "notebook-0",
            &[
                ("notebook", "250m"),
                ("vigil-proxy", "900m"),
                ("helper", "12u"),
            ],
        ),
        metrics(
            "lab",
            "notebook-1",
            &[("notebook", "9559630n"), ("istio-proxy", "3")],
        ),
        metrics("lab", "broken-0", &[("notebook", "12 cores")]),
        metrics("lab", "plain-0", &[("notebook", "4")]),
        // Not (yet) seen by discovery.
        metrics("lab", "notebook-2", &[("notebook", "4")]),
    ];
    let got = read(&items, |ns, pod| cluster.injected_workload(ns, pod));
    let notebook = WorkloadId::new("lab", "notebook").unwrap();
    assert_eq!(
        got.samples,
        vec![
            Sample {
                workload: notebook.clone(),
                pod: "notebook-0".into(),
                cpu_nanos: 1_150_012_000,
                at: "2022-01-27T19:24:31Z".into(),
            },
            Sample {
                workload: notebook,
                pod: "notebook-1".into(),
                cpu_nanos: 3_009_559_630,
                at: "2022-01-27T19:24:31Z".into(),
            },
        ]
    );
    assert_eq!(got.skipped.len(), 1, "{:?}", got.skipped);
    assert!(
        got.skipped[0].starts_with("lab/broken-0: container \"notebook\": \"12 cores\" is not"),
        "{:?}",
        got.skipped
    );
    // No containers, or no usage: skipped with the reason.
    let odd = vec![
        metrics("lab", "notebook-0", &[]),
        serde_json::from_value(
            json!({"kind": "PodMetrics", "apiVersion": "metrics.k8s.io/v1beta1",
            "metadata": {"name": "notebook-1", "namespace": "lab"},
            "containers": [{"name": "notebook", "usage": {"memory": "1Mi"}}]}),
        )
        .unwrap(),
    ];
    let got = read(&odd, |ns, pod| cluster.injected_workload(ns, pod));
    assert!(got.samples.is_empty());
    assert_eq!(
        got.skipped,
        vec![
            "lab/notebook-0: no containers".to_owned(),
            "lab/notebook-1: container \"notebook\" has no usage.cpu".to_owned(),
        ]
    );
}
