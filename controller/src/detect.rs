//! Verdicts: is an observation normal, given the mode and the baseline?
//!
//! Pure functions (baseline + observation -> verdict) with table tests; the
//! engine turns verdicts into alerts and policy. Depends on `model` and
//! `baseline` only.

use crate::baseline::Baseline;
use crate::model::{Action, AlertKind, EdgeKey, Mode, NodeId, Observation, WorkloadId};

/// A deviation from the baseline and what is done about it.
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

/// Judges a caller's unproven claim to a workload's identity, whatever the
/// mode: always an alert (flagged, or blocked when every such request was
/// denied as the internet), since someone is impersonating a workload.
pub fn check_claim(obs: &Observation) -> Option<(Verdict, &WorkloadId)> {
    let claimed = obs.claimed_source.as_ref()?;
    let verdict = Verdict {
        kind: AlertKind::SpoofedSource,
        action: Action::Flagged,
    };
    Some((verdict, claimed))
}

/// Judges a redirected destination whose name (Host, `:authority`, TLS
/// SNI) did not resolve to where the connection went, whatever the mode:
/// always an alert, since the workload lied about its destination (the
/// sidecar denied it in enforcement; the action follows what happened).
pub fn check_name(obs: &Observation) -> Option<(Verdict, &str)> {
    let claimed = obs.claimed_authority.as_deref()?;
    let verdict = Verdict {
        kind: AlertKind::NameMismatch,
        action: Action::Flagged,
    };
    Some((verdict, claimed))
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

    #[test]
    fn the_action_on_seen_traffic_is_what_happened_to_it() {
        let blocking = Verdict {
            kind: AlertKind::UnknownEgress,
            action: Action::Blocked,
        };
        let flagging = Verdict {
            action: Action::Flagged,
            ..blocking
        };
        let hits = |count, denied| Hits { count, denied };
        let cases = [
            (blocking, hits(3, 3), Action::Blocked),
            (blocking, hits(3, 2), Action::Flagged),
            (blocking, hits(1, 0), Action::Flagged),
            (flagging, hits(2, 0), Action::Flagged),
            (flagging, hits(2, 2), Action::Blocked),
            (blocking, hits(0, 0), Action::Blocked),
            (flagging, hits(0, 0), Action::Flagged),
        ];
        for (verdict, hits, want) in cases {
            assert_eq!(verdict.seen(hits).action, want, "{verdict:?} {hits:?}");
            assert_eq!(verdict.seen(hits).kind, verdict.kind);
        }
        let mut obs = crate::model::outbound("a:1", None, 2);
        obs.denied = 9;
        assert_eq!(Hits::of(&obs), hits(2, 2), "denied is capped by count");
    }

    #[test]
    fn only_an_unproven_claim_is_an_impersonation() {
        let mut obs = crate::model::outbound("", None, 1);
        assert_eq!(check_claim(&obs), None);
        let web = WorkloadId::new("default", "web").unwrap();
        obs.claimed_source = Some(web.clone());
        let (verdict, claimed) = check_claim(&obs).unwrap();
        assert_eq!(verdict.kind, AlertKind::SpoofedSource);
        assert_eq!(claimed, &web);
    }
}
