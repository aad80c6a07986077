//! What the notifiers did, counted twice: as Prometheus counters
//! (`vigil_controller_notifications_total{sink,result}`) and as the
//! `notifications` object of `GET /api/v1/status` (with each sink's last
//! error), which `vigilctl status` prints.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};

use super::dedup::Tally;

/// Where messages go.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum SinkKind {
    /// A Slack incoming webhook.
    slack,
    /// The generic signed JSON webhook.
    webhook,
}

impl SinkKind {
    /// The name in metrics and status.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::slack => "slack",
            Self::webhook => "webhook",
        }
    }
}

/// What happened, the `result` label.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Outcome {
    /// A message was delivered (2xx).
    sent,
    /// A delivery attempt failed (network error, timeout, non-2xx).
    failed,
    /// An attempt was a retry of a failed one.
    retried,
    /// An alert event was folded into a follow-up message.
    deduplicated,
    /// A message waited for the rate limit.
    rate_limited,
    /// A message was lost: refused (4xx), out of attempts, a full queue, or
    /// alert events the notifier fell behind on.
    dropped,
}

/// Labels of `vigil_controller_notifications_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NotifyLabels {
    /// The sink.
    pub sink: SinkKind,
    /// What happened.
    pub result: Outcome,
}

/// One sink in `GET /api/v1/status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SinkView {
    /// Messages delivered.
    pub sent: u64,
    /// Delivery attempts that failed.
    pub failed: u64,
    /// Retries.
    pub retried: u64,
    /// Alert events folded into follow-ups.
    pub deduplicated: u64,
    /// Messages that waited for the rate limit.
    pub rate_limited: u64,
    /// Messages lost.
    pub dropped: u64,
    /// The latest failure (no URL in it: URLs may hold secrets).
    pub last_error: Option<String>,
    /// RFC 3339 time of the latest failure.
    pub last_error_at: Option<String>,
}

/// The `notifications` object of `GET /api/v1/status`: one entry per
/// configured sink (`slack`, `webhook`); empty when none is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NotificationsView {
    /// By sink name.
    pub sinks: BTreeMap<String, SinkView>,
}

/// The shared, live [`NotificationsView`].
#[derive(Clone, Debug, Default)]
pub struct Status(Arc<Mutex<NotificationsView>>);

impl Status {
    /// A copy of the view now.
    pub fn view(&self) -> NotificationsView {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn update(&self, sink: SinkKind, f: impl FnOnce(&mut SinkView)) {
        let mut view = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        f(view.sinks.entry(sink.as_str().to_owned()).or_default());
    }
}

/// The counters of all sinks.
#[derive(Clone, Debug, Default)]
pub struct NotifyMetrics {
    /// By sink and result.
    pub notifications: Family<NotifyLabels, Counter>,
}

impl NotifyMetrics {
    /// Creates and registers the metrics.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "vigil_controller_notifications",
            "Alert notifications by sink and result (sent, failed, retried, deduplicated, rate_limited, dropped)",
            metrics.notifications.clone(),
        );
        metrics
    }
}

/// One sink's counters, in the metrics and the status at once.
#[derive(Clone, Debug)]
pub struct SinkStats {
    sink: SinkKind,
    metrics: NotifyMetrics,
    status: Status,
}

impl SinkStats {
    /// The counters of `sink` (which then shows in the status, at zero).
    pub fn new(sink: SinkKind, metrics: NotifyMetrics, status: Status) -> Self {
        status.update(sink, |_| {});
        Self {
            sink,
            metrics,
            status,
        }
    }

    /// Which sink.
    pub fn sink(&self) -> SinkKind {
        self.sink
    }

    /// Counts `n` of `result`.
    pub fn count(&self, result: Outcome, n: u64) {
        if n == 0 {
            return;
        }
        self.metrics
            .notifications
            .get_or_create(&NotifyLabels {
                sink: self.sink,
                result,
            })
            .inc_by(n);
        self.status.update(self.sink, |v| {
            let field = match result {
                Outcome::sent => &mut v.sent,
                Outcome::failed => &mut v.failed,
                Outcome::retried => &mut v.retried,
                Outcome::deduplicated => &mut v.deduplicated,
                Outcome::rate_limited => &mut v.rate_limited,
                Outcome::dropped => &mut v.dropped,
            };
            *field += n;
        });
    }

    /// Counts what a decision step did.
    pub fn tally(&self, tally: Tally) {
        self.count(Outcome::deduplicated, tally.deduplicated);
        self.count(Outcome::rate_limited, tally.rate_limited);
        self.count(Outcome::dropped, tally.dropped);
    }

    /// Counts a failed attempt and keeps `error` as the last one.
    pub fn failure(&self, error: &str) {
        self.count(Outcome::failed, 1);
        let at = crate::model::rfc3339(crate::model::now_unix());
        self.status.update(self.sink, |v| {
            v.last_error = Some(error.to_owned());
            v.last_error_at = Some(at);
        });
    }
}

/// The `notifications:` lines of `vigilctl status`: per sink what was
/// sent, failed and dropped, and the last error with its time.
pub fn text(view: &NotificationsView) -> String {
    if view.sinks.is_empty() {
        return "notifications:       off\n".to_owned();
    }
    let mut out = String::new();
    for (n, (name, s)) in view.sinks.iter().enumerate() {
        let label = if n == 0 { "notifications:" } else { "" };
        out.push_str(&format!(
            "{label:<21}{name}: {} sent, {} failed, {} retried, {} dropped",
            s.sent, s.failed, s.retried, s.dropped
        ));
        if let (Some(error), Some(at)) = (&s.last_error, &s.last_error_at) {
            out.push_str(&format!(" (last error {at}: {error})"));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_text_shows_each_sink_and_its_last_error() {
        assert_eq!(
            text(&NotificationsView::default()),
            "notifications:       off\n"
        );
        let status = Status::default();
        let metrics = NotifyMetrics::default();
        let slack = SinkStats::new(SinkKind::slack, metrics.clone(), status.clone());
        let webhook = SinkStats::new(SinkKind::webhook, metrics, status.clone());
        slack.count(Outcome::sent, 2);
        webhook.failure("the receiver answered HTTP 500");
        webhook.count(Outcome::retried, 1);
        webhook.count(Outcome::sent, 1);
        let shown = text(&status.view());
        let lines: Vec<&str> = shown.lines().collect();
        assert_eq!(
            lines[0],
            "notifications:       slack: 2 sent, 0 failed, 0 retried, 0 dropped"
        );
        assert!(
            lines[1].starts_with("                     webhook: 1 sent, 1 failed, 1 retried, 0 dropped (last error 20")
                && lines[1].ends_with(": the receiver answered HTTP 500)"),
            "{shown}"
        );
        let mut encoded = String::new();
        let mut registry = Registry::default();
        let metrics = NotifyMetrics::register(&mut registry);
        SinkStats::new(SinkKind::webhook, metrics, Status::default()).count(Outcome::failed, 1);
        prometheus_client::encoding::text::encode(&mut encoded, &registry).unwrap();
        assert!(
            encoded.contains(
                r#"vigil_controller_notifications_total{sink="webhook",result="failed"} 1"#
            ),
            "{encoded}"
        );
    }
}
