//! Compatibility: real, unmodified software that notebook platforms run,
//! through the sidecar, checked as its user would check it.
//!
//! - Jupyter Server + ipykernel: a cell runs over the kernel's WebSocket,
//!   the kernel is interrupted and restarted, the REST API answers.
//! - grpcio (Python) client and server: every call shape, deadlines, a
//!   trailers-only failure, 4 MiB messages.
//! - pip installing from pypiserver over TLS (a local CA), via `HTTPS_PROXY`
//!   and, as root, transparently (named by SNI).
//! - `git clone` over smart HTTP from `git http-backend` behind nginx.
//! - curl against Hypercorn: chunked uploads, `Expect: 100-continue`, HEAD,
//!   204, 304, trailers, HTTP/2 prior knowledge, server-sent events.
//!
//! Each case runs inbound (client -> sidecar -> server) and through a
//! second sidecar used as the client's proxy (client -> outbound -> inbound
//! -> server), the way two meshed pods talk.
//!
//! They need curl, openssl, git, nginx and fcgiwrap, and a Python virtual
//! environment with `tests/compat/requirements.txt` (at `target/compat-venv`,
//! or `$VIGIL_COMPAT_VENV`), which the first test creates with `python3 -m
//! venv` and pip when it is missing. A missing piece fails the test, saying
//! what to install; `VIGIL_COMPAT_SKIP=1` skips the suite instead.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::netns::{Network, on_path, sidecar_for};
use common::{Controller, Proc, Proxy, curl, restartable_port, spawn_proc, wait_for};

/// Where the compatibility suite's Python tools live.
struct Kit {
    python: PathBuf,
    scripts: PathBuf,
}

impl Kit {
    /// The kit, or `None` (after saying why) when something is missing.
    fn for_test(test: &str, tools: &[&str]) -> Option<Kit> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let missing = tools.iter().find(|tool| !on_path(tool)).map(|tool| {
            format!(
                "`{tool}` is not installed (apt-get install nginx-light fcgiwrap git curl openssl)"
            )
        });
        let venv = match missing {
            Some(why) => Err(why),
            None => ensure_venv(root),
        };
        let python = match venv {
            Ok(venv) => venv.join("bin/python"),
            Err(why) => {
                // A missing piece fails the suite, so a green run never hides
                // a missing install step; skipping is an explicit choice.
                let skip = std::env::var("VIGIL_COMPAT_SKIP").is_ok_and(|v| v == "1");
                assert!(
                    skip,
                    "{test} cannot run: {why} (VIGIL_COMPAT_SKIP=1 skips the compatibility suite)"
                );
                eprintln!("SKIPPED {test} (VIGIL_COMPAT_SKIP=1): {why}");
                return None;
            }
        };
        Some(Kit {
            python,
            scripts: root.join("tests/compat"),
        })
    }

    /// `python -u <script>` (unbuffered, so its lines reach the log at once).
    fn script(&self, name: &str) -> Command {
        let mut cmd = Command::new(&self.python);
        cmd.arg("-u").arg(self.scripts.join(name));
        cmd.env("PYTHONDONTWRITEBYTECODE", "1");
        cmd
    }

    /// A venv tool (`pip`, ...).
    fn tool(&self, name: &str) -> Command {
        Command::new(self.python.with_file_name(name))
    }

    /// Starts `script args` as a server and waits for its `listening on
    /// <port>` line; returns it and the port.
    fn server(&self, name: &str, args: &[&str], log_dir: &Path) -> (Proc, u16) {
        let mut cmd = self.script(name);
        cmd.args(args);
        let proc = spawn_proc(name.trim_end_matches(".py"), cmd, log_dir);
        let port = wait_for(&format!("{name} to listen"), || {
            let log = proc.log();
            let port = log
                .lines()
                .find_map(|l| l.strip_prefix("listening on ")?.trim().parse().ok());
            assert!(
                port.is_some() || !proc.exited(),
                "{name} exited before it listened:\n{log}"
            );
            port
        });
        (proc, port)
    }
}

/// Clears every proxy setting a client could inherit (curl, urllib, pip,
/// git, grpcio and websocket-client read these), so a test sets the one it
/// means.
fn no_proxy_settings(cmd: &mut Command) {
    for var in ["http", "https", "all", "grpc", "no", "no_grpc"] {
        let var = format!("{var}_proxy");
        cmd.env_remove(&var).env_remove(var.to_ascii_uppercase());
    }
}

/// The suite's Python virtual environment (`$VIGIL_COMPAT_VENV`, else
/// `target/compat-venv`), created on first use from
/// `tests/compat/requirements.txt` (by one test, while the others wait),
/// so the README's test command needs no step of its own.
fn ensure_venv(root: &Path) -> Result<PathBuf, String> {
    let venv = std::env::var_os("VIGIL_COMPAT_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/compat-venv"));
    let ready = venv.join(".ready");
    if ready.exists() {
        return Ok(venv);
    }
    let lock = venv.with_extension("lock");
    if let Some(parent) = lock.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    if std::fs::create_dir(&lock).is_err() {
        // Another test is building it.
        let start = std::time::Instant::now();
        while !ready.exists() {
            if start.elapsed() > std::time::Duration::from_secs(600) || !lock.exists() {
                return Err(format!(
                    "{} was not made (remove {} if no test is building it)",
                    venv.display(),
                    lock.display()
                ));
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        return Ok(venv);
    }
    let built = build_venv(root, &venv);
    let _ = std::fs::remove_dir(&lock);
    built.map(|()| venv)
}

fn build_venv(root: &Path, venv: &Path) -> Result<(), String> {
    eprintln!(
        "creating {} from tests/compat/requirements.txt",
        venv.display()
    );
    let run = |cmd: &mut Command| -> Result<(), String> {
        let out = cmd
            .output()
            .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
        if out.status.success() {
            return Ok(());
        }
        Err(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        ))
    };
    run(Command::new("python3").args(["-m", "venv"]).arg(venv))?;
    run(Command::new(venv.join("bin/pip"))
        .args(["install", "-q", "--disable-pip-version-check", "-r"])
        .arg(root.join("tests/compat/requirements.txt")))?;
    std::fs::write(venv.join(".ready"), "").map_err(|e| e.to_string())
}

/// Runs `cmd`; panics with its output unless it succeeds; returns stdout.
fn succeed(what: &str, cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {cmd:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A controller, a hosts file naming every test server 127.0.0.1, the
/// server's sidecar (`app`, inbound) and a client pod's sidecar (`client`,
/// the client's proxy).
struct Mesh {
    ctl: Controller,
    app: Proxy,
    client: Proxy,
}

impl Mesh {
    /// Starts the mesh in front of the server on `server_port`, named
    /// `app` (and `app.test` in the hosts file).
    fn start(dir: &Path, app: &str, server_port: u16) -> Self {
        let ctl = Controller::start(&dir.join("data"), dir);
        let hosts = common::hosts_file(dir, &[&format!("{app}.test"), "pypi.test"]);
        let server = SocketAddr::from(([127, 0, 0, 1], server_port));
        let app = Proxy::start(app, ctl.grpc, server, &hosts, dir);
        let client = Proxy::start("client", ctl.grpc, common::NOWHERE, &hosts, dir);
        Mesh { ctl, app, client }
    }

    /// `http://<app's inbound>`: straight to the server's sidecar.
    fn inbound_url(&self) -> String {
        format!("http://{}", self.app.inbound)
    }

    /// `http://app.test:<inbound port>`, the name a meshed client uses,
    /// through `--proxy` [`Mesh::proxy_url`].
    fn named_url(&self, app: &str) -> String {
        format!("http://{app}.test:{}", self.app.inbound.port())
    }

    /// The client's sidecar as an HTTP proxy URL.
    fn proxy_url(&self) -> String {
        format!("http://{}", self.client.outbound)
    }

    /// Waits for `source -> workload:default/<app>` with an endpoint `key`
    /// counted; returns the edge.
    fn wait_endpoint(&self, source: &str, app: &str, key: &str) -> serde_json::Value {
        wait_endpoint(&self.ctl, source, &format!("workload:default/{app}"), key)
    }
}

/// Waits for the edge `source -> target` with an endpoint `key` counted;
/// returns the edge.
fn wait_endpoint(ctl: &Controller, source: &str, target: &str, key: &str) -> serde_json::Value {
    wait_for(&format!("{source} -> {target} with {key}"), || {
        let graph = ctl.json(&["graph"]);
        graph["edges"]
            .as_array()?
            .iter()
            .find(|e| e["source"] == source && e["target"] == target)
            .filter(|e| e["endpoints"][key].as_u64().unwrap_or(0) > 0)
            .cloned()
    })
}

/// The two ways a client reaches the server: `(label, base URL, proxy)`.
fn paths(mesh: &Mesh, app: &str) -> [(&'static str, String, Option<String>); 2] {
    [
        ("inbound", mesh.inbound_url(), None),
        (
            "outbound then inbound",
            mesh.named_url(app),
            Some(mesh.proxy_url()),
        ),
    ]
}

/// curl with `args` (plus `-x proxy` when given); returns stdout, and
/// panics unless curl succeeds.
fn curl_ok(what: &str, proxy: Option<&str>, args: &[&str]) -> String {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "20"]);
    if let Some(proxy) = proxy {
        cmd.args(["-x", proxy]);
    }
    succeed(what, cmd.args(args))
}

/// Starts Hypercorn serving `web_app.py`; returns it and its port. It
/// serves in its own process (`--workers 0`): a worker process of its own
/// would outlive the test when the test kills it.
fn hypercorn(kit: &Kit, dir: &Path) -> (Proc, u16) {
    let mut cmd = Command::new(&kit.python);
    cmd.args(["-m", "hypercorn", "--workers", "0", "--bind", "127.0.0.1:0"])
        .arg("web_app:app")
        .current_dir(&kit.scripts)
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let proc = spawn_proc("hypercorn", cmd, dir);
    let port = wait_for("hypercorn to listen", || {
        let log = proc.log();
        assert!(!proc.exited(), "hypercorn exited:\n{log}");
        let at = log.find("Running on http://127.0.0.1:")? + "Running on http://127.0.0.1:".len();
        log[at..]
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    });
    (proc, port)
}

/// The kit, a temporary directory, Hypercorn serving `web_app.py` and the
/// mesh in front of it as `web`, or `None` when the kit is missing.
fn hypercorn_mesh(test: &str) -> Option<(Kit, tempfile::TempDir, Proc, Mesh)> {
    let kit = Kit::for_test(test, &["curl"])?;
    let tmp = tempfile::tempdir().unwrap();
    let (web, port) = hypercorn(&kit, tmp.path());
    let mesh = Mesh::start(tmp.path(), "web", port);
    Some((kit, tmp, web, mesh))
}

/// HTTP/1.1 as curl speaks it: chunked uploads, `Expect: 100-continue`,
/// HEAD, 204 and 304 against Hypercorn, trailers from a chunked response.
#[test]
fn curl_http1_semantics_pass_the_sidecar() {
    let Some((kit, tmp, _web, mesh)) = hypercorn_mesh("curl_http1_semantics_pass_the_sidecar")
    else {
        return;
    };
    let dir = tmp.path();
    let upload = dir.join("upload.bin");
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&upload, &data).unwrap();
    let upload_arg = format!("@{}", upload.display());
    let want_sha = sha256_hex(&upload);

    for (label, base, proxy) in paths(&mesh, "web") {
        let proxy = proxy.as_deref();
        // A chunked upload arrives whole and chunked.
        let out = curl_ok(
            "chunked upload",
            proxy,
            &[
                "-H",
                "Transfer-Encoding: chunked",
                "--data-binary",
                &upload_arg,
                &format!("{base}/upload"),
            ],
        );
        let got: serde_json::Value = serde_json::from_str(&out).expect(&out);
        assert_eq!(got["bytes"], 300_000, "{label}: {got}");
        assert_eq!(got["sha256"], want_sha.as_str(), "{label}: {got}");
        assert_eq!(got["chunked"], true, "{label}: the upload stays chunked");

        // Expect: 100-continue gets its 100 at once: curl would wait 30 s
        // for it, past its 20 s limit.
        let out = curl_ok(
            "Expect: 100-continue",
            proxy,
            &[
                "-v",
                "--expect100-timeout",
                "30",
                "-H",
                "Expect: 100-continue",
                "--data-binary",
                &upload_arg,
                &format!("{base}/upload"),
                "--stderr",
                "-",
            ],
        );
        assert!(
            out.contains("< HTTP/1.1 100"),
            "{label}: no 100 Continue:\n{out}"
        );
        assert!(out.contains(&want_sha), "{label}: body after 100:\n{out}");

        // HEAD: headers of the GET, no body, and the connection stays in
        // step (the next request on it gets its own answer).
        // `--next` starts afresh: the proxy is given again.
        let again: Vec<&str> = proxy.map(|p| vec!["-x", p]).unwrap_or_default();
        let (page, hello) = (format!("{base}/page"), format!("{base}/hello"));
        let mut args = vec!["-i", "--head", &page, "--next", "-sS", "-i"];
        args.extend(again);
        args.push(&hello);
        let out = curl_ok("HEAD then GET", proxy, &args);
        assert!(out.contains("content-length: 10"), "{label}: {out}");
        assert!(
            !out.contains("page body"),
            "{label}: HEAD had a body: {out}"
        );
        assert!(out.ends_with("\r\n\r\nhello"), "{label}: {out}");

        // 304 and 204 have no body.
        let status = |extra: &[&str], path: &str| {
            let mut args = vec!["-o", "/dev/null", "-w", "%{http_code} %{size_download}"];
            args.extend_from_slice(extra);
            let url = format!("{base}{path}");
            args.push(&url);
            curl_ok(path, proxy, &args)
        };
        assert_eq!(
            status(&["-H", "If-None-Match: \"v1\""], "/page"),
            "304 0",
            "{label}"
        );
        assert_eq!(status(&[], "/empty"), "204 0", "{label}");
    }

    // Trailers of a chunked HTTP/1.1 response reach a client that accepts
    // them (`TE: trailers`; without it, RFC 9112 section 7.1.2 lets a
    // proxy drop them, and hyper does).
    let (_trailers, port) = kit.server("trailers_h1.py", &[], dir);
    let hosts = dir.join("hosts");
    let app = SocketAddr::from(([127, 0, 0, 1], port));
    let trailers = Proxy::start("trailers", mesh.ctl.grpc, app, &hosts, dir);
    for (label, url, proxy) in [
        ("inbound", format!("http://{}/", trailers.inbound), None),
        (
            "outbound",
            format!("http://127.0.0.1:{port}/"),
            Some(mesh.proxy_url()),
        ),
    ] {
        let args = ["-H", "TE: trailers", "-D", "-", &url];
        let out = curl_ok("trailers", proxy.as_deref(), &args);
        assert!(out.contains("hello"), "{label}: {out}");
        assert!(
            out.to_ascii_lowercase().contains("x-checksum: abc123"),
            "{label}: the trailer is lost:\n{out}"
        );
    }
    mesh.wait_endpoint("internet", "web", "POST /upload");
    mesh.wait_endpoint("workload:default/client", "web", "HEAD /page");
}

/// HTTP/2 with prior knowledge (curl --http2-prior-knowledge) to
/// Hypercorn's h2c: requests, an upload, and trailers asked for with `te:
/// trailers`.
#[test]
fn curl_http2_prior_knowledge_passes_the_sidecar() {
    let Some((_kit, _tmp, _web, mesh)) =
        hypercorn_mesh("curl_http2_prior_knowledge_passes_the_sidecar")
    else {
        return;
    };
    let base = mesh.inbound_url();
    let h2 = |args: &[&str]| {
        let mut all = vec!["--http2-prior-knowledge"];
        all.extend_from_slice(args);
        curl_ok("h2c", None, &all)
    };
    let out = h2(&["-w", " %{http_version}", &format!("{base}/hello")]);
    assert_eq!(out, "hello 2");
    let out = h2(&["--data-binary", "0123456789", &format!("{base}/upload")]);
    assert!(out.contains("\"bytes\": 10"), "{out}");
    let out = h2(&["-H", "TE: trailers", "-D", "-", &format!("{base}/trailers")]);
    assert!(out.contains("data"), "{out}");
    assert!(
        out.contains("x-checksum: abc123"),
        "the HTTP/2 trailer is lost (te: trailers must reach the server):\n{out}"
    );
    let edge = mesh.wait_endpoint("internet", "web", "GET /trailers");
    assert!(common::has_protocol(&edge, "http2"), "{edge}");
}

/// Server-sent events stream through without buffering: the server sends
/// its second event only after the client has read the first, so a proxy
/// that held the stream back would keep the client waiting until curl's
/// time limit.
#[test]
fn server_sent_events_stream_without_buffering() {
    let Some((_kit, _tmp, _web, mesh)) =
        hypercorn_mesh("server_sent_events_stream_without_buffering")
    else {
        return;
    };
    for (label, base, proxy) in paths(&mesh, "web") {
        let mut cmd = Command::new("curl");
        cmd.args(["-sN", "--max-time", "20"]);
        if let Some(proxy) = &proxy {
            cmd.args(["-x", proxy]);
        }
        let mut events = cmd
            .arg(format!("{base}/events"))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(events.stdout.take().unwrap()).lines();
        let first = lines.next().and_then(Result::ok);
        assert_eq!(
            first.as_deref(),
            Some("data: one"),
            "{label}: the first event did not arrive while the stream was open"
        );
        // Still open, and already reported (a live response, not only when
        // it ends).
        let source = match proxy {
            None => "internet",
            Some(_) => "workload:default/client",
        };
        mesh.wait_endpoint(source, "web", "GET /events");
        curl_ok("release", proxy.as_deref(), &[&format!("{base}/release")]);
        let rest: Vec<String> = lines.map_while(Result::ok).collect();
        assert_eq!(rest, ["", "data: two", ""], "{label}");
        assert!(events.wait().unwrap().success(), "{label}");
    }
}

fn sha256_hex(path: &Path) -> String {
    let out = succeed("sha256sum", Command::new("sha256sum").arg(path));
    out.split_whitespace().next().unwrap().to_owned()
}

/// The Jupyter Server of a test, with its token.
struct Jupyter {
    _proc: Proc,
    port: u16,
}

/// Starts a real Jupyter Server (ipykernel kernels) in `dir/notebooks`.
fn jupyter(kit: &Kit, dir: &Path) -> Jupyter {
    let port = restartable_port();
    let proc = spawn_proc(
        "jupyter-server",
        jupyter_cmd(Command::new(&kit.python), dir, "127.0.0.1", port),
        dir,
    );
    wait_for("Jupyter Server's /api", || {
        assert!(!proc.exited(), "Jupyter Server exited:\n{}", proc.log());
        (curl(&[&format!("http://127.0.0.1:{port}/api")]).0 == 200).then_some(())
    });
    Jupyter { _proc: proc, port }
}

/// The token of the test's Jupyter Servers.
const JUPYTER_TOKEN: &str = "compat-token";

/// `python` (a venv python, or a command running it) made into a Jupyter
/// Server on `ip:port` with its notebooks and state under `dir`.
fn jupyter_cmd(mut cmd: Command, dir: &Path, ip: &str, port: u16) -> Command {
    let root = dir.join("notebooks");
    std::fs::create_dir_all(&root).unwrap();
    cmd.args(["-m", "jupyter_server"])
        .arg(format!("--ServerApp.ip={ip}"))
        .arg(format!("--ServerApp.port={port}"))
        .arg("--ServerApp.port_retries=0")
        .arg(format!("--IdentityProvider.token={JUPYTER_TOKEN}"))
        .arg(format!("--ServerApp.root_dir={}", root.display()))
        .arg("--ServerApp.allow_remote_access=True")
        .arg("--ServerApp.open_browser=False")
        .arg("--ServerApp.allow_root=True");
    for (var, sub) in [
        ("JUPYTER_RUNTIME_DIR", "jupyter-runtime"),
        ("JUPYTER_DATA_DIR", "jupyter-data"),
        ("JUPYTER_CONFIG_DIR", "jupyter-config"),
        ("IPYTHONDIR", "ipython"),
    ] {
        cmd.env(var, dir.join(sub));
    }
    cmd.env("JUPYTER_PLATFORM_DIRS", "1");
    cmd
}

/// `jupyter_check.py base token` with no proxy settings but `proxy`.
fn jupyter_check(kit: &Kit, mut cmd: Command, base: &str, proxy: Option<&str>) -> Command {
    cmd.arg("-u")
        .arg(kit.scripts.join("jupyter_check.py"))
        .arg(base)
        .arg(JUPYTER_TOKEN);
    no_proxy_settings(&mut cmd);
    if let Some(proxy) = proxy {
        cmd.env("HTTP_PROXY", proxy).env("http_proxy", proxy);
    }
    cmd
}

/// Every step of `jupyter_check.py` passed.
fn assert_jupyter_ok(label: &str, out: &str) {
    for step in [
        "contents_get",
        "session_list",
        "execute",
        "kernel_interrupt",
        "kernel_restart",
        "execute_after_restart",
        "kernel_delete",
    ] {
        assert!(
            out.contains(&format!("ok {step}\n")),
            "{label}: {step}:\n{out}"
        );
    }
}

/// Jupyter behind the sidecar: the REST API (contents, sessions), and a
/// kernel that runs `1+1` over its WebSocket channel, is interrupted and
/// restarted, inbound and through the client's sidecar as its HTTP proxy.
#[test]
fn jupyter_runs_cells_through_the_sidecar() {
    let Some(kit) = Kit::for_test("jupyter_runs_cells_through_the_sidecar", &["curl"]) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let server = jupyter(&kit, dir);
    let mesh = Mesh::start(dir, "notebook", server.port);
    for (label, base, proxy) in paths(&mesh, "notebook") {
        let python = Command::new(&kit.python);
        let mut cmd = jupyter_check(&kit, python, &base, proxy.as_deref());
        let out = succeed(&format!("jupyter_check.py ({label})"), &mut cmd);
        assert_jupyter_ok(label, &out);
    }
    mesh.wait_endpoint("internet", "notebook", "GET /api/kernels/{id}/channels");
    mesh.wait_endpoint("workload:default/client", "notebook", "POST /api/sessions");
}

/// grpcio client and server through the sidecar: unary, the three
/// streaming shapes, a deadline, a trailers-only failure and 4 MiB
/// messages; inbound over HTTP/2, and through the client's sidecar, which
/// grpcio reaches with CONNECT when `http_proxy` is set.
#[test]
fn grpcio_calls_pass_the_sidecar() {
    let Some(kit) = Kit::for_test("grpcio_calls_pass_the_sidecar", &[]) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_server, port) = kit.server("grpc_server.py", &["0"], dir);
    let mesh = Mesh::start(dir, "grpc", port);
    let run = |label: &str, target: &str, proxy: Option<&str>| {
        let mut cmd = kit.script("grpc_client.py");
        cmd.arg(target);
        no_proxy_settings(&mut cmd);
        if let Some(proxy) = proxy {
            cmd.env("http_proxy", proxy);
        }
        let out = succeed(&format!("grpc_client.py ({label})"), &mut cmd);
        for case in [
            "unary",
            "server_stream",
            "client_stream",
            "bidi",
            "deadline",
            "fail",
            "big",
        ] {
            assert!(
                out.contains(&format!("ok {case}")),
                "{label}: {case}:\n{out}"
            );
        }
    };
    run("inbound", &mesh.app.inbound.to_string(), None);
    let edge = mesh.wait_endpoint("internet", "grpc", "POST /vigil.compat.Echo/Unary");
    assert!(common::has_protocol(&edge, "grpc"), "{edge}");
    // The call the client's deadline cut off is recorded too.
    mesh.wait_endpoint("internet", "grpc", "POST /vigil.compat.Echo/Slow");
    run(
        "outbound then inbound",
        &format!("grpc.test:{}", mesh.app.inbound.port()),
        Some(&mesh.proxy_url()),
    );
}

/// A CA and a certificate it signed for `name` (openssl); returns (CA
/// certificate, leaf certificate, leaf key).
fn local_ca(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let file = |f: &str| dir.join(f);
    let run = |args: &[&str]| {
        let mut cmd = Command::new("openssl");
        cmd.current_dir(dir).args(args);
        succeed("openssl", &mut cmd);
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=Vigil compat test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        &format!("/CN={name}"),
        "-keyout",
        "leaf.key",
        "-out",
        "leaf.csr",
    ]);
    std::fs::write(
        file("leaf.ext"),
        format!(
            "subjectAltName=DNS:{name}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
        ),
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "leaf.ext",
        "-out",
        "leaf.pem",
    ]);
    (file("ca.pem"), file("leaf.pem"), file("leaf.key"))
}

/// `pip install` of `vigil-probe` from `index` into `target`, trusting
/// `ca`, with no cache and no user config.
fn pip_install(kit: &Kit, index: &str, ca: &Path, target: &Path) -> Command {
    let mut cmd = kit.tool("pip");
    cmd.args([
        "install",
        "--isolated",
        "--no-cache-dir",
        "--disable-pip-version-check",
    ])
    .args([
        "--no-deps",
        "--retries",
        "0",
        "--timeout",
        "20",
        "--index-url",
        index,
    ])
    .arg("--cert")
    .arg(ca)
    .arg("--target")
    .arg(target)
    .arg("vigil-probe");
    no_proxy_settings(&mut cmd);
    // pip verifies with the system store (truststore) and, through a proxy,
    // not with `--cert` alone: a private CA goes in as OpenSSL's default.
    cmd.env("PIP_CONFIG_FILE", "/dev/null")
        .env("SSL_CERT_FILE", ca);
    cmd
}

/// pip installs a package from pypiserver over TLS, through the client's
/// sidecar as `HTTPS_PROXY`: a CONNECT tunnel named `pypi.test`, never
/// decrypted.
#[test]
fn pip_installs_through_https_proxy() {
    let Some(kit) = Kit::for_test("pip_installs_through_https_proxy", &["openssl"]) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (ca, cert, key) = local_ca(dir, "pypi.test");
    let packages = dir.join("packages");
    let args = [
        packages.to_str().unwrap(),
        cert.to_str().unwrap(),
        key.to_str().unwrap(),
    ];
    let (_pypi, port) = kit.server("pypi_tls.py", &args, dir);
    let ctl = Controller::start(&dir.join("data"), dir);
    let hosts = common::hosts_file(dir, &["pypi.test"]);
    let client = Proxy::start("client", ctl.grpc, common::NOWHERE, &hosts, dir);
    let target = dir.join("site");
    let index = format!("https://pypi.test:{port}/simple/");
    let mut cmd = pip_install(&kit, &index, &ca, &target);
    cmd.env("HTTPS_PROXY", format!("http://{}", client.outbound));
    succeed("pip install through HTTPS_PROXY", &mut cmd);
    assert_probe_installed(&kit, &target);
    let edge = ctl.wait_edge(
        "workload:default/client",
        &format!("external:pypi.test:{port}"),
        1,
    );
    assert!(common::has_protocol(&edge, "tls"), "{edge}");
}

/// Imports the installed probe from `target` and checks its answer.
fn assert_probe_installed(kit: &Kit, target: &Path) {
    let mut cmd = Command::new(&kit.python);
    cmd.args(["-c", "import vigil_probe; print(vigil_probe.ANSWER)"])
        .env("PYTHONPATH", target);
    assert_eq!(succeed("import vigil_probe", &mut cmd).trim(), "42");
}

/// nginx + fcgiwrap serving `git http-backend` (git's smart HTTP server) for
/// the repositories under `repos`; returns nginx, fcgiwrap and the port.
/// nginx runs as one process (`master_process off`): a worker of its own
/// would outlive the test when the test kills it.
fn git_server(dir: &Path, repos: &Path) -> (Proc, Proc, u16) {
    let exec_path = succeed("git --exec-path", Command::new("git").arg("--exec-path"));
    let backend = Path::new(exec_path.trim()).join("git-http-backend");
    let socket = dir.join("fcgiwrap.sock");
    let mut cmd = Command::new("fcgiwrap");
    cmd.arg("-s").arg(format!("unix:{}", socket.display()));
    let fcgiwrap = spawn_proc("fcgiwrap", cmd, dir);
    wait_for("fcgiwrap's socket", || socket.exists().then_some(()));
    let port = restartable_port();
    let nginx_dir = dir.join("nginx");
    std::fs::create_dir_all(&nginx_dir).unwrap();
    let d = nginx_dir.display();
    let user = if common::netns::is_root() {
        "user root;"
    } else {
        ""
    };
    let conf = format!(
        r#"daemon off;
{user}
master_process off;
error_log stderr;
pid {d}/nginx.pid;
events {{ worker_connections 64; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/body;
    fastcgi_temp_path {d}/fastcgi;
    proxy_temp_path {d}/proxy;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            fastcgi_pass unix:{socket};
            fastcgi_param SCRIPT_FILENAME {backend};
            fastcgi_param GIT_PROJECT_ROOT {repos};
            fastcgi_param GIT_HTTP_EXPORT_ALL "";
            fastcgi_param PATH_INFO $uri;
            fastcgi_param QUERY_STRING $query_string;
            fastcgi_param REQUEST_METHOD $request_method;
            fastcgi_param CONTENT_TYPE $content_type;
            fastcgi_param CONTENT_LENGTH $content_length;
            fastcgi_param REMOTE_ADDR $remote_addr;
            fastcgi_param SERVER_PROTOCOL $server_protocol;
            fastcgi_param HTTP_GIT_PROTOCOL $http_git_protocol;
            fastcgi_param HTTP_CONTENT_ENCODING $http_content_encoding;
        }}
    }}
}}
"#,
        socket = socket.display(),
        backend = backend.display(),
        repos = repos.display(),
    );
    let conf_path = nginx_dir.join("nginx.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let mut cmd = Command::new("nginx");
    cmd.arg("-p").arg(&nginx_dir).arg("-c").arg(&conf_path);
    let nginx = spawn_proc("nginx", cmd, dir);
    wait_for("nginx", || {
        assert!(!nginx.exited(), "nginx exited:\n{}", nginx.log());
        (curl(&[&format!("http://127.0.0.1:{port}/")]).0 != 0).then_some(())
    });
    (nginx, fcgiwrap, port)
}

/// `git clone` over smart HTTP (`git-upload-pack`) from `git http-backend`
/// behind nginx, inbound and through the client's sidecar as `http_proxy`.
#[test]
fn git_clones_over_smart_http() {
    let Some(_kit) = Kit::for_test("git_clones_over_smart_http", &["git", "nginx", "fcgiwrap"])
    else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let repos = dir.join("repos");
    let work = dir.join("work");
    std::fs::create_dir_all(&work).unwrap();
    let git = |cwd: &Path, args: &[&str]| {
        let mut cmd = Command::new("git");
        cmd.current_dir(cwd)
            .args([
                "-c",
                "user.name=Vigil",
                "-c",
                "user.email=vigil@example.test",
            ])
            .args(["-c", "init.defaultBranch=main", "-c", "protocol.version=2"])
            .args(args)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("HOME", dir)
            .env("GIT_TERMINAL_PROMPT", "0");
        no_proxy_settings(&mut cmd);
        cmd
    };
    succeed("git init", &mut git(&work, &["init", "-q"]));
    std::fs::write(work.join("notebook.py"), "print(1 + 1)\n").unwrap();
    succeed("git add", &mut git(&work, &["add", "."]));
    succeed("git commit", &mut git(&work, &["commit", "-qm", "first"]));
    std::fs::create_dir_all(&repos).unwrap();
    succeed(
        "git clone --bare",
        &mut git(dir, &["clone", "-q", "--bare", "work", "repos/lab.git"]),
    );
    let (_nginx, _fcgiwrap, port) = git_server(dir, &repos);
    let mesh = Mesh::start(dir, "git", port);
    for (n, (label, base, proxy)) in paths(&mesh, "git").into_iter().enumerate() {
        let into = format!("clone-{n}");
        let mut cmd = git(dir, &["clone", "-q", &format!("{base}/lab.git"), &into]);
        if let Some(proxy) = &proxy {
            cmd.env("http_proxy", proxy);
        }
        succeed(&format!("git clone ({label})"), &mut cmd);
        let file = std::fs::read_to_string(dir.join(&into).join("notebook.py")).unwrap();
        assert_eq!(file, "print(1 + 1)\n", "{label}");
    }
    mesh.wait_endpoint("internet", "git", "POST /lab.git/git-upload-pack");
    mesh.wait_endpoint(
        "workload:default/client",
        "git",
        "POST /lab.git/git-upload-pack",
    );
}

/// As root, in network namespaces: the pod's traffic is redirected to its
/// sidecar by `vigil-proxy init`, with no proxy settings at all. pip
/// installs from pypiserver over TLS (the sidecar names the stream by its
/// SNI), grpcio calls a server outside the pod over redirected HTTP/2, and a
/// client outside the pod runs cells on the pod's Jupyter Server, reached
/// through the redirected inbound side.
#[test]
fn pip_grpcio_and_jupyter_work_transparently() {
    let test = "pip_grpcio_and_jupyter_work_transparently";
    let Some(kit) = Kit::for_test(test, &["openssl"]) else {
        return;
    };
    if !common::netns::able(test) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    open_to_all(dir);
    let net = Network::new();
    let (pod, srv) = (&net.pod, &net.server);
    pod.hosts(&["10.66.0.2 pypi.test grpc.test"]);
    let (ca, cert, key) = local_ca(dir, "pypi.test");
    let packages = dir.join("packages");
    let mut cmd = srv.cmd(&kit.python);
    cmd.arg("-u")
        .arg(kit.scripts.join("pypi_tls.py"))
        .args([&packages, &cert, &key])
        .arg("10.66.0.2:8443");
    let pypi = spawn_proc("pypi_tls", cmd, dir);
    let mut cmd = srv.cmd(&kit.python);
    cmd.arg("-u")
        .arg(kit.scripts.join("grpc_server.py"))
        .arg("10.66.0.2:50051");
    let grpc = spawn_proc("grpc_server", cmd, dir);
    let notebook = jupyter_cmd(pod.cmd(&kit.python), &dir.join("pod"), "0.0.0.0", 8888);
    let notebook = spawn_proc("jupyter-server", notebook, dir);
    for server in [&pypi, &grpc] {
        wait_for("the servers outside the pod", || {
            assert!(!server.exited(), "a server exited:\n{}", server.log());
            server.log().contains("listening on").then_some(())
        });
    }

    let ctl = net.controller(dir);
    pod.init_redirect();
    let _sidecar = sidecar_for(pod, "notebook", ctl.grpc, dir);

    let target = dir.join("site");
    let cmd = pip_install(&kit, "https://pypi.test:8443/simple/", &ca, &target);
    let mut in_pod = pod.cmd(cmd.get_program());
    in_pod.args(cmd.get_args());
    for (var, value) in cmd.get_envs() {
        match value {
            Some(value) => in_pod.env(var, value),
            None => in_pod.env_remove(var),
        };
    }
    succeed("pip install, redirected", &mut in_pod);
    assert_probe_installed(&kit, &target);
    let edge = ctl.wait_edge("workload:default/notebook", "external:pypi.test:8443", 1);
    assert_eq!(edge["protocols"], serde_json::json!(["tls"]), "{edge}");

    let mut cmd = pod.cmd(&kit.python);
    cmd.arg("-u")
        .arg(kit.scripts.join("grpc_client.py"))
        .arg("grpc.test:50051");
    no_proxy_settings(&mut cmd);
    let out = succeed("grpc_client.py, redirected", &mut cmd);
    assert!(out.contains("ok big"), "{out}");
    let edge = ctl.wait_edge("workload:default/notebook", "external:grpc.test:50051", 1);
    assert!(common::has_protocol(&edge, "grpc"), "{edge}");
    let endpoints = edge["endpoints"].as_object().unwrap();
    assert!(
        endpoints.contains_key("POST /vigil.compat.Echo/Unary"),
        "{edge}"
    );

    wait_for("the pod's Jupyter Server", || {
        assert!(
            !notebook.exited(),
            "Jupyter Server exited:\n{}",
            notebook.log()
        );
        (pod.curl(&["http://127.0.0.1:8888/api"]).0 == 200).then_some(())
    });
    let check = jupyter_check(&kit, srv.cmd(&kit.python), "http://10.66.0.1:8888", None);
    let out = succeed("jupyter_check.py, redirected inbound", &mut { check });
    assert_jupyter_ok("redirected inbound", &out);
    let channels = "GET /api/kernels/{id}/channels";
    wait_endpoint(&ctl, "internet", "workload:default/notebook", channels);
}

/// Lets the pod's and server namespace's processes (root there too, but
/// the sidecar's uid reads its token copy from `dir/bin`) enter `dir`.
fn open_to_all(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
}
