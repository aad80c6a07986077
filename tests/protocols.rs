//! End-to-end: the protocols a workload speaks through its sidecar (gRPC
//! over HTTP/2, TLS inside CONNECT tunnels, WebSocket upgrades), the limit
//! flags and the graceful drain, with the real `vigil-proxy` (and
//! `vigil-controller` where the graph is checked), real clients (tonic,
//! curl, raw sockets) and real servers (tonic, rustls, hyper).

mod common;

use std::convert::Infallible;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vigil_proto::v1;

use common::{Controller, Proxy, Upstream, curl, hosts_file, spawn_server, wait_for};

/// How long one blocking socket read may wait before the test fails.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------- gRPC

/// A real tonic client calls the real controller's gRPC service through the
/// sidecar: server streaming, interleaved bidi streaming, the end-of-stream
/// trailers and a trailers-only error all arrive; the graph shows the calls.
#[test]
fn grpc_streams_and_trailers_pass_through_the_proxy() {
    let tmp = tempfile::tempdir().unwrap();
    let ctl = Controller::start(&tmp.path().join("data"), tmp.path());
    let app = Upstream::start("web");
    let hosts = hosts_file(tmp.path(), &[]);
    let web = Proxy::start("web", ctl.grpc, app.addr, &hosts, tmp.path());

    let token = std::fs::read_to_string(common::sidecar_token_file(tmp.path())).unwrap();
    runtime().block_on(grpc_calls(web.outbound, ctl.grpc, token.trim()));

    let target = format!("external:127.0.0.1:{}", ctl.grpc.port());
    let edge = wait_for("the Report call on web's edge to the controller", || {
        let edge = ctl.wait_edge("workload:default/web", &target, 1);
        edge["endpoints"]
            .get("POST /vigil.v1.Controller/Report")
            .is_some()
            .then_some(edge)
    });
    assert!(
        common::has_protocol(&edge, "grpc"),
        "recorded as gRPC: {edge}"
    );
    // The batch's content crossed the proxy intact: the controller stored it.
    ctl.wait_edge(
        "workload:default/grpc-client",
        "external:files.example:443",
        2,
    );
}

/// The calls of [`grpc_streams_and_trailers_pass_through_the_proxy`].
async fn grpc_calls(proxy: SocketAddr, controller: SocketAddr, token: &str) {
    let origin = format!("http://127.0.0.1:{}", controller.port());
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{proxy}"))
        .unwrap()
        .origin(origin.parse().unwrap())
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("an HTTP/2 connection to the proxy");
    let mut client = v1::controller_client::ControllerClient::new(channel);
    let identity = v1::Identity {
        workload: "grpc-client".into(),
        namespace: "default".into(),
        instance: "e2e".into(),
        ..Default::default()
    };

    // Server streaming: the first Policy message arrives.
    let registration = v1::Registration {
        identity: Some(identity.clone()),
        inbound_addrs: vec![],
        proxy_version: "e2e".into(),
    };
    fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        let bearer = format!("Bearer {token}").parse().unwrap();
        request.metadata_mut().insert("authorization", bearer);
        request
    }
    let authorized = |message| with_token(message, token);
    // The controller's gRPC port wants the sidecar token.
    let status = within(client.register(registration.clone()))
        .await
        .expect_err("no token, no registration");
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    let mut policies = within(client.register(authorized(registration)))
        .await
        .expect("Register through the proxy")
        .into_inner();
    let policy = within(policies.message())
        .await
        .expect("a Policy message")
        .expect("the stream is open");
    assert_eq!((policy.mode.as_str(), policy.enforce), ("learning", false));

    // Bidi streaming, interleaved: each ack comes back before the next
    // batch is sent, so nothing is buffered until the request ends.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let reports = with_token(tokio_stream::wrappers::ReceiverStream::new(rx), token);
    let mut acks = within(client.report(reports))
        .await
        .expect("Report through the proxy")
        .into_inner();
    for seq in 1..=3 {
        let observations = if seq == 1 {
            vec![v1::Observation {
                direction: v1::Direction::Outbound.into(),
                protocol: v1::Protocol::Tls.into(),
                authority: "files.example:443".into(),
                count: 2,
                ..Default::default()
            }]
        } else {
            vec![]
        };
        let batch = v1::ReportBatch {
            identity: Some(identity.clone()),
            seq,
            observations,
            dropped: 0,
        };
        tx.send(batch).await.unwrap();
        let ack = within(acks.message())
            .await
            .unwrap_or_else(|s| panic!("ack {seq}: {s}"))
            .expect("the ack stream is open");
        assert_eq!(ack.seq, seq);
    }
    drop(tx);
    // The server ends its stream with grpc-status 0 in the trailers; tonic
    // reports a missing or failed status as an error here.
    let end = within(acks.message()).await;
    assert!(matches!(end, Ok(None)), "the stream ends cleanly: {end:?}");
    let trailers = within(acks.trailers())
        .await
        .expect("trailers")
        .expect("trailers were sent");
    assert!(
        trailers.get("grpc-status").is_none_or(|s| s == "0"),
        "{trailers:?}"
    );

    // A failing call: the status and message (a trailers-only response) pass.
    let bad = v1::Registration {
        identity: Some(v1::Identity {
            workload: "Not A Name".into(),
            ..identity
        }),
        inbound_addrs: vec![],
        proxy_version: "e2e".into(),
    };
    let status = within(client.register(authorized(bad)))
        .await
        .expect_err("an invalid identity is refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("identity"), "{status:?}");
}

/// Fails the test when `f` takes longer than [`READ_TIMEOUT`].
async fn within<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(READ_TIMEOUT, f)
        .await
        .expect("the gRPC call timed out")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

// ---------------------------------------------------------------- TLS

/// HTTPS through the proxy: curl's CONNECT tunnel carries TLS end to end to
/// a rustls server (the proxy never has the key, it records a TLS stream);
/// in enforcement a workload that only learned another destination gets
/// 403 on CONNECT, while the one that learned it still gets through.
#[test]
fn tls_in_a_connect_tunnel_passes_and_is_denied_when_unknown() {
    let tmp = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed_cert(tmp.path(), "pypi.test");
    let pypi = start_tls_upstream(&cert, &key, "pypi");
    let files = Upstream::start("files");
    let ctl = Controller::start(&tmp.path().join("data"), tmp.path());
    let hosts = hosts_file(tmp.path(), &["pypi.test", "files.test"]);
    let web_app = Upstream::start("web");
    let web = Proxy::start("web", ctl.grpc, web_app.addr, &hosts, tmp.path());
    let nb_app = Upstream::start("notebook");
    let notebook = Proxy::start("notebook", ctl.grpc, nb_app.addr, &hosts, tmp.path());
    let authority = format!("pypi.test:{}", pypi.port());
    let url = format!("https://{authority}/simple/");

    let got = https_get(&web, &url, &cert, pypi.port());
    assert_eq!(
        (got.ok, got.code, got.body.as_str()),
        (true, 200, "pypi over TLS: GET /simple/"),
        "{got:?}"
    );
    assert_eq!(got.connect, 200, "a CONNECT tunnel was used: {got:?}");
    let edge = ctl.wait_edge("workload:default/web", &format!("external:{authority}"), 1);
    assert!(
        common::has_protocol(&edge, "tls"),
        "the tunnel is recorded as TLS: {edge}"
    );
    let endpoints = edge["endpoints"].as_object().unwrap();
    assert!(
        endpoints.keys().all(|k| !k.contains("/simple")),
        "the proxy never saw the encrypted path: {edge}"
    );

    // The notebook learns only files.test.
    let files_url = format!("http://files.test:{}/", files.addr.port());
    assert_eq!(notebook.get(&files_url).0, 200);
    ctl.wait_edge(
        "workload:default/notebook",
        &format!("external:files.test:{}", files.addr.port()),
        1,
    );
    ctl.set_mode(&["enforcement"]);
    web.wait_enforce(true);
    notebook.wait_enforce(true);

    let got = https_get(&web, &url, &cert, pypi.port());
    assert_eq!(
        (got.code, got.body.as_str()),
        (200, "pypi over TLS: GET /simple/"),
        "known egress passes: {got:?}"
    );
    let got = https_get(&notebook, &url, &cert, pypi.port());
    assert!(!got.ok, "curl fails: {got:?}");
    assert_eq!(got.connect, 403, "the CONNECT is denied: {got:?}");
    assert!(got.stderr.contains("403"), "curl says why: {got:?}");
    let alert = ctl.wait_alert("unknown_egress", "notebook", Some(&authority));
    assert_eq!(alert["action"], "blocked");
}

/// What curl saw of an HTTPS request.
#[derive(Debug)]
struct Https {
    ok: bool,
    code: u16,
    connect: u16,
    body: String,
    stderr: String,
}

/// `curl -x <proxy> --cacert <cert> <url>`.
fn https_get(proxy: &Proxy, url: &str, cert: &Path, port: u16) -> Https {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "-w",
            "\n%{http_code} %{http_connect}",
        ])
        .arg("-x")
        .arg(format!("http://{}", proxy.outbound))
        .arg("--resolve")
        .arg(format!("pypi.test:{port}:127.0.0.1"))
        .arg("--cacert")
        .arg(cert)
        .arg(url)
        .output()
        .expect("curl is installed");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, codes) = text.rsplit_once('\n').unwrap_or(("", &text));
    let mut codes = codes.split_whitespace().map(|c| c.parse().unwrap_or(0));
    Https {
        ok: out.status.success(),
        code: codes.next().unwrap_or(0),
        connect: codes.next().unwrap_or(0),
        body: body.to_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A self-signed certificate for `name` (its own CA), made with the
/// `openssl` CLI; returns (cert.pem, key.pem).
fn self_signed_cert(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .arg("-subj")
        .arg(format!("/CN={name}"))
        .arg("-addext")
        .arg(format!("subjectAltName=DNS:{name}"))
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("the openssl CLI is installed");
    assert!(
        out.status.success(),
        "openssl req failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

/// A rustls HTTPS server answering `<name> over TLS: <method> <path>` to one
/// HTTP/1.1 request per connection.
fn start_tls_upstream(cert: &Path, key: &Path, name: &'static str) -> SocketAddr {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
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
    spawn_server(move |stream| {
        let acceptor = acceptor.clone();
        async move {
            let Ok(mut tls) = acceptor.accept(stream).await else {
                return;
            };
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match tls.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let head = String::from_utf8_lossy(&head);
            let line: Vec<&str> = head.lines().next().unwrap_or("").split(' ').collect();
            let body = format!(
                "{name} over TLS: {} {}",
                line[0],
                line.get(1).unwrap_or(&"")
            );
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = tls.write_all(response.as_bytes()).await;
            let _ = tls.shutdown().await;
        }
    })
}

// ---------------------------------------------------------------- h2c

/// curl's `--http2` on plain http offers an h2c upgrade. The sidecar
/// declines it for the client (RFC 9113 deprecates it): the upstream never
/// sees the offer and answers in HTTP/1.1, so each request on the
/// connection stays visible to policy and telemetry instead of vanishing
/// into a spliced stream after `101`.
#[test]
fn an_h2c_upgrade_offer_is_declined_so_every_request_stays_visible() {
    let tmp = tempfile::tempdir().unwrap();
    let ctl = Controller::start(&tmp.path().join("data"), tmp.path());
    let upstream = spawn_server(|stream| async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = stream;
        let mut buf = Vec::new();
        loop {
            // One request head at a time (keep-alive), no bodies here.
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                let mut chunk = [0u8; 1024];
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            buf.drain(..end);
            let body = if head.contains("upgrade: h2c") || head.contains("http2-settings") {
                "offered h2c"
            } else {
                "plain http/1.1"
            };
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            if stream.write_all(response.as_bytes()).await.is_err() {
                return;
            }
        }
    });
    let app = Upstream::start("web");
    let hosts = hosts_file(tmp.path(), &["h2c.test"]);
    let proxy = Proxy::start("web", ctl.grpc, app.addr, &hosts, tmp.path());
    let base = format!("http://h2c.test:{}", upstream.port());
    let out = std::process::Command::new("curl")
        .args(["-s", "--http2", "-x"])
        .arg(format!("http://{}", proxy.outbound))
        .arg(format!("{base}/one/1"))
        .arg(format!("{base}/two/2"))
        .output()
        .unwrap();
    let body = String::from_utf8_lossy(&out.stdout);
    assert_eq!(body, "plain http/1.1plain http/1.1", "{out:?}");
    let edge = ctl.wait_edge(
        "workload:default/web",
        &format!("external:h2c.test:{}", upstream.port()),
        2,
    );
    for endpoint in ["GET /one/{id}", "GET /two/{id}"] {
        assert!(edge["endpoints"][endpoint].as_u64().is_some(), "{edge}");
    }
}

// ---------------------------------------------------------------- WebSocket

/// A WebSocket handshake (HTTP/1.1 upgrade) through the explicit proxy gets
/// the upstream's `101`, then bytes flow both ways on the same connection.
#[test]
fn websocket_upgrade_passes_through_and_echoes() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = start_ws_echo();
    let app = Upstream::start("web");
    let hosts = hosts_file(tmp.path(), &["ws.test"]);
    let proxy = Proxy::start_with(
        "web",
        unreachable_controller(),
        app.addr,
        &hosts,
        tmp.path(),
        &[],
    );
    let authority = format!("ws.test:{}", ws.port());

    let mut client = connect(proxy.outbound);
    let request = format!(
        "GET http://{authority}/chat HTTP/1.1\r\nHost: {authority}\r\nConnection: Upgrade\r\n\
         Upgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n"
    );
    client.write_all(request.as_bytes()).unwrap();
    let head = read_head(&mut client).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    assert!(head.contains("connection: upgrade"), "{head}");
    assert!(
        head.contains(&format!(
            "x-seen: get /chat {authority} key=dghlihnhbxbszsbub25jzq=="
        )),
        "the upstream saw the handshake: {head}"
    );

    for message in [&b"\x81\x85hello"[..], &[0u8, 255, 13, 10, 13, 10, 7][..]] {
        client.write_all(message).unwrap();
        let mut echoed = vec![0u8; message.len()];
        client.read_exact(&mut echoed).expect("the echo");
        assert_eq!(echoed, message);
    }
    client.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    client
        .read_to_end(&mut rest)
        .expect("the upstream closes too");
    assert!(rest.is_empty(), "{rest:?}");
}

/// A hyper server accepting WebSocket upgrades: `101` with an `x-seen`
/// header naming what it received, then an echo of every byte.
fn start_ws_echo() -> SocketAddr {
    spawn_server(|stream| async move {
        let service = hyper::service::service_fn(ws_handshake);
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades()
            .await;
    })
}

async fn ws_handshake(mut req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let upgrade = req.headers().get(header::UPGRADE);
    if !upgrade.is_some_and(|u| u.as_bytes().eq_ignore_ascii_case(b"websocket")) {
        let mut response = Response::new(Full::from("expected a websocket upgrade"));
        *response.status_mut() = StatusCode::BAD_REQUEST;
        return Ok(response);
    }
    let text = |name| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned()
    };
    let seen = format!(
        "{} {} {} key={}",
        req.method(),
        req.uri().path(),
        text(header::HOST),
        text(header::SEC_WEBSOCKET_KEY)
    );
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        if let Ok(upgraded) = on_upgrade.await {
            let (mut read, mut write) = tokio::io::split(TokioIo::new(upgraded));
            let _ = tokio::io::copy(&mut read, &mut write).await;
            let _ = write.shutdown().await;
        }
    });
    Ok(Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::UPGRADE, "websocket")
        .header(header::CONNECTION, "Upgrade")
        .header("x-seen", seen)
        .body(Full::default())
        .unwrap())
}

// ---------------------------------------------------------------- limits

/// `--max-header-bytes`: a request head over the limit is answered `431`
/// (hyper's answer) and its connection closed; the proxy goes on serving.
#[test]
fn oversized_request_headers_get_431() {
    let tmp = tempfile::tempdir().unwrap();
    let (proxy, url) = limited_proxy(tmp.path(), &["--max-header-bytes", "8192"]);
    let small = format!("x-pad: {}", "a".repeat(4000));
    assert_eq!(
        curl(&[
            "-x",
            &format!("http://{}", proxy.outbound),
            "-H",
            &small,
            &url
        ])
        .0,
        200,
        "a head under the limit passes"
    );

    let mut client = connect(proxy.outbound);
    let request = format!(
        "GET {url} HTTP/1.1\r\nHost: files.test\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(16 * 1024)
    );
    let _ = client.write_all(request.as_bytes());
    let answer = String::from_utf8_lossy(&read_until_closed(&mut client)).into_owned();
    assert!(
        answer.starts_with("HTTP/1.1 431"),
        "a head over the limit gets 431, then the connection closes: {answer:?}"
    );

    assert_eq!(proxy.get(&url).0, 200, "the next connection is served");
}

/// `--header-read-timeout-ms`: a client that sends half a request line and
/// stalls is disconnected, and so are one that sends nothing at all and one
/// that stops inside the HTTP/2 preface; a prompt client is served.
#[test]
fn a_stalled_request_head_is_disconnected() {
    let tmp = tempfile::tempdir().unwrap();
    let (proxy, url) = limited_proxy(tmp.path(), &["--header-read-timeout-ms", "300"]);
    let mut client = connect(proxy.outbound);
    client.write_all(b"GET http://files.te").unwrap();
    let answer = String::from_utf8_lossy(&read_until_closed(&mut client)).into_owned();
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "closed, at most with a 408: {answer:?}"
    );
    let mut silent = connect(proxy.outbound);
    let answer = read_until_closed(&mut silent);
    assert!(answer.is_empty(), "a silent client is closed: {answer:?}");
    let mut half_preface = connect(proxy.outbound);
    half_preface.write_all(b"PRI * HTTP/2.0\r\n").unwrap();
    let answer = read_until_closed(&mut half_preface);
    assert!(
        answer.is_empty(),
        "half an HTTP/2 preface is closed: {answer:?}"
    );
    assert_eq!(proxy.get(&url).0, 200, "a prompt client is served");
}

/// `--max-connections 2`: two idle connections are kept, a third is closed
/// at once; once one of the two is gone a new connection is served.
#[test]
fn connections_past_the_limit_are_closed_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let (proxy, url) = limited_proxy(
        tmp.path(),
        // Idle connections are closed after the header-read timeout: keep
        // them for the whole test.
        &[
            "--max-connections",
            "2",
            "--header-read-timeout-ms",
            "60000",
        ],
    );
    let mut first = connect(proxy.outbound);
    let mut second = connect(proxy.outbound);
    let mut third = connect(proxy.outbound);
    let answer = read_until_closed(&mut third);
    assert!(answer.is_empty(), "the third gets no answer: {answer:?}");

    // The two idle ones were kept: each still carries a request.
    let request = format!("GET {url} HTTP/1.1\r\nHost: files.test\r\n\r\n");
    for client in [&mut first, &mut second] {
        client.write_all(request.as_bytes()).unwrap();
        let head = read_head(client);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    }

    drop(first);
    wait_for("a new connection to be served after one closed", || {
        (proxy.get(&url).0 == 200).then_some(())
    });
}

/// A sidecar with `extra_args`, no controller, and an upstream `files.test`;
/// returns it with a URL of that upstream.
fn limited_proxy(dir: &Path, extra_args: &[&str]) -> (Proxy, String) {
    let files = Upstream::start("files");
    let app = Upstream::start("web");
    let hosts = hosts_file(dir, &["files.test"]);
    let proxy = Proxy::start_with(
        "web",
        unreachable_controller(),
        app.addr,
        &hosts,
        dir,
        extra_args,
    );
    (proxy, format!("http://files.test:{}/", files.addr.port()))
}

// ---------------------------------------------------------------- drain

/// SIGTERM while a slow request is in flight: the request still completes
/// with 200, new connections are refused, then the proxy exits with 0.
#[test]
fn sigterm_drains_in_flight_requests_then_exits() {
    let tmp = tempfile::tempdir().unwrap();
    let started = Arc::new(AtomicUsize::new(0));
    let slow = start_slow_upstream(started.clone(), Duration::from_secs(1));
    let app = Upstream::start("web");
    let hosts = hosts_file(tmp.path(), &["slow.test"]);
    let mut proxy = Proxy::start_with(
        "web",
        unreachable_controller(),
        app.addr,
        &hosts,
        tmp.path(),
        &["--drain-timeout-ms", "10000"],
    );
    let url = format!("http://slow.test:{}/report", slow.port());
    let outbound = format!("http://{}", proxy.outbound);
    let in_flight = std::thread::spawn(move || curl(&["-x", &outbound, "--max-time", "15", &url]));
    wait_for("the request to reach the slow upstream", || {
        (started.load(Ordering::SeqCst) == 1).then_some(())
    });

    proxy.proc.signal_term();
    wait_for(
        "the outbound listener to refuse connections",
        || match TcpStream::connect(proxy.outbound) {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => Some(()),
            _ => None,
        },
    );
    let (status, body) = in_flight.join().unwrap();
    assert_eq!(
        (status, body.as_str()),
        (200, "slow done"),
        "the in-flight request completes"
    );
    let exit = proxy.proc.wait_exit();
    assert!(exit.success(), "the proxy exits cleanly: {exit:?}");
}

/// A hyper server that counts requests in `started`, then answers
/// `slow done` after `delay`.
fn start_slow_upstream(started: Arc<AtomicUsize>, delay: Duration) -> SocketAddr {
    spawn_server(move |stream| {
        let started = started.clone();
        async move {
            let service = hyper::service::service_fn(move |_req: Request<Incoming>| {
                let started = started.clone();
                async move {
                    started.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(delay).await;
                    Ok::<_, Infallible>(Response::new(Full::<Bytes>::from("slow done")))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        }
    })
}

// ---------------------------------------------------------------- sockets

/// A loopback address where no controller listens: the proxy forwards
/// under its allow-all start policy.
fn unreachable_controller() -> SocketAddr {
    common::NOWHERE
}

/// A blocking connection whose reads fail after [`READ_TIMEOUT`].
fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    stream
}

/// Reads a response head (through the blank line), byte by byte so that
/// nothing after it is consumed.
fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(0) => panic!(
                "closed before the end of the head: {:?}",
                String::from_utf8_lossy(&head)
            ),
            Ok(_) => head.push(byte[0]),
            Err(e) => panic!(
                "reading the head: {e} (so far {:?})",
                String::from_utf8_lossy(&head)
            ),
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// Reads until the peer closes (EOF or reset); fails the test if it is
/// still open after [`READ_TIMEOUT`]. Returns what was read.
fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return got,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!(
                "the connection is still open ({e}) after {READ_TIMEOUT:?}; read so far: {:?}",
                String::from_utf8_lossy(&got)
            ),
        }
    }
}

// ---------------------------------------------------------- live streams

/// A TCP echo server on a free loopback port, on its own thread.
fn start_echo() -> SocketAddr {
    spawn_server(|mut stream: tokio::net::TcpStream| async move {
        let (mut read, mut write) = stream.split();
        let _ = tokio::io::copy(&mut read, &mut write).await;
    })
}

/// Opens a CONNECT tunnel to `target` through `proxy` and checks it echoes.
fn open_tunnel(proxy: SocketAddr, target: &str) -> TcpStream {
    let mut tunnel = connect(proxy);
    write!(
        tunnel,
        "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n"
    )
    .unwrap();
    let head = read_head(&mut tunnel);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    tunnel.write_all(b"ping\n").unwrap();
    let mut echo = [0u8; 5];
    tunnel.read_exact(&mut echo).unwrap();
    assert_eq!(&echo, b"ping\n");
    tunnel
}

/// A tunnel is reported while it is open (not only when it closes), and
/// when enforcement arrives the tunnel it does not allow is cut at once,
/// the cut recorded as a denial.
#[test]
fn an_open_tunnel_is_reported_live_and_cut_when_enforcement_arrives() {
    let tmp = tempfile::tempdir().unwrap();
    let ctl = Controller::start(&tmp.path().join("data"), tmp.path());
    ctl.set_mode(&["enforcement", "--alert-only"]);
    let echo = start_echo();
    let hosts = hosts_file(tmp.path(), &["pool.test"]);
    let web = Proxy::start("web", ctl.grpc, common::NOWHERE, &hosts, tmp.path());
    web.wait_enforce(false);
    let target = format!("pool.test:{}", echo.port());
    let mut tunnel = open_tunnel(web.outbound, &target);

    // Still open: the controller already knows, and raised the alert.
    let alert = ctl.wait_alert("unknown_egress", "web", Some(&target));
    assert_eq!(
        (alert["action"].as_str(), alert["denied"].as_u64()),
        (Some("flagged"), Some(0))
    );
    tunnel.write_all(b"still\n").unwrap();
    let mut echo_back = [0u8; 6];
    tunnel.read_exact(&mut echo_back).unwrap();
    let edge = ctl.wait_edge("workload:default/web", &format!("external:{target}"), 1);
    assert!(
        edge["bytes_in"].as_u64() >= Some(5),
        "bytes reported while open: {edge}"
    );

    // Enforcement: the open tunnel is cut, not left running.
    ctl.set_mode(&["enforcement"]);
    let rest = read_until_closed(&mut tunnel);
    assert!(rest.is_empty(), "{rest:?}");
    let alert = wait_for("the cut to be recorded", || {
        let alert = ctl.wait_alert("unknown_egress", "web", Some(&target));
        (alert["denied"].as_u64() >= Some(1)).then_some(alert)
    });
    // Its latest traffic, the open tunnel, was refused; the opening got
    // through (`count - denied`).
    assert_eq!(
        (
            alert["action"].as_str(),
            alert["count"].as_u64(),
            alert["denied"].as_u64()
        ),
        (Some("blocked"), Some(2), Some(1)),
        "{alert}"
    );
    assert!(
        web.proc.log().contains("cut an open stream"),
        "{}",
        web.proc.log()
    );
}

/// Stratum on a destination the baseline allows is still mining: the
/// sidecar finds it inside the stream (after other bytes, in the pool's
/// direction) and cuts it in enforcement.
#[test]
fn mining_on_a_learned_destination_is_cut_in_enforcement() {
    let tmp = tempfile::tempdir().unwrap();
    let ctl = Controller::start(&tmp.path().join("data"), tmp.path());
    let echo = start_echo();
    let hosts = hosts_file(tmp.path(), &["pool.test"]);
    let web = Proxy::start("web", ctl.grpc, common::NOWHERE, &hosts, tmp.path());
    let target = format!("pool.test:{}", echo.port());
    // Learned while harmless.
    let mut tunnel = open_tunnel(web.outbound, &target);
    drop(tunnel);
    let edge = ctl.wait_edge("workload:default/web", &format!("external:{target}"), 1);
    assert_eq!(edge["in_baseline"], true, "{edge}");
    ctl.set_mode(&["enforcement"]);
    web.wait_enforce(true);

    tunnel = open_tunnel(web.outbound, &target);
    // The echo server plays the pool: the job comes back to the miner.
    tunnel
        .write_all(b" {\"id\":1,\"method\":\"mining.notify\",\"params\":[\"job\",\"00\"]}\n")
        .unwrap();
    read_until_closed(&mut tunnel);
    let alert = wait_for("a mining_protocol alert", || {
        let alert = ctl.wait_alert("mining_protocol", "web", Some(&target));
        (alert["denied"].as_u64() >= Some(1)).then_some(alert)
    });
    assert_eq!(
        (
            alert["action"].as_str(),
            alert["count"].as_u64(),
            alert["denied"].as_u64()
        ),
        (Some("blocked"), Some(1), Some(1)),
        "refused the moment it showed: {alert}"
    );
}
