//! Applies Vigil's resources: every replica watches the `VigilPolicy`
//! resources and sets each namespace's mode from its `default` one (the
//! audit log names the actor `kubernetes`), so `kubectl apply`, GitOps,
//! `vigilctl mode` and the web view end in the same engine command.

use futures_util::StreamExt;
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio::sync::watch;

use super::{ACTOR, POLICY_NAME, VigilPolicy};
use crate::engine::Handle;
use crate::model::{Mode, Modes};

/// The mode change a VigilPolicy asks for: its namespace and mode, when it
/// is its namespace's `default` policy and the mode differs from `modes`.
pub fn mode_change(modes: &Modes, policy: &VigilPolicy) -> Option<(String, Mode)> {
    let name = policy.metadata.name.as_deref()?;
    let namespace = policy.metadata.namespace.as_deref()?;
    if name != POLICY_NAME {
        return None;
    }
    let mode = Mode::from(policy.spec.mode);
    (modes.namespaces.get(namespace) != Some(&mode)).then(|| (namespace.to_owned(), mode))
}

/// Watches VigilPolicies until `stop` turns true (errors back off; a
/// missing CRD is logged and retried).
pub async fn run_policies(client: kube::Client, engine: Handle, mut stop: watch::Receiver<bool>) {
    let api: Api<VigilPolicy> = Api::all(client);
    let mut events = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    loop {
        let next = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            next = events.next() => next,
        };
        let policy = match next {
            None => return,
            Some(Ok(Event::Apply(p) | Event::InitApply(p))) => p,
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "VigilPolicy watch failed (are the chart's CRDs installed?); retried after a backoff");
                continue;
            }
        };
        let Some((namespace, mode)) = mode_change(&engine.snapshot().modes, &policy) else {
            continue;
        };
        match engine
            .set_mode_as(Some(namespace.clone()), mode, ACTOR)
            .await
        {
            Ok(_) => tracing::info!(%namespace, ?mode, "mode set by its VigilPolicy"),
            Err(crate::engine::EngineError::Stopped) => return,
            Err(e) => tracing::warn!(%namespace, error = %e, "VigilPolicy not applied"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(ns: &str, name: &str, mode: &str) -> VigilPolicy {
        serde_json::from_value(serde_json::json!({"apiVersion": "vigil.io/v1alpha1",
            "kind": "VigilPolicy", "metadata": {"name": name, "namespace": ns},
            "spec": {"mode": mode}}))
        .unwrap()
    }

    #[test]
    fn only_the_default_policy_changes_only_what_differs() {
        let mut modes = Modes::default();
        modes
            .namespaces
            .insert("lab".into(), Mode::Enforcement { alert_only: false });
        let table = [
            (policy("lab", "default", "enforcement"), None),
            (
                policy("lab", "default", "alert-only"),
                Some(("lab".to_owned(), Mode::Enforcement { alert_only: true })),
            ),
            (policy("lab", "other", "learning"), None),
            (
                policy("new", "default", "learning"),
                Some(("new".to_owned(), Mode::Learning)),
            ),
        ];
        for (p, want) in table {
            assert_eq!(mode_change(&modes, &p), want, "{:?}", p.metadata.name);
        }
    }
}
