//! In-process end-to-end test of vigil-proxy with real sockets: a hyper
//! upstream, a TCP echo server, a fake tonic controller and real clients.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};
use vigil_proto::v1;
use vigil_proto::v1::controller_server::{Controller, ControllerServer};

// ---------- upstreams ----------

/// An HTTP upstream answering JSON with what it saw; counts connections.
async fn http_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let conns = Arc::new(AtomicUsize::new(0));
    let counter = conns.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    let header = |n: &str| {
                        req.headers()
                            .get(n)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_string()
                    };
                    let body = serde_json::json!({
                        "path": req.uri().to_string(),
                        "host": header("host"),
                        "source": header("vigil-source"),
                    });
                    Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(
                        body.to_string(),
                    ))))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, conns)
}

/// An HTTP upstream that reads a request's whole body before it answers,
/// counting the body bytes it has received.
async fn draining_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Arc::new(AtomicUsize::new(0));
    let counter = received.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let counter = counter.clone();
                    async move {
                        let mut body = req.into_body();
                        while let Some(Ok(frame)) = body.frame().await {
                            if let Some(data) = frame.data_ref() {
                                counter.fetch_add(data.len(), Ordering::SeqCst);
                            }
                        }
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(
                            Bytes::from_static(b"uploaded"),
                        )))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, received)
}

async fn echo_upstream() -> SocketAddr {
    greeting_echo_upstream(b"").await
}

/// An echo server that first sends `greeting` (a server-first protocol,
/// SMTP's banner say, when it is not empty).
async fn greeting_echo_upstream(greeting: &'static [u8]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                if stream.write_all(greeting).await.is_err() {
                    return;
                }
                let (mut r, mut w) = stream.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

// ---------- fake controller ----------

#[derive(Clone)]
struct FakeController {
    policy: watch::Receiver<v1::Policy>,
    reports: Arc<Mutex<Vec<v1::ReportBatch>>>,
    registrations: Arc<Mutex<Vec<v1::Registration>>>,
    kill: watch::Receiver<bool>,
}

async fn killed(kill: &mut watch::Receiver<bool>) {
    let _ = kill.wait_for(|k| *k).await;
}

#[tonic::async_trait]
impl Controller for FakeController {
    type RegisterStream = ReceiverStream<Result<v1::Policy, Status>>;
    type ReportStream = ReceiverStream<Result<v1::ReportAck, Status>>;

    async fn register(
        &self,
        req: tonic::Request<v1::Registration>,
    ) -> Result<tonic::Response<Self::RegisterStream>, Status> {
        self.registrations.lock().unwrap().push(req.into_inner());
        let (tx, rx) = mpsc::channel(4);
        let mut policy = self.policy.clone();
        let mut kill = self.kill.clone();
        tokio::spawn(async move {
            loop {
                let current = policy.borrow_and_update().clone();
                if tx.send(Ok(current)).await.is_err() {
                    return;
                }
                tokio::select! {
                    changed = policy.changed() => if changed.is_err() { return },
                    _ = killed(&mut kill) => return,
                }
            }
        });
        Ok(tonic::Response::new(ReceiverStream::new(rx)))
    }

    async fn report(
        &self,
        req: tonic::Request<Streaming<v1::ReportBatch>>,
    ) -> Result<tonic::Response<Self::ReportStream>, Status> {
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let reports = self.reports.clone();
        let mut kill = self.kill.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    msg = inbound.message() => match msg {
                        Ok(Some(batch)) => {
                            let seq = batch.seq;
                            reports.lock().unwrap().push(batch);
                            if tx.send(Ok(v1::ReportAck { seq })).await.is_err() { return }
                        }
                        _ => return,
                    },
                    _ = killed(&mut kill) => return,
                }
            }
        });
        Ok(tonic::Response::new(ReceiverStream::new(rx)))
    }
}

// ---------- helpers ----------

async fn eventually<F, Fut>(what: &str, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..250 {
        if check().await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    anyhow::bail!("timed out waiting for {what}")
}

/// GETs `url` through a fresh connection to `addr` and returns status + body.
async fn get(addr: SocketAddr, uri: &str, headers: &[(&str, &str)]) -> Result<(u16, String)> {
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(TcpStream::connect(addr).await?))
            .await?;
    tokio::spawn(conn);
    send(&mut sender, uri, headers).await
}

/// [`get`] from the local IP `from` (any of 127/8 on loopback).
async fn get_from(
    from: std::net::IpAddr,
    addr: SocketAddr,
    uri: &str,
    headers: &[(&str, &str)],
) -> Result<(u16, String)> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    let stream = socket.connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    send(&mut sender, uri, headers).await
}

async fn send(
    sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    uri: &str,
    headers: &[(&str, &str)],
) -> Result<(u16, String)> {
    let mut req = Request::get(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    sender
        .ready()
        .await
        .with_context(|| format!("connection not ready for {uri}"))?;
    let resp = sender
        .send_request(req.body(Empty::new())?)
        .await
        .with_context(|| format!("GET {uri}"))?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8(body.to_vec())?))
}

/// Sends a raw CONNECT and returns the status line and the open stream.
async fn connect(proxy: SocketAddr, target: &str) -> Result<(String, TcpStream)> {
    let mut s = TcpStream::connect(proxy).await?;
    s.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .await?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).await? == 0 {
            break;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8(head)?;
    Ok((head.lines().next().unwrap_or("").to_string(), s))
}

fn observations(reports: &Mutex<Vec<v1::ReportBatch>>) -> Vec<v1::Observation> {
    reports
        .lock()
        .unwrap()
        .iter()
        .flat_map(|b| b.observations.clone())
        .collect()
}

// ---------- the test ----------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_enforces_and_reports() -> Result<()> {
    let (app, app_conns) = http_upstream().await;
    let (other, _) = http_upstream().await;
    let echo = echo_upstream().await;
    let greeter = greeting_echo_upstream(b"220 smtp.test ESMTP\r\n").await;
    let (upload, uploaded) = draining_upstream().await;

    // Fake controller.
    let (policy_tx, policy_rx) = watch::channel(v1::Policy {
        version: 7,
        enforce: true,
        allowed_authorities: vec![
            format!("allowed.test:{}", app.port()),
            format!("echo.test:{}", echo.port()),
            format!("echo.test:{}", greeter.port()),
            format!("upload.test:{}", upload.port()),
        ],
        allowed_addrs: vec![],
        allowed_sources: vec!["default/client".into()],
        mode: "enforcement".into(),
        // client's sidecar calls from loopback (both families).
        source_ips: [(
            "default/client".to_owned(),
            v1::SourceIps {
                ips: vec!["127.0.0.1".into(), "::1".into()],
            },
        )]
        .into(),
        ..Default::default()
    });
    let (kill_tx, kill_rx) = watch::channel(false);
    let fake = FakeController {
        policy: policy_rx,
        reports: Arc::default(),
        registrations: Arc::default(),
        kill: kill_rx.clone(),
    };
    let grpc = TcpListener::bind("127.0.0.1:0").await?;
    let grpc_addr = grpc.local_addr()?;
    let mut kill_server = kill_rx.clone();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ControllerServer::new(fake.clone()))
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(grpc),
                async move { killed(&mut kill_server).await },
            ),
    );

    // The proxy.
    let mut hosts = tempfile::NamedTempFile::new()?;
    std::io::Write::write_all(
        &mut hosts,
        b"# test names\nallowed.test 127.0.0.1\n127.0.0.1 denied.test echo.test blocked.test upload.test\n",
    )?;
    let controller = format!("http://{grpc_addr}");
    let app_s = app.to_string();
    let hosts_path = hosts.path().to_str().context("path")?.to_string();
    let args = vigil_proxy::Args::try_parse_from([
        "vigil-proxy",
        "--workload",
        "web",
        "--outbound-addr",
        "127.0.0.1:0",
        "--inbound-addr",
        "127.0.0.1:0",
        "--admin-addr",
        "127.0.0.1:0",
        "--outbound-addr6",
        "[::1]:0",
        "--inbound-addr6",
        "[::]:0",
        "--dns-addr",
        "127.0.0.1:0",
        "--app-addr",
        &app_s,
        "--controller",
        &controller,
        "--hosts-file",
        &hosts_path,
        "--report-interval-ms",
        "50",
        "--detect-timeout-ms",
        "200",
    ])?;
    let running = vigil_proxy::start(args).await?;
    let (outbound, inbound, admin) = (
        running.outbound_addr,
        running.inbound_addr,
        running.admin_addr,
    );
    let admin_base = format!("http://{admin}");
    eventually("ready", || async {
        matches!(
            get(admin, &format!("{admin_base}/ready"), &[]).await,
            Ok((200, _))
        )
    })
    .await?;
    eventually("policy 7", || async { running.policy().version == 7 }).await?;
    let reg = fake.registrations.lock().unwrap()[0].clone();
    assert_eq!(
        reg.identity.as_ref().map(|i| i.workload.as_str()),
        Some("web")
    );
    assert_eq!(reg.inbound_addrs, vec![inbound.to_string()]);

    // Absolute-form, twice on one keep-alive connection.
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(TcpStream::connect(outbound).await?))
            .await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            eprintln!("keep-alive client connection error: {e:?}");
        }
    });
    let allowed = format!("http://allowed.test:{}/api/users/8412?page=2", app.port());
    for _ in 0..2 {
        let (status, body) = send(&mut sender, &allowed, &[("vigil-source", "evil/spoof")]).await?;
        assert_eq!(status, 200, "{body}");
        let seen: serde_json::Value = serde_json::from_str(&body)?;
        assert_eq!(seen["path"], "/api/users/8412?page=2");
        assert_eq!(seen["host"], format!("allowed.test:{}", app.port()));
        assert_eq!(seen["source"], "default/web", "identity replaced");
    }
    // A client that names the identity header in `Connection`, so that
    // hop-by-hop hygiene would strip it and the callee would take the call
    // for the internet's, still goes out as itself.
    let (status, body) = send(
        &mut sender,
        &allowed,
        &[
            ("connection", "vigil-source"),
            ("vigil-source", "evil/spoof"),
        ],
    )
    .await?;
    assert_eq!(status, 200, "{body}");
    let seen: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(seen["source"], "default/web", "identity kept: {body}");
    // A client's own Host would pick another site on the judged name's
    // server: the request carries the name judged.
    let (status, body) = send(&mut sender, &allowed, &[("host", "attacker.example")]).await?;
    assert_eq!(status, 200, "{body}");
    let seen: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(
        seen["host"],
        format!("allowed.test:{}", app.port()),
        "{body}"
    );
    assert_eq!(
        app_conns.load(Ordering::SeqCst),
        1,
        "upstream connection pooled"
    );

    // Denied destination.
    let denied = format!("http://denied.test:{}/", other.port());
    let (status, body) = get(outbound, &denied, &[]).await?;
    assert_eq!(status, 403);
    let json: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(json["error"], "denied by vigil policy");
    assert_eq!(json["destination"], format!("denied.test:{}", other.port()));
    assert_eq!(json["workload"], "default/web");
    assert_eq!(json["mode"], "enforcement");

    // https absolute-form and origin-form on a non-redirected connection.
    assert_eq!(get(outbound, "https://allowed.test/", &[]).await?.0, 400);
    let (status, body) = get(outbound, "/plain", &[("host", "x")]).await?;
    assert_eq!(status, 400);
    assert!(body.contains("not a proxy request"), "{body}");

    // CONNECT tunnel echoes; denied CONNECT gets 403.
    let (line, mut tunnel) = connect(outbound, &format!("echo.test:{}", echo.port())).await?;
    assert!(line.contains(" 200"), "{line}");
    tunnel.write_all(b"ping").await?;
    let mut buf = [0u8; 4];
    tunnel.read_exact(&mut buf).await?;
    assert_eq!(&buf, b"ping");
    drop(tunnel);
    let (line, _) = connect(outbound, &format!("blocked.test:{}", echo.port())).await?;
    assert!(line.contains(" 403"), "{line}");
    // A server-first protocol through a tunnel: the client says nothing
    // until the server greets; past the detect timeout the server speaks
    // first, and the stream is piped as it is.
    let (line, mut tunnel) = connect(outbound, &format!("echo.test:{}", greeter.port())).await?;
    assert!(line.contains(" 200"), "{line}");
    let mut banner = [0u8; 21];
    tokio::time::timeout(Duration::from_secs(5), tunnel.read_exact(&mut banner)).await??;
    assert_eq!(&banner, b"220 smtp.test ESMTP\r\n");
    tunnel.write_all(b"EHLO nb\r\n").await?;
    let mut reply = [0u8; 9];
    tunnel.read_exact(&mut reply).await?;
    assert_eq!(&reply, b"EHLO nb\r\n");
    drop(tunnel);

    // Plain HTTP inside a tunnel is judged request by request against the
    // tunnel's address: a Host that does not go there is refused (piped
    // raw, it reached another site on a shared address); the name that
    // does passes.
    let target = format!("allowed.test:{}", app.port());
    let (line, tunnel) = connect(outbound, &target).await?;
    assert!(line.contains(" 200"), "{line}");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tunnel)).await?;
    tokio::spawn(conn);
    let (status, body) = send(&mut sender, "/inside", &[("host", "attacker.example")]).await?;
    assert_eq!(status, 403, "{body}");
    let (status, body) = send(&mut sender, "/inside", &[("host", &target)]).await?;
    assert_eq!(status, 200, "{body}");
    let seen: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(seen["host"], target, "{body}");
    drop(sender);
    // Empty lines before the request line, which servers skip, do not make
    // it an opaque stream piped past that judgement.
    let (line, mut tunnel) = connect(outbound, &target).await?;
    assert!(line.contains(" 200"), "{line}");
    tunnel
        .write_all(b"\r\n\r\nGET /inside HTTP/1.1\r\nHost: attacker.example\r\n\r\n")
        .await?;
    let mut head = [0u8; 12];
    tunnel.read_exact(&mut head).await?;
    assert_eq!(&head, b"HTTP/1.1 403", "{}", String::from_utf8_lossy(&head));
    drop(tunnel);
    // Nor does waiting out the detect timeout (200 ms here), before the
    // first byte or after it: the stream was piped raw (200 from the app).
    let request = b"GET /inside HTTP/1.1\r\nHost: attacker.example\r\n\r\n";
    for split in [0, 1] {
        let (line, mut tunnel) = connect(outbound, &target).await?;
        assert!(line.contains(" 200"), "{line}");
        tunnel.write_all(&request[..split]).await?;
        tokio::time::sleep(Duration::from_millis(600)).await;
        tunnel.write_all(&request[split..]).await?;
        let mut head = [0u8; 12];
        tunnel.read_exact(&mut head).await?;
        let head = String::from_utf8_lossy(&head);
        assert_eq!(head, "HTTP/1.1 403", "{split} byte(s), then a pause");
    }
    // Two Host lines (a server may read the second) get a 400, not a
    // judgement of the first.
    let (line, mut tunnel) = connect(outbound, &target).await?;
    assert!(line.contains(" 200"), "{line}");
    let two = format!("GET /inside HTTP/1.1\r\nHost: {target}\r\nHost: attacker.example\r\n\r\n");
    tunnel.write_all(two.as_bytes()).await?;
    let mut head = [0u8; 12];
    tunnel.read_exact(&mut head).await?;
    assert_eq!(&head, b"HTTP/1.1 400", "{}", String::from_utf8_lossy(&head));
    drop(tunnel);
    // A mining call in a request body (getwork over HTTP) to a destination
    // the baseline allows is cut in enforcement: no baseline allows mining.
    let (line, mut tunnel) = connect(outbound, &target).await?;
    assert!(line.contains(" 200"), "{line}");
    let call = r#"{"id":1,"jsonrpc":"2.0","method":"eth_getWork","params":[]}"#;
    let post = format!(
        "POST / HTTP/1.1\r\nHost: {target}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{call}",
        call.len()
    );
    tunnel.write_all(post.as_bytes()).await?;
    let mut head = [0u8; 12];
    tunnel.read_exact(&mut head).await?;
    assert_eq!(&head, b"HTTP/1.1 403", "{}", String::from_utf8_lossy(&head));
    drop(tunnel);
    // HTTP/2 is judged by its `:authority`: a `host` field beside it that
    // names another site does not reach the app (a server that reads Host
    // would serve that site).
    let (line, tunnel) = connect(outbound, &target).await?;
    assert!(line.contains(" 200"), "{line}");
    let (mut h2, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tunnel)).await?;
    tokio::spawn(conn);
    let req = Request::get(format!("http://{target}/h2"))
        .header("host", "attacker.example")
        .body(Empty::<Bytes>::new())?;
    let resp = h2.send_request(req).await?;
    assert_eq!(resp.status(), 200);
    let seen: serde_json::Value =
        serde_json::from_slice(&resp.into_body().collect().await?.to_bytes())?;
    assert_ne!(seen["host"], "attacker.example", "{seen}");
    drop(h2);
    // A ClientHello the sidecar cannot read (this one claims 20 KiB) names
    // a server it cannot check: refused in enforcement, as a name that
    // does not go there, not piped on as a nameless stream.
    let (line, mut tunnel) = connect(outbound, &target).await?;
    assert!(line.contains(" 200"), "{line}");
    tunnel
        .write_all(b"\x16\x03\x01\x00\x04\x01\x00\x50\x00")
        .await?;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), tunnel.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the tunnel is closed");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.is_empty(), "nothing reached the app: {answer}");

    // The IPv6 twins (where ip6tables redirects) serve and enforce alike.
    match (running.outbound_addr6, running.inbound_addr6) {
        (Some(out6), Some(in6)) => {
            assert!(out6.is_ipv6() && in6.is_ipv6(), "{out6} {in6}");
            let url = format!("http://allowed.test:{}/v6", app.port());
            let (status, body) = get(out6, &url, &[]).await?;
            assert_eq!(status, 200, "{body}");
            assert_eq!(get(out6, &denied, &[]).await?.0, 403);
            let in6 = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, in6.port()));
            let (status, body) = get(in6, "/v6", &[("vigil-source", "default/client")]).await?;
            assert_eq!(status, 200, "{body}");
            assert_eq!(get(in6, "/v6", &[]).await?.0, 403);
        }
        other => eprintln!("SKIPPED the IPv6 listeners: this host has no IPv6 ({other:?})"),
    }

    // Inbound: known caller allowed, header stripped; others denied.
    let (status, body) = get(inbound, "/hello/42", &[("vigil-source", "default/client")]).await?;
    assert_eq!(status, 200, "{body}");
    let seen: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(seen["source"], "", "vigil-source stripped before the app");
    assert_eq!(
        get(inbound, "/hello", &[("vigil-source", "default/miner")])
            .await?
            .0,
        403
    );
    assert_eq!(get(inbound, "/hello", &[]).await?.0, 403);
    // The same claim from an IP client does not call from is not believed:
    // the caller is the internet, which this policy does not allow.
    let (status, body) = get_from(
        [127, 0, 0, 2].into(),
        inbound,
        "/hello",
        &[("vigil-source", "default/client")],
    )
    .await?;
    assert_eq!(status, 403, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(json["source"], "internet", "{json}");

    // Reports reach the controller.
    let authority = format!("allowed.test:{}", app.port());
    eventually("reports", || async {
        let obs = observations(&fake.reports);
        let out: u64 = obs
            .iter()
            .filter(|o| o.authority == authority && o.path == "/api/users/{id}" && o.status == 200)
            .map(|o| o.count)
            .sum();
        let inbound_ok = obs.iter().any(|o| {
            o.direction == v1::Direction::Inbound as i32
                && o.source == "default/client"
                && o.path == "/hello/{id}"
                && o.status == 200
        });
        let inbound_denied = obs
            .iter()
            .any(|o| o.source == "default/miner" && o.denied == 1 && o.status == 403);
        let spoofed = obs.iter().any(|o| {
            o.source.is_empty() && o.claimed_source == "default/client" && o.status == 403
        });
        let denied = obs
            .iter()
            .any(|o| o.authority.starts_with("denied.test:") && o.denied >= 1 && o.status == 403);
        let tunnel = obs.iter().any(|o| {
            o.method == "CONNECT"
                && o.protocol == v1::Protocol::Tcp as i32
                && o.authority.starts_with("echo.test:")
                && o.bytes_in == 4
                && o.bytes_out == 4
        });
        // Two plain requests, the one naming our field in `Connection`
        // and the one with another Host.
        out == 4 && inbound_ok && inbound_denied && spoofed && denied && tunnel
    })
    .await
    .with_context(|| format!("{:#?}", observations(&fake.reports)))?;
    let out = observations(&fake.reports)
        .into_iter()
        .find(|o| o.authority == authority)
        .context("outbound obs")?;
    assert_eq!(out.resolved_addr, app.to_string());
    assert!(out.bytes_out > 0);

    // Admin.
    let (status, metrics) = get(admin, &format!("{admin_base}/metrics"), &[]).await?;
    assert_eq!(status, 200);
    assert!(
        metrics.contains(r#"vigil_proxy_requests_total{direction="outbound",decision="deny"}"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("vigil_proxy_policy_version 7"),
        "{metrics}"
    );
    assert!(
        metrics.contains("vigil_proxy_spoofed_sources_total 1"),
        "{metrics}"
    );
    let (status, dump) = get(admin, &format!("{admin_base}/config_dump"), &[]).await?;
    assert_eq!(status, 200);
    let dump: serde_json::Value = serde_json::from_str(&dump)?;
    assert_eq!(dump["policy"]["version"], 7);
    assert_eq!(dump["config"]["args"]["workload"], "web");

    // An upload that never ends (a miner's shares going up) is cut when the
    // policy stops allowing it, before its response: the client gets 403.
    let mut client = TcpStream::connect(outbound).await?;
    let target = format!("upload.test:{}", upload.port());
    client
        .write_all(
            format!(
                "POST http://{target}/shares HTTP/1.1\r\nHost: {target}\r\n\
                 Transfer-Encoding: chunked\r\n\r\n5\r\nshare\r\n"
            )
            .as_bytes(),
        )
        .await?;
    eventually("the first chunk upstream", || async {
        uploaded.load(Ordering::SeqCst) >= 5
    })
    .await?;
    let before = policy_tx.borrow().clone();
    policy_tx.send(v1::Policy {
        version: 8,
        quarantined: true,
        ..before.clone()
    })?;
    let mut answer = vec![0u8; 12];
    tokio::time::timeout(Duration::from_secs(10), client.read_exact(&mut answer))
        .await
        .context("the cut upload's answer")??;
    assert_eq!(
        &answer,
        b"HTTP/1.1 403",
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert_eq!(uploaded.load(Ordering::SeqCst), 5, "nothing after the cut");
    policy_tx.send(v1::Policy {
        version: 9,
        ..before
    })?;
    eventually("policy 9", || async { running.policy().version == 9 }).await?;

    // The controller goes away: forwarding and the last policy go on.
    drop(policy_tx);
    kill_tx.send(true)?;
    let _ = server.await;
    eventually("disconnected", || async {
        matches!(get(admin, &format!("{admin_base}/metrics"), &[]).await,
            Ok((200, m)) if m.contains("vigil_proxy_controller_connected 0"))
    })
    .await?;
    assert_eq!(get(outbound, &allowed, &[]).await?.0, 200);
    assert_eq!(get(outbound, &denied, &[]).await?.0, 403);
    let (line, _) = connect(outbound, &format!("blocked.test:{}", echo.port())).await?;
    assert!(line.contains(" 403"), "{line}");

    tokio::time::timeout(Duration::from_secs(5), running.shutdown())
        .await
        .context("shutdown bounded")?;
    Ok(())
}
