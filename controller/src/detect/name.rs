//! `name_mismatch`: a redirected connection named a destination (Host,
//! `:authority`, TLS SNI) that it did not go to. Always an alert, whatever
//! the mode: the workload lied about its destination (the sidecar judged it
//! by the real address, and denied it in enforcement).

use super::{Check, Detector, Finding, Input};
use crate::model::{Action, AlertKind};

/// The name-binding detector.
pub struct Name;

impl Detector for Name {
    fn check(&self, input: &Input<'_>) -> Check {
        match &input.obs.claimed_authority {
            Some(claimed) => Check::abnormal(Finding {
                claimed: Some(claimed.clone()),
                ..Finding::new(AlertKind::NameMismatch, Action::Flagged, input.about)
            }),
            None => Check::normal(),
        }
    }
}
