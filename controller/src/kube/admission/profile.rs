//! Profile admission: in enforcement, a new Deployment, StatefulSet, Job or
//! Pod whose profile is not in its namespace's baseline is denied with a
//! message naming the profile; in alert-only it is admitted with a warning
//! (and alerted by the caller); in learning nothing is checked. This stops
//! "deploy a miner through an open dashboard" before it starts. Pure: the
//! caller looks up the mode and whether the baseline has the profile.
//!
//! The profile is the one the sidecar would be given ([`identify`]): the
//! `vigil.io/profile` label, else the image repository, else the workload's
//! own name. Pods are checked too, so a kind not listed here (a bare
//! ReplicaSet, a DaemonSet, a CronJob) is still stopped at its pods.

use ::kube::core::admission::{AdmissionResponse, Operation};
use serde_json::Value;

use super::Review;
use crate::kube::discovery::state::owner_pod;
use crate::kube::identity::{Namespace, identify};
use crate::model::{Mode, WorkloadId};

/// A workload a CREATE request brings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    /// `Deployment`, `StatefulSet`, `Job` or `Pod` (the request's kind).
    pub kind: String,
    /// Its name as the object gives it (a pod's `generateName` prefix).
    pub name: String,
    /// The workload it belongs to (as discovery and the sidecar name it).
    pub id: WorkloadId,
    /// Its profile, "" for its own name.
    pub profile: String,
    /// Its tenant, "" when unknown.
    pub tenant: String,
}

impl Workload {
    /// The baseline entry of its profile (`/` written `.`).
    pub fn baseline_id(&self) -> WorkloadId {
        WorkloadId {
            namespace: self.id.namespace.clone(),
            name: if self.profile.is_empty() {
                self.id.name.clone()
            } else {
                self.profile.replace('/', ".")
            },
        }
    }

    /// The profile as a person reads it.
    pub fn profile_label(&self) -> &str {
        if self.profile.is_empty() {
            &self.id.name
        } else {
            &self.profile
        }
    }
}

/// The workload a review creates, when it is a Deployment, StatefulSet,
/// Job or Pod CREATE; `None` otherwise.
pub fn workload_of(review: &Review, namespace: &Namespace) -> Option<Workload> {
    let request = &review.request;
    if !matches!(request.operation, Operation::Create)
        || request
            .sub_resource
            .as_deref()
            .is_some_and(|s| !s.is_empty())
    {
        return None;
    }
    let object = review.object.as_ref()?;
    let kind = request.kind.kind.as_str();
    let pod: Value = match (request.kind.group.as_str(), kind) {
        ("", "Pod") => object.clone(),
        ("apps", "Deployment" | "StatefulSet") | ("batch", "Job") => {
            let mut owner = object.clone();
            if owner.pointer("/metadata/namespace").is_none() {
                owner["metadata"]["namespace"] = Value::String(namespace.name.clone());
            }
            owner_pod(kind, &owner)
        }
        _ => return None,
    };
    let who = identify(&pod, namespace);
    let ns = if namespace.name.is_empty() {
        who.namespace.clone()
    } else {
        namespace.name.clone()
    };
    let id = WorkloadId::new(&ns, &who.workload).ok()?;
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .or_else(|| object.pointer("/metadata/generateName")?.as_str())
        .unwrap_or("")
        .to_owned();
    Some(Workload {
        kind: kind.to_owned(),
        name,
        id,
        profile: who.profile,
        tenant: who.tenant,
    })
}

/// What the profile check decides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Learning, or the profile is in the baseline.
    Admit,
    /// Alert-only: admitted with this warning, and alerted.
    Warn(String),
    /// Enforcement: refused with this message, and alerted.
    Deny(String),
}

/// The decision for `workload` in `mode`, `known` telling whether the
/// namespace's baseline has its profile.
pub fn decide(workload: &Workload, mode: Mode, known: bool) -> Verdict {
    if mode == Mode::Learning || known {
        return Verdict::Admit;
    }
    let (ns, profile) = (&workload.id.namespace, workload.profile_label());
    let what = format!("{} {}", workload.kind, workload.name);
    if mode.blocks() {
        Verdict::Deny(format!(
            "vigil: namespace {ns} is in enforcement and profile {profile} ({what}) is not in its \
             baseline: learn it in learning mode, or add it with vigilctl baseline import"
        ))
    } else {
        Verdict::Warn(format!(
            "vigil: profile {profile} ({what}) is not in the baseline of namespace {ns}; \
             admitted (alert-only) and alerted"
        ))
    }
}

/// `response` with `verdict` applied (a denial wins over an admission).
pub fn apply(response: AdmissionResponse, verdict: &Verdict) -> AdmissionResponse {
    match verdict {
        Verdict::Admit => response,
        Verdict::Deny(message) if response.allowed => response.deny(message.clone()),
        Verdict::Deny(_) => response,
        Verdict::Warn(warning) => {
            let mut response = response;
            response
                .warnings
                .get_or_insert_with(Vec::new)
                .push(warning.clone());
            response
        }
    }
}

#[cfg(test)]
#[path = "profile_tests.rs"]
mod tests;
