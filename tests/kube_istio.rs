//! Vigil beside Istio, in real network namespaces: Istio's nat rules
//! (ISTIO_OUTPUT: everything but uid 1337 to Envoy's port 15001, as
//! istio-iptables writes them) are installed first, as Istio's init
//! container runs first; then `vigil-proxy init` as the webhook renders it
//! beside Istio (`--skip-outbound-uids 1337`). A second REDIRECT proxy
//! running as uid 1337 stands in for Envoy. The chain must be app ->
//! vigil-proxy -> "Envoy" -> destination: Vigil first (it sees and judges
//! the app's request), Envoy after it (so its mTLS would be kept), and no
//! loop. Needs root, like tests/transparent.rs.

mod common;

use std::net::SocketAddr;
use std::path::Path;

use common::netns::{IPTABLES, Netns, Network, PROXY_UID, able, check, executable_copy, sidecar};
use common::{Proc, bin, serve_forever, spawn_proc, wait_for};

/// Env var that turns [`helper_http_server`] into a server: `name@ip:port`.
const SERVE_ENV: &str = "KUBE_ISTIO_TEST_SERVE";
/// Envoy's uid.
const ENVOY_UID: &str = "1337";

/// Not a test of Vigil: the body of the helper HTTP servers started inside
/// namespaces (this test binary re-run with [`SERVE_ENV`]).
#[test]
fn helper_http_server() {
    let Ok(spec) = std::env::var(SERVE_ENV) else {
        return;
    };
    let (name, addr) = spec.split_once('@').expect("name@ip:port");
    serve_forever(
        Box::leak(name.to_owned().into_boxed_str()),
        addr.parse().expect("ip:port"),
    );
}

fn helper(ns: &Netns, name: &str, addr: &str, log_dir: &Path) -> Proc {
    let mut cmd = ns.cmd(std::env::current_exe().unwrap());
    cmd.args(["helper_http_server", "--exact", "--nocapture"])
        .env(SERVE_ENV, format!("{name}@{addr}"));
    spawn_proc(&format!("{name}-{}", ns.name), cmd, log_dir)
}

/// Istio's outbound rules, as istio-iptables writes them (the parts that
/// matter here): Envoy's own uid and loopback leave, the rest goes to 15001.
fn istio_init(pod: &Netns) {
    for rule in [
        "-N ISTIO_REDIRECT",
        "-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001",
        "-N ISTIO_OUTPUT",
        "-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN",
        "-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN",
        "-A ISTIO_OUTPUT -j ISTIO_REDIRECT",
        "-A OUTPUT -p tcp -j ISTIO_OUTPUT",
    ] {
        let mut args = vec!["-w", "-t", "nat"];
        args.extend(rule.split(' '));
        pod.run(IPTABLES, &args);
    }
}

/// A second vigil-proxy as uid 1337, a transparent proxy on Envoy's
/// outbound port, standing in for Envoy.
fn envoy(pod: &Netns, grpc: SocketAddr, log_dir: &Path) -> Proc {
    let dir = log_dir.join("envoy");
    std::fs::create_dir_all(&dir).unwrap();
    let proxy = executable_copy(&bin("vigil-proxy"), &dir);
    let token = dir.join("bin").join("sidecar.token");
    std::fs::copy(common::sidecar_token_file(log_dir), &token).unwrap();
    let uid = ENVOY_UID.parse().unwrap();
    std::os::unix::fs::chown(&token, Some(uid), Some(uid)).unwrap();
    let mut cmd = pod.cmd("setpriv");
    cmd.args(["--reuid", ENVOY_UID, "--regid", ENVOY_UID, "--clear-groups"])
        .arg(&proxy)
        .args(["--workload", "envoy", "--namespace", "default"])
        .args(["--report-interval-ms", common::REPORT_MS])
        .args([
            "--outbound-addr",
            "127.0.0.1:15001",
            "--outbound-addr6",
            "off",
        ])
        .args([
            "--inbound-addr",
            "127.0.0.1:15006",
            "--inbound-addr6",
            "off",
        ])
        .args(["--admin-addr", "127.0.0.1:15000"])
        .args(["--dns-addr", "off", "--dns-addr6", "off"])
        .arg("--controller-token-file")
        .arg(&token)
        .arg("--controller")
        .arg(format!("http://{grpc}"));
    let proc = spawn_proc("envoy-stand-in", cmd, log_dir);
    wait_for("the Envoy stand-in's /ready", || {
        (pod.curl(&["http://127.0.0.1:15000/ready"]).0 == 200).then_some(())
    });
    proc
}

#[test]
fn app_then_vigil_then_envoy_then_destination() {
    if !able("app_then_vigil_then_envoy_then_destination") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let net = Network::new();
    let (pod, srv) = (&net.pod, &net.server);
    let _pypi = helper(srv, "pypi", "10.66.0.2:8000", tmp.path());
    let _pool = helper(srv, "pool", "10.66.0.2:8001", tmp.path());
    let _mine = helper(srv, "mine", "10.66.0.2:8002", tmp.path());
    for url in [
        "http://10.66.0.2:8000/",
        "http://10.66.0.2:8001/",
        "http://10.66.0.2:8002/",
    ] {
        wait_for(url, || (srv.curl(&[url]).0 == 200).then_some(()));
    }
    let ctl = net.controller(tmp.path());

    // Istio's init container first, then Vigil's, as the webhook renders
    // it beside Istio.
    istio_init(pod);
    check(pod.cmd(bin("vigil-proxy")).args([
        "init",
        "--iptables",
        IPTABLES,
        "--proxy-uid",
        PROXY_UID,
        "--skip-outbound-uids",
        ENVOY_UID,
        "--ipv6",
        "off",
    ]));
    // Vigil's jump comes first in OUTPUT, whatever ran first.
    let output: Vec<String> = pod
        .run(IPTABLES, &["-w", "-t", "nat", "-S", "OUTPUT"])
        .lines()
        .filter(|l| l.starts_with("-A OUTPUT"))
        .map(str::to_owned)
        .collect();
    let at = |rule: &str| output.iter().position(|l| l == rule).unwrap_or(usize::MAX);
    let istio = at("-A OUTPUT -p tcp -j ISTIO_OUTPUT");
    assert!(istio < usize::MAX, "{output:#?}");
    assert!(
        at("-A OUTPUT -p tcp -j VIGIL_OUTBOUND") < istio,
        "{output:#?}"
    );
    assert!(
        at("-A OUTPUT -p udp -m udp --dport 53 -j VIGIL_OUTBOUND") < istio,
        "{output:#?}"
    );
    let vigil = pod.run(IPTABLES, &["-w", "-t", "nat", "-S", "VIGIL_OUTBOUND"]);
    assert!(vigil.contains("--uid-owner 1337 -j RETURN"), "{vigil}");

    let _envoy = envoy(pod, ctl.grpc, tmp.path());
    let _sidecar = sidecar(pod, ctl.grpc, tmp.path());

    // The app's request passes Vigil, then Envoy, then reaches pypi.
    let (status, body) = pod.curl(&["http://10.66.0.2:8000/simple/x"]);
    assert_eq!((status, body.as_str()), (200, "pypi GET /simple/x"));
    ctl.wait_edge("workload:default/web", "external:10.66.0.2:8000", 1);
    ctl.wait_edge("workload:default/envoy", "external:10.66.0.2:8000", 1);
    let (status, _) = pod.curl(&["http://10.66.0.2:8001/pool"]);
    assert_eq!(status, 200);
    ctl.wait_edge("workload:default/envoy", "external:10.66.0.2:8001", 1);

    // In enforcement Vigil, first in line, refuses a destination the app
    // never reached in learning; Envoy never sees that connection.
    ctl.set_mode(&["enforcement"]);
    let (status, body) = wait_for("enforcement at the sidecar", || {
        let (status, body) = pod.curl(&["http://10.66.0.2:8002/mine"]);
        (status == 403).then_some((status, body))
    });
    assert!(
        body.contains("denied") || body.contains("policy"),
        "{status} {body}"
    );
    let (status, body) = pod.curl(&["http://10.66.0.2:8000/simple/y"]);
    assert_eq!(
        (status, body.as_str()),
        (200, "pypi GET /simple/y"),
        "learned: allowed"
    );
    ctl.wait_edge("workload:default/envoy", "external:10.66.0.2:8000", 2);
    let graph = ctl.json(&["graph"]);
    let reached = graph["edges"].as_array().unwrap().iter().any(|e| {
        e["source"] == "workload:default/envoy" && e["target"] == "external:10.66.0.2:8002"
    });
    assert!(
        !reached,
        "the refused request must not reach Envoy: {graph}"
    );
}
