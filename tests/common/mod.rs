//! Shared harness of the end-to-end tests: the real `vigil-controller`,
//! `vigil-proxy` and `vigilctl` binaries as processes on free loopback ports,
//! tiny real HTTP servers as workloads, and `curl` as the client.
//!
//! The binaries must be built first (`cargo build --workspace --bins --tests`,
//! which the README's test command does).

#![allow(dead_code)]

pub mod netns;

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

/// How long a readiness wait may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(20);
/// Report interval of test proxies, in milliseconds.
pub const REPORT_MS: &str = "100";

/// Path of a workspace binary, next to the test executable's directory.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first with `cargo build --workspace --bins`",
        path.display()
    );
    path
}

/// A loopback address where nothing listens: connections are refused.
///
/// Port 1 (tcpmux) is never served here, and unlike a port from `bind(0)`
/// no other test's controller can come to own it mid-test.
pub const NOWHERE: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 1);

/// A free loopback port outside the kernel's ephemeral range, for a process
/// that is killed and restarted on the same port.
///
/// A port from `bind(0)` comes from the ephemeral range, so once its owner
/// dies any other test's `bind(0)`, or any outgoing connection's local port,
/// may take it before the restart. Ports below the range are only ever taken
/// by an explicit bind, so a random one is safe to reuse.
pub fn restartable_port() -> u16 {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let base = 10_000u16.min(low / 2);
    let span = u64::from(low - base);
    let mut seed = u64::from(std::process::id())
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
    for _ in 0..1000 {
        // xorshift: cheap and good enough to spread parallel tests apart.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let port = base + (seed % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port below the ephemeral range {low}")
}

/// Polls `check` until it returns Some or the deadline passes.
pub fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A child process killed when dropped, with its log kept in a file.
pub struct Proc {
    child: Child,
    name: String,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &str, mut cmd: Command, log_dir: &Path) -> Self {
        let log = log_dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        cmd.stdout(file.try_clone().unwrap())
            .stderr(file)
            .env("VIGIL_LOG", "info,vigil_proxy=debug,vigil_controller=debug");
        // Never inherit the developer's VIGIL_* settings.
        for (key, _) in std::env::vars() {
            if key.starts_with("VIGIL_") && key != "VIGIL_LOG" {
                cmd.env_remove(key);
            }
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Self {
            child,
            name: name.to_owned(),
            log,
        }
    }

    /// Kills the process now (SIGKILL: a crash, not a clean stop).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops it with SIGTERM and waits.
    pub fn terminate(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and returns at once (see [`Proc::wait_exit`]).
    pub fn signal_term(&self) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -TERM {} failed", self.child.id());
    }

    /// Waits (up to [`DEADLINE`]) for the process to exit; returns its status.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let name = self.name.clone();
        wait_for(&format!("{name} to exit"), || {
            self.child.try_wait().expect("checking the process")
        })
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The address logged as `key=ip:port` (e.g. in a start line). Panics
    /// if the process has exited (it could not start).
    pub fn logged_addr(&self, key: &str) -> Option<SocketAddr> {
        let log = self.log();
        let needle = format!("{key}=");
        let found = log.lines().find_map(|line| {
            let rest = &line[line.find(&needle)? + needle.len()..];
            rest.split_whitespace().next()?.parse().ok()
        });
        if found.is_none() {
            assert!(
                !self.exited(),
                "{} exited before it started:\n{log}",
                self.name
            );
        }
        found
    }

    /// Whether the process has exited (a zombie not yet waited for).
    pub fn exited(&self) -> bool {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()));
        match stat {
            Ok(stat) => stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
            Err(_) => true,
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("----- log of {} -----\n{}", self.name, self.log());
        }
    }
}

/// Where the harness keeps the sidecar token: the controllers it starts
/// create it there (`--sidecar-token-file`), and the proxies it starts with
/// the same `log_dir` present it (`--controller-token-file`).
pub fn sidecar_token_file(log_dir: &Path) -> PathBuf {
    log_dir.join("sidecar.token")
}

/// Whether a graph edge (JSON) lists `protocol` among its protocols.
pub fn has_protocol(edge: &serde_json::Value, protocol: &str) -> bool {
    edge["protocols"]
        .as_array()
        .is_some_and(|ps| ps.iter().any(|p| p == protocol))
}

/// A running `vigil-controller`.
pub struct Controller {
    pub proc: Proc,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub data_dir: PathBuf,
}

impl Controller {
    /// Starts a controller on free ports with its data in `data_dir`.
    pub fn start(data_dir: &Path, log_dir: &Path) -> Self {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        Self::start_on(data_dir, log_dir, any, any)
    }

    /// Starts a controller on ports that stay free for a restart with
    /// [`Controller::start_on`] after it is killed. Two tests may pick the
    /// same random port at once: then the start is retried on others.
    pub fn start_restartable(data_dir: &Path, log_dir: &Path) -> Self {
        let mut last = String::new();
        for _ in 0..5 {
            let grpc = restartable_port();
            let http = loop {
                let port = restartable_port();
                if port != grpc {
                    break port;
                }
            };
            let loopback = |port| SocketAddr::from(([127, 0, 0, 1], port));
            let proc = Self::spawn_on(data_dir, log_dir, loopback(grpc), loopback(http));
            let started = wait_for("the controller to start or exit", || {
                if proc.log().contains("vigil-controller started") {
                    Some(true)
                } else {
                    proc.exited().then_some(false)
                }
            });
            if started {
                return Self::ready(proc, data_dir);
            }
            last = proc.log();
            assert!(
                last.contains("Address already in use"),
                "vigil-controller exited before it started:\n{last}"
            );
        }
        panic!("no free ports for a restartable controller:\n{last}")
    }

    /// Starts a controller on the given addresses.
    pub fn start_on(data_dir: &Path, log_dir: &Path, grpc: SocketAddr, http: SocketAddr) -> Self {
        Self::ready(Self::spawn_on(data_dir, log_dir, grpc, http), data_dir)
    }

    fn spawn_on(data_dir: &Path, log_dir: &Path, grpc: SocketAddr, http: SocketAddr) -> Proc {
        let mut cmd = Command::new(bin("vigil-controller"));
        cmd.arg("--grpc-addr").arg(grpc.to_string());
        cmd.arg("--http-addr").arg(http.to_string());
        cmd.arg("--data-dir").arg(data_dir);
        cmd.arg("--sidecar-token-file")
            .arg(sidecar_token_file(log_dir));
        Proc::spawn("vigil-controller", cmd, log_dir)
    }

    /// Waits until `proc` has started and answers `/healthz`.
    fn ready(proc: Proc, data_dir: &Path) -> Self {
        // Port 0 binds free ports: read the bound ones from the start line.
        let (grpc, http) = wait_for("the controller's start line", || {
            Some((
                proc.logged_addr("grpc_addr")?,
                proc.logged_addr("http_addr")?,
            ))
        });
        let ctl = Self {
            proc,
            grpc,
            http,
            data_dir: data_dir.to_owned(),
        };
        wait_for("the controller's /healthz", || {
            (curl(&[&format!("http://{http}/healthz")]).0 == 200).then_some(())
        });
        ctl
    }

    /// The admin token.
    pub fn token(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("admin.token"))
            .unwrap()
            .trim()
            .to_owned()
    }

    /// Runs `vigilctl` against this controller; returns (success, stdout, stderr).
    pub fn vigilctl(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(bin("vigilctl"))
            .arg("--controller")
            .arg(format!("http://{}", self.http))
            .arg("--token-file")
            .arg(self.data_dir.join("admin.token"))
            .args(args)
            .env_remove("VIGIL_TOKEN")
            .output()
            .expect("running vigilctl");
        text(out)
    }

    /// `vigilctl <what> --json`, parsed.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.push("--json");
        let (ok, out, err) = self.vigilctl(&all);
        assert!(ok, "vigilctl {args:?} failed: {err}");
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("vigilctl {args:?} printed bad JSON ({e}): {out}"))
    }

    /// Switches modes through vigilctl.
    pub fn set_mode(&self, args: &[&str]) {
        let mut all = vec!["mode"];
        all.extend_from_slice(args);
        let (ok, _, err) = self.vigilctl(&all);
        assert!(ok, "vigilctl mode {args:?} failed: {err}");
    }

    /// Waits until the graph has an edge `source -> target` with at least
    /// `requests` requests; returns the edge.
    pub fn wait_edge(&self, source: &str, target: &str, requests: u64) -> serde_json::Value {
        wait_for(
            &format!("edge {source} -> {target} with {requests} requests"),
            || {
                let graph = self.json(&["graph"]);
                graph["edges"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|e| {
                        e["source"] == source
                            && e["target"] == target
                            && e["requests"].as_u64().unwrap_or(0) >= requests
                    })
                    .cloned()
            },
        )
    }

    /// Waits until an alert matching `kind`, `workload` (and `destination`
    /// when given) exists; returns it.
    pub fn wait_alert(
        &self,
        kind: &str,
        workload: &str,
        destination: Option<&str>,
    ) -> serde_json::Value {
        wait_for(&format!("alert {kind} for {workload}"), || {
            let alerts = self.json(&["alerts"]);
            alerts
                .as_array()
                .unwrap()
                .iter()
                .find(|a| {
                    a["kind"] == kind
                        && a["workload"] == workload
                        && destination.is_none_or(|d| a["destination"] == d)
                })
                .cloned()
        })
    }
}

fn text(out: Output) -> (bool, String, String) {
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A running `vigil-proxy`.
pub struct Proxy {
    pub proc: Proc,
    pub outbound: SocketAddr,
    pub inbound: SocketAddr,
    pub admin: SocketAddr,
}

impl Proxy {
    /// Starts a sidecar for `workload` in namespace `default`.
    pub fn start(
        workload: &str,
        controller_grpc: SocketAddr,
        app: SocketAddr,
        hosts: &Path,
        log_dir: &Path,
    ) -> Self {
        Self::start_with(workload, controller_grpc, app, hosts, log_dir, &[])
    }

    /// [`Proxy::start`] with `extra_args` appended to the command line
    /// (e.g. `["--max-connections", "2"]`).
    pub fn start_with(
        workload: &str,
        controller_grpc: SocketAddr,
        app: SocketAddr,
        hosts: &Path,
        log_dir: &Path,
        extra_args: &[&str],
    ) -> Self {
        // Port 0 binds free ports (no race with other tests); the bound ones
        // are read back from the proxy's start line.
        let any = "127.0.0.1:0";
        let mut cmd = Command::new(bin("vigil-proxy"));
        cmd.args([
            "--workload",
            workload,
            "--namespace",
            "default",
            "--report-interval-ms",
            REPORT_MS,
        ]);
        cmd.arg("--controller")
            .arg(format!("http://{controller_grpc}"));
        cmd.arg("--controller-token-file")
            .arg(sidecar_token_file(log_dir));
        cmd.args([
            "--outbound-addr",
            any,
            "--inbound-addr",
            any,
            "--admin-addr",
            any,
            "--dns-addr",
            any,
            // No UDP is redirected on loopback: no relay (and no error that
            // it cannot open beside another test's).
            "--udp-addr",
            "off",
        ]);
        // The IPv6 twins are on their default, `auto`: [::1] on port 0 too.
        cmd.arg("--app-addr").arg(app.to_string());
        cmd.arg("--hosts-file").arg(hosts);
        cmd.args(extra_args);
        let proc = Proc::spawn(&format!("vigil-proxy-{workload}"), cmd, log_dir);
        let (outbound, inbound, admin) = wait_for(&format!("{workload}'s start line"), || {
            Some((
                proc.logged_addr("outbound_addr")?,
                proc.logged_addr("inbound_addr")?,
                proc.logged_addr("admin_addr")?,
            ))
        });
        wait_for(&format!("{workload}'s sidecar /ready"), || {
            (curl(&[&format!("http://{admin}/ready")]).0 == 200).then_some(())
        });
        Self {
            proc,
            outbound,
            inbound,
            admin,
        }
    }

    /// GET `url` through this proxy (as `curl -x`); returns (status, body).
    pub fn get(&self, url: &str) -> (u16, String) {
        self.get_with(&[], url)
    }

    /// [`Proxy::get`] with more curl arguments (`-X METHOD`, headers, ...).
    pub fn get_with(&self, args: &[&str], url: &str) -> (u16, String) {
        let proxy = format!("http://{}", self.outbound);
        let mut all = vec!["-x", proxy.as_str()];
        all.extend_from_slice(args);
        all.push(url);
        curl(&all)
    }

    /// Opens a CONNECT tunnel to `authority` through this proxy and returns
    /// the status of the CONNECT answer (curl's `%{http_connect}`).
    pub fn connect_status(&self, authority: &str) -> u16 {
        let out = Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_connect}",
                "--max-time",
                "5",
                "-p",
                "-x",
            ])
            .arg(format!("http://{}", self.outbound))
            .arg(format!("http://{authority}/"))
            .output()
            .expect("running curl");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0)
    }

    /// Waits until this sidecar's policy has `enforce` as given (from
    /// /config_dump), i.e. the controller's push arrived.
    pub fn wait_enforce(&self, enforce: bool) {
        wait_for(&format!("policy enforce={enforce} at the sidecar"), || {
            let (status, body) = curl(&[&format!("http://{}/config_dump", self.admin)]);
            let dump: serde_json::Value = serde_json::from_str(&body).ok()?;
            (status == 200 && dump["policy"]["enforce"] == enforce).then_some(())
        });
    }
}

/// Runs curl with `args`; returns (HTTP status, body). Status 0 when curl
/// could not connect.
pub fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "5", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl is installed");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", text.as_str()));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

/// A tiny real HTTP/1.1 and HTTP/2 (h2c) server answering `<name> <method> <path>` to every
/// request, on a thread with its own runtime.
pub struct Upstream {
    pub addr: SocketAddr,
}

impl Upstream {
    /// Starts one on a free port.
    pub fn start(name: &'static str) -> Self {
        Self {
            addr: spawn_server(move |stream| serve_connection(name, stream)),
        }
    }
}

/// Runs `handle` for each connection accepted on a free loopback port, on a
/// thread with its own runtime; returns the address.
pub fn spawn_server<H, F>(handle: H) -> SocketAddr
where
    H: Fn(tokio::net::TcpStream) -> F + Send + 'static,
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                if let Ok((stream, _)) = listener.accept().await {
                    tokio::spawn(handle(stream));
                }
            }
        });
    });
    addr
}

async fn serve(name: &'static str, listener: tokio::net::TcpListener) {
    loop {
        if let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve_connection(name, stream));
        }
    }
}

/// Answers `<name> <method> <path>` on one connection, in HTTP/1.1 or
/// HTTP/2 with prior knowledge (h2c), like a real app.
async fn serve_connection(name: &'static str, stream: tokio::net::TcpStream) {
    let svc = hyper::service::service_fn(
        move |req: hyper::Request<hyper::body::Incoming>| async move {
            let body = format!("{name} {} {}", req.method(), req.uri().path());
            Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Full::new(
                bytes::Bytes::from(body),
            )))
        },
    );
    let _ = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
        .await;
}

/// Writes a hosts file mapping each name to 127.0.0.1.
pub fn hosts_file(dir: &Path, names: &[&str]) -> PathBuf {
    let path = dir.join("hosts");
    let mut f = std::fs::File::create(&path).unwrap();
    for name in names {
        writeln!(f, "{name} 127.0.0.1").unwrap();
    }
    path
}

/// Starts `cmd` as a [`Proc`] named `name`, its output logged in `log_dir`
/// (for commands the helpers above do not cover, e.g. `ip netns exec ...`).
pub fn spawn_proc(name: &str, cmd: Command, log_dir: &Path) -> Proc {
    Proc::spawn(name, cmd, log_dir)
}

/// Serves [`Upstream`]'s answer (`<name> <method> <path>`) on `addr`
/// forever, on the calling thread (for helper processes).
pub fn serve_forever(name: &'static str, addr: SocketAddr) {
    let listener = std::net::TcpListener::bind(addr)
        .unwrap_or_else(|e| panic!("cannot listen on {addr}: {e}"));
    listener.set_nonblocking(true).unwrap();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async move {
            serve(name, tokio::net::TcpListener::from_std(listener).unwrap()).await;
        });
}

/// dnsmasq (Debian dnsmasq-base), run by `cmd` (`Command::new("dnsmasq")`,
/// or a network namespace's), listening on `listen`:53 and answering each
/// of `names` with `answer`, and nothing else (no upstream, no hosts file:
/// other names are refused); every query logged to its log in `log_dir`.
pub fn dnsmasq(
    mut cmd: Command,
    listen: &str,
    answer: &str,
    names: &[&str],
    log_dir: &Path,
) -> Proc {
    cmd.args([
        "--no-daemon",
        "--conf-file=/dev/null",
        "--bind-interfaces",
        "--no-resolv",
        "--no-hosts",
        "--log-queries",
        "--log-facility=-",
        "--user=root",
    ])
    .arg(format!("--listen-address={listen}"))
    .arg(format!(
        "--pid-file={}",
        log_dir.join(format!("dnsmasq-{listen}.pid")).display()
    ));
    for name in names {
        cmd.arg(format!("--address=/{name}/{answer}"));
    }
    Proc::spawn(&format!("dnsmasq-{listen}"), cmd, log_dir)
}
