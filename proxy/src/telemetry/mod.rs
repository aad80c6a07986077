//! Telemetry: request records go into a bounded channel that drops and
//! counts when full (it never blocks a request); an aggregator task merges
//! them and emits one report batch per interval.
//!
//! Data-path tier: must not depend on `control` or `admin`; batches leave
//! through a plain channel.

mod aggregate;
pub mod metrics;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use vigil_proto::v1;

pub use aggregate::{Aggregator, MAX_KEYS};

use crate::model::Record;

/// Capacity of the record channel.
pub const RECORD_CAPACITY: usize = 8192;

/// How often the aggregator drains the record channel. It never waits on
/// the channel itself: a receiver that waits must be woken by every record,
/// which costs the data path a cross-thread wake-up (an `eventfd` write and
/// a context switch on a pinned core) per request. Polled at this period
/// the channel holds at most a few thousand records at the proxy's
/// saturated rate, well inside [`RECORD_CAPACITY`].
pub const DRAIN_INTERVAL: Duration = Duration::from_millis(20);

/// Cheap, cloneable handle that request paths emit records through.
#[derive(Clone, Debug)]
pub struct Telemetry {
    tx: mpsc::Sender<Record>,
    dropped: Arc<AtomicU64>,
    dropped_total: Counter,
}

impl Telemetry {
    /// Emits a record, or counts it as dropped when the channel is full.
    pub fn emit(&self, record: Record) {
        if self.tx.try_send(record).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            self.dropped_total.inc();
        }
    }
}

/// The receiving side, consumed by [`spawn_aggregator`].
#[derive(Debug)]
pub struct Records {
    rx: mpsc::Receiver<Record>,
    dropped: Arc<AtomicU64>,
    metrics: metrics::ObservedMetrics,
}

impl Records {
    /// A record already emitted, if any (for tests of the emitting side).
    pub fn try_next(&mut self) -> Option<Record> {
        self.rx.try_recv().ok()
    }
}

/// Creates the record channel and registers its metrics.
pub fn channel(registry: &mut Registry) -> (Telemetry, Records) {
    let (tx, rx) = mpsc::channel(RECORD_CAPACITY);
    let dropped = Arc::new(AtomicU64::new(0));
    let dropped_total = Counter::default();
    registry.register(
        "vigil_proxy_telemetry_dropped",
        "Observations dropped because a telemetry buffer was full",
        dropped_total.clone(),
    );
    (
        Telemetry {
            tx,
            dropped: dropped.clone(),
            dropped_total,
        },
        Records {
            rx,
            dropped,
            metrics: metrics::ObservedMetrics::register(registry),
        },
    )
}

/// Spawns the aggregator: every `interval` (and once more when `shutdown`
/// turns true) it sends a batch to `batches`. The task ends after the final
/// flush, dropping `batches`.
pub fn spawn_aggregator(
    mut records: Records,
    identity: v1::Identity,
    interval: Duration,
    batches: mpsc::Sender<v1::ReportBatch>,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut agg = Aggregator::new(MAX_KEYS);
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let mut drain = tokio::time::interval(DRAIN_INTERVAL.min(interval));
        drain.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = drain.tick() => drain_into(&mut agg, &mut records),
                _ = tick.tick() => {
                    drain_into(&mut agg, &mut records);
                    flush(&mut agg, &records, &identity, &batches);
                }
                _ = crate::model::stopped(&mut shutdown) => break,
            }
        }
        drain_into(&mut agg, &mut records);
        flush(&mut agg, &records, &identity, &batches);
    })
}

/// Moves every record waiting in the channel into `agg`.
fn drain_into(agg: &mut Aggregator, records: &mut Records) {
    while let Ok(record) = records.rx.try_recv() {
        records.metrics.observe(&record);
        agg.add(record);
    }
}

fn flush(
    agg: &mut Aggregator,
    records: &Records,
    identity: &v1::Identity,
    batches: &mpsc::Sender<v1::ReportBatch>,
) {
    agg.add_dropped(records.dropped.swap(0, Ordering::Relaxed));
    if let Some(batch) = agg.take_batch(identity) {
        let lost = batch.observations.len() as u64;
        if batches.try_send(batch).is_err() {
            // The report task is gone or far behind: count what is lost.
            records.dropped.fetch_add(lost, Ordering::Relaxed);
        }
    }
}
