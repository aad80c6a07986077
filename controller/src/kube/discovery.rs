//! Discovery: the controller watches the Kubernetes API (Namespaces,
//! Pods, Services, EndpointSlices, and the pods' owners: Deployments,
//! StatefulSets, Jobs) and hands the engine every workload with its pods'
//! IPs and its services' addresses ([`crate::engine::Handle::discovered`]):
//! east-west edges then name workloads, the sidecars' caller check learns
//! the pod IPs, and a new workload of a profile outside the baseline is a
//! `new_deployment` before any sidecar of it runs. The same client watches
//! the `VigilPolicy` resources ([`crate::kube::crd::sync`]), and shares
//! its view of the pods with the CPU poller ([`crate::kube::metrics`]).
//!
//! Thin I/O around [`state::Cluster`] (the pure reducer). Each kind is a
//! kube-rs `watcher`: a list, then a watch that resumes from the last
//! resourceVersion it saw (bookmarks included) when the connection ends;
//! a 410 Gone relists; errors back off (kube-rs's default: 0.8 s doubling
//! to 30 s, with jitter). A controller restart lists again.

pub mod state;

use futures_util::stream::{BoxStream, StreamExt};
use futures_util::{FutureExt, stream};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde::Serialize;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::watch;

pub use state::{Change, Cluster};

use crate::engine::Handle;

/// Env var names of the discovery flags (also listed in the README).
pub mod env {
    /// `--kubernetes`.
    pub const KUBERNETES: &str = "VIGIL_KUBERNETES";
    /// Set by the kubelet in every pod: the controller runs in a cluster.
    pub const SERVICE_HOST: &str = "KUBERNETES_SERVICE_HOST";
    /// `--lease-namespace`.
    pub const LEASE_NAMESPACE: &str = "VIGIL_LEASE_NAMESPACE";
    /// `--lease-name`.
    pub const LEASE_NAME: &str = "VIGIL_LEASE_NAME";
    /// `--lease-duration`.
    pub const LEASE_DURATION: &str = "VIGIL_LEASE_DURATION";
    /// `--identity`.
    pub const IDENTITY: &str = "VIGIL_IDENTITY";
}

/// Most events applied before a batch is handed to the engine.
pub const MAX_BATCH_EVENTS: usize = 1024;

/// Whether the controller watches the Kubernetes API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Switch {
    /// Always; the start fails when no API configuration is found.
    On,
    /// Never.
    Off,
    /// Inside a cluster (`KUBERNETES_SERVICE_HOST` set) only.
    Auto,
}

impl Switch {
    /// Whether discovery runs, `in_cluster` telling whether the controller
    /// runs in a pod.
    pub fn enabled(self, in_cluster: bool) -> bool {
        match self {
            Switch::On => true,
            Switch::Off => false,
            Switch::Auto => in_cluster,
        }
    }
}

/// Flags of discovery.
#[derive(Clone, Debug, clap::Args, Serialize)]
pub struct DiscoveryArgs {
    /// Watch the Kubernetes API for workloads, pod IPs and services: on,
    /// off, or auto (on inside a cluster). The API is reached with the
    /// pod's service account, or outside a cluster through KUBECONFIG.
    #[arg(long = "kubernetes", env = env::KUBERNETES, value_enum, default_value_t = Switch::Auto)]
    pub kubernetes: Switch,
    /// Namespace of the Lease the replicas elect their leader with.
    #[arg(long, env = env::LEASE_NAMESPACE, default_value = "vigil-system")]
    pub lease_namespace: String,
    /// Name of that Lease.
    #[arg(long, env = env::LEASE_NAME, default_value = "vigil-controller")]
    pub lease_name: String,
    /// Seconds a leader that stops renewing keeps the Lease (a follower
    /// takes over after that).
    #[arg(long, env = env::LEASE_DURATION, default_value_t = 15,
          value_parser = clap::value_parser!(u64).range(3..=3600))]
    pub lease_duration: u64,
    /// This replica's name in the Lease (default: the pod's hostname).
    #[arg(long, env = env::IDENTITY)]
    pub identity: Option<String>,
    /// The CPU of injected pods, from the metrics API.
    #[command(flatten)]
    pub resources: crate::kube::metrics::ResourceArgs,
}

impl Default for DiscoveryArgs {
    fn default() -> Self {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Wrap {
            #[command(flatten)]
            args: DiscoveryArgs,
        }
        Wrap::parse_from(["vigil"]).args
    }
}

impl DiscoveryArgs {
    /// This replica's identity: `--identity`, else the hostname (the pod's
    /// name in a cluster), else one made of the process id.
    pub fn identity(&self) -> String {
        self.identity
            .clone()
            .filter(|i| !i.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
            .unwrap_or_else(|| format!("vigil-controller-{}", std::process::id()))
    }
}

/// Why discovery could not start.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// `--kubernetes on` and no API configuration.
    #[error(
        "--kubernetes on, but no Kubernetes API configuration was found (the pod's service account, or KUBECONFIG): {0}"
    )]
    Config(#[source] kube::Error),
}

/// Starts discovery when the flags ask for it: the task, or `None`.
pub async fn start(
    args: &DiscoveryArgs,
    engine: Handle,
    stop: watch::Receiver<bool>,
) -> Result<Option<tokio::task::JoinHandle<()>>, DiscoveryError> {
    let in_cluster = std::env::var_os(env::SERVICE_HOST).is_some();
    if !args.kubernetes.enabled(in_cluster) {
        return Ok(None);
    }
    let client = match kube::Client::try_default().await {
        Ok(client) => client,
        Err(e) if args.kubernetes == Switch::On => return Err(DiscoveryError::Config(e)),
        Err(e) => {
            tracing::warn!(error = %e, "Kubernetes discovery is off: no API configuration");
            return Ok(None);
        }
    };
    tracing::info!(
        "Kubernetes discovery started: watching namespaces, pods, services, endpointslices, deployments, statefulsets, jobs and vigilpolicies"
    );
    let (policies, _) = watch::channel(None);
    let (role, roles) = watch::channel(crate::kube::lease::Role::Unknown);
    let write_back = crate::kube::crd::sync::write_back(
        client.clone(),
        engine.clone(),
        policies.clone(),
        roles,
        crate::kube::lease::RENEW_EVERY,
        stop.clone(),
    );
    let policies = crate::kube::crd::sync::run_policies(
        client.clone(),
        engine.clone(),
        policies,
        stop.clone(),
    );
    let (resources, _) = watch::channel(None);
    let written = crate::kube::crd::baselines::Written::default();
    let baselines = crate::kube::crd::baselines::run(
        client.clone(),
        engine.clone(),
        resources.clone(),
        written.clone(),
        stop.clone(),
    );
    let baseline_writes = crate::kube::crd::baselines::write_back(
        client.clone(),
        engine.clone(),
        resources,
        written,
        role.subscribe(),
        crate::kube::lease::RENEW_EVERY,
        stop.clone(),
    );
    let cluster = Arc::new(Mutex::new(Cluster::default()));
    let resources = crate::kube::metrics::run(
        client.clone(),
        engine.clone(),
        cluster.clone(),
        args.resources.clone(),
        stop.clone(),
    );
    let election = crate::kube::lease::run(
        client.clone(),
        args.lease_namespace.clone(),
        args.lease_name.clone(),
        args.identity(),
        std::time::Duration::from_secs(args.lease_duration),
        role,
        stop.clone(),
    );
    Ok(Some(tokio::spawn(async move {
        tokio::join!(
            run(client, engine, cluster, stop),
            policies,
            election,
            write_back,
            baselines,
            baseline_writes,
            resources
        );
    })))
}

type Changes = BoxStream<'static, Result<Change, watcher::Error>>;

/// One kind's watch, with kube-rs's default backoff after errors.
fn watch_kind<K>(api: Api<K>, wrap: fn(Event<K>) -> Change) -> Changes
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .map(move |item| item.map(wrap))
        .boxed()
}

/// Every watched kind, cluster-wide, merged into one stream.
pub fn changes(
    client: &kube::Client,
) -> impl futures_util::Stream<Item = Result<Change, watcher::Error>> {
    let c = || client.clone();
    stream::select_all([
        watch_kind(Api::<Namespace>::all(c()), Change::Namespace),
        watch_kind(Api::<Pod>::all(c()), Change::Pod),
        watch_kind(Api::<Service>::all(c()), Change::Service),
        watch_kind(Api::<EndpointSlice>::all(c()), Change::EndpointSlice),
        watch_kind(Api::<Deployment>::all(c()), Change::Deployment),
        watch_kind(Api::<StatefulSet>::all(c()), Change::StatefulSet),
        watch_kind(Api::<Job>::all(c()), Change::Job),
    ])
}

fn apply(cluster: &mut Cluster, item: Result<Change, watcher::Error>) {
    match item {
        Ok(change) => cluster.apply(change),
        Err(e) => {
            tracing::warn!(error = %e, "Kubernetes watch failed; it is retried after a backoff (a 410 Gone lists again)")
        }
    }
}

/// Applies watch events to `cluster` (shared with the CPU poller) and
/// hands the engine what changed, one batch per burst of events, until
/// `stop` turns true.
pub async fn run(
    client: kube::Client,
    engine: Handle,
    cluster: Arc<Mutex<Cluster>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut events = Box::pin(changes(&client));
    loop {
        let next = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            next = events.next() => next,
        };
        let Some(first) = next else { return };
        let found = {
            let mut cluster = cluster.lock().unwrap_or_else(PoisonError::into_inner);
            apply(&mut cluster, first);
            let mut applied = 1;
            while applied < MAX_BATCH_EVENTS
                && let Some(Some(more)) = events.next().now_or_never()
            {
                apply(&mut cluster, more);
                applied += 1;
            }
            cluster.drain()
        };
        if found.is_empty() {
            continue;
        }
        let count = found.len();
        match engine.discovered(found).await {
            Ok(()) => tracing::debug!(workloads = count, "workloads discovered"),
            Err(crate::engine::EngineError::Stopped) => return,
            Err(e) => tracing::warn!(error = %e, "discovered workloads not recorded"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_is_on_only_inside_a_cluster() {
        let table = [
            (Switch::On, false, true),
            (Switch::On, true, true),
            (Switch::Off, true, false),
            (Switch::Off, false, false),
            (Switch::Auto, true, true),
            (Switch::Auto, false, false),
        ];
        for (switch, in_cluster, on) in table {
            assert_eq!(switch.enabled(in_cluster), on, "{switch:?} {in_cluster}");
        }
    }

    #[test]
    fn the_flag_takes_on_off_auto() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Wrap {
            #[command(flatten)]
            args: DiscoveryArgs,
        }
        let parse = |a: &[&str]| Wrap::try_parse_from(a).map(|w| w.args.kubernetes);
        assert_eq!(parse(&["v"]).unwrap(), Switch::Auto);
        assert_eq!(parse(&["v", "--kubernetes", "on"]).unwrap(), Switch::On);
        assert_eq!(parse(&["v", "--kubernetes", "off"]).unwrap(), Switch::Off);
        let bad = parse(&["v", "--kubernetes", "yes"])
            .unwrap_err()
            .to_string();
        assert!(bad.contains("on, off, auto"), "{bad}");
    }
}
