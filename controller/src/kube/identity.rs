//! Who a pod is: the workload (from its owner: Deployment, StatefulSet,
//! Job, a Kubeflow Notebook, a JupyterHub single-user server), namespace,
//! service account, image, profile and tenant. Pure functions over the pod
//! and namespace as JSON, table-tested.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

/// The label (and annotation) KubeSpawner puts on a JupyterHub user's pod.
pub const JUPYTERHUB_USERNAME: &str = "hub.jupyter.org/username";
/// The label Kubeflow's notebook controller puts on a Notebook's pod.
pub const KUBEFLOW_NOTEBOOK: &str = "notebook-name";
/// The label of a Kubeflow profile namespace.
pub const KUBEFLOW_PART_OF: &str = "app.kubernetes.io/part-of";
/// The annotation of a Kubeflow profile namespace naming its owner.
pub const KUBEFLOW_OWNER: &str = "owner";
/// A pod label naming the profile (baseline group) explicitly.
pub const PROFILE_LABEL: &str = "vigil.io/profile";

/// What the injector knows of a namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Namespace {
    /// Its name.
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its annotations.
    pub annotations: BTreeMap<String, String>,
}

impl Namespace {
    /// A namespace from a Kubernetes `Namespace` object as JSON.
    pub fn from_object(object: &Value) -> Self {
        Self {
            name: str_at(object, "/metadata/name").to_owned(),
            labels: string_map(object.pointer("/metadata/labels")),
            annotations: string_map(object.pointer("/metadata/annotations")),
        }
    }

    /// Whether this is a Kubeflow profile namespace.
    pub fn is_kubeflow_profile(&self) -> bool {
        self.labels.get(KUBEFLOW_PART_OF).map(String::as_str) == Some("kubeflow-profile")
    }
}

/// The identity the sidecar is given.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Identity {
    /// What owns the pod: `Deployment`, `StatefulSet`, `Notebook`,
    /// `JupyterHub`, `Pod` (none), ...
    pub owner_kind: String,
    /// The workload name (`--workload`).
    pub workload: String,
    /// The namespace (`--namespace`).
    pub namespace: String,
    /// The pod's service account.
    pub service_account: String,
    /// The image of the pod's first app container.
    pub image: String,
    /// The profile (`--profile`): the `vigil.io/profile` label, else the
    /// image repository without registry and tag; "" when neither is valid.
    pub profile: String,
    /// The tenant (`--tenant`): the JupyterHub user or the Kubeflow
    /// profile's owner; "" when unknown.
    pub tenant: String,
}

/// The string at `pointer`, or "".
pub fn str_at<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// A JSON object of strings as a map (other values are skipped).
pub fn string_map(value: Option<&Value>) -> BTreeMap<String, String> {
    value
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

/// The identity of `pod` (a Pod or a pod template as JSON) in `namespace`.
pub fn identify(pod: &Value, namespace: &Namespace) -> Identity {
    let labels = string_map(pod.pointer("/metadata/labels"));
    let annotations = string_map(pod.pointer("/metadata/annotations"));
    let (owner_kind, workload) = workload(pod, &labels, &annotations);
    let image = first_app_image(pod);
    let profile = match labels.get(PROFILE_LABEL) {
        Some(p) if vigil_proto::is_valid_profile(p) && !p.is_empty() => p.clone(),
        _ => image_profile(&image),
    };
    let service_account = match str_at(pod, "/spec/serviceAccountName") {
        "" => "default".to_owned(),
        sa => sa.to_owned(),
    };
    let ns = match str_at(pod, "/metadata/namespace") {
        "" => namespace.name.clone(),
        ns => ns.to_owned(),
    };
    Identity {
        owner_kind,
        workload,
        namespace: ns,
        service_account,
        image,
        profile,
        tenant: tenant(&labels, &annotations, namespace),
    }
}

/// The owner kind and workload name of a pod.
fn workload(
    pod: &Value,
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
) -> (String, String) {
    if let Some(notebook) = labels.get(KUBEFLOW_NOTEBOOK).filter(|n| !n.is_empty()) {
        return ("Notebook".into(), notebook.clone());
    }
    let owner = pod
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .and_then(|refs| {
            refs.iter()
                .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
                .or_else(|| refs.first())
        });
    if let Some(owner) = owner {
        let kind = str_at(owner, "/kind");
        let name = str_at(owner, "/name");
        return owner_workload(kind, name, labels);
    }
    let name = match str_at(pod, "/metadata/name") {
        "" => str_at(pod, "/metadata/generateName").trim_end_matches('-'),
        name => name,
    };
    let jupyterhub =
        labels.contains_key(JUPYTERHUB_USERNAME) || annotations.contains_key(JUPYTERHUB_USERNAME);
    let kind = if jupyterhub { "JupyterHub" } else { "Pod" };
    (kind.into(), name.to_owned())
}

/// The workload behind an owner reference: a ReplicaSet's Deployment (the
/// `pod-template-hash` suffix stripped), a Job's CronJob (the schedule
/// suffix stripped), or the owner itself.
pub fn owner_workload(
    kind: &str,
    name: &str,
    labels: &BTreeMap<String, String>,
) -> (String, String) {
    match kind {
        "ReplicaSet" => {
            let deployment = match labels.get("pod-template-hash") {
                Some(hash) => name
                    .strip_suffix(hash.as_str())
                    .and_then(|n| n.strip_suffix('-')),
                None => name
                    .rsplit_once('-')
                    .and_then(|(d, h)| looks_like_hash(h).then_some(d)),
            };
            match deployment {
                Some(d) if !d.is_empty() => ("Deployment".into(), d.to_owned()),
                _ => ("ReplicaSet".into(), name.to_owned()),
            }
        }
        "Job" => match name.rsplit_once('-') {
            // CronJob jobs are `<cronjob>-<scheduled minute>`.
            Some((cron, stamp))
                if stamp.len() >= 8 && stamp.bytes().all(|b| b.is_ascii_digit()) =>
            {
                ("CronJob".into(), cron.to_owned())
            }
            _ => ("Job".into(), name.to_owned()),
        },
        _ => (kind.to_owned(), name.to_owned()),
    }
}

/// Whether `s` looks like a `pod-template-hash` (Kubernetes' safe
/// alphabet, 5 to 10 characters).
fn looks_like_hash(s: &str) -> bool {
    (5..=10).contains(&s.len())
        && s.bytes()
            .all(|b| b"bcdfghjklmnpqrstvwxz2456789".contains(&b))
}

/// The tenant: the JupyterHub user (the raw annotation when it is a valid
/// tenant, else the escaped label), else the Kubeflow profile's owner.
fn tenant(
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
    namespace: &Namespace,
) -> String {
    let candidates = [
        annotations.get(JUPYTERHUB_USERNAME),
        labels.get(JUPYTERHUB_USERNAME),
        namespace
            .is_kubeflow_profile()
            .then(|| namespace.annotations.get(KUBEFLOW_OWNER))
            .flatten(),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|t| !t.is_empty() && vigil_proto::is_valid_tenant(t))
        .cloned()
        .unwrap_or_default()
}

/// The image of the first container that is neither Vigil's nor Istio's.
fn first_app_image(pod: &Value) -> String {
    pod.pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|c| crate::kube::inject::is_app_container(str_at(c, "/name")))
        .map(|c| str_at(c, "/image").to_owned())
        .unwrap_or_default()
}

/// An image's repository as a profile: registry, tag and digest dropped,
/// lower-cased; "" when that is not a valid profile.
/// `quay.io/jupyterhub/k8s-singleuser-sample:4.4.0` ->
/// `jupyterhub/k8s-singleuser-sample`.
pub fn image_profile(image: &str) -> String {
    let no_digest = image.split('@').next().unwrap_or("");
    let mut parts: Vec<&str> = no_digest.split('/').collect();
    if parts.len() > 1 {
        let first = parts[0];
        if first.contains('.') || first.contains(':') || first == "localhost" {
            parts.remove(0);
        }
    }
    let mut repo = parts.join("/");
    if let Some((name, tag)) = repo.rsplit_once(':')
        && !tag.contains('/')
    {
        repo = name.to_owned();
    }
    let repo = repo.to_ascii_lowercase();
    if vigil_proto::is_valid_profile(&repo) {
        repo
    } else {
        String::new()
    }
}

#[cfg(test)]
mod tests;
