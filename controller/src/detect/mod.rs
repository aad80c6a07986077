//! Detectors: is an observation normal, given the mode and the baseline?
//!
//! Each detector lives in its own file behind one interface, [`Detector`]:
//! an observation with its mode, baseline and threat lists in ([`Input`]),
//! what deviates and what may be learned out ([`Check`]). [`judge`] runs
//! them all and combines their answers into a [`Judgement`]: anything
//! abnormal (a miner, an impersonator, a lie about a destination, a listed
//! threat, a flood past the caps) is never learned, even while learning.
//! Pure functions with table tests; the engine turns the judgement into
//! alerts, baseline updates and policy. Depends on `model` and `baseline`.

use crate::baseline::{Baseline, Known};
use crate::model::{Action, AlertKind, EdgeKey, Mode, Observation};

mod claim;
mod deployment;
mod edge;
mod endpoint;
mod mining;
mod name;
mod threat;

pub use deployment::check_workload;
pub use threat::{NoThreats, Threats};

/// A deviation and what is done about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// What deviated.
    pub kind: AlertKind,
    /// Blocked or flagged, from the mode.
    pub action: Action,
}

/// How much traffic hit a verdict, and how much of it the proxies denied.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Hits {
    /// Requests (or connections) seen.
    pub count: u64,
    /// How many of them the proxies denied.
    pub denied: u64,
}

impl Hits {
    /// The hits of one observation.
    pub fn of(obs: &Observation) -> Self {
        Hits {
            count: obs.count,
            denied: obs.denied.min(obs.count),
        }
    }
}

impl Verdict {
    /// The verdict on traffic that was seen: the action is what happened
    /// to it, `blocked` only when the proxies denied all of it. A mode that
    /// blocks says what will happen; traffic that got through (before the
    /// policy reached the proxy) must not be reported as blocked.
    pub fn seen(self, hits: Hits) -> Verdict {
        let action = if hits.count == 0 {
            self.action
        } else if hits.denied >= hits.count {
            Action::Blocked
        } else {
            Action::Flagged
        };
        Verdict { action, ..self }
    }
}

/// One deviation found in an observation, with what its alert names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// The verdict.
    pub verdict: Verdict,
    /// What the alert names beside the workload: the destination label,
    /// or the identity a caller claimed.
    pub about: String,
    /// `name_mismatch`: the name the workload gave.
    pub claimed: Option<String>,
    /// `threat`: which feed lists it and by which entry.
    pub listed: Option<String>,
}

impl Finding {
    fn new(kind: AlertKind, action: Action, about: &str) -> Self {
        Finding {
            verdict: Verdict { kind, action },
            about: about.to_owned(),
            claimed: None,
            listed: None,
        }
    }
}

/// Something an observation may add to the baseline (in learning mode).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Learn {
    /// A workload (as its profile).
    Workload(crate::model::WorkloadId),
    /// A call between two nodes (workloads as their profiles).
    Edge(EdgeKey),
    /// An API endpoint (`METHOD path-template`) on a call.
    Endpoint(EdgeKey, String),
}

/// Everything a detector needs to judge one observation.
pub struct Input<'a> {
    /// The reporter's namespace mode.
    pub mode: Mode,
    /// The baseline.
    pub baseline: &'a Baseline,
    /// The threat lists.
    pub threats: &'a dyn Threats,
    /// The call as the baseline knows it: workloads as their profiles.
    pub edge: &'a EdgeKey,
    /// The destination (outbound) or caller (inbound) as an alert names it.
    pub about: &'a str,
    /// The observation.
    pub obs: &'a Observation,
    /// What the baseline knows of `edge`, looked up once for every
    /// detector (see [`Input::new`]).
    known: Option<&'a Known>,
}

impl<'a> Input<'a> {
    /// The input for judging `obs` on `edge` against `baseline`: the
    /// baseline's entry for the call is found here, once per observation,
    /// never kept beyond it (the baseline learns after every judgement).
    pub fn new(
        mode: Mode,
        baseline: &'a Baseline,
        threats: &'a dyn Threats,
        edge: &'a EdgeKey,
        about: &'a str,
        obs: &'a Observation,
    ) -> Self {
        Input {
            mode,
            baseline,
            threats,
            edge,
            about,
            obs,
            known: baseline.known(edge),
        }
    }

    /// Whether the call was learned.
    fn edge_known(&self) -> bool {
        self.known.is_some_and(|k| k.edge)
    }
}

/// One detector's answer.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Check {
    /// The deviation found, if any.
    pub finding: Option<Finding>,
    /// The traffic is abnormal whatever the baseline: learn nothing of it.
    pub taints: bool,
    /// What may be learned of it, when nothing taints it.
    pub learn: Vec<Learn>,
}

impl Check {
    /// Nothing to say.
    pub fn normal() -> Self {
        Check::default()
    }

    /// An abnormal finding: alerted, never learned.
    fn abnormal(finding: Finding) -> Self {
        Check {
            finding: Some(finding),
            taints: true,
            learn: Vec::new(),
        }
    }
}

/// A detector: one rule, one file.
pub trait Detector: Sync {
    /// Judges one observation.
    fn check(&self, input: &Input<'_>) -> Check;
}

/// Every detector, in the order their alerts are raised.
pub const DETECTORS: &[&dyn Detector] = &[
    &mining::Mining,
    &threat::Threat,
    &claim::Claim,
    &name::Name,
    &edge::Edge,
    &endpoint::Endpoint,
];

/// What all detectors say of one observation.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Judgement {
    /// Deviations, in detector order.
    pub findings: Vec<Finding>,
    /// What to add to the baseline (empty unless learning and untainted).
    pub learn: Vec<Learn>,
}

/// Runs every detector on `input`. `tainted` marks traffic the engine
/// already knows to be abnormal (counted past a cap): it is never learned.
pub fn judge(input: &Input<'_>, tainted: bool) -> Judgement {
    let mut judgement = Judgement::default();
    let mut taints = tainted;
    let mut learn = Vec::new();
    for detector in DETECTORS {
        let check = detector.check(input);
        taints |= check.taints;
        judgement.findings.extend(check.finding);
        learn.extend(check.learn);
    }
    if !taints {
        judgement.learn = learn;
    }
    judgement
}

#[cfg(test)]
mod tests;
