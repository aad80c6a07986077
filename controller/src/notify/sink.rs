//! A sink's delivery task: takes messages from its bounded queue in order
//! and delivers each with retries ([`super::retry`]), counting every
//! attempt in the metrics and the status. A slow or dead receiver only
//! fills this queue (then messages are dropped and counted): it never slows
//! the decision loop, let alone ingest.

use tokio::sync::{mpsc, watch};

use super::dedup::Message;
use super::http::Transport;
use super::retry::{self, Verdict};
use super::status::{Outcome, SinkStats};

/// Messages queued for one sink; past this they are dropped (counted).
pub const QUEUE: usize = 64;

/// Delivers messages from `queue` until it closes or `stop` turns true.
pub async fn run<T: Transport>(
    transport: T,
    mut queue: mpsc::Receiver<Message>,
    stats: SinkStats,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let message = tokio::select! {
            message = queue.recv() => match message {
                Some(message) => message,
                None => return,
            },
            _ = stop.wait_for(|s| *s) => return,
        };
        tokio::select! {
            _ = deliver(&transport, &message, &stats, retry::jitter) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Delivers one message, retrying as [`retry::delay`] says; true when it
/// arrived. `jitter` gives the backoff's random part (uniform in `[0, 1)`).
pub async fn deliver<T: Transport>(
    transport: &T,
    message: &Message,
    stats: &SinkStats,
    jitter: impl Fn() -> f64,
) -> bool {
    let delivery = delivery_id(&message.alert.id);
    let sink = stats.sink().as_str();
    let mut attempt = 1;
    loop {
        if attempt > 1 {
            stats.count(Outcome::retried, 1);
        }
        let error = match transport.send(message, &delivery).await {
            Ok(()) => {
                stats.count(Outcome::sent, 1);
                tracing::debug!(sink, alert = %message.alert.id, event = message.event.as_str(), attempt, "notification delivered");
                return true;
            }
            Err(error) => error,
        };
        stats.failure(&error.to_string());
        let wait = match error.verdict() {
            Verdict::Done => None,
            Verdict::Refused => {
                tracing::warn!(sink, alert = %message.alert.id, %error, "notification refused; not retried");
                stats.count(Outcome::dropped, 1);
                return false;
            }
            Verdict::Again { retry_after } => retry::delay(attempt, retry_after, jitter()),
        };
        let Some(wait) = wait else {
            tracing::warn!(sink, alert = %message.alert.id, %error, attempts = attempt, "notification dropped after its last attempt");
            stats.count(Outcome::dropped, 1);
            return false;
        };
        tracing::info!(sink, alert = %message.alert.id, %error, attempt, retry_in_ms = wait.as_millis() as u64, "notification delivery failed; retrying");
        tokio::time::sleep(wait).await;
        attempt += 1;
    }
}

/// A name for one message, the same on its retries: the alert id and 64
/// random bits.
fn delivery_id(alert: &str) -> String {
    let mut bytes = [0u8; 8];
    let _ = getrandom::fill(&mut bytes);
    format!("{alert}-{:016x}", u64::from_le_bytes(bytes))
}
