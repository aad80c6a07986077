//! `GET /api/v1/events`: the live stream (server-sent events). The first
//! event, `snapshot`, carries everything ([`Full`]); each later `delta`
//! carries what changed ([`diff`]) since the one before. The engine's
//! snapshot is looked at every [`TICK`], so bursts of reports coalesce into
//! one delta; the stream ends when the controller shuts down.

use std::sync::Arc;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use futures_util::stream;
use tokio::sync::watch;

use super::delta::{Full, diff};
use crate::engine::Handle;
use crate::snapshot::Snapshot;

/// How often the stream looks for a new snapshot.
pub const TICK: Duration = Duration::from_millis(250);

struct Follow {
    engine: Handle,
    last: Arc<Snapshot>,
    stop: watch::Receiver<bool>,
    tick: tokio::time::Interval,
}

impl Follow {
    /// The next delta, or None once the controller stops.
    async fn next(mut self) -> Option<(Result<Event, axum::Error>, Self)> {
        loop {
            tokio::select! {
                _ = self.stop.wait_for(|s| *s) => return None,
                _ = self.tick.tick() => {}
            }
            let now = self.engine.snapshot();
            if Arc::ptr_eq(&now, &self.last) {
                continue;
            }
            let delta = diff(&self.last, &now);
            self.last = now;
            if !delta.is_empty() {
                return Some((Event::default().event("delta").json_data(&delta), self));
            }
        }
    }
}

/// The live stream of `engine`'s snapshots, until `stop` turns true.
pub fn stream(engine: Handle, stop: watch::Receiver<bool>) -> Response {
    let first = engine.snapshot();
    // The whole graph (19 MB at 50,000 edges) is copied off the async
    // runtime.
    let snapshot = first.clone();
    let full = async move {
        let json = tokio::task::spawn_blocking(move || Full::json(&snapshot))
            .await
            .map_err(axum::Error::new)?;
        Ok::<_, axum::Error>(Event::default().event("snapshot").data(json))
    };
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let follow = Follow {
        engine,
        last: first,
        stop,
        tick,
    };
    let events = stream::once(full).chain(stream::unfold(follow, Follow::next));
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}
