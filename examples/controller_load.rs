//! Controller load generator: simulated sidecars against the real
//! `vigil-controller` binary over real gRPC (and its real HTTP API).
//!
//! A simulated sidecar is what the controller sees of a `vigil-proxy`: one
//! `Register` call whose policy stream it keeps reading (counting messages
//! and bytes), one `Report` stream on which it sends batches of
//! observations and waits for their acks, and a tokio task. Sidecars share
//! HTTP/2 connections (`--per-connection`, 50 by default: 100 streams per
//! connection); no proxy process, no data path. The observations are those
//! a notebook's sidecar reports: calls to a few other workloads of the
//! namespace (`wN:8080`, HTTP with an endpoint), egress to a few of a set
//! of external domains (TLS), and the odd DNS query.
//!
//! Scenarios (`--scenario`), each printing a Markdown table:
//! - `throughput`: `--sidecars` sidecars send batches of `--batch`
//!   observations back to back (one in flight each): observations/s
//!   acknowledged and the ack latency.
//! - `steady`: the same at one batch per `--interval-ms` per sidecar:
//!   the engine thread's CPU (from `/proc/<pid>/task/*/stat`, the thread
//!   named `vigil-engine`).
//! - `policy`: `--sidecars` sidecars register at once: policy messages and
//!   bytes sent until quiet; then a mode change (`PUT /api/v1/mode`) timed
//!   until every sidecar's stream carries it (`--repeat` times).
//! - `graph`: `--workloads` workloads with `--edges` edges each (registered,
//!   the edges imported as baseline then reported): the ack latency of a
//!   batch that learns one new edge, `GET /api/v1/graph` and
//!   `GET /api/v1/alerts` latency (after `--alerts` alerts), and the
//!   controller's RSS per workload and per edge.
//!
//! ```sh
//! cargo build --release --workspace --bins --examples
//! target/release/examples/controller_load --scenario throughput --sidecars 200 --batch 10
//! target/release/examples/controller_load --scenario steady --sidecars 5000 --batch 10
//! target/release/examples/controller_load --scenario policy --sidecars 1000
//! target/release/examples/controller_load --scenario graph --workloads 5000 --edges 10
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::{Parser, ValueEnum};
use prost::Message;
use tokio::sync::mpsc;
use tonic::transport::Channel;
use vigil_proto::v1;

#[path = "support/controller.rs"]
mod support;
use support::{Controller, api_at, authorized, rss_mib, start_controller, thread_cpu_secs};

/// The namespace every simulated workload lives in.
const NAMESPACE: &str = "load";
/// External domains the workloads reach (each reaches a few).
const DOMAINS: usize = 2000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Scenario {
    Throughput,
    Steady,
    Policy,
    Graph,
}

/// Loads a real controller with simulated sidecars.
#[derive(Debug, Parser)]
struct Args {
    /// What to measure.
    #[arg(long, value_enum)]
    scenario: Scenario,
    /// Simulated sidecars (one workload each).
    #[arg(long, default_value_t = 200)]
    sidecars: usize,
    /// Observations per batch.
    #[arg(long, default_value_t = 10)]
    batch: usize,
    /// `steady`: milliseconds between a sidecar's batches.
    #[arg(long, default_value_t = 1000)]
    interval_ms: u64,
    /// How long to load, seconds (`throughput`, `steady`).
    #[arg(long, default_value_t = 10)]
    secs: u64,
    /// Sidecars per HTTP/2 connection.
    #[arg(long, default_value_t = 50)]
    per_connection: usize,
    /// `graph`: workloads.
    #[arg(long, default_value_t = 500)]
    workloads: usize,
    /// `graph`: edges per workload (half to workloads, half external).
    #[arg(long, default_value_t = 10)]
    edges: usize,
    /// `graph`: alerts raised before the alert query is timed.
    #[arg(long, default_value_t = 1000)]
    alerts: usize,
    /// Repetitions of the timed step (`policy`, `graph`).
    #[arg(long, default_value_t = 5)]
    repeat: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    let dir = tempfile::tempdir()?;
    let ctl = Arc::new(start_controller(dir.path())?);
    runtime.block_on(async {
        match args.scenario {
            Scenario::Throughput | Scenario::Steady => load(&ctl, &args).await,
            Scenario::Policy => policy(&ctl, &args).await,
            Scenario::Graph => graph(&ctl, &args).await,
        }
    })
}

/// The name of simulated workload `i`.
fn workload(i: usize) -> String {
    format!("w{i}")
}

/// The `k`-th destination of workload `i` among `n` workloads: even `k` a
/// peer workload, odd an external domain. Returns (authority, is a
/// workload).
fn destination(i: usize, k: usize, n: usize) -> (String, bool) {
    if k.is_multiple_of(2) && n > 1 {
        let peer = (i + 1 + k * 7919) % n;
        let peer = if peer == i { (peer + 1) % n } else { peer };
        (format!("{}:8080", workload(peer)), true)
    } else {
        (
            format!("svc-{}.example.com:443", (i * 31 + k * 17) % DOMAINS),
            false,
        )
    }
}

/// A realistic observation of workload `i`: the `j`-th of its batch, over
/// `edges` destinations; `http` adds a method and path to calls to
/// workloads.
fn observation(i: usize, j: usize, n: usize, edges: usize, http: bool) -> v1::Observation {
    let k = j % edges.max(1);
    let (authority, to_workload) = destination(i, k, n);
    let count = 1 + (i + j) as u64 % 20;
    if j % 50 == 49 {
        return v1::Observation {
            direction: v1::Direction::Outbound.into(),
            protocol: v1::Protocol::Dns.into(),
            authority: format!("svc-{}.example.com", (i + j) % DOMAINS),
            method: "A".into(),
            count,
            ..Default::default()
        };
    }
    let (protocol, method, path) = if to_workload && http {
        (
            v1::Protocol::Http1,
            "GET".to_owned(),
            format!("/api/items/{{id}}/v{}", j % 4),
        )
    } else if to_workload {
        (v1::Protocol::Grpc, String::new(), String::new())
    } else {
        (v1::Protocol::Tls, String::new(), String::new())
    };
    v1::Observation {
        direction: v1::Direction::Outbound.into(),
        protocol: protocol.into(),
        authority,
        method,
        path,
        status: if to_workload && http { 200 } else { 0 },
        count,
        bytes_in: 300 * count,
        bytes_out: 2000 * count,
        latency_sum_us: 1500 * count,
        ..Default::default()
    }
}

/// HTTP/2 connections to the controller, shared by `per` sidecars each.
async fn channels(ctl: &Controller, sidecars: usize, per: usize) -> anyhow::Result<Vec<Channel>> {
    let mut out = Vec::new();
    for _ in 0..sidecars.div_ceil(per.max(1)) {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", ctl.grpc))?
            .connect()
            .await?;
        out.push(channel);
    }
    Ok(out)
}

/// What the policy streams of all sidecars received.
#[derive(Default)]
struct PolicyCounts {
    messages: AtomicU64,
    bytes: AtomicU64,
    /// Sidecars whose latest policy enforces.
    enforcing: AtomicU64,
    /// Unix nanoseconds of the latest message.
    last_at: AtomicU64,
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// One simulated sidecar: registered (its policy stream read by a task),
/// with an open report stream.
struct Sidecar {
    index: usize,
    identity: v1::Identity,
    tx: mpsc::Sender<v1::ReportBatch>,
    acks: tonic::Streaming<v1::ReportAck>,
    seq: u64,
}

impl Sidecar {
    /// Registers workload `index`; with `keep_policy` its policy stream
    /// stays open and is read into `counts`, else it is dropped after the
    /// first policy.
    async fn connect(
        channel: Channel,
        token: &str,
        index: usize,
        counts: Option<Arc<PolicyCounts>>,
    ) -> anyhow::Result<Self> {
        let mut client = v1::controller_client::ControllerClient::new(channel);
        let identity = v1::Identity {
            workload: workload(index),
            namespace: NAMESPACE.into(),
            instance: format!("load-{index}"),
            ..Default::default()
        };
        let registration = v1::Registration {
            identity: Some(identity.clone()),
            inbound_addrs: vec![format!(
                "10.{}.{}.{}:4143",
                index / 65536 % 256,
                index / 256 % 256,
                index % 256
            )],
            proxy_version: "load".into(),
        };
        let mut policies = client
            .register(authorized(registration, token))
            .await?
            .into_inner();
        if let Some(counts) = counts {
            tokio::spawn(async move {
                let mut enforcing = false;
                while let Ok(Some(policy)) = policies.message().await {
                    counts.messages.fetch_add(1, Ordering::Relaxed);
                    counts
                        .bytes
                        .fetch_add(policy.encoded_len() as u64, Ordering::Relaxed);
                    counts.last_at.store(now_nanos(), Ordering::Relaxed);
                    if policy.enforce != enforcing {
                        enforcing = policy.enforce;
                        if enforcing {
                            counts.enforcing.fetch_add(1, Ordering::Relaxed);
                        } else {
                            counts.enforcing.fetch_sub(1, Ordering::Relaxed);
                        }
                    }
                }
            });
        } else {
            policies.message().await?;
        }
        let (tx, rx) = mpsc::channel(2);
        let acks = client
            .report(authorized(
                tokio_stream::wrappers::ReceiverStream::new(rx),
                token,
            ))
            .await?
            .into_inner();
        Ok(Sidecar {
            index,
            identity,
            tx,
            acks,
            seq: 0,
        })
    }

    /// Sends one batch and waits for its ack.
    async fn report(&mut self, observations: Vec<v1::Observation>) -> anyhow::Result<()> {
        support::report_acked(
            &self.identity,
            &mut self.seq,
            &self.tx,
            &mut self.acks,
            observations,
        )
        .await
    }
}

/// Registers `n` sidecars (at most 64 registrations in flight).
async fn connect_all(
    ctl: &Controller,
    n: usize,
    per: usize,
    counts: Option<Arc<PolicyCounts>>,
) -> anyhow::Result<Vec<Sidecar>> {
    let channels = channels(ctl, n, per).await?;
    let token: Arc<str> = ctl.sidecar_token.clone().into();
    let (done_tx, mut done_rx) = mpsc::channel(n.max(1));
    let gate = Arc::new(tokio::sync::Semaphore::new(64));
    for i in 0..n {
        let (channel, token, counts, done_tx, gate) = (
            channels[i / per.max(1)].clone(),
            token.clone(),
            counts.clone(),
            done_tx.clone(),
            gate.clone(),
        );
        tokio::spawn(async move {
            let _permit = gate.acquire().await;
            let _ = done_tx
                .send(Sidecar::connect(channel, &token, i, counts).await)
                .await;
        });
    }
    drop(done_tx);
    let mut out = Vec::with_capacity(n);
    while let Some(sidecar) = done_rx.recv().await {
        out.push(sidecar?);
    }
    out.sort_by_key(|s| s.index);
    Ok(out)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

/// An API call on a blocking thread.
async fn call(ctl: &Controller, method: &str, path: &str, body: String) -> anyhow::Result<String> {
    let (http, token) = (ctl.http, ctl.admin_token.clone());
    let (method, path) = (method.to_owned(), path.to_owned());
    tokio::task::spawn_blocking(move || api_at(http, &token, &method, &path, &body)).await?
}

/// `throughput` and `steady`.
async fn load(ctl: &Controller, args: &Args) -> anyhow::Result<()> {
    let n = args.sidecars;
    let sidecars = connect_all(ctl, n, args.per_connection, None).await?;
    let pid = ctl.child.id();
    let steady = args.scenario == Scenario::Steady;
    let stop = Arc::new(AtomicBool::new(false));
    let warmup = Duration::from_secs(2);
    let (lat_tx, mut lat_rx) = mpsc::unbounded_channel::<(f64, usize)>();
    let mut tasks = Vec::new();
    for mut sidecar in sidecars {
        let (stop, lat_tx) = (stop.clone(), lat_tx.clone());
        let (batch, edges, interval) = (
            args.batch,
            args.edges,
            Duration::from_millis(args.interval_ms),
        );
        tasks.push(tokio::spawn(async move {
            let i = sidecar.index;
            let mut j = 0;
            // Spread the steady senders over one interval.
            let start = tokio::time::Instant::now() + interval.mul_f64(i as f64 / n.max(1) as f64);
            let mut tick = tokio::time::interval_at(start, interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !stop.load(Ordering::Relaxed) {
                if steady {
                    tick.tick().await;
                }
                let observations = (0..batch)
                    .map(|k| observation(i, j + k, n, edges, true))
                    .collect();
                j += batch;
                let sent = Instant::now();
                if let Err(e) = sidecar.report(observations).await {
                    eprintln!("sidecar {i}: {e}");
                    return;
                }
                let _ = lat_tx.send((sent.elapsed().as_secs_f64() * 1000.0, batch));
            }
        }));
    }
    drop(lat_tx);
    tokio::time::sleep(warmup).await;
    while lat_rx.try_recv().is_ok() {}
    let (cpu0, t0) = (thread_cpu_secs(pid, "vigil-engine"), Instant::now());
    let total_cpu0 = process_cpu_secs(pid);
    tokio::time::sleep(Duration::from_secs(args.secs)).await;
    let (cpu1, elapsed) = (thread_cpu_secs(pid, "vigil-engine"), t0.elapsed());
    let total_cpu1 = process_cpu_secs(pid);
    let mut latencies = Vec::new();
    let mut observations = 0usize;
    while let Ok((ms, batch)) = lat_rx.try_recv() {
        latencies.push(ms);
        observations += batch;
    }
    stop.store(true, Ordering::Relaxed);
    let secs = elapsed.as_secs_f64();
    let latencies = sorted(latencies);
    println!(
        "| scenario | sidecars | obs/batch | batches/s | observations/s acked | ack p50 | ack p99 | engine thread CPU | controller CPU | RSS |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {} | {n} | {} | {:.0} | {:.0} | {:.1} ms | {:.1} ms | {:.2} core | {:.2} core | {:.1} MiB |",
        if steady {
            format!("steady, 1 batch / {} ms each", args.interval_ms)
        } else {
            "saturated".to_owned()
        },
        args.batch,
        latencies.len() as f64 / secs,
        observations as f64 / secs,
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        (cpu1 - cpu0) / secs,
        (total_cpu1 - total_cpu0) / secs,
        rss_mib(pid),
    );
    for task in tasks {
        task.abort();
    }
    Ok(())
}

/// CPU seconds the whole process `pid` used so far.
fn process_cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| {
        fields
            .get(n - 3)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (field(14) + field(15)) as f64 / 100.0
}

/// Waits until no policy message arrived for `quiet`; returns when the
/// last one came.
async fn settle(counts: &PolicyCounts, quiet: Duration) -> Instant {
    let mut last = counts.messages.load(Ordering::Relaxed);
    let mut since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = counts.messages.load(Ordering::Relaxed);
        if now != last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= quiet {
            return since;
        }
    }
}

/// `policy`: registration storm, then mode changes.
async fn policy(ctl: &Controller, args: &Args) -> anyhow::Result<()> {
    let n = args.sidecars;
    let counts = Arc::new(PolicyCounts::default());
    let (start, start_nanos) = (Instant::now(), now_nanos());
    let sidecars = connect_all(ctl, n, args.per_connection, Some(counts.clone())).await?;
    let registered = start.elapsed();
    settle(&counts, Duration::from_secs(1)).await;
    let last = counts.last_at.load(Ordering::Relaxed);
    let quiet_after = Duration::from_nanos(last.saturating_sub(start_nanos));
    let (messages, bytes) = (
        counts.messages.load(Ordering::Relaxed),
        counts.bytes.load(Ordering::Relaxed),
    );
    let mut times = Vec::new();
    for r in 0..args.repeat {
        let (mode, want) = if r.is_multiple_of(2) {
            ("enforcement", n as u64)
        } else {
            ("learning", 0)
        };
        let t0 = Instant::now();
        call(
            ctl,
            "PUT",
            "/api/v1/mode",
            format!(r#"{{"mode":"{mode}"}}"#),
        )
        .await?;
        let answered = t0.elapsed();
        while counts.enforcing.load(Ordering::Relaxed) != want {
            if t0.elapsed() > Duration::from_secs(120) {
                bail!("the mode change did not reach every sidecar in 120 s");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        times.push((t0.elapsed().as_secs_f64() * 1000.0, answered));
        settle(&counts, Duration::from_millis(300)).await;
    }
    let all = sorted(times.iter().map(|t| t.0).collect());
    let answered = sorted(times.iter().map(|t| t.1.as_secs_f64() * 1000.0).collect());
    println!(
        "| sidecars | register all | policy messages while registering | policy bytes | last message after | mode change in force at all (median, max) | PUT answered (median) | RSS |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    println!(
        "| {n} | {:.2} s | {messages} | {:.1} MB | {:.2} s | {:.0} ms, {:.0} ms | {:.0} ms | {:.1} MiB |",
        registered.as_secs_f64(),
        bytes as f64 / 1e6,
        quiet_after.as_secs_f64(),
        percentile(&all, 0.5),
        all.last().copied().unwrap_or(0.0),
        percentile(&answered, 0.5),
        rss_mib(ctl.child.id()),
    );
    drop(sidecars);
    Ok(())
}

/// The baseline documents of workloads `0..n`, `edges` each, in parts
/// of at most 500 calling workloads (the YAML reader has a size budget).
fn baseline_docs(n: usize, edges: usize) -> Vec<String> {
    let node = |authority: &str, to_workload: bool| {
        if to_workload {
            let name = authority.trim_end_matches(":8080");
            format!("workload:{NAMESPACE}/{name}")
        } else {
            format!("external:{authority}")
        }
    };
    let mut docs = Vec::new();
    for first in (0..n).step_by(500) {
        let mut workloads = std::collections::BTreeSet::new();
        let mut lines = String::new();
        for i in first..(first + 500).min(n) {
            workloads.insert(workload(i));
            for k in 0..edges {
                let (authority, to_workload) = destination(i, k, n);
                if to_workload {
                    workloads.insert(authority.trim_end_matches(":8080").to_owned());
                }
                lines.push_str(&format!(
                    "    - from: workload:{NAMESPACE}/{}\n      to: {}\n",
                    workload(i),
                    node(&authority, to_workload)
                ));
            }
        }
        let mut doc = format!("version: 1\nnamespaces:\n  {NAMESPACE}:\n    workloads:\n");
        for name in workloads {
            doc.push_str(&format!("    - {name}\n"));
        }
        doc.push_str("    edges:\n");
        doc.push_str(&lines);
        docs.push(doc);
    }
    docs
}

/// Times `count` calls of `GET path`; returns (p50 ms, p99 ms, bytes).
async fn time_get(ctl: &Controller, path: &str, count: usize) -> anyhow::Result<(f64, f64, usize)> {
    let mut times = Vec::new();
    let mut size = 0;
    for _ in 0..count {
        let t0 = Instant::now();
        size = call(ctl, "GET", path, String::new()).await?.len();
        times.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    let times = sorted(times);
    Ok((percentile(&times, 0.5), percentile(&times, 0.99), size))
}

/// How many alerts `GET /api/v1/alerts` shows, once it shows at least
/// `want` (waited for up to 10 s).
async fn alerts_shown(ctl: &Controller, want: usize) -> anyhow::Result<usize> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let body = call(ctl, "GET", "/api/v1/alerts", String::new()).await?;
        let shown = serde_json::from_str::<Vec<serde_json::Value>>(&body)?.len();
        if shown >= want {
            return Ok(shown);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the API shows {shown} alerts of {want} after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `graph`: a large graph, then the cost of one change and of the queries.
async fn graph(ctl: &Controller, args: &Args) -> anyhow::Result<()> {
    let (n, edges) = (args.workloads, args.edges);
    let pid = ctl.child.id();
    let rss_empty = rss_mib(pid);
    let t0 = Instant::now();
    let mut sidecars = connect_all(ctl, n, args.per_connection, None).await?;
    let register_secs = t0.elapsed().as_secs_f64();
    let rss_workloads = rss_mib(pid);
    let t0 = Instant::now();
    for doc in baseline_docs(n, edges) {
        call(ctl, "PUT", "/api/v1/baseline?merge=true", doc).await?;
    }
    let import_secs = t0.elapsed().as_secs_f64();
    // Every workload reports its edges once (all in the baseline: nothing
    // is learned), 64 at a time.
    let t0 = Instant::now();
    let gate = Arc::new(tokio::sync::Semaphore::new(64));
    let mut tasks = Vec::new();
    for mut sidecar in sidecars.drain(..) {
        let gate = gate.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire().await;
            let i = sidecar.index;
            let observations = (0..edges).map(|k| observation(i, k, n, edges, false));
            let observations = observations
                .map(|mut o| {
                    o.protocol = if o.protocol == v1::Protocol::Dns as i32 {
                        v1::Protocol::Tls.into()
                    } else {
                        o.protocol
                    };
                    o
                })
                .collect();
            sidecar.report(observations).await.map(|()| sidecar)
        }));
    }
    for task in tasks {
        sidecars.push(task.await??);
    }
    let report_secs = t0.elapsed().as_secs_f64();
    // Reports are acknowledged once stored; the API's snapshot follows
    // within its pace (100 ms, or 4x its build time): read it once settled.
    let mut status = serde_json::Value::Null;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now: serde_json::Value =
            serde_json::from_str(&call(ctl, "GET", "/api/v1/status", String::new()).await?)?;
        let settled = now["edges"] == status["edges"];
        status = now;
        if settled {
            break;
        }
    }
    let (graph_edges, baseline_edges) = (
        status["edges"].as_u64().unwrap_or(0),
        status["baseline_edges"].as_u64().unwrap_or(0),
    );
    let rss_edges = rss_mib(pid);
    // One new edge per batch, learned (learning mode).
    let mut learn = Vec::new();
    for r in 0..args.repeat.max(1) * 4 {
        let sidecar = &mut sidecars[(r * 7919) % n];
        let o = v1::Observation {
            direction: v1::Direction::Outbound.into(),
            protocol: v1::Protocol::Tls.into(),
            authority: format!("new-{r}.example.org:443"),
            count: 1,
            ..Default::default()
        };
        let t0 = Instant::now();
        sidecar.report(vec![o]).await?;
        learn.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    let learn = sorted(learn);
    // Alerts: enforcement, then unknown destinations.
    call(
        ctl,
        "PUT",
        "/api/v1/mode",
        r#"{"mode":"enforcement"}"#.into(),
    )
    .await?;
    for a in 0..args.alerts {
        let sidecar = &mut sidecars[(a * 31) % n];
        let o = v1::Observation {
            direction: v1::Direction::Outbound.into(),
            protocol: v1::Protocol::Tls.into(),
            authority: format!("unknown-{a}.example.net:443"),
            count: 1,
            ..Default::default()
        };
        sidecar.report(vec![o]).await?;
    }
    // Reports alone publish a snapshot at most every 100 ms: the queries
    // are timed once the API shows every alert (and the graph their edges).
    let shown = alerts_shown(ctl, args.alerts).await?;
    let (graph_p50, graph_p99, graph_bytes) =
        time_get(ctl, "/api/v1/graph", args.repeat.max(1) * 4).await?;
    let (alerts_p50, alerts_p99, alerts_bytes) =
        time_get(ctl, "/api/v1/alerts", args.repeat.max(1) * 4).await?;
    println!(
        "| workloads | graph edges | baseline edges | register | import | report edges | learn one edge p50 / max | GET graph p50 / p99 (size) | GET alerts p50 / p99 (size) | RSS empty / +workloads / +edges | per workload | per edge |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {n} | {graph_edges} | {baseline_edges} | {register_secs:.1} s | {import_secs:.1} s | {report_secs:.1} s | {:.1} / {:.1} ms | {graph_p50:.1} / {graph_p99:.1} ms ({:.1} MB) | {alerts_p50:.1} / {alerts_p99:.1} ms ({:.1} MB, {} alerts) | {rss_empty:.1} / {rss_workloads:.1} / {rss_edges:.1} MiB | {:.1} KiB | {:.2} KiB |",
        percentile(&learn, 0.5),
        learn.last().copied().unwrap_or(0.0),
        graph_bytes as f64 / 1e6,
        alerts_bytes as f64 / 1e6,
        shown,
        (rss_workloads - rss_empty) * 1024.0 / n.max(1) as f64,
        (rss_edges - rss_workloads) * 1024.0 / graph_edges.max(1) as f64,
    );
    Ok(())
}
