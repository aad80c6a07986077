//! End-to-end: profiles and tenants. Workloads of one profile share a
//! baseline: a new notebook of a known profile is no new deployment and may
//! do what its profile learned; a new profile is a new deployment. Every
//! alert names the tenant that owns the workload.

mod common;

use common::{Controller, Proxy, Upstream, hosts_file};

#[test]
fn a_new_workload_of_a_known_profile_inherits_its_baseline() {
    let tmp = tempfile::tempdir().unwrap();
    let ctl = Controller::start(&tmp.path().join("data"), tmp.path());
    let pypi = Upstream::start("pypi");
    let app = Upstream::start("nb");
    let hosts = hosts_file(tmp.path(), &["pypi.test", "files.test"]);
    let pypi_url = format!("http://pypi.test:{}/simple/", pypi.addr.port());
    let files_url = format!("http://files.test:{}/f", pypi.addr.port());
    let notebook = |name: &str, profile: &str, tenant: &str| {
        Proxy::start_with(
            name,
            ctl.grpc,
            app.addr,
            &hosts,
            tmp.path(),
            &["--profile", profile, "--tenant", tenant],
        )
    };

    // Learning: alice's notebook of the profile jupyter/scipy-notebook.
    let alice = notebook("jupyter-alice", "jupyter/scipy-notebook", "alice");
    assert_eq!(alice.get(&pypi_url).0, 200);
    ctl.wait_edge(
        "workload:default/jupyter-alice",
        &format!("external:pypi.test:{}", pypi.addr.port()),
        1,
    );
    ctl.set_mode(&["enforcement"]);

    // Bob's notebook of the same profile: no new deployment, and what the
    // profile learned passes; what it did not is blocked and alerted with
    // bob as the tenant.
    let bob = notebook("jupyter-bob", "jupyter/scipy-notebook", "bob@example.com");
    bob.wait_enforce(true);
    assert_eq!(
        bob.get(&pypi_url).0,
        200,
        "the profile's baseline applies to bob"
    );
    // The graph shows bob's call as in the baseline, with the endpoints
    // his profile learned, and how it was answered.
    let edge = ctl.wait_edge(
        "workload:default/jupyter-bob",
        &format!("external:pypi.test:{}", pypi.addr.port()),
        1,
    );
    assert_eq!(edge["in_baseline"], true, "{edge}");
    assert_eq!(
        edge["baseline_endpoints"],
        serde_json::json!(["GET /simple/"]),
        "{edge}"
    );
    assert_eq!(edge["statuses"], serde_json::json!({"200": 1}), "{edge}");
    let graph = ctl.json(&["graph"]);
    let node = graph["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == "workload:default/jupyter-bob")
        .cloned()
        .unwrap();
    assert_eq!(
        (&node["tenant"], &node["profile"], &node["in_baseline"]),
        (
            &"bob@example.com".into(),
            &"jupyter/scipy-notebook".into(),
            &true.into()
        ),
        "{node}"
    );
    assert_eq!(bob.get(&files_url).0, 403);
    let alert = ctl.wait_alert(
        "unknown_egress",
        "jupyter-bob",
        Some(&format!("files.test:{}", pypi.addr.port())),
    );
    assert_eq!(alert["tenant"], "bob@example.com", "{alert}");
    assert!(
        alert["explanation"]
            .as_str()
            .unwrap()
            .contains("(tenant bob@example.com)"),
        "{alert}"
    );

    // A notebook of a profile never seen while learning is a new deployment.
    let _miner = notebook("xmrig", "xmrig/xmrig", "mallory");
    let alert = ctl.wait_alert("new_deployment", "xmrig", None);
    assert_eq!(alert["tenant"], "mallory", "{alert}");
    let alerts = ctl.json(&["alerts"]);
    assert!(
        !alerts
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["kind"] == "new_deployment" && a["workload"] == "jupyter-bob"),
        "bob's notebook is not a new deployment: {alerts}"
    );
    // The operator finds the accounts to act on.
    let only_mallory = ctl.json(&["alerts", "--tenant", "mallory"]);
    let only_mallory = only_mallory.as_array().unwrap();
    assert!(!only_mallory.is_empty());
    assert!(
        only_mallory.iter().all(|a| a["tenant"] == "mallory"),
        "{only_mallory:?}"
    );
    let high = ctl.json(&["alerts", "--severity", "high"]);
    assert!(
        high.as_array()
            .unwrap()
            .iter()
            .all(|a| a["severity"] == "high" || a["severity"] == "critical"),
        "{high}"
    );
    let (ok, _, err) = ctl.vigilctl(&["alerts", "--severity", "urgent"]);
    assert!(!ok && err.contains("not a severity"), "{err}");
}

/// A sidecar whose tenant or profile could smuggle markup or control
/// characters into tables and notifications does not start.
#[test]
fn a_bad_tenant_or_profile_is_refused_at_start() {
    for (flag, value) in [
        ("--tenant", "a b"),
        ("--tenant", "<img>"),
        ("--profile", "/etc"),
    ] {
        let out = std::process::Command::new(common::bin("vigil-proxy"))
            .args(["--workload", "nb", flag, value])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{flag} {value:?} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&flag[2..]) && err.contains("invalid"), "{err}");
    }
}
