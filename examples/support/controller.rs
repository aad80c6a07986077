//! Shared by the controller benchmarks (`flood`, `controller_load`): starts
//! the real `vigil-controller` binary built next to the example, calls its
//! HTTP API, reads its memory and threads from `/proc`, and authorises gRPC
//! requests with its sidecar token.

// Each example uses only part of this module.
#![allow(dead_code)]

use std::io::{BufRead, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The controller binary next to this example's directory.
pub fn controller_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().and_then(Path::parent).context("target dir")?;
    let path = dir.join("vigil-controller");
    if !path.exists() {
        bail!(
            "{} is missing: cargo build --release --workspace --bins",
            path.display()
        );
    }
    Ok(path)
}

/// A running controller, killed when dropped.
pub struct Controller {
    /// The process.
    pub child: Child,
    /// Its gRPC address (sidecars).
    pub grpc: SocketAddr,
    /// Its HTTP API address.
    pub http: SocketAddr,
    /// Bearer token of the API.
    pub admin_token: String,
    /// Bearer token of the sidecars.
    pub sidecar_token: String,
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Starts a controller with its state in `dir`; returns once its API
/// answers.
pub fn start_controller(dir: &Path) -> anyhow::Result<Controller> {
    let (grpc, http) = (
        SocketAddr::from(([127, 0, 0, 1], free_port()?)),
        SocketAddr::from(([127, 0, 0, 1], free_port()?)),
    );
    let child = Command::new(controller_binary()?)
        .args([
            "--grpc-addr",
            &grpc.to_string(),
            "--http-addr",
            &http.to_string(),
        ])
        .arg("--data-dir")
        .arg(dir)
        .env("VIGIL_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let start = Instant::now();
    while TcpStream::connect(http).is_err() {
        if start.elapsed() > Duration::from_secs(20) {
            bail!("the controller did not start");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).map(|s| s.trim().to_owned());
    Ok(Controller {
        child,
        grpc,
        http,
        admin_token: read("admin.token")?,
        sidecar_token: read("sidecar.token")?,
    })
}

/// A plain HTTP/1.1 call to the controller's API; returns the body.
pub fn api(ctl: &Controller, method: &str, path: &str, body: &str) -> anyhow::Result<String> {
    api_at(ctl.http, &ctl.admin_token, method, path, body)
}

/// [`api`] with the address and token given (for blocking tasks).
pub fn api_at(
    http: SocketAddr,
    token: &str,
    method: &str,
    path: &str,
    body: &str,
) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect(http)?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {http}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    // The head line by line, then the body into a buffer of its
    // Content-Length: a large body (the graph of 50,000 edges is 19 MB) is
    // copied once, so the timings are the server's more than this client's.
    let mut reader = std::io::BufReader::with_capacity(64 << 10, stream);
    let (mut status, mut length, mut line) = (String::new(), None, String::new());
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        if status.is_empty() {
            status = line.trim_end().to_owned();
        } else if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse::<usize>().ok();
        }
    }
    let mut body = Vec::with_capacity(length.unwrap_or(0));
    reader.read_to_end(&mut body)?;
    let body = String::from_utf8(body).context("a UTF-8 body")?;
    if !status.starts_with("HTTP/1.1 2") {
        bail!(
            "{method} {path}: {status} {}",
            body.chars().take(300).collect::<String>()
        );
    }
    Ok(body)
}

/// The resident memory of `pid`, MiB.
pub fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

/// CPU seconds (user + system) the thread of `pid` named `name` used so
/// far, from `/proc/<pid>/task/*/stat`; 0 when there is none.
pub fn thread_cpu_secs(pid: u32, name: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0.0;
    };
    let mut ticks = 0u64;
    for task in tasks.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() != name {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // Fields after the command (which may hold spaces): state is field
        // 3, utime 14 and stime 15.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
        ticks += field(14).unwrap_or(0) + field(15).unwrap_or(0);
    }
    // USER_HZ is 100 on Linux.
    ticks as f64 / 100.0
}

/// A gRPC request carrying the sidecar token.
pub fn authorized<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii"),
    );
    request
}

/// Sends one report batch of `identity` (numbered after `seq`, which it
/// advances) on `tx` and waits for its acknowledgement on `acks`.
pub async fn report_acked(
    identity: &vigil_proto::v1::Identity,
    seq: &mut u64,
    tx: &tokio::sync::mpsc::Sender<vigil_proto::v1::ReportBatch>,
    acks: &mut tonic::Streaming<vigil_proto::v1::ReportAck>,
    observations: Vec<vigil_proto::v1::Observation>,
) -> anyhow::Result<()> {
    *seq += 1;
    let batch = vigil_proto::v1::ReportBatch {
        identity: Some(identity.clone()),
        seq: *seq,
        observations,
        dropped: 0,
    };
    tx.send(batch).await?;
    let ack = acks.message().await?.context("the ack stream ended")?;
    if ack.seq != *seq {
        bail!("ack {} for batch {}", ack.seq, seq);
    }
    Ok(())
}
