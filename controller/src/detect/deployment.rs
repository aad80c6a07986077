//! `new_deployment`: a workload whose profile was never seen while
//! learning. Judged at registration (not per observation): a new workload
//! of a known profile inherits the profile's baseline.

use super::Verdict;
use crate::baseline::Baseline;
use crate::model::{AlertKind, Mode, WorkloadId};

/// Judges a workload that registered, as its profile (`profile`: the
/// workload id the baseline knows it by), in a namespace in `mode`.
pub fn check_workload(mode: Mode, baseline: &Baseline, profile: &WorkloadId) -> Option<Verdict> {
    if mode == Mode::Learning || baseline.has_workload(profile) {
        return None;
    }
    Some(Verdict {
        kind: AlertKind::NewDeployment,
        action: mode.action(),
    })
}
