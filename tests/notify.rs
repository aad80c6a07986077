//! End-to-end: notifications from the real controller to a real HTTP
//! receiver on loopback (hyper), for alerts a real sidecar reports. The
//! receiver answers 500 to a sink's first delivery and 200 after: the
//! delivery is retried, the webhook's signature verifies with the shared
//! key (checked with `openssl`, as the README tells receivers to), repeats
//! within the window are one follow-up with the count, the tenant is in
//! every message, and `vigilctl status` shows the failure. A flood of minor
//! alerts does not hold back a threat alert behind the rate limit.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Controller, Proxy, Upstream, bin, curl, hosts_file, spawn_proc};
use serde_json::Value;

/// The key the controller and the receiver share.
const SECRET: &str = "a-shared-secret-for-the-test";
/// The de-duplication window of the first test.
const WINDOW: Duration = Duration::from_secs(8);
/// How long to wait for what the notifier sends at a window's end or at
/// the next rate-limit token.
const LONG_DEADLINE: Duration = Duration::from_secs(60);

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Delivery {
    path: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
    /// What the receiver answered.
    status: u16,
    at: Instant,
}

impl Delivery {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{} got a body that is not JSON ({e}): {:?}",
                self.path,
                self.text()
            )
        })
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", String::as_str)
    }
}

/// A real HTTP receiver: records every POST and answers 500 to the first
/// `fail_first` requests of each path, 200 after.
#[derive(Clone)]
struct Receiver {
    addr: SocketAddr,
    log: Arc<Mutex<Vec<Delivery>>>,
}

impl Receiver {
    fn start(fail_first: usize) -> Self {
        Self::start_with(fail_first, None)
    }

    /// With `tls`, the receiver speaks HTTPS; `handshakes` counts the
    /// TLS handshakes tried (ended or not).
    fn start_with(
        fail_first: usize,
        tls: Option<(tokio_rustls::TlsAcceptor, Arc<Mutex<u32>>)>,
    ) -> Self {
        let log: Arc<Mutex<Vec<Delivery>>> = Arc::default();
        let shared = log.clone();
        let addr = common::spawn_server(move |stream| {
            let log = shared.clone();
            let tls = tls.clone();
            async move {
                match tls {
                    None => serve(hyper_util::rt::TokioIo::new(stream), log, fail_first).await,
                    Some((acceptor, handshakes)) => {
                        *handshakes.lock().unwrap() += 1;
                        if let Ok(stream) = acceptor.accept(stream).await {
                            serve(hyper_util::rt::TokioIo::new(stream), log, fail_first).await;
                        }
                    }
                }
            }
        });
        Self { addr, log }
    }

    /// What `path` received so far.
    fn at(&self, path: &str) -> Vec<Delivery> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|d| d.path == path)
            .cloned()
            .collect()
    }

    /// Waits until `check` finds what it wants in `path`'s deliveries.
    fn wait<T>(&self, path: &str, what: &str, check: impl Fn(&[Delivery]) -> Option<T>) -> T {
        let start = Instant::now();
        loop {
            let got = self.at(path);
            if let Some(v) = check(&got) {
                return v;
            }
            assert!(
                start.elapsed() < LONG_DEADLINE,
                "timed out waiting for {what} at {path}; got:\n{}",
                got.iter()
                    .map(|d| format!("{} {}", d.status, d.text()))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Serves HTTP/1.1 on one connection: records each request and answers
/// 500 to the first `fail_first` of its path, 200 after.
async fn serve<I>(io: I, log: Arc<Mutex<Vec<Delivery>>>, fail_first: usize)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let log = log.clone();
        async move {
            use http_body_util::BodyExt;
            let path = req.uri().path().to_owned();
            let headers = req
                .headers()
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
                .collect();
            let body = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes().to_vec())
                .unwrap_or_default();
            let mut log = log.lock().unwrap();
            let before = log.iter().filter(|d| d.path == path).count();
            let status = if before < fail_first { 500 } else { 200 };
            log.push(Delivery {
                path,
                headers,
                body,
                status,
                at: Instant::now(),
            });
            let mut response =
                hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from_static(b"ok")));
            *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(io, svc)
        .await;
}

/// Writes `text` to `path` with mode 0600 (a secret).
fn secret_file(path: &Path, text: &str) -> PathBuf {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    writeln!(file, "{text}").unwrap();
    path.to_owned()
}

/// Starts `vigil-controller` on free ports with `extra` flags.
fn controller_with(tmp: &Path, extra: &[&str]) -> Controller {
    let data_dir = tmp.join("data");
    let mut cmd = Command::new(bin("vigil-controller"));
    cmd.args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"]);
    cmd.arg("--data-dir").arg(&data_dir);
    cmd.arg("--sidecar-token-file")
        .arg(common::sidecar_token_file(tmp));
    cmd.args(extra);
    let proc = spawn_proc("vigil-controller", cmd, tmp);
    let (grpc, http) = common::wait_for("the controller's start line", || {
        Some((
            proc.logged_addr("grpc_addr")?,
            proc.logged_addr("http_addr")?,
        ))
    });
    common::wait_for("the controller's /healthz", || {
        (curl(&[&format!("http://{http}/healthz")]).0 == 200).then_some(())
    });
    Controller {
        proc,
        grpc,
        http,
        data_dir,
    }
}

/// Verifies `X-Vigil-Signature` as a receiver would: `openssl dgst` over
/// `<X-Vigil-Timestamp>.<raw body>` with the shared key.
fn signature_ok(d: &Delivery, key: &str) -> bool {
    let timestamp = d.header("x-vigil-timestamp");
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-hmac", key])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("openssl is installed");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(timestamp.as_bytes()).unwrap();
    stdin.write_all(b".").unwrap();
    stdin.write_all(&d.body).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "openssl dgst failed");
    let text = String::from_utf8_lossy(&out.stdout);
    let hex = text.trim().rsplit(' ').next().unwrap_or_default();
    d.header("x-vigil-signature") == format!("sha256={hex}")
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The alert with `id` as `vigilctl alerts --json` shows it.
fn alert_by_id(ctl: &Controller, id: &str) -> Value {
    let alerts = ctl.json(&["alerts"]);
    alerts
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == id)
        .cloned()
        .unwrap_or(Value::Null)
}

#[test]
fn slack_and_webhook_are_retried_signed_deduplicated_and_name_the_tenant() {
    let tmp = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(1);
    let key_file = secret_file(&tmp.path().join("hook.secret"), SECRET);
    let slack_path = "/services/T0001/B0002/slack-url-secret";
    let slack_file = secret_file(
        &tmp.path().join("slack.url"),
        &format!("http://{}{slack_path}", receiver.addr),
    );
    let webhook = format!("http://{}/hook", receiver.addr);
    let window = format!("{}s", WINDOW.as_secs());
    let ctl = controller_with(
        tmp.path(),
        &[
            "--notify-webhook",
            &webhook,
            "--notify-webhook-secret-file",
            key_file.to_str().unwrap(),
            "--notify-slack-url-file",
            slack_file.to_str().unwrap(),
            "--notify-window",
            &window,
        ],
    );
    let pypi = Upstream::start("pypi");
    let pool = Upstream::start("pool");
    let app = Upstream::start("web");
    let hosts = hosts_file(tmp.path(), &["pypi.test", "pool.test"]);
    let web = Proxy::start_with(
        "web",
        ctl.grpc,
        app.addr,
        &hosts,
        tmp.path(),
        &["--tenant", "alice"],
    );
    let pypi_url = format!("http://pypi.test:{}/simple/", pypi.addr.port());
    let pool_url = format!("http://pool.test:{}/", pool.addr.port());
    assert_eq!(web.get(&pypi_url).0, 200);
    ctl.wait_edge(
        "workload:default/web",
        &format!("external:pypi.test:{}", pypi.addr.port()),
        1,
    );
    ctl.set_mode(&["enforcement"]);
    web.wait_enforce(true);

    // The notebook reaches for a pool: blocked, alerted, notified.
    assert_eq!(web.get(&pool_url).0, 403);
    let alert = ctl.wait_alert(
        "unknown_egress",
        "web",
        Some(&format!("pool.test:{}", pool.addr.port())),
    );
    let id = alert["id"].as_str().unwrap().to_owned();
    assert_eq!(alert["tenant"], "alice", "{alert}");

    // Webhook: 500, then the retry gets 200; the same message, signed.
    let first = receiver.wait("/hook", "the retried delivery", |got| {
        (got.len() >= 2).then(|| got[..2].to_vec())
    });
    assert_eq!((first[0].status, first[1].status), (500, 200));
    assert_eq!(
        first[0].body, first[1].body,
        "the retry carries the same message"
    );
    assert_eq!(
        first[0].header("x-vigil-delivery"),
        first[1].header("x-vigil-delivery"),
        "one delivery id across retries"
    );
    assert!(first[0].header("x-vigil-delivery").starts_with(&id));
    for d in &first {
        assert!(
            signature_ok(d, SECRET),
            "the signature verifies: {:?}",
            d.headers
        );
        assert!(
            !signature_ok(d, "another key"),
            "and only with the shared key"
        );
        let mut tampered = d.clone();
        tampered.body = d.text().replace("alice", "bob__").into_bytes();
        assert!(
            !signature_ok(&tampered, SECRET),
            "a changed body does not verify"
        );
        let ts: u64 = d.header("x-vigil-timestamp").parse().expect("a Unix time");
        assert!(unix_now().abs_diff(ts) < 300, "a fresh timestamp: {ts}");
        assert_eq!(d.header("content-type"), "application/json");
    }
    let body = first[1].json();
    assert_eq!(body["event"], "alert", "{body}");
    assert_eq!(body["id"], id.as_str());
    assert_eq!(body["tenant"], "alice", "the account to block: {body}");
    assert_eq!(body["kind"], "unknown_egress");
    assert_eq!(body["severity"], "medium");
    assert_eq!(body["occurrences"], body["count"], "{body}");
    assert!(
        body["explanation"].as_str().unwrap().contains("pool.test"),
        "{body}"
    );

    // Slack: the same story in Slack's format, also retried.
    let slack = receiver.wait(slack_path, "the retried Slack message", |got| {
        (got.len() >= 2).then(|| got[..2].to_vec())
    });
    assert_eq!((slack[0].status, slack[1].status), (500, 200));
    let message = slack[1].json();
    let text = message["text"].as_str().unwrap_or_default();
    assert!(
        text.contains("tenant alice") && text.contains("[medium]"),
        "{message}"
    );
    let blocks = message["blocks"].to_string();
    for want in [id.as_str(), "alice", "default/web", "pool.test"] {
        assert!(blocks.contains(want), "{want} in {blocks}");
    }
    assert!(
        slack[1].header("x-vigil-signature").is_empty(),
        "Slack gets no signature header"
    );

    // The miner keeps trying within the window: no message per attempt,
    // one follow-up at the window's end with how many more.
    for _ in 0..3 {
        assert_eq!(web.get(&pool_url).0, 403);
    }
    let count = common::wait_for("the alert's count to reach 4", || {
        let a = alert_by_id(&ctl, &id);
        (a["count"].as_u64()? >= 4).then(|| a["count"].as_u64().unwrap())
    });
    let repeat = receiver.wait("/hook", "the follow-up", |got| {
        got.iter().find(|d| d.json()["event"] == "repeat").cloned()
    });
    let body = repeat.json();
    assert_eq!(body["id"], id.as_str());
    assert_eq!(body["count"], count, "{body}");
    assert_eq!(
        body["occurrences"],
        count - 1,
        "the repeats it folds: {body}"
    );
    assert_eq!(body["tenant"], "alice");
    assert!(signature_ok(&repeat, SECRET));
    assert!(
        repeat.at.duration_since(first[0].at) >= WINDOW - Duration::from_secs(1),
        "held until the window's end: {:?}",
        repeat.at.duration_since(first[0].at)
    );
    let hooks = receiver.at("/hook");
    assert_eq!(hooks.len(), 3, "500, its retry, one follow-up: {hooks:?}");
    let slack_repeat = receiver.wait(slack_path, "Slack's follow-up", |got| got.get(2).cloned());
    let text = slack_repeat.json()["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        text.contains(&format!("{} more", count - 1)) && text.contains("tenant alice"),
        "{text}"
    );

    // The operator sees the failure.
    let (ok, status, err) = ctl.vigilctl(&["status"]);
    assert!(ok, "{err}");
    for sink in ["slack", "webhook"] {
        let line = status
            .lines()
            .find(|l| l.contains(&format!("{sink}: ")))
            .unwrap_or_else(|| panic!("a {sink} line in:\n{status}"));
        assert!(
            line.contains("2 sent, 1 failed, 1 retried, 0 dropped")
                && line.contains("the receiver answered HTTP 500"),
            "{line}"
        );
    }
    let json = ctl.json(&["status"]);
    let hook = &json["notifications"]["sinks"]["webhook"];
    assert_eq!(
        (hook["sent"].as_u64(), hook["failed"].as_u64()),
        (Some(2), Some(1)),
        "{json}"
    );
    assert!(
        hook["last_error_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{json}"
    );
    assert!(hook["deduplicated"].as_u64().unwrap_or(0) >= 1, "{json}");
    let (code, metrics) = curl(&[&format!("http://{}/metrics", ctl.http)]);
    assert_eq!(code, 200);
    for series in [
        r#"vigil_controller_notifications_total{sink="webhook",result="failed"} 1"#,
        r#"vigil_controller_notifications_total{sink="webhook",result="retried"} 1"#,
        r#"vigil_controller_notifications_total{sink="webhook",result="sent"} 2"#,
        r#"vigil_controller_notifications_total{sink="slack",result="failed"} 1"#,
        r#"vigil_controller_notifications_total{sink="slack",result="sent"} 2"#,
    ] {
        assert!(metrics.contains(series), "{series} in:\n{metrics}");
    }
    // The Slack URL is a secret: not in the log, nor in the status.
    let log = ctl.proc.log();
    assert!(log.contains("notifications on"), "{log}");
    assert!(
        !log.contains("slack-url-secret") && !log.contains(SECRET),
        "{log}"
    );
    assert!(!status.contains("slack-url-secret"), "{status}");
}

#[test]
fn a_flood_of_minor_alerts_does_not_hold_back_a_threat_alert() {
    let tmp = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(0);
    let feed = tmp.path().join("feed.txt");
    std::fs::write(&feed, "*.pool.test\n").unwrap();
    let webhook = format!("http://{}/hook", receiver.addr);
    // Two messages a minute: a burst of two, then one every 30 s.
    let ctl = controller_with(
        tmp.path(),
        &[
            "--notify-webhook",
            &webhook,
            "--notify-rate-limit",
            "2",
            "--threat-feed",
            feed.to_str().unwrap(),
            "--no-builtin-threats",
        ],
    );
    let key = std::fs::read_to_string(ctl.data_dir.join("notify-webhook.secret"))
        .expect("the signing key is created in the data directory");
    let key = key.trim();
    ctl.set_mode(&["enforcement"]);
    let targets = Upstream::start("target");
    let port = targets.addr.port();
    let names: Vec<String> = (0..6).map(|n| format!("decoy{n}.test")).collect();
    let mut all: Vec<&str> = names.iter().map(String::as_str).collect();
    all.push("xmr.pool.test");
    let hosts = hosts_file(tmp.path(), &all);
    let app = Upstream::start("miner");
    let miner = Proxy::start_with(
        "miner",
        ctl.grpc,
        app.addr,
        &hosts,
        tmp.path(),
        &["--tenant", "mallory"],
    );
    miner.wait_enforce(true);
    // A flood of medium alerts (the new workload, new destinations) uses
    // the burst and queues behind the limit...
    for name in &names {
        assert_eq!(miner.get(&format!("http://{name}:{port}/")).0, 403);
    }
    for name in &names {
        ctl.wait_alert("unknown_egress", "miner", Some(&format!("{name}:{port}")));
    }
    // ...then the pool.
    let (status, body) = miner.get(&format!("http://xmr.pool.test:{port}/"));
    assert_eq!(status, 403, "{body}");
    let threat = ctl.wait_alert("threat", "miner", None);
    assert_eq!(threat["severity"], "high", "{threat}");
    let delivered = receiver.wait("/hook", "the threat alert", |got| {
        got.iter()
            .position(|d| d.json()["kind"] == "threat")
            .map(|i| got[..=i].to_vec())
    });
    let kinds: Vec<String> = delivered
        .iter()
        .map(|d| format!("{} {}", d.json()["severity"], d.json()["kind"]))
        .collect();
    assert_eq!(
        delivered.len(),
        3,
        "the burst of two, then the threat before the queued minor ones: {kinds:?}"
    );
    let body = delivered[2].json();
    assert_eq!(body["tenant"], "mallory", "{body}");
    assert_eq!(body["event"], "alert");
    assert!(
        signature_ok(&delivered[2], key),
        "signed with the key in the data directory"
    );
    let json = ctl.json(&["status"]);
    let hook = &json["notifications"]["sinks"]["webhook"];
    assert!(hook["rate_limited"].as_u64().unwrap_or(0) >= 5, "{json}");
    assert_eq!(hook["failed"], 0, "{json}");
}

#[test]
fn bad_notification_flags_are_refused_at_start_without_showing_secrets() {
    let tmp = tempfile::tempdir().unwrap();
    let slack = secret_file(&tmp.path().join("slack.url"), "hooks.example/SECRET-TOKEN");
    for (args, want) in [
        (
            vec!["--notify-slack-url-file", slack.to_str().unwrap()],
            "does not hold an http:// or https:// URL",
        ),
        (
            vec!["--notify-slack-url-file", "/nonexistent/slack.url"],
            "--notify-slack-url-file /nonexistent/slack.url",
        ),
        (
            vec!["--notify-webhook", "ftp://example.test/x"],
            "--notify-webhook",
        ),
        (vec!["--notify-window", "5"], "has no unit"),
        (
            vec!["--notify-min-severity", "urgent"],
            "use low, medium, high or critical",
        ),
        (vec!["--notify-rate-limit", "0"], "--notify-rate-limit"),
    ] {
        let out = Command::new(bin("vigil-controller"))
            .args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(tmp.path().join("data"))
            .args(&args)
            .env_remove("VIGIL_NOTIFY_WEBHOOK")
            .env_remove("VIGIL_NOTIFY_SLACK_URL_FILE")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
        assert!(!stderr.contains("SECRET-TOKEN"), "{args:?}: {stderr}");
    }
}

/// A self-signed certificate for `localhost` (openssl) as a rustls
/// acceptor.
fn self_signed_acceptor(dir: &Path) -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args([
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
        ])
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
    let certs = CertificateDer::pem_file_iter(&cert)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(&key).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// An `https://` receiver must present a certificate from the Web PKI:
/// one the controller cannot verify gets nothing, and the failure shows.
#[test]
fn an_https_receiver_with_an_unverifiable_certificate_gets_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let handshakes = Arc::new(Mutex::new(0));
    let receiver = Receiver::start_with(
        0,
        Some((self_signed_acceptor(tmp.path()), handshakes.clone())),
    );
    let webhook = format!("https://localhost:{}/hook", receiver.addr.port());
    let ctl = controller_with(tmp.path(), &["--notify-webhook", &webhook]);
    ctl.set_mode(&["enforcement"]);
    // A new workload in enforcement: a new_deployment alert.
    let app = Upstream::start("nb");
    let hosts = hosts_file(tmp.path(), &[]);
    let _nb = Proxy::start_with(
        "nb",
        ctl.grpc,
        app.addr,
        &hosts,
        tmp.path(),
        &["--tenant", "carol"],
    );
    ctl.wait_alert("new_deployment", "nb", None);
    let hook = common::wait_for("a failed delivery in the status", || {
        let json = ctl.json(&["status"]);
        let hook = json["notifications"]["sinks"]["webhook"].clone();
        (hook["failed"].as_u64()? >= 1).then_some(hook)
    });
    let error = hook["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("certificate"), "{hook}");
    assert_eq!(hook["sent"], 0, "{hook}");
    assert!(
        *handshakes.lock().unwrap() >= 1,
        "the controller spoke TLS to it"
    );
    assert!(receiver.at("/hook").is_empty(), "no request got through");
}
