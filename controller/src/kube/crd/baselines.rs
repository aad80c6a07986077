//! The baseline in the cluster: every replica watches the `VigilBaseline`
//! resources and, for each namespace that has some, makes the engine's
//! part of that namespace what they say (an import that replaces it, as
//! actor `kubernetes`); the leader alone writes what the engine learned
//! into them (one resource per profile, server-side apply). A resource
//! whose content is what this replica last wrote is its own write coming
//! back: not imported again. A namespace without resources is left alone
//! (deleting them all does not empty its baseline).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use kube::Api;
use kube::api::{Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio::sync::watch;

use super::sync::FIELD_MANAGER;
use super::{ACTOR, VigilBaseline, VigilBaselineSpec, baseline_from_resources, baseline_resources};
use crate::baseline::Baseline;
use crate::engine::Handle;
use crate::kube::lease::Role;

/// (namespace, resource name).
type Key = (String, String);

/// The resources as the watch shows them, once listed (`None` before).
pub type Resources = watch::Sender<Option<BTreeMap<Key, VigilBaselineSpec>>>;

/// What this replica last wrote, by resource.
pub type Written = Arc<Mutex<BTreeMap<Key, VigilBaselineSpec>>>;

/// The specs of namespace `ns` in `all`, by resource name.
pub fn of_namespace(
    all: &BTreeMap<Key, VigilBaselineSpec>,
    ns: &str,
) -> BTreeMap<String, VigilBaselineSpec> {
    all.iter()
        .filter(|((n, _), _)| n == ns)
        .map(|((_, name), spec)| (name.clone(), spec.clone()))
        .collect()
}

/// What to import for namespace `ns`: `None` when its resources already
/// are the engine's part (`current`), or are this replica's own last
/// write; else the engine's baseline with that namespace's part replaced
/// by the resources' (edges of other namespaces' workloads into it kept).
pub fn to_import(
    ns: &str,
    resources: &BTreeMap<String, VigilBaselineSpec>,
    current: &Baseline,
    written: &BTreeMap<Key, VigilBaselineSpec>,
) -> Option<Result<Baseline, super::CrdError>> {
    if resources.is_empty() || baseline_resources(current, ns) == *resources {
        return None;
    }
    let own = resources
        .iter()
        .all(|(name, spec)| written.get(&(ns.to_owned(), name.clone())) == Some(spec));
    if own {
        return None;
    }
    let named = resources.iter().map(|(n, s)| (n.as_str(), s));
    Some(baseline_from_resources(ns, named).map(|mut part| {
        // Edges of other namespaces' workloads into this one are theirs.
        let theirs = |id: &crate::model::NodeId| {
            matches!(id, crate::model::NodeId::Workload(w) if w.namespace != ns)
        };
        for edge in current.edges().filter(|e| theirs(&e.0)) {
            let into = matches!(&edge.1, crate::model::NodeId::Workload(w) if w.namespace == ns);
            if into {
                part.learn_edge(edge);
                for endpoint in current.endpoints_of(edge) {
                    part.learn_endpoint(edge, endpoint);
                }
            }
        }
        part
    }))
}

/// What the leader writes: the engine's profiles of each namespace whose
/// resource is missing or says something else.
pub fn to_write(
    current: &Baseline,
    resources: &BTreeMap<Key, VigilBaselineSpec>,
) -> Vec<(Key, VigilBaselineSpec)> {
    let namespaces: BTreeSet<&str> = current
        .workloads()
        .map(|id| id.namespace.as_str())
        .collect();
    let mut out = Vec::new();
    for ns in namespaces {
        for (name, spec) in baseline_resources(current, ns) {
            let key = (ns.to_owned(), name);
            if resources.get(&key) != Some(&spec) {
                out.push((key, spec));
            }
        }
    }
    out
}

/// Imports the namespaces in `dirty` whose resources changed.
async fn import(
    engine: &Handle,
    all: &BTreeMap<Key, VigilBaselineSpec>,
    dirty: BTreeSet<String>,
    written: &Written,
) {
    let Ok(current) = engine.export().await else {
        return;
    };
    for ns in dirty {
        let resources = of_namespace(all, &ns);
        let own = written.lock().map(|w| w.clone()).unwrap_or_default();
        match to_import(&ns, &resources, &current, &own) {
            None => {}
            Some(Err(e)) => tracing::warn!(error = %e, "VigilBaselines not applied"),
            Some(Ok(baseline)) => {
                match engine
                    .import(baseline, Some(ns.clone()), false, ACTOR)
                    .await
                {
                    Ok(_) => tracing::info!(namespace = %ns, "baseline set by its VigilBaselines"),
                    Err(e) => {
                        tracing::warn!(namespace = %ns, error = %e, "VigilBaselines not applied")
                    }
                }
            }
        }
    }
}

/// Watches VigilBaselines until `stop` turns true, importing what they
/// say and publishing them in `resources`.
pub async fn run(
    client: kube::Client,
    engine: Handle,
    resources: Resources,
    written: Written,
    mut stop: watch::Receiver<bool>,
) {
    let api: Api<VigilBaseline> = Api::all(client);
    let mut events = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut listing: BTreeMap<Key, VigilBaselineSpec> = BTreeMap::new();
    let key = |b: &VigilBaseline| -> Key {
        (
            b.metadata.namespace.clone().unwrap_or_default(),
            b.metadata.name.clone().unwrap_or_default(),
        )
    };
    loop {
        let next = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            next = events.next() => next,
        };
        let mut dirty = BTreeSet::new();
        match next {
            None => return,
            Some(Ok(Event::Init)) => listing.clear(),
            Some(Ok(Event::InitApply(b))) => {
                listing.insert(key(&b), b.spec);
            }
            Some(Ok(Event::InitDone)) => {
                let fresh = std::mem::take(&mut listing);
                dirty.extend(fresh.keys().map(|k| k.0.clone()));
                resources.send_replace(Some(fresh));
            }
            Some(Ok(Event::Apply(b))) => {
                let k = key(&b);
                dirty.insert(k.0.clone());
                resources.send_modify(|all| {
                    all.get_or_insert_default().insert(k, b.spec);
                });
            }
            Some(Ok(Event::Delete(b))) => {
                let k = key(&b);
                dirty.insert(k.0.clone());
                resources.send_modify(|all| {
                    all.get_or_insert_default().remove(&k);
                });
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "VigilBaseline watch failed (are the chart's CRDs installed?); retried after a backoff");
            }
        }
        if dirty.is_empty() {
            continue;
        }
        let all = resources.borrow().clone().unwrap_or_default();
        import(&engine, &all, dirty, &written).await;
    }
}

/// On the leader only: writes what the engine learned into the resources,
/// every `every`, until `stop` turns true.
pub async fn write_back(
    client: kube::Client,
    engine: Handle,
    resources: Resources,
    written: Written,
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
        let Some(all) = resources.borrow().clone() else {
            continue;
        };
        let Ok(current) = engine.export().await else {
            continue;
        };
        for ((ns, name), spec) in to_write(&current, &all) {
            let api: Api<VigilBaseline> = Api::namespaced(client.clone(), &ns);
            let object = VigilBaseline::new(&name, spec.clone());
            let params = PatchParams::apply(FIELD_MANAGER).force();
            match api.patch(&name, &params, &Patch::Apply(&object)).await {
                Ok(_) => {
                    tracing::debug!(namespace = %ns, profile = %spec.profile, "baseline written to its VigilBaseline");
                    if let Ok(mut w) = written.lock() {
                        w.insert((ns.clone(), name.clone()), spec.clone());
                    }
                    resources.send_modify(|all| {
                        all.get_or_insert_default().insert((ns, name), spec);
                    });
                }
                Err(e) => {
                    tracing::warn!(namespace = %ns, resource = %name, error = %e, "baseline not written to its VigilBaseline")
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "baselines_tests.rs"]
mod tests;
