//! Explanations: one sentence a human can act on, for each alert.
//!
//! Pure: an alert in, a sentence out. Depends only on `model`.

use crate::model::{Action, Alert, AlertKind, OVERFLOW};

/// What happened to the traffic, as the end of a sentence.
fn outcome(alert: &Alert) -> &'static str {
    match (alert.kind, alert.action) {
        (AlertKind::NewDeployment, Action::Blocked) => {
            "; its traffic outside the baseline is blocked"
        }
        (AlertKind::NewDeployment, Action::Flagged) => "; it is reported, not blocked",
        (AlertKind::ResourceSpike, _) => "; a signal, not blocked",
        (_, Action::Blocked) => "; Vigil blocked it",
        (_, Action::Flagged) if alert.denied > 0 => {
            "; Vigil blocked some of it, the rest got through"
        }
        (_, Action::Flagged) => "; it got through (reported, not blocked)",
    }
}

/// "for the first time" on a new alert, "N times" on a repeat.
fn times(alert: &Alert) -> String {
    if alert.count <= 1 {
        "for the first time".to_owned()
    } else {
        format!("{} times", alert.count)
    }
}

/// `bytes` for a human: `512 B`, `1.5 kB`, `12.3 MB`, ...
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let (mut value, mut unit) = (n as f64, 0);
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A window in seconds for a human: `10 min`, `45 s`.
fn window(secs: u64) -> String {
    if secs >= 60 && secs.is_multiple_of(60) {
        format!("{} min", secs / 60)
    } else {
        format!("{secs} s")
    }
}

/// Destinations shown in the sentence; the rest are counted.
const EGRESS_SHOWN: usize = 3;

/// The body of a `resource_spike` sentence: the pod's CPU against its
/// profile's baseline, and the egress beside it.
fn resource_spike(who: &str, alert: &Alert) -> String {
    let Some(r) = &alert.evidence.resource else {
        return format!(
            "{who} used far more CPU than its profile's baseline, {}",
            times(alert)
        );
    };
    let egress = if r.egress.is_empty() {
        format!(
            "no egress through its sidecar in the last {}",
            window(r.egress_window_secs)
        )
    } else {
        let shown: Vec<String> = r
            .egress
            .iter()
            .take(EGRESS_SHOWN)
            .map(|e| format!("{} to {}", bytes(e.bytes_sent), e.destination))
            .collect();
        let more = match r.egress.len().saturating_sub(EGRESS_SHOWN) {
            0 => String::new(),
            n => format!(" and {n} more"),
        };
        format!(
            "its egress in the last {}: {}{more}",
            window(r.egress_window_secs),
            shown.join(", ")
        )
    };
    format!(
        "{who} pod {} ran at {}m of CPU ({}m over {} samples) against {}m usual for its profile {} \
         (a spike is over {}m), {}; beside it, {egress}",
        r.pod,
        r.cpu_millicores,
        r.sustained_millicores,
        r.samples,
        r.baseline_millicores,
        r.profile,
        r.threshold_millicores,
        times(alert)
    )
}

/// The sentence for `alert`.
pub fn explain(alert: &Alert) -> String {
    let who = format!("{}/{}", alert.namespace, alert.workload);
    let dest = &alert.destination;
    let body = match alert.kind {
        AlertKind::Threat => {
            let by = alert
                .evidence
                .listed
                .as_deref()
                .map(|l| format!(" ({l})"))
                .unwrap_or_default();
            format!(
                "{who} connected to {dest}, a listed mining pool{by}, {}",
                times(alert)
            )
        }
        AlertKind::MiningProtocol => format!(
            "{who} spoke the Stratum mining protocol to {dest} ({}); no baseline allows mining",
            times(alert)
        ),
        AlertKind::UnknownEgress => format!(
            "{who} connected to {dest}, an external destination outside its baseline, {}",
            times(alert)
        ),
        AlertKind::NewEdge => format!(
            "{who} called {dest}, a call never seen while learning, {}",
            times(alert)
        ),
        AlertKind::NewExposure => format!(
            "{who} started receiving traffic from the internet, which it never did while learning ({})",
            times(alert)
        ),
        AlertKind::NewEndpoint => {
            let endpoint = alert
                .evidence
                .endpoints
                .iter()
                .next()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default();
            format!(
                "{who} called an API endpoint of {dest} never seen while learning{endpoint}, {}",
                times(alert)
            )
        }
        AlertKind::NewDeployment => format!(
            "{who} started in namespace {} but its profile is not in the baseline (a new deployment)",
            alert.namespace
        ),
        AlertKind::SpoofedSource => format!(
            "a caller from the internet claimed to be {dest} when calling {who}, from an IP {dest} does not call from"
        ),
        AlertKind::NameMismatch => {
            let claimed = alert.claimed.as_deref().unwrap_or("a name");
            format!(
                "{who} named {claimed} but connected to {dest}, an address that name does not resolve to"
            )
        }
        AlertKind::LimitReached => format!(
            "{who} reached the cap on distinct destinations; new ones are counted together under {OVERFLOW}"
        ),
        AlertKind::ResourceSpike => resource_spike(&who, alert),
    };
    let tenant = if alert.tenant.is_empty() {
        String::new()
    } else {
        format!(" (tenant {})", alert.tenant)
    };
    format!("{body}{tenant}{}.", outcome(alert))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Evidence, Severity};

    fn alert(kind: AlertKind, action: Action, count: u64) -> Alert {
        Alert {
            id: String::new(),
            kind,
            severity: Severity::High,
            namespace: "notebooks".into(),
            workload: "jupyter".into(),
            tenant: String::new(),
            destination: "pool.supportxmr.com:443".into(),
            action,
            count,
            denied: 0,
            first_seen: String::new(),
            last_seen: String::new(),
            claimed: None,
            explanation: String::new(),
            evidence: Evidence::default(),
        }
    }

    #[test]
    fn sentences_name_who_where_and_what_happened() {
        let mut threat = alert(AlertKind::Threat, Action::Flagged, 1);
        threat.evidence.listed = Some("builtin: *.supportxmr.com".into());
        threat.tenant = "alice".into();
        let cases = [
            (
                threat,
                "notebooks/jupyter connected to pool.supportxmr.com:443, a listed mining pool \
                 (builtin: *.supportxmr.com), for the first time (tenant alice); it got through \
                 (reported, not blocked).",
            ),
            (
                alert(AlertKind::MiningProtocol, Action::Blocked, 3),
                "notebooks/jupyter spoke the Stratum mining protocol to pool.supportxmr.com:443 \
                 (3 times); no baseline allows mining; Vigil blocked it.",
            ),
            (
                alert(AlertKind::UnknownEgress, Action::Blocked, 1),
                "notebooks/jupyter connected to pool.supportxmr.com:443, an external destination \
                 outside its baseline, for the first time; Vigil blocked it.",
            ),
        ];
        for (alert, want) in cases {
            assert_eq!(explain(&alert), want);
        }
        let mut spike = alert(AlertKind::ResourceSpike, Action::Flagged, 1);
        spike.destination = "pod:jupyter-0".into();
        let mut resource = crate::model::ResourceEvidence {
            pod: "jupyter-0".into(),
            profile: "notebooks/jupyter".into(),
            cpu_millicores: 2400,
            sustained_millicores: 2350,
            samples: 4,
            baseline_millicores: 120,
            threshold_millicores: 620,
            egress_window_secs: 600,
            egress: Vec::new(),
        };
        spike.evidence.resource = Some(resource.clone());
        assert_eq!(
            explain(&spike),
            "notebooks/jupyter pod jupyter-0 ran at 2400m of CPU (2350m over 4 samples) against \
             120m usual for its profile notebooks/jupyter (a spike is over 620m), for the first \
             time; beside it, no egress through its sidecar in the last 10 min; a signal, not \
             blocked."
        );
        for (i, sent) in [12_345_678, 999, 4_000, 1, 0].into_iter().enumerate() {
            resource.egress.push(crate::model::Egress {
                destination: format!("d{i}.example:443"),
                bytes_sent: sent,
                ..Default::default()
            });
        }
        resource.egress_window_secs = 90;
        spike.evidence.resource = Some(resource);
        spike.count = 2;
        let text = explain(&spike);
        assert!(
            text.ends_with(
                "2 times; beside it, its egress in the last 90 s: 12.3 MB to d0.example:443, \
                 999 B to d1.example:443, 4.0 kB to d2.example:443 and 2 more; a signal, not \
                 blocked."
            ),
            "{text}"
        );
        let mut partial = alert(AlertKind::NewEdge, Action::Flagged, 4);
        partial.denied = 2;
        assert!(explain(&partial).ends_with("Vigil blocked some of it, the rest got through."));
        for kind in AlertKind::ALL {
            let text = explain(&alert(kind, Action::Flagged, 1));
            assert!(
                text.starts_with("notebooks/jupyter") || text.starts_with("a caller"),
                "{text}"
            );
            assert!(text.ends_with('.'), "{text}");
        }
    }
}
