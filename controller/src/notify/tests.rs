//! The notifier's decisions on a paused clock: de-duplication, severity,
//! rate limit and priority, retries with backoff, and the decision loop fed
//! by a broadcast.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::Instant;

use super::dedup::{Core, Event, MAX_PENDING, Message, Policy, Tally};
use super::http::{DeliveryError, Transport};
use super::status::{NotifyMetrics, SinkKind, SinkStats, Status};
use super::{Lane, sink};
use crate::model::{Action, Alert, AlertKind, Severity};

fn alert(id: &str, count: u64, severity: Severity) -> Alert {
    Alert {
        id: id.into(),
        kind: AlertKind::UnknownEgress,
        severity,
        namespace: "notebooks".into(),
        workload: "jupyter-alice".into(),
        tenant: "alice".into(),
        destination: format!("{id}.example:3333"),
        action: Action::Blocked,
        count,
        denied: count,
        first_seen: "2026-11-29T10:00:00Z".into(),
        last_seen: "2026-11-29T10:00:00Z".into(),
        claimed: None,
        explanation: "notebooks/jupyter-alice connected to a pool".into(),
        evidence: Default::default(),
    }
}

const M: Severity = Severity::Medium;
const POLICY: Policy = Policy {
    window: Duration::from_secs(60),
    min_severity: Severity::Medium,
    per_minute: 1000,
};

/// One input at a time offset from the start.
enum In {
    /// An alert event: id, running count, severity.
    Offer(&'static str, u64, Severity),
    /// Time passes.
    Tick,
}

/// Sent messages as (event, id, occurrences).
type Sent = Vec<(Event, &'static str, u64)>;

fn sent(messages: &[Message]) -> Vec<(Event, String, u64)> {
    messages
        .iter()
        .map(|m| (m.event, m.alert.id.clone(), m.occurrences))
        .collect()
}

fn run_table(policy: Policy, steps: Vec<(u64, In, Sent)>) -> Tally {
    let start = Instant::now();
    let mut core = Core::new(policy, start);
    let mut total = Tally::default();
    for (n, (at, input, want)) in steps.into_iter().enumerate() {
        let now = start + Duration::from_secs(at);
        let step = match input {
            In::Offer(id, count, severity) => core.offer(alert(id, count, severity), now),
            In::Tick => core.tick(now),
        };
        let want: Vec<(Event, String, u64)> = want
            .into_iter()
            .map(|(e, id, o)| (e, id.to_owned(), o))
            .collect();
        assert_eq!(sent(&step.send), want, "step {n} at {at} s");
        total.deduplicated += step.tally.deduplicated;
        total.rate_limited += step.tally.rate_limited;
        total.dropped += step.tally.dropped;
        total.filtered += step.tally.filtered;
    }
    total
}

#[test]
fn first_occurrence_at_once_repeats_folded_into_one_follow_up() {
    use Event::{Alert as A, Repeat as R};
    let tally = run_table(
        POLICY,
        vec![
            (0, In::Offer("a", 1, M), vec![(A, "a", 1)]),
            (5, In::Offer("a", 3, M), vec![]),
            (10, In::Offer("a", 4, M), vec![]),
            // Another alert is its own story.
            (11, In::Offer("b", 1, M), vec![(A, "b", 1)]),
            (59, In::Tick, vec![]),
            // The window ends: one follow-up with the 3 new occurrences.
            (60, In::Tick, vec![(R, "a", 3)]),
            // Still repeating: folded into the next window (60..120).
            (70, In::Offer("a", 9, M), vec![]),
            // b's window (11..71) ends quiet: nothing.
            (71, In::Tick, vec![]),
            (120, In::Tick, vec![(R, "a", 5)]),
            // A quiet window (120..180) ends the episode: the next
            // occurrence is sent at once, with what it adds.
            (180, In::Tick, vec![]),
            (200, In::Offer("a", 10, M), vec![(A, "a", 1)]),
            // b again after its quiet window.
            (200, In::Offer("b", 2, M), vec![(A, "b", 1)]),
        ],
    );
    assert_eq!(tally.deduplicated, 3);
    assert_eq!((tally.rate_limited, tally.dropped), (0, 0));
}

#[test]
fn a_repeat_arriving_after_its_window_without_a_tick_still_folds_first() {
    use Event::{Alert as A, Repeat as R};
    run_table(
        POLICY,
        vec![
            (0, In::Offer("a", 1, M), vec![(A, "a", 1)]),
            (30, In::Offer("a", 2, M), vec![]),
            // No tick at 60: the offer at 61 ends the window first, then is
            // folded into the new one.
            (61, In::Offer("a", 3, M), vec![(R, "a", 1)]),
            (121, In::Tick, vec![(R, "a", 1)]),
        ],
    );
}

#[test]
fn below_the_minimum_severity_nothing_is_sent() {
    use Event::Alert as A;
    let policy = Policy {
        min_severity: Severity::High,
        ..POLICY
    };
    let tally = run_table(
        policy,
        vec![
            (0, In::Offer("low", 1, Severity::Low), vec![]),
            (0, In::Offer("medium", 1, M), vec![]),
            (
                0,
                In::Offer("high", 1, Severity::High),
                vec![(A, "high", 1)],
            ),
            (
                0,
                In::Offer("crit", 1, Severity::Critical),
                vec![(A, "crit", 1)],
            ),
            (120, In::Tick, vec![]),
        ],
    );
    assert_eq!(tally.filtered, 2);
}

#[test]
fn the_rate_limit_defers_and_sends_the_most_severe_first() {
    use Event::Alert as A;
    let policy = Policy {
        per_minute: 2,
        ..POLICY
    };
    let tally = run_table(
        policy,
        vec![
            // A burst of 2, then one token every 30 s.
            (0, In::Offer("m1", 1, M), vec![(A, "m1", 1)]),
            (0, In::Offer("m2", 1, M), vec![(A, "m2", 1)]),
            (1, In::Offer("m3", 1, M), vec![]),
            (2, In::Offer("m4", 1, M), vec![]),
            // A miner floods minor alerts; the critical one still goes next.
            (3, In::Offer("crit", 1, Severity::Critical), vec![]),
            // m3 repeats while its message waits: that message tells both.
            (4, In::Offer("m3", 2, M), vec![]),
            (29, In::Tick, vec![]),
            (30, In::Tick, vec![(A, "crit", 1)]),
            (60, In::Tick, vec![(A, "m3", 2)]),
            (90, In::Tick, vec![(A, "m4", 1)]),
            (500, In::Tick, vec![]),
        ],
    );
    assert_eq!(tally.rate_limited, 3, "m3, m4, crit");
    assert_eq!((tally.deduplicated, tally.dropped), (1, 0));
}

#[test]
fn a_full_queue_drops_the_least_severe_and_counts_it() {
    let start = Instant::now();
    let policy = Policy {
        per_minute: 1,
        ..POLICY
    };
    let mut core = Core::new(policy, start);
    let first = core.offer(alert("first", 1, M), start);
    assert_eq!(first.send.len(), 1, "the burst of one");
    let mut dropped = 0;
    for n in 0..MAX_PENDING + 10 {
        let id = format!("flood{n}");
        dropped += core.offer(alert(&id, 1, M), start).tally.dropped;
    }
    assert_eq!(dropped, 10, "bounded: the newest mediums beyond the queue");
    assert_eq!(core.waiting(), MAX_PENDING);
    // A critical alert evicts a medium one rather than being dropped.
    let step = core.offer(alert("crit", 1, Severity::Critical), start);
    assert_eq!(step.tally.dropped, 1);
    assert_eq!(core.waiting(), MAX_PENDING);
    let next = core.tick(start + Duration::from_secs(60));
    assert_eq!(sent(&next.send), vec![(Event::Alert, "crit".into(), 1)]);
}

#[test]
fn deadlines_are_window_ends_and_tokens() {
    let start = Instant::now();
    let mut core = Core::new(
        Policy {
            per_minute: 1,
            ..POLICY
        },
        start,
    );
    assert_eq!(core.next_deadline(start), None, "idle: no wake-up");
    core.offer(alert("a", 1, M), start);
    assert_eq!(core.next_deadline(start), None, "sent, nothing folded");
    core.offer(alert("a", 2, M), start + Duration::from_secs(10));
    assert_eq!(
        core.next_deadline(start),
        Some(start + Duration::from_secs(60)),
        "the window's end"
    );
    core.offer(alert("b", 1, M), start + Duration::from_secs(20));
    assert_eq!(
        core.next_deadline(start + Duration::from_secs(20)),
        Some(start + Duration::from_secs(60)),
        "b waits for the next token, at 60 s too"
    );
}

/// A transport that answers from a script (then 200) and records each
/// attempt's time and delivery id.
#[derive(Clone, Default)]
struct Scripted {
    answers: Arc<Mutex<Vec<Result<(), u16>>>>,
    attempts: Arc<Mutex<Vec<(Instant, String, Message)>>>,
}

impl Scripted {
    fn new(answers: &[Result<(), u16>]) -> Self {
        let mut answers = answers.to_vec();
        answers.reverse();
        Self {
            answers: Arc::new(Mutex::new(answers)),
            attempts: Arc::default(),
        }
    }

    fn attempts(&self) -> Vec<(Instant, String, Message)> {
        self.attempts.lock().unwrap().clone()
    }
}

impl Transport for Scripted {
    async fn send(&self, message: &Message, delivery: &str) -> Result<(), DeliveryError> {
        self.attempts
            .lock()
            .unwrap()
            .push((Instant::now(), delivery.to_owned(), message.clone()));
        let answer = self.answers.lock().unwrap().pop().unwrap_or(Ok(()));
        answer.map_err(|status| DeliveryError::Status {
            status,
            retry_after: (status == 429).then_some(Duration::from_secs(20)),
        })
    }
}

fn stats(sink: SinkKind) -> (SinkStats, Status) {
    let status = Status::default();
    (
        SinkStats::new(sink, NotifyMetrics::default(), status.clone()),
        status,
    )
}

fn message(id: &str) -> Message {
    Message {
        event: Event::Alert,
        occurrences: 1,
        alert: alert(id, 1, M),
    }
}

#[tokio::test(start_paused = true)]
async fn retries_back_off_honour_retry_after_and_keep_the_delivery_id() {
    let transport = Scripted::new(&[Err(500), Err(503), Err(429), Ok(())]);
    let (stats, status) = stats(SinkKind::webhook);
    let start = Instant::now();
    assert!(sink::deliver(&transport, &message("a"), &stats, || 0.0).await);
    let attempts = transport.attempts();
    let offsets: Vec<u64> = attempts
        .iter()
        .map(|(at, _, _)| at.duration_since(start).as_millis() as u64)
        .collect();
    // 0.5 s, then 1 s (jitter 0: half the doubled backoff), then the
    // receiver's Retry-After of 20 s.
    assert_eq!(offsets, vec![0, 500, 1500, 21_500]);
    assert!(
        attempts.iter().all(|(_, id, _)| id == &attempts[0].1),
        "one delivery id across retries"
    );
    let view = status.view().sinks["webhook"].clone();
    assert_eq!(
        (view.sent, view.failed, view.retried, view.dropped),
        (1, 3, 3, 0)
    );
    assert_eq!(
        view.last_error.as_deref(),
        Some("the receiver answered HTTP 429")
    );
    assert!(view.last_error_at.is_some());
}

#[tokio::test(start_paused = true)]
async fn a_refusal_is_not_retried_and_attempts_are_bounded() {
    let transport = Scripted::new(&[Err(404)]);
    let (stats, status) = stats(SinkKind::slack);
    assert!(!sink::deliver(&transport, &message("a"), &stats, || 0.5).await);
    assert_eq!(transport.attempts().len(), 1, "404: a revoked URL");

    let transport = Scripted::new(&[Err(500); 20]);
    assert!(!sink::deliver(&transport, &message("b"), &stats, || 0.5).await);
    assert_eq!(transport.attempts().len(), super::retry::ATTEMPTS as usize);
    let view = status.view().sinks["slack"].clone();
    assert_eq!(view.dropped, 2);
    assert_eq!(view.failed, 1 + u64::from(super::retry::ATTEMPTS));
}

/// The loop, fed like the engine feeds it, on a paused clock.
#[tokio::test(start_paused = true)]
async fn the_loop_sends_at_once_folds_repeats_and_never_blocks_the_sender() {
    let (events, rx) = broadcast::channel(4096);
    let (stop_tx, stop) = watch::channel(false);
    let transport = Scripted::new(&[Err(500)]);
    let (stats, status) = stats(SinkKind::webhook);
    let (tx, queue) = mpsc::channel(sink::QUEUE);
    tokio::spawn(sink::run(
        transport.clone(),
        queue,
        stats.clone(),
        stop.clone(),
    ));
    // "known" existed before the notifier started: not news.
    let known = alert("known", 5, M);
    let lanes = vec![Lane::new(POLICY, Instant::now(), tx, stats)];
    let loop_task = tokio::spawn(super::run(rx, move || vec![known.clone()], lanes, stop));
    tokio::task::yield_now().await;
    let start = Instant::now();
    for count in 1..=5 {
        // `send` on a broadcast never waits, whatever the notifier does.
        events.send(alert("a", count, M)).unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    events.send(alert("known", 5, M)).unwrap();
    tokio::time::sleep(Duration::from_secs(120)).await;
    let attempts = transport.attempts();
    let got: Vec<(u64, &str, Event, u64)> = attempts
        .iter()
        .map(|(at, _, m)| {
            (
                at.duration_since(start).as_millis() as u64,
                m.alert.id.as_str(),
                m.event,
                m.occurrences,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (0, "a", Event::Alert, 1),
            // The 500 is retried after 0.5..1 s of backoff (random).
            (got[1].0, "a", Event::Alert, 1),
            // Counts 2..5 folded into one follow-up at the window's end.
            (60_000, "a", Event::Repeat, 4),
        ]
    );
    assert!((500..=1000).contains(&got[1].0), "{got:?}");
    let view = status.view().sinks["webhook"].clone();
    assert_eq!((view.sent, view.failed, view.deduplicated), (2, 1, 4));
    stop_tx.send(true).unwrap();
    loop_task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_notifier_that_falls_behind_counts_the_loss_and_catches_up() {
    let (events, rx) = broadcast::channel(4);
    let (_stop_tx, stop) = watch::channel(false);
    let transport = Scripted::new(&[]);
    let (stats, status) = stats(SinkKind::slack);
    let (tx, queue) = mpsc::channel(sink::QUEUE);
    tokio::spawn(sink::run(
        transport.clone(),
        queue,
        stats.clone(),
        stop.clone(),
    ));
    let lanes = vec![Lane::new(POLICY, Instant::now(), tx, stats)];
    let engine_alerts: Arc<Mutex<Vec<Alert>>> = Arc::default();
    let current = {
        let engine_alerts = engine_alerts.clone();
        move || engine_alerts.lock().unwrap().clone()
    };
    tokio::spawn(super::run(rx, current, lanes, stop));
    tokio::task::yield_now().await;
    // A flood overflows the broadcast before the loop runs again; the
    // mining alert raised amid it is among the events lost.
    events.send(alert("crit", 1, Severity::Critical)).unwrap();
    for n in 0..9 {
        events.send(alert(&format!("f{n}"), 1, M)).unwrap();
    }
    engine_alerts
        .lock()
        .unwrap()
        .push(alert("crit", 1, Severity::Critical));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ids: Vec<String> = transport
        .attempts()
        .iter()
        .map(|(_, _, m)| m.alert.id.clone())
        .collect();
    assert!(ids.contains(&"crit".to_owned()), "caught up: {ids:?}");
    assert_eq!(status.view().sinks["slack"].dropped, 6, "10 sent, 4 kept");
}
