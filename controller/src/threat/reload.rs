//! Loading and reloading the threat feeds: the `--threat-feed` files are
//! read at start (a bad one stops the start, naming its line), then again on
//! SIGHUP and whenever one changes (its modification time, length or inode,
//! looked at every second: an edit in place, a rename over it, a Kubernetes
//! ConfigMap swapping its symlink). A file that fails to load (a bad line,
//! gone) is logged with the reason and keeps its previous entries: the list
//! in force never shrinks because of a typo. Each new list is published
//! through a `watch` channel of [`Feeds`].

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use super::{Feed, FeedError, Feeds, builtin, read_feed};

/// How often the files are looked at for changes.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// `result` label of `vigil_controller_threat_reloads_total`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum ReloadResult {
    /// The file was read and its entries are in force.
    ok,
    /// The file could not be read or has a bad line; its previous entries
    /// stay.
    failed,
}

/// Labels of `vigil_controller_threat_reloads_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// Outcome.
    pub result: ReloadResult,
}

/// Metrics of the threat feeds.
#[derive(Clone, Debug, Default)]
pub struct ThreatMetrics {
    /// Distinct entries in force.
    pub entries: Gauge,
    /// Feed files reloaded, by outcome.
    pub reloads: Family<ReloadLabels, Counter>,
}

impl ThreatMetrics {
    /// Registers `vigil_controller_threat_entries` and
    /// `vigil_controller_threat_reloads_total`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "vigil_controller_threat_entries",
            "Threat-feed entries in force (built-in and --threat-feed files)",
            metrics.entries.clone(),
        );
        registry.register(
            "vigil_controller_threat_reloads",
            "Threat-feed files reloaded, by result (failed: the previous entries stay)",
            metrics.reloads.clone(),
        );
        metrics
    }

    fn count(&self, result: ReloadResult) {
        self.reloads.get_or_create(&ReloadLabels { result }).inc();
    }
}

/// What identifies a version of a file without reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some(Stamp {
        modified: meta.modified().ok(),
        len: meta.len(),
        inode: meta.ino(),
    })
}

/// One `--threat-feed` file and the version of it in force.
#[derive(Debug)]
struct FeedFile {
    path: PathBuf,
    stamp: Option<Stamp>,
    feed: Feed,
}

/// The feeds in force and their files; publishes every change.
#[derive(Debug)]
pub struct Reloader {
    builtin: Option<Feed>,
    files: Vec<FeedFile>,
    tx: watch::Sender<Arc<Feeds>>,
    metrics: ThreatMetrics,
}

impl Reloader {
    /// Loads the built-in feed (unless `with_builtin` is false) and the
    /// files at `paths`; the first file that fails is the error.
    pub fn load(
        paths: &[PathBuf],
        with_builtin: bool,
        metrics: ThreatMetrics,
    ) -> Result<Self, FeedError> {
        let mut files = Vec::new();
        for path in paths {
            let before = stamp(path);
            let feed = read_feed(path)?;
            metrics.count(ReloadResult::ok);
            files.push(FeedFile {
                path: path.clone(),
                stamp: before,
                feed,
            });
        }
        let builtin = with_builtin.then(builtin);
        let (tx, _) = watch::channel(Arc::new(Feeds::default()));
        let reloader = Reloader {
            builtin,
            files,
            tx,
            metrics,
        };
        reloader.publish();
        Ok(reloader)
    }

    /// A receiver of every new list (the current one first).
    pub fn subscribe(&self) -> watch::Receiver<Arc<Feeds>> {
        self.tx.subscribe()
    }

    /// The list in force.
    pub fn current(&self) -> Arc<Feeds> {
        self.tx.borrow().clone()
    }

    fn publish(&self) {
        let feeds = Feeds::new(
            self.builtin
                .iter()
                .chain(self.files.iter().map(|f| &f.feed)),
        );
        self.metrics.entries.set(feeds.len() as i64);
        tracing::info!(entries = feeds.len(), feeds = ?feeds.feeds(), "threat feeds in force");
        self.tx.send_replace(Arc::new(feeds));
    }

    /// Reads again the files that changed since they were last read (every
    /// file when `all`, as on SIGHUP). A file that fails keeps its previous
    /// entries and its error is returned (and logged); the new list is
    /// published when any file was read.
    pub fn reload(&mut self, all: bool) -> Vec<FeedError> {
        let mut errors = Vec::new();
        let mut changed = false;
        for file in &mut self.files {
            let now = stamp(&file.path);
            if !all && now == file.stamp {
                continue;
            }
            // Remember the version seen, good or bad, so a bad file is
            // reported once, not every second.
            file.stamp = now;
            match read_feed(&file.path) {
                Ok(feed) => {
                    self.metrics.count(ReloadResult::ok);
                    changed |= feed != file.feed;
                    file.feed = feed;
                }
                Err(e) => {
                    self.metrics.count(ReloadResult::failed);
                    tracing::error!(error = %e, "threat feed not reloaded; its previous entries stay in force");
                    errors.push(e);
                }
            }
        }
        if changed {
            self.publish();
        }
        errors
    }

    /// Reloads on SIGHUP (every file) and when a file changes (looked at
    /// every `interval`), until `stop` turns true.
    pub async fn run(mut self, interval: Duration, mut stop: watch::Receiver<bool>) {
        let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            Ok(signal) => Some(signal),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; threat feeds reload on change only");
                None
            }
        };
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let all = tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                Some(()) = async { match hangup.as_mut() {
                    Some(signal) => signal.recv().await,
                    None => std::future::pending().await,
                } } => true,
                _ = ticker.tick() => false,
            };
            if all {
                tracing::info!("SIGHUP: reloading the threat feeds");
            }
            self.reload(all);
        }
    }
}
