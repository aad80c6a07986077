//! `unknown_egress`, `new_edge` and `new_exposure`: a call outside the
//! baseline. Learned while learning; outside learning, a call to an
//! external destination is `unknown_egress`, a call from the internet is
//! `new_exposure` (a workload that starts receiving traffic from the
//! internet: the open dashboard) and any other call is `new_edge`.

use super::{Check, Detector, Finding, Input, Learn};
use crate::model::{AlertKind, Mode, NodeId};

/// The baseline-edge detector.
pub struct Edge;

impl Detector for Edge {
    fn check(&self, input: &Input<'_>) -> Check {
        let edge = input.edge;
        if input.mode == Mode::Learning {
            if input.edge_known() {
                return Check::normal();
            }
            return Check {
                learn: vec![Learn::Edge(edge.clone())],
                ..Check::normal()
            };
        }
        if input.edge_known() {
            return Check::normal();
        }
        let kind = match (&edge.0, &edge.1) {
            (_, NodeId::External(_)) => AlertKind::UnknownEgress,
            (NodeId::Internet, _) => AlertKind::NewExposure,
            _ => AlertKind::NewEdge,
        };
        Check {
            finding: Some(Finding::new(kind, input.mode.action(), input.about)),
            ..Check::normal()
        }
    }
}
