//! End-to-end: the real controller, sidecars and vigilctl as processes on
//! loopback, real HTTP servers as workloads, curl as the client.

mod common;

use common::{Controller, Proxy, Upstream, curl, hosts_file};

/// Learning, then enforcement: known egress and known calls pass, unknown
/// egress gets 403 and an alert, a new workload is flagged and blocked.
#[test]
fn learning_then_enforcement_blocks_what_is_new() {
    let tmp = tempfile::tempdir().unwrap();
    let ctl = Controller::start(&tmp.path().join("data"), tmp.path());
    let pypi = Upstream::start("pypi");
    let pool = Upstream::start("pool");
    let web_app = Upstream::start("web");
    let api_app = Upstream::start("api");
    let hosts = hosts_file(tmp.path(), &["pypi.test", "pool.test", "api"]);
    let web = Proxy::start("web", ctl.grpc, web_app.addr, &hosts, tmp.path());
    let api = Proxy::start("api", ctl.grpc, api_app.addr, &hosts, tmp.path());
    let pypi_url = format!("http://pypi.test:{}/simple/requests/", pypi.addr.port());
    let pool_url = format!("http://pool.test:{}/", pool.addr.port());
    let api_url = format!("http://api:{}/v1/users/8412", api.inbound.port());

    // Learning: everything passes and is learned.
    let (status, body) = web.get(&pypi_url);
    assert_eq!((status, body.as_str()), (200, "pypi GET /simple/requests/"));
    let (status, body) = web.get(&api_url);
    assert_eq!(
        (status, body.as_str()),
        (200, "api GET /v1/users/8412"),
        "web -> api through api's sidecar"
    );
    let (status, _) = curl(&[&format!("http://{}/", web.inbound)]);
    assert_eq!(status, 200, "the internet -> web");
    // Another method (WebDAV, as Jupyter file browsers may use) is still
    // HTTP to the sniffer, so its endpoint is recorded, not an opaque stream.
    let (status, body) = curl(&[
        "-X",
        "PROPFIND",
        &format!("http://{}/files/8412/", web.inbound),
    ]);
    assert_eq!((status, body.as_str()), (200, "web PROPFIND /files/8412/"));
    let pypi_node = format!("external:pypi.test:{}", pypi.addr.port());
    let edge = ctl.wait_edge("workload:default/web", &pypi_node, 1);
    assert_eq!(edge["in_baseline"], true);
    let edge = ctl.wait_edge("workload:default/web", "workload:default/api", 1);
    assert!(
        edge["endpoints"]["GET /v1/users/{id}"].as_u64().is_some(),
        "path templated: {edge}"
    );
    let edge = ctl.wait_edge("internet", "workload:default/web", 2);
    assert!(
        edge["endpoints"]["PROPFIND /files/{id}/"]
            .as_u64()
            .is_some(),
        "another method is seen as HTTP: {edge}"
    );
    let series = format!(
        r#"vigil_proxy_observed_requests_total{{direction="outbound",protocol="http1",destination="pypi.test:{}"}}"#,
        pypi.addr.port()
    );
    common::wait_for("per-destination metrics on /metrics", || {
        let (status, metrics) = curl(&[&format!("http://{}/metrics", web.admin)]);
        (status == 200 && metrics.contains(&series)).then_some(())
    });

    // Enforcement.
    ctl.set_mode(&["enforcement"]);
    web.wait_enforce(true);
    assert_eq!(web.get(&pypi_url).0, 200, "known egress still passes");
    assert_eq!(
        web.get(&api_url).0,
        200,
        "known east-west call still passes"
    );
    let (status, body) = web.get(&pool_url);
    assert_eq!(status, 403, "unknown egress is blocked: {body}");
    let json: serde_json::Value = serde_json::from_str(&body).expect("the 403 body is JSON");
    assert!(json["error"].as_str().unwrap().contains("denied"), "{json}");
    let pool_authority = format!("pool.test:{}", pool.addr.port());
    assert_eq!(
        web.connect_status(&pool_authority),
        403,
        "a denied CONNECT gets 403"
    );
    let alert = ctl.wait_alert("unknown_egress", "web", Some(&pool_authority));
    assert_eq!(alert["action"], "blocked");
    assert_eq!(
        alert["denied"], alert["count"],
        "every request to the pool was denied: {alert}"
    );
    assert_eq!(alert["namespace"], "default");
    for field in ["count", "first_seen", "last_seen"] {
        assert!(!alert[field].is_null(), "alert has {field}: {alert}");
    }
    // An alert a human can act on: a stable id, a severity, one sentence.
    assert_eq!(alert["id"].as_str().map(str::len), Some(16), "{alert}");
    assert_eq!(alert["severity"], "medium", "{alert}");
    let sentence = alert["explanation"].as_str().unwrap_or_default();
    assert!(
        sentence.starts_with("default/web connected to pool.test:")
            && sentence.contains("outside its baseline")
            && sentence.ends_with("Vigil blocked it."),
        "{alert}"
    );
    let edge = ctl.wait_edge(
        "workload:default/web",
        &format!("external:{pool_authority}"),
        1,
    );
    assert_eq!(
        (edge["violation"].clone(), edge["in_baseline"].clone()),
        (true.into(), false.into())
    );

    // A miner appears: a workload never seen while learning.
    let miner_app = Upstream::start("miner");
    let miner = Proxy::start("miner", ctl.grpc, miner_app.addr, &hosts, tmp.path());
    let alert = ctl.wait_alert("new_deployment", "miner", None);
    assert_eq!(alert["action"], "blocked");
    miner.wait_enforce(true);
    assert_eq!(
        miner.connect_status(&pool_authority),
        403,
        "the miner cannot reach the pool"
    );
    assert_eq!(
        miner.get(&pypi_url).0,
        403,
        "nor anything else: nothing of it is in the baseline"
    );
    ctl.wait_alert("unknown_egress", "miner", Some(&pool_authority));
    assert_eq!(web.get(&pypi_url).0, 200, "normal traffic still passes");

    // A client that claims to be web (as a header through an ingress could)
    // but calls from an IP web does not call from is the internet to api's
    // sidecar: never seen there while learning, so refused.
    let api_direct = format!("http://{}/v1/users/1", api.inbound);
    let spoof = [
        "-H",
        "vigil-source: default/web",
        "--interface",
        "127.0.0.2",
    ];
    let (status, body) = curl(&[&spoof[..], &[api_direct.as_str()]].concat());
    assert_eq!(status, 403, "a spoofed identity is not believed: {body}");
    let json: serde_json::Value = serde_json::from_str(&body).expect("the 403 body is JSON");
    assert_eq!(json["source"], "internet", "{json}");
    // Never exposed to the internet while learning: the open dashboard.
    let exposure = ctl.wait_alert("new_exposure", "api", Some("internet"));
    assert_eq!(exposure["severity"], "high", "{exposure}");
    let alert = ctl.wait_alert("spoofed_source", "api", Some("default/web"));
    assert_eq!(alert["action"], "blocked", "the impostor is named: {alert}");
    // A claim of a workload that never called api (the miner): api's policy
    // lists only its own callers' IPs, so its sidecar cannot check the claim
    // and refuses it as the miner (not a caller); the controller, which knows
    // the miner's IPs, checks the IP it reports and names the impostor.
    let claim_miner = [
        "-H",
        "vigil-source: default/miner",
        "--interface",
        "127.0.0.2",
    ];
    let (status, body) = curl(&[&claim_miner[..], &[api_direct.as_str()]].concat());
    assert_eq!(status, 403, "an unchecked claim is never let in: {body}");
    let alert = ctl.wait_alert("spoofed_source", "api", Some("default/miner"));
    assert_eq!(alert["action"], "blocked", "{alert}");

    // The human views show the same story.
    let (ok, table, _) = ctl.vigilctl(&["alerts"]);
    assert!(
        ok && table.contains("new_deployment") && table.contains("unknown_egress"),
        "{table}"
    );
    let (ok, status, _) = ctl.vigilctl(&["status"]);
    assert!(ok && status.contains("sidecars connected:  3"), "{status}");
    // The controller's own metrics: open like /healthz, counts only.
    let (code, metrics) = curl(&[&format!("http://{}/metrics", ctl.http)]);
    assert_eq!(code, 200);
    for series in [
        "vigil_controller_sidecars_connected 3",
        "vigil_controller_violations_total{kind=\"unknown_egress\"}",
        "vigil_controller_violations_total{kind=\"new_deployment\"} 1",
        "vigil_controller_reports_total{result=\"applied\"}",
    ] {
        assert!(metrics.contains(series), "{series} in {metrics}");
    }
    assert!(!metrics.contains("pool.test"), "no destinations in labels");
    // Graph reads copy the edges' JSON, encoded as snapshots came out.
    let warmed = metrics
        .lines()
        .find_map(|l| l.strip_prefix("vigil_controller_snapshot_edges_warmed_total "))
        .and_then(|v| v.parse::<u64>().ok());
    assert!(warmed.is_some_and(|n| n > 0), "edges warmed: {warmed:?}");
}

/// Alert-only: violations are flagged, traffic passes.
#[test]
fn alert_only_flags_without_blocking() {
    let tmp = tempfile::tempdir().unwrap();
    let ctl = Controller::start(&tmp.path().join("data"), tmp.path());
    let pypi = Upstream::start("pypi");
    let pool = Upstream::start("pool");
    let app = Upstream::start("web");
    let hosts = hosts_file(tmp.path(), &["pypi.test", "pool.test"]);
    let web = Proxy::start("web", ctl.grpc, app.addr, &hosts, tmp.path());
    assert_eq!(
        web.get(&format!("http://pypi.test:{}/", pypi.addr.port()))
            .0,
        200
    );
    ctl.wait_edge(
        "workload:default/web",
        &format!("external:pypi.test:{}", pypi.addr.port()),
        1,
    );
    ctl.set_mode(&["enforcement", "--alert-only", "--namespace", "default"]);
    let modes = ctl.json(&["mode"]);
    assert_eq!(modes["namespaces"]["default"]["mode"], "enforcement");
    assert_eq!(modes["namespaces"]["default"]["alert_only"], true);
    let pool_authority = format!("pool.test:{}", pool.addr.port());
    assert_eq!(
        web.get(&format!("http://{pool_authority}/x")).0,
        200,
        "alert-only lets it pass"
    );
    let alert = ctl.wait_alert("unknown_egress", "web", Some(&pool_authority));
    assert_eq!(alert["action"], "flagged");
    assert_eq!(alert["denied"], 0, "it got through: {alert}");
}

/// Every valid method reaches an alert: RFC 9110 methods the sidecar denies
/// (`M-SEARCH`, `X_GET`) used to be refused by the controller, so no alert
/// was raised and alert-only mode let them pass silently.
#[test]
fn unusual_methods_reach_an_alert_in_every_mode() {
    let tmp = tempfile::tempdir().unwrap();
    let ctl = Controller::start(&tmp.path().join("data"), tmp.path());
    let pool = Upstream::start("pool");
    let hosts = hosts_file(tmp.path(), &["pool.test", "scan.test"]);
    let web = Proxy::start("web", ctl.grpc, common::NOWHERE, &hosts, tmp.path());
    ctl.set_mode(&["enforcement", "--alert-only"]);
    web.wait_enforce(false);
    let pool_authority = format!("pool.test:{}", pool.addr.port());
    let (status, body) = web.get_with(&["-X", "M-SEARCH"], &format!("http://{pool_authority}/"));
    assert_eq!(
        (status, body.as_str()),
        (200, "pool M-SEARCH /"),
        "alert-only passes it"
    );
    let alert = ctl.wait_alert("unknown_egress", "web", Some(&pool_authority));
    assert_eq!(
        (alert["action"].as_str(), alert["denied"].as_u64()),
        (Some("flagged"), Some(0))
    );
    let edge = ctl.wait_edge(
        "workload:default/web",
        &format!("external:{pool_authority}"),
        1,
    );
    assert!(edge["endpoints"]["M-SEARCH /"].as_u64().is_some(), "{edge}");

    ctl.set_mode(&["enforcement"]);
    web.wait_enforce(true);
    let scan_authority = format!("scan.test:{}", pool.addr.port());
    let (status, body) = web.get_with(&["-X", "X_GET"], &format!("http://{scan_authority}/"));
    assert_eq!(status, 403, "{body}");
    let alert = ctl.wait_alert("unknown_egress", "web", Some(&scan_authority));
    assert_eq!(
        (alert["action"].as_str(), alert["denied"].as_u64()),
        (Some("blocked"), Some(1))
    );
}

/// A controller killed mid-run: the sidecar keeps forwarding under the last
/// policy; after a restart the mode, baseline and alerts are all there.
#[test]
fn controller_restart_keeps_state_and_proxies_keep_enforcing() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut ctl = Controller::start_restartable(&data, tmp.path());
    let (grpc, http) = (ctl.grpc, ctl.http);
    let pypi = Upstream::start("pypi");
    let pool = Upstream::start("pool");
    let app = Upstream::start("web");
    let hosts = hosts_file(tmp.path(), &["pypi.test", "pool.test"]);
    let web = Proxy::start("web", grpc, app.addr, &hosts, tmp.path());
    let pypi_url = format!("http://pypi.test:{}/", pypi.addr.port());
    let pool_authority = format!("pool.test:{}", pool.addr.port());
    let pool_url = format!("http://{pool_authority}/");
    assert_eq!(web.get(&pypi_url).0, 200);
    let pypi_node = format!("external:pypi.test:{}", pypi.addr.port());
    ctl.wait_edge("workload:default/web", &pypi_node, 1);
    ctl.set_mode(&["enforcement"]);
    web.wait_enforce(true);
    assert_eq!(web.get(&pool_url).0, 403);
    ctl.wait_alert("unknown_egress", "web", Some(&pool_authority));
    let token = ctl.token();

    ctl.proc.kill();
    assert_eq!(
        curl(&[&format!("http://{http}/healthz")]).0,
        0,
        "the controller is down"
    );
    assert_eq!(
        web.get(&pypi_url).0,
        200,
        "forwarding goes on without the controller"
    );
    assert_eq!(web.get(&pool_url).0, 403, "under the last policy");

    let ctl = Controller::start_on(&data, tmp.path(), grpc, http);
    assert_eq!(ctl.token(), token, "the admin token is kept");
    let modes = ctl.json(&["mode"]);
    assert_eq!(modes["default"]["mode"], "enforcement", "{modes}");
    let edge = ctl.wait_edge("workload:default/web", &pypi_node, 1);
    assert_eq!(edge["in_baseline"], true);
    let alert = ctl.wait_alert("unknown_egress", "web", Some(&pool_authority));
    assert!(alert["count"].as_u64().unwrap() >= 1);
    // The sidecar reconnects and reports what it saw while the controller was down.
    wait_sidecars(&ctl, 1);
    common::wait_for("requests made during the outage to be reported", || {
        let graph = ctl.json(&["graph"]);
        let edge = graph["edges"]
            .as_array()?
            .iter()
            .find(|e| e["target"] == pypi_node)?
            .clone();
        (edge["requests"].as_u64()? >= 2).then_some(())
    });
    assert_eq!(web.get(&pool_url).0, 403);
}

fn wait_sidecars(ctl: &Controller, n: u64) {
    common::wait_for("sidecars to reconnect", || {
        (ctl.json(&["status"])["sidecars_connected"].as_u64()? == n).then_some(())
    });
}

/// The API is closed without the token; vigilctl says so and exits non-zero.
#[test]
fn the_api_refuses_a_missing_or_wrong_token() {
    let tmp = tempfile::tempdir().unwrap();
    let ctl = Controller::start(&tmp.path().join("data"), tmp.path());
    let url = format!("http://{}/api/v1/status", ctl.http);
    let (status, body) = curl(&[&url]);
    assert_eq!(status, 401, "{body}");
    assert_eq!(
        curl(&["-H", "Authorization: Bearer not-the-token", &url]).0,
        401
    );
    for path in ["/api/v1/graph", "/api/v1/alerts", "/api/v1/mode"] {
        assert_eq!(
            curl(&[&format!("http://{}{path}", ctl.http)]).0,
            401,
            "{path}"
        );
    }
    let put = curl(&[
        "-X",
        "PUT",
        "-d",
        r#"{"mode":"enforcement"}"#,
        &format!("http://{}/api/v1/mode", ctl.http),
    ]);
    assert_eq!(put.0, 401, "a mode change without the token is refused");
    let (status, body) = curl(&[
        "-H",
        &format!("Authorization: Bearer {}", ctl.token()),
        &url,
    ]);
    assert_eq!(status, 200, "{body}");
    let token_path = ctl.data_dir.join("admin.token");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&token_path).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    let wrong = tmp.path().join("wrong.token");
    std::fs::write(&wrong, "nope\n").unwrap();
    let out = std::process::Command::new(common::bin("vigilctl"))
        .args([
            "--controller",
            &format!("http://{}", ctl.http),
            "--token-file",
        ])
        .arg(&wrong)
        .arg("status")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refused the token"), "{err}");
    // A bad request is a clear error, and changes nothing.
    let (status, body) = curl(&[
        "-X",
        "PUT",
        "-H",
        &format!("Authorization: Bearer {}", ctl.token()),
        "-d",
        r#"{"mode":"chaos"}"#,
        "-H",
        "content-type: application/json",
        &format!("http://{}/api/v1/mode", ctl.http),
    ]);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("unknown mode"), "{body}");
    assert_eq!(ctl.json(&["mode"])["default"]["mode"], "learning");
}

/// The gRPC port wants the sidecar token: a sidecar without it (or with a
/// wrong one) is refused with a clear log line and never registered.
#[test]
fn a_sidecar_without_the_token_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let ctl = Controller::start(&tmp.path().join("data"), tmp.path());
    let mode = std::fs::metadata(common::sidecar_token_file(tmp.path()))
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
        .unwrap();
    assert_eq!(mode, 0o600, "the sidecar token is a secret");
    let wrong = tmp.path().join("wrong.token");
    std::fs::write(&wrong, "not-the-token\n").unwrap();
    let start = |name: &str, token: Option<&std::path::Path>| {
        let mut cmd = std::process::Command::new(common::bin("vigil-proxy"));
        cmd.args(["--workload", name, "--controller"])
            .arg(format!("http://{}", ctl.grpc))
            .args([
                "--outbound-addr",
                "127.0.0.1:0",
                "--inbound-addr",
                "127.0.0.1:0",
            ])
            .args(["--admin-addr", "127.0.0.1:0", "--outbound-addr6", "off"])
            .args(["--inbound-addr6", "off", "--dns-addr", "off"]);
        if let Some(token) = token {
            cmd.arg("--controller-token-file").arg(token);
        }
        common::spawn_proc(&format!("vigil-proxy-{name}"), cmd, tmp.path())
    };
    let anonymous = start("anonymous", None);
    let impostor = start("impostor", Some(&wrong));
    for (proc, why) in [
        (&anonymous, "missing the sidecar token"),
        (&impostor, "the sidecar token is wrong"),
    ] {
        common::wait_for(&format!("{why} in the proxy's log"), || {
            proc.log().contains(why).then_some(())
        });
    }
    let (_, metrics) = curl(&[&format!("http://{}/metrics", ctl.http)]);
    let refused: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("vigil_controller_grpc_unauthenticated_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(refused >= 2, "refused calls are counted: {metrics}");
    let graph = ctl.json(&["graph"]);
    assert!(
        graph["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["name"] != "anonymous" && n["name"] != "impostor"),
        "neither registered: {graph}"
    );
}

/// vigilctl against no controller: a clear error, non-zero exit.
#[test]
fn vigilctl_reports_an_unreachable_controller() {
    let tmp = tempfile::tempdir().unwrap();
    let token = tmp.path().join("t");
    std::fs::write(&token, "x").unwrap();
    let out = std::process::Command::new(common::bin("vigilctl"))
        .args([
            "--controller",
            &format!("http://{}", common::NOWHERE),
            "--token-file",
        ])
        .arg(&token)
        .arg("graph")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot reach the controller"), "{err}");
}

/// A miner speaking Stratum through a CONNECT tunnel on an innocent port is
/// recognised and flagged, even in learning mode, and never learned.
#[test]
fn stratum_is_detected_and_flagged_while_learning() {
    use std::io::{BufRead, BufReader, Read, Write};
    let tmp = tempfile::tempdir().unwrap();
    let ctl = Controller::start(&tmp.path().join("data"), tmp.path());
    // A pretend pool on loopback answering mining.subscribe.
    let pool = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let pool_port = pool.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in pool.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).is_ok() && line.contains("mining.subscribe") {
                let mut stream = stream;
                let _ = stream.write_all(b"{\"id\":1,\"result\":[[\"mining.notify\",\"ae68\"],\"0800\",4],\"error\":null}\n");
            }
        }
    });
    let app = Upstream::start("notebook");
    let hosts = hosts_file(tmp.path(), &["cdn.example.test"]);
    let nb = Proxy::start("notebook", ctl.grpc, app.addr, &hosts, tmp.path());

    let mut tunnel = std::net::TcpStream::connect(nb.outbound).unwrap();
    tunnel
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    write!(tunnel, "CONNECT cdn.example.test:{pool_port} HTTP/1.1\r\nHost: cdn.example.test:{pool_port}\r\n\r\n").unwrap();
    let mut head = [0u8; 512];
    let n = tunnel.read(&mut head).unwrap();
    assert!(
        String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 200"),
        "tunnel opened"
    );
    tunnel
        .write_all(b"{\"id\":1,\"method\":\"mining.subscribe\",\"params\":[\"cgminer/4.10.0\"]}\n")
        .unwrap();
    let mut answer = String::new();
    BufReader::new(&tunnel).read_line(&mut answer).unwrap();
    assert!(
        answer.contains("mining.notify"),
        "learning mode lets it pass: {answer}"
    );
    drop(tunnel);

    let destination = format!("cdn.example.test:{pool_port}");
    let alert = ctl.wait_alert("mining_protocol", "notebook", Some(&destination));
    assert_eq!(alert["action"], "flagged");
    let edge = ctl.wait_edge(
        "workload:default/notebook",
        &format!("external:{destination}"),
        1,
    );
    assert_eq!(
        edge["in_baseline"], false,
        "a mining edge is never learned: {edge}"
    );
    assert_eq!(edge["violation"], true);
    assert!(common::has_protocol(&edge, "stratum"), "{edge}");
}

/// A new sidecar judges its very first request by the controller's policy:
/// it waits (bounded by `--policy-wait-ms`) for the first one, here until a
/// controller in enforcement comes up. With `--default-policy deny` it fails
/// closed when no controller answers in time; by default it fails open.
#[test]
fn the_first_request_is_judged_by_policy() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut ctl = Controller::start_restartable(&data, tmp.path());
    let (grpc, http) = (ctl.grpc, ctl.http);
    ctl.set_mode(&["enforcement"]);
    ctl.proc.kill();
    let pool = Upstream::start("pool");
    let app = Upstream::start("miner");
    let hosts = hosts_file(tmp.path(), &["pool.test"]);
    let url = format!("http://pool.test:{}/", pool.addr.port());

    let miner = Proxy::start_with(
        "miner",
        grpc,
        app.addr,
        &hosts,
        tmp.path(),
        &["--policy-wait-ms", "15000"],
    );
    let outbound = miner.outbound;
    let first = std::thread::spawn(move || {
        curl(&[
            "-x",
            &format!("http://{outbound}"),
            "--max-time",
            "20",
            &url,
        ])
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(!first.is_finished(), "the first request waits for a policy");
    let _ctl = Controller::start_on(&data, tmp.path(), grpc, http);
    let (status, body) = first.join().unwrap();
    assert_eq!(
        status, 403,
        "judged by the controller's policy once it came: {body}"
    );

    let url = format!("http://pool.test:{}/", pool.addr.port());
    let nowhere = common::NOWHERE;
    let closed = Proxy::start_with(
        "lonely",
        nowhere,
        app.addr,
        &hosts,
        tmp.path(),
        &["--default-policy", "deny", "--policy-wait-ms", "200"],
    );
    let (status, body) = closed.get(&url);
    assert_eq!(status, 403, "fail closed without a controller: {body}");
    assert!(body.contains("no policy from the controller"), "{body}");
    let open = Proxy::start_with(
        "open",
        nowhere,
        app.addr,
        &hosts,
        tmp.path(),
        &["--policy-wait-ms", "200"],
    );
    assert_eq!(open.get(&url).0, 200, "the default is to fail open");
}

/// With `--policy-cache`, a sidecar restarted while the controller is down
/// enforces the last policy it had, at once.
#[test]
fn a_restarted_sidecar_enforces_its_cached_policy_without_a_controller() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ctl = Controller::start(&tmp.path().join("data"), tmp.path());
    let pypi = Upstream::start("pypi");
    let pool = Upstream::start("pool");
    let app = Upstream::start("web");
    let hosts = hosts_file(tmp.path(), &["pypi.test", "pool.test"]);
    let cache = tmp.path().join("policy.json");
    let cache_arg = cache.to_str().unwrap();
    let pypi_url = format!("http://pypi.test:{}/", pypi.addr.port());
    let pool_url = format!("http://pool.test:{}/", pool.addr.port());
    let mut web = Proxy::start_with(
        "web",
        ctl.grpc,
        app.addr,
        &hosts,
        tmp.path(),
        &["--policy-cache", cache_arg],
    );
    assert_eq!(web.get(&pypi_url).0, 200);
    ctl.wait_edge(
        "workload:default/web",
        &format!("external:pypi.test:{}", pypi.addr.port()),
        1,
    );
    ctl.set_mode(&["enforcement"]);
    web.wait_enforce(true);
    common::wait_for("the policy cache", || {
        let text = std::fs::read_to_string(&cache).ok()?;
        text.contains("\"enforce\":true").then_some(())
    });

    ctl.proc.kill();
    web.proc.kill();
    let nowhere = ctl.grpc;
    let web = Proxy::start_with(
        "web",
        nowhere,
        app.addr,
        &hosts,
        tmp.path(),
        &["--policy-cache", cache_arg, "--policy-wait-ms", "60000"],
    );
    let (status, body) = web.get(&pool_url);
    assert_eq!(
        status, 403,
        "the cached policy blocks at once, no wait: {body}"
    );
    assert_eq!(web.get(&pypi_url).0, 200, "and allows what it allowed");
}

/// A corrupt store is a clear error at start, and the file is kept.
#[test]
fn a_corrupt_store_stops_the_controller_with_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let garbage = b"not a database ".repeat(500);
    std::fs::write(data.join("vigil.redb"), &garbage).unwrap();
    let out = std::process::Command::new(common::bin("vigil-controller"))
        .args([
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot open the Vigil store") && err.contains("move it aside"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(data.join("vigil.redb")).unwrap(),
        garbage,
        "nothing is lost"
    );
}

/// SIGTERM stops the controller in a few seconds even while sidecars hold
/// their policy and report streams open (Kubernetes would otherwise kill it
/// hard), and what it stored is there after the restart.
#[test]
fn sigterm_stops_the_controller_while_sidecars_are_connected() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut ctl = Controller::start_restartable(&data, tmp.path());
    let app = Upstream::start("web");
    let pypi = Upstream::start("pypi");
    let hosts = hosts_file(tmp.path(), &["pypi.test"]);
    let web = Proxy::start("web", ctl.grpc, app.addr, &hosts, tmp.path());
    let _api = Proxy::start("api", ctl.grpc, app.addr, &hosts, tmp.path());
    wait_sidecars(&ctl, 2);
    let url = format!("http://pypi.test:{}/simple/", pypi.addr.port());
    assert_eq!(web.get(&url).0, 200);
    ctl.wait_edge(
        "workload:default/web",
        &format!("external:pypi.test:{}", pypi.addr.port()),
        1,
    );
    ctl.proc.signal_term();
    let status = ctl.proc.wait_exit();
    assert!(
        status.success(),
        "a clean exit: {status:?}\n{}",
        ctl.proc.log()
    );
    assert!(ctl.proc.log().contains("vigil-controller stopped"));
    let ctl = Controller::start_on(&data, tmp.path(), ctl.grpc, ctl.http);
    let graph = ctl.json(&["graph"]);
    assert!(
        graph["edges"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["source"] == "workload:default/web"),
        "{graph}"
    );
}

/// A data directory written by the previous release (0.1.0, kept in
/// tests/fixtures) opens with its mode, baseline and alerts; alerts it
/// stored without ids, severities and explanations get them.
#[test]
fn a_data_directory_of_the_previous_release_keeps_its_state() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/datadir-0.1.0/vigil.redb");
    std::fs::copy(fixture, data.join("vigil.redb")).unwrap();
    let ctl = Controller::start(&data, tmp.path());
    let status = ctl.json(&["status"]);
    let counts = &status;
    assert_eq!(
        (
            counts["baseline_workloads"].as_u64(),
            counts["baseline_edges"].as_u64()
        ),
        (Some(2), Some(3)),
        "{status}"
    );
    assert_eq!(counts["workloads"], 3, "{status}");
    let (ok, modes, _) = ctl.vigilctl(&["mode"]);
    assert!(
        ok && modes.contains("notebooks") && modes.contains("enforcement"),
        "{modes}"
    );
    let alerts = ctl.json(&["alerts"]);
    let alerts = alerts.as_array().unwrap();
    assert_eq!(alerts.len(), 3, "{alerts:?}");
    for alert in alerts {
        assert_eq!(alert["id"].as_str().map(str::len), Some(16), "{alert}");
        assert!(alert["severity"].is_string(), "{alert}");
        assert!(
            alert["explanation"]
                .as_str()
                .is_some_and(|e| e.ends_with('.')),
            "{alert}"
        );
    }
    let miner = alerts
        .iter()
        .find(|a| a["kind"] == "new_deployment")
        .expect("the miner's deployment alert");
    assert_eq!(miner["workload"], "xmrig-miner");
}

/// Trying enforcement first: after the reviewed baseline drops an edge,
/// `vigilctl baseline simulate` replays the last hour and names what
/// enforcement would block; `vigilctl status` says how long learning has
/// been stable.
#[test]
fn a_dry_run_names_what_enforcement_would_block() {
    let tmp = tempfile::tempdir().unwrap();
    let ctl = Controller::start(&tmp.path().join("data"), tmp.path());
    let up = Upstream::start("up");
    let app = Upstream::start("nb");
    let hosts = hosts_file(tmp.path(), &["pypi.test", "files.test"]);
    let nb = Proxy::start("nb", ctl.grpc, app.addr, &hosts, tmp.path());
    let port = up.addr.port();
    assert_eq!(nb.get(&format!("http://pypi.test:{port}/simple/")).0, 200);
    assert_eq!(nb.get(&format!("http://files.test:{port}/blob")).0, 200);
    ctl.wait_edge(
        "workload:default/nb",
        &format!("external:files.test:{port}"),
        1,
    );
    let (ok, status, _) = ctl.vigilctl(&["status"]);
    assert!(ok && status.contains("learning default"), "{status}");
    assert!(status.contains("growing:"), "{status}");

    // Learning learned everything: a dry run now blocks nothing.
    let (ok, dry, err) = ctl.vigilctl(&["baseline", "simulate", "--since", "1h"]);
    assert!(ok, "{err}");
    assert!(dry.contains("would have blocked nothing"), "{dry}");

    // The reviewed baseline leaves files.test out.
    let (ok, yaml, err) = ctl.vigilctl(&["baseline", "export"]);
    assert!(ok, "{err}");
    let reviewed = without_edges_to(&yaml, "files.test");
    assert!(
        reviewed.contains("pypi.test") && !reviewed.contains("files.test"),
        "{reviewed}"
    );
    let file = tmp.path().join("reviewed.yaml");
    std::fs::write(&file, &reviewed).unwrap();
    let (ok, _, err) = ctl.vigilctl(&["baseline", "import", file.to_str().unwrap()]);
    assert!(ok, "{err}\n{reviewed}");
    let dry = ctl.json(&["baseline", "simulate", "--namespace", "default"]);
    let results = dry["results"].as_array().unwrap();
    assert_eq!(results.len(), 1, "{dry}");
    assert_eq!(results[0]["destination"], format!("files.test:{port}"));
    assert_eq!(results[0]["action"], "blocked");
    assert_eq!(results[0]["kind"], "unknown_egress");
    let (ok, dry, _) = ctl.vigilctl(&["baseline", "simulate"]);
    assert!(
        ok && dry.contains("would block") && dry.contains("files.test"),
        "{dry}"
    );
    let (ok, _, err) = ctl.vigilctl(&["baseline", "simulate", "--since", "forever"]);
    assert!(!ok && err.contains("not a time window"), "{err}");
}

/// `yaml` (a baseline document) without the edges (`- from: ...` items
/// with their `to` and `endpoints`) that mention `needle`.
fn without_edges_to(yaml: &str, needle: &str) -> String {
    let indent = |l: &str| l.len() - l.trim_start().len();
    let mut out = String::new();
    let mut block: Vec<&str> = Vec::new();
    let mut block_indent = None;
    let flush = |block: &mut Vec<&str>, out: &mut String| {
        if !block.iter().any(|l| l.contains(needle)) {
            for l in block.iter() {
                out.push_str(l);
                out.push('\n');
            }
        }
        block.clear();
    };
    for line in yaml.lines() {
        let starts_item = line.trim_start().starts_with("- from:");
        match block_indent {
            Some(i) if !starts_item && (indent(line) > i) => block.push(line),
            _ => {
                flush(&mut block, &mut out);
                if starts_item {
                    block_indent = Some(indent(line));
                    block.push(line);
                } else {
                    block_indent = None;
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
    }
    flush(&mut block, &mut out);
    out
}

/// A sidecar token narrowed to a namespace (`vigilctl sidecar-token`, what
/// the chart puts in each notebook namespace's Secret, which in Kubeflow the
/// notebook's own service account may read) registers and reports for that
/// namespace's sidecars only: with it, a notebook in `lab` cannot speak for
/// another tenant's workload (report mining in its name to get it
/// quarantined, or teach its baseline).
#[test]
fn a_namespace_token_speaks_for_its_namespace_only() {
    let tmp = tempfile::tempdir().unwrap();
    let ctl = Controller::start(&tmp.path().join("data"), tmp.path());
    let sidecar_file = common::sidecar_token_file(tmp.path());
    let (ok, token, err) = ctl.vigilctl(&[
        "sidecar-token",
        "--namespace",
        "lab",
        "--sidecar-token-file",
        sidecar_file.to_str().unwrap(),
    ]);
    assert!(ok && token.starts_with("ns.lab."), "{token} {err}");
    let lab_token = tmp.path().join("lab.token");
    std::fs::write(&lab_token, &token).unwrap();
    let sidecar = |namespace: &str| {
        let mut cmd = std::process::Command::new(common::bin("vigil-proxy"));
        cmd.args(["--workload", "nb", "--namespace", namespace])
            .arg("--controller")
            .arg(format!("http://{}", ctl.grpc))
            .arg("--controller-token-file")
            .arg(&lab_token)
            .args(["--report-interval-ms", "100", "--app-addr", "127.0.0.1:1"])
            .args([
                "--outbound-addr",
                "127.0.0.1:0",
                "--inbound-addr",
                "127.0.0.1:0",
            ])
            .args([
                "--admin-addr",
                "127.0.0.1:0",
                "--dns-addr",
                "off",
                "--udp-addr",
                "off",
            ])
            .args(["--inbound-addr6", "off", "--outbound-addr6", "off"]);
        common::spawn_proc(&format!("vigil-proxy-{namespace}"), cmd, tmp.path())
    };
    let _lab = sidecar("lab");
    common::wait_for("lab/nb to register", || {
        (ctl.json(&["status"])["sidecars_connected"].as_u64()? == 1).then_some(())
    });
    let prod = sidecar("prod");
    common::wait_for("prod/nb to be refused", || {
        prod.log()
            .contains("this sidecar token is namespace lab's, not prod's")
            .then_some(())
    });
    let status = ctl.json(&["status"]);
    assert_eq!(status["sidecars_connected"], 1, "{status}");
    let graph = ctl.json(&["graph"]);
    let nodes = graph["nodes"].to_string();
    assert!(
        nodes.contains("lab/nb") && !nodes.contains("prod/nb"),
        "{nodes}"
    );
}
