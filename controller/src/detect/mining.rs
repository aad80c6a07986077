//! `mining_protocol`: Stratum on any port, in any mode. No baseline ever
//! allows mining: flagged while learning (and never learned), blocked in
//! enforcement.

use super::{Check, Detector, Finding, Input};
use crate::model::AlertKind;

/// The mining-protocol detector.
pub struct Mining;

impl Detector for Mining {
    fn check(&self, input: &Input<'_>) -> Check {
        if !input.obs.protocol.is_mining() {
            return Check::normal();
        }
        Check::abnormal(Finding::new(
            AlertKind::MiningProtocol,
            input.mode.action(),
            input.about,
        ))
    }
}
