//! The engine's public face: the typed [`Command`]s it applies and the
//! clonable [`Handle`] that `ingest` and `api` send them through, each
//! call answered once its change is stored and in the published snapshot.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::model::{Alert, Batch, Mode, Modes, WorkloadId};
use crate::policy::PolicySpec;
use crate::snapshot::Snapshot;
use crate::store::StoreError;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The change could not be made durable; nothing was acknowledged.
    #[error("could not store the change: {0}")]
    Store(#[from] StoreError),
    /// The engine has stopped (the controller is shutting down).
    #[error("the controller is shutting down")]
    Stopped,
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
        /// Receives the modes after the change.
        reply: oneshot::Sender<Result<Modes, EngineError>>,
    },
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

    /// Changes a mode; returns the modes once durable and pushed.
    pub async fn set_mode(
        &self,
        namespace: Option<String>,
        mode: Mode,
    ) -> Result<Modes, EngineError> {
        self.call(|reply| Command::SetMode {
            namespace,
            mode,
            reply,
        })
        .await
    }

    /// Every alert raised or updated from now on, each sent once its change
    /// is durable (the alert as it stands then, with its running count).
    pub fn subscribe_alerts(&self) -> broadcast::Receiver<Alert> {
        self.alerts.subscribe()
    }

    /// The latest snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.borrow().clone()
    }
}
