//! Domain types of the controller: workload identities, graph node ids,
//! modes, observations and alerts.
//!
//! These are plain data with string forms used as storage keys and in the JSON
//! API. Protobuf types never reach past `ingest`; this module depends on no
//! other module of the crate.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Longest namespace or workload name accepted (Kubernetes allows 253 for
/// names and 63 for namespaces; we accept the larger).
const MAX_NAME_LEN: usize = 253;

/// A name that failed validation.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    /// The name was empty.
    #[error("{what} is empty")]
    Empty {
        /// Which name.
        what: &'static str,
    },
    /// The name was longer than we accept.
    #[error("{what} is longer than {MAX_NAME_LEN} characters")]
    TooLong {
        /// Which name.
        what: &'static str,
    },
    /// The name holds characters outside `[a-z0-9.-_]`.
    #[error("{what} {name:?} may hold only lower-case letters, digits, '-', '_' and '.'")]
    BadChar {
        /// Which name.
        what: &'static str,
        /// The rejected name.
        name: String,
    },
    /// A node id string was not one of the known forms.
    #[error("{0:?} is not a node id (internet, workload:NS/NAME or external:HOST:PORT)")]
    BadNodeId(String),
}

/// Checks a namespace or workload name: lower-case DNS-like labels.
pub fn validate_name(what: &'static str, name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty { what });
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong { what });
    }
    let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.' | '_');
    if !name.chars().all(ok) {
        return Err(NameError::BadChar {
            what,
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// The identity of a workload: its namespace and its name.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WorkloadId {
    /// Namespace, e.g. `notebooks`.
    pub namespace: String,
    /// Workload name, e.g. `jupyter-alice`.
    pub name: String,
}

impl WorkloadId {
    /// Builds a validated workload identity.
    pub fn new(namespace: &str, name: &str) -> Result<Self, NameError> {
        validate_name("namespace", namespace)?;
        validate_name("workload name", name)?;
        Ok(Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        })
    }
}

impl fmt::Display for WorkloadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Piece by piece: ids are formatted for every row and view key.
        f.write_str(&self.namespace)?;
        f.write_str("/")?;
        f.write_str(&self.name)
    }
}

impl FromStr for WorkloadId {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (ns, name) = s
            .split_once('/')
            .ok_or_else(|| NameError::BadNodeId(s.to_owned()))?;
        Self::new(ns, name)
    }
}

/// A node of the service graph.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NodeId {
    /// Callers without a Vigil identity: north-south traffic.
    Internet,
    /// A workload with a sidecar.
    Workload(WorkloadId),
    /// A destination outside the mesh, as `host:port`.
    External(String),
}

impl NodeId {
    /// The kind of node, as the API names it.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Internet => "internet",
            Self::Workload(_) => "workload",
            Self::External(_) => "external",
        }
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Internet => f.write_str("internet"),
            Self::Workload(id) => {
                f.write_str("workload:")?;
                fmt::Display::fmt(id, f)
            }
            Self::External(authority) => {
                f.write_str("external:")?;
                f.write_str(authority)
            }
        }
    }
}

impl FromStr for NodeId {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "internet" {
            return Ok(Self::Internet);
        }
        if let Some(id) = s.strip_prefix("workload:") {
            return Ok(Self::Workload(id.parse()?));
        }
        match s.strip_prefix("external:") {
            Some(authority) if !authority.is_empty() => Ok(Self::External(authority.to_owned())),
            _ => Err(NameError::BadNodeId(s.to_owned())),
        }
    }
}

/// A directed edge of the graph: who called whom.
pub type EdgeKey = (NodeId, NodeId);

/// How the controller treats a namespace.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "kebab-case")]
pub enum Mode {
    /// Everything observed is added to the baseline.
    #[default]
    Learning,
    /// Everything outside the baseline raises an alert; unless `alert_only`,
    /// proxies block it.
    Enforcement {
        /// Raise alerts but let traffic pass.
        #[serde(default)]
        alert_only: bool,
    },
}

impl Mode {
    /// Whether proxies must block what is outside the baseline.
    pub fn blocks(self) -> bool {
        matches!(self, Self::Enforcement { alert_only: false })
    }

    /// The action taken on a violation in this mode.
    pub fn action(self) -> Action {
        if self.blocks() {
            Action::Blocked
        } else {
            Action::Flagged
        }
    }

    /// Short human name: `learning`, `enforcement` or `alert-only`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Learning => "learning",
            Self::Enforcement { alert_only: false } => "enforcement",
            Self::Enforcement { alert_only: true } => "alert-only",
        }
    }
}

/// The modes of all namespaces: a default for namespaces not listed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Modes {
    /// Mode of namespaces without their own entry (and of new namespaces).
    pub default: Mode,
    /// Per-namespace modes.
    pub namespaces: BTreeMap<String, Mode>,
}

impl Modes {
    /// The mode that applies to `namespace`.
    pub fn of(&self, namespace: &str) -> Mode {
        self.namespaces
            .get(namespace)
            .copied()
            .unwrap_or(self.default)
    }
}

/// Which way a request crossed the reporting sidecar.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Into the reporting workload.
    Inbound,
    /// Out of the reporting workload.
    Outbound,
}

/// The protocol a sidecar saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// HTTP/1.x.
    Http1,
    /// HTTP/2 (not gRPC).
    Http2,
    /// gRPC.
    Grpc,
    /// TLS, named by SNI.
    Tls,
    /// Opaque TCP or a CONNECT tunnel.
    Tcp,
    /// The Stratum mining protocol.
    Stratum,
    /// A DNS query.
    Dns,
    /// A UDP flow (not DNS).
    Udp,
    /// A QUIC flow.
    Quic,
    /// A value this release does not know (a newer sidecar).
    Unknown,
}

impl Protocol {
    /// The name used in JSON, the graph and tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http1 => "http1",
            Self::Http2 => "http2",
            Self::Grpc => "grpc",
            Self::Tls => "tls",
            Self::Tcp => "tcp",
            Self::Stratum => "stratum",
            Self::Dns => "dns",
            Self::Udp => "udp",
            Self::Quic => "quic",
            Self::Unknown => "unknown",
        }
    }

    /// Whether this protocol is a mining protocol (never normal).
    pub fn is_mining(self) -> bool {
        self == Self::Stratum
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Requests aggregated by a sidecar over one interval, validated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observation {
    /// Which way the requests went.
    pub direction: Direction,
    /// The protocol seen.
    pub protocol: Protocol,
    /// Inbound: the calling workload, `None` for the internet.
    pub source: Option<WorkloadId>,
    /// Inbound from the internet: the workload the caller claimed to be,
    /// from an IP that workload does not call from.
    pub claimed_source: Option<WorkloadId>,
    /// Outbound, redirected: the name the client gave (`host:port`) for a
    /// destination it does not resolve to; `authority` is then the real
    /// destination `ip:port`.
    pub claimed_authority: Option<String>,
    /// Inbound: the IP the caller called from, when the sidecar could not
    /// check its claimed `source` (no IPs for it in its policy). The engine
    /// checks it against that workload's IPs on arrival and clears it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ip: Option<std::net::IpAddr>,
    /// Outbound: the destination as named, `host:port` in lower case.
    pub authority: String,
    /// Outbound: the resolved address of the destination.
    pub resolved_addr: Option<SocketAddr>,
    /// HTTP method (or `CONNECT`), may be empty.
    pub method: String,
    /// Path template.
    pub path: String,
    /// HTTP status, 0 when there was none.
    pub status: u16,
    /// Number of requests.
    pub count: u64,
    /// How many the proxy denied.
    pub denied: u64,
    /// Bytes from the client.
    pub bytes_in: u64,
    /// Bytes to the client.
    pub bytes_out: u64,
    /// Sum of latencies, microseconds.
    pub latency_sum_us: u64,
}

/// One report from one sidecar process: its observations of an interval.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    /// The reporting workload.
    pub reporter: WorkloadId,
    /// The sidecar process (random per process; empty if unknown).
    pub instance: String,
    /// Sequence number within that process: a batch re-sent after a lost
    /// acknowledgement carries the same number and is applied once.
    pub seq: u64,
    /// What it saw.
    pub observations: Vec<Observation>,
    /// Observations it dropped (its buffers were full) or we rejected.
    pub dropped: u64,
}

/// Test fixture: `count` outbound `GET /` requests to `authority`
/// (resolved to `addr` when given), answered 200.
#[cfg(test)]
pub(crate) fn outbound(authority: &str, addr: Option<&str>, count: u64) -> Observation {
    Observation {
        direction: Direction::Outbound,
        protocol: Protocol::Http1,
        source: None,
        claimed_source: None,
        claimed_authority: None,
        source_ip: None,
        authority: authority.into(),
        resolved_addr: addr.map(|a| a.parse().expect("ip:port")),
        method: "GET".into(),
        path: "/".into(),
        status: 200,
        count,
        denied: 0,
        bytes_in: 1,
        bytes_out: 2,
        latency_sum_us: 100,
    }
}

/// What kind of deviation an alert reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// A workload reached an external destination outside the baseline.
    UnknownEgress,
    /// A call between workloads, or from the internet, outside the baseline.
    NewEdge,
    /// A workload identity never seen while learning.
    NewDeployment,
    /// A mining protocol (Stratum) on any port, in any mode.
    MiningProtocol,
    /// A caller claimed a workload's identity from an IP that workload does
    /// not call from (in any mode); it was judged as the internet.
    SpoofedSource,
    /// A workload named a destination (Host, `:authority`, TLS SNI) that
    /// its connection did not go to (in any mode): judged by the real
    /// address, and blocked in enforcement.
    NameMismatch,
    /// A workload reached the cap on distinct destinations the controller
    /// tracks for it (a flood of unique names): later new ones are counted
    /// together under [`OVERFLOW`].
    LimitReached,
    /// A known edge carried a method and path template (or gRPC method)
    /// never seen while learning.
    NewEndpoint,
    /// A workload started receiving traffic from the internet (the open
    /// dashboard).
    NewExposure,
    /// A destination on a threat list (a mining pool), by Host, SNI,
    /// CONNECT authority, DNS query or address, in any mode.
    Threat,
    /// A pod's CPU (from the Kubernetes metrics API) far above its
    /// profile's baseline for a while, shown beside the workload's egress;
    /// in any mode, never blocked.
    ResourceSpike,
}

/// The one destination a workload's traffic to new destinations is counted
/// under once it has reached the cap; the sidecars fold their own overflow
/// into it too.
pub use vigil_proto::OVERFLOW_AUTHORITY as OVERFLOW;

impl AlertKind {
    /// The name used in JSON and tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnknownEgress => "unknown_egress",
            Self::NewEdge => "new_edge",
            Self::NewDeployment => "new_deployment",
            Self::MiningProtocol => "mining_protocol",
            Self::SpoofedSource => "spoofed_source",
            Self::NameMismatch => "name_mismatch",
            Self::LimitReached => "limit_reached",
            Self::NewEndpoint => "new_endpoint",
            Self::NewExposure => "new_exposure",
            Self::Threat => "threat",
            Self::ResourceSpike => "resource_spike",
        }
    }

    /// Every kind, for flags and tables.
    pub const ALL: [AlertKind; 11] = [
        Self::UnknownEgress,
        Self::NewEdge,
        Self::NewDeployment,
        Self::MiningProtocol,
        Self::SpoofedSource,
        Self::NameMismatch,
        Self::LimitReached,
        Self::NewEndpoint,
        Self::NewExposure,
        Self::Threat,
        Self::ResourceSpike,
    ];

    /// How urgent an alert of this kind is.
    pub fn severity(self) -> Severity {
        match self {
            Self::NewEndpoint => Severity::Low,
            Self::UnknownEgress
            | Self::NewEdge
            | Self::NewDeployment
            | Self::LimitReached
            | Self::ResourceSpike => Severity::Medium,
            Self::SpoofedSource | Self::NameMismatch | Self::NewExposure | Self::Threat => {
                Severity::High
            }
            Self::MiningProtocol => Severity::Critical,
        }
    }
}

impl FromStr for AlertKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Self::ALL.iter().map(|k| k.as_str()).collect();
                format!(
                    "{s:?} is not an alert kind: use one of {}",
                    names.join(", ")
                )
            })
    }
}

/// What Vigil did about a violation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Blocked at the proxies.
    Blocked,
    /// Reported only: it got through (alert-only mode, or before the
    /// policy arrived).
    Flagged,
}

/// How urgently a human should look at an alert.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth a look: a new API endpoint on a known edge.
    Low,
    /// A deviation from the baseline: a new edge, egress or deployment.
    #[default]
    Medium,
    /// Someone is lying or the workload is exposed: impersonation, name
    /// mismatch, a new exposure to the internet, a threat-listed
    /// destination.
    High,
    /// Mining: act now.
    Critical,
}

impl Severity {
    /// The name used in JSON, flags and tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }
}

impl FromStr for Severity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "low" => Ok(Self::Low),
            "medium" => Ok(Self::Medium),
            "high" => Ok(Self::High),
            "critical" => Ok(Self::Critical),
            other => Err(format!(
                "{other:?} is not a severity: use low, medium, high or critical"
            )),
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the traffic behind an alert looked like (bounded).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Evidence {
    /// Protocols seen, e.g. `tls`, `stratum`.
    pub protocols: BTreeSet<String>,
    /// Endpoints seen: `METHOD path-template` (HTTP), the query type
    /// (DNS), at most [`Evidence::MAX_ENDPOINTS`].
    pub endpoints: BTreeSet<String>,
    /// `threat`: the feed that lists the destination and the entry that
    /// matched, e.g. `builtin: *.supportxmr.com`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listed: Option<String>,
    /// Bytes from the workload and to it, summed.
    pub bytes_in: u64,
    /// Bytes to the workload, summed.
    pub bytes_out: u64,
    /// `resource_spike`: the pod's CPU against its profile's baseline, and
    /// the workload's egress beside it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<ResourceEvidence>,
}

/// What a `resource_spike` alert shows: the CPU of one pod (from the
/// Kubernetes metrics API) and its workload's recent egress (as its
/// sidecars reported it).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResourceEvidence {
    /// The pod.
    pub pod: String,
    /// The profile whose baseline it was judged against (`ns/name`).
    pub profile: String,
    /// Its CPU in the latest sample, millicores.
    pub cpu_millicores: u64,
    /// Its mean CPU over the samples that made the spike, millicores.
    pub sustained_millicores: u64,
    /// How many samples that mean is over.
    pub samples: u64,
    /// The profile's usual CPU per pod, millicores.
    pub baseline_millicores: u64,
    /// The spike threshold: max(factor x baseline, baseline + floor).
    pub threshold_millicores: u64,
    /// How far back the egress looks, seconds.
    pub egress_window_secs: u64,
    /// The workload's destinations active in that window, most bytes
    /// sent first (at most [`ResourceEvidence::MAX_EGRESS`]).
    pub egress: Vec<Egress>,
}

impl ResourceEvidence {
    /// Most destinations shown.
    pub const MAX_EGRESS: usize = 8;
}

/// One destination a workload sent to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Egress {
    /// The destination (`host:port`, `ns/name`).
    pub destination: String,
    /// Requests or connections since the edge was first seen.
    pub requests: u64,
    /// Bytes the workload sent there since then.
    pub bytes_sent: u64,
    /// Bytes it received from there.
    pub bytes_received: u64,
    /// Protocols seen.
    pub protocols: BTreeSet<String>,
    /// Whether traffic there violated the baseline.
    pub violation: bool,
    /// RFC 3339 time of the latest traffic there.
    pub last_seen: String,
}

impl Evidence {
    /// Most endpoints kept per alert.
    pub const MAX_ENDPOINTS: usize = 16;

    /// Adds what `obs` shows.
    pub fn add(&mut self, obs: &Observation) {
        if !self.protocols.contains(obs.protocol.as_str()) {
            self.protocols.insert(obs.protocol.as_str().to_owned());
        }
        if !obs.method.is_empty() && self.endpoints.len() < Self::MAX_ENDPOINTS {
            let endpoint = if obs.path.is_empty() {
                obs.method.clone()
            } else {
                format!("{} {}", obs.method, obs.path)
            };
            self.endpoints.insert(endpoint);
        }
        self.bytes_in = self.bytes_in.saturating_add(obs.bytes_in);
        self.bytes_out = self.bytes_out.saturating_add(obs.bytes_out);
    }
}

/// One alert, aggregated over repeats of the same violation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    /// Stable id, the same for every repeat and across restarts: 16 hex
    /// digits derived from the kind, workload and destination.
    #[serde(default)]
    pub id: String,
    /// What deviated.
    pub kind: AlertKind,
    /// How urgent it is.
    #[serde(default)]
    pub severity: Severity,
    /// Namespace of the offending workload.
    pub namespace: String,
    /// Name of the offending workload.
    pub workload: String,
    /// The account that owns the workload (JupyterHub user, Kubeflow
    /// profile owner), empty when unknown.
    #[serde(default)]
    pub tenant: String,
    /// Destination (node id form without prefix: `host:port`, `ns/name`,
    /// `internet`), empty for `new_deployment`.
    pub destination: String,
    /// What happened to the latest traffic: `blocked` when the proxies
    /// denied all of it, `flagged` when some of it passed (alert-only, or
    /// before the policy reached the proxy). For `new_deployment`, which
    /// has no traffic, what the mode does to the workload.
    pub action: Action,
    /// How many requests (or registrations) hit this alert.
    pub count: u64,
    /// How many of those requests the proxies denied (`count - denied`
    /// got through).
    #[serde(default)]
    pub denied: u64,
    /// RFC 3339 time of the first occurrence.
    pub first_seen: String,
    /// RFC 3339 time of the latest occurrence.
    pub last_seen: String,
    /// `name_mismatch`: the name the workload gave for `destination` (the
    /// address it really went to), latest first seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed: Option<String>,
    /// One sentence a human can act on, e.g. "notebooks/jupyter connected
    /// to pool.supportxmr.com:443, a listed mining pool, for the first
    /// time".
    #[serde(default)]
    pub explanation: String,
    /// What the traffic looked like.
    #[serde(default)]
    pub evidence: Evidence,
}

impl Alert {
    /// The storage key that identifies repeats of the same alert.
    pub fn key(&self) -> String {
        alert_key(
            self.kind,
            &self.namespace,
            &self.workload,
            &self.destination,
        )
    }

    /// Fills what alerts stored by an earlier release lack (id, severity,
    /// explanation), so that old data directories keep working.
    pub fn upgrade(&mut self) {
        if self.id.is_empty() {
            self.id = alert_id(&self.key());
        }
        if self.explanation.is_empty() {
            self.severity = self.kind.severity();
            self.explanation = crate::explain::explain(self);
        }
    }
}

/// The stable id of the alert with storage key `key`: FNV-1a (64 bits) as
/// 16 hex digits. Stable across releases: never change the function.
pub fn alert_id(key: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// A workload under quarantine: its sidecars refuse all traffic but
/// health checks, in every mode, until it is released.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quarantine {
    /// RFC 3339 time it started.
    pub since: String,
    /// Who quarantined it: `admin`, or `auto-quarantine` for the
    /// controller itself.
    pub actor: String,
    /// Why, e.g. the alert that triggered it.
    pub reason: String,
}

/// One entry of the audit log: every mode change, baseline import, alert
/// accepted, quarantine and release.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Increasing number of the entry.
    pub seq: u64,
    /// RFC 3339 time.
    pub at: String,
    /// Who did it: the token's role (`admin`), or the controller
    /// (`auto-quarantine`).
    pub actor: String,
    /// What was done: `mode`, `import`, `accept`, `quarantine`, `release`.
    pub action: String,
    /// What it was done to: a namespace, a workload, an alert id.
    pub target: String,
    /// The value before.
    pub old: String,
    /// The value after.
    pub new: String,
}

/// The storage key of an alert.
pub fn alert_key(kind: AlertKind, namespace: &str, workload: &str, destination: &str) -> String {
    format!("{}|{namespace}/{workload}|{destination}", kind.as_str())
}

/// Seconds since the Unix epoch, now.
pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Formats Unix seconds as RFC 3339 UTC, e.g. `2026-11-23T17:53:59Z`.
pub fn rfc3339(unix: u64) -> String {
    let days = unix / 86_400;
    let secs = unix % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm), valid for dates after 1970.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    if year > 9999 {
        return format!(
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
            secs / 3600,
            secs / 60 % 60,
            secs % 60
        );
    }
    // Digit by digit: every edge view a snapshot rebuilds writes two.
    let mut out = String::with_capacity(20);
    let mut two = |n: u64, then: Option<char>| {
        out.push(char::from(b'0' + (n / 10 % 10) as u8));
        out.push(char::from(b'0' + (n % 10) as u8));
        out.extend(then);
    };
    two(year / 100, None);
    two(year % 100, Some('-'));
    two(month, Some('-'));
    two(day, Some('T'));
    two(secs / 3600, Some(':'));
    two(secs / 60 % 60, Some(':'));
    two(secs % 60, Some('Z'));
    out
}

/// `METHOD path`, the form endpoints are counted and learned in, handed to
/// `f`: built on the stack when short, since every observation asks.
pub fn with_endpoint<R>(method: &str, path: &str, f: impl FnOnce(&str) -> R) -> R {
    const SHORT: usize = 256;
    let len = method.len() + 1 + path.len();
    if len > SHORT {
        return f(&format!("{method} {path}"));
    }
    let mut buf = [0u8; SHORT];
    buf[..method.len()].copy_from_slice(method.as_bytes());
    buf[method.len()] = b' ';
    buf[method.len() + 1..len].copy_from_slice(path.as_bytes());
    f(std::str::from_utf8(&buf[..len]).expect("two strings and a space"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_method_space_path_whatever_their_length() {
        let long = format!("/{}", "a".repeat(300));
        let at_edge = format!("/{}", "b".repeat(256 - "GET /".len()));
        let table = [
            ("GET", "/api/items/{id}", "GET /api/items/{id}"),
            ("", "", " "),
            ("POST", "/ünïcödé/☃", "POST /ünïcödé/☃"),
            ("GET", at_edge.as_str(), &*format!("GET {at_edge}")),
            ("PUT", long.as_str(), &*format!("PUT {long}")),
        ];
        for (method, path, want) in table {
            assert_eq!(with_endpoint(method, path, str::to_owned), want, "{path}");
        }
    }

    #[test]
    fn node_ids_round_trip_through_strings() {
        let ids = [
            NodeId::Internet,
            NodeId::Workload(WorkloadId::new("notebooks", "jupyter-alice").unwrap()),
            NodeId::External("pypi.org:443".into()),
        ];
        for id in ids {
            assert_eq!(id.to_string().parse::<NodeId>().unwrap(), id);
        }
        assert!("workload:nons".parse::<NodeId>().is_err());
        assert!("external:".parse::<NodeId>().is_err());
        assert!("pod:x".parse::<NodeId>().is_err());
    }

    #[test]
    fn names_are_validated() {
        assert!(WorkloadId::new("default", "web-1.v2_a").is_ok());
        assert_eq!(
            WorkloadId::new("", "a"),
            Err(NameError::Empty { what: "namespace" })
        );
        assert!(WorkloadId::new("default", "Web").is_err());
        assert!(WorkloadId::new("default", "a/b").is_err());
        assert!(WorkloadId::new("default", &"a".repeat(254)).is_err());
    }

    #[test]
    fn modes_fall_back_to_the_default() {
        let mut modes = Modes::default();
        assert_eq!(modes.of("x"), Mode::Learning);
        modes.default = Mode::Enforcement { alert_only: false };
        modes
            .namespaces
            .insert("lab".into(), Mode::Enforcement { alert_only: true });
        assert!(modes.of("x").blocks());
        assert!(!modes.of("lab").blocks());
        assert_eq!(modes.of("lab").action(), Action::Flagged);
        assert_eq!(modes.of("lab").label(), "alert-only");
    }

    #[test]
    fn mode_json_is_tagged() {
        let json = serde_json::to_string(&Mode::Enforcement { alert_only: true }).unwrap();
        assert_eq!(json, r#"{"mode":"enforcement","alert_only":true}"#);
        let back: Mode = serde_json::from_str(r#"{"mode":"learning"}"#).unwrap();
        assert_eq!(back, Mode::Learning);
    }

    #[test]
    fn rfc3339_formats_known_instants() {
        // Year 10000 and after: five digits.
        assert_eq!(rfc3339(253_402_300_800), "10000-01-01T00:00:00Z");
        assert_eq!(rfc3339(253_402_300_799), "9999-12-31T23:59:59Z");
        assert_eq!(rfc3339(1_000_000_000), "2001-09-09T01:46:40Z");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_456_439), "2026-11-23T17:53:59Z");
    }
}
