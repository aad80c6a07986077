//! Applies Vigil's resources: every replica watches the `VigilPolicy`
//! resources and sets each namespace's mode from its `default` one (the
//! audit log names the actor `kubernetes`); the leader alone writes the
//! modes set otherwise (`vigilctl mode`, the web view) back into them, so
//! `kubectl`, GitOps, `vigilctl` and the web view change the same
//! resources and every replica ends with the same modes.

use std::collections::BTreeMap;

use futures_util::StreamExt;
use kube::Api;
use kube::api::{Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio::sync::watch;

use super::{ACTOR, POLICY_NAME, PolicyMode, VigilPolicy};
use crate::engine::Handle;
use crate::kube::lease::Role;
use crate::model::{Mode, Modes};

/// The field manager of the leader's writes.
pub const FIELD_MANAGER: &str = "vigil-controller";

/// The namespaces' modes as their `default` VigilPolicies say, once the
/// first list is read (`None` before: nothing may be written back yet).
pub type Policies = watch::Sender<Option<BTreeMap<String, Mode>>>;

/// The mode change a VigilPolicy asks for: its namespace and mode, when it
/// is its namespace's `default` policy and the mode differs from `modes`.
pub fn mode_change(modes: &Modes, policy: &VigilPolicy) -> Option<(String, Mode)> {
    let (namespace, mode) = policy_mode(policy)?;
    (modes.namespaces.get(&namespace) != Some(&mode)).then_some((namespace, mode))
}

/// The namespace and mode of a `default` VigilPolicy.
fn policy_mode(policy: &VigilPolicy) -> Option<(String, Mode)> {
    let name = policy.metadata.name.as_deref()?;
    let namespace = policy.metadata.namespace.as_deref()?;
    (name == POLICY_NAME).then(|| (namespace.to_owned(), Mode::from(policy.spec.mode)))
}

/// What the leader writes: each namespace whose mode in the engine is not
/// what its VigilPolicy says (or that has none).
pub fn to_write(engine: &Modes, policies: &BTreeMap<String, Mode>) -> Vec<(String, Mode)> {
    engine
        .namespaces
        .iter()
        .filter(|(ns, mode)| policies.get(*ns) != Some(mode))
        .map(|(ns, mode)| (ns.clone(), *mode))
        .collect()
}

/// Applies one policy to the engine; `false` once the engine has stopped.
async fn apply(engine: &Handle, policy: &VigilPolicy) -> bool {
    let Some((namespace, mode)) = mode_change(&engine.snapshot().modes, policy) else {
        return true;
    };
    match engine
        .set_mode_as(Some(namespace.clone()), mode, ACTOR)
        .await
    {
        Ok(_) => tracing::info!(%namespace, ?mode, "mode set by its VigilPolicy"),
        Err(crate::engine::EngineError::Stopped) => return false,
        Err(e) => tracing::warn!(%namespace, error = %e, "VigilPolicy not applied"),
    }
    true
}

/// Watches VigilPolicies until `stop` turns true (errors back off; a
/// missing CRD is logged and retried), publishing what they say in
/// `policies` only after the engine has applied it.
pub async fn run_policies(
    client: kube::Client,
    engine: Handle,
    policies: Policies,
    mut stop: watch::Receiver<bool>,
) {
    let api: Api<VigilPolicy> = Api::all(client);
    let mut events = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut listing: BTreeMap<String, Mode> = BTreeMap::new();
    loop {
        let next = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            next = events.next() => next,
        };
        match next {
            None => return,
            Some(Ok(Event::Init)) => listing.clear(),
            Some(Ok(Event::InitApply(p))) => {
                if !apply(&engine, &p).await {
                    return;
                }
                listing.extend(policy_mode(&p));
            }
            Some(Ok(Event::InitDone)) => {
                policies.send_replace(Some(std::mem::take(&mut listing)));
            }
            Some(Ok(Event::Apply(p))) => {
                if !apply(&engine, &p).await {
                    return;
                }
                if let Some((ns, mode)) = policy_mode(&p) {
                    policies.send_modify(|known| {
                        known.get_or_insert_default().insert(ns, mode);
                    });
                }
            }
            Some(Ok(Event::Delete(p))) => {
                if let Some((ns, _)) = policy_mode(&p) {
                    policies.send_modify(|known| {
                        known.get_or_insert_default().remove(&ns);
                    });
                }
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "VigilPolicy watch failed (are the chart's CRDs installed?); retried after a backoff");
            }
        }
    }
}

/// On the leader only: writes the engine's per-namespace modes that the
/// VigilPolicies do not say yet (server-side apply of the `default`
/// policy), every `every`, until `stop` turns true.
pub async fn write_back(
    client: kube::Client,
    engine: Handle,
    policies: Policies,
    role: watch::Receiver<Role>,
    every: std::time::Duration,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            () = tokio::time::sleep(every) => {}
        }
        if *role.borrow() != Role::Leader {
            continue;
        }
        // The policies first: they change only after the engine did.
        let Some(known) = policies.borrow().clone() else {
            continue;
        };
        for (namespace, mode) in to_write(&engine.snapshot().modes, &known) {
            let api: Api<VigilPolicy> = Api::namespaced(client.clone(), &namespace);
            let policy = VigilPolicy::new(
                POLICY_NAME,
                super::VigilPolicySpec {
                    mode: PolicyMode::from(mode),
                },
            );
            let params = PatchParams::apply(FIELD_MANAGER).force();
            match api
                .patch(POLICY_NAME, &params, &Patch::Apply(&policy))
                .await
            {
                Ok(_) => {
                    tracing::info!(%namespace, ?mode, "mode written to its VigilPolicy");
                    policies.send_modify(|k| {
                        k.get_or_insert_default().insert(namespace, mode);
                    });
                }
                Err(e) => {
                    tracing::warn!(%namespace, error = %e, "mode not written to its VigilPolicy")
                }
            }
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
    fn the_leader_writes_what_the_policies_do_not_say() {
        let mut engine = Modes::default();
        let enforcement = Mode::Enforcement { alert_only: false };
        engine.namespaces.insert("lab".into(), enforcement);
        engine.namespaces.insert("jhub".into(), Mode::Learning);
        engine.namespaces.insert("kf".into(), enforcement);
        let policies: BTreeMap<String, Mode> = [
            ("lab".to_owned(), enforcement),
            ("jhub".to_owned(), enforcement),
            ("gone".to_owned(), Mode::Learning),
        ]
        .into();
        assert_eq!(
            to_write(&engine, &policies),
            [
                ("jhub".to_owned(), Mode::Learning),
                ("kf".to_owned(), enforcement)
            ]
        );
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
