//! End-to-end: threat intelligence and quarantine with the real binaries.
//! The controller loads a `--threat-feed` file (reloaded on SIGHUP, and on
//! change), `vigilctl threats check` reads it, and a sidecar refuses a
//! listed pool by HTTP Host, CONNECT authority, TLS SNI (also inside a
//! tunnel to a learned name) and DNS query, even though it learned it, and
//! cuts a tunnel already open to it. A quarantine (pushed by a fake
//! controller, since the command is the controller's) cuts a live tunnel and
//! refuses everything but the pod's health checks, across a sidecar restart
//! with the controller gone.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Controller, DEADLINE, Proxy, Upstream, bin, curl, spawn_proc, wait_for};

// ---------- the controller with a feed ----------

/// Starts `vigil-controller` with `--threat-feed feed` on free ports.
fn controller_with_feed(tmp: &Path, feed: &Path) -> Controller {
    let data_dir = tmp.join("data");
    let mut cmd = Command::new(bin("vigil-controller"));
    cmd.args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"]);
    cmd.arg("--data-dir").arg(&data_dir);
    cmd.arg("--sidecar-token-file")
        .arg(common::sidecar_token_file(tmp));
    cmd.arg("--threat-feed").arg(feed);
    let proc = spawn_proc("vigil-controller", cmd, tmp);
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
        data_dir,
    }
}

/// The pid of the controller using `data_dir` (read from /proc).
fn controller_pid(data_dir: &Path) -> u32 {
    let needle = data_dir.to_str().unwrap();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            args.first()
                .is_some_and(|a| a.ends_with(b"vigil-controller"))
                && args.contains(&needle.as_bytes())
        })
        .expect("the controller's process")
}

fn sighup(pid: u32) {
    let status = Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -HUP {pid}");
}

/// `vigilctl threats check <args>`: (exit code, stdout, stderr).
fn threats_check(ctl: &Controller, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin("vigilctl"))
        .arg("--controller")
        .arg(format!("http://{}", ctl.http))
        .arg("--token-file")
        .arg(ctl.data_dir.join("admin.token"))
        .args(["threats", "check"])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Rewrites `path` in place with `text` (the same length) and gives it back
/// its modification time: a change only SIGHUP can reveal.
fn rewrite_unseen(path: &Path, text: &str) {
    let before = std::fs::metadata(path).unwrap();
    assert_eq!(before.len(), text.len() as u64, "same length");
    let mut file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.write_all(text.as_bytes()).unwrap();
    file.set_modified(before.modified().unwrap()).unwrap();
}

/// Replaces `path` with `text` by a rename, as editors and ConfigMaps do.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The policy in force at a sidecar (its /config_dump).
fn sidecar_policy(proxy: &Proxy) -> Option<serde_json::Value> {
    let (status, body) = curl(&[&format!("http://{}/config_dump", proxy.admin)]);
    let dump: serde_json::Value = serde_json::from_str(&body).ok()?;
    (status == 200).then(|| dump["policy"].clone())
}

fn lists(policy: &serde_json::Value, entry: &str) -> bool {
    policy["denied_names"]
        .as_array()
        .is_some_and(|names| names.iter().any(|n| n == entry))
}

// ---------- TLS, tunnels and DNS ----------

/// A self-signed certificate for `names`, made with the openssl CLI.
fn certificate(dir: &Path, names: &[&str]) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("pool.pem"), dir.join("pool.key"));
    let san: Vec<String> = names.iter().map(|n| format!("DNS:{n}")).collect();
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .arg("-subj")
        .arg(format!("/CN={}", names[0]))
        .arg("-addext")
        .arg(format!("subjectAltName={}", san.join(",")))
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("the openssl CLI is installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

/// A rustls HTTPS server answering `pool over TLS` to one request a
/// connection.
fn tls_pool(cert: &Path, key: &Path) -> SocketAddr {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let certs = CertificateDer::pem_file_iter(cert)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(key).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    common::spawn_server(move |stream| {
        let acceptor = acceptor.clone();
        async move {
            let Ok(mut tls) = acceptor.accept(stream).await else {
                return;
            };
            let mut buf = [0u8; 4096];
            let _ = tls.read(&mut buf).await;
            let body = "pool over TLS";
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = tls.write_all(response.as_bytes()).await;
            let _ = tls.shutdown().await;
        }
    })
}

/// `curl -x proxy https://<name>:<port>/` trusting `cert`, the name
/// resolved to loopback; `connect_to` sends the CONNECT to another name
/// (the TLS name stays `name`). Returns (HTTP status, CONNECT status).
fn https(
    proxy: &Proxy,
    cert: &Path,
    name: &str,
    port: u16,
    connect_to: Option<&str>,
) -> (u16, u16) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-o", "/dev/null", "--max-time", "5"])
        .args(["-w", "%{http_code} %{http_connect}"])
        .arg("-x")
        .arg(format!("http://{}", proxy.outbound))
        .arg("--cacert")
        .arg(cert);
    if let Some(other) = connect_to {
        cmd.arg("--connect-to")
            .arg(format!("{name}:{port}:{other}:{port}"));
    }
    let out = cmd.arg(format!("https://{name}:{port}/")).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut codes = text.split_whitespace().map(|c| c.parse().unwrap_or(0));
    (codes.next().unwrap_or(0), codes.next().unwrap_or(0))
}

/// Opens a CONNECT tunnel to `target` through `proxy` and checks one HTTP
/// request goes through it; returns the open tunnel.
fn open_tunnel(proxy: SocketAddr, target: &str) -> TcpStream {
    let mut s = TcpStream::connect(proxy).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    write!(s, "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").unwrap();
    let head = read_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    write!(s, "GET /job HTTP/1.1\r\nHost: {target}\r\n\r\n").unwrap();
    let head = read_head(&mut s);
    assert!(
        head.starts_with("HTTP/1.1 200"),
        "through the tunnel: {head}"
    );
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length: ")
                .map(str::to_owned)
        })
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    s.read_exact(&mut body).unwrap();
    s
}

fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// Waits until the peer closes (or resets) `tunnel`; returns how long it took.
fn wait_cut(tunnel: &mut TcpStream, since: Instant) -> Duration {
    let mut buf = [0u8; 64];
    match tunnel.read(&mut buf) {
        Ok(0) | Err(_) if since.elapsed() < DEADLINE => since.elapsed(),
        other => panic!("the tunnel stayed open: {other:?}"),
    }
}

/// A DNS query for `name` (type A) to `server`; returns the RCODE.
fn dns_rcode(server: SocketAddr, id: u16, name: &str) -> u8 {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    socket.send_to(&q, server).unwrap();
    let mut buf = [0u8; 512];
    let n = socket.recv(&mut buf).expect("a DNS answer");
    assert!(n >= 12 && buf[..2] == q[..2], "an answer to the query");
    buf[3] & 0x0f
}

/// A resolver answering NXDOMAIN to every query (the pod's resolver).
fn nxdomain_resolver() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            if n < 12 {
                continue;
            }
            let mut answer = buf[..n].to_vec();
            answer[2] |= 0x80; // a response
            answer[3] = 0x80 | 3; // recursion available, NXDOMAIN
            let _ = socket.send_to(&answer, from);
        }
    });
    addr
}

fn dns_addr(proxy: &Proxy) -> SocketAddr {
    proxy
        .proc
        .logged_addr("dns_addr")
        .expect("the DNS listener")
}

const NXDOMAIN: u8 = 3;
const REFUSED: u8 = 5;

// ---------- the tests ----------

/// The miner story with the feed: learned in learning, refused once the
/// feed lists it (after a SIGHUP), by every name it goes by; a bad line
/// changes nothing; a fixed file takes the listing back.
#[test]
fn a_listed_pool_is_refused_however_it_is_named_even_when_learned() {
    let tmp = tempfile::tempdir().unwrap();
    let feed = tmp.path().join("pools.txt");
    let unlisted = "# pools we track\nnothing.example\n";
    let listed = format!(
        "# pools we track\n*.pool.test\n#{}\n",
        "-".repeat(unlisted.len() - "# pools we track\n*.pool.test\n#\n".len())
    );
    std::fs::write(&feed, unlisted).unwrap();
    let ctl = controller_with_feed(tmp.path(), &feed);
    let feed_name = feed.display().to_string();

    // vigilctl: listed (0), not listed (1), cannot tell (2).
    let (code, out, err) = threats_check(&ctl, &["xmr.pool.test"]);
    assert_eq!(
        (code, out.as_str()),
        (1, "xmr.pool.test: not listed\n"),
        "{err}"
    );
    let (code, out, _) = threats_check(&ctl, &["XMR-EU1.nanopool.org.", "--json"]);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(code, 0);
    assert_eq!(json["listed"], true, "{json}");
    assert_eq!(
        (&json["feed"], &json["entry"]),
        (&"builtin".into(), &"*.nanopool.org".into())
    );
    let (code, _, err) = threats_check(&ctl, &["not a name"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not a host name"), "{err}");

    // A pool on odd ports, plain and TLS, and a CDN name on the TLS one.
    let pool = Upstream::start("pool");
    let (cert, key) = certificate(tmp.path(), &["xmr.pool.test", "cdn.test"]);
    let tls = tls_pool(&cert, &key).port();
    let resolver = nxdomain_resolver();
    let hosts = common::hosts_file(tmp.path(), &["xmr.pool.test", "cdn.test"]);
    let app = Upstream::start("notebook");
    let nb = Proxy::start_with(
        "notebook",
        ctl.grpc,
        app.addr,
        &hosts,
        tmp.path(),
        &["--dns-upstream", &resolver.to_string()],
    );
    let http_url = format!("http://xmr.pool.test:{}/", pool.addr.port());
    let connect_to = format!("xmr.pool.test:{}", pool.addr.port());

    // Learning: it all passes and is learned.
    assert_eq!(nb.get(&http_url).0, 200);
    assert_eq!(nb.connect_status(&connect_to), 200);
    assert_eq!(https(&nb, &cert, "xmr.pool.test", tls, None), (200, 200));
    assert_eq!(https(&nb, &cert, "cdn.test", tls, None), (200, 200));
    assert_eq!(dns_rcode(dns_addr(&nb), 1, "xmr.pool.test"), NXDOMAIN);
    for target in [
        format!("external:xmr.pool.test:{}", pool.addr.port()),
        format!("external:xmr.pool.test:{tls}"),
        format!("external:cdn.test:{tls}"),
    ] {
        let edge = ctl.wait_edge("workload:default/notebook", &target, 1);
        assert_eq!(edge["in_baseline"], true, "{edge}");
    }
    ctl.set_mode(&["enforcement"]);
    nb.wait_enforce(true);
    assert_eq!(nb.get(&http_url).0, 200, "learned, not listed");
    assert_eq!(dns_rcode(dns_addr(&nb), 2, "xmr.pool.test"), NXDOMAIN);
    let mut tunnel = open_tunnel(nb.outbound, &connect_to);

    // The feed lists it; only a SIGHUP can tell (same length and mtime).
    rewrite_unseen(&feed, &listed);
    let hup = Instant::now();
    sighup(controller_pid(&ctl.data_dir));
    let cut = wait_cut(&mut tunnel, hup);
    eprintln!("SIGHUP to the open tunnel to the pool cut: {cut:?}");
    let policy = wait_for("the listed names at the sidecar", || {
        sidecar_policy(&nb).filter(|p| lists(p, "*.pool.test"))
    });
    assert_eq!(policy["enforce_threats"], true, "{policy}");

    // Refused by Host, CONNECT authority, SNI, SNI inside a tunnel to a
    // learned name, and DNS; the CDN name itself still passes.
    let (status, body) = nb.get(&http_url);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("threat-listed destination"), "{body}");
    assert_eq!(nb.connect_status(&connect_to), 403);
    assert_eq!(https(&nb, &cert, "xmr.pool.test", tls, None).1, 403);
    assert_eq!(
        https(&nb, &cert, "xmr.pool.test", tls, Some("cdn.test")),
        (0, 200),
        "the tunnel to the learned name is cut once it names the pool"
    );
    assert_eq!(https(&nb, &cert, "cdn.test", tls, None), (200, 200));
    assert_eq!(dns_rcode(dns_addr(&nb), 3, "xmr.pool.test"), REFUSED);
    assert_eq!(dns_rcode(dns_addr(&nb), 4, "Deep.XMR.Pool.Test"), REFUSED);

    // The controller raises a threat alert for each name it went by: high
    // severity, blocked, the feed and entry that list it, one sentence.
    // (A request that passed before the list reached the sidecar may be
    // judged first, as flagged: wait for the refusals to be reported.)
    let alert = wait_for("the threat alert of the refused requests", || {
        let alerts = ctl.json(&["alerts", "--kind", "threat"]);
        alerts
            .as_array()?
            .iter()
            .find(|a| a["destination"] == connect_to.as_str() && a["action"] == "blocked")
            .cloned()
    });
    assert_eq!(alert["severity"], "high", "{alert}");
    assert_eq!(
        alert["evidence"]["listed"],
        format!("{feed_name}: *.pool.test"),
        "{alert}"
    );
    let sentence = alert["explanation"].as_str().unwrap();
    assert!(
        sentence.starts_with(&format!(
            "default/notebook connected to {connect_to}, a listed mining pool"
        )),
        "{sentence}"
    );
    ctl.wait_alert("threat", "notebook", Some(&format!("xmr.pool.test:{tls}")));
    let dns = ctl.wait_alert("threat", "notebook", Some("deep.xmr.pool.test"));
    assert!(
        dns["evidence"]["protocols"]
            .as_array()
            .unwrap()
            .contains(&"dns".into()),
        "{dns}"
    );
    let (ok, table, _) = ctl.vigilctl(&["alerts", "--kind", "threat"]);
    assert!(
        ok && table.lines().skip(1).all(|l| l.contains("threat")),
        "{table}"
    );
    let (code, out, _) = threats_check(&ctl, &["xmr.pool.test:3333"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        out,
        format!("xmr.pool.test:3333: listed by {feed_name} (entry *.pool.test)\n")
    );

    // A bad line is named in the log, and nothing changes.
    replace(&feed, "*.pool.test\nbad..name\n");
    wait_for("the bad line in the controller's log", || {
        let log = ctl.proc.log();
        log.contains(&format!("threat feed {feed_name}, line 2"))
            .then_some(())
    });
    assert_eq!(nb.get(&http_url).0, 403, "still refused");
    assert_eq!(threats_check(&ctl, &["xmr.pool.test"]).0, 0, "still listed");

    // Fixed without the pool (noticed without a signal): it passes again.
    replace(&feed, "other.pool.test\n");
    wait_for("the listing taken back at the sidecar", || {
        sidecar_policy(&nb).filter(|p| lists(p, "other.pool.test") && !lists(p, "*.pool.test"))
    });
    assert_eq!(nb.get(&http_url).0, 200, "learned and no longer listed");
    assert_eq!(threats_check(&ctl, &["xmr.pool.test"]).0, 1);
}

/// A feed with a bad line stops the controller at start, naming the line.
#[test]
fn a_bad_feed_at_start_names_its_line() {
    let tmp = tempfile::tempdir().unwrap();
    let feed = tmp.path().join("pools.txt");
    std::fs::write(&feed, "# ok so far\npool.example\n*.com\n").unwrap();
    let mut cmd = Command::new(bin("vigil-controller"));
    cmd.args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"]);
    cmd.arg("--data-dir").arg(tmp.path().join("data"));
    cmd.arg("--threat-feed").arg(&feed);
    let mut proc = spawn_proc("vigil-controller", cmd, tmp.path());
    assert!(!proc.wait_exit().success());
    let log = proc.log();
    assert!(
        log.contains(&format!("threat feed {}, line 3:", feed.display())),
        "{log}"
    );
    assert!(log.contains("top-level domain"), "{log}");
}

// ---------- quarantine, pushed by a fake controller ----------

mod fake {
    //! A controller that streams whatever policy the test sets, and
    //! acknowledges reports: the quarantine command is the controller's;
    //! this checks what the sidecar does with the flag.

    use std::net::SocketAddr;

    use tokio::sync::{mpsc, watch};
    use tokio_stream::wrappers::ReceiverStream;
    use tonic::{Request, Response, Status, Streaming};
    use vigil_proto::v1;
    use vigil_proto::v1::controller_server::{Controller, ControllerServer};

    struct Fake {
        policy: watch::Receiver<v1::Policy>,
    }

    #[tonic::async_trait]
    impl Controller for Fake {
        type RegisterStream = ReceiverStream<Result<v1::Policy, Status>>;
        type ReportStream = ReceiverStream<Result<v1::ReportAck, Status>>;

        async fn register(
            &self,
            _: Request<v1::Registration>,
        ) -> Result<Response<Self::RegisterStream>, Status> {
            let (tx, rx) = mpsc::channel(4);
            let mut policy = self.policy.clone();
            tokio::spawn(async move {
                loop {
                    let current = policy.borrow_and_update().clone();
                    if tx.send(Ok(current)).await.is_err() || policy.changed().await.is_err() {
                        return;
                    }
                }
            });
            Ok(Response::new(ReceiverStream::new(rx)))
        }

        async fn report(
            &self,
            req: Request<Streaming<v1::ReportBatch>>,
        ) -> Result<Response<Self::ReportStream>, Status> {
            let mut batches = req.into_inner();
            let (tx, rx) = mpsc::channel(16);
            tokio::spawn(async move {
                while let Ok(Some(batch)) = batches.message().await {
                    if tx.send(Ok(v1::ReportAck { seq: batch.seq })).await.is_err() {
                        return;
                    }
                }
            });
            Ok(Response::new(ReceiverStream::new(rx)))
        }
    }

    /// A running fake controller; stopped (its port closed) when dropped.
    pub struct FakeController {
        pub addr: SocketAddr,
        pub policy: watch::Sender<v1::Policy>,
        stop: Option<std::sync::mpsc::Sender<()>>,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    impl FakeController {
        pub fn start(first: v1::Policy) -> Self {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.set_nonblocking(true).unwrap();
            let addr = listener.local_addr().unwrap();
            let (policy, rx) = watch::channel(first);
            let (stop, stopped) = std::sync::mpsc::channel::<()>();
            let thread = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                    let incoming = tonic::transport::server::TcpIncoming::from(listener);
                    let serve = tonic::transport::Server::builder()
                        .add_service(ControllerServer::new(Fake { policy: rx }))
                        .serve_with_incoming(incoming);
                    let stopped = tokio::task::spawn_blocking(move || stopped.recv());
                    tokio::select! {
                        _ = serve => {}
                        _ = stopped => {}
                    }
                });
                // Dropping the runtime closes the port and every stream.
                rt.shutdown_background();
            });
            FakeController {
                addr,
                policy,
                stop: Some(stop),
                thread: Some(thread),
            }
        }
    }

    impl Drop for FakeController {
        fn drop(&mut self) {
            drop(self.stop.take());
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

/// A quarantine cuts an open tunnel at once and refuses every request and
/// DNS query, both ways, but the pod's health checks (`--health-path`) and
/// the sidecar's own /live and /ready; a sidecar restarted while the
/// controller is gone stays quarantined (`--policy-cache`).
#[test]
fn a_quarantine_refuses_all_but_health_checks_and_survives_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(common::sidecar_token_file(tmp.path()), "any\n").unwrap();
    let pypi = Upstream::start("pypi");
    let app = Upstream::start("notebook");
    let resolver = nxdomain_resolver();
    let hosts = common::hosts_file(tmp.path(), &["pypi.test"]);
    let pypi_authority = format!("pypi.test:{}", pypi.addr.port());
    let mut policy = vigil_proto::v1::Policy {
        version: 1,
        enforce: true,
        mode: "enforcement".into(),
        allowed_authorities: vec![pypi_authority.clone(), "pypi.test".into()],
        allowed_sources: vec!["internet".into()],
        ..Default::default()
    };
    let ctl = fake::FakeController::start(policy.clone());
    let cache = tmp.path().join("policy.json");
    let cache_arg = cache.to_str().unwrap().to_owned();
    let resolver_arg = resolver.to_string();
    let args = [
        "--health-path",
        "/healthz,/ready-app",
        "--policy-cache",
        &cache_arg,
        "--dns-upstream",
        &resolver_arg,
    ];
    let mut nb = Proxy::start_with("notebook", ctl.addr, app.addr, &hosts, tmp.path(), &args);
    nb.wait_enforce(true);
    let pypi_url = format!("http://{pypi_authority}/simple/");
    let inbound = |path: &str| curl(&[&format!("http://{}{path}", nb.inbound)]);
    assert_eq!(nb.get(&pypi_url).0, 200);
    assert_eq!(inbound("/api/contents").0, 200);
    assert_eq!(dns_rcode(dns_addr(&nb), 1, "pypi.test"), NXDOMAIN);
    let mut tunnel = open_tunnel(nb.outbound, &pypi_authority);

    policy.version = 2;
    policy.quarantined = true;
    let pushed = Instant::now();
    ctl.policy.send(policy).unwrap();
    let cut = wait_cut(&mut tunnel, pushed);
    eprintln!("quarantine pushed to the open tunnel cut: {cut:?}");
    wait_for("the quarantine at the sidecar", || {
        sidecar_policy(&nb).filter(|p| p["quarantined"] == true)
    });

    let check = |nb: &Proxy| {
        let (status, body) = nb.get(&pypi_url);
        assert_eq!(status, 403, "{body}");
        assert!(body.contains("workload quarantined"), "{body}");
        assert_eq!(nb.connect_status(&pypi_authority), 403);
        let inbound = |path: &str| curl(&[&format!("http://{}{path}", nb.inbound)]);
        let (status, body) = inbound("/api/contents");
        assert_eq!(status, 403, "{body}");
        assert!(body.contains("workload quarantined"), "{body}");
        assert_eq!(inbound("/healthz"), (200, "notebook GET /healthz".into()));
        assert_eq!(inbound("/ready-app?probe=1").0, 200, "the query aside");
        for (path, why) in [
            ("/healthz/", "another path"),
            ("/healthz/../api/contents", "a path through it"),
            ("/HEALTHZ", "another case"),
        ] {
            assert_eq!(
                curl(&["--path-as-is", &format!("http://{}{path}", nb.inbound)]).0,
                403,
                "{why}"
            );
        }
        let upgrade = curl(&[
            "-H",
            "Connection: Upgrade",
            "-H",
            "Upgrade: websocket",
            &format!("http://{}/healthz", nb.inbound),
        ]);
        assert_eq!(
            upgrade.0, 403,
            "no stream into the workload by the health path"
        );
        for path in ["/live", "/ready"] {
            assert_eq!(
                curl(&[&format!("http://{}{path}", nb.admin)]).0,
                200,
                "{path}"
            );
        }
        assert_eq!(dns_rcode(dns_addr(nb), 2, "pypi.test"), REFUSED);
    };
    check(&nb);

    // The controller goes away, then the sidecar restarts: the cache holds.
    drop(ctl);
    nb.proc.kill();
    let nb = Proxy::start_with(
        "notebook",
        "127.0.0.1:1".parse().unwrap(),
        app.addr,
        &hosts,
        tmp.path(),
        &args,
    );
    let policy = sidecar_policy(&nb).expect("the cached policy");
    assert_eq!(policy["quarantined"], true, "{policy}");
    check(&nb);
}
