//! `spoofed_source`: a caller claimed a workload's identity from an IP that
//! workload does not call from. Always an alert, whatever the mode: someone
//! is impersonating a workload (the sidecar judged it as the internet).

use super::{Check, Detector, Finding, Input};
use crate::model::{Action, AlertKind};

/// The impersonation detector.
pub struct Claim;

impl Detector for Claim {
    fn check(&self, input: &Input<'_>) -> Check {
        match &input.obs.claimed_source {
            Some(claimed) => Check::abnormal(Finding::new(
                AlertKind::SpoofedSource,
                Action::Flagged,
                &claimed.to_string(),
            )),
            None => Check::normal(),
        }
    }
}
