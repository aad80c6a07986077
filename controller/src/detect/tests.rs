//! Table tests of every detector, through [`judge`].

use super::*;
use crate::model::{NodeId, Protocol, WorkloadId, outbound};

const ENFORCE: Mode = Mode::Enforcement { alert_only: false };
const ALERT_ONLY: Mode = Mode::Enforcement { alert_only: true };
const LEARN: Mode = Mode::Learning;

fn wl(name: &str) -> NodeId {
    NodeId::Workload(WorkloadId::new("default", name).unwrap())
}

fn ext(authority: &str) -> NodeId {
    NodeId::External(authority.into())
}

/// Lists `pool.example` and its subdomains, and 203.0.113.9.
struct Listed;

impl Threats for Listed {
    fn listed(&self, host: &str) -> Option<String> {
        let hit =
            host == "pool.example" || host.ends_with(".pool.example") || host == "203.0.113.9";
        hit.then(|| format!("test: {host}"))
    }
}

fn baseline() -> Baseline {
    let mut b = Baseline::default();
    b.learn_workload(&WorkloadId::new("default", "web").unwrap());
    b.learn_edge(&(wl("web"), ext("pypi.org:443")));
    b.learn_edge(&(wl("web"), wl("db")));
    b.learn_edge(&(wl("web"), ext("pool.example:443")));
    b.learn_edge(&(NodeId::Internet, wl("web")));
    b.learn_endpoint(&(wl("web"), wl("db")), "GET /rows/{id}");
    b
}

fn judge_with(mode: Mode, edge: &EdgeKey, obs: &Observation) -> Judgement {
    let b = baseline();
    let about = crate::snapshot::label(&edge.1);
    judge(&Input::new(mode, &b, &Listed, edge, &about, obs), false)
}

fn kinds(j: &Judgement) -> Vec<(AlertKind, Action)> {
    j.findings
        .iter()
        .map(|f| (f.verdict.kind, f.verdict.action))
        .collect()
}

fn get(path: &str) -> Observation {
    Observation {
        path: path.into(),
        ..outbound("db:5432", None, 1)
    }
}

#[test]
fn edges_are_judged_against_the_baseline() {
    use Action::{Blocked, Flagged};
    use AlertKind::*;
    let pool = ext("pool.minexmr.com:4444");
    let obs = outbound("x:1", None, 1);
    type Case = (Mode, EdgeKey, Vec<(AlertKind, Action)>);
    let table: Vec<Case> = vec![
        (LEARN, (wl("web"), pool.clone()), vec![]),
        (ENFORCE, (wl("web"), ext("pypi.org:443")), vec![]),
        (
            ENFORCE,
            (wl("web"), pool.clone()),
            vec![(UnknownEgress, Blocked)],
        ),
        (
            ALERT_ONLY,
            (wl("web"), pool),
            vec![(UnknownEgress, Flagged)],
        ),
        (ENFORCE, (wl("db"), wl("web")), vec![(NewEdge, Blocked)]),
        (ENFORCE, (NodeId::Internet, wl("web")), vec![]),
        (
            ENFORCE,
            (NodeId::Internet, wl("db")),
            vec![(NewExposure, Blocked)],
        ),
        (
            ALERT_ONLY,
            (NodeId::Internet, wl("db")),
            vec![(NewExposure, Flagged)],
        ),
    ];
    for (mode, edge, want) in table {
        let j = judge_with(mode, &edge, &obs);
        assert_eq!(kinds(&j), want, "{mode:?} {edge:?}");
    }
}

#[test]
fn learning_learns_edges_and_endpoints_but_never_the_abnormal() {
    let edge = (wl("web"), wl("api"));
    let j = judge_with(LEARN, &edge, &get("/users/{id}"));
    assert_eq!(
        j.learn,
        vec![
            Learn::Edge(edge.clone()),
            Learn::Endpoint(edge.clone(), "GET /users/{id}".into())
        ]
    );
    assert!(j.findings.is_empty());
    // Known edge and endpoint: nothing new.
    let known = (wl("web"), wl("db"));
    assert_eq!(
        judge_with(LEARN, &known, &get("/rows/{id}")),
        Judgement::default()
    );
    // Abnormal traffic is never learned, even while learning.
    let mut stratum = outbound("pool.minexmr.com:4444", None, 1);
    stratum.protocol = Protocol::Stratum;
    let mut spoofed = outbound("", None, 1);
    spoofed.claimed_source = Some(WorkloadId::new("default", "web").unwrap());
    let mut lying = outbound("10.0.0.9:443", None, 1);
    lying.claimed_authority = Some("pypi.org:443".into());
    let listed = outbound("eu.pool.example:3333", None, 1);
    for obs in [stratum, spoofed, lying, listed] {
        let j = judge_with(LEARN, &(wl("web"), ext("new:1")), &obs);
        assert!(j.learn.is_empty(), "{obs:?}");
        assert_eq!(j.findings.len(), 1, "{obs:?}");
    }
    // Nor is traffic the engine counted past a cap.
    let b = baseline();
    let obs = outbound("x:1", None, 1);
    let edge = (wl("web"), ext("x:1"));
    let input = Input::new(LEARN, &b, &NoThreats, &edge, "x:1", &obs);
    assert!(judge(&input, true).learn.is_empty());
}

#[test]
fn abnormal_traffic_is_flagged_in_every_mode() {
    use Action::{Blocked, Flagged};
    use AlertKind::*;
    let mut stratum = outbound("pypi.org:443", None, 1);
    stratum.protocol = Protocol::Stratum;
    let edge = (wl("web"), ext("pypi.org:443"));
    let cases = [(LEARN, Flagged), (ALERT_ONLY, Flagged), (ENFORCE, Blocked)];
    for (mode, action) in cases {
        // Stratum on a destination in the baseline: still mining.
        assert_eq!(
            kinds(&judge_with(mode, &edge, &stratum)),
            vec![(MiningProtocol, action)]
        );
    }
    // A listed pool in the baseline: a threat in every mode, blocked in
    // enforcement.
    let pool = (wl("web"), ext("pool.example:443"));
    let obs = outbound("pool.example:443", None, 1);
    for (mode, action) in cases {
        let j = judge_with(mode, &pool, &obs);
        assert_eq!(kinds(&j), vec![(Threat, action)], "{mode:?}");
        assert_eq!(j.findings[0].listed.as_deref(), Some("test: pool.example"));
    }
    // Listed by the name it claimed, by its resolved address, by a DNS
    // query (a bare name).
    let mut lying = outbound("10.0.0.9:443", None, 1);
    lying.claimed_authority = Some("a.pool.example:443".into());
    let by_addr = outbound("cdn.example:443", Some("203.0.113.9:443"), 1);
    let mut dns = outbound("x.pool.example", None, 1);
    dns.protocol = Protocol::Dns;
    let new = (wl("web"), ext("other:1"));
    let j = judge_with(ENFORCE, &new, &lying);
    assert_eq!(
        kinds(&j),
        vec![
            (Threat, Blocked),
            (NameMismatch, Flagged),
            (UnknownEgress, Blocked)
        ]
    );
    assert_eq!(j.findings[1].claimed.as_deref(), Some("a.pool.example:443"));
    assert_eq!(
        kinds(&judge_with(LEARN, &new, &by_addr)),
        vec![(Threat, Flagged)]
    );
    assert_eq!(
        kinds(&judge_with(LEARN, &new, &dns)),
        vec![(Threat, Flagged)]
    );
    // Not listed: a look-alike.
    let lookalike = outbound("notpool.example:443", None, 1);
    assert!(judge_with(LEARN, &new, &lookalike).findings.is_empty());
}

#[test]
fn impersonation_is_alerted_under_the_claimed_identity() {
    let mut obs = outbound("", None, 1);
    obs.direction = crate::model::Direction::Inbound;
    obs.claimed_source = Some(WorkloadId::new("default", "web").unwrap());
    let j = judge_with(LEARN, &(NodeId::Internet, wl("db")), &obs);
    assert_eq!(j.findings.len(), 1);
    assert_eq!(j.findings[0].verdict.kind, AlertKind::SpoofedSource);
    assert_eq!(j.findings[0].about, "default/web");
}

#[test]
fn a_known_edge_with_a_new_endpoint_is_a_new_endpoint() {
    use AlertKind::NewEndpoint;
    let edge = (wl("web"), wl("db"));
    let table = [
        (ENFORCE, get("/rows/{id}"), vec![]),
        (ENFORCE, get("/admin"), vec![(NewEndpoint, Action::Blocked)]),
        (
            ALERT_ONLY,
            get("/admin"),
            vec![(NewEndpoint, Action::Flagged)],
        ),
        (LEARN, get("/admin"), vec![]),
    ];
    for (mode, obs, want) in table {
        assert_eq!(
            kinds(&judge_with(mode, &edge, &obs)),
            want,
            "{mode:?} {}",
            obs.path
        );
    }
    // Tunnels, streams and DNS carry no endpoint; an edge whose endpoints
    // were never learned is judged by the edge alone.
    let mut tunnel = get("");
    tunnel.method = "CONNECT".into();
    tunnel.protocol = Protocol::Tcp;
    assert!(judge_with(ENFORCE, &edge, &tunnel).findings.is_empty());
    let no_endpoints = (wl("web"), ext("pypi.org:443"));
    assert!(
        judge_with(ENFORCE, &no_endpoints, &get("/simple/"))
            .findings
            .is_empty()
    );
}

#[test]
fn unknown_workloads_are_new_deployments_outside_learning() {
    let b = baseline();
    let web = WorkloadId::new("default", "web").unwrap();
    let miner = WorkloadId::new("default", "miner").unwrap();
    assert_eq!(check_workload(LEARN, &b, &miner), None);
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
    let mut obs = outbound("a:1", None, 2);
    obs.denied = 9;
    assert_eq!(Hits::of(&obs), hits(2, 2), "denied is capped by count");
}
