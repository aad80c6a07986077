//! CPU beside the network: every `--resource-poll` the controller lists
//! the `metrics.k8s.io/v1beta1` PodMetrics (metrics-server's view of each
//! pod's CPU, never the sidecar's word), keeps the pods that carry the
//! injected sidecar, names each by its workload as discovery does
//! ([`Cluster::injected_workload`]), sums the CPU of all its containers,
//! and hands the engine one poll of
//! samples ([`crate::engine::Handle::resource_samples`]), which judges them
//! against their profile's CPU baseline ([`crate::resource`]).
//!
//! Thin I/O around the pure [`read`]: errors back off (the poll interval
//! doubling to [`MAX_BACKOFF`]); a metrics API that is not served (404,
//! 503: metrics-server not installed) is logged once and polled again;
//! a malformed quantity skips its pod, logged once. Runs on every replica,
//! beside discovery (see ARCHITECTURE.md).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::watch;

use crate::engine::{EngineError, Handle};
use crate::kube::discovery::Cluster;
use crate::kube::identity::str_at;
use crate::model::WorkloadId;
use crate::resource::{self, Rule, Sample};

/// Env var names of the resource flags (also listed in the README).
pub mod env {
    /// `--resource-poll`.
    pub const RESOURCE_POLL: &str = "VIGIL_RESOURCE_POLL";
    /// `--resource-spike-factor`.
    pub const RESOURCE_SPIKE_FACTOR: &str = "VIGIL_RESOURCE_SPIKE_FACTOR";
    /// `--resource-spike-floor`.
    pub const RESOURCE_SPIKE_FLOOR: &str = "VIGIL_RESOURCE_SPIKE_FLOOR";
    /// `--resource-spike-samples`.
    pub const RESOURCE_SPIKE_SAMPLES: &str = "VIGIL_RESOURCE_SPIKE_SAMPLES";
    /// `--resource-min-samples`.
    pub const RESOURCE_MIN_SAMPLES: &str = "VIGIL_RESOURCE_MIN_SAMPLES";
}

/// Longest wait between polls after errors.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Distinct skipped-pod messages remembered (each is logged once).
const LOGGED_MAX: usize = 1024;

/// Flags of the CPU poller.
#[derive(Clone, Debug, clap::Args, Serialize)]
pub struct ResourceArgs {
    /// How often the CPU of injected pods is read from the Kubernetes
    /// metrics API (metrics.k8s.io, served by metrics-server), e.g. 30s,
    /// 500ms, 1m; 0 turns it off. Needs --kubernetes.
    #[arg(long, env = env::RESOURCE_POLL, default_value = "30s", value_parser = parse_interval)]
    pub resource_poll: Duration,
    /// A pod's CPU is a spike above this many times its profile's usual
    /// CPU per pod...
    #[arg(long, env = env::RESOURCE_SPIKE_FACTOR, default_value_t = 2.0, value_parser = parse_factor)]
    pub resource_spike_factor: f64,
    /// ...and at least this much above it (a Kubernetes CPU quantity:
    /// 500m is half a core)...
    #[arg(long, env = env::RESOURCE_SPIKE_FLOOR, default_value = "500m", value_parser = parse_floor)]
    pub resource_spike_floor: Floor,
    /// ...for this many polls in a row (or on average, and half the time,
    /// over three times as many).
    #[arg(long, env = env::RESOURCE_SPIKE_SAMPLES, default_value_t = 4,
          value_parser = clap::value_parser!(u16).range(1..=20))]
    pub resource_spike_samples: u16,
    /// Samples a profile's CPU baseline learns (in learning mode) before
    /// its pods are judged.
    #[arg(long, env = env::RESOURCE_MIN_SAMPLES, default_value_t = 20,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub resource_min_samples: u64,
}

/// A CPU quantity as given and as nanocores.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Floor {
    /// As given, e.g. `500m`.
    pub quantity: String,
    /// In nanocores.
    pub nanos: u64,
}

impl Default for ResourceArgs {
    fn default() -> Self {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Wrap {
            #[command(flatten)]
            args: ResourceArgs,
        }
        Wrap::parse_from(["vigil"]).args
    }
}

impl ResourceArgs {
    /// The spike rule the flags give.
    pub fn rule(&self) -> Rule {
        Rule {
            factor: self.resource_spike_factor,
            floor_m: resource::millicores(self.resource_spike_floor.nanos),
            samples: usize::from(self.resource_spike_samples),
            min_samples: self.resource_min_samples,
        }
    }
}

/// Reads an interval: `500ms`, `30s`, `2m`, `1h`, or plain seconds; `0`
/// is off.
pub fn parse_interval(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not an interval: use e.g. 30s, 500ms, 2m, or 0 for off");
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let millis = match unit {
        "ms" => Some(n),
        "" | "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        _ => return Err(bad()),
    };
    match millis {
        Some(0) => Ok(Duration::ZERO),
        Some(ms) if (100..=86_400_000).contains(&ms) => Ok(Duration::from_millis(ms)),
        _ => Err(format!(
            "{text:?} is out of range: poll between every 100ms and once a day (0 for off)"
        )),
    }
}

fn parse_factor(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(f) if f.is_finite() && f > 1.0 && f <= 100.0 => Ok(f),
        _ => Err(format!(
            "{text:?} is not a spike factor: use a number above 1 and at most 100, e.g. 2 or 3.5"
        )),
    }
}

fn parse_floor(text: &str) -> Result<Floor, String> {
    let nanos = resource::parse_cpu(text).map_err(|e| e.to_string())?;
    Ok(Floor {
        quantity: text.to_owned(),
        nanos,
    })
}

/// The wait before the next poll after `failures` errors in a row.
pub fn backoff(poll: Duration, failures: u32) -> Duration {
    let factor = 1u32 << failures.min(16);
    poll.saturating_mul(factor).min(MAX_BACKOFF).max(poll)
}

/// `metrics.k8s.io/v1beta1` PodMetrics, at `/apis/metrics.k8s.io/v1beta1/pods`.
pub fn pod_metrics() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("metrics.k8s.io", "v1beta1", "PodMetrics"),
        "pods",
    )
}

/// One poll read: the samples of injected pods, and why others were
/// skipped.
#[derive(Debug, Default, PartialEq)]
pub struct Read {
    /// One per injected pod.
    pub samples: Vec<Sample>,
    /// `ns/pod: why`, for pods whose metrics could not be read.
    pub skipped: Vec<String>,
}

/// The CPU of one PodMetrics: its `containers[].usage.cpu` summed over
/// every container, sidecars included. Leaving some out by name would be
/// a way around: a pod chooses its containers' names (a miner named
/// `istio-proxy`), and the pod's cost is all of them.
fn pod_cpu(object: &Value) -> Result<u64, String> {
    let containers = object
        .get("containers")
        .and_then(Value::as_array)
        .filter(|c| !c.is_empty())
        .ok_or("no containers")?;
    let mut total: u64 = 0;
    for c in containers {
        let name = str_at(c, "/name");
        let cpu = c
            .pointer("/usage/cpu")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("container {name:?} has no usage.cpu"))?;
        let nanos = resource::parse_cpu(cpu).map_err(|e| format!("container {name:?}: {e}"))?;
        total = total.saturating_add(nanos);
    }
    Ok(total)
}

/// The samples of one list of PodMetrics: the pods `injected` names a
/// workload for (others are not Vigil's), with their CPU.
pub fn read(items: &[DynamicObject], injected: impl Fn(&str, &str) -> Option<WorkloadId>) -> Read {
    let mut out = Read::default();
    for item in items {
        let ns = item.metadata.namespace.as_deref().unwrap_or("");
        let pod = item.metadata.name.as_deref().unwrap_or("");
        let Some(workload) = injected(ns, pod) else {
            continue;
        };
        match pod_cpu(&item.data) {
            Ok(cpu_nanos) => out.samples.push(Sample {
                workload,
                pod: pod.to_owned(),
                cpu_nanos,
                at: str_at(&item.data, "/timestamp").to_owned(),
            }),
            Err(why) => out.skipped.push(format!("{ns}/{pod}: {why}")),
        }
    }
    out
}

/// What one list call gave.
enum Listed {
    Items(Vec<DynamicObject>),
    /// The metrics API is not served.
    Absent(String),
    Failed(kube::Error),
}

async fn list(api: &kube::Api<DynamicObject>) -> Listed {
    match api.list(&ListParams::default()).await {
        Ok(list) => Listed::Items(list.items),
        Err(kube::Error::Api(status)) if matches!(status.code, 404 | 503) => {
            Listed::Absent(format!("{} {}", status.code, status.message))
        }
        Err(e) => Listed::Failed(e),
    }
}

/// Polls the metrics API until `stop` turns true; `cluster` is
/// discovery's view of the pods.
pub async fn run(
    client: kube::Client,
    engine: Handle,
    cluster: Arc<Mutex<Cluster>>,
    args: ResourceArgs,
    mut stop: watch::Receiver<bool>,
) {
    let poll = args.resource_poll;
    if poll.is_zero() {
        tracing::info!("CPU spikes are not judged: --resource-poll 0");
        return;
    }
    let api = kube::Api::<DynamicObject>::all_with(client, &pod_metrics());
    let rule = args.rule();
    let (mut failures, mut absent) = (0u32, false);
    let mut logged: BTreeSet<String> = BTreeSet::new();
    let mut delay = poll;
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            () = tokio::time::sleep(delay) => {}
        }
        delay = poll;
        let items = match list(&api).await {
            Listed::Items(items) => items,
            Listed::Absent(why) => {
                if !absent {
                    tracing::warn!(answer = %why, "the Kubernetes metrics API (metrics.k8s.io) is not served: is metrics-server installed? CPU spikes are not judged until it is (asked again every poll)");
                }
                absent = true;
                continue;
            }
            Listed::Failed(e) => {
                failures = failures.saturating_add(1);
                delay = backoff(poll, failures);
                tracing::warn!(error = %e, retry_in = ?delay, "listing PodMetrics failed");
                continue;
            }
        };
        if std::mem::take(&mut absent) {
            tracing::info!("the Kubernetes metrics API is served: CPU spikes are judged");
        }
        failures = 0;
        let read = {
            let cluster = cluster.lock().unwrap_or_else(PoisonError::into_inner);
            read(&items, |ns, pod| cluster.injected_workload(ns, pod))
        };
        for why in read.skipped {
            if logged.len() >= LOGGED_MAX {
                logged.clear();
            }
            if logged.insert(why.clone()) {
                tracing::warn!(pod = %why, "a pod's metrics were skipped (logged once)");
            }
        }
        let pods = read.samples.len();
        match engine.resource_samples(read.samples, rule).await {
            Ok(s) => {
                tracing::debug!(
                    pods,
                    learned = s.learned,
                    spikes = s.spikes,
                    "CPU samples judged"
                )
            }
            Err(EngineError::Stopped) => return,
            Err(e) => tracing::warn!(error = %e, "CPU samples not recorded"),
        }
    }
}

#[cfg(test)]
#[path = "metrics_tests.rs"]
mod tests;
