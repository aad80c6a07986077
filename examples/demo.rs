//! The Vigil demo: the whole system on loopback, telling the cryptojacking
//! story from the README.
//!
//! It starts the controller (default ports, data in ./vigil-demo-data), two
//! notebook-platform workloads with their sidecars, a package index and a
//! mining pool (names served through a hosts file), then:
//! 1. drives normal traffic while Vigil learns;
//! 2. switches to enforcement;
//! 3. deploys a "miner" that connects out to the mining pool: it is blocked
//!    and alerted, while normal traffic still passes.
//!
//! Then it leaves everything running, printing the API URL and token, until
//! Ctrl-C. Run it with `cargo run --release --example demo`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Empty, Full};
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

const NAMESPACE: &str = "notebooks";
const DATA_DIR: &str = "./vigil-demo-data";
const REPORT_MS: u64 = 250;

/// A tiny HTTP server standing in for a workload or an external service.
async fn serve_http(name: &'static str) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: Request<hyper::body::Incoming>| async move {
                        let body = format!("{name}: {} {}\n", req.method(), req.uri().path());
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(
                            body,
                        ))))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// A pretend mining pool: answers Stratum `mining.subscribe` lines.
async fn serve_pool() -> anyhow::Result<SocketAddr> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read).lines();
                while let Ok(Some(_)) = lines.next_line().await {
                    let reply = "{\"id\":1,\"result\":[[\"mining.notify\",\"ae6812eb\"],\"08000002\",4],\"error\":null}\n";
                    if write.write_all(reply.as_bytes()).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    Ok(addr)
}

/// Sends one request on a fresh connection to `to` (a proxy or a sidecar's
/// inbound listener); `uri` is absolute-form for proxies.
async fn send(
    to: SocketAddr,
    method: Method,
    uri: &str,
    token: Option<&str>,
    body: Option<String>,
) -> anyhow::Result<(u16, String)> {
    let stream = TcpStream::connect(to)
        .await
        .with_context(|| format!("connecting to {to}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn.with_upgrades());
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let req = req.body(Full::new(Bytes::from(body.unwrap_or_default())))?;
    let response = sender.send_request(req).await?;
    let status = response.status().as_u16();
    if status == 200 && uri.starts_with("pool") {
        return Ok((status, String::new()));
    }
    let bytes = response.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&bytes).trim().to_owned()))
}

/// GET through a sidecar's outbound listener, as `curl -x` would.
async fn get_via(proxy: SocketAddr, url: &str) -> anyhow::Result<(u16, String)> {
    send(proxy, Method::GET, url, None, None).await
}

/// CONNECT through a sidecar, as a miner using HTTPS_PROXY would.
async fn connect_via(proxy: SocketAddr, authority: &str) -> anyhow::Result<(u16, String)> {
    let stream = TcpStream::connect(proxy).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn.with_upgrades());
    let req = Request::builder()
        .method(Method::CONNECT)
        .uri(authority)
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(req).await?;
    let status = response.status().as_u16();
    if status != 200 {
        let bytes = response.into_body().collect().await?.to_bytes();
        return Ok((status, String::from_utf8_lossy(&bytes).trim().to_owned()));
    }
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tunnel = TokioIo::new(hyper::upgrade::on(response).await?);
    tunnel
        .write_all(b"{\"id\":1,\"method\":\"mining.subscribe\",\"params\":[\"xmrig/6.21\"]}\n")
        .await?;
    let mut buf = [0u8; 256];
    let n = tunnel.read(&mut buf).await?;
    Ok((status, String::from_utf8_lossy(&buf[..n]).trim().to_owned()))
}

struct Sidecar {
    running: vigil_proxy::Running,
}

async fn sidecar(
    workload: &str,
    app: SocketAddr,
    grpc: SocketAddr,
    hosts: &Path,
    token: &Path,
) -> anyhow::Result<Sidecar> {
    let controller = format!("http://{grpc}");
    let (app, report_ms) = (app.to_string(), REPORT_MS.to_string());
    let mut args = vigil_proxy::Args::try_parse_from([
        "vigil-proxy",
        "--workload",
        workload,
        "--namespace",
        NAMESPACE,
        "--controller",
        &controller,
        "--app-addr",
        &app,
        "--outbound-addr",
        "127.0.0.1:0",
        "--inbound-addr",
        "127.0.0.1:0",
        "--admin-addr",
        "127.0.0.1:0",
        "--outbound-addr6",
        "off",
        "--inbound-addr6",
        "off",
        "--dns-addr",
        "off",
        "--udp-addr",
        "off",
        "--report-interval-ms",
        &report_ms,
        "--log",
        "warn",
    ])?;
    args.hosts_file = Some(hosts.to_owned());
    args.controller_token_file = Some(token.to_owned());
    let running = vigil_proxy::start(args)
        .await
        .with_context(|| format!("starting {workload}'s sidecar"))?;
    Ok(Sidecar { running })
}

impl Sidecar {
    fn outbound(&self) -> SocketAddr {
        self.running.outbound_addr
    }
    fn inbound(&self) -> SocketAddr {
        self.running.inbound_addr
    }
    async fn wait_enforcing(&self) {
        for _ in 0..100 {
            if self.running.policy().enforce {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn say(step: &str) {
    println!("\n\x1b[1m== {step}\x1b[0m");
}

fn show(what: &str, (status, body): &(u16, String)) {
    let mark = if *status == 200 {
        "\x1b[32mallowed\x1b[0m"
    } else {
        "\x1b[31mBLOCKED\x1b[0m"
    };
    let body: String = body.chars().take(140).collect();
    println!("  {what:<52} -> {status} {mark}  {body}");
}

async fn api_get(http: SocketAddr, token: &str, path: &str) -> anyhow::Result<serde_json::Value> {
    let (status, body) = send(http, Method::GET, path, Some(token), None).await?;
    if status != 200 {
        bail!("API {path} answered {status}: {body}");
    }
    Ok(serde_json::from_str(&body)?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("VIGIL_LOG").unwrap_or_else(|_| "error".into()))
        .init();
    let data_dir = PathBuf::from(DATA_DIR);
    if data_dir.exists() {
        std::fs::remove_dir_all(&data_dir)
            .with_context(|| format!("clearing {DATA_DIR} from a previous run"))?;
    }
    // Parsed like the binary's flags, so every flag keeps its default.
    let controller_args = <vigil_controller::Args as clap::Parser>::try_parse_from([
        "vigil-controller".as_ref(),
        "--grpc-addr".as_ref(),
        "127.0.0.1:8470".as_ref(),
        "--http-addr".as_ref(),
        "127.0.0.1:8480".as_ref(),
        "--log".as_ref(),
        "warn".as_ref(),
        "--data-dir".as_ref(),
        data_dir.as_os_str(),
    ])?;
    let controller = vigil_controller::start(&controller_args).await.context(
        "starting the controller (are ports 8470/8480 free? stop any other vigil-controller)",
    )?;
    let (grpc, http, token) = (
        controller.grpc_addr,
        controller.http_addr,
        controller.token.clone(),
    );
    let sidecar_token = controller.sidecar_token_path.clone();

    say("Starting a notebook platform on loopback");
    let pypi = serve_http("package index").await?;
    let pool = serve_pool().await?;
    let jupyter_app = serve_http("jupyter").await?;
    let models_app = serve_http("model-api").await?;
    let hosts = data_dir.join("hosts");
    std::fs::write(
        &hosts,
        "pypi.demo 127.0.0.1\npool.minexmr.demo 127.0.0.1\nmodel-api 127.0.0.1\n",
    )?;
    let jupyter = sidecar("jupyter", jupyter_app, grpc, &hosts, &sidecar_token).await?;
    let models = sidecar("model-api", models_app, grpc, &hosts, &sidecar_token).await?;
    println!("  controller        gRPC {grpc}, API http://{http}");
    println!(
        "  jupyter           app {jupyter_app}, sidecar in {} out {}",
        jupyter.inbound(),
        jupyter.outbound()
    );
    println!(
        "  model-api         app {models_app}, sidecar in {} out {}",
        models.inbound(),
        models.outbound()
    );
    println!("  pypi.demo:{}   an external package index", pypi.port());
    println!(
        "  pool.minexmr.demo:{}  a Monero mining pool (Stratum)",
        pool.port()
    );
    let pypi_url = format!("http://pypi.demo:{}/simple/numpy/", pypi.port());
    let models_url = format!(
        "http://model-api:{}/v1/models/8412/predict",
        models.inbound().port()
    );
    let pool_authority = format!("pool.minexmr.demo:{}", pool.port());

    say(
        "1. Learning: normal traffic (a user opens the notebook, it calls the model API and installs a package)",
    );
    for round in 0..3 {
        let user = send(
            jupyter.inbound(),
            Method::GET,
            "/lab/tree/analysis.ipynb",
            None,
            None,
        )
        .await?;
        let call = get_via(jupyter.outbound(), &models_url).await?;
        let pip = get_via(jupyter.outbound(), &pypi_url).await?;
        if round == 0 {
            show("internet -> jupyter  GET /lab/tree/analysis.ipynb", &user);
            show(
                &format!("jupyter -> model-api GET {}", "/v1/models/8412/predict"),
                &call,
            );
            show("jupyter -> pypi.demo GET /simple/numpy/", &pip);
        }
    }
    tokio::time::sleep(Duration::from_millis(REPORT_MS * 3)).await;
    let graph = api_get(http, &token, "/api/v1/graph").await?;
    println!(
        "  learned {} edges:",
        graph["edges"].as_array().map_or(0, Vec::len)
    );
    for e in graph["edges"].as_array().into_iter().flatten() {
        println!(
            "    {} -> {}  ({} requests)",
            e["source"].as_str().unwrap_or(""),
            e["target"].as_str().unwrap_or(""),
            e["requests"]
        );
    }

    say("2. Switching to enforcement (vigilctl mode enforcement)");
    let (status, body) = send(
        http,
        Method::PUT,
        "/api/v1/mode",
        Some(&token),
        Some(r#"{"mode":"enforcement"}"#.into()),
    )
    .await?;
    println!("  PUT /api/v1/mode -> {status} {body}");
    jupyter.wait_enforcing().await;
    show(
        "jupyter -> model-api (known)",
        &get_via(jupyter.outbound(), &models_url).await?,
    );
    show(
        "jupyter -> pypi.demo (known)",
        &get_via(jupyter.outbound(), &pypi_url).await?,
    );

    say("3. An attacker deploys a miner through the open dashboard");
    let miner_app = serve_http("xmrig").await?;
    let miner = sidecar("xmrig-miner", miner_app, grpc, &hosts, &sidecar_token).await?;
    miner.wait_enforcing().await;
    show(
        &format!("xmrig-miner CONNECT {pool_authority}"),
        &connect_via(miner.outbound(), &pool_authority).await?,
    );
    show(
        &format!("jupyter CONNECT {pool_authority}"),
        &connect_via(jupyter.outbound(), &pool_authority).await?,
    );
    show(
        "jupyter -> pypi.demo (known, still fine)",
        &get_via(jupyter.outbound(), &pypi_url).await?,
    );
    tokio::time::sleep(Duration::from_millis(REPORT_MS * 3)).await;
    let alerts = api_get(http, &token, "/api/v1/alerts").await?;
    println!("  alerts:");
    for a in alerts.as_array().into_iter().flatten() {
        println!(
            "    \x1b[31m{:<15}\x1b[0m {}/{} -> {}  {} (x{})",
            a["kind"].as_str().unwrap_or(""),
            a["namespace"].as_str().unwrap_or(""),
            a["workload"].as_str().unwrap_or(""),
            a["destination"]
                .as_str()
                .filter(|d| !d.is_empty())
                .unwrap_or("-"),
            a["action"].as_str().unwrap_or(""),
            a["count"]
        );
    }

    say("Everything keeps running. Explore it:");
    println!("  Web view: http://{http}/   sign in with the admin token: {token}");
    println!(
        "            (or the read-only viewer token: {})",
        controller.viewer_token
    );
    println!("  API:    http://{http}   token: {token}");
    println!("  token file: {}", controller.token_path.display());
    println!(
        "  cargo run -p vigil-controller --bin vigilctl -- --token-file {} graph",
        controller.token_path.display()
    );
    println!("  curl -H 'Authorization: Bearer {token}' http://{http}/api/v1/alerts");
    println!("  curl -x http://{} {pypi_url}", jupyter.outbound());
    println!("  (Ctrl-C to stop)");
    vigil_controller::app::shutdown_signal().await;
    for s in [miner, models, jupyter] {
        s.running.shutdown().await;
    }
    controller.shutdown().await;
    Ok(())
}
