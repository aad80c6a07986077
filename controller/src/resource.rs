//! CPU beside the network: the decisions behind `resource_spike`.
//!
//! Pure, no I/O and no clock: Kubernetes CPU quantities ([`parse_cpu`]),
//! a CPU baseline per profile ([`CpuBaseline`]: the typical CPU of one pod
//! of the profile, learned in learning mode), and the spike rule
//! ([`Rule`], [`judge`]): a pod whose CPU stays above
//! `max(factor x baseline, baseline + floor)` for N consecutive samples (or
//! over it on average, and half the time, over the last 3N samples) is
//! spiking, until N samples in a row are under it; one alert per pod per
//! spike. The samples come from the Kubernetes metrics API
//! (`kube::metrics`), never from the sidecar. Depends on `model` only.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::model::WorkloadId;

/// Nanocores in one millicore.
pub const NANOS_PER_MILLI: u64 = 1_000_000;

/// Samples after which a profile's baseline forgets older ones: the mean
/// is exact over the first ones, then an exponentially weighted average
/// with this memory.
pub const MEMORY: u64 = 100;

/// Most samples kept per pod (the mean rule looks at 3N of them).
pub const MAX_WINDOW: usize = 64;

/// Why a CPU quantity was not read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QuantityError {
    /// Nothing was given.
    #[error("an empty string is not a CPU quantity")]
    Empty,
    /// The text is not a Kubernetes quantity.
    #[error(
        "{text:?} is not a Kubernetes quantity ({why}); expected e.g. 250m, 1, 0.5 or 1500000n"
    )]
    Malformed {
        /// The text given.
        text: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A negative amount of CPU.
    #[error("{0:?} is negative: CPU usage cannot be")]
    Negative(String),
    /// More nanocores than 64 bits hold.
    #[error("{0:?} is too large a CPU quantity")]
    TooLarge(String),
}

/// The suffix of a quantity: a power of ten or of 1024.
enum Scale {
    Decimal(i32),
    Binary(u32),
}

fn scale(suffix: &str) -> Option<Scale> {
    Some(match suffix {
        "n" => Scale::Decimal(-9),
        "u" => Scale::Decimal(-6),
        "m" => Scale::Decimal(-3),
        "" => Scale::Decimal(0),
        "k" => Scale::Decimal(3),
        "M" => Scale::Decimal(6),
        "G" => Scale::Decimal(9),
        "T" => Scale::Decimal(12),
        "P" => Scale::Decimal(15),
        "E" => Scale::Decimal(18),
        "Ki" => Scale::Binary(1),
        "Mi" => Scale::Binary(2),
        "Gi" => Scale::Binary(3),
        "Ti" => Scale::Binary(4),
        "Pi" => Scale::Binary(5),
        "Ei" => Scale::Binary(6),
        _ => {
            // A decimal exponent: e or E, then a signed integer.
            let rest = suffix.strip_prefix(['e', 'E'])?;
            let digits = rest.strip_prefix(['+', '-']).unwrap_or(rest);
            if digits.is_empty() || digits.len() > 4 || !digits.bytes().all(|b| b.is_ascii_digit())
            {
                return None;
            }
            Scale::Decimal(rest.parse().ok()?)
        }
    })
}

/// Reads a Kubernetes CPU quantity (`250m`, `1`, `0.5`, `1500000n`,
/// `12u`, `2e3m`, ...) as nanocores, rounded up to a whole nanocore as
/// Kubernetes rounds.
pub fn parse_cpu(text: &str) -> Result<u64, QuantityError> {
    let malformed = |why| QuantityError::Malformed {
        text: text.to_owned(),
        why,
    };
    if text.is_empty() {
        return Err(QuantityError::Empty);
    }
    let (negative, body) = match text.as_bytes()[0] {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let end = body
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(body.len());
    let (number, suffix) = body.split_at(end);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() {
        return Err(malformed("no digits"));
    }
    if fraction.contains('.') {
        return Err(malformed("two decimal points"));
    }
    let scale = scale(suffix).ok_or_else(|| malformed("unknown suffix"))?;
    let digits = format!("{whole}{fraction}");
    let digits = digits.trim_start_matches('0');
    if digits.len() > 30 {
        return Err(QuantityError::TooLarge(text.to_owned()));
    }
    let mantissa: u128 = if digits.is_empty() {
        0
    } else {
        digits.parse().map_err(|_| malformed("not a number"))?
    };
    if mantissa == 0 {
        return Ok(0);
    }
    if negative {
        return Err(QuantityError::Negative(text.to_owned()));
    }
    // nanocores = mantissa x 10^(9 - fraction digits) x the suffix.
    let frac = i32::try_from(fraction.len()).map_err(|_| malformed("too many digits"))?;
    let (mut value, mut power) = (mantissa, 9 - frac);
    match scale {
        Scale::Decimal(e) => power += e,
        Scale::Binary(k) => value = value.saturating_mul(1u128 << (10 * k)),
    }
    let too_large = || QuantityError::TooLarge(text.to_owned());
    let nanos = if power >= 0 {
        10u128
            .checked_pow(power.unsigned_abs())
            .and_then(|p| value.checked_mul(p))
            .ok_or_else(too_large)?
    } else {
        match 10u128.checked_pow(power.unsigned_abs()) {
            Some(p) => value.div_ceil(p),
            // Less than a nanocore: Kubernetes rounds it up to one.
            None => 1,
        }
    };
    u64::try_from(nanos).map_err(|_| too_large())
}

/// Nanocores as millicores.
pub fn millicores(nanos: u64) -> f64 {
    nanos as f64 / NANOS_PER_MILLI as f64
}

/// What one pod of a profile usually uses: learned from the pods of the
/// profile in learning mode, one sample per pod per poll.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuBaseline {
    /// Samples learned.
    pub samples: u64,
    /// Mean CPU of one pod, millicores.
    pub mean_m: f64,
    /// Mean absolute deviation from it, millicores.
    pub deviation_m: f64,
}

impl CpuBaseline {
    /// The baseline the rule compares with: the mean plus twice the mean
    /// absolute deviation (about the 95th percentile of a normal spread),
    /// so a bursty profile is judged against its usual highs.
    pub fn level_m(&self) -> f64 {
        self.mean_m + 2.0 * self.deviation_m
    }

    /// Adds one sample.
    pub fn learn(&mut self, cpu_m: f64) {
        self.samples = self.samples.saturating_add(1);
        if self.samples == 1 {
            (self.mean_m, self.deviation_m) = (cpu_m, 0.0);
            return;
        }
        let alpha = 1.0 / self.samples.min(MEMORY) as f64;
        let distance = (cpu_m - self.mean_m).abs();
        self.mean_m += alpha * (cpu_m - self.mean_m);
        self.deviation_m += alpha * (distance - self.deviation_m);
    }
}

/// When a pod's CPU is a spike (`--resource-spike-*` flags).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Rule {
    /// A spike is above this many times the baseline...
    pub factor: f64,
    /// ...and at least this many millicores above it.
    pub floor_m: f64,
    /// For this many consecutive samples (or on average over three times
    /// as many).
    pub samples: usize,
    /// Samples a profile's baseline needs before its pods are judged.
    pub min_samples: u64,
}

impl Default for Rule {
    fn default() -> Self {
        Rule {
            factor: 2.0,
            floor_m: 500.0,
            samples: 4,
            min_samples: 20,
        }
    }
}

impl Rule {
    /// The CPU above which a pod of a profile with `baseline` is over,
    /// millicores; `None` while the baseline has too few samples.
    pub fn threshold_m(&self, baseline: &CpuBaseline) -> Option<f64> {
        (baseline.samples >= self.min_samples.max(1)).then(|| {
            let level = baseline.level_m();
            (self.factor * level).max(level + self.floor_m)
        })
    }

    /// How many samples a pod keeps: 3N (at most [`MAX_WINDOW`]).
    pub fn window(&self) -> usize {
        (self.samples.max(1) * 3).min(MAX_WINDOW)
    }
}

/// What is kept of one pod between polls.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodState {
    /// Its latest samples, millicores, oldest first.
    recent: VecDeque<f64>,
    /// Whether it is in a spike (already alerted).
    spiking: bool,
    /// When its latest sample was measured.
    last_at: String,
}

/// A spike, as the alert shows it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spike {
    /// The latest sample, millicores.
    pub cpu_m: f64,
    /// Mean of the samples that made it a spike, millicores.
    pub sustained_m: f64,
    /// How many samples that mean is over.
    pub samples: usize,
    /// The profile's baseline, millicores.
    pub baseline_m: f64,
    /// The threshold, millicores.
    pub threshold_m: f64,
}

/// What one sample decided.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Verdict {
    /// Whether the sample may be added to the profile's baseline.
    pub learn: bool,
    /// A spike that starts with this sample (one per pod per spike).
    pub spike: Option<Spike>,
}

/// Judges one sample `cpu_m` of a pod (its state `pod`) against its
/// profile's `baseline`; `learning` is whether its namespace learns.
/// Judged in every mode; learned only while learning, never while the
/// pod is over the threshold or in a spike.
pub fn judge(
    rule: &Rule,
    baseline: &CpuBaseline,
    pod: &mut PodState,
    cpu_m: f64,
    learning: bool,
) -> Verdict {
    pod.recent.push_back(cpu_m);
    while pod.recent.len() > rule.window() {
        pod.recent.pop_front();
    }
    let Some(threshold) = rule.threshold_m(baseline) else {
        pod.spiking = false;
        return Verdict {
            learn: learning,
            spike: None,
        };
    };
    let n = rule.samples.max(1);
    let last: Vec<f64> = pod.recent.iter().rev().take(n).copied().collect();
    let all: Vec<f64> = pod.recent.iter().copied().collect();
    let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len() as f64;
    let over = |s: &[f64]| s.iter().filter(|c| **c > threshold).count();
    let sustained = if last.len() == n && over(&last) == n {
        Some((mean(&last), n))
    } else if all.len() == rule.window() && mean(&all) > threshold && 2 * over(&all) >= all.len() {
        // On and off (a miner resting now and then) still averages above.
        Some((mean(&all), all.len()))
    } else {
        None
    };
    let starts = sustained.is_some() && !pod.spiking;
    // A spike ends after N samples in a row under the threshold.
    let quiet = last.len() == n && over(&last) == 0;
    pod.spiking = sustained.is_some() || (pod.spiking && !quiet);
    Verdict {
        learn: learning && !pod.spiking && cpu_m <= threshold,
        spike: sustained
            .filter(|_| starts)
            .map(|(sustained_m, samples)| Spike {
                cpu_m,
                sustained_m,
                samples,
                baseline_m: baseline.level_m(),
                threshold_m: threshold,
            }),
    }
}

/// One pod's CPU, as the metrics API reported it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    /// The pod's workload, named as discovery names it.
    pub workload: WorkloadId,
    /// The pod's name.
    pub pod: String,
    /// Its containers' CPU (all of them), nanocores.
    pub cpu_nanos: u64,
    /// When the metrics API measured it (its `timestamp`), "" if unknown:
    /// a measurement polled twice counts once.
    pub at: String,
}

/// What one sample did to the tracker.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Observed {
    /// The profile's baseline after it, when it learned.
    pub learned: Option<CpuBaseline>,
    /// Whether that made the baseline ready for judging.
    pub ready: bool,
    /// A spike starting now.
    pub spike: Option<Spike>,
    /// The same measurement as the pod's previous sample (the metrics API
    /// had nothing newer): neither judged nor learned.
    pub repeat: bool,
}

/// The baselines of every profile and the state of every pod.
#[derive(Debug, Default)]
pub struct Tracker {
    baselines: BTreeMap<WorkloadId, CpuBaseline>,
    pods: HashMap<(String, String), PodState>,
}

impl Tracker {
    /// Replaces the baselines (read back from the store); pods stay.
    pub fn restore(&mut self, baselines: BTreeMap<WorkloadId, CpuBaseline>) {
        self.baselines = baselines;
    }

    /// The baseline of `profile`, if it learned any.
    pub fn baseline(&self, profile: &WorkloadId) -> Option<&CpuBaseline> {
        self.baselines.get(profile)
    }

    /// Forgets the pods that are not in `live` (namespace, pod): those of
    /// one whole poll.
    pub fn keep_pods<'a>(&mut self, live: impl Iterator<Item = (&'a str, &'a str)>) {
        let live: std::collections::HashSet<(&str, &str)> = live.collect();
        self.pods
            .retain(|(ns, pod), _| live.contains(&(ns.as_str(), pod.as_str())));
    }

    /// Judges `sample` of a pod of `profile`, and learns it when it may.
    pub fn observe(
        &mut self,
        rule: &Rule,
        profile: &WorkloadId,
        sample: &Sample,
        learning: bool,
    ) -> Observed {
        let key = (sample.workload.namespace.clone(), sample.pod.clone());
        let pod = self.pods.entry(key).or_default();
        if !sample.at.is_empty() && pod.last_at == sample.at {
            return Observed {
                repeat: true,
                ..Observed::default()
            };
        }
        sample.at.clone_into(&mut pod.last_at);
        let baseline = self.baselines.entry(profile.clone()).or_default();
        let cpu_m = millicores(sample.cpu_nanos);
        let verdict = judge(rule, baseline, pod, cpu_m, learning);
        let mut out = Observed {
            spike: verdict.spike,
            ..Observed::default()
        };
        if verdict.learn {
            let was_ready = rule.threshold_m(baseline).is_some();
            baseline.learn(cpu_m);
            out.ready = !was_ready && rule.threshold_m(baseline).is_some();
            out.learned = Some(*baseline);
        }
        if baseline.samples == 0 {
            self.baselines.remove(profile);
        }
        out
    }
}

#[cfg(test)]
#[path = "resource_tests.rs"]
mod tests;
