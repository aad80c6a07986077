//! The decision of what to send, pure: alert events and the time in,
//! messages out. No I/O and no clock of its own, so that tests drive it
//! with a paused clock.
//!
//! - **Severity**: alerts below the minimum are not notified.
//! - **De-duplication**: per alert id, the first occurrence is a message at
//!   once ([`Event::Alert`]); repeats within the window are folded into one
//!   follow-up at the window's end ([`Event::Repeat`], with the occurrences
//!   it covers), which opens a new window. A quiet window ends the episode:
//!   the next occurrence is a message at once again.
//! - **Rate limit**: a token bucket (a burst of `per_minute`, then one every
//!   `60 s / per_minute`). A message without a token waits in a bounded
//!   queue, merged with any waiting message of the same alert, and leaves it
//!   most severe first, so a flood of minor alerts cannot hold back a
//!   critical one. When the queue is full the least severe message is
//!   dropped (and counted).
//!
//! Memory is bounded: at most [`MAX_TRACKED`] alert ids are remembered and
//! at most [`MAX_PENDING`] messages wait.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::model::{Alert, Severity};

/// Alert ids remembered for de-duplication; past this the longest-quiet
/// one is forgotten (its next occurrence is a message at once).
pub const MAX_TRACKED: usize = 10_000;
/// Messages waiting for the rate limit; past this the least severe is
/// dropped.
pub const MAX_PENDING: usize = 256;

/// What a message says about its alert.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// The first occurrence in a window: sent at once.
    Alert,
    /// The repeats of one window, folded into one message at its end.
    Repeat,
}

impl Event {
    /// The name used in payloads.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Alert => "alert",
            Self::Repeat => "repeat",
        }
    }
}

/// One notification to deliver.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    /// First occurrence or follow-up.
    pub event: Event,
    /// Occurrences (requests, or registrations) of the alert this message
    /// covers: its count minus the count at its previous message.
    pub occurrences: u64,
    /// The alert as it stands (with its running `count`).
    pub alert: Alert,
}

/// The knobs of [`Core`].
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    /// The de-duplication window.
    pub window: Duration,
    /// The least severity notified.
    pub min_severity: Severity,
    /// Messages a minute (the bucket's size and refill rate); at least 1.
    pub per_minute: u32,
}

/// What one step did besides sending, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Events folded into a follow-up.
    pub deduplicated: u64,
    /// Messages that had to wait for the rate limit.
    pub rate_limited: u64,
    /// Messages lost: a full queue, or a forgotten id's pending repeat.
    pub dropped: u64,
    /// Events below the minimum severity.
    pub filtered: u64,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.deduplicated += other.deduplicated;
        self.rate_limited += other.rate_limited;
        self.dropped += other.dropped;
        self.filtered += other.filtered;
    }
}

/// The outcome of one step: messages to deliver now, and counts.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Step {
    /// Deliver these, in order.
    pub send: Vec<Message>,
    /// What else happened.
    pub tally: Tally,
}

/// What is remembered of one alert id.
#[derive(Debug)]
struct Track {
    /// When the current window ends.
    window_ends: Instant,
    /// The alert's count at its latest message.
    notified: u64,
    /// The latest repeat within the window, to send at its end.
    repeat: Option<Alert>,
}

/// A message waiting for a token.
#[derive(Debug)]
struct Waiting {
    seq: u64,
    message: Message,
}

/// The token bucket.
#[derive(Debug)]
struct Bucket {
    tokens: u32,
    capacity: u32,
    interval: Duration,
    /// When the last token was added (or the bucket was last full).
    refilled: Instant,
}

impl Bucket {
    fn new(per_minute: u32, now: Instant) -> Self {
        let per_minute = per_minute.max(1);
        Self {
            tokens: per_minute,
            capacity: per_minute,
            interval: Duration::from_secs(60) / per_minute,
            refilled: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        if self.tokens >= self.capacity {
            self.refilled = now;
            return;
        }
        let elapsed = now.saturating_duration_since(self.refilled);
        let n = (elapsed.as_nanos() / self.interval.as_nanos().max(1)) as u64;
        let added = u32::try_from(n).unwrap_or(u32::MAX);
        if added == 0 {
            return;
        }
        self.tokens = self.tokens.saturating_add(added).min(self.capacity);
        self.refilled = if self.tokens == self.capacity {
            now
        } else {
            self.refilled + self.interval * added
        };
    }

    fn take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }

    /// When the next token arrives (now when one is there).
    fn next(&self, now: Instant) -> Instant {
        if self.tokens > 0 {
            now
        } else {
            self.refilled + self.interval
        }
    }
}

/// The notification decision for one sink.
#[derive(Debug)]
pub struct Core {
    policy: Policy,
    tracked: HashMap<String, Track>,
    /// (window end, id) of the ids with a pending repeat.
    due: BTreeSet<(Instant, String)>,
    bucket: Bucket,
    waiting: Vec<Waiting>,
    seq: u64,
}

impl Core {
    /// A core with nothing remembered and a full bucket at `now`.
    pub fn new(policy: Policy, now: Instant) -> Self {
        Self {
            policy,
            tracked: HashMap::new(),
            due: BTreeSet::new(),
            bucket: Bucket::new(policy.per_minute, now),
            waiting: Vec::new(),
            seq: 0,
        }
    }

    /// An alert was raised or updated at `now`.
    pub fn offer(&mut self, alert: Alert, now: Instant) -> Step {
        let mut step = self.tick(now);
        if alert.severity < self.policy.min_severity {
            step.tally.filtered += 1;
            return step;
        }
        match self.tracked.get_mut(&alert.id) {
            Some(track) if now < track.window_ends => {
                step.tally.deduplicated += 1;
                if let Some(w) = self
                    .waiting
                    .iter_mut()
                    .find(|w| w.message.alert.id == alert.id)
                {
                    // Its message has not left yet: it tells this too.
                    w.message.occurrences += alert.count.saturating_sub(track.notified);
                    track.notified = alert.count;
                    w.message.alert = alert;
                    return step;
                }
                if track.repeat.is_none() {
                    self.due.insert((track.window_ends, alert.id.clone()));
                }
                track.repeat = Some(alert);
            }
            Some(track) => {
                // A quiet window ended: a new episode, sent at once.
                let occurrences = alert.count.saturating_sub(track.notified);
                track.notified = alert.count;
                track.window_ends = now + self.policy.window;
                let message = Message {
                    event: Event::Alert,
                    occurrences,
                    alert,
                };
                self.submit(message, now, &mut step);
            }
            None => {
                step.tally.dropped += self.make_room();
                self.tracked.insert(
                    alert.id.clone(),
                    Track {
                        window_ends: now + self.policy.window,
                        notified: alert.count,
                        repeat: None,
                    },
                );
                let message = Message {
                    event: Event::Alert,
                    occurrences: alert.count,
                    alert,
                };
                self.submit(message, now, &mut step);
            }
        }
        step
    }

    /// Time passed: ends due windows and sends what tokens allow.
    pub fn tick(&mut self, now: Instant) -> Step {
        let mut step = Step::default();
        while let Some((at, _)) = self.due.first() {
            if *at > now {
                break;
            }
            let Some((_, id)) = self.due.pop_first() else {
                break;
            };
            let Some(track) = self.tracked.get_mut(&id) else {
                continue;
            };
            let Some(alert) = track.repeat.take() else {
                continue;
            };
            let occurrences = alert.count.saturating_sub(track.notified);
            track.notified = alert.count;
            // The follow-up opens a new window: a steady stream of repeats
            // is one message a window.
            track.window_ends = now + self.policy.window;
            let message = Message {
                event: Event::Repeat,
                occurrences,
                alert,
            };
            self.submit(message, now, &mut step);
        }
        self.drain(now, &mut step);
        step
    }

    /// When [`Core::tick`] has something to do next, if ever.
    pub fn next_deadline(&self, now: Instant) -> Option<Instant> {
        let window = self.due.first().map(|(at, _)| *at);
        let token = (!self.waiting.is_empty()).then(|| self.bucket.next(now));
        match (window, token) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Messages waiting for the rate limit.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Sends `message` now if a token allows and nothing waits before it,
    /// else queues it.
    fn submit(&mut self, message: Message, now: Instant, step: &mut Step) {
        if self.waiting.is_empty() && self.bucket.take(now) {
            step.send.push(message);
            return;
        }
        step.tally.rate_limited += 1;
        let tally = self.enqueue(message);
        step.tally.add(tally);
        self.drain(now, step);
    }

    fn enqueue(&mut self, message: Message) -> Tally {
        let mut tally = Tally::default();
        if let Some(w) = self
            .waiting
            .iter_mut()
            .find(|w| w.message.alert.id == message.alert.id)
        {
            // One waiting message per alert: the latest state, every
            // occurrence counted, and still a first message if it was one.
            w.message.occurrences += message.occurrences;
            w.message.alert = message.alert;
            return tally;
        }
        if self.waiting.len() >= MAX_PENDING {
            // Drop the least severe, the newest among equals (the new
            // message itself when it is no more severe than any waiting).
            let victim = self
                .waiting
                .iter()
                .enumerate()
                .min_by_key(|(_, w)| (w.message.alert.severity, std::cmp::Reverse(w.seq)))
                .map(|(i, w)| (i, w.message.alert.severity));
            tally.dropped += 1;
            match victim {
                Some((i, severity)) if severity < message.alert.severity => {
                    self.waiting.swap_remove(i);
                }
                _ => return tally,
            }
        }
        self.seq += 1;
        self.waiting.push(Waiting {
            seq: self.seq,
            message,
        });
        tally
    }

    /// Sends waiting messages, most severe (then oldest) first, while
    /// tokens last.
    fn drain(&mut self, now: Instant, step: &mut Step) {
        while !self.waiting.is_empty() && self.bucket.take(now) {
            let best = self
                .waiting
                .iter()
                .enumerate()
                .max_by_key(|(_, w)| (w.message.alert.severity, std::cmp::Reverse(w.seq)))
                .map(|(i, _)| i);
            if let Some(i) = best {
                step.send.push(self.waiting.remove(i).message);
            }
        }
    }

    /// Forgets one id when [`MAX_TRACKED`] are remembered: the one quiet
    /// the longest, else the one due first (its repeat is dropped).
    /// Returns the messages dropped.
    fn make_room(&mut self) -> u64 {
        if self.tracked.len() < MAX_TRACKED {
            return 0;
        }
        let quiet = self
            .tracked
            .iter()
            .filter(|(_, t)| t.repeat.is_none())
            .min_by_key(|(_, t)| t.window_ends)
            .map(|(id, _)| id.clone());
        if let Some(id) = quiet {
            self.tracked.remove(&id);
            return 0;
        }
        match self.due.pop_first() {
            Some((_, id)) => {
                self.tracked.remove(&id);
                1
            }
            None => 0,
        }
    }
}
