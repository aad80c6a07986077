//! The policy task: `Register`, then publish every policy received into
//! the `watch` channel the data path reads.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use vigil_proto::v1;

use super::{Backoff, ControlError, ControlMetrics, Target};
use crate::policy::Policy;

/// Spawns the policy task; it runs until aborted.
pub fn spawn(
    target: Target,
    registration: v1::Registration,
    policy: watch::Sender<Arc<Policy>>,
    metrics: ControlMetrics,
    cache: Option<PathBuf>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut backoff = Backoff::default();
        loop {
            let result = watch_policy(
                &target,
                &registration,
                &policy,
                &metrics,
                &mut backoff,
                cache.as_deref(),
            )
            .await;
            metrics.connected.set(0);
            let delay = backoff.next_delay();
            if let Err(e) = result {
                tracing::warn!(error = %e, retry_in = ?delay, "policy stream from the controller failed; keeping the last policy");
            }
            tokio::time::sleep(delay).await;
        }
    })
}

async fn watch_policy(
    target: &Target,
    registration: &v1::Registration,
    policy: &watch::Sender<Arc<Policy>>,
    metrics: &ControlMetrics,
    backoff: &mut Backoff,
    cache: Option<&Path>,
) -> Result<(), ControlError> {
    let mut client = target.client().await?;
    let request = target.request(registration.clone()).await?;
    let mut stream = client.register(request).await?.into_inner();
    metrics.connected.set(1);
    backoff.reset();
    tracing::info!(controller = %target.url, "registered with the controller");
    loop {
        let Some(message) = stream.message().await? else {
            return Err(ControlError::StreamEnded);
        };
        let next = Policy::try_from(message)?;
        let changed = next != **policy.borrow();
        if changed {
            tracing::info!(version = next.version, mode = %next.mode, enforce = next.enforce, "new policy");
            if let Some(path) = cache
                && let Err(e) = super::cache::save(path, &next).await
            {
                tracing::warn!(error = %e, "could not cache the policy");
            }
        }
        metrics.policy_version.set(next.version as i64);
        policy.send_replace(Arc::new(next));
    }
}
