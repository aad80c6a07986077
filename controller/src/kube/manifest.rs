//! `vigilctl inject` and `vigilctl uninject`: YAML manifests (several
//! documents, `List`s) in, the same manifests with the sidecar added or
//! removed out, through the webhook's own [`inject`] and [`uninject`]. Pod
//! templates (Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob,
//! a Kubeflow Notebook) are injected with the identity their pods will get.

use serde_json::{Value, json};

use super::config::SidecarArgs;
use super::identity::{Namespace, str_at};
use super::inject::{Decision, INJECT, decide, inject, uninject};

/// Why a manifest could not be handled.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The input is not YAML.
    #[error("{source_name}: not a YAML manifest: {reason}")]
    Yaml {
        /// Where the manifest came from (a file name, or `-`).
        source_name: String,
        /// The parser's message (with line and column).
        reason: String,
    },
    /// The output could not be written as YAML.
    #[error("cannot write the manifest as YAML: {0}")]
    Write(String),
}

/// A changed manifest and what happened to each object.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The manifest, as YAML documents separated by `---`.
    pub yaml: String,
    /// One line per object, e.g. `deployment/web injected`.
    pub report: Vec<String>,
}

/// Options of `vigilctl inject`.
#[derive(Clone, Debug, Default)]
pub struct InjectOptions {
    /// How the sidecar is rendered.
    pub sidecar: SidecarArgs,
    /// Render for a namespace where Istio injects its sidecar too.
    pub istio: bool,
}

/// Injects the sidecar into every pod and pod template of `input`.
pub fn inject_manifest(
    source_name: &str,
    input: &str,
    options: &InjectOptions,
) -> Result<Outcome, ManifestError> {
    rewrite(source_name, input, &mut |pod, kind, name, namespace| {
        let mut labels = std::collections::BTreeMap::new();
        labels.insert(INJECT.to_owned(), "enabled".to_owned());
        if options.istio {
            labels.insert("istio-injection".to_owned(), "enabled".to_owned());
        }
        let ns = Namespace {
            name: namespace.to_owned(),
            labels,
            ..Namespace::default()
        };
        let result = match decide(pod, &ns) {
            Decision::Inject => {
                *pod = inject(pod, &ns, &options.sidecar);
                "injected".to_owned()
            }
            Decision::Skip(why) => format!("skipped: {why}"),
        };
        format!("{}/{name} {result}", kind.to_ascii_lowercase())
    })
}

/// Removes the sidecar from every pod and pod template of `input`.
pub fn uninject_manifest(source_name: &str, input: &str) -> Result<Outcome, ManifestError> {
    rewrite(source_name, input, &mut |pod, kind, name, _| {
        let before = pod.clone();
        *pod = uninject(pod);
        let result = if *pod == before {
            "unchanged"
        } else {
            "uninjected"
        };
        format!("{}/{name} {result}", kind.to_ascii_lowercase())
    })
}

/// A pod (or template) handler: the pod, its owner's kind, name and
/// namespace in; a report line out.
type Handler<'a> = dyn FnMut(&mut Value, &str, &str, &str) -> String + 'a;

fn rewrite(
    source_name: &str,
    input: &str,
    handle: &mut Handler<'_>,
) -> Result<Outcome, ManifestError> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(input).map_err(|e| ManifestError::Yaml {
        source_name: source_name.to_owned(),
        reason: e.to_string(),
    })?;
    let mut out = Outcome::default();
    let mut texts = Vec::new();
    for mut doc in docs.into_iter().filter(|d| !d.is_null()) {
        visit(&mut doc, handle, &mut out.report);
        texts.push(serde_saphyr::to_string(&doc).map_err(|e| ManifestError::Write(e.to_string()))?);
    }
    out.yaml = texts.join("---\n");
    Ok(out)
}

/// Where the pod template of each kind lives.
fn template_pointer(kind: &str) -> Option<&'static str> {
    match kind {
        "Deployment"
        | "ReplicaSet"
        | "StatefulSet"
        | "DaemonSet"
        | "Job"
        | "ReplicationController"
        | "Notebook" => Some("/spec/template"),
        "CronJob" => Some("/spec/jobTemplate/spec/template"),
        _ => None,
    }
}

fn visit(doc: &mut Value, handle: &mut Handler<'_>, report: &mut Vec<String>) {
    let kind = str_at(doc, "/kind").to_owned();
    let name = str_at(doc, "/metadata/name").to_owned();
    let namespace = str_at(doc, "/metadata/namespace").to_owned();
    if kind == "List" || kind.ends_with("List") {
        if let Some(items) = doc.get_mut("items").and_then(Value::as_array_mut) {
            for item in items {
                visit(item, handle, report);
            }
        }
        return;
    }
    if kind == "Pod" {
        report.push(handle(doc, &kind, &name, &namespace));
        return;
    }
    let Some(pointer) = template_pointer(&kind) else {
        report.push(format!(
            "{}/{name} left alone: not a pod or pod template",
            kind.to_ascii_lowercase()
        ));
        return;
    };
    let Some(template) = doc.pointer_mut(pointer) else {
        report.push(format!(
            "{}/{name} left alone: no pod template",
            kind.to_ascii_lowercase()
        ));
        return;
    };
    // The template's pods will be owned by this object: say so while the
    // identity is computed, then leave the template as it was.
    let had_meta = template.get("metadata").is_some();
    if !template.is_object() {
        *template = json!({});
    }
    let meta = template
        .as_object_mut()
        .expect("made an object above")
        .entry("metadata")
        .or_insert_with(|| json!({}));
    let mut added_namespace = false;
    if let Some(meta) = meta.as_object_mut() {
        meta.insert(
            "ownerReferences".into(),
            json!([{"kind": kind, "name": name, "controller": true}]),
        );
        if !namespace.is_empty() && !meta.contains_key("namespace") {
            meta.insert("namespace".into(), namespace.clone().into());
            added_namespace = true;
        }
    }
    let line = handle(template, &kind, &name, &namespace);
    if let Some(meta) = template.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("ownerReferences");
        if added_namespace {
            meta.remove("namespace");
        }
        if meta.is_empty()
            && !had_meta
            && let Some(t) = template.as_object_mut()
        {
            t.remove("metadata");
        }
    }
    report.push(line);
}

#[cfg(test)]
mod tests;
