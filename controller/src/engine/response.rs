//! The engine's answers to people: quarantine and release, accepting an
//! alert into the baseline, importing a baseline, and the audit log that
//! records each of them (and every mode change).
//!
//! The decisions are pure functions ([`accepts`], [`import_changes`]);
//! the engine applies them in one store transaction each.

use super::{Engine, EngineError};
use crate::baseline::Baseline;
use crate::detect::Learn;
use crate::model::{
    Alert, AlertKind, AuditEntry, EdgeKey, NodeId, Quarantine, WorkloadId, now_unix, rfc3339,
};
use crate::store::Changes;

/// Audit entries kept in memory (and shown by `vigilctl audit`).
pub const AUDIT_KEPT: usize = crate::store::AUDIT_LOADED;

/// Why a response command was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResponseError {
    /// No alert has that id.
    #[error("no alert has id {0:?} (see vigilctl alerts)")]
    NoAlert(String),
    /// The alert's kind can never be normal.
    #[error("a {0} alert cannot be accepted: no baseline ever allows it")]
    NotAcceptable(&'static str),
    /// The workload is not known.
    #[error("workload {0} is not known to the controller")]
    UnknownWorkload(String),
    /// A CPU spike is not accepted: the CPU baseline learns by itself.
    #[error(
        "a resource_spike alert cannot be accepted: the CPU baseline learns only in learning mode \
         (set the namespace to learning while its usual load runs)"
    )]
    CpuLearnsByItself,
}

/// What accepting `alert` adds to the baseline, with workloads as their
/// profiles (`profile_of`). Mining, threats, impersonation, lies about a
/// destination and floods are never normal.
pub fn accepts(
    alert: &Alert,
    profile_of: impl Fn(&WorkloadId) -> WorkloadId,
) -> Result<Vec<Learn>, ResponseError> {
    let me = WorkloadId {
        namespace: alert.namespace.clone(),
        name: alert.workload.clone(),
    };
    let me_node = NodeId::Workload(profile_of(&me));
    let target = || -> NodeId {
        match alert.destination.parse::<WorkloadId>() {
            Ok(peer) if alert.destination.contains('/') => NodeId::Workload(profile_of(&peer)),
            _ => NodeId::External(alert.destination.clone()),
        }
    };
    let learn = match alert.kind {
        AlertKind::NewDeployment => vec![Learn::Workload(profile_of(&me))],
        AlertKind::UnknownEgress | AlertKind::NewEdge => {
            let edge: EdgeKey = (me_node, target());
            endpoints(alert, &edge, Learn::Edge(edge.clone()))
        }
        AlertKind::NewExposure => {
            let edge: EdgeKey = (NodeId::Internet, me_node);
            endpoints(alert, &edge, Learn::Edge(edge.clone()))
        }
        AlertKind::NewEndpoint => {
            let edge: EdgeKey = (me_node, target());
            endpoints(alert, &edge, Learn::Edge(edge.clone()))
        }
        kind @ (AlertKind::MiningProtocol
        | AlertKind::Threat
        | AlertKind::SpoofedSource
        | AlertKind::NameMismatch
        | AlertKind::LimitReached) => return Err(ResponseError::NotAcceptable(kind.as_str())),
        AlertKind::ResourceSpike => return Err(ResponseError::CpuLearnsByItself),
    };
    Ok(learn)
}

/// Adds `learn` to `baseline`, and to `changes` when it is new.
pub(super) fn learn_into(baseline: &mut Baseline, changes: &mut Changes, learn: Learn) {
    match learn {
        Learn::Workload(id) => {
            if baseline.learn_workload(&id) {
                changes.baseline_workloads.push(id);
            }
        }
        Learn::Edge(edge) => {
            if baseline.learn_edge(&edge) {
                changes.baseline_edges.push(edge);
            }
        }
        Learn::Endpoint(edge, endpoint) => {
            if baseline.learn_endpoint(&edge, &endpoint) {
                changes.baseline_endpoints.push((edge, endpoint));
            }
        }
    }
}

/// `first`, then the HTTP endpoints the alert's evidence shows on `edge`.
fn endpoints(alert: &Alert, edge: &EdgeKey, first: Learn) -> Vec<Learn> {
    let mut learn = vec![first];
    learn.extend(
        alert
            .evidence
            .endpoints
            .iter()
            .filter(|e| e.contains(' ') && !e.starts_with("CONNECT "))
            .map(|e| Learn::Endpoint(edge.clone(), e.clone())),
    );
    learn
}

/// The changes that bring `current` to `imported` for `namespace` (every
/// namespace when `None`): with `merge`, only what is new is added;
/// otherwise that part of the baseline is replaced.
pub fn import_changes(
    current: &Baseline,
    imported: &Baseline,
    namespace: Option<&str>,
    merge: bool,
) -> (Baseline, Changes) {
    let mut next = current.clone();
    let mut changes = Changes::default();
    let imported = &crate::baseline_doc::restrict(imported, namespace);
    if !merge {
        next.clear(namespace);
        changes.baseline_reset = Some(namespace.map(str::to_owned));
    }
    let fresh = !merge;
    for id in imported.workloads() {
        if (next.learn_workload(id) || fresh) && !changes.baseline_workloads.contains(id) {
            changes.baseline_workloads.push(id.clone());
        }
    }
    for edge in imported.edges() {
        if next.learn_edge(edge) || fresh {
            changes.baseline_edges.push(edge.clone());
        }
        for endpoint in imported.endpoints_of(edge) {
            if next.learn_endpoint(edge, endpoint) || fresh {
                changes
                    .baseline_endpoints
                    .push((edge.clone(), endpoint.clone()));
            }
        }
    }
    (next, changes)
}

impl Engine {
    /// Appends an audit entry to `changes` (and to memory once committed).
    pub(super) fn audit(
        &mut self,
        changes: &mut Changes,
        actor: &str,
        action: &str,
        target: &str,
        old: String,
        new: String,
    ) {
        let entry = AuditEntry {
            seq: self.next_audit,
            at: rfc3339(now_unix()),
            actor: actor.to_owned(),
            action: action.to_owned(),
            target: target.to_owned(),
            old,
            new,
        };
        self.next_audit += 1;
        tracing::info!(actor, action, target, old = %entry.old, new = %entry.new, "audit");
        changes.audit.push(entry);
    }

    /// Keeps committed audit entries in memory, bounded.
    pub(super) fn remember_audit(&mut self, changes: &Changes) {
        self.audit_log.extend(changes.audit.iter().cloned());
        let excess = self.audit_log.len().saturating_sub(AUDIT_KEPT);
        self.audit_log.drain(..excess);
    }

    /// Quarantines `id` (refused when it is not known); returns whether it
    /// was not quarantined before.
    pub(super) fn quarantine(
        &mut self,
        id: &WorkloadId,
        actor: &str,
        reason: &str,
    ) -> Result<bool, EngineError> {
        if self.inventory.get(id).is_none() {
            return Err(ResponseError::UnknownWorkload(id.to_string()).into());
        }
        if self.quarantined.contains_key(id) {
            return Ok(false);
        }
        let mut changes = Changes::default();
        self.quarantine_into(&mut changes, id, actor, reason);
        self.commit(&changes)?;
        self.remember_audit(&changes);
        self.republish(None);
        Ok(true)
    }

    /// Adds the quarantine of `id` to `changes` (applied to memory now).
    pub(super) fn quarantine_into(
        &mut self,
        changes: &mut Changes,
        id: &WorkloadId,
        actor: &str,
        reason: &str,
    ) {
        let record = Quarantine {
            since: rfc3339(now_unix()),
            actor: actor.to_owned(),
            reason: reason.to_owned(),
        };
        tracing::warn!(workload = %id, actor, reason, "workload quarantined");
        self.quarantined.insert(id.clone(), record.clone());
        changes.quarantine.push((id.clone(), Some(record)));
        self.audit(
            changes,
            actor,
            "quarantine",
            &id.to_string(),
            "released".into(),
            format!("quarantined: {reason}"),
        );
    }

    /// Releases `id`; returns whether it was quarantined.
    pub(super) fn release(&mut self, id: &WorkloadId, actor: &str) -> Result<bool, EngineError> {
        let Some(old) = self.quarantined.get(id).cloned() else {
            return Ok(false);
        };
        let mut changes = Changes::default();
        changes.quarantine.push((id.clone(), None));
        self.audit(
            &mut changes,
            actor,
            "release",
            &id.to_string(),
            format!("quarantined: {}", old.reason),
            "released".into(),
        );
        self.commit(&changes)?;
        self.quarantined.remove(id);
        self.remember_audit(&changes);
        tracing::info!(workload = %id, actor, "workload released");
        self.republish(None);
        Ok(true)
    }

    /// Accepts the alert `alert_id` into the baseline.
    pub(super) fn accept(&mut self, alert_id: &str, actor: &str) -> Result<Alert, EngineError> {
        let alert = self
            .alerts
            .values()
            .find(|a| a.id == alert_id)
            .cloned()
            .ok_or_else(|| ResponseError::NoAlert(alert_id.to_owned()))?;
        let learn = accepts(&alert, |id| self.inventory.profile_of(id))?;
        let mut changes = Changes::default();
        let mut next = self.baseline.clone();
        for item in learn {
            learn_into(&mut next, &mut changes, item);
        }
        self.audit(
            &mut changes,
            actor,
            "accept",
            &alert.id,
            format!(
                "{} {}/{} -> {}",
                alert.kind.as_str(),
                alert.namespace,
                alert.workload,
                alert.destination
            ),
            "in the baseline".into(),
        );
        self.commit(&changes)?;
        self.baseline = next;
        self.remember_audit(&changes);
        self.republish(None);
        Ok(alert)
    }

    /// Imports `imported` into the baseline of `namespace` (all when
    /// `None`), merged or replacing; returns the baseline's sizes before and
    /// after.
    pub(super) fn import(
        &mut self,
        imported: &Baseline,
        namespace: Option<&str>,
        merge: bool,
        actor: &str,
    ) -> Result<super::ImportSizes, EngineError> {
        let before = self.baseline.len();
        let (next, mut changes) = import_changes(&self.baseline, imported, namespace, merge);
        let after = next.len();
        self.audit(
            &mut changes,
            actor,
            "import",
            namespace.unwrap_or("*"),
            format!("{} workloads, {} edges", before.0, before.1),
            format!(
                "{} workloads, {} edges ({})",
                after.0,
                after.1,
                if merge { "merged" } else { "replaced" }
            ),
        );
        self.commit(&changes)?;
        self.baseline = next;
        self.remember_audit(&changes);
        self.republish(None);
        Ok((before, after))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Action, Evidence, Severity};

    fn alert(kind: AlertKind, destination: &str) -> Alert {
        let mut evidence = Evidence::default();
        evidence.endpoints.insert("GET /v1/users/{id}".into());
        evidence.endpoints.insert("CONNECT".into());
        Alert {
            id: "x".into(),
            kind,
            severity: Severity::Medium,
            namespace: "lab".into(),
            workload: "nb-7f9c".into(),
            tenant: String::new(),
            destination: destination.into(),
            action: Action::Blocked,
            count: 1,
            denied: 1,
            first_seen: String::new(),
            last_seen: String::new(),
            claimed: None,
            explanation: String::new(),
            evidence,
        }
    }

    fn profile(id: &WorkloadId) -> WorkloadId {
        WorkloadId {
            namespace: id.namespace.clone(),
            name: "jupyter".into(),
        }
    }

    #[test]
    fn accepting_learns_what_the_alert_saw_as_the_profile() {
        let nb = NodeId::Workload(WorkloadId::new("lab", "jupyter").unwrap());
        let api = NodeId::Workload(WorkloadId::new("lab", "jupyter").unwrap());
        let pypi = NodeId::External("pypi.org:443".into());
        let cases = [
            (
                alert(AlertKind::UnknownEgress, "pypi.org:443"),
                vec![
                    Learn::Edge((nb.clone(), pypi.clone())),
                    Learn::Endpoint((nb.clone(), pypi.clone()), "GET /v1/users/{id}".into()),
                ],
            ),
            (
                alert(AlertKind::NewEdge, "lab/api"),
                vec![
                    Learn::Edge((nb.clone(), api.clone())),
                    Learn::Endpoint((nb.clone(), api), "GET /v1/users/{id}".into()),
                ],
            ),
            (
                alert(AlertKind::NewDeployment, ""),
                vec![Learn::Workload(WorkloadId::new("lab", "jupyter").unwrap())],
            ),
        ];
        for (alert, want) in cases {
            assert_eq!(accepts(&alert, profile).unwrap(), want, "{:?}", alert.kind);
        }
        let exposure = accepts(&alert(AlertKind::NewExposure, "internet"), profile).unwrap();
        assert_eq!(exposure[0], Learn::Edge((NodeId::Internet, nb)));
        for kind in [
            AlertKind::MiningProtocol,
            AlertKind::Threat,
            AlertKind::SpoofedSource,
            AlertKind::NameMismatch,
            AlertKind::LimitReached,
        ] {
            assert_eq!(
                accepts(&alert(kind, "pool:1"), profile),
                Err(ResponseError::NotAcceptable(kind.as_str()))
            );
        }
        assert_eq!(
            accepts(&alert(AlertKind::ResourceSpike, "pod:nb-0"), profile),
            Err(ResponseError::CpuLearnsByItself)
        );
    }

    #[test]
    fn an_import_merges_or_replaces_one_namespace() {
        let wl = |ns: &str, n: &str| NodeId::Workload(WorkloadId::new(ns, n).unwrap());
        let ext = |a: &str| NodeId::External(a.into());
        let mut current = Baseline::default();
        current.learn_edge(&(wl("lab", "a"), ext("old.example:443")));
        current.learn_edge(&(wl("prod", "b"), ext("keep.example:443")));
        let mut imported = Baseline::default();
        imported.learn_edge(&(wl("lab", "a"), ext("new.example:443")));
        imported.learn_endpoint(&(wl("lab", "a"), ext("new.example:443")), "GET /");

        let (merged, changes) = import_changes(&current, &imported, Some("lab"), true);
        assert!(merged.has_edge(&(wl("lab", "a"), ext("old.example:443"))));
        assert!(merged.has_edge(&(wl("lab", "a"), ext("new.example:443"))));
        assert_eq!(changes.baseline_reset, None);
        assert_eq!(changes.baseline_edges.len(), 1);

        let (replaced, changes) = import_changes(&current, &imported, Some("lab"), false);
        assert!(!replaced.has_edge(&(wl("lab", "a"), ext("old.example:443"))));
        assert!(replaced.has_edge(&(wl("lab", "a"), ext("new.example:443"))));
        assert!(replaced.has_endpoint(&(wl("lab", "a"), ext("new.example:443")), "GET /"));
        assert!(
            replaced.has_edge(&(wl("prod", "b"), ext("keep.example:443"))),
            "another namespace is untouched"
        );
        assert_eq!(changes.baseline_reset, Some(Some("lab".into())));
    }
}
