use super::*;

#[test]
fn cpu_quantities_read_as_kubernetes_reads_them() {
    let table: &[(&str, u64)] = &[
        // As metrics-server reports them.
        ("9559630n", 9_559_630),
        ("1500000n", 1_500_000),
        ("12u", 12_000),
        ("250m", 250_000_000),
        ("1", 1_000_000_000),
        ("2", 2_000_000_000),
        ("0", 0),
        ("0m", 0),
        ("-0", 0),
        ("+1", 1_000_000_000),
        // Decimals, and what rounds up to a whole nanocore.
        ("0.5", 500_000_000),
        ("1.5", 1_500_000_000),
        (".5", 500_000_000),
        ("1.", 1_000_000_000),
        ("0.1m", 100_000),
        ("1.5n", 2),
        ("0.0000000001", 1),
        // Other suffixes and exponents.
        ("1k", 1_000_000_000_000),
        ("1Ki", 1_024_000_000_000),
        ("2e3", 2_000_000_000_000),
        ("1e-3", 1_000_000),
        ("1E3", 1_000_000_000_000),
        ("1e+2", 100_000_000_000),
        ("1e-20", 1),
        ("00250m", 250_000_000),
    ];
    for (text, nanos) in table {
        assert_eq!(parse_cpu(text), Ok(*nanos), "{text}");
    }
}

#[test]
fn malformed_cpu_quantities_are_errors_that_say_why() {
    let malformed = [
        "m", "1x", "1 m", " 1", "1m ", "1.2.3", ".", "e3", "1e", "1e3.5", "2e3m", "1mi", "1KI",
        "abc", "1,5", "1_000", "0x10", "1e99999", "NaN", "∞",
    ];
    for text in malformed {
        match parse_cpu(text) {
            Err(QuantityError::Malformed { text: t, .. }) => assert_eq!(t, text),
            Err(QuantityError::TooLarge(_)) if text == "1e99999" => panic!("{text}: 5 digits"),
            other => panic!("{text:?}: {other:?}"),
        }
    }
    assert_eq!(parse_cpu(""), Err(QuantityError::Empty));
    assert_eq!(parse_cpu("-1"), Err(QuantityError::Negative("-1".into())));
    assert_eq!(
        parse_cpu("-250m"),
        Err(QuantityError::Negative("-250m".into()))
    );
    for huge in ["1E", "20000000000", "1Ei", "1e30", &"9".repeat(31)] {
        assert_eq!(
            parse_cpu(huge),
            Err(QuantityError::TooLarge(huge.to_owned())),
            "{huge}"
        );
    }
    let message = parse_cpu("12 cores").unwrap_err().to_string();
    assert!(message.contains("\"12 cores\""), "{message}");
    assert!(message.contains("250m"), "{message}");
}

fn learned(samples: &[f64]) -> CpuBaseline {
    let mut b = CpuBaseline::default();
    for s in samples {
        b.learn(*s);
    }
    b
}

#[test]
fn the_baseline_is_the_mean_then_a_moving_average() {
    let b = learned(&[100.0, 200.0, 300.0]);
    assert_eq!(b.samples, 3);
    assert!((b.mean_m - 200.0).abs() < 1e-9, "{b:?}");
    // Distances from the mean so far: 0, |200-100|, |300-150|.
    assert!((b.deviation_m - 250.0 / 3.0).abs() < 1e-9, "{b:?}");
    assert!((b.level_m() - (200.0 + 2.0 * 250.0 / 3.0)).abs() < 1e-9);
    // Past MEMORY samples, old ones fade: a profile that got busier moves.
    let mut b = learned(&vec![100.0; 500]);
    assert!((b.mean_m - 100.0).abs() < 1e-9);
    for _ in 0..300 {
        b.learn(400.0);
    }
    assert!(b.mean_m > 380.0, "{b:?}");
}

fn ready(mean: f64) -> CpuBaseline {
    learned(&[mean; 20])
}

#[test]
fn the_threshold_is_a_factor_or_a_floor_above_the_baseline() {
    let rule = Rule::default();
    // Idle notebooks: the floor decides (2 x 20m is noise).
    assert_eq!(rule.threshold_m(&ready(20.0)), Some(520.0));
    // Busy ones: the factor decides.
    assert_eq!(rule.threshold_m(&ready(1000.0)), Some(2000.0));
    // Too few samples: nothing is judged.
    assert_eq!(rule.threshold_m(&learned(&[20.0; 19])), None);
    assert_eq!(rule.window(), 12);
    let one = Rule {
        samples: 100,
        ..rule
    };
    assert_eq!(one.window(), MAX_WINDOW);
}

/// Feeds `cpu` samples to one pod; returns the indexes where a spike was
/// raised and what was learned.
fn run(rule: &Rule, baseline: &CpuBaseline, cpu: &[f64], learning: bool) -> (Vec<usize>, usize) {
    let mut pod = PodState::default();
    let (mut spikes, mut learned) = (Vec::new(), 0);
    for (i, c) in cpu.iter().enumerate() {
        let v = judge(rule, baseline, &mut pod, *c, learning);
        if v.spike.is_some() {
            spikes.push(i);
        }
        learned += usize::from(v.learn);
    }
    (spikes, learned)
}

#[test]
fn a_spike_is_n_samples_over_and_raises_once() {
    let rule = Rule::default();
    let base = ready(20.0);
    let table: &[(&str, &[f64], &[usize])] = &[
        ("quiet", &[20.0, 30.0, 10.0, 40.0, 25.0, 20.0], &[]),
        // One sample of a compile, or three, is no spike.
        ("a compile", &[20.0, 3000.0, 20.0, 20.0, 20.0], &[]),
        ("a long compile", &[20.0, 3000.0, 3000.0, 3000.0, 20.0], &[]),
        (
            "a long compile, its mean over the window above",
            &[
                20.0, 20.0, 20.0, 20.0, 20.0, 20.0, 20.0, 20.0, 20.0, 3000.0, 3000.0, 3000.0, 20.0,
                20.0,
            ],
            &[],
        ),
        // Four in a row is, raised once however long it lasts.
        (
            "a miner",
            &[20.0, 2000.0, 2000.0, 2000.0, 2000.0, 2000.0, 2000.0],
            &[4],
        ),
        // Ended (N samples in a row under), then again: a second spike.
        (
            "twice",
            &[
                2000.0, 2000.0, 2000.0, 2000.0, 20.0, 20.0, 20.0, 20.0, 20.0, 20.0, 20.0, 20.0,
                20.0, 20.0, 20.0, 20.0, 2000.0, 2000.0, 2000.0, 2000.0,
            ],
            &[3, 19],
        ),
        // A miner that rests one sample in four still averages above.
        (
            "on and off",
            &[
                2000.0, 2000.0, 2000.0, 20.0, 2000.0, 2000.0, 2000.0, 20.0, 2000.0, 2000.0, 2000.0,
                20.0, 2000.0, 2000.0,
            ],
            &[11],
        ),
        // Throttled under the floor: not caught (the floor's price).
        ("throttled", &[500.0; 30], &[]),
        // Just over it: caught.
        ("just over", &[530.0; 6], &[3]),
    ];
    for (name, cpu, want) in table {
        let (spikes, _) = run(&rule, &base, cpu, false);
        assert_eq!(&spikes, want, "{name}");
    }
}

#[test]
fn learning_never_takes_a_spiking_pod_and_enforcement_never_learns() {
    let rule = Rule::default();
    let base = ready(20.0);
    // Learning: the quiet samples are learned, the spike's are not (nor
    // the quiet one inside it), and the spike is still raised.
    let cpu = [20.0, 2000.0, 2000.0, 2000.0, 2000.0, 20.0, 20.0];
    let (spikes, learned) = run(&rule, &base, &cpu, true);
    assert_eq!(spikes, vec![4]);
    assert_eq!(learned, 1, "only the first quiet sample");
    // Enforcement and alert-only judge, never learn.
    let (spikes, learned) = run(&rule, &base, &cpu, false);
    assert_eq!((spikes, learned), (vec![4], 0));
    // Before the baseline is ready everything is learned, nothing judged.
    let (spikes, learned) = run(&rule, &learned_few(), &[5000.0; 8], true);
    assert_eq!((spikes, learned), (vec![], 8));
}

fn learned_few() -> CpuBaseline {
    learned(&[20.0; 5])
}

fn sample(pod: &str, cpu_m: u64) -> Sample {
    Sample {
        workload: WorkloadId::new("lab", "notebook").unwrap(),
        pod: pod.into(),
        cpu_nanos: cpu_m * NANOS_PER_MILLI,
        at: String::new(),
    }
}

#[test]
fn the_tracker_judges_each_pod_against_its_profiles_baseline() {
    let rule = Rule {
        min_samples: 4,
        samples: 2,
        ..Rule::default()
    };
    let profile = WorkloadId::new("lab", "jupyter.scipy").unwrap();
    let mut tracker = Tracker::default();
    // Enforcement before any learning: nothing kept, nothing judged.
    assert_eq!(
        tracker.observe(&rule, &profile, &sample("a", 5000), false),
        Observed::default()
    );
    assert!(tracker.baseline(&profile).is_none());
    // Learning from two pods of the profile; ready after the 4th sample.
    let mut readies = 0;
    for _ in 0..2 {
        for pod in ["a", "b"] {
            let seen = tracker.observe(&rule, &profile, &sample(pod, 100), true);
            assert!(seen.learned.is_some());
            readies += usize::from(seen.ready);
        }
    }
    assert_eq!(readies, 1);
    assert_eq!(tracker.baseline(&profile).unwrap().samples, 4);
    // A miner spread over ten pods: each judged on its own against the
    // per-pod baseline (600m threshold), so each one over it is caught.
    let mut spikes = 0;
    for _ in 0..3 {
        for i in 0..10 {
            let seen = tracker.observe(&rule, &profile, &sample(&format!("m{i}"), 700), false);
            spikes += usize::from(seen.spike.is_some());
        }
    }
    assert_eq!(spikes, 10, "one alert per pod per spike");
    // Pods gone from a poll are forgotten; a returning one starts anew.
    tracker.keep_pods([("lab", "a")].into_iter());
    assert_eq!(tracker.pods.len(), 1);
    let spike = tracker
        .observe(&rule, &profile, &sample("m0", 700), false)
        .spike;
    assert!(spike.is_none(), "one sample of a new pod");
    let spike = tracker
        .observe(&rule, &profile, &sample("m0", 700), false)
        .spike
        .expect("two in a row");
    assert_eq!(spike.threshold_m, 600.0);
    assert_eq!(spike.baseline_m, 100.0);
    assert_eq!(
        (spike.cpu_m, spike.sustained_m, spike.samples),
        (700.0, 700.0, 2)
    );
}

#[test]
fn a_measurement_polled_twice_counts_once() {
    let rule = Rule {
        min_samples: 2,
        samples: 2,
        ..Rule::default()
    };
    let profile = WorkloadId::new("lab", "nb").unwrap();
    let mut tracker = Tracker::default();
    let at = |cpu_m: u64, at: &str| Sample {
        at: at.into(),
        ..sample("a", cpu_m)
    };
    let learned: Vec<bool> = ["t1", "t1", "t2", "t2", "t2"]
        .iter()
        .map(|t| {
            tracker
                .observe(&rule, &profile, &at(100, t), true)
                .learned
                .is_some()
        })
        .collect();
    assert_eq!(learned, [true, false, true, false, false]);
    // The metrics API measured once at 700m: one sample, no spike.
    let seen: Vec<Observed> = ["t3", "t3", "t3"]
        .iter()
        .map(|t| tracker.observe(&rule, &profile, &at(700, t), false))
        .collect();
    assert!(seen.iter().all(|s| s.spike.is_none()));
    assert_eq!(seen.iter().filter(|s| s.repeat).count(), 2);
    let spike = tracker.observe(&rule, &profile, &at(700, "t4"), false);
    assert!(spike.spike.is_some(), "two measurements");
}
