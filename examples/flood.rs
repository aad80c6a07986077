//! Flood benchmark: how the controller holds up when a workload reports a
//! flood of unique denied destinations (a scanner, or a miner rotating pool
//! names). It starts the real `vigil-controller` binary in enforcement,
//! feeds it `N` unique destinations from one simulated sidecar over real
//! gRPC (batches of 1,000 observations, each sent once the previous one is
//! acknowledged), then has a second sidecar report one new destination and
//! times how long until that alert is visible in the API. It prints the
//! flood's duration, the alert delay and the controller's memory (RSS).
//!
//! ```sh
//! cargo build --release --workspace --bins
//! cargo run --release --example flood -- 10000 100000
//! ```

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use vigil_proto::v1;

#[path = "support/controller.rs"]
mod support;
use support::{Controller, api, authorized, rss_mib, start_controller};

const BATCH: usize = 1000;

fn main() -> anyhow::Result<()> {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().context("sizes are numbers of destinations"))
        .collect::<Result<_, _>>()?;
    let sizes = if sizes.is_empty() {
        vec![10_000]
    } else {
        sizes
    };
    let runtime = tokio::runtime::Runtime::new()?;
    println!(
        "| unique destinations | flood time | observations/s | new alert visible after | controller RSS |"
    );
    println!("|---|---|---|---|---|");
    for n in sizes {
        runtime.block_on(run(n))?;
    }
    Ok(())
}

/// One simulated sidecar: registered, with an open report stream.
struct Sidecar {
    identity: v1::Identity,
    tx: tokio::sync::mpsc::Sender<v1::ReportBatch>,
    acks: tonic::Streaming<v1::ReportAck>,
    _policies: tonic::Streaming<v1::Policy>,
    seq: u64,
}

impl Sidecar {
    async fn connect(ctl: &Controller, name: &str) -> anyhow::Result<Self> {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", ctl.grpc))?
            .connect()
            .await?;
        let mut client = v1::controller_client::ControllerClient::new(channel);
        let token = &ctl.sidecar_token;
        let identity = v1::Identity {
            workload: name.into(),
            namespace: "default".into(),
            instance: format!("flood-{name}"),
            ..Default::default()
        };
        let registration = v1::Registration {
            identity: Some(identity.clone()),
            inbound_addrs: vec![],
            proxy_version: "flood".into(),
        };
        let mut policies = client
            .register(authorized(registration, token))
            .await?
            .into_inner();
        policies.message().await?;
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        let acks = client.report(authorized(stream, token)).await?.into_inner();
        Ok(Sidecar {
            identity,
            tx,
            acks,
            _policies: policies,
            seq: 0,
        })
    }

    /// Sends one batch and waits for its acknowledgement.
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

fn denied(authority: String) -> v1::Observation {
    v1::Observation {
        direction: v1::Direction::Outbound.into(),
        protocol: v1::Protocol::Tcp.into(),
        authority,
        count: 1,
        denied: 1,
        ..Default::default()
    }
}

async fn run(n: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ctl = start_controller(dir.path())?;
    api(&ctl, "PUT", "/api/v1/mode", r#"{"mode":"enforcement"}"#)?;
    let mut flooder = Sidecar::connect(&ctl, "scanner").await?;
    let mut marker = Sidecar::connect(&ctl, "marker").await?;
    let start = Instant::now();
    for chunk in (0..n).step_by(BATCH) {
        let batch = (chunk..(chunk + BATCH).min(n))
            .map(|i| denied(format!("x{i}.pool.test:3333")))
            .collect();
        flooder.report(batch).await?;
    }
    let flood = start.elapsed();
    let sent = Instant::now();
    marker
        .report(vec![denied("new.marker.test:443".into())])
        .await?;
    loop {
        if api(&ctl, "GET", "/api/v1/alerts", "")?.contains("new.marker.test:443") {
            break;
        }
        if sent.elapsed() > Duration::from_secs(120) {
            bail!("the marker's alert never showed");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let delay = sent.elapsed();
    println!(
        "| {n} | {:.2} s | {:.0} | {:.0} ms | {:.1} MiB |",
        flood.as_secs_f64(),
        n as f64 / flood.as_secs_f64(),
        delay.as_secs_f64() * 1000.0,
        rss_mib(ctl.child.id())
    );
    Ok(())
}
