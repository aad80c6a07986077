//! The engine's loop: group commit and paced publication.
//!
//! The loop drains every queued command (up to [`GROUP`]); after a round
//! that staged several reports or registrations, a round that holds some
//! waits for more, up to `Options::commit_linger` after its first command
//! and while they keep coming (see [`linger_deadline`]). Reports and
//! sidecars' registrations are applied in memory one after another and
//! their changes written together in one store transaction; each report is
//! acknowledged, and each registering sidecar gets its policy stream, only
//! after that transaction is durable, so an acknowledged report survives a
//! crash and one that fails is not acknowledged (memory is then reloaded
//! from the store, as for any failed write). Any other command first writes the
//! reports staged before it, so commands take effect in their order.
//!
//! Publication is paced by `Options::publish_every`: a command that
//! changes state on a person's behalf (a mode, a quarantine, an import, an
//! accepted alert, discovered workloads, threat lists) is answered only
//! once the snapshot that includes it is out, as before; sidecars' reports
//! and registrations publish a snapshot at most every `publish_every` (and
//! at least [`BUILD_SHARE`] times the time the last snapshot took to build
//! apart), so the API reads a whole, consistent state that is at most that
//! old. A snapshot rebuilds only the edge views that changed since the last
//! one, and the node views only when one may have (see
//! [`crate::snapshot::Views`]).
//! Policies are not paced: a change recompiles the policies it can alter
//! (see [`policy::affected`]) at once.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};

use super::{Command, Engine, EngineError, PolicyRx, Registration, Reply};
use crate::metrics::ReportResult;
use crate::model::{Batch, Mode, WorkloadId, now_unix};
use crate::policy;
use crate::simulate::Seen;
use crate::snapshot::Snapshot;
use crate::store::{Changes, HistoryStep};

/// Commands applied in one round, at most (one store transaction for the
/// reports among them).
pub(super) const GROUP: usize = 1024;

/// Snapshots built for reports alone are at least this many times their
/// build time apart: building takes at most about a fifth of the engine
/// thread however large the graph. (Ten was tried: after a rebuild of every
/// view, say for a mode change, the next report's snapshot then waited ten
/// times that long, and alerts reached the API seconds late.)
pub(super) const BUILD_SHARE: u32 = 4;

/// A lingering round stops waiting when no command came for this fraction
/// of the linger.
const LINGER_GAP: u32 = 5;

/// A report or a registration applied in memory, waiting for its group's
/// transaction.
pub(super) struct Staged {
    /// What to write (`None`: a duplicate report, already stored).
    changes: Option<Changes>,
    /// Who waits, answered once the group is durable.
    waiting: Waiting,
}

/// What a staged command answers once its group is written.
enum Waiting {
    /// A report's acknowledgement.
    Report {
        /// Observations it carried.
        observations: usize,
        reply: oneshot::Sender<Result<(), EngineError>>,
    },
    /// A sidecar's policy stream.
    Register {
        id: WorkloadId,
        /// It moved to another profile.
        moved: bool,
        /// Workloads it took an inbound address from.
        displaced: BTreeSet<WorkloadId>,
        reply: oneshot::Sender<Result<PolicyRx, EngineError>>,
    },
}

impl Staged {
    /// Applies `batch` in memory, once the claims its sidecar could not
    /// check are checked; its reply waits for the group's write.
    pub(super) fn stage(
        engine: &mut Engine,
        mut batch: Batch,
        reply: oneshot::Sender<Result<(), EngineError>>,
    ) -> Self {
        for obs in &mut batch.observations {
            engine.inventory.check_claim(obs);
        }
        let observations = batch.observations.len();
        let changes = engine.stage_report(batch);
        let observations = if changes.is_some() { observations } else { 0 };
        Staged {
            changes,
            waiting: Waiting::Report {
                observations,
                reply,
            },
        }
    }

    /// Applies `registration` in memory; the sidecar gets its policy
    /// stream once the group is written (several registrations, one
    /// transaction).
    pub(super) fn register(
        engine: &mut Engine,
        registration: &Registration,
        reply: oneshot::Sender<Result<PolicyRx, EngineError>>,
    ) -> Self {
        let (changes, moved, displaced) = engine.stage_register(registration);
        Staged {
            changes: Some(changes),
            waiting: Waiting::Register {
                id: registration.id.clone(),
                moved,
                displaced,
                reply,
            },
        }
    }
}

/// When the snapshot is due.
pub(super) struct Pace {
    snapshot_every: Duration,
    last_snapshot: Instant,
    /// How long the last snapshot took to build.
    build: Duration,
    /// State changed since the last snapshot.
    dirty: bool,
    /// Frees the snapshots publication replaces.
    reaper: Reaper,
}

impl Pace {
    pub(super) fn new(snapshot_every: Duration) -> Self {
        Pace {
            snapshot_every,
            last_snapshot: Instant::now(),
            build: Duration::ZERO,
            dirty: false,
            reaper: Reaper::start(),
        }
    }

    /// The least time between two snapshots built for reports alone.
    fn snapshot_gap(&self) -> Duration {
        if self.snapshot_every.is_zero() {
            Duration::ZERO
        } else {
            self.snapshot_every.max(self.build * BUILD_SHARE)
        }
    }

    /// When the loop must wake up even without a command.
    fn deadline(&self) -> Option<Instant> {
        self.dirty.then(|| self.last_snapshot + self.snapshot_gap())
    }
}

/// How many replaced snapshots may wait for the reaper; past that the
/// engine frees one itself.
const REAPER_QUEUE: usize = 4;

/// Frees replaced snapshots on a thread of its own (`vigil-reaper`). A
/// snapshot that nothing else holds any more is the whole graph's views:
/// at 5,000 sidecars, dropping them was 6% of the engine thread, which
/// every report waits for. The reaper ends when the engine does.
pub(super) struct Reaper {
    tx: Option<std::sync::mpsc::SyncSender<Arc<Snapshot>>>,
}

impl Reaper {
    fn start() -> Self {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Arc<Snapshot>>(REAPER_QUEUE);
        let started = std::thread::Builder::new()
            .name("vigil-reaper".into())
            .spawn(move || while rx.recv().is_ok() {});
        if let Err(e) = &started {
            tracing::warn!(error = %e, "no reaper thread; the engine frees old snapshots itself");
        }
        Reaper {
            tx: started.is_ok().then_some(tx),
        }
    }

    /// Hands `replaced` to the reaper; frees it here when the reaper is
    /// behind or gone.
    fn free(&self, replaced: Arc<Snapshot>) {
        if let Some(tx) = &self.tx {
            let _ = tx.try_send(replaced);
        }
    }
}

/// Until when a round that began at `start` waits for more reports or
/// registrations to share its transaction, if at all: only after a round
/// that staged several (`crowded`: they come together, faster than one
/// transaction each). A report that comes alone is written at once:
/// waiting would only delay its acknowledgement.
pub(super) fn linger_deadline(start: Instant, crowded: bool, linger: Duration) -> Option<Instant> {
    (crowded && !linger.is_zero()).then(|| start + linger)
}

/// The next command, unless `at` comes first (`Ok(None)`: the channel
/// closed).
fn recv_before(
    timer: &tokio::runtime::Runtime,
    rx: &mut mpsc::Receiver<Command>,
    at: Instant,
) -> Result<Option<Command>, tokio::time::error::Elapsed> {
    // The timer is made inside the runtime that drives it.
    timer.block_on(async { tokio::time::timeout_at(at.into(), rx.recv()).await })
}

/// Whether `cmd` changes state on a person's behalf (a mode, a quarantine,
/// an import, an accepted alert, discovered workloads, threat lists) rather
/// than being a sidecar's report, registration or disconnection, or a
/// read. Such a command is answered only once a snapshot shows it (a
/// sidecar's registration gets its policy at once; the API shows it with
/// the next paced snapshot), and it may change any edge's view, so the
/// views are all rebuilt for it (see [`Engine::apply`]).
pub(super) fn by_a_person(cmd: &Command) -> bool {
    !matches!(
        cmd,
        Command::Report { .. }
            | Command::Register { .. }
            | Command::Disconnect { .. }
            | Command::Export { .. }
            | Command::Simulate { .. }
            | Command::Audit { .. }
    )
}

impl Engine {
    pub(super) fn run(
        mut self,
        mut rx: mpsc::Receiver<Command>,
        snapshots: watch::Sender<Arc<Snapshot>>,
    ) {
        let timer = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("the engine's timer");
        let mut pace = Pace::new(self.options.publish_every);
        let mut replies: Vec<Reply> = Vec::new();
        let mut group: Vec<Staged> = Vec::new();
        // The last round staged several writes: reports come together,
        // and a wait for company pays.
        let mut crowded = false;
        loop {
            let next = match pace.deadline() {
                None => timer.block_on(rx.recv()),
                Some(at) => match recv_before(&timer, &mut rx, at) {
                    Ok(next) => next,
                    Err(_) => {
                        self.publish(&mut pace, &snapshots, false);
                        continue;
                    }
                },
            };
            let Some(mut cmd) = next else { break };
            let linger_until = linger_deadline(Instant::now(), crowded, self.options.commit_linger);
            let (mut urgent, mut stopping, mut applied, mut staged) = (false, false, 1, 0);
            loop {
                match cmd {
                    Command::Shutdown => stopping = true,
                    Command::Report { batch, reply } => {
                        group.push(Staged::stage(&mut self, batch, reply));
                        staged += 1;
                    }
                    Command::Register {
                        registration,
                        reply,
                    } => {
                        group.push(Staged::register(&mut self, &registration, reply));
                        staged += 1;
                    }
                    other => {
                        // Earlier reports are written first: commands
                        // take effect in their order.
                        self.flush(&mut group, &mut replies);
                        urgent |= by_a_person(&other);
                        replies.extend(self.apply(other));
                    }
                }
                if stopping || applied >= GROUP {
                    break;
                }
                match rx.try_recv() {
                    Ok(more) => {
                        cmd = more;
                        applied += 1;
                    }
                    // Staged writes wait a little for company; anything
                    // else that comes ends the wait (see above).
                    Err(mpsc::error::TryRecvError::Empty) if !group.is_empty() => {
                        let now = Instant::now();
                        let Some(until) = linger_until.filter(|&t| now < t) else {
                            break;
                        };
                        // Company that stops coming is not waited for
                        // (clients that all wait for their acks send none).
                        let until = until.min(now + self.options.commit_linger / LINGER_GAP);
                        match recv_before(&timer, &mut rx, until) {
                            Ok(Some(more)) => {
                                cmd = more;
                                applied += 1;
                            }
                            _ => break,
                        }
                    }
                    Err(_) => break,
                }
            }
            self.flush(&mut group, &mut replies);
            crowded = staged > 1;
            pace.dirty = true;
            self.publish(&mut pace, &snapshots, urgent || stopping);
            // Replies go out after the snapshot when it was due: a caller
            // reads its own writes.
            for reply in replies.drain(..) {
                reply();
            }
            if stopping {
                break;
            }
        }
        // Dropping the policy channels ends every sidecar's policy stream.
        tracing::debug!("engine stopped");
    }

    /// Publishes the snapshot when due (at once when `now`).
    fn publish(&mut self, pace: &mut Pace, snapshots: &watch::Sender<Arc<Snapshot>>, now: bool) {
        let at = Instant::now();
        if pace.dirty && (now || at >= pace.last_snapshot + pace.snapshot_gap()) {
            let start = Instant::now();
            let replaced = snapshots.send_replace(Arc::new(self.snapshot()));
            pace.reaper.free(replaced);
            pace.build = start.elapsed();
            (self.metrics.snapshot_seconds).observe(pace.build.as_secs_f64());
            pace.last_snapshot = Instant::now();
            pace.dirty = false;
        }
    }

    /// Writes the staged reports in one transaction, then queues their
    /// acknowledgements (or, when the write failed, their errors: memory
    /// was reloaded from the store and the sidecars re-send) and updates
    /// the policies their learning changed.
    pub(super) fn flush(&mut self, group: &mut Vec<Staged>, replies: &mut Vec<Reply>) {
        if group.is_empty() {
            return;
        }
        let writes: Vec<&Changes> = group.iter().filter_map(|s| s.changes.as_ref()).collect();
        let result = if writes.is_empty() {
            Ok(())
        } else {
            self.commit_all(&writes)
        };
        let failed = match result {
            Ok(()) => None,
            Err(e) => Some(Arc::new(e)),
        };
        let (mut edges, mut quarantined) = (Vec::new(), Vec::new());
        let (mut moved, mut streams) = (false, Vec::new());
        let mut displaced = BTreeSet::new();
        for Staged { changes, waiting } in group.drain(..) {
            match waiting {
                Waiting::Report {
                    observations,
                    reply,
                } => {
                    let result = match (changes, &failed) {
                        (None, _) => Ok(()),
                        (Some(_), Some(e)) => {
                            self.metrics.report(ReportResult::failed);
                            Err(EngineError::Store(e.clone()))
                        }
                        (Some(mut changes), None) => {
                            self.views.touch(changes.edges.drain(..));
                            // What the baseline learned shows on every
                            // edge of the profiles it learned for.
                            let learned = (changes.baseline_edges.iter())
                                .chain(changes.baseline_endpoints.iter().map(|(edge, _)| edge));
                            self.views.learned(learned, &self.inventory, &self.graph);
                            // A learned workload shows on its node.
                            if !changes.baseline_workloads.is_empty() {
                                self.views.nodes_changed();
                            }
                            self.metrics.report(ReportResult::applied);
                            self.metrics.observations.inc_by(observations as u64);
                            if let Some(step) = changes.history.take() {
                                for obs in step.observations {
                                    self.history.push(Seen {
                                        at: step.at,
                                        reporter: step.reporter.clone(),
                                        obs,
                                    });
                                }
                            }
                            edges.append(&mut changes.baseline_edges);
                            quarantined.extend(changes.quarantine.into_iter().map(|(id, _)| id));
                            Ok(())
                        }
                    };
                    replies.push(Box::new(move || drop(reply.send(result))));
                }
                Waiting::Register {
                    id,
                    moved: it_moved,
                    displaced: its_displaced,
                    reply,
                } => match &failed {
                    Some(e) => {
                        let e = EngineError::Store(e.clone());
                        replies.push(Box::new(move || drop(reply.send(Err(e)))));
                    }
                    None => {
                        self.views.invalidate();
                        moved |= it_moved;
                        displaced.extend(its_displaced);
                        streams.push((id, reply));
                    }
                },
            }
        }
        if !streams.is_empty() {
            let registered: Vec<WorkloadId> = streams.iter().map(|(id, _)| id.clone()).collect();
            self.registered(&registered, &displaced, moved);
            for (id, reply) in streams {
                let rx = self.policies.subscribe(&id).expect("published above");
                replies.push(Box::new(move || drop(reply.send(Ok(rx)))));
            }
        }
        if !edges.is_empty() || !quarantined.is_empty() {
            // Nothing is enforced while learning, but keep the compiled
            // policies (and /config_dump) true to the baseline.
            let ids = policy::affected(&edges, &quarantined, &[], &self.baseline, &self.inventory);
            self.republish(Some(&ids));
        }
    }

    /// Applies a report in memory and returns what to write (`None`: a
    /// duplicate of a batch already applied). Its observations move into
    /// the history.
    fn stage_report(&mut self, batch: Batch) -> Option<Changes> {
        let now = now_unix();
        if !batch.instance.is_empty() {
            match self.seqs.get(&batch.instance) {
                Some(&(last, _)) if batch.seq <= last => {
                    tracing::debug!(instance = %batch.instance, seq = batch.seq, "duplicate report batch, already applied");
                    self.metrics.report(ReportResult::duplicate);
                    return None;
                }
                _ => {}
            }
        }
        let (reporter, observations) = (&batch.reporter, &batch.observations);
        let mode = self.modes.of(&reporter.namespace);
        let mut changes = Changes::default();
        if !batch.instance.is_empty() {
            changes.report_seq = Some((batch.instance.clone(), batch.seq, now));
            // At once: a re-sent batch later in the same group is a
            // duplicate too.
            if self.seqs.len() >= super::MAX_SEQS && !self.seqs.contains_key(&batch.instance) {
                forget_older_half(&mut self.seqs);
            }
            self.seqs.insert(batch.instance.clone(), (batch.seq, now));
        }
        let mut touched = Vec::new();
        if mode == Mode::Learning && self.baseline.learn_workload(reporter) {
            changes.baseline_workloads.push(reporter.clone());
        }
        let me = super::Reporter::new(reporter, &self.inventory, &self.graph);
        for obs in observations {
            if let Some(ix) = self.observe(&mut changes, mode, &me, obs, now) {
                touched.push(ix);
            }
        }
        let dropped = batch.dropped;
        let reporter = Arc::new(batch.reporter);
        changes.history = Some(HistoryStep {
            at: now,
            seq: self.history_seq,
            reporter: reporter.clone(),
            observations: batch.observations,
            oldest: self.history.oldest(now),
        });
        self.history_seq += 1;
        let learned_now = changes.baseline_workloads.len()
            + changes.baseline_edges.len()
            + changes.baseline_endpoints.len();
        if learned_now > 0 {
            let growth = self.growth.entry(reporter.namespace.clone()).or_default();
            growth.grew(now, learned_now);
            changes.growth = Some(self.growth.clone());
        }
        // Their statistics are read from the graph when the group is written.
        // Each edge once (the store and the views want each once).
        touched.sort_unstable();
        touched.dedup();
        changes.edges = touched;
        self.remember_audit(&changes);
        self.dropped = self.dropped.saturating_add(dropped);
        Some(changes)
    }
}

/// Forgets the half of the report sequence numbers last used longest ago:
/// a flood of made-up process ids (each a new entry) cannot grow them
/// without end. A forgotten process's next batch is taken as new; only a
/// batch it re-sends after that could count twice.
fn forget_older_half(seqs: &mut std::collections::HashMap<String, (u64, u64)>) {
    let mut times: Vec<u64> = seqs.values().map(|&(_, at)| at).collect();
    let mid = times.len() / 2;
    let (_, &mut cutoff, _) = times.select_nth_unstable(mid);
    seqs.retain(|_, &mut (_, at)| at > cutoff);
}

#[cfg(test)]
mod seq_tests {
    use super::forget_older_half;

    #[test]
    fn the_older_half_of_the_sequence_numbers_goes() {
        let mut seqs: std::collections::HashMap<String, (u64, u64)> = (0..10u64)
            .map(|i| (format!("p{i}"), (1, 100 + i)))
            .collect();
        forget_older_half(&mut seqs);
        let mut kept: Vec<&str> = seqs.keys().map(String::as_str).collect();
        kept.sort_unstable();
        assert_eq!(kept, ["p6", "p7", "p8", "p9"]);
    }
}
