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

/// How often the aggregator drains the record channel while records come.
/// It does not wait on the channel then: a receiver that waits must be
/// woken by every record, which costs the data path a cross-thread wake-up
/// (an `eventfd` write and a context switch on a pinned core) per request.
/// Polled at this period the channel holds at most a few thousand records
/// at the proxy's saturated rate, well inside [`RECORD_CAPACITY`]. A drain
/// that finds nothing makes the aggregator wait on the channel instead, so
/// an idle sidecar is not woken 50 times a second, and the first record
/// after the lull wakes it once.
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
    records: Records,
    identity: v1::Identity,
    interval: Duration,
    batches: mpsc::Sender<v1::ReportBatch>,
    shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(aggregate(records, identity, interval, batches, shutdown))
}

/// The aggregator's task (see [`spawn_aggregator`]).
async fn aggregate(
    mut records: Records,
    identity: v1::Identity,
    interval: Duration,
    batches: mpsc::Sender<v1::ReportBatch>,
    mut shutdown: watch::Receiver<bool>,
) {
    {
        let mut agg = Aggregator::new(MAX_KEYS);
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let mut drain = tokio::time::interval(DRAIN_INTERVAL.min(interval));
        drain.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Records came in the last drain period: drain on the clock rather
        // than wait on the channel. `open`: some sender is left.
        let (mut flowing, mut open) = (false, true);
        loop {
            tokio::select! {
                record = records.rx.recv(), if open && !flowing => match record {
                    Some(record) => {
                        records.metrics.observe(&record);
                        agg.add(record);
                        flowing = true;
                        drain.reset();
                    }
                    None => open = false,
                },
                _ = drain.tick(), if flowing => {
                    flowing = drain_into(&mut agg, &mut records) > 0;
                }
                _ = tick.tick() => {
                    drain_into(&mut agg, &mut records);
                    flush(&mut agg, &records, &identity, &batches);
                }
                _ = crate::model::stopped(&mut shutdown) => break,
            }
        }
        drain_into(&mut agg, &mut records);
        flush(&mut agg, &records, &identity, &batches);
    }
}

/// Moves every record waiting in the channel into `agg`; how many.
fn drain_into(agg: &mut Aggregator, records: &mut Records) -> usize {
    let mut moved = 0;
    while let Ok(record) = records.rx.try_recv() {
        records.metrics.observe(&record);
        agg.add(record);
        moved += 1;
    }
    moved
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

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::atomic::AtomicUsize;
    use std::task::{Context, Poll};

    use super::*;
    use crate::model::{Direction, Protocol};

    /// A future that counts how often it is polled: each poll of the
    /// aggregator is one time its thread was woken for it.
    struct Counted<F> {
        inner: Pin<Box<F>>,
        polls: Arc<AtomicUsize>,
    }

    impl<F: Future> Future for Counted<F> {
        type Output = F::Output;

        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
            self.polls.fetch_add(1, Ordering::Relaxed);
            self.inner.as_mut().poll(cx)
        }
    }

    fn record() -> Record {
        Record {
            authority: "pypi.org:443".into(),
            method: "GET".into(),
            path: "/simple".into(),
            status: 200,
            ..Record::new(Direction::Outbound, Protocol::Http1)
        }
    }

    fn counted(batch: &v1::ReportBatch) -> u64 {
        batch.observations.iter().map(|o| o.count).sum()
    }

    /// An idle sidecar's aggregator wakes for its report tick, not for
    /// every drain period; the first record after a lull wakes it and is
    /// reported; while records flow it drains on the clock instead of
    /// being woken by each one; and with every sender gone it still
    /// reports on its tick without spinning.
    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn the_aggregator_sleeps_while_idle_and_drains_while_records_flow() {
        let (telemetry, records) = channel(&mut Registry::default());
        let (batches_tx, mut batches) = mpsc::channel(16);
        let (stop, shutdown) = watch::channel(false);
        let polls = Arc::new(AtomicUsize::new(0));
        let interval = Duration::from_secs(1);
        let task = tokio::spawn(Counted {
            inner: Box::pin(aggregate(
                records,
                v1::Identity::default(),
                interval,
                batches_tx,
                shutdown,
            )),
            polls: polls.clone(),
        });
        let polled = || polls.load(Ordering::Relaxed);

        tokio::time::sleep(Duration::from_secs(10)).await;
        let idle = polled();
        assert!(
            idle <= 15,
            "{idle} polls in 10 idle seconds (10 report ticks)"
        );
        assert!(batches.try_recv().is_err(), "nothing to report");

        telemetry.emit(record());
        tokio::time::sleep(interval).await;
        assert_eq!(counted(&batches.recv().await.unwrap()), 1, "after a lull");

        let before = polled();
        for _ in 0..200 {
            telemetry.emit(record());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let flowing = polled() - before;
        assert!(
            flowing < 100,
            "{flowing} polls for 200 records in 1 s: woken per record"
        );
        tokio::time::sleep(interval).await;
        let mut reported = 0;
        while let Ok(batch) = batches.try_recv() {
            reported += counted(&batch);
        }
        assert_eq!(reported, 200);

        telemetry.emit(record());
        drop(telemetry);
        let before = polled();
        tokio::time::sleep(interval * 3).await;
        assert_eq!(counted(&batches.recv().await.unwrap()), 1, "senders gone");
        assert!(polled() - before <= 10, "spinning on a closed channel");
        stop.send(true).unwrap();
        task.await.unwrap();
    }
}
