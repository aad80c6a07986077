//! End-to-end: response and the baseline as code, with the real controller,
//! sidecars and vigilctl as processes on loopback and curl as the client.
//! Export, diff and import of the baseline (into a second controller that
//! then enforces the same), a bad document named by its line and changing
//! nothing, accepting an alert, quarantine across sidecar and controller
//! restarts, auto-quarantine of a Stratum client, the audit log, tenants in
//! alerts and vigilctl in a closed pipe.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    Controller, DEADLINE, Proxy, Upstream, bin, curl, hosts_file, sidecar_token_file, spawn_proc,
    spawn_server, wait_for,
};

/// Runs vigilctl against `ctl`, with `stdin` as its input; returns (exit
/// status, stdout, stderr).
fn vigilctl(ctl: &Controller, args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    let mut child = Command::new(bin("vigilctl"))
        .arg("--controller")
        .arg(format!("http://{}", ctl.http))
        .arg("--token-file")
        .arg(ctl.data_dir.join("admin.token"))
        .args(args)
        .env_remove("VIGIL_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running vigilctl");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// vigilctl that must succeed; returns its stdout.
fn ok(ctl: &Controller, args: &[&str]) -> String {
    let (code, out, err) = vigilctl(ctl, args, None);
    assert_eq!(code, 0, "vigilctl {args:?} failed: {err}{out}");
    out
}

/// Starts a controller with more flags (e.g. `--auto-quarantine`).
fn controller_with(data_dir: &Path, log_dir: &Path, extra: &[&str]) -> Controller {
    let mut cmd = Command::new(bin("vigil-controller"));
    cmd.args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"]);
    cmd.arg("--data-dir").arg(data_dir);
    cmd.arg("--sidecar-token-file")
        .arg(sidecar_token_file(log_dir));
    cmd.args(extra);
    let proc = spawn_proc("vigil-controller", cmd, log_dir);
    let (grpc, http) = wait_for("the controller's start line", || {
        Some((
            proc.logged_addr("grpc_addr")?,
            proc.logged_addr("http_addr")?,
        ))
    });
    wait_for("the controller's /healthz", || {
        (curl(&[&format!("http://{http}/healthz")]).0 == 200).then_some(())
    });
    Controller {
        proc,
        grpc,
        http,
        data_dir: data_dir.to_owned(),
    }
}

/// The audit log, as JSON entries.
fn audit(ctl: &Controller) -> Vec<serde_json::Value> {
    ctl.json(&["audit"]).as_array().unwrap().clone()
}

/// Whether the audit log has an entry with these fields.
fn audited(entries: &[serde_json::Value], fields: &[(&str, &str)]) -> bool {
    entries.iter().any(|e| {
        fields
            .iter()
            .all(|(k, v)| e[*k].as_str().is_some_and(|s| s.contains(v)))
            && !e["at"].as_str().unwrap_or("").is_empty()
    })
}

/// Learning, export, diff against itself (0) and a changed copy (1), a bad
/// line named and nothing changed, a merge, and an import into a fresh
/// controller that then enforces the same baseline.
#[test]
fn an_exported_baseline_diffs_imports_and_enforces_the_same_elsewhere() {
    let tmp = tempfile::tempdir().unwrap();
    let ctl = Controller::start(&tmp.path().join("data"), tmp.path());
    let pypi = Upstream::start("pypi");
    let pool = Upstream::start("pool");
    let app = Upstream::start("web");
    let hosts = hosts_file(tmp.path(), &["pypi.test", "pool.test"]);
    let web = Proxy::start("web", ctl.grpc, app.addr, &hosts, tmp.path());
    let pypi_url = format!("http://pypi.test:{}/simple/requests/", pypi.addr.port());
    let pool_url = format!("http://pool.test:{}/", pool.addr.port());
    assert_eq!(web.get(&pypi_url).0, 200);
    let pypi_node = format!("external:pypi.test:{}", pypi.addr.port());
    ctl.wait_edge("workload:default/web", &pypi_node, 1);

    // Export: sorted, reviewable YAML.
    let yaml = ok(&ctl, &["baseline", "export"]);
    assert!(yaml.starts_with("version: 1\n"), "{yaml}");
    let edge = format!("- from: workload:default/web\n      to: {pypi_node}\n");
    assert!(
        yaml.contains("  default:\n    workloads:\n    - web\n"),
        "{yaml}"
    );
    assert!(yaml.contains(&edge), "{yaml}");
    assert_eq!(ok(&ctl, &["baseline", "export"]), yaml, "stable bytes");
    let file = tmp.path().join("baseline.yaml");
    std::fs::write(&file, &yaml).unwrap();
    let file = file.to_str().unwrap();

    // Diff against itself: same, exit 0, nothing printed.
    assert_eq!(
        vigilctl(&ctl, &["baseline", "diff", file], None),
        (0, String::new(), String::new())
    );
    // Changed: exit 1, the change printed (from standard input too).
    let extra = yaml.replacen(
        "    - from: workload:default/web\n",
        "    - from: workload:default/web\n      to: external:extra.test:8443\n    - from: workload:default/web\n",
        1,
    );
    let changed = tmp.path().join("changed.yaml");
    std::fs::write(&changed, &extra).unwrap();
    let changed = changed.to_str().unwrap();
    let (code, out, err) = vigilctl(&ctl, &["baseline", "diff", changed], None);
    assert_eq!(
        (code, out.as_str()),
        (
            1,
            "+ edge workload:default/web -> external:extra.test:8443\n"
        ),
        "{err}"
    );
    let (code, out, _) = vigilctl(&ctl, &["baseline", "diff", "-"], Some(&extra));
    assert_eq!((code, out.lines().count()), (1, 1), "{out}");
    // An error is 2, not "different".
    let (code, _, err) = vigilctl(&ctl, &["baseline", "diff", "/nonexistent.yaml"], None);
    assert_eq!(code, 2, "{err}");

    // A bad line is named, by vigilctl and by the API, and nothing changes.
    let bad_line = yaml.lines().position(|l| l.contains(&pypi_node)).unwrap() + 1;
    let bad = yaml.replace(&format!("to: {pypi_node}"), "to: pool.test:3333");
    let bad_file = tmp.path().join("bad.yaml");
    std::fs::write(&bad_file, &bad).unwrap();
    let (code, _, err) = vigilctl(
        &ctl,
        &["baseline", "import", bad_file.to_str().unwrap()],
        None,
    );
    assert_ne!(code, 0);
    assert!(
        err.contains(&format!(
            "line {bad_line}: \"pool.test:3333\" is not a node id"
        )),
        "{err}"
    );
    let put = |body: &str| {
        curl(&[
            "-X",
            "PUT",
            "-H",
            &format!("Authorization: Bearer {}", ctl.token()),
            "--data-binary",
            body,
            &format!("http://{}/api/v1/baseline?merge=false", ctl.http),
        ])
    };
    let (status, body) = put(&bad);
    assert_eq!(status, 422, "{body}");
    assert!(body.contains(&format!("line {bad_line}:")), "{body}");
    let (status, body) = put("version: 1\nnamespaces:\n\tdefault: {}\n");
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("line 3:"), "not YAML, named by line: {body}");
    let (status, body) = put("version: 7\n");
    assert!(
        status == 422 && body.contains("line 1: version 7"),
        "{body}"
    );
    assert_eq!(ok(&ctl, &["baseline", "export"]), yaml, "nothing changed");
    ctl.set_mode(&["enforcement"]);
    web.wait_enforce(true);
    assert_eq!(web.get(&pypi_url).0, 200, "the running state is unchanged");

    // Merge the changed file: the baseline is the file's now.
    let out = ok(&ctl, &["baseline", "import", changed, "--merge"]);
    assert!(out.contains("(merged)"), "{out}");
    assert_eq!(vigilctl(&ctl, &["baseline", "diff", changed], None).0, 0);

    // A fresh controller given the first file enforces the same.
    let other = tmp.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let fresh = Controller::start(&other.join("data"), &other);
    let out = ok(&fresh, &["baseline", "import", file]);
    assert!(
        out.contains("(replaced)") && out.contains("1 workloads, 1 edges now"),
        "{out}"
    );
    assert_eq!(vigilctl(&fresh, &["baseline", "diff", file], None).0, 0);
    fresh.set_mode(&["enforcement"]);
    let web2 = Proxy::start("web", fresh.grpc, app.addr, &hosts, &other);
    web2.wait_enforce(true);
    assert_eq!(web2.get(&pypi_url).0, 200, "a learned destination passes");
    let (status, body) = web2.get(&pool_url);
    assert_eq!(status, 403, "a new one is refused: {body}");
    let alerts = fresh.json(&["alerts"]);
    assert!(
        !alerts
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["kind"] == "new_deployment"),
        "web is known from the import: {alerts}"
    );

    // The audit log: the mode change and the imports, with actor and values.
    let entries = audit(&ctl);
    assert!(
        audited(
            &entries,
            &[
                ("action", "mode"),
                ("actor", "admin"),
                ("old", "learning"),
                ("new", "enforcement")
            ]
        ),
        "{entries:?}"
    );
    assert!(
        audited(
            &entries,
            &[
                ("action", "import"),
                ("actor", "admin"),
                ("old", "1 workloads, 1 edges"),
                ("new", "1 workloads, 2 edges (merged)")
            ]
        ),
        "{entries:?}"
    );
    assert_eq!(
        entries.iter().filter(|e| e["action"] == "import").count(),
        1,
        "the refused imports are not recorded"
    );
    let table = ok(&fresh, &["audit"]);
    assert!(
        table.starts_with("SEQ") && table.contains("import") && table.contains("(replaced)"),
        "{table}"
    );
}

/// `alerts accept ID` makes the next identical request pass in enforcement.
#[test]
fn an_accepted_alert_passes_the_next_time() {
    let tmp = tempfile::tempdir().unwrap();
    let ctl = Controller::start(&tmp.path().join("data"), tmp.path());
    let models = Upstream::start("models");
    let hosts = hosts_file(tmp.path(), &["models.test"]);
    let web = Proxy::start("web", ctl.grpc, common::NOWHERE, &hosts, tmp.path());
    ctl.set_mode(&["enforcement"]);
    web.wait_enforce(true);
    let url = format!("http://models.test:{}/v1/models/8412", models.addr.port());
    assert_eq!(web.get(&url).0, 403);
    let destination = format!("models.test:{}", models.addr.port());
    let alert = ctl.wait_alert("unknown_egress", "web", Some(&destination));
    let id = alert["id"].as_str().unwrap();

    // `alerts` with its flags still lists; `alerts accept` accepts.
    let listed = ok(
        &ctl,
        &[
            "alerts",
            "--kind",
            "unknown_egress",
            "--namespace",
            "default",
        ],
    );
    assert!(listed.contains(id), "{listed}");
    let (code, _, err) = vigilctl(&ctl, &["alerts", "--json", "accept", id], None);
    assert_ne!(code, 0, "flags and a subcommand do not mix: {err}");
    let out = ok(&ctl, &["alerts", "accept", id]);
    assert!(
        out.contains(&format!(
            "accepted {id} (unknown_egress default/web -> {destination})"
        )),
        "{out}"
    );
    let (status, body) = wait_for("the accepted request to pass", || {
        let got = web.get(&url);
        (got.0 != 403).then_some(got)
    });
    assert_eq!((status, body.as_str()), (200, "models GET /v1/models/8412"));
    let yaml = ok(&ctl, &["baseline", "export"]);
    assert!(
        yaml.contains(&format!("to: external:{destination}")),
        "{yaml}"
    );

    // Unknown ids are refused by name.
    let (code, _, err) = vigilctl(&ctl, &["alerts", "accept", "0123456789abcdef"], None);
    assert!(code != 0 && err.contains("no alert has id"), "{err}");
    assert!(audited(
        &audit(&ctl),
        &[
            ("action", "accept"),
            ("actor", "admin"),
            ("target", id),
            ("new", "in the baseline")
        ]
    ));
}

/// Repeats a request through `web` until it answers `want` (a 403 must be
/// the quarantine's); fails after `limit`. Returns how long it took.
fn answered_within(web: &Proxy, url: &str, want: u16, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let (status, body) = web.get(url);
        if status == want {
            if want == 403 {
                assert!(body.contains("workload quarantined"), "{body}");
            }
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "still {status} after {limit:?}, wanted {want}: {body}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Quarantine: everything but health checks is refused within a second,
/// also by a sidecar restarted while the controller is away (from its
/// policy cache) and after the controller restarts; release undoes it.
#[test]
fn quarantine_holds_across_sidecar_and_controller_restarts_until_release() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut ctl = Controller::start_restartable(&data, tmp.path());
    let pypi = Upstream::start("pypi");
    let app = Upstream::start("web");
    let hosts = hosts_file(tmp.path(), &["pypi.test"]);
    let cache = tmp.path().join("policy.json");
    let flags = [
        "--policy-cache",
        cache.to_str().unwrap(),
        "--health-path",
        "/healthz",
    ];
    let mut web = Proxy::start_with("web", ctl.grpc, app.addr, &hosts, tmp.path(), &flags);
    let url = format!("http://pypi.test:{}/simple/", pypi.addr.port());
    assert_eq!(web.get(&url).0, 200);
    assert_eq!(
        curl(&[&format!("http://{}/api/contents", web.inbound)]).0,
        200
    );

    let (code, _, err) = vigilctl(&ctl, &["quarantine", "nobody"], None);
    assert!(
        code != 0 && err.contains("default/nobody is not known"),
        "{err}"
    );
    let out = ok(&ctl, &["quarantine", "web", "--namespace", "default"]);
    assert!(out.starts_with("quarantined default/web"), "{out}");
    let took = answered_within(&web, &url, 403, Duration::from_secs(1));
    eprintln!("quarantine in force at the sidecar after {took:?}");
    assert_eq!(
        curl(&[&format!("http://{}/api/contents", web.inbound)]).0,
        403,
        "inbound too"
    );
    assert_eq!(
        curl(&[&format!("http://{}/healthz", web.inbound)]).0,
        200,
        "health checks pass"
    );
    assert!(ok(&ctl, &["quarantine", "default/web"]).contains("already quarantined"));
    assert_eq!(
        curl(&["-I", &format!("http://{}/healthz", web.inbound)]).0,
        200,
        "HEAD, as a probe may send"
    );
    // The notebook's ways around it: a request with a body to the health
    // path (a channel in), a path that only starts like a health check, and
    // a release with the read-only viewer token.
    for method in ["POST", "GET"] {
        let (status, _) = curl(&[
            "-X",
            method,
            "--data-binary",
            "payload",
            &format!("http://{}/healthz", web.inbound),
        ]);
        assert_eq!(status, 403, "{method} /healthz with a body");
    }
    let sneaky = curl(&[
        "--path-as-is",
        &format!("http://{}/healthz/../api/contents", web.inbound),
    ]);
    assert_eq!(sneaky.0, 403, "{sneaky:?}");
    let viewer = std::fs::read_to_string(data.join("viewer.token")).unwrap();
    let (status, body) = curl(&[
        "-X",
        "POST",
        "-H",
        &format!("Authorization: Bearer {}", viewer.trim()),
        &format!("http://{}/api/v1/workloads/default/web/release", ctl.http),
    ]);
    assert_eq!(status, 403, "the viewer cannot release: {body}");
    assert_eq!(web.get(&url).0, 403, "still quarantined");
    let (status, body) = curl(&[
        "-H",
        &format!("Authorization: Bearer {}", ctl.token()),
        &format!("http://{}/api/v1/quarantine", ctl.http),
    ]);
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (
            status,
            list[0]["workload"].as_str(),
            list[0]["actor"].as_str()
        ),
        (200, Some("default/web"), Some("admin")),
        "{body}"
    );

    // The sidecar restarts while the controller is down: its cache holds.
    ctl.proc.kill();
    web.proc.kill();
    drop(web);
    web = Proxy::start_with("web", ctl.grpc, app.addr, &hosts, tmp.path(), &flags);
    answered_within(&web, &url, 403, Duration::from_secs(1));
    assert_eq!(curl(&[&format!("http://{}/healthz", web.inbound)]).0, 200);

    // The controller restarts: the quarantine is still there.
    let (grpc, http) = (ctl.grpc, ctl.http);
    drop(ctl);
    ctl = Controller::start_on(&data, tmp.path(), grpc, http);
    wait_for("the sidecar to reconnect", || {
        let status = ctl.json(&["status"]);
        (status["sidecars_connected"].as_u64() >= Some(1)).then_some(())
    });
    assert_eq!(
        web.get(&url).0,
        403,
        "still quarantined after the controller restarted"
    );
    let (status, body) = curl(&[
        "-H",
        &format!("Authorization: Bearer {}", ctl.token()),
        &format!("http://{}/api/v1/quarantine", ctl.http),
    ]);
    assert!(
        status == 200 && body.contains("\"workload\":\"default/web\""),
        "kept by the controller: {body}"
    );

    let out = ok(&ctl, &["release", "web"]);
    assert_eq!(out, "released default/web\n");
    let took = answered_within(&web, &url, 200, Duration::from_secs(1));
    eprintln!("release in force at the sidecar after {took:?}");
    assert_eq!(
        curl(&[&format!("http://{}/api/contents", web.inbound)]).0,
        200
    );
    assert!(ok(&ctl, &["release", "web"]).contains("was not quarantined"));

    let entries = audit(&ctl);
    assert!(
        audited(
            &entries,
            &[
                ("action", "quarantine"),
                ("actor", "admin"),
                ("target", "default/web"),
                ("old", "released"),
                ("new", "quarantined")
            ]
        ),
        "{entries:?}"
    );
    assert!(
        audited(
            &entries,
            &[
                ("action", "release"),
                ("actor", "admin"),
                ("target", "default/web"),
                ("old", "quarantined"),
                ("new", "released")
            ]
        ),
        "{entries:?}"
    );
    assert_eq!(
        entries
            .iter()
            .filter(|e| e["action"] == "quarantine")
            .count(),
        1,
        "a repeat changes nothing: {entries:?}"
    );
}

/// Echoes every byte back: the pool, as far as the miner can tell.
fn start_echo() -> SocketAddr {
    spawn_server(|mut stream| async move {
        let (mut read, mut write) = stream.split();
        let _ = tokio::io::copy(&mut read, &mut write).await;
    })
}

/// `--auto-quarantine mining_protocol`: the first Stratum bytes quarantine
/// the workload, in learning mode too; its open stream is cut, and the
/// mining alert cannot be accepted.
#[test]
fn auto_quarantine_stops_a_stratum_client_on_its_own() {
    let tmp = tempfile::tempdir().unwrap();
    let ctl = controller_with(
        &tmp.path().join("data"),
        tmp.path(),
        &["--auto-quarantine", "threat,mining_protocol"],
    );
    let echo = start_echo();
    let pypi = Upstream::start("pypi");
    let hosts = hosts_file(tmp.path(), &["pool.test", "pypi.test"]);
    let web = Proxy::start("web", ctl.grpc, common::NOWHERE, &hosts, tmp.path());
    let url = format!("http://pypi.test:{}/simple/", pypi.addr.port());
    assert_eq!(web.get(&url).0, 200, "learning: everything passes");

    let target = format!("pool.test:{}", echo.port());
    let mut tunnel = TcpStream::connect(web.outbound).unwrap();
    tunnel.set_read_timeout(Some(DEADLINE)).unwrap();
    write!(
        tunnel,
        "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            tunnel.read(&mut byte).unwrap(),
            1,
            "{:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    tunnel
        .write_all(b"{\"id\":1,\"method\":\"mining.subscribe\",\"params\":[\"xmrig/6.21.0\"]}\n")
        .unwrap();

    let alert = ctl.wait_alert("mining_protocol", "web", Some(&target));
    let id = alert["id"].as_str().unwrap().to_owned();
    wait_for("the open stream to be cut", || {
        let mut buf = [0u8; 4096];
        match tunnel.read(&mut buf) {
            Ok(0) => Some(()),
            Ok(_) => None,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => Some(()),
            Err(e) => panic!("the tunnel stayed open: {e}"),
        }
    });
    let (status, body) = wait_for("the quarantine at the sidecar", || {
        let got = web.get(&url);
        (got.0 == 403).then_some(got)
    });
    assert!(body.contains("workload quarantined"), "{status} {body}");
    let entries = audit(&ctl);
    assert!(
        audited(
            &entries,
            &[
                ("action", "quarantine"),
                ("actor", "auto-quarantine"),
                ("target", "default/web"),
                ("new", &format!("mining_protocol alert {id}"))
            ]
        ),
        "{entries:?}"
    );
    let (code, _, err) = vigilctl(&ctl, &["alerts", "accept", &id], None);
    assert!(
        code != 0 && err.contains("mining_protocol alert cannot be accepted"),
        "{err}"
    );
    assert!(
        !ok(&ctl, &["baseline", "export"]).contains(&target),
        "mining is never learned"
    );
}

/// A bad `--auto-quarantine` kind stops the controller at start, listing
/// the kinds.
#[test]
fn a_bad_auto_quarantine_kind_is_a_start_error() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(bin("vigil-controller"))
        .args(["--auto-quarantine", "threat,minig", "--data-dir"])
        .arg(tmp.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("\"minig\" is not an alert kind") && err.contains("mining_protocol"),
        "{err}"
    );
}

/// Tenants: a sidecar's `--tenant` is in its alerts and `alerts --tenant`
/// shows only those; a long `alerts --json` into `head` ends quietly.
#[test]
fn alerts_carry_the_tenant_and_vigilctl_ends_quietly_in_a_closed_pipe() {
    let tmp = tempfile::tempdir().unwrap();
    let ctl = Controller::start(&tmp.path().join("data"), tmp.path());
    let hosts = hosts_file(tmp.path(), &[]);
    let alice = Proxy::start_with(
        "nb-alice",
        ctl.grpc,
        common::NOWHERE,
        &hosts,
        tmp.path(),
        &["--tenant", "alice"],
    );
    let bob = Proxy::start_with(
        "nb-bob",
        ctl.grpc,
        common::NOWHERE,
        &hosts,
        tmp.path(),
        &["--tenant", "bob"],
    );
    ctl.set_mode(&["enforcement"]);
    alice.wait_enforce(true);
    bob.wait_enforce(true);
    // Enough alerts that their JSON outgrows a pipe's buffer: one curl,
    // many destinations, each refused at once.
    let urls: Vec<String> = (20_000..20_300)
        .map(|port| format!("http://127.0.0.1:{port}/"))
        .collect();
    let mut args = vec!["-s", "-o", "/dev/null", "-x"];
    let proxy = format!("http://{}", alice.outbound);
    args.push(&proxy);
    args.extend(urls.iter().map(String::as_str));
    Command::new("curl").args(&args).status().unwrap();
    assert_eq!(bob.get("http://127.0.0.1:19999/").0, 403);
    wait_for("alice's 300 alerts", || {
        let mine = ctl.json(&["alerts", "--tenant", "alice"]);
        (mine.as_array()?.len() >= 300).then_some(())
    });
    ctl.wait_alert("unknown_egress", "nb-bob", Some("127.0.0.1:19999"));

    let mine = ctl.json(&["alerts", "--tenant", "alice"]);
    let mine = mine.as_array().unwrap();
    assert!(
        mine.iter()
            .all(|a| a["tenant"] == "alice" && a["workload"] == "nb-alice"),
        "{mine:?}"
    );
    let all = ctl.json(&["alerts"]);
    assert!(
        all.as_array().unwrap().iter().any(|a| a["tenant"] == "bob"),
        "{all}"
    );
    let table = ok(&ctl, &["alerts", "--tenant", "bob"]);
    assert!(
        table.contains("nb-bob") && !table.contains("nb-alice"),
        "{table}"
    );

    let bytes = ok(&ctl, &["alerts", "--json"]).len();
    assert!(bytes > 128 * 1024, "twice what a pipe holds: {bytes} bytes");
    let script = format!(
        "{} --controller http://{} --token-file {} alerts --json | head -c 10 >/dev/null; echo \"${{PIPESTATUS[0]}}\"",
        bin("vigilctl").display(),
        ctl.http,
        ctl.data_dir.join("admin.token").display()
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    let (status, err) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(status.trim(), "0", "vigilctl's exit status: {err}");
    assert!(err.is_empty(), "nothing on stderr: {err}");
}
