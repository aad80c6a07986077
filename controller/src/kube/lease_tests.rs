use super::*;

fn held(holder: &str, renewed: &str) -> Record {
    Record {
        holder: holder.into(),
        renewed: renewed.into(),
        transitions: 0,
    }
}

#[test]
fn the_election_as_a_table() {
    let d = Duration::from_secs(15);
    // (now ms, lease read, decision), one replica "b" over time.
    let table: Vec<(i64, Option<Record>, Decision)> = vec![
        (0, None, Decision::Create),
        (
            100,
            Some(held("a", "t1")),
            Decision::Follow { leader: "a".into() },
        ),
        // Renewed by a: the clock restarts, however long it has been.
        (
            14_000,
            Some(held("a", "t2")),
            Decision::Follow { leader: "a".into() },
        ),
        (
            28_000,
            Some(held("a", "t2")),
            Decision::Follow { leader: "a".into() },
        ),
        // Unrenewed for the whole duration on b's clock: taken.
        (29_000, Some(held("a", "t2")), Decision::Take),
        (29_100, Some(held("b", "t3")), Decision::Renew),
        // A released Lease is free at once.
        (30_000, Some(held("", "t3")), Decision::Take),
    ];
    let mut b = Elector::new("b", d);
    for (now, lease, want) in table {
        assert_eq!(b.step(now, lease.as_ref()), want, "at {now}");
    }
}

#[test]
fn a_holder_renews_and_a_late_one_steps_down() {
    let mut a = Elector::new("a", Duration::from_secs(15));
    assert_eq!(a.step(0, Some(&held("a", "t1"))), Decision::Renew);
    assert!(!a.lost(0, 14_999));
    assert!(a.lost(0, 15_000));
}

#[test]
fn a_written_lease_names_the_holder_and_counts_transitions() {
    let d = Duration::from_secs(15);
    let created = written(None, "vigil-controller", "a", d, true);
    let spec = created.spec.clone().unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("a"));
    assert_eq!(spec.lease_duration_seconds, Some(15));
    assert_eq!(spec.lease_transitions, Some(0));
    let taken = written(Some(&created), "vigil-controller", "b", d, true);
    assert_eq!(record(&taken).holder, "b");
    assert_eq!(record(&taken).transitions, 1);
    let renewed = written(Some(&taken), "vigil-controller", "b", d, false);
    assert_eq!(record(&renewed).transitions, 1);
    assert_eq!(
        renewed.spec.unwrap().acquire_time,
        taken.spec.unwrap().acquire_time
    );
}
