//! Verdicts: is an observation normal, given the mode and the baseline?
//!
//! Pure functions (baseline + observation -> verdict) with table tests; the
//! engine turns verdicts into alerts and policy. Depends on `model` and
//! `baseline` only.

use crate::baseline::Baseline;
use crate::model::{Action, AlertKind, EdgeKey, Mode, NodeId, WorkloadId};

/// A deviation from the baseline and what is done about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// What deviated.
    pub kind: AlertKind,
    /// Blocked or flagged, from the mode.
    pub action: Action,
}

/// Judges traffic on `edge` in a namespace in `mode`.
pub fn check_edge(mode: Mode, baseline: &Baseline, edge: &EdgeKey) -> Option<Verdict> {
    if mode == Mode::Learning || baseline.has_edge(edge) {
        return None;
    }
    let kind = match edge.1 {
        NodeId::External(_) => AlertKind::UnknownEgress,
        NodeId::Internet | NodeId::Workload(_) => AlertKind::NewEdge,
    };
    Some(Verdict {
        kind,
        action: mode.action(),
    })
}

/// Protocols that are never normal: mining pools speak Stratum.
pub const MINING_PROTOCOLS: &[&str] = &["stratum"];

/// Judges the protocol of traffic, whatever the mode and the baseline: a
/// mining protocol is flagged even while learning (and never learned), and
/// blocked in enforcement.
pub fn check_protocol(mode: Mode, protocol: &str) -> Option<Verdict> {
    MINING_PROTOCOLS.contains(&protocol).then_some(Verdict {
        kind: AlertKind::MiningProtocol,
        action: mode.action(),
    })
}

/// Judges a workload that registered in a namespace in `mode`.
pub fn check_workload(mode: Mode, baseline: &Baseline, id: &WorkloadId) -> Option<Verdict> {
    if mode == Mode::Learning || baseline.has_workload(id) {
        return None;
    }
    Some(Verdict {
        kind: AlertKind::NewDeployment,
        action: mode.action(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENFORCE: Mode = Mode::Enforcement { alert_only: false };
    const ALERT_ONLY: Mode = Mode::Enforcement { alert_only: true };

    fn wl(name: &str) -> NodeId {
        NodeId::Workload(WorkloadId::new("default", name).unwrap())
    }

    fn baseline() -> Baseline {
        let mut b = Baseline::default();
        b.learn_workload(&WorkloadId::new("default", "web").unwrap());
        b.learn_edge(&(wl("web"), NodeId::External("pypi.org:443".into())));
        b.learn_edge(&(wl("web"), wl("db")));
        b.learn_edge(&(NodeId::Internet, wl("web")));
        b
    }

    #[test]
    fn edges_are_judged_against_the_baseline() {
        let b = baseline();
        let pool = NodeId::External("pool.minexmr.com:4444".into());
        let blocked = |kind| {
            Some(Verdict {
                kind,
                action: Action::Blocked,
            })
        };
        let table = [
            // (mode, edge, expected)
            (Mode::Learning, (wl("web"), pool.clone()), None),
            (
                ENFORCE,
                (wl("web"), NodeId::External("pypi.org:443".into())),
                None,
            ),
            (ENFORCE, (wl("web"), wl("db")), None),
            (ENFORCE, (NodeId::Internet, wl("web")), None),
            (
                ENFORCE,
                (wl("web"), pool.clone()),
                blocked(AlertKind::UnknownEgress),
            ),
            (ENFORCE, (wl("db"), wl("web")), blocked(AlertKind::NewEdge)),
            (
                ENFORCE,
                (NodeId::Internet, wl("db")),
                blocked(AlertKind::NewEdge),
            ),
            (
                ALERT_ONLY,
                (wl("web"), pool),
                Some(Verdict {
                    kind: AlertKind::UnknownEgress,
                    action: Action::Flagged,
                }),
            ),
        ];
        for (mode, edge, expected) in table {
            assert_eq!(check_edge(mode, &b, &edge), expected, "{mode:?} {edge:?}");
        }
    }

    #[test]
    fn mining_protocols_are_flagged_in_every_mode() {
        assert_eq!(check_protocol(ENFORCE, "http1"), None);
        assert_eq!(check_protocol(Mode::Learning, "tls"), None);
        let verdict = |action| {
            Some(Verdict {
                kind: AlertKind::MiningProtocol,
                action,
            })
        };
        assert_eq!(
            check_protocol(Mode::Learning, "stratum"),
            verdict(Action::Flagged)
        );
        assert_eq!(
            check_protocol(ALERT_ONLY, "stratum"),
            verdict(Action::Flagged)
        );
        assert_eq!(check_protocol(ENFORCE, "stratum"), verdict(Action::Blocked));
    }

    #[test]
    fn unknown_workloads_are_new_deployments_outside_learning() {
        let b = baseline();
        let web = WorkloadId::new("default", "web").unwrap();
        let miner = WorkloadId::new("default", "miner").unwrap();
        assert_eq!(check_workload(Mode::Learning, &b, &miner), None);
        assert_eq!(check_workload(ENFORCE, &b, &web), None);
        assert_eq!(
            check_workload(ENFORCE, &b, &miner),
            Some(Verdict {
                kind: AlertKind::NewDeployment,
                action: Action::Blocked
            })
        );
        assert_eq!(
            check_workload(ALERT_ONLY, &b, &miner).map(|v| v.action),
            Some(Action::Flagged)
        );
    }
}
