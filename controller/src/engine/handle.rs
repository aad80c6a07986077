//! The engine's public face: the typed [`Command`]s it applies and the
//! clonable [`Handle`] that `ingest` and `api` send them through, each
//! call answered once its change is stored and in the published snapshot
//! (a report: once stored; the snapshot follows within
//! [`super::Options::publish_every`]).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::baseline::Baseline;
use crate::model::{Alert, AuditEntry, Batch, Mode, Modes, WorkloadId};
use crate::policy::PolicySpec;
use crate::snapshot::Snapshot;
use crate::store::StoreError;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The change could not be made durable; nothing was acknowledged
    /// (shared by the reports written in the same transaction).
    #[error("could not store the change: {0}")]
    Store(#[source] Arc<StoreError>),
    /// A person's command was refused.
    #[error(transparent)]
    Refused(#[from] super::response::ResponseError),
    /// The engine has stopped (the controller is shutting down).
    #[error("the controller is shutting down")]
    Stopped,
}

impl From<StoreError> for EngineError {
    fn from(e: StoreError) -> Self {
        EngineError::Store(Arc::new(e))
    }
}

/// A policy channel for one sidecar.
pub type PolicyRx = watch::Receiver<Arc<PolicySpec>>;

/// A sidecar's registration, validated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Registration {
    /// Its workload.
    pub id: WorkloadId,
    /// Addresses of its inbound listener.
    pub addrs: Vec<SocketAddr>,
    /// Its version.
    pub version: String,
    /// The IP the registration came from.
    pub from: Option<IpAddr>,
    /// The account that owns the workload, empty when unknown.
    pub tenant: String,
    /// The workload's profile, empty for its own name.
    pub profile: String,
}

/// A typed change, sent to the engine.
#[derive(Debug)]
pub enum Command {
    /// A sidecar registered.
    Register {
        /// Who registered.
        registration: Registration,
        /// Receives the policy channel.
        reply: oneshot::Sender<Result<PolicyRx, EngineError>>,
    },
    /// A sidecar's policy stream ended.
    Disconnect {
        /// Its workload.
        id: WorkloadId,
    },
    /// A sidecar reported observations.
    Report {
        /// The report.
        batch: Batch,
        /// Answered once the report is stored.
        reply: oneshot::Sender<Result<(), EngineError>>,
    },
    /// Change the mode of one namespace, or of all when `namespace` is None.
    SetMode {
        /// Namespace, or None for every namespace and the default.
        namespace: Option<String>,
        /// The new mode.
        mode: Mode,
        /// Who asked (`admin`, ...), for the audit log.
        actor: String,
        /// Receives the modes after the change.
        reply: oneshot::Sender<Result<Modes, EngineError>>,
    },
    /// Quarantine a workload (`on`) or release it.
    Quarantine {
        /// The workload.
        id: WorkloadId,
        /// Quarantine or release.
        on: bool,
        /// Who asked.
        actor: String,
        /// Whether the state changed.
        reply: oneshot::Sender<Result<bool, EngineError>>,
    },
    /// Accept an alert into the baseline.
    Accept {
        /// The alert's id.
        alert_id: String,
        /// Who asked.
        actor: String,
        /// The alert accepted.
        reply: oneshot::Sender<Result<Alert, EngineError>>,
    },
    /// Import a baseline.
    Import {
        /// The baseline to import.
        baseline: Box<Baseline>,
        /// Only this namespace (every namespace when `None`).
        namespace: Option<String>,
        /// Add to the current baseline instead of replacing it.
        merge: bool,
        /// Who asked.
        actor: String,
        /// The baseline's (workloads, edges) before and after.
        reply: oneshot::Sender<Result<ImportSizes, EngineError>>,
    },
    /// A copy of the baseline.
    Export {
        /// The baseline.
        reply: oneshot::Sender<Result<Box<Baseline>, EngineError>>,
    },
    /// A dry run of enforcement over the recent history.
    Simulate {
        /// Only this namespace.
        namespace: Option<String>,
        /// Unix seconds of the window's start.
        since: u64,
        /// The report.
        reply: oneshot::Sender<Result<crate::simulate::Simulation, EngineError>>,
    },
    /// The audit log, oldest first.
    Audit {
        /// The entries.
        reply: oneshot::Sender<Result<Vec<AuditEntry>, EngineError>>,
    },
    /// Workloads the Kubernetes API reported (discovery).
    Discovered {
        /// What was found.
        found: Vec<crate::inventory::Discovered>,
        /// Answered once stored.
        reply: oneshot::Sender<Result<(), EngineError>>,
    },
    /// CPU of the injected pods, one whole poll of the metrics API.
    ResourceSamples {
        /// One sample per pod.
        samples: Vec<crate::resource::Sample>,
        /// When a sample is a spike.
        rule: crate::resource::Rule,
        /// What was judged, learned and raised.
        reply: oneshot::Sender<Result<super::ResourceSummary, EngineError>>,
    },
    /// Stop once everything queued before this is applied (the controller
    /// is shutting down; sidecars may still be connected).
    Shutdown,
    /// New threat lists for the `threat` detector and the sidecars.
    SetThreats {
        /// The lookup.
        threats: Arc<dyn crate::detect::Threats + Send>,
        /// Its entries, pushed to the sidecars.
        denied_names: Arc<std::collections::BTreeSet<String>>,
    },
}

/// The baseline's (workloads, edges) before and after an import.
pub type ImportSizes = ((usize, usize), (usize, usize));

impl std::fmt::Debug for dyn crate::detect::Threats + Send {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Threats")
    }
}

/// Stops the engine (held by the wiring; see [`Handle::stopper`]).
#[derive(Debug)]
pub struct Stopper {
    tx: mpsc::Sender<Command>,
}

impl Stopper {
    /// Asks the engine to stop after what is queued; waits at most
    /// `limit` for room in the queue.
    pub async fn stop(&self, limit: std::time::Duration) {
        let sent = tokio::time::timeout(limit, self.tx.send(Command::Shutdown)).await;
        if !matches!(sent, Ok(Ok(()))) {
            tracing::warn!("the engine did not take the stop command in time");
        }
    }
}

/// A cheap, clonable handle to the engine.
#[derive(Clone, Debug)]
pub struct Handle {
    pub(super) tx: mpsc::Sender<Command>,
    pub(super) snapshot: watch::Receiver<Arc<Snapshot>>,
    pub(super) alerts: broadcast::Sender<Alert>,
}

impl Handle {
    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, EngineError>>) -> Command,
    ) -> Result<T, EngineError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| EngineError::Stopped)?;
        rx.await.map_err(|_| EngineError::Stopped)?
    }

    /// Registers a sidecar and returns its policy channel.
    pub async fn register(&self, registration: Registration) -> Result<PolicyRx, EngineError> {
        self.call(|reply| Command::Register {
            registration,
            reply,
        })
        .await
    }

    /// Tells the engine a sidecar's stream ended (never blocks).
    pub fn disconnect(&self, id: WorkloadId) {
        let tx = self.tx.clone();
        // From a Drop: hand it to a task when the queue is full.
        if let Err(mpsc::error::TrySendError::Full(cmd)) = tx.try_send(Command::Disconnect { id }) {
            tokio::spawn(async move { tx.send(cmd).await });
        }
    }

    /// Applies a report; returns once it is durable.
    pub async fn report(&self, batch: Batch) -> Result<(), EngineError> {
        self.call(|reply| Command::Report { batch, reply }).await
    }

    /// Changes a mode as the admin; returns the modes once durable and
    /// pushed.
    pub async fn set_mode(
        &self,
        namespace: Option<String>,
        mode: Mode,
    ) -> Result<Modes, EngineError> {
        self.set_mode_as(namespace, mode, "admin").await
    }

    /// Changes a mode as `actor` (recorded in the audit log).
    pub async fn set_mode_as(
        &self,
        namespace: Option<String>,
        mode: Mode,
        actor: &str,
    ) -> Result<Modes, EngineError> {
        let actor = actor.to_owned();
        self.call(|reply| Command::SetMode {
            namespace,
            mode,
            actor,
            reply,
        })
        .await
    }

    /// Quarantines `id` (`on`) or releases it as `actor`; returns whether
    /// that changed anything. In force at its sidecars once this returns.
    pub async fn quarantine(
        &self,
        id: WorkloadId,
        on: bool,
        actor: &str,
    ) -> Result<bool, EngineError> {
        let actor = actor.to_owned();
        self.call(|reply| Command::Quarantine {
            id,
            on,
            actor,
            reply,
        })
        .await
    }

    /// Accepts the alert `alert_id` into the baseline as `actor`.
    pub async fn accept(&self, alert_id: String, actor: &str) -> Result<Alert, EngineError> {
        let actor = actor.to_owned();
        self.call(|reply| Command::Accept {
            alert_id,
            actor,
            reply,
        })
        .await
    }

    /// Imports a baseline for `namespace` (all when `None`), merged or
    /// replacing, as `actor`.
    pub async fn import(
        &self,
        baseline: Baseline,
        namespace: Option<String>,
        merge: bool,
        actor: &str,
    ) -> Result<ImportSizes, EngineError> {
        let actor = actor.to_owned();
        self.call(|reply| Command::Import {
            baseline: Box::new(baseline),
            namespace,
            merge,
            actor,
            reply,
        })
        .await
    }

    /// A copy of the whole baseline (workloads as their profiles).
    pub async fn export(&self) -> Result<Baseline, EngineError> {
        self.call(|reply| Command::Export { reply })
            .await
            .map(|b| *b)
    }

    /// What enforcement would have blocked and flagged in the last
    /// `window_secs` (of `namespace` only, when given), judged against the
    /// current baseline.
    pub async fn simulate(
        &self,
        namespace: Option<String>,
        window_secs: u64,
    ) -> Result<crate::simulate::Simulation, EngineError> {
        let since = crate::model::now_unix().saturating_sub(window_secs);
        self.call(|reply| Command::Simulate {
            namespace,
            since,
            reply,
        })
        .await
    }

    /// The audit log, oldest first (the newest entries, bounded).
    pub async fn audit(&self) -> Result<Vec<AuditEntry>, EngineError> {
        self.call(|reply| Command::Audit { reply }).await
    }

    /// Records workloads the Kubernetes API reported: their pods' IPs and
    /// services name east-west destinations and prove callers' identities;
    /// one never seen before, of a profile outside the baseline, is a
    /// `new_deployment` outside learning (before any sidecar of it runs).
    pub async fn discovered(
        &self,
        found: Vec<crate::inventory::Discovered>,
    ) -> Result<(), EngineError> {
        self.call(|reply| Command::Discovered { found, reply })
            .await
    }

    /// Judges the CPU of every injected pod (one whole poll: pods left
    /// out are forgotten) against its profile's CPU baseline, learns it in
    /// learning mode, and raises one `resource_spike` per pod per spike,
    /// with the workload's egress beside it.
    pub async fn resource_samples(
        &self,
        samples: Vec<crate::resource::Sample>,
        rule: crate::resource::Rule,
    ) -> Result<super::ResourceSummary, EngineError> {
        self.call(|reply| Command::ResourceSamples {
            samples,
            rule,
            reply,
        })
        .await
    }

    /// Hands the engine new threat lists (never blocks).
    pub async fn set_threats(
        &self,
        threats: Arc<dyn crate::detect::Threats + Send>,
        denied_names: Arc<std::collections::BTreeSet<String>>,
    ) -> Result<(), EngineError> {
        self.tx
            .send(Command::SetThreats {
                threats,
                denied_names,
            })
            .await
            .map_err(|_| EngineError::Stopped)
    }

    /// Every alert raised or updated from now on, each sent once its change
    /// is durable (the alert as it stands then, with its running count).
    pub fn subscribe_alerts(&self) -> broadcast::Receiver<Alert> {
        self.alerts.subscribe()
    }

    /// What stops the engine even while other handles (open sidecar
    /// streams) still exist.
    pub fn stopper(&self) -> Stopper {
        Stopper {
            tx: self.tx.clone(),
        }
    }

    /// The latest snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.borrow().clone()
    }

    /// Each snapshot as it is published (only the latest is kept for a
    /// slow reader); the channel closes when the engine stops.
    pub fn snapshots(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.snapshot.clone()
    }
}
