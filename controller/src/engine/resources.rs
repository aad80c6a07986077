//! CPU beside the network: the engine's side of `resource_spike`.
//!
//! Each poll of the Kubernetes metrics API arrives as one command: every
//! injected pod's CPU, named by its workload. Each sample is judged
//! against the CPU baseline of the workload's profile (the pure
//! [`crate::resource`]), learned while the namespace learns, and a spike
//! raises one `resource_spike` alert per pod per spike, carrying the
//! workload's egress of the last [`EGRESS_WINDOW_SECS`] from the graph.
//! A spike is a signal: nothing is blocked for it.

use std::collections::BTreeMap;

use super::{About, Engine, EngineError};
use crate::detect::{Hits, Verdict};
use crate::model::{
    Action, AlertKind, Egress, Mode, NodeId, ResourceEvidence, WorkloadId, now_unix, rfc3339,
};
use crate::resource::{Rule, Sample, Spike};
use crate::snapshot::label;
use crate::store::Changes;

/// How far back the egress shown beside a spike looks: the destinations
/// the workload sent to in the last 10 minutes.
pub const EGRESS_WINDOW_SECS: u64 = 600;

/// What one poll's samples did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResourceSummary {
    /// Samples judged (a measurement polled again is not).
    pub judged: usize,
    /// Samples learned into a baseline.
    pub learned: usize,
    /// Spikes raised.
    pub spikes: usize,
}

/// Millicores as the alert shows them: whole, rounded up.
fn whole(millicores: f64) -> u64 {
    millicores.ceil().max(0.0) as u64
}

impl Engine {
    /// Applies one poll's samples (see [`super::Handle::resource_samples`]).
    pub(super) fn resource_samples(
        &mut self,
        samples: &[Sample],
        rule: &Rule,
    ) -> Result<ResourceSummary, EngineError> {
        let now = now_unix();
        let mut changes = Changes::default();
        let mut summary = ResourceSummary::default();
        let mut learned = BTreeMap::new();
        self.resources.keep_pods(
            samples
                .iter()
                .map(|s| (s.workload.namespace.as_str(), s.pod.as_str())),
        );
        for sample in samples {
            let profile = self.inventory.profile_of(&sample.workload);
            let learning = self.modes.of(&sample.workload.namespace) == Mode::Learning;
            let seen = self.resources.observe(rule, &profile, sample, learning);
            if seen.repeat {
                continue;
            }
            summary.judged += 1;
            if let Some(baseline) = seen.learned {
                summary.learned += 1;
                learned.insert(profile.clone(), baseline);
            }
            if seen.ready {
                tracing::info!(profile = %profile, cpu_millicores = whole(seen.learned.map_or(0.0, |b| b.level_m())), "CPU baseline ready: pods of this profile are judged for CPU spikes from now on");
            }
            if let Some(spike) = seen.spike {
                summary.spikes += 1;
                self.raise_spike(&mut changes, sample, &profile, &spike, now);
            }
        }
        changes.resource_baselines = learned.into_iter().collect();
        if !changes.is_empty() {
            self.commit(&changes)?;
        }
        Ok(summary)
    }

    fn raise_spike(
        &mut self,
        changes: &mut Changes,
        sample: &Sample,
        profile: &WorkloadId,
        spike: &Spike,
        now: u64,
    ) {
        let id = &sample.workload;
        tracing::warn!(workload = %id, pod = %sample.pod, cpu_millicores = whole(spike.cpu_m), baseline_millicores = whole(spike.baseline_m), "CPU spike");
        let evidence = ResourceEvidence {
            pod: sample.pod.clone(),
            profile: profile.to_string(),
            cpu_millicores: whole(spike.cpu_m),
            sustained_millicores: whole(spike.sustained_m),
            samples: spike.samples as u64,
            baseline_millicores: whole(spike.baseline_m),
            threshold_millicores: whole(spike.threshold_m),
            egress_window_secs: EGRESS_WINDOW_SECS,
            egress: self.egress(id, now),
        };
        let verdict = Verdict {
            kind: AlertKind::ResourceSpike,
            action: Action::Flagged,
        };
        let about = About {
            destination: format!("pod:{}", sample.pod),
            resource: Some(evidence),
            ..About::default()
        };
        let hits = Hits {
            count: 1,
            denied: 0,
        };
        self.raise(changes, verdict, id, about, hits, now);
    }

    /// Where `id` sent traffic in the last [`EGRESS_WINDOW_SECS`], most
    /// bytes sent first, as its sidecars reported it.
    fn egress(&self, id: &WorkloadId, now: u64) -> Vec<Egress> {
        let me = NodeId::Workload(id.clone());
        let since = now.saturating_sub(EGRESS_WINDOW_SECS);
        let mut out: Vec<Egress> = self
            .graph
            .edges()
            .filter(|(source, _, stats)| **source == me && stats.last_seen >= since)
            .map(|(_, target, stats)| Egress {
                destination: label(target),
                requests: stats.requests,
                bytes_sent: stats.bytes_in,
                bytes_received: stats.bytes_out,
                protocols: stats.protocols.clone(),
                violation: stats.violation,
                last_seen: rfc3339(stats.last_seen),
            })
            .collect();
        out.sort_by(|a, b| {
            b.bytes_sent
                .cmp(&a.bytes_sent)
                .then_with(|| a.destination.cmp(&b.destination))
        });
        out.truncate(ResourceEvidence::MAX_EGRESS);
        out
    }
}

#[cfg(test)]
#[path = "resources_tests.rs"]
mod tests;
