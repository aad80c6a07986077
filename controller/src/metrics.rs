//! Prometheus metrics of the controller, served unauthenticated on the API
//! port at `/metrics` (counts only: no workload names or destinations in
//! labels, so nothing about the graph leaks and cardinality is fixed).

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::model::AlertKind;

/// What happened to a report batch.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum ReportResult {
    /// Applied and stored.
    applied,
    /// Already applied (re-sent after a lost acknowledgement).
    duplicate,
    /// Could not be stored; the proxy will re-send it.
    failed,
}

/// Labels of `vigil_controller_reports_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReportLabels {
    /// Outcome.
    pub result: ReportResult,
}

/// Labels of `vigil_controller_violations_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ViolationLabels {
    /// Alert kind.
    pub kind: KindLabel,
}

/// `kind` label: the alert kinds.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum KindLabel {
    /// `unknown_egress`.
    unknown_egress,
    /// `new_edge`.
    new_edge,
    /// `new_deployment`.
    new_deployment,
    /// `mining_protocol`.
    mining_protocol,
    /// `spoofed_source`.
    spoofed_source,
    /// `name_mismatch`.
    name_mismatch,
    /// `limit_reached`.
    limit_reached,
    /// `new_endpoint`.
    new_endpoint,
    /// `new_exposure`.
    new_exposure,
    /// `threat`.
    threat,
    /// `resource_spike`.
    resource_spike,
}

impl From<AlertKind> for KindLabel {
    fn from(kind: AlertKind) -> Self {
        match kind {
            AlertKind::UnknownEgress => Self::unknown_egress,
            AlertKind::NewEdge => Self::new_edge,
            AlertKind::NewDeployment => Self::new_deployment,
            AlertKind::MiningProtocol => Self::mining_protocol,
            AlertKind::SpoofedSource => Self::spoofed_source,
            AlertKind::NameMismatch => Self::name_mismatch,
            AlertKind::LimitReached => Self::limit_reached,
            AlertKind::NewEndpoint => Self::new_endpoint,
            AlertKind::NewExposure => Self::new_exposure,
            AlertKind::Threat => Self::threat,
            AlertKind::ResourceSpike => Self::resource_spike,
        }
    }
}

/// The engine's metrics.
#[derive(Clone, Debug)]
pub struct EngineMetrics {
    /// Report batches by outcome.
    pub reports: Family<ReportLabels, Counter>,
    /// Observations applied.
    pub observations: Counter,
    /// Requests (or registrations) that violated the baseline, by kind.
    pub violations: Family<ViolationLabels, Counter>,
    /// Store commit time.
    pub commit_seconds: Histogram,
    /// Sidecars connected now.
    pub sidecars_connected: Gauge,
    /// Policies published to sidecars (changed ones only).
    pub policy_updates: Counter,
    /// Requests to new destinations counted under the overflow destination
    /// because their workload reached the cap.
    pub overflowed: Counter,
    /// Edge views snapshots built (the others were kept from the last).
    pub edge_views_built: Counter,
    /// Time to build and publish one snapshot (on the engine thread; the
    /// next one built for reports alone waits at least four times this).
    pub snapshot_seconds: Histogram,
}

impl EngineMetrics {
    /// Creates and registers the metrics.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            reports: Family::default(),
            observations: Counter::default(),
            violations: Family::default(),
            commit_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            sidecars_connected: Gauge::default(),
            policy_updates: Counter::default(),
            overflowed: Counter::default(),
            edge_views_built: Counter::default(),
            snapshot_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
        };
        registry.register(
            "vigil_controller_overflowed",
            "Requests to new destinations counted under the overflow destination because their workload reached the cap on distinct destinations",
            metrics.overflowed.clone(),
        );
        registry.register(
            "vigil_controller_reports",
            "Report batches from sidecars, by outcome",
            metrics.reports.clone(),
        );
        registry.register(
            "vigil_controller_observations",
            "Observations applied to the graph",
            metrics.observations.clone(),
        );
        registry.register(
            "vigil_controller_violations",
            "Requests and registrations outside the baseline, by alert kind",
            metrics.violations.clone(),
        );
        registry.register(
            "vigil_controller_store_commit_seconds",
            "Time to commit one engine step to the store",
            metrics.commit_seconds.clone(),
        );
        registry.register(
            "vigil_controller_sidecars_connected",
            "Sidecars with an open policy stream",
            metrics.sidecars_connected.clone(),
        );
        registry.register(
            "vigil_controller_snapshot_edge_views_built",
            "Edge views built for snapshots of the graph (the others were kept from the previous snapshot)",
            metrics.edge_views_built.clone(),
        );
        registry.register(
            "vigil_controller_snapshot_seconds",
            "Time to build and publish one snapshot of the state on the engine thread (snapshots built for reports alone are at least four times this apart)",
            metrics.snapshot_seconds.clone(),
        );
        registry.register(
            "vigil_controller_policy_updates",
            "Policies published to sidecars",
            metrics.policy_updates.clone(),
        );
        metrics
    }

    /// Counts one report batch.
    pub fn report(&self, result: ReportResult) {
        self.reports.get_or_create(&ReportLabels { result }).inc();
    }
}
