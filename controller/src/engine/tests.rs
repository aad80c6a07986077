use super::*;

/// A registration of `id` advertising `addrs`, from `from` or else from
/// the first address's IP (as a sidecar registers from its own address).
fn reg(id: WorkloadId, addrs: Vec<SocketAddr>, from: Option<IpAddr>) -> Registration {
    Registration {
        id,
        from: from.or_else(|| addrs.first().map(SocketAddr::ip)),
        addrs,
        version: "t".into(),
        ..Registration::default()
    }
}
use crate::model::{Action, Batch, outbound};

/// One inbound call to the reporter that claims `name`, from `ip`, which
/// the sidecar could not check.
fn claim(name: &str, ip: &str) -> Observation {
    let mut obs = outbound("", None, 1);
    obs.direction = Direction::Inbound;
    obs.source = Some(id(name));
    obs.source_ip = Some(ip.parse().unwrap());
    obs
}

const ENFORCE: Mode = Mode::Enforcement { alert_only: false };

fn id(name: &str) -> WorkloadId {
    WorkloadId::new("default", name).unwrap()
}

/// Reports `observations` as one batch with no instance (never deduplicated).
async fn report(
    h: &Handle,
    reporter: WorkloadId,
    observations: Vec<Observation>,
    dropped: u64,
) -> Result<(), EngineError> {
    h.report(Batch {
        reporter,
        instance: String::new(),
        seq: 0,
        observations,
        dropped,
    })
    .await
}

/// Report `seq` of the sidecar `web`: five calls to pypi.org.
fn pypi_batch(seq: u64) -> Batch {
    Batch {
        reporter: id("web"),
        instance: "3f2a".into(),
        seq,
        observations: vec![outbound("pypi.org:443", None, 5)],
        dropped: 0,
    }
}

fn start(dir: &std::path::Path) -> (Handle, std::thread::JoinHandle<()>) {
    spawn(
        Store::open(dir).unwrap(),
        &mut prometheus_client::registry::Registry::default(),
    )
    .unwrap()
}

/// An engine with `options` on the store in `dir`.
fn start_with(dir: &std::path::Path, options: Options) -> (Handle, std::thread::JoinHandle<()>) {
    let registry = &mut prometheus_client::registry::Registry::default();
    spawn_with(Store::open(dir).unwrap(), registry, options).unwrap()
}

async fn stop(handle: Handle, thread: std::thread::JoinHandle<()>) {
    drop(handle);
    tokio::task::spawn_blocking(move || thread.join().unwrap())
        .await
        .unwrap();
}

#[tokio::test]
async fn learning_then_enforcement_alerts_and_blocks_only_the_new() {
    let dir = tempfile::tempdir().unwrap();
    let (h, thread) = start(dir.path());
    let mut web_policy = h.register(reg(id("web"), vec![], None)).await.unwrap();
    h.register(reg(id("db"), vec!["127.0.0.1:7001".parse().unwrap()], None))
        .await
        .unwrap();
    assert!(!web_policy.borrow_and_update().enforce);

    report(
        &h,
        id("web"),
        vec![
            outbound("db:7001", Some("127.0.0.1:7001"), 5),
            outbound("pypi.org:443", None, 2),
        ],
        0,
    )
    .await
    .unwrap();
    h.set_mode(None, ENFORCE).await.unwrap();
    assert!(
        web_policy.has_changed().unwrap(),
        "policy pushed on mode change"
    );
    let policy = web_policy.borrow_and_update().clone();
    assert!(policy.enforce);
    assert!(policy.allowed_authorities.contains("pypi.org:443"));
    assert!(
        policy
            .allowed_addrs
            .contains(&"127.0.0.1:7001".parse().unwrap())
    );

    // Known traffic raises nothing; unknown egress does. The proxy denied
    // the pool; a request that got through (before its policy arrived) is
    // reported as flagged, never as blocked.
    let mut pool = outbound("pool.example:3333", None, 3);
    pool.denied = 3;
    report(
        &h,
        id("web"),
        vec![
            outbound("pypi.org:443", None, 1),
            pool,
            outbound("early.example:80", None, 1),
        ],
        0,
    )
    .await
    .unwrap();
    // A workload never seen while learning is a new deployment.
    let miner_policy = h.register(reg(id("miner"), vec![], None)).await.unwrap();
    assert!(miner_policy.borrow().enforce);
    assert!(miner_policy.borrow().allowed_authorities.is_empty());

    let snap = h.snapshot();
    let mut kinds: Vec<_> = snap
        .alerts
        .iter()
        .map(|a| {
            (
                a.kind,
                a.workload.as_str(),
                a.destination.as_str(),
                (a.count, a.denied),
                a.action,
            )
        })
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            (
                AlertKind::UnknownEgress,
                "web",
                "early.example:80",
                (1, 0),
                Action::Flagged
            ),
            (
                AlertKind::UnknownEgress,
                "web",
                "pool.example:3333",
                (3, 3),
                Action::Blocked
            ),
            (
                AlertKind::NewDeployment,
                "miner",
                "",
                (1, 0),
                Action::Blocked
            ),
        ]
    );
    let edge = snap
        .graph
        .edges
        .iter()
        .find(|e| &*e.target == "external:pool.example:3333")
        .unwrap();
    assert!(edge.violation && !edge.in_baseline);
    let db_edge = snap
        .graph
        .edges
        .iter()
        .find(|e| &*e.target == "workload:default/db")
        .expect("the call to db resolved to the db workload by address");
    assert!(db_edge.in_baseline && !db_edge.violation);
    assert_eq!(db_edge.requests, 5);
    stop(h, thread).await;
}

#[tokio::test]
async fn mode_baseline_and_alerts_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (h, thread) = start(dir.path());
    h.register(reg(id("web"), vec![], None)).await.unwrap();
    report(&h, id("web"), vec![outbound("pypi.org:443", None, 1)], 0)
        .await
        .unwrap();
    h.set_mode(
        Some("default".into()),
        Mode::Enforcement { alert_only: true },
    )
    .await
    .unwrap();
    report(&h, id("web"), vec![outbound("evil.example:80", None, 1)], 0)
        .await
        .unwrap();
    let before = h.snapshot();
    stop(h, thread).await;

    let (h, thread) = start(dir.path());
    let after = h.snapshot();
    assert_eq!(
        after.modes.of("default"),
        Mode::Enforcement { alert_only: true }
    );
    assert_eq!(after.alerts, before.alerts);
    assert_eq!(after.graph.edges, before.graph.edges);
    assert_eq!(after.counts.baseline_edges, 1);
    // Alert-only: flagged, not blocked, and the policy does not enforce.
    assert_eq!(after.alerts[0].action, Action::Flagged);
    let policy = h.register(reg(id("web"), vec![], None)).await.unwrap();
    assert!(!policy.borrow().enforce);
    stop(h, thread).await;
}

#[tokio::test]
async fn inbound_calls_from_the_internet_are_edges_and_meshed_ones_are_not_double_counted() {
    let dir = tempfile::tempdir().unwrap();
    let (h, thread) = start(dir.path());
    let mut from_internet = outbound("web:80", None, 4);
    from_internet.direction = Direction::Inbound;
    let mut from_peer = from_internet.clone();
    from_peer.source = Some(id("api"));
    report(&h, id("web"), vec![from_internet, from_peer], 0)
        .await
        .unwrap();
    let snap = h.snapshot();
    assert_eq!(snap.graph.edges.len(), 1);
    assert_eq!(&*snap.graph.edges[0].source, "internet");
    assert_eq!(snap.graph.edges[0].requests, 4);
    stop(h, thread).await;
}

#[tokio::test]
async fn connected_sidecars_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let (h, thread) = start(dir.path());
    h.register(reg(id("web"), vec![], None)).await.unwrap();
    h.register(reg(id("db"), vec![], None)).await.unwrap();
    assert_eq!(h.snapshot().counts.sidecars_connected, 2);
    let sidecars = |name: &str| {
        let snap = h.snapshot();
        let node = snap.graph.nodes.iter().find(|n| n.name == name).cloned();
        node.map(|n| n.sidecars)
    };
    let pypi = || vec![outbound("pypi.org:443", None, 1)];
    report(&h, id("web"), pypi(), 0).await.unwrap();
    assert_eq!(sidecars("db"), Some(1));
    h.disconnect(id("db"));
    // A report on a known edge (which changes no node view itself)
    // orders the disconnect before the read: the node views kept from
    // the last snapshot must not be shown.
    report(&h, id("web"), pypi(), 0).await.unwrap();
    assert_eq!(h.snapshot().counts.sidecars_connected, 1);
    assert_eq!(sidecars("db"), Some(0));
    assert_eq!(sidecars("web"), Some(1));
    stop(h, thread).await;
}

#[tokio::test]
async fn stratum_is_flagged_while_learning_and_never_learned() {
    let dir = tempfile::tempdir().unwrap();
    let (h, thread) = start(dir.path());
    let mut miner = outbound("pool.example:443", None, 1);
    miner.protocol = crate::model::Protocol::Stratum;
    miner.method = String::new();
    report(&h, id("web"), vec![miner.clone()], 0).await.unwrap();
    let snap = h.snapshot();
    assert_eq!(snap.alerts.len(), 1);
    assert_eq!(snap.alerts[0].kind, AlertKind::MiningProtocol);
    assert_eq!(snap.alerts[0].action, Action::Flagged);
    let edge = &snap.graph.edges[0];
    assert!(!edge.in_baseline && edge.violation);
    assert_eq!(edge.protocols[..], ["stratum"]);

    h.set_mode(None, ENFORCE).await.unwrap();
    miner.denied = 1;
    report(&h, id("web"), vec![miner], 0).await.unwrap();
    let snap = h.snapshot();
    let alert = snap
        .alerts
        .iter()
        .find(|a| a.kind == AlertKind::MiningProtocol)
        .unwrap();
    assert_eq!(
        (alert.count, alert.denied, alert.action),
        (2, 1, Action::Blocked),
        "the latest was denied; one got through while learning"
    );
    // The same edge is also unknown egress: it was never learned.
    assert!(
        snap.alerts
            .iter()
            .any(|a| a.kind == AlertKind::UnknownEgress)
    );
    stop(h, thread).await;
}

#[tokio::test]
async fn a_batch_resent_after_a_lost_ack_is_applied_once_even_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let (h, thread) = start(dir.path());
    h.report(pypi_batch(1)).await.unwrap();
    h.report(pypi_batch(1)).await.unwrap();
    assert_eq!(h.snapshot().graph.edges[0].requests, 5);
    stop(h, thread).await;
    let (h, thread) = start(dir.path());
    h.report(pypi_batch(1)).await.unwrap();
    assert_eq!(
        h.snapshot().graph.edges[0].requests,
        5,
        "still once after a restart"
    );
    h.report(pypi_batch(2)).await.unwrap();
    assert_eq!(h.snapshot().graph.edges[0].requests, 10);
    stop(h, thread).await;
}

#[tokio::test]
async fn a_failed_write_leaves_memory_equal_to_disk_and_the_resend_counts_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let fail = store.fail_switch();
    let (h, thread) = spawn(store, &mut prometheus_client::registry::Registry::default()).unwrap();
    let batch = |seq| Batch {
        reporter: id("web"),
        instance: "9c1d".into(),
        seq,
        observations: vec![outbound("pypi.org:443", None, 5)],
        dropped: 0,
    };
    h.report(batch(1)).await.unwrap();
    fail.store(true, std::sync::atomic::Ordering::Relaxed);
    let err = h.report(batch(2)).await.unwrap_err();
    assert!(err.to_string().contains("could not store"), "{err}");
    assert_eq!(
        h.snapshot().graph.edges[0].requests,
        5,
        "memory did not run ahead of disk"
    );
    h.report(batch(2)).await.unwrap();
    assert_eq!(
        h.snapshot().graph.edges[0].requests,
        10,
        "the re-sent batch counts once"
    );
    stop(h, thread).await;
}

#[tokio::test]
async fn an_impersonation_is_alerted_in_every_mode_and_never_learned() {
    let dir = tempfile::tempdir().unwrap();
    let (h, thread) = start(dir.path());
    h.register(reg(id("api"), vec![], None)).await.unwrap();
    let mut spoofed = outbound("", None, 2);
    spoofed.direction = Direction::Inbound;
    spoofed.claimed_source = Some(id("web"));
    report(&h, id("api"), vec![spoofed.clone()], 0)
        .await
        .unwrap();
    let snap = h.snapshot();
    let alert = snap
        .alerts
        .iter()
        .find(|a| a.kind == AlertKind::SpoofedSource)
        .expect("a spoofed_source alert while learning");
    assert_eq!(
        (
            alert.workload.as_str(),
            alert.destination.as_str(),
            alert.action
        ),
        ("api", "default/web", Action::Flagged),
        "it names the victim and the claimed identity; it got through"
    );
    let edge = snap
        .graph
        .edges
        .iter()
        .find(|e| &*e.source == "internet")
        .unwrap();
    assert!(!edge.in_baseline && edge.violation, "not learned: {edge:?}");

    h.set_mode(None, ENFORCE).await.unwrap();
    spoofed.denied = 2;
    report(&h, id("api"), vec![spoofed], 0).await.unwrap();
    let snap = h.snapshot();
    let alert = snap
        .alerts
        .iter()
        .find(|a| a.kind == AlertKind::SpoofedSource)
        .unwrap();
    assert_eq!(
        (alert.count, alert.denied, alert.action),
        (4, 2, Action::Blocked)
    );
    stop(h, thread).await;
}

#[tokio::test]
async fn a_lie_about_the_destination_is_alerted_in_every_mode_and_never_learned() {
    let dir = tempfile::tempdir().unwrap();
    let (h, thread) = start(dir.path());
    h.register(reg(id("web"), vec![], None)).await.unwrap();
    // `Host: pypi.test` sent to an address pypi.test does not resolve to:
    // the sidecar judged it by the address and reported the name.
    let mut lie = outbound("10.66.0.9:8000", Some("10.66.0.9:8000"), 2);
    lie.claimed_authority = Some("pypi.test:8000".into());
    report(&h, id("web"), vec![lie.clone()], 0).await.unwrap();
    let snap = h.snapshot();
    let alert = snap
        .alerts
        .iter()
        .find(|a| a.kind == AlertKind::NameMismatch)
        .expect("a name_mismatch alert while learning");
    assert_eq!(
        (
            alert.destination.as_str(),
            alert.claimed.as_deref(),
            alert.action
        ),
        ("10.66.0.9:8000", Some("pypi.test:8000"), Action::Flagged),
        "it names the real address and the name given; it got through"
    );
    let edge = &snap.graph.edges[0];
    assert_eq!(&*edge.target, "external:10.66.0.9:8000");
    assert!(!edge.in_baseline && edge.violation, "not learned: {edge:?}");

    h.set_mode(None, ENFORCE).await.unwrap();
    lie.denied = 2;
    report(&h, id("web"), vec![lie], 0).await.unwrap();
    let snap = h.snapshot();
    let alert = snap
        .alerts
        .iter()
        .find(|a| a.kind == AlertKind::NameMismatch)
        .unwrap();
    assert_eq!(
        (alert.count, alert.denied, alert.action),
        (4, 2, Action::Blocked)
    );
    let json = serde_json::to_value(alert).unwrap();
    assert_eq!(json["kind"], "name_mismatch");
    assert_eq!(json["claimed"], "pypi.test:8000");
    stop(h, thread).await;
}

#[tokio::test]
async fn a_flood_of_unique_destinations_is_bounded_and_alerted_once() {
    let dir = tempfile::tempdir().unwrap();
    let (h, thread) = start(dir.path());
    h.register(reg(id("web"), vec![], None)).await.unwrap();
    h.set_mode(None, ENFORCE).await.unwrap();
    let flood = |from: usize, to: usize| -> Vec<Observation> {
        (from..to)
            .map(|i| {
                let mut o = outbound(&format!("x{i}.pool.test:3333"), None, 1);
                o.denied = 1;
                o
            })
            .collect()
    };
    let total = crate::engine::MAX_PEERS + 500;
    for chunk in (0..total).step_by(250) {
        report(&h, id("web"), flood(chunk, chunk + 250), 0)
            .await
            .unwrap();
    }
    let snap = h.snapshot();
    let from_web = snap
        .graph
        .edges
        .iter()
        .filter(|e| &*e.source == "workload:default/web")
        .count();
    assert_eq!(
        from_web,
        crate::engine::MAX_PEERS + 1,
        "the cap plus the overflow"
    );
    let overflow = snap
        .graph
        .edges
        .iter()
        .find(|e| *e.target == format!("external:{OVERFLOW}"))
        .expect("an overflow edge");
    assert_eq!(
        (overflow.requests, overflow.denied),
        (500, 500),
        "none lost"
    );
    assert!(!overflow.in_baseline);
    let limits: Vec<_> = snap
        .alerts
        .iter()
        .filter(|a| a.kind == AlertKind::LimitReached)
        .collect();
    assert_eq!(limits.len(), 1, "{limits:?}");
    assert_eq!(limits[0].destination, OVERFLOW);
    let egress = snap
        .alerts
        .iter()
        .filter(|a| a.kind == AlertKind::UnknownEgress)
        .count();
    assert_eq!(egress, crate::engine::MAX_PEERS + 1, "alerts aggregate too");
    // A destination it had before the cap is still counted as itself.
    report(&h, id("web"), flood(0, 1), 0).await.unwrap();
    let snap = h.snapshot();
    let edge = |target: &str| {
        let edge = (snap.graph.edges.iter()).find(|e| &*e.target == target);
        edge.map(|e| e.requests)
    };
    assert_eq!(edge("external:x0.pool.test:3333"), Some(2), "its own edge");
    assert_eq!(edge(&format!("external:{OVERFLOW}")), Some(500));
    stop(h, thread).await;
}

#[tokio::test]
async fn quarantine_reaches_the_policy_survives_a_restart_and_is_audited() {
    let dir = tempfile::tempdir().unwrap();
    let (h, thread) = start(dir.path());
    let mut policy = h.register(reg(id("nb"), vec![], None)).await.unwrap();
    assert!(!policy.borrow_and_update().quarantined);
    let unknown = h.quarantine(id("ghost"), true, "admin").await;
    assert!(
        matches!(
            unknown,
            Err(EngineError::Refused(ResponseError::UnknownWorkload(_)))
        ),
        "{unknown:?}"
    );
    assert!(h.quarantine(id("nb"), true, "admin").await.unwrap());
    assert!(
        !h.quarantine(id("nb"), true, "admin").await.unwrap(),
        "idempotent"
    );
    assert!(policy.has_changed().unwrap());
    assert!(
        policy.borrow_and_update().quarantined,
        "in force once it returns"
    );
    assert!(h.snapshot().quarantined.contains_key("default/nb"));
    stop(h, thread).await;

    let (h, thread) = start(dir.path());
    let policy = h.register(reg(id("nb"), vec![], None)).await.unwrap();
    assert!(
        policy.borrow().quarantined,
        "a restart keeps the quarantine"
    );
    assert!(h.quarantine(id("nb"), false, "admin").await.unwrap());
    assert!(!h.snapshot().quarantined.contains_key("default/nb"));
    h.set_mode_as(None, ENFORCE, "admin").await.unwrap();
    let audit = h.audit().await.unwrap();
    let actions: Vec<_> = audit
        .iter()
        .map(|e| (e.action.as_str(), e.target.as_str()))
        .collect();
    assert_eq!(
        actions,
        [
            ("quarantine", "default/nb"),
            ("release", "default/nb"),
            ("mode", "*")
        ]
    );
    assert_eq!(
        (audit[2].old.as_str(), audit[2].new.as_str()),
        ("learning", "enforcement")
    );
    assert!(audit.windows(2).all(|w| w[0].seq < w[1].seq));
    stop(h, thread).await;
}

#[tokio::test]
async fn an_auto_quarantine_kind_quarantines_the_workload_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        auto_quarantine: [AlertKind::MiningProtocol].into(),
        ..Options::default()
    };
    let (h, thread) = start_with(dir.path(), options);
    let mut policy = h.register(reg(id("nb"), vec![], None)).await.unwrap();
    report(&h, id("nb"), vec![outbound("pypi.org:443", None, 1)], 0)
        .await
        .unwrap();
    assert!(
        !policy.borrow_and_update().quarantined,
        "normal traffic: nothing"
    );
    let mut miner = outbound("pool.example:3333", None, 1);
    miner.protocol = crate::model::Protocol::Stratum;
    report(&h, id("nb"), vec![miner], 0).await.unwrap();
    assert!(policy.borrow_and_update().quarantined);
    let q = &h.snapshot().quarantined["default/nb"];
    assert_eq!(q.actor, "auto-quarantine");
    assert!(q.reason.starts_with("mining_protocol alert "), "{q:?}");
    stop(h, thread).await;
}

#[tokio::test]
async fn an_accepted_alert_is_normal_from_then_on() {
    let dir = tempfile::tempdir().unwrap();
    let (h, thread) = start(dir.path());
    let mut policy = h.register(reg(id("web"), vec![], None)).await.unwrap();
    h.set_mode(None, ENFORCE).await.unwrap();
    report(
        &h,
        id("web"),
        vec![outbound("files.example:443", None, 1)],
        0,
    )
    .await
    .unwrap();
    let alert = h.snapshot().alerts[0].clone();
    assert_eq!(alert.kind, AlertKind::UnknownEgress);
    policy.borrow_and_update();
    h.accept(alert.id.clone(), "admin").await.unwrap();
    assert!(
        policy
            .borrow_and_update()
            .allowed_authorities
            .contains("files.example:443"),
        "the sidecar allows it at once"
    );
    let before = h.snapshot().alerts[0].count;
    report(
        &h,
        id("web"),
        vec![outbound("files.example:443", None, 1)],
        0,
    )
    .await
    .unwrap();
    assert_eq!(h.snapshot().alerts[0].count, before, "no new violation");
    let wrong = h.accept("0000000000000000".into(), "admin").await;
    assert!(matches!(
        wrong,
        Err(EngineError::Refused(ResponseError::NoAlert(_)))
    ));
    let audit = h.audit().await.unwrap();
    assert_eq!(audit.last().unwrap().action, "accept");
    assert_eq!(audit.last().unwrap().target, alert.id);
    stop(h, thread).await;
}

#[tokio::test]
async fn an_exported_baseline_imports_into_an_empty_controller() {
    let dir = tempfile::tempdir().unwrap();
    let (h, thread) = start(dir.path());
    h.register(reg(id("web"), vec![], None)).await.unwrap();
    let mut get = outbound("api.example:443", None, 1);
    get.path = "/v1/{id}".into();
    report(&h, id("web"), vec![get], 0).await.unwrap();
    let exported = h.export().await.unwrap();
    stop(h, thread).await;

    let other = tempfile::tempdir().unwrap();
    let (h, thread) = start(other.path());
    let sizes = h
        .import(exported.clone(), None, false, "admin")
        .await
        .unwrap();
    assert_eq!(sizes, ((0, 0), (1, 1)));
    stop(h, thread).await;
    let (h, thread) = start(other.path());
    assert_eq!(
        h.export().await.unwrap(),
        exported,
        "durable, endpoints too"
    );
    stop(h, thread).await;
}

#[tokio::test]
async fn stability_and_a_dry_run_come_from_what_was_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (h, thread) = start(dir.path());
    h.register(reg(id("web"), vec![], None)).await.unwrap();
    report(&h, id("web"), vec![outbound("pypi.org:443", None, 3)], 0)
        .await
        .unwrap();
    let stability = h.snapshot().stability["default"].clone();
    assert_eq!(
        stability.learned_last_hour, 3,
        "the workload, its edge and endpoint"
    );
    assert!(stability.summary.starts_with("growing"), "{stability:?}");
    // While learning, a miner's pool is learned too: the dry run shows
    // nothing would have been blocked. Traffic after it would be.
    report(
        &h,
        id("web"),
        vec![outbound("pool.example:3333", None, 2)],
        0,
    )
    .await
    .unwrap();
    let dry = h.simulate(Some("default".into()), 3600).await.unwrap();
    assert_eq!(dry.observations, 2);
    assert!(
        dry.results.is_empty(),
        "all of it is in the baseline now: {dry:?}"
    );
    h.set_mode(None, ENFORCE).await.unwrap();
    report(&h, id("web"), vec![outbound("new.example:443", None, 1)], 0)
        .await
        .unwrap();
    let dry = h.simulate(None, 3600).await.unwrap();
    assert_eq!(dry.results.len(), 1, "{dry:?}");
    assert_eq!(dry.results[0].destination, "new.example:443");
    assert_eq!(dry.results[0].action, Action::Blocked);
    assert!(
        h.simulate(Some("other".into()), 3600)
            .await
            .unwrap()
            .results
            .is_empty()
    );
    stop(h, thread).await;
    let (h, thread) = start(dir.path());
    assert_eq!(
        h.snapshot().stability["default"].learned_last_hour,
        5,
        "growth survives a restart"
    );
    let dry = h.simulate(None, 3600).await.unwrap();
    assert_eq!(
        dry.observations, 3,
        "the history survives a restart: {dry:?}"
    );
    assert_eq!(dry.results.len(), 1, "{dry:?}");
    stop(h, thread).await;
}

#[tokio::test]
async fn a_deployment_seen_by_the_kubernetes_api_is_judged_before_its_sidecar_runs() {
    use crate::inventory::Discovered;
    let dir = tempfile::tempdir().unwrap();
    let (h, thread) = start(dir.path());
    let jupyter = |name: &str, ip: &str, profile: &str| Discovered {
        id: id(name),
        pod_ips: vec![ip.parse().unwrap()],
        service_addrs: vec![],
        tenant: "alice".into(),
        profile: profile.into(),
    };
    h.discovered(vec![jupyter("nb-alice", "10.1.0.5", "jupyter")])
        .await
        .unwrap();
    h.set_mode(None, ENFORCE).await.unwrap();
    // Another notebook of the known profile: not a new deployment.
    h.discovered(vec![jupyter("nb-bob", "10.1.0.6", "jupyter")])
        .await
        .unwrap();
    assert!(h.snapshot().alerts.is_empty());
    // A miner's deployment: alerted from the API alone, with its tenant.
    h.discovered(vec![jupyter("xmrig", "10.1.0.9", "xmrig")])
        .await
        .unwrap();
    let alerts = h.snapshot().alerts.clone();
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].kind, AlertKind::NewDeployment);
    assert_eq!(
        (alerts[0].workload.as_str(), alerts[0].tenant.as_str()),
        ("xmrig", "alice")
    );
    // A pod IP names its workload for any port, and proves its calls.
    h.register(reg(id("web"), vec![], None)).await.unwrap();
    let spoofed = |h: &Handle| {
        h.snapshot()
            .alerts
            .iter()
            .any(|a| a.kind == AlertKind::SpoofedSource)
    };
    report(&h, id("web"), vec![claim("nb-bob", "10.1.0.6")], 0)
        .await
        .unwrap();
    assert!(!spoofed(&h), "nb-bob's pod IP proves its call");
    report(&h, id("web"), vec![claim("nb-bob", "10.1.0.9")], 0)
        .await
        .unwrap();
    assert!(spoofed(&h), "xmrig's pod IP does not");
    // Seen again (a watch resync): counted once.
    h.discovered(vec![jupyter("xmrig", "10.1.0.9", "xmrig")])
        .await
        .unwrap();
    assert_eq!(h.snapshot().alerts[0].count, 1);
    stop(h, thread).await;
}

/// A controller's pace: snapshots may lag.
fn paced() -> Options {
    Options {
        publish_every: std::time::Duration::from_millis(50),
        ..Options::default()
    }
}

/// Waits (bounded, for liveness only) until `done` holds.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..2000 {
        if done() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    panic!("{what} never happened");
}

#[tokio::test]
async fn reports_sent_together_are_acknowledged_durable_and_shown_within_the_pace() {
    let dir = tempfile::tempdir().unwrap();
    let (h, thread) = spawn_with(
        Store::open(dir.path()).unwrap(),
        &mut prometheus_client::registry::Registry::default(),
        paced(),
    )
    .unwrap();
    let sends = (0..40).map(|i| {
        let reporter = id(&format!("nb-{}", i % 4));
        report(&h, reporter, vec![outbound("pypi.org:443", None, 1)], 0)
    });
    for result in futures_util::future::join_all(sends).await {
        result.unwrap();
    }
    let total = |h: &Handle| {
        h.snapshot()
            .graph
            .edges
            .iter()
            .map(|e| e.requests)
            .sum::<u64>()
    };
    eventually("the snapshot showing all 40 reports", || total(&h) == 40).await;
    assert_eq!(h.snapshot().graph.edges.len(), 4);
    stop(h, thread).await;
    let (h, thread) = start(dir.path());
    assert_eq!(total(&h), 40, "every acknowledged report was stored");
    stop(h, thread).await;
}

#[tokio::test]
async fn a_registering_sidecar_changes_only_the_policies_of_its_peers() {
    let dir = tempfile::tempdir().unwrap();
    let (h, thread) = start(dir.path());
    let addr = |i: u8| SocketAddr::from(([10, 0, 0, i], 4143));
    let mut web = h
        .register(reg(id("web"), vec![addr(1)], None))
        .await
        .unwrap();
    let mut db = h
        .register(reg(id("db"), vec![addr(2)], None))
        .await
        .unwrap();
    h.register(reg(id("nb-1"), vec![addr(3)], None))
        .await
        .unwrap();
    let to_db = || vec![outbound("db:4143", Some("10.0.0.2:4143"), 1)];
    report(&h, id("web"), to_db(), 0).await.unwrap();
    report(&h, id("nb-1"), to_db(), 0).await.unwrap();
    let ips = db.borrow_and_update().source_ips.clone();
    assert!(
        ips["default/web"].contains(&addr(1).ip()) && ips.len() == 2,
        "db's callers, learned: {ips:?}"
    );
    assert!(
        web.borrow_and_update().source_ips.is_empty(),
        "no one calls web"
    );
    web.mark_unchanged();
    for i in 4..=20 {
        h.register(reg(id(&format!("nb-{i}")), vec![addr(i)], None))
            .await
            .unwrap();
    }
    assert!(
        !web.has_changed().unwrap() && !db.has_changed().unwrap(),
        "new workloads that call no one change no one's policy"
    );
    // nb-1, a caller of db, comes back at another IP: db learns it at once.
    h.register(reg(id("nb-1"), vec![addr(33)], None))
        .await
        .unwrap();
    assert!(db.has_changed().unwrap() && !web.has_changed().unwrap());
    assert!(db.borrow_and_update().source_ips["default/nb-1"].contains(&addr(33).ip()));
    // A new pod takes that address (a reused IP): nb-1 no longer calls from
    // it, and db, which names nb-1, learns so at once.
    h.register(reg(id("nb-x"), vec![addr(33)], None))
        .await
        .unwrap();
    assert!(db.has_changed().unwrap() && !web.has_changed().unwrap());
    let ips = db.borrow_and_update().source_ips["default/nb-1"].clone();
    assert!(
        !ips.contains(&addr(33).ip()) && ips.contains(&addr(3).ip()),
        "{ips:?}"
    );
    stop(h, thread).await;
}

#[tokio::test]
async fn registrations_sent_together_are_written_together_and_each_gets_its_policy() {
    let dir = tempfile::tempdir().unwrap();
    let mut registry = prometheus_client::registry::Registry::default();
    let (h, thread) = spawn_with(
        Store::open(dir.path()).unwrap(),
        &mut registry,
        Options::default(),
    )
    .unwrap();
    let ids: Vec<WorkloadId> = (0..64).map(|i| id(&format!("nb-{i}"))).collect();
    let regs = ids.iter().map(|w| h.register(reg(w.clone(), vec![], None)));
    for policy in futures_util::future::join_all(regs).await {
        assert!(!policy.unwrap().borrow().enforce);
    }
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    let commits: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("vigil_controller_store_commit_seconds_count "))
        .and_then(|n| n.parse().ok())
        .expect("the commit histogram");
    assert!(
        commits <= 32,
        "64 registrations queued together, {commits} transactions"
    );
    stop(h, thread).await;
    let (h, thread) = start(dir.path());
    assert_eq!(
        h.snapshot().counts.workloads,
        64,
        "every registration was stored"
    );
    stop(h, thread).await;
}

#[tokio::test]
async fn a_claim_the_sidecar_could_not_check_is_checked_by_the_controller() {
    let dir = tempfile::tempdir().unwrap();
    let (h, thread) = start(dir.path());
    h.register(reg(id("api"), vec![], None)).await.unwrap();
    h.register(reg(id("web"), vec![], Some("10.0.0.5".parse().unwrap())))
        .await
        .unwrap();
    report(
        &h,
        id("api"),
        vec![
            claim("web", "10.0.0.5"),
            claim("web", "10.0.0.66"),
            claim("ghost", "10.0.0.66"),
        ],
        0,
    )
    .await
    .unwrap();
    let snap = h.snapshot();
    let edges: Vec<_> = snap
        .graph
        .edges
        .iter()
        .map(|e| (&*e.source, e.requests))
        .collect();
    assert_eq!(
        edges,
        [("internet", 2)],
        "web from another IP, and a workload the controller does not know, are the internet; web from its own IP is a meshed call (its own report draws it)"
    );
    let mut spoofed: Vec<_> = snap
        .alerts
        .iter()
        .filter(|a| a.kind == AlertKind::SpoofedSource)
        .map(|a| (a.destination.as_str(), a.count))
        .collect();
    spoofed.sort_unstable();
    assert_eq!(spoofed, [("default/ghost", 1), ("default/web", 1)]);
    let internet = snap.graph.edges.iter().find(|e| &*e.source == "internet");
    assert!(
        !internet.unwrap().in_baseline,
        "an impersonation is never learned"
    );
    stop(h, thread).await;
}

/// A read (an export, as every admission makes, an audit) or a sidecar's
/// disconnection builds no edge view: the next snapshot shares them all
/// with the last (`vigil_controller_snapshot_edge_views_built` stays); a
/// report builds the view of the edge it touched alone.
#[tokio::test]
async fn reads_build_no_edge_view() {
    let dir = tempfile::tempdir().unwrap();
    let mut registry = prometheus_client::registry::Registry::default();
    let store = Store::open(dir.path()).unwrap();
    let (h, thread) = spawn_with(store, &mut registry, Options::default()).unwrap();
    let built = || {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("vigil_controller_snapshot_edge_views_built_total "))
            .and_then(|n| n.parse::<u64>().ok())
            .expect("the counter")
    };
    h.register(reg(id("web"), vec![], None)).await.unwrap();
    let traffic = vec![
        outbound("pypi.org:443", None, 2),
        outbound("db:7001", Some("127.0.0.1:7001"), 1),
    ];
    report(&h, id("web"), traffic, 0).await.unwrap();
    let (before, built_before) = (h.snapshot(), built());
    assert_eq!(before.graph.edges.len(), 2);
    h.export().await.unwrap();
    h.audit().await.unwrap();
    h.disconnect(id("web"));
    h.export().await.unwrap();
    let after = h.snapshot();
    assert!(
        !Arc::ptr_eq(&before, &after),
        "a new snapshot was published"
    );
    assert_eq!(after.counts.sidecars_connected, 0);
    assert_eq!(built(), built_before, "no view built for reads");
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    let snapshots: u64 = (text.lines())
        .find_map(|l| l.strip_prefix("vigil_controller_snapshot_seconds_count "))
        .and_then(|n| n.parse().ok())
        .expect("the snapshot histogram");
    assert!(
        snapshots >= 4,
        "each step published a snapshot, timed: {snapshots}"
    );
    for (a, b) in before.graph.edges.iter().zip(&after.graph.edges) {
        assert!(Arc::ptr_eq(a, b), "{} -> {} shared", a.source, a.target);
    }
    report(&h, id("web"), vec![outbound("pypi.org:443", None, 1)], 0)
        .await
        .unwrap();
    assert_eq!(built(), built_before + 1, "the touched edge alone");
    let pypi = h
        .snapshot()
        .graph
        .edges
        .iter()
        .find(|e| e.target.contains("pypi"))
        .unwrap()
        .clone();
    assert_eq!(pypi.requests, 3);
    stop(h, thread).await;
}

/// How many store transactions `registry`'s engine committed.
fn commits(registry: &prometheus_client::registry::Registry) -> u64 {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("vigil_controller_store_commit_seconds_count "))
        .and_then(|n| n.parse().ok())
        .expect("the commit histogram")
}

/// A round waits for company only after a round that staged several
/// writes (they come together), and never with no linger.
#[test]
fn a_round_lingers_only_when_reports_come_together() {
    use super::group::linger_deadline;
    let start = std::time::Instant::now();
    let ms = std::time::Duration::from_millis;
    let cases = [
        ("crowded", true, ms(5), Some(start + ms(5))),
        ("alone: written at once", false, ms(5), None),
        ("no linger", true, ms(0), None),
        ("neither", false, ms(0), None),
    ];
    for (what, crowded, linger, want) in cases {
        assert_eq!(linger_deadline(start, crowded, linger), want, "{what}");
    }
}

/// A report that comes alone is written and acknowledged at once, even
/// with an hour's linger: the wait is for reports that come together, not
/// for a lone one.
#[tokio::test]
async fn a_lone_report_does_not_linger() {
    let dir = tempfile::tempdir().unwrap();
    let mut registry = prometheus_client::registry::Registry::default();
    let options = Options {
        commit_linger: std::time::Duration::from_secs(3600),
        ..Options::default()
    };
    let (h, thread) = spawn_with(Store::open(dir.path()).unwrap(), &mut registry, options).unwrap();
    let before = commits(&registry);
    for (i, destination) in ["db:5432", "pypi.org:443"].into_iter().enumerate() {
        let ack = report(&h, id("web"), vec![outbound(destination, None, 1)], 0);
        tokio::time::timeout(std::time::Duration::from_secs(30), ack)
            .await
            .expect("acknowledged without waiting for the linger")
            .unwrap();
        assert_eq!(
            commits(&registry) - before,
            i as u64 + 1,
            "one transaction each"
        );
    }
    assert_eq!(h.snapshot().counts.edges, 2);
    stop(h, thread).await;
}

/// A person's command never waits for a linger: it writes the reports
/// staged before it and takes effect at once, and the report queued
/// before it is acknowledged with it.
#[tokio::test]
async fn a_command_ends_the_linger() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        commit_linger: std::time::Duration::from_secs(3600),
        ..Options::default()
    };
    let (h, thread) = start_with(dir.path(), options);
    {
        let ack = report(&h, id("web"), vec![outbound("db:5432", None, 1)], 0);
        tokio::pin!(ack);
        // Queued (the first poll sends it), not yet acknowledged.
        assert!(futures_util::poll!(&mut ack).is_pending());
        let within = std::time::Duration::from_secs(30);
        tokio::time::timeout(within, h.set_mode(None, ENFORCE))
            .await
            .expect("the mode change waits for no linger")
            .unwrap();
        tokio::time::timeout(within, ack)
            .await
            .expect("the report staged before it is written with it")
            .unwrap();
    }
    assert_eq!(h.snapshot().counts.edges, 1);
    stop(h, thread).await;
}

/// A snapshot that publication replaced is freed once no reader holds it
/// (by the `vigil-reaper` thread, off the engine's): nothing keeps the
/// graph's old views alive.
#[tokio::test]
async fn replaced_snapshots_are_freed() {
    let dir = tempfile::tempdir().unwrap();
    let (h, thread) = start(dir.path());
    h.report(pypi_batch(1)).await.unwrap();
    let first = Arc::downgrade(&h.snapshot());
    h.report(pypi_batch(2)).await.unwrap();
    assert_eq!(h.snapshot().graph.edges[0].requests, 10);
    for _ in 0..400 {
        if first.strong_count() == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(
        first.strong_count(),
        0,
        "the replaced snapshot is still held"
    );
    stop(h, thread).await;
}

/// Whoever holds a sidecar token (in Kubeflow, anyone who may read the
/// namespace's Secrets, the notebook's own service account among them)
/// cannot open an address to a workload's callers by advertising it as a
/// baseline peer's inbound address: a registration's addresses must be the
/// IP it came from, or a pod IP of the workload.
#[tokio::test]
async fn a_registration_cannot_advertise_an_address_it_does_not_come_from() {
    let dir = tempfile::tempdir().unwrap();
    let (h, thread) = start(dir.path());
    let db_addr: SocketAddr = "10.0.0.7:5432".parse().unwrap();
    let pool: SocketAddr = "203.0.113.5:443".parse().unwrap();
    let mut nb = h
        .register(reg(id("nb"), vec![], "10.0.0.9".parse().ok()))
        .await
        .unwrap();
    h.register(reg(id("db"), vec![db_addr], None))
        .await
        .unwrap();
    report(
        &h,
        id("nb"),
        vec![outbound("db:5432", Some("10.0.0.7:5432"), 1)],
        0,
    )
    .await
    .unwrap();
    h.set_mode(None, ENFORCE).await.unwrap();
    assert!(nb.borrow_and_update().allowed_addrs.contains(&db_addr));
    // The notebook registers as db, from its own IP, advertising the pool.
    h.register(reg(id("db"), vec![pool], "10.0.0.9".parse().ok()))
        .await
        .unwrap();
    let policy = nb.borrow_and_update().clone();
    assert!(
        !policy.allowed_addrs.contains(&pool),
        "the pool was opened to nb: {:?}",
        policy.allowed_addrs
    );
    assert!(policy.allowed_addrs.contains(&db_addr));
    stop(h, thread).await;
}
