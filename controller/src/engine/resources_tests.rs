use super::*;
use crate::engine::{Handle, Registration, spawn};
use crate::model::{Observation, outbound};
use crate::resource::NANOS_PER_MILLI;
use crate::store::Store;

fn notebook() -> WorkloadId {
    WorkloadId::new("lab", "notebook").unwrap()
}

fn start(dir: &std::path::Path) -> (Handle, std::thread::JoinHandle<()>) {
    spawn(
        Store::open(dir).unwrap(),
        &mut prometheus_client::registry::Registry::default(),
    )
    .unwrap()
}

async fn stop(handle: Handle, thread: std::thread::JoinHandle<()>) {
    drop(handle);
    tokio::task::spawn_blocking(move || thread.join().unwrap())
        .await
        .unwrap();
}

fn poll(pods: &[(&str, u64)]) -> Vec<Sample> {
    pods.iter()
        .map(|(pod, millicores)| Sample {
            workload: notebook(),
            pod: (*pod).into(),
            cpu_nanos: millicores * NANOS_PER_MILLI,
            at: String::new(),
        })
        .collect()
}

const RULE: Rule = Rule {
    factor: 2.0,
    floor_m: 500.0,
    samples: 2,
    min_samples: 4,
};

fn spikes(h: &Handle) -> Vec<crate::model::Alert> {
    h.snapshot()
        .alerts
        .iter()
        .filter(|a| a.kind == AlertKind::ResourceSpike)
        .cloned()
        .collect()
}

#[tokio::test]
async fn a_cpu_spike_raises_one_alert_with_the_egress_beside_it_and_the_baseline_survives_a_restart()
 {
    let dir = tempfile::tempdir().unwrap();
    let (h, thread) = start(dir.path());
    let _policy = h
        .register(Registration {
            id: notebook(),
            profile: "jupyter/scipy-notebook".into(),
            version: "t".into(),
            ..Registration::default()
        })
        .await
        .unwrap();
    // Learning: two pods of the profile, quiet.
    for _ in 0..2 {
        let seen = h
            .resource_samples(poll(&[("notebook-0", 100), ("notebook-1", 140)]), RULE)
            .await
            .unwrap();
        assert_eq!((seen.judged, seen.learned, seen.spikes), (2, 2, 0));
    }
    h.set_mode(Some("lab".into()), Mode::Enforcement { alert_only: false })
        .await
        .unwrap();
    // Its egress, as its sidecar reports it.
    let mining = Observation {
        bytes_in: 48_000,
        ..outbound("pool.example:443", None, 3)
    };
    h.report(crate::model::Batch {
        reporter: notebook(),
        instance: String::new(),
        seq: 0,
        observations: vec![mining, outbound("pypi.org:443", None, 1)],
        dropped: 0,
    })
    .await
    .unwrap();
    // One pod spikes: one sample is nothing, two are a spike, more are
    // the same spike; the quiet pod is judged and not learned.
    let mut raised = 0;
    for _ in 0..4 {
        let seen = h
            .resource_samples(poll(&[("notebook-0", 2500), ("notebook-1", 130)]), RULE)
            .await
            .unwrap();
        assert_eq!(seen.learned, 0, "enforcement never learns");
        raised += seen.spikes;
    }
    assert_eq!(raised, 1);
    let alerts = spikes(&h);
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let alert = &alerts[0];
    assert_eq!(alert.destination, "pod:notebook-0");
    assert_eq!((alert.count, alert.action), (1, Action::Flagged));
    let r = alert.evidence.resource.as_ref().expect("the CPU evidence");
    assert_eq!(r.profile, "lab/jupyter.scipy-notebook");
    assert_eq!((r.cpu_millicores, r.samples), (2500, 2));
    // mean 120, deviation (0 + 40 + 20 + 20 / ...): the level is the mean
    // plus twice the deviation, the threshold 500m above it.
    assert!(
        (120..200).contains(&r.baseline_millicores),
        "{}",
        r.baseline_millicores
    );
    assert_eq!(r.threshold_millicores, r.baseline_millicores + 500);
    assert_eq!(r.egress_window_secs, EGRESS_WINDOW_SECS);
    let dests: Vec<(&str, u64, bool)> = r
        .egress
        .iter()
        .map(|e| (e.destination.as_str(), e.bytes_sent, e.violation))
        .collect();
    assert_eq!(
        dests,
        vec![
            ("pool.example:443", 48_000, true),
            ("pypi.org:443", 1, true)
        ]
    );
    assert!(
        alert.explanation.contains("48.0 kB to pool.example:443"),
        "{}",
        alert.explanation
    );
    stop(h, thread).await;

    // The baseline was stored: after a restart, in enforcement (which
    // learns nothing), a spike of the other pod is judged at once.
    let (h, thread) = start(dir.path());
    let mut raised = 0;
    for _ in 0..2 {
        let seen = h
            .resource_samples(poll(&[("notebook-1", 3000)]), RULE)
            .await
            .unwrap();
        raised += seen.spikes;
    }
    assert_eq!(raised, 1);
    assert_eq!(spikes(&h).len(), 2);
    stop(h, thread).await;
}

#[tokio::test]
async fn pods_of_a_profile_never_learned_are_not_judged() {
    let dir = tempfile::tempdir().unwrap();
    let (h, thread) = start(dir.path());
    h.set_mode(None, Mode::Enforcement { alert_only: true })
        .await
        .unwrap();
    for _ in 0..5 {
        let seen = h
            .resource_samples(poll(&[("notebook-0", 9000)]), RULE)
            .await
            .unwrap();
        assert_eq!((seen.judged, seen.learned, seen.spikes), (1, 0, 0));
    }
    assert!(spikes(&h).is_empty());
    stop(h, thread).await;
}
