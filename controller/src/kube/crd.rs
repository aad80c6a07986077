//! State in the cluster: the `VigilPolicy` custom resource (one per
//! namespace, named `default`: its mode) and `VigilBaseline` (one per
//! profile: the profile and its learned edges; etcd refuses objects over
//! about 1.5 MiB, so a whole namespace in one object would not scale).
//! Their CRDs are generated from these types into `charts/vigil/crds/`.
//!
//! Pure: conversions between the resources and the engine's [`Mode`] and
//! [`Baseline`], each checked (a namespace's resources can only speak for
//! that namespace: an edge of another namespace's workload is refused, so
//! whoever may write VigilBaselines in one namespace cannot widen
//! another's). The watch that applies them is in [`sync`].

pub mod baselines;
pub mod sync;

use std::collections::BTreeMap;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResource;
use kube::core::CustomResourceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::baseline::Baseline;
use crate::baseline_doc::{self, Doc, EdgeDoc, NamespaceDoc};
use crate::model::{Mode, NodeId};

/// The group of Vigil's resources.
pub const GROUP: &str = "vigil.io";
/// The name of the VigilPolicy that sets its namespace's mode (others in
/// the namespace are ignored).
pub const POLICY_NAME: &str = "default";
/// The actor Vigil's audit log names for changes made through resources.
pub const ACTOR: &str = "kubernetes";

/// A namespace's mode, as a resource writes it.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyMode {
    /// Everything observed is added to the baseline.
    Learning,
    /// Outside the baseline is alerted and blocked.
    Enforcement,
    /// Outside the baseline is alerted, not blocked.
    AlertOnly,
}

impl From<PolicyMode> for Mode {
    fn from(mode: PolicyMode) -> Self {
        match mode {
            PolicyMode::Learning => Mode::Learning,
            PolicyMode::Enforcement => Mode::Enforcement { alert_only: false },
            PolicyMode::AlertOnly => Mode::Enforcement { alert_only: true },
        }
    }
}

impl From<Mode> for PolicyMode {
    fn from(mode: Mode) -> Self {
        match mode {
            Mode::Learning => PolicyMode::Learning,
            Mode::Enforcement { alert_only: false } => PolicyMode::Enforcement,
            Mode::Enforcement { alert_only: true } => PolicyMode::AlertOnly,
        }
    }
}

/// A namespace's Vigil settings (`kubectl get vigilpolicy -n NS default`).
#[derive(CustomResource, Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[kube(
    group = "vigil.io",
    version = "v1alpha1",
    kind = "VigilPolicy",
    namespaced,
    shortname = "vpol",
    printcolumn = r#"{"name":"Mode","type":"string","jsonPath":".spec.mode"}"#
)]
pub struct VigilPolicySpec {
    /// `learning`, `enforcement` or `alert-only`.
    pub mode: PolicyMode,
}

/// One learned edge of a profile.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub struct BaselineEdge {
    /// Caller: `workload:NS/PROFILE` (this profile) or `internet`.
    pub from: String,
    /// Callee: `workload:NS/NAME`, `external:HOST:PORT`.
    pub to: String,
    /// Learned endpoints (`METHOD path-template`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<String>,
}

/// One profile's part of its namespace's baseline.
#[derive(
    CustomResource, Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq,
)]
#[kube(
    group = "vigil.io",
    version = "v1alpha1",
    kind = "VigilBaseline",
    namespaced,
    shortname = "vbl",
    printcolumn = r#"{"name":"Profile","type":"string","jsonPath":".spec.profile"}"#
)]
pub struct VigilBaselineSpec {
    /// The profile, as the baseline names it (`/` written `.`).
    pub profile: String,
    /// Its edges: from it, or from the internet to it.
    #[serde(default)]
    pub edges: Vec<BaselineEdge>,
}

/// Why resources could not be read as a baseline.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CrdError {
    /// An edge that does not belong to the resource's profile.
    #[error(
        "VigilBaseline {namespace}/{name}: edge {from} -> {to} is not of profile {profile} (from it, or from the internet to it): a namespace's resources only speak for that namespace"
    )]
    ForeignEdge {
        /// The resource's namespace.
        namespace: String,
        /// The resource's name.
        name: String,
        /// Its profile.
        profile: String,
        /// The edge's caller.
        from: String,
        /// The edge's callee.
        to: String,
    },
    /// The resources do not make a valid baseline document.
    #[error("VigilBaselines of namespace {namespace}: {source}")]
    Doc {
        /// The namespace.
        namespace: String,
        /// What the baseline reader said.
        source: baseline_doc::DocError,
    },
}

/// The CRDs of Vigil's resources, as the chart installs them.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![VigilBaseline::crd(), VigilPolicy::crd()]
}

/// The CRDs as one YAML file (`charts/vigil/crds/vigil.io.yaml`).
pub fn crds_yaml() -> String {
    let mut out = String::from(
        "# Generated from controller/src/kube/crd.rs (the crd tests check it): do not edit.\n",
    );
    for crd in crds() {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(&crd).unwrap_or_default());
    }
    out
}

/// The resource name of `profile`: itself when it is a valid name, else
/// made one (lower case, other characters `-`) with a hash of the profile
/// so that two profiles never share a name.
pub fn resource_name(profile: &str) -> String {
    let valid = !profile.is_empty()
        && profile.len() <= 200
        && profile
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && profile.starts_with(|c: char| c.is_ascii_alphanumeric())
        && profile.ends_with(|c: char| c.is_ascii_alphanumeric());
    if valid {
        return profile.to_owned();
    }
    let mut base: String = profile
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '-' | '.') => c,
            _ => '-',
        })
        .take(180)
        .collect();
    base = base
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_owned();
    let hash = sha2::Sha256::digest(profile.as_bytes());
    let hex: String = hash[..4].iter().map(|b| format!("{b:02x}")).collect();
    if base.is_empty() {
        format!("profile-{hex}")
    } else {
        format!("{base}-{hex}")
    }
}

/// The profile (in `namespace`) an edge belongs to: its caller's, or its
/// callee's when the internet calls.
fn edge_profile<'a>(namespace: &str, from: &'a NodeId, to: &'a NodeId) -> Option<&'a str> {
    match (from, to) {
        (NodeId::Workload(id), _) | (NodeId::Internet, NodeId::Workload(id))
            if id.namespace == namespace =>
        {
            Some(&id.name)
        }
        _ => None,
    }
}

/// `namespace`'s part of `baseline` as resources, by resource name.
pub fn baseline_resources(
    baseline: &Baseline,
    namespace: &str,
) -> BTreeMap<String, VigilBaselineSpec> {
    let mut by_profile: BTreeMap<String, VigilBaselineSpec> = BTreeMap::new();
    fn entry<'m>(
        by_profile: &'m mut BTreeMap<String, VigilBaselineSpec>,
        profile: &str,
    ) -> &'m mut VigilBaselineSpec {
        by_profile
            .entry(profile.to_owned())
            .or_insert_with(|| VigilBaselineSpec {
                profile: profile.to_owned(),
                edges: Vec::new(),
            })
    }
    for id in baseline.workloads().filter(|id| id.namespace == namespace) {
        entry(&mut by_profile, &id.name);
    }
    for edge in baseline.edges() {
        let Some(profile) = edge_profile(namespace, &edge.0, &edge.1) else {
            continue;
        };
        entry(&mut by_profile, profile).edges.push(BaselineEdge {
            from: edge.0.to_string(),
            to: edge.1.to_string(),
            endpoints: baseline.endpoints_of(edge).cloned().collect(),
        });
    }
    by_profile
        .into_values()
        .map(|mut spec| {
            spec.edges
                .sort_by(|a, b| (&a.from, &a.to).cmp(&(&b.from, &b.to)));
            (resource_name(&spec.profile), spec)
        })
        .collect()
}

/// The baseline of `namespace` that its resources (name, spec) hold, each
/// value checked as `vigilctl baseline import` checks a document.
pub fn baseline_from_resources<'a>(
    namespace: &str,
    resources: impl IntoIterator<Item = (&'a str, &'a VigilBaselineSpec)>,
) -> Result<Baseline, CrdError> {
    let mut part = NamespaceDoc::default();
    for (name, spec) in resources {
        part.workloads.push(spec.profile.clone());
        let own = format!("workload:{namespace}/{}", spec.profile);
        for edge in &spec.edges {
            let ours = edge.from == own || (edge.from == "internet" && edge.to == own);
            if !ours {
                return Err(CrdError::ForeignEdge {
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                    profile: spec.profile.clone(),
                    from: edge.from.clone(),
                    to: edge.to.clone(),
                });
            }
            part.edges.push(EdgeDoc {
                from: edge.from.clone(),
                to: edge.to.clone(),
                endpoints: edge.endpoints.clone(),
            });
        }
    }
    part.workloads.sort();
    part.workloads.dedup();
    let doc = Doc {
        version: baseline_doc::VERSION,
        namespace: Some(namespace.to_owned()),
        namespaces: [(namespace.to_owned(), part)].into(),
    };
    baseline_doc::parse(&doc.to_yaml())
        .map(|parsed| parsed.baseline)
        .map_err(|source| CrdError::Doc {
            namespace: namespace.to_owned(),
            source,
        })
}

#[cfg(test)]
#[path = "crd_tests.rs"]
mod tests;
