//! Notifications: every alert the engine raises or updates, sent to a Slack
//! incoming webhook and/or a generic JSON webhook signed with HMAC-SHA256.
//!
//! Off to the side of the pipeline, fed by the engine's broadcast of alert
//! events ([`crate::engine::Handle::subscribe_alerts`]), so the engine
//! never waits on it: a notifier that falls behind loses events from the
//! broadcast (counted as `dropped`) and catches up from the latest snapshot
//! of alerts. Per sink, [`dedup::Core`] decides what to send (severity
//! filter, de-duplication per alert id per window, rate limit), then the
//! sink's own task delivers in order with retries ([`sink`], [`retry`]).
//! Everything is counted in `vigil_controller_notifications_total` and in
//! the `notifications` of `GET /api/v1/status` ([`status`]).
//!
//! Depends on the model and the engine's handle only; nothing depends on it
//! but the wiring and the status API.

pub mod config;
pub mod dedup;
pub mod http;
pub mod payload;
pub mod retry;
pub mod sink;
pub mod status;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::Instant;

pub use config::{ConfigError, NotifyArgs, Settings};
pub use status::{NotificationsView, NotifyMetrics, SinkKind, SinkView, Status};

use crate::model::Alert;
use dedup::{Core, Message, Policy};
use status::{Outcome, SinkStats};

/// Why the notifiers could not start.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// A flag is wrong or a secret file unreadable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The HTTP client could not be built.
    #[error("cannot set up the {sink} notifier: {source}")]
    Client {
        /// Which sink.
        sink: &'static str,
        /// The cause.
        source: http::DeliveryError,
    },
}

/// One sink as the decision loop sees it.
pub struct Lane {
    core: Core,
    queue: mpsc::Sender<Message>,
    stats: SinkStats,
}

impl Lane {
    /// A lane deciding with `policy` from `now`, handing messages to
    /// `queue`.
    pub fn new(
        policy: Policy,
        now: Instant,
        queue: mpsc::Sender<Message>,
        stats: SinkStats,
    ) -> Self {
        Self {
            core: Core::new(policy, now),
            queue,
            stats,
        }
    }

    fn apply(&mut self, step: dedup::Step) {
        self.stats.tally(step.tally);
        for message in step.send {
            if self.queue.try_send(message).is_err() {
                // The receiver is slower than the rate limit: drop, count.
                self.stats.count(Outcome::dropped, 1);
            }
        }
    }
}

/// Starts the notifiers `args` configure (none when no sink is); returns
/// their live status.
pub fn start(
    args: &NotifyArgs,
    data_dir: &std::path::Path,
    engine: &crate::engine::Handle,
    registry: &mut prometheus_client::registry::Registry,
    stop: watch::Receiver<bool>,
) -> Result<Status, NotifyError> {
    let status = Status::default();
    let Some(settings) = args.resolve(data_dir)? else {
        return Ok(status);
    };
    let metrics = NotifyMetrics::register(registry);
    let policy = Policy {
        window: settings.window,
        min_severity: settings.min_severity,
        per_minute: settings.per_minute,
    };
    let mut sinks = Vec::new();
    if let Some(url) = settings.slack.clone() {
        let sink = http::HttpSink::new(url, http::Format::Slack).map_err(|source| {
            NotifyError::Client {
                sink: "slack",
                source,
            }
        })?;
        sinks.push((SinkKind::slack, sink));
    }
    if let Some((url, key)) = settings.webhook.clone() {
        let format = http::Format::Webhook {
            key: Arc::from(key),
        };
        let sink = http::HttpSink::new(url, format).map_err(|source| NotifyError::Client {
            sink: "webhook",
            source,
        })?;
        sinks.push((SinkKind::webhook, sink));
    }
    let now = Instant::now();
    let mut lanes = Vec::new();
    for (kind, sink) in sinks {
        let stats = SinkStats::new(kind, metrics.clone(), status.clone());
        let (tx, rx) = mpsc::channel(sink::QUEUE);
        tokio::spawn(sink::run(sink, rx, stats.clone(), stop.clone()));
        lanes.push(Lane::new(policy, now, tx, stats));
    }
    let events = engine.subscribe_alerts();
    let handle = engine.clone();
    let current = move || handle.snapshot().alerts.to_vec();
    tracing::info!(?settings, "notifications on");
    tokio::spawn(run(events, current, lanes, stop));
    Ok(status)
}

/// The decision loop: feeds each alert event to every lane and wakes at the
/// lanes' deadlines (window ends, rate-limit tokens). `current` gives the
/// alerts as they stand, to skip what was already known at start and to
/// catch up after falling behind the broadcast.
pub async fn run(
    mut events: broadcast::Receiver<Alert>,
    current: impl Fn() -> Vec<Alert> + Send + 'static,
    mut lanes: Vec<Lane>,
    mut stop: watch::Receiver<bool>,
) {
    // The count of each alert already seen: an event that adds nothing
    // (known at start, or re-read after catching up) is not news.
    let mut seen: HashMap<String, u64> = current().into_iter().map(|a| (a.id, a.count)).collect();
    loop {
        let now = Instant::now();
        let deadline = lanes.iter().filter_map(|l| l.core.next_deadline(now)).min();
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            event = events.recv() => match event {
                Ok(alert) => offer(&mut lanes, &mut seen, alert),
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "the notifier fell behind the alert events; catching up from the current alerts");
                    for lane in &lanes {
                        lane.stats.count(Outcome::dropped, missed);
                    }
                    for alert in current() {
                        offer(&mut lanes, &mut seen, alert);
                    }
                }
                Err(RecvError::Closed) => return,
            },
            () = sleep_until(deadline) => {
                let now = Instant::now();
                for lane in &mut lanes {
                    let step = lane.core.tick(now);
                    lane.apply(step);
                }
            }
        }
    }
}

fn offer(lanes: &mut [Lane], seen: &mut HashMap<String, u64>, alert: Alert) {
    let known = seen.get(&alert.id).copied();
    if known.is_some_and(|count| alert.count <= count) {
        return;
    }
    seen.insert(alert.id.clone(), alert.count);
    let now = Instant::now();
    for lane in lanes.iter_mut() {
        let step = lane.core.offer(alert.clone(), now);
        lane.apply(step);
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
