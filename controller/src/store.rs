//! Durable state in an embedded redb database at `<data-dir>/vigil.redb`:
//! modes, registered workloads, the baseline, the graph's edges and alerts.
//!
//! Every engine step writes its changes in one ACID transaction, so a crash
//! loses at most the step in flight (which the proxy then re-sends, as it was
//! not acknowledged). Depends on `model`, `baseline`, `graph`, `inventory`.

mod edge_row;
mod history_row;
mod wire;

use std::path::{Path, PathBuf};

use redb::{
    Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition, TableHandle,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::baseline::Baseline;
use crate::graph::EdgeStats;
use crate::inventory::WorkloadRecord;
use crate::model::{Alert, AuditEntry, EdgeKey, Modes, NodeId, Quarantine, WorkloadId};

/// Key "modes" holds the JSON of [`Modes`].
const META: TableDefinition<&str, &str> = TableDefinition::new("meta");
const WORKLOADS: TableDefinition<&str, &str> = TableDefinition::new("workloads");
const BASELINE_WORKLOADS: TableDefinition<&str, ()> = TableDefinition::new("baseline_workloads");
const BASELINE_EDGES: TableDefinition<(&str, &str), ()> = TableDefinition::new("baseline_edges");
/// (source, target, `METHOD path-template`) of learned API endpoints.
const BASELINE_ENDPOINTS: TableDefinition<(&str, &str, &str), ()> =
    TableDefinition::new("baseline_endpoints");
/// Graph edges: (source, target) -> [`EdgeStats`] as a protobuf message
/// (see [`edge_row`]).
const EDGES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("edge_stats");
/// Graph edges as JSON, as versions before `edge_stats` wrote them: moved
/// to [`EDGES`] when the store opens; a row that cannot be read stays.
const LEGACY_EDGES: TableDefinition<(&str, &str), &str> = TableDefinition::new("edges");
const ALERTS: TableDefinition<&str, &str> = TableDefinition::new("alerts");
/// Observation history for dry runs: (unix seconds, seq) -> one report
/// batch's [`crate::simulate::Seen`] as a protobuf message (see
/// [`history_row`]).
const HISTORY: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("history_rows");
/// The history as JSON arrays, as versions before `history_rows` wrote it:
/// moved to [`HISTORY`] when the store opens; a row that cannot be read
/// stays.
const LEGACY_HISTORY: TableDefinition<(u64, u64), &str> = TableDefinition::new("history");
/// Audit log: seq -> JSON of [`AuditEntry`].
const AUDIT: TableDefinition<u64, &str> = TableDefinition::new("audit");
/// Quarantined workloads: `ns/name` -> JSON of [`Quarantine`].
const QUARANTINE: TableDefinition<&str, &str> = TableDefinition::new("quarantine");
/// CPU baselines per profile: `ns/profile` -> JSON of
/// [`crate::resource::CpuBaseline`].
const RESOURCE_BASELINES: TableDefinition<&str, &str> = TableDefinition::new("resource_baselines");
/// Audit entries read back at start (the newest).
pub const AUDIT_LOADED: usize = 10_000;
/// Sidecar process -> (last applied batch seq, unix seconds).
const REPORT_SEQS: TableDefinition<&str, (u64, u64)> = TableDefinition::new("report_seqs");
/// Sequence numbers of processes silent for this long are forgotten.
const SEQ_RETENTION_SECS: u64 = 7 * 86_400;

const MODES_KEY: &str = "modes";
/// Key "growth" holds the JSON of each namespace's baseline growth.
const GROWTH_KEY: &str = "growth";
/// Key "policy_epoch" counts the controller's starts (decimal), so that
/// each run numbers its policies above every earlier run's.
const POLICY_EPOCH_KEY: &str = "policy_epoch";
/// The store's page cache (redb's default is 1 GiB): the state is read
/// whole at start and kept in memory, so the cache only serves writes.
const CACHE_BYTES: usize = 32 << 20;
/// File name of the database inside the data directory.
pub const DB_FILE: &str = "vigil.redb";

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database file could not be opened or created.
    #[error(
        "cannot open the Vigil store {path}: {source}; if the file is corrupt, move it aside \
         (it is kept, never deleted) and start again to begin a new baseline"
    )]
    Open {
        /// The database file.
        path: PathBuf,
        /// The cause.
        source: redb::DatabaseError,
    },
    /// A read or write failed.
    #[error("Vigil store {op} failed: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The cause.
        source: redb::Error,
    },
    /// A value could not be encoded.
    #[error("cannot encode {what} for the store: {source}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// The cause.
        source: serde_json::Error,
    },
}

fn io<E: Into<redb::Error>>(op: &'static str) -> impl Fn(E) -> StoreError + Copy {
    move |e| StoreError::Io {
        op,
        source: e.into(),
    }
}

/// Everything read back at start.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Namespace modes.
    pub modes: Modes,
    /// Registered workloads.
    pub workloads: Vec<(WorkloadId, WorkloadRecord)>,
    /// The learned baseline.
    pub baseline: Baseline,
    /// Graph edges.
    pub edges: Vec<(EdgeKey, EdgeStats)>,
    /// Alerts.
    pub alerts: Vec<Alert>,
    /// Last applied report batch per sidecar process: (seq, unix seconds).
    pub report_seqs: std::collections::HashMap<String, (u64, u64)>,
    /// The newest audit entries, oldest first (at most [`AUDIT_LOADED`]).
    pub audit: Vec<AuditEntry>,
    /// The next audit sequence number.
    pub next_audit: u64,
    /// Quarantined workloads.
    pub quarantined: std::collections::BTreeMap<WorkloadId, Quarantine>,
    /// When each namespace's baseline grew.
    pub growth: std::collections::BTreeMap<String, crate::stability::Growth>,
    /// Stored observations for dry runs, oldest first, with the next row
    /// number.
    pub history: (Vec<crate::simulate::Seen>, u64),
    /// The CPU baseline of each profile.
    pub resource_baselines: std::collections::BTreeMap<WorkloadId, crate::resource::CpuBaseline>,
    /// Rows that could not be decoded (kept in the file, skipped here).
    pub skipped: usize,
}

/// An edge whose statistics changed: where the caller's graph keeps it
/// (the caller's own handle; one edge, one handle). [`Store::write_all`]
/// hands it back to the graph for the edge's ends and statistics, so that
/// the edge is neither looked up again nor its ids copied per report.
pub type Touched = crate::graph::EdgeIndex;

/// An edge as [`Store::write_all`] writes it, as the caller's graph has it.
#[derive(Clone, Copy, Debug)]
pub struct EdgeNow<'g> {
    /// Its source.
    pub source: &'g NodeId,
    /// Its target.
    pub target: &'g NodeId,
    /// Its statistics.
    pub stats: &'g EdgeStats,
}

/// A report's observations for the history (see [`Changes::history`]):
/// kept as the report brought them, so that they move into the store's
/// row and the engine's history without being copied per observation.
#[derive(Debug)]
pub struct HistoryStep {
    /// Unix seconds the report was applied.
    pub at: u64,
    /// Its row number.
    pub seq: u64,
    /// Who reported.
    pub reporter: std::sync::Arc<WorkloadId>,
    /// What it reported, as it came: the row and the engine's history keep
    /// only the counted ones (a live stream's later reports add bytes, not
    /// verdicts).
    pub observations: Vec<crate::model::Observation>,
    /// Rows older than this (unix seconds) are removed.
    pub oldest: u64,
}

/// Changes made by one engine step, written in one transaction.
#[derive(Debug, Default)]
pub struct Changes {
    /// New namespace modes.
    pub modes: Option<Modes>,
    /// Workloads registered or updated.
    pub workloads: Vec<(WorkloadId, WorkloadRecord)>,
    /// Workloads added to the baseline.
    pub baseline_workloads: Vec<WorkloadId>,
    /// Edges added to the baseline.
    pub baseline_edges: Vec<EdgeKey>,
    /// API endpoints added to the baseline: (edge, `METHOD path`).
    pub baseline_endpoints: Vec<(EdgeKey, String)>,
    /// Edges whose statistics changed: written with the statistics the
    /// caller's graph holds when the group is written (see
    /// [`Store::write_all`]), once per group however many steps name them.
    pub edges: Vec<Touched>,
    /// Alerts created or updated.
    pub alerts: Vec<Alert>,
    /// The report batch applied: (sidecar process, seq, unix seconds).
    pub report_seq: Option<(String, u64, u64)>,
    /// Before the baseline rows above are added, remove those of this
    /// namespace (`Some(None)`: the whole baseline), for an import that
    /// replaces.
    pub baseline_reset: Option<Option<String>>,
    /// Audit entries to append.
    pub audit: Vec<AuditEntry>,
    /// Quarantines started (`Some`) or ended (`None`).
    pub quarantine: Vec<(WorkloadId, Option<Quarantine>)>,
    /// Each namespace's baseline growth, when it changed.
    pub growth: Option<std::collections::BTreeMap<String, crate::stability::Growth>>,
    /// A report's observations to add to the history, and rows older
    /// than its window removed.
    pub history: Option<HistoryStep>,
    /// CPU baselines of profiles that learned.
    pub resource_baselines: Vec<(WorkloadId, crate::resource::CpuBaseline)>,
}

impl Changes {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.modes.is_none()
            && self.workloads.is_empty()
            && self.baseline_workloads.is_empty()
            && self.baseline_edges.is_empty()
            && self.baseline_endpoints.is_empty()
            && self.edges.is_empty()
            && self.alerts.is_empty()
            && self.report_seq.is_none()
            && self.baseline_reset.is_none()
            && self.audit.is_empty()
            && self.quarantine.is_empty()
            && self.growth.is_none()
            && self.history.is_none()
            && self.resource_baselines.is_empty()
    }
}

/// The embedded database.
#[derive(Debug)]
pub struct Store {
    db: Database,
    /// Tests: make the next write fail, as a full disk would.
    #[cfg(test)]
    fail_next: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

fn encode<T: Serialize>(what: &'static str, value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|source| StoreError::Encode { what, source })
}

fn decode<T: DeserializeOwned>(
    table: &str,
    key: &str,
    json: &str,
    skipped: &mut usize,
) -> Option<T> {
    match serde_json::from_str(json) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!(table, key, error = %e, "skipping an unreadable row of the store");
            *skipped += 1;
            None
        }
    }
}

fn edge_key(table: &str, a: &str, b: &str, skipped: &mut usize) -> Option<EdgeKey> {
    match (a.parse::<NodeId>(), b.parse::<NodeId>()) {
        (Ok(a), Ok(b)) => Some((a, b)),
        _ => {
            tracing::warn!(table, a, b, "skipping an edge with a malformed node id");
            *skipped += 1;
            None
        }
    }
}

impl Store {
    /// Opens (or creates) the store in `dir`, creating the directory.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join(DB_FILE);
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(&path)
            .map_err(|source| StoreError::Open { path, source })?;
        let store = Self {
            db,
            #[cfg(test)]
            fail_next: std::sync::Arc::default(),
        };
        // Create every table so that reads never meet a missing one.
        store.write(&Changes::default())?;
        store.move_legacy(LEGACY_EDGES, EDGES, |json| {
            let stats = serde_json::from_str::<EdgeStats>(json).ok()?;
            Some(edge_row::encode(&stats))
        })?;
        store.move_legacy(LEGACY_HISTORY, HISTORY, |json| {
            let seen = serde_json::from_str::<Vec<crate::simulate::Seen>>(json).ok()?;
            Some(history_row::encode(&seen))
        })?;
        store.forget_old_seqs()?;
        Ok(store)
    }

    /// Moves the rows an earlier version wrote as JSON in `from` to `to`,
    /// as `convert` re-encodes them, in one transaction; a row that
    /// `convert` cannot read stays where it was (and [`Store::load`]
    /// counts it as skipped). Nothing to do when `from` is gone.
    fn move_legacy<K: redb::Key + 'static>(
        &self,
        from: TableDefinition<K, &str>,
        to: TableDefinition<K, &[u8]>,
        convert: impl Fn(&str) -> Option<Vec<u8>>,
    ) -> Result<(), StoreError> {
        const OP: &str = "move rows an earlier version wrote";
        let tx = self.db.begin_write().map_err(io(OP))?;
        let legacy_exists =
            (tx.list_tables().map_err(io(OP))?).any(|table| table.name() == from.name());
        if !legacy_exists {
            return Ok(());
        }
        let (moved, left) = {
            let mut legacy = tx.open_table(from).map_err(io(OP))?;
            let mut rows = tx.open_table(to).map_err(io(OP))?;
            let before = legacy.len().map_err(io(OP))?;
            let mut failed = None;
            legacy
                .retain(|key, json| match convert(json) {
                    // A row that cannot be written stays, and the move fails.
                    Some(row) => match rows.insert(key, row.as_slice()) {
                        Ok(_) => false,
                        Err(e) => {
                            failed.get_or_insert(e);
                            true
                        }
                    },
                    None => true,
                })
                .map_err(io(OP))?;
            if let Some(e) = failed {
                return Err(io(OP)(e));
            }
            let left = legacy.len().map_err(io(OP))?;
            (before - left, left)
        };
        if left == 0 {
            tx.delete_table(from).map_err(io(OP))?;
        }
        tx.commit().map_err(io(OP))?;
        tracing::info!(
            from = from.name(),
            to = to.name(),
            moved,
            left,
            "moved rows an earlier version wrote"
        );
        Ok(())
    }

    /// Deletes the sequence numbers of processes silent for longer than
    /// [`SEQ_RETENTION_SECS`] (each sidecar process has its own: without
    /// this the table only grows).
    fn forget_old_seqs(&self) -> Result<(), StoreError> {
        let oldest = crate::model::now_unix().saturating_sub(SEQ_RETENTION_SECS);
        let tx = self.db.begin_write().map_err(io("write"))?;
        {
            let mut table = tx.open_table(REPORT_SEQS).map_err(io("write"))?;
            table
                .retain(|_, (_, at)| at >= oldest)
                .map_err(io("write"))?;
        }
        tx.commit().map_err(io("commit"))?;
        Ok(())
    }

    /// Counts one more start and returns the count (1 the first time):
    /// the epoch this run numbers its policies in. An unreadable count
    /// starts again at 1 (with a warning): the numbers are for people and
    /// metrics, no sidecar judges by them.
    pub fn next_policy_epoch(&self) -> Result<u64, StoreError> {
        let tx = self.db.begin_write().map_err(io("write"))?;
        let epoch = {
            let mut meta = tx.open_table(META).map_err(io("write"))?;
            let stored = meta
                .get(POLICY_EPOCH_KEY)
                .map_err(io("read"))?
                .map(|v| v.value().parse::<u64>().ok());
            let epoch = match stored {
                None => 1,
                Some(Some(n)) => n.saturating_add(1),
                Some(None) => {
                    tracing::warn!("the stored policy epoch is unreadable; counting from 1 again");
                    1
                }
            };
            meta.insert(POLICY_EPOCH_KEY, epoch.to_string().as_str())
                .map_err(io("write"))?;
            epoch
        };
        tx.commit().map_err(io("commit"))?;
        Ok(epoch)
    }

    /// Reads everything back.
    pub fn load(&self) -> Result<Loaded, StoreError> {
        let tx = self.db.begin_read().map_err(io("read"))?;
        let mut out = Loaded::default();
        let skipped = &mut out.skipped;

        let meta = tx.open_table(META).map_err(io("read"))?;
        if let Some(json) = meta.get(MODES_KEY).map_err(io("read"))?
            && let Some(m) = decode("meta", MODES_KEY, json.value(), skipped)
        {
            out.modes = m;
        }
        if let Some(json) = meta.get(GROWTH_KEY).map_err(io("read"))?
            && let Some(g) = decode("meta", GROWTH_KEY, json.value(), skipped)
        {
            out.growth = g;
        }
        for row in tx
            .open_table(WORKLOADS)
            .map_err(io("read"))?
            .iter()
            .map_err(io("read"))?
        {
            let (k, v) = row.map_err(io("read"))?;
            let (key, json) = (k.value(), v.value());
            let id = key.parse::<WorkloadId>().ok();
            match (
                id,
                decode::<WorkloadRecord>("workloads", key, json, skipped),
            ) {
                (Some(id), Some(rec)) => out.workloads.push((id, rec)),
                (None, Some(_)) => *skipped += 1,
                _ => {}
            }
        }
        let table = tx.open_table(BASELINE_WORKLOADS).map_err(io("read"))?;
        for row in table.iter().map_err(io("read"))? {
            let (k, _) = row.map_err(io("read"))?;
            match k.value().parse::<WorkloadId>() {
                Ok(id) => {
                    out.baseline.learn_workload(&id);
                }
                Err(_) => *skipped += 1,
            }
        }
        let table = tx.open_table(BASELINE_EDGES).map_err(io("read"))?;
        for row in table.iter().map_err(io("read"))? {
            let (k, _) = row.map_err(io("read"))?;
            let (a, b) = k.value();
            if let Some(edge) = edge_key("baseline_edges", a, b, skipped) {
                out.baseline.learn_edge(&edge);
            }
        }
        let table = tx.open_table(BASELINE_ENDPOINTS).map_err(io("read"))?;
        for row in table.iter().map_err(io("read"))? {
            let (k, _) = row.map_err(io("read"))?;
            let (a, b, endpoint) = k.value();
            if let Some(edge) = edge_key("baseline_endpoints", a, b, skipped) {
                out.baseline.learn_endpoint(&edge, endpoint);
            }
        }
        for row in tx
            .open_table(EDGES)
            .map_err(io("read"))?
            .iter()
            .map_err(io("read"))?
        {
            let (k, v) = row.map_err(io("read"))?;
            let (a, b) = k.value();
            let Some(edge) = edge_key("edge_stats", a, b, skipped) else {
                continue;
            };
            match edge_row::decode(v.value()) {
                Ok(stats) => out.edges.push((edge, stats)),
                Err(error) => {
                    tracing::warn!(table = "edge_stats", a, b, %error, "skipping an unreadable row of the store");
                    *skipped += 1;
                }
            }
        }
        *skipped += legacy_left(&tx, LEGACY_EDGES)?;
        for row in tx
            .open_table(ALERTS)
            .map_err(io("read"))?
            .iter()
            .map_err(io("read"))?
        {
            let (k, v) = row.map_err(io("read"))?;
            if let Some(alert) = decode("alerts", k.value(), v.value(), skipped) {
                out.alerts.push(alert);
            }
        }
        let table = tx.open_table(AUDIT).map_err(io("read"))?;
        if let Some(last) = table.last().map_err(io("read"))? {
            out.next_audit = last.0.value() + 1;
        }
        for row in table.iter().map_err(io("read"))?.rev().take(AUDIT_LOADED) {
            let (k, v) = row.map_err(io("read"))?;
            let seq = k.value().to_string();
            if let Some(entry) = decode("audit", &seq, v.value(), skipped) {
                out.audit.push(entry);
            }
        }
        out.audit.reverse();
        *skipped += legacy_left(&tx, LEGACY_HISTORY)?;
        let table = tx.open_table(HISTORY).map_err(io("read"))?;
        for row in table.iter().map_err(io("read"))? {
            let (k, v) = row.map_err(io("read"))?;
            let (at, seq) = k.value();
            out.history.1 = out.history.1.max(seq + 1);
            match history_row::decode(v.value()) {
                Ok(seen) => out.history.0.extend(seen),
                Err(error) => {
                    tracing::warn!(table = "history_rows", at, seq, %error, "skipping an unreadable row of the store");
                    *skipped += 1;
                }
            }
        }
        let table = tx.open_table(QUARANTINE).map_err(io("read"))?;
        for row in table.iter().map_err(io("read"))? {
            let (k, v) = row.map_err(io("read"))?;
            let id = k.value().parse::<WorkloadId>().ok();
            match (id, decode("quarantine", k.value(), v.value(), skipped)) {
                (Some(id), Some(q)) => {
                    out.quarantined.insert(id, q);
                }
                (None, _) => *skipped += 1,
                _ => {}
            }
        }
        let table = tx.open_table(RESOURCE_BASELINES).map_err(io("read"))?;
        for row in table.iter().map_err(io("read"))? {
            let (k, v) = row.map_err(io("read"))?;
            let id = k.value().parse::<WorkloadId>().ok();
            match (
                id,
                decode("resource_baselines", k.value(), v.value(), skipped),
            ) {
                (Some(id), Some(baseline)) => {
                    out.resource_baselines.insert(id, baseline);
                }
                (None, _) => *skipped += 1,
                _ => {}
            }
        }
        let oldest = crate::model::now_unix().saturating_sub(SEQ_RETENTION_SECS);
        let table = tx.open_table(REPORT_SEQS).map_err(io("read"))?;
        for row in table.iter().map_err(io("read"))? {
            let (k, v) = row.map_err(io("read"))?;
            let (seq, at) = v.value();
            if at >= oldest {
                out.report_seqs.insert(k.value().to_owned(), (seq, at));
            }
        }
        Ok(out)
    }

    /// Tests: a switch that, when set, makes the next [`Store::write`] fail.
    #[cfg(test)]
    pub fn fail_switch(&self) -> std::sync::Arc<std::sync::atomic::AtomicBool> {
        self.fail_next.clone()
    }

    /// Writes `changes`, which name no edge statistics (those come from a
    /// graph: see [`Store::write_all`]), in one durable transaction.
    pub fn write(&self, changes: &Changes) -> Result<(), StoreError> {
        debug_assert!(
            changes.edges.is_empty(),
            "edges are written with their graph"
        );
        self.write_all(&[changes], |_| None)
    }

    /// Writes several steps' changes, in order, in one durable transaction
    /// (a group commit: one fsync for all of them, or nothing written). The
    /// edges they name are written once each, with their ends and
    /// statistics from `graph` (the graph as the group left it; an edge it
    /// no longer has is not written).
    pub fn write_all<'g>(
        &self,
        all: &[&Changes],
        graph: impl Fn(Touched) -> Option<EdgeNow<'g>>,
    ) -> Result<(), StoreError> {
        #[cfg(test)]
        if self
            .fail_next
            .swap(false, std::sync::atomic::Ordering::Relaxed)
        {
            return Err(StoreError::Io {
                op: "write",
                source: redb::Error::Corrupted("injected by a test".into()),
            });
        }
        let tx = self.db.begin_write().map_err(io("write"))?;
        {
            let mut tables = Tables::open(&tx)?;
            for changes in all {
                tables.write(changes)?;
            }
            // Rewritten whole by each step: the last step's is the state.
            if let Some(growth) = all.iter().rev().find_map(|c| c.growth.as_ref()) {
                put(&mut tables.meta, GROWTH_KEY, "growth", growth)?;
            }
            let mut written =
                std::collections::HashSet::<Touched, foldhash::fast::RandomState>::default();
            // The ids are written into the same two buffers, edge after edge.
            let (mut a, mut b) = (String::new(), String::new());
            for &at in all.iter().flat_map(|c| &c.edges) {
                if !written.insert(at) {
                    continue;
                }
                if let Some(edge) = graph(at) {
                    use std::fmt::Write as _;
                    a.clear();
                    b.clear();
                    // Writing into a String cannot fail.
                    let _ = (write!(a, "{}", edge.source), write!(b, "{}", edge.target));
                    tables
                        .edges
                        .insert(
                            (a.as_str(), b.as_str()),
                            edge_row::encode(edge.stats).as_slice(),
                        )
                        .map_err(io("write"))?;
                }
            }
            // The history window moves forward: trimming to the newest
            // step's edge trims for every step.
            if let Some(oldest) = all
                .iter()
                .filter_map(|c| c.history.as_ref().map(|h| h.oldest))
                .max()
            {
                tables
                    .history
                    .retain_in((0, 0)..(oldest, 0), |_, _| false)
                    .map_err(io("write"))?;
            }
        }
        tx.commit().map_err(io("commit"))
    }
}

/// The rows of `table` (a table an earlier version wrote) that the move at
/// open could not read: kept where they are, counted as skipped.
fn legacy_left<K: redb::Key + 'static>(
    tx: &redb::ReadTransaction,
    table: TableDefinition<K, &str>,
) -> Result<usize, StoreError> {
    let left = match tx.open_table(table) {
        Ok(rows) => rows.len().map_err(io("read"))?,
        Err(redb::TableError::TableDoesNotExist(_)) => 0,
        Err(e) => return Err(io("read")(e)),
    };
    if left > 0 {
        tracing::warn!(
            table = table.name(),
            left,
            "skipping rows an earlier version wrote that could not be read"
        );
    }
    Ok(left as usize)
}

/// Writes `value` as JSON under `key` in a table of JSON rows.
fn put(
    table: &mut redb::Table<'_, &'static str, &'static str>,
    key: &str,
    what: &'static str,
    value: &impl serde::Serialize,
) -> Result<(), StoreError> {
    table
        .insert(key, encode(what, value)?.as_str())
        .map_err(io("write"))?;
    Ok(())
}

/// Every table, opened once for a whole write transaction (a group of
/// steps), rather than once per step.
struct Tables<'tx> {
    meta: redb::Table<'tx, &'static str, &'static str>,
    workloads: redb::Table<'tx, &'static str, &'static str>,
    history: redb::Table<'tx, (u64, u64), &'static [u8]>,
    audit: redb::Table<'tx, u64, &'static str>,
    quarantine: redb::Table<'tx, &'static str, &'static str>,
    baseline_workloads: redb::Table<'tx, &'static str, ()>,
    baseline_edges: redb::Table<'tx, (&'static str, &'static str), ()>,
    baseline_endpoints: redb::Table<'tx, (&'static str, &'static str, &'static str), ()>,
    edges: redb::Table<'tx, (&'static str, &'static str), &'static [u8]>,
    alerts: redb::Table<'tx, &'static str, &'static str>,
    resource_baselines: redb::Table<'tx, &'static str, &'static str>,
    report_seqs: redb::Table<'tx, &'static str, (u64, u64)>,
}

impl<'tx> Tables<'tx> {
    fn open(tx: &'tx redb::WriteTransaction) -> Result<Self, StoreError> {
        let e = io("write");
        Ok(Tables {
            meta: tx.open_table(META).map_err(e)?,
            workloads: tx.open_table(WORKLOADS).map_err(e)?,
            history: tx.open_table(HISTORY).map_err(e)?,
            audit: tx.open_table(AUDIT).map_err(e)?,
            quarantine: tx.open_table(QUARANTINE).map_err(e)?,
            baseline_workloads: tx.open_table(BASELINE_WORKLOADS).map_err(e)?,
            baseline_edges: tx.open_table(BASELINE_EDGES).map_err(e)?,
            baseline_endpoints: tx.open_table(BASELINE_ENDPOINTS).map_err(e)?,
            edges: tx.open_table(EDGES).map_err(e)?,
            alerts: tx.open_table(ALERTS).map_err(e)?,
            resource_baselines: tx.open_table(RESOURCE_BASELINES).map_err(e)?,
            report_seqs: tx.open_table(REPORT_SEQS).map_err(e)?,
        })
    }

    /// Writes one step's `changes` (but its edges, growth and history
    /// trim, which [`Store::write_all`] writes once for the group).
    fn write(&mut self, changes: &Changes) -> Result<(), StoreError> {
        let e = io("write");
        if let Some(modes) = &changes.modes {
            put(&mut self.meta, MODES_KEY, "modes", modes)?;
        }
        for (id, record) in &changes.workloads {
            put(&mut self.workloads, &id.to_string(), "workload", record)?;
        }
        if let Some(namespace) = &changes.baseline_reset {
            self.reset_baseline(namespace.as_deref())?;
        }
        if let Some(step) = &changes.history
            && let Some(row) = history_row::encode_report(step)
        {
            self.history
                .insert((step.at, step.seq), row.as_slice())
                .map_err(e)?;
        }
        for entry in &changes.audit {
            self.audit
                .insert(entry.seq, encode("audit entry", entry)?.as_str())
                .map_err(e)?;
        }
        for (id, quarantine) in &changes.quarantine {
            let key = id.to_string();
            match quarantine {
                Some(q) => put(&mut self.quarantine, &key, "quarantine", q)?,
                None => {
                    self.quarantine.remove(key.as_str()).map_err(e)?;
                }
            }
        }
        for id in &changes.baseline_workloads {
            self.baseline_workloads
                .insert(id.to_string().as_str(), ())
                .map_err(e)?;
        }
        for (a, b) in &changes.baseline_edges {
            let (a, b) = (a.to_string(), b.to_string());
            self.baseline_edges
                .insert((a.as_str(), b.as_str()), ())
                .map_err(e)?;
        }
        for ((a, b), endpoint) in &changes.baseline_endpoints {
            let (a, b) = (a.to_string(), b.to_string());
            self.baseline_endpoints
                .insert((a.as_str(), b.as_str(), endpoint.as_str()), ())
                .map_err(e)?;
        }
        for alert in &changes.alerts {
            put(&mut self.alerts, &alert.key(), "alert", alert)?;
        }
        for (profile, baseline) in &changes.resource_baselines {
            put(
                &mut self.resource_baselines,
                &profile.to_string(),
                "CPU baseline",
                baseline,
            )?;
        }
        if let Some((instance, seq, at)) = &changes.report_seq {
            self.report_seqs
                .insert(instance.as_str(), (*seq, *at))
                .map_err(e)?;
        }
        Ok(())
    }

    /// Removes the baseline rows of `namespace` (all rows when `None`): a
    /// workload of that namespace, or an edge or endpoint touching one.
    fn reset_baseline(&mut self, namespace: Option<&str>) -> Result<(), StoreError> {
        let in_ns = |node: &str| match namespace {
            None => true,
            Some(ns) => node
                .strip_prefix("workload:")
                .and_then(|id| id.split_once('/'))
                .is_some_and(|(n, _)| n == ns),
        };
        self.baseline_workloads
            .retain(|id, ()| {
                namespace.is_some_and(|ns| id.split_once('/').is_none_or(|(n, _)| n != ns))
            })
            .map_err(io("write"))?;
        self.baseline_edges
            .retain(|(a, b), ()| !in_ns(a) && !in_ns(b))
            .map_err(io("write"))?;
        self.baseline_endpoints
            .retain(|(a, b, _), ()| !in_ns(a) && !in_ns(b))
            .map_err(io("write"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Action, AlertKind, Mode};

    #[test]
    fn sequence_numbers_of_long_silent_processes_are_deleted_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let now = crate::model::now_unix();
        for (instance, at) in [("old", now - SEQ_RETENTION_SECS - 60), ("new", now)] {
            let changes = Changes {
                report_seq: Some((instance.into(), 7, at)),
                ..Changes::default()
            };
            store.write(&changes).unwrap();
        }
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        let tx = store.db.begin_read().unwrap();
        let table = tx.open_table(REPORT_SEQS).unwrap();
        assert_eq!(table.len().unwrap(), 1);
        assert!(table.get("new").unwrap().is_some());
    }

    #[test]
    fn each_start_counts_one_more_policy_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.next_policy_epoch().unwrap(), 1);
        assert_eq!(store.next_policy_epoch().unwrap(), 2);
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.next_policy_epoch().unwrap(), 3);
        // An unreadable count starts again rather than stopping the start.
        let tx = store.db.begin_write().unwrap();
        tx.open_table(META)
            .unwrap()
            .insert(POLICY_EPOCH_KEY, "garbage")
            .unwrap();
        tx.commit().unwrap();
        assert_eq!(store.next_policy_epoch().unwrap(), 1);
    }

    #[test]
    fn everything_written_is_read_back_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let web = WorkloadId::new("shop", "web").unwrap();
        let edge = (
            NodeId::Workload(web.clone()),
            NodeId::External("pypi.org:443".into()),
        );
        let mut modes = Modes::default();
        modes
            .namespaces
            .insert("shop".into(), Mode::Enforcement { alert_only: true });
        let record = WorkloadRecord {
            inbound_addrs: vec!["127.0.0.1:4143".parse().unwrap()],
            proxy_version: "0.1.0".into(),
            first_seen: 1,
            last_seen: 2,
            registered_from: Some("10.0.0.9".parse().unwrap()),
            tenant: "alice@example.com".into(),
            profile: "jupyter/scipy-notebook".into(),
            pod_ips: vec!["10.1.0.7".parse().unwrap()],
            discovered: true,
        };
        let stats = EdgeStats {
            requests: 7,
            ..EdgeStats::default()
        };
        let mut alert = Alert {
            id: String::new(),
            kind: AlertKind::UnknownEgress,
            severity: crate::model::Severity::Medium,
            namespace: "shop".into(),
            workload: "web".into(),
            tenant: "alice@example.com".into(),
            destination: "pool.example:3333".into(),
            action: Action::Flagged,
            count: 3,
            denied: 1,
            first_seen: "2026-11-23T00:00:00Z".into(),
            last_seen: "2026-11-23T00:00:01Z".into(),
            claimed: Some("pypi.test:443".into()),
            explanation: String::new(),
            evidence: crate::model::Evidence::default(),
        };
        alert.upgrade();
        {
            let store = Store::open(dir.path()).unwrap();
            let changes = Changes {
                modes: Some(modes.clone()),
                workloads: vec![(web.clone(), record.clone())],
                baseline_workloads: vec![web.clone()],
                baseline_edges: vec![edge.clone()],
                baseline_endpoints: vec![(edge.clone(), "GET /simple/{name}".into())],
                edges: vec![0.into()],
                alerts: vec![alert.clone()],
                report_seq: Some(("abc".into(), 7, crate::model::now_unix())),
                ..Changes::default()
            };
            let graph = |at: Touched| {
                (at.index() == 0).then_some(EdgeNow {
                    source: &edge.0,
                    target: &edge.1,
                    stats: &stats,
                })
            };
            store.write_all(&[&changes], graph).unwrap();
        }
        let loaded = Store::open(dir.path()).unwrap().load().unwrap();
        assert_eq!(loaded.modes, modes);
        assert_eq!(loaded.workloads, vec![(web.clone(), record)]);
        assert!(loaded.baseline.has_workload(&web));
        assert!(loaded.baseline.has_edge(&edge));
        assert!(loaded.baseline.has_endpoint(&edge, "GET /simple/{name}"));
        assert_eq!(loaded.edges, vec![(edge, stats)]);
        assert_eq!(loaded.alerts, vec![alert]);
        assert_eq!(loaded.report_seqs["abc"].0, 7);
        assert_eq!(loaded.skipped, 0);
    }

    #[test]
    fn a_corrupt_file_is_a_clear_error_and_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        std::fs::write(
            &path,
            b"this is not a redb database, it is garbage".repeat(100),
        )
        .unwrap();
        let err = Store::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("cannot open the Vigil store"), "{err}");
        assert!(err.contains("move it aside"), "{err}");
        assert!(path.exists());
    }

    #[test]
    fn unreadable_rows_are_skipped_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let tx = store.db.begin_write().unwrap();
        tx.open_table(ALERTS)
            .unwrap()
            .insert("x", "{not json")
            .unwrap();
        let mut edges = tx.open_table(EDGES).unwrap();
        let row = edge_row::encode(&EdgeStats::default());
        edges.insert(("bogus", "internet"), row.as_slice()).unwrap();
        edges
            .insert(("workload:ns/a", "internet"), b"\x08\xff".as_slice())
            .unwrap();
        drop(edges);
        (tx.open_table(HISTORY).unwrap())
            .insert((1, 1), b"\x0a\x02\x18\x00".as_slice())
            .unwrap();
        tx.commit().unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(loaded.skipped, 4, "an alert, a key, an edge, a history row");
        assert!(loaded.history.0.is_empty());
        assert!(loaded.alerts.is_empty() && loaded.edges.is_empty());
    }

    /// A store written by a version that kept edges and the history as
    /// JSON opens with them, now in `edge_stats` and `history_rows`; a row
    /// that cannot be read stays in the old table (counted as skipped at
    /// every start, never deleted); opening again moves nothing twice.
    #[test]
    fn rows_an_earlier_version_wrote_as_json_are_moved() {
        let dir = tempfile::tempdir().unwrap();
        let stats = EdgeStats {
            requests: 7,
            endpoints: [("GET /api/items/{id}".to_owned(), 7)].into(),
            statuses: [(200, 7)].into(),
            first_seen: 1_800_000_000,
            last_seen: 1_800_000_060,
            ..EdgeStats::default()
        };
        let seen = vec![crate::simulate::Seen {
            at: 1_800_000_060,
            reporter: WorkloadId::new("ns", "a").unwrap().into(),
            obs: crate::model::outbound("pypi.org:443", Some("151.101.0.223:443"), 7),
        }];
        {
            // The earlier version's file: its tables, as it wrote them.
            let db = Database::create(dir.path().join(DB_FILE)).unwrap();
            let tx = db.begin_write().unwrap();
            let mut legacy = tx.open_table(LEGACY_EDGES).unwrap();
            let json = serde_json::to_string(&stats).unwrap();
            legacy
                .insert(("workload:ns/a", "external:pypi.org:443"), json.as_str())
                .unwrap();
            legacy
                .insert(("workload:ns/a", "workload:ns/db"), "{torn")
                .unwrap();
            drop(legacy);
            let mut legacy = tx.open_table(LEGACY_HISTORY).unwrap();
            let json = serde_json::to_string(&seen).unwrap();
            legacy.insert((1_800_000_060, 4), json.as_str()).unwrap();
            legacy.insert((1_800_000_061, 5), "[{torn").unwrap();
            drop(legacy);
            tx.commit().unwrap();
        }
        for start in ["first start", "second start"] {
            let store = Store::open(dir.path()).unwrap();
            let loaded = store.load().unwrap();
            let a: NodeId = "workload:ns/a".parse().unwrap();
            let pypi: NodeId = "external:pypi.org:443".parse().unwrap();
            assert_eq!(loaded.edges, [((a, pypi), stats.clone())], "{start}");
            assert_eq!(loaded.history, (seen.clone(), 5), "{start}");
            assert_eq!(loaded.skipped, 2, "{start}: the torn rows");
            let tx = store.db.begin_read().unwrap();
            let legacy = tx.open_table(LEGACY_EDGES).unwrap();
            let left: Vec<_> = (legacy.iter().unwrap())
                .map(|row| row.unwrap().1.value().to_owned())
                .collect();
            assert_eq!(left, ["{torn"], "{start}: kept where it was");
            let legacy = tx.open_table(LEGACY_HISTORY).unwrap();
            let left: Vec<_> = (legacy.iter().unwrap())
                .map(|row| row.unwrap().1.value().to_owned())
                .collect();
            assert_eq!(left, ["[{torn"], "{start}: kept where it was");
        }
    }

    #[test]
    fn rows_written_before_the_newer_fields_still_decode() {
        let mut skipped = 0;
        let alert: Alert = decode(
            "alerts",
            "k",
            r#"{"kind":"unknown_egress","namespace":"lab","workload":"nb",
                "destination":"pool.example:3333","action":"blocked","count":4,
                "first_seen":"2026-11-23T00:00:00Z","last_seen":"2026-11-23T00:00:01Z"}"#,
            &mut skipped,
        )
        .expect("an alert without denied");
        assert_eq!((alert.count, alert.denied), (4, 0));
        let record: WorkloadRecord = decode(
            "workloads",
            "lab/nb",
            r#"{"inbound_addrs":["10.0.0.5:4143"],"proxy_version":"0.1.0",
                "first_seen":1,"last_seen":2}"#,
            &mut skipped,
        )
        .expect("a record without registered_from");
        assert_eq!(record.registered_from, None);
        assert_eq!(skipped, 0);
    }

    #[test]
    fn a_group_keeps_the_newest_growth_and_trims_the_history_to_its_newest_window() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let seen = |at: u64, seq: u64, oldest: u64| HistoryStep {
            at,
            seq,
            reporter: WorkloadId::new("lab", "nb").unwrap().into(),
            // A live stream's later report is not kept.
            observations: vec![
                crate::model::outbound("pypi.org:443", None, 1),
                crate::model::outbound("pypi.org:443", None, 0),
            ],
            oldest,
        };
        let growth = |last: u64| {
            let mut g = crate::stability::Growth::default();
            g.grew(last, 1);
            Some([("lab".to_owned(), g)].into())
        };
        let step = |at: u64, seq: u64, oldest: u64, grew: Option<u64>| Changes {
            history: Some(seen(at, seq, oldest)),
            growth: grew.and_then(growth),
            ..Changes::default()
        };
        store.write(&step(60, 0, 0, Some(60))).unwrap();
        // step(history row at, row number, trim below, grew at)
        let group = [
            step(100, 1, 50, Some(100)),
            step(200, 2, 150, Some(200)),
            step(210, 3, 120, None),
        ];
        store
            .write_all(&group.iter().collect::<Vec<_>>(), |_| None)
            .unwrap();
        let loaded = store.load().unwrap();
        let rows: Vec<u64> = loaded.history.0.iter().map(|s| s.at).collect();
        assert_eq!(
            rows,
            [200, 210],
            "rows older than the newest window (150) are gone, whichever step wrote them"
        );
        assert_eq!(
            loaded.growth["lab"].last, 200,
            "the last step that grew; a step without growth keeps it"
        );
    }

    #[test]
    fn a_group_writes_each_edge_once_as_the_graph_left_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let nb = NodeId::Workload(WorkloadId::new("lab", "nb").unwrap());
        let pypi = (nb, NodeId::External("pypi.org:443".into()));
        let step = |edges: Vec<u32>| Changes {
            edges: edges.into_iter().map(Touched::from).collect(),
            ..Changes::default()
        };
        // The graph has `pypi` at 0; the edge at 1 (`gone`) it no longer
        // has.
        let (a, b) = (step(vec![0, 1]), step(vec![0]));
        let latest = EdgeStats {
            requests: 12,
            ..EdgeStats::default()
        };
        let asked = std::cell::Cell::new(0);
        let graph = |at: Touched| {
            asked.set(asked.get() + 1);
            (at.index() == 0).then_some(EdgeNow {
                source: &pypi.0,
                target: &pypi.1,
                stats: &latest,
            })
        };
        store.write_all(&[&a, &b], graph).unwrap();
        assert_eq!(
            store.load().unwrap().edges,
            [(pypi.clone(), latest.clone())],
            "the graph's statistics after the group; an edge it no longer has is not written"
        );
        assert_eq!(asked.get(), 2, "each edge's statistics read once");
    }

    #[test]
    fn a_group_is_written_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let step = |name: &str, seq: u64| {
            let id = WorkloadId::new("lab", name).unwrap();
            let edge = (
                NodeId::Workload(id.clone()),
                NodeId::External("pypi.org:443".into()),
            );
            Changes {
                baseline_edges: vec![edge],
                report_seq: Some((format!("{name}-1"), seq, crate::model::now_unix())),
                ..Changes::default()
            }
        };
        let (a, b) = (step("a", 1), step("b", 7));
        store
            .fail_switch()
            .store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(store.write_all(&[&a, &b], |_| None).is_err());
        let loaded = store.load().unwrap();
        assert!(loaded.baseline.is_empty() && loaded.report_seqs.is_empty());
        store.write_all(&[&a, &b], |_| None).unwrap();
        drop(store);
        let loaded = Store::open(dir.path()).unwrap().load().unwrap();
        assert_eq!(loaded.baseline.len(), (0, 2), "both steps, one transaction");
        assert_eq!(loaded.report_seqs["a-1"].0, 1);
        assert_eq!(loaded.report_seqs["b-1"].0, 7);
    }
}
