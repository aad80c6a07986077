//! AdmissionReview in, AdmissionResponse out: the mutating decision
//! (`/mutate`: the JSONPatch that injects the sidecar) and the validating
//! one (`/validate`: deny, in enforcement, a pod that could undo the
//! interception; admit it with warnings otherwise). Pure: the namespace and
//! its mode are looked up by the caller. Anything unexpected is admitted
//! unchanged with a warning, so a pod is never broken by the webhook.

pub mod profile;

use ::kube::core::DynamicObject;
use ::kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use serde_json::Value;

use super::config::SidecarArgs;
use super::identity::Namespace;
use super::inject::{Decision, decide, inject};
use super::risks::risks;
use crate::model::Mode;

/// Why an AdmissionReview could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    /// The body is not an AdmissionReview.
    #[error("the body is not an AdmissionReview (admission.k8s.io/v1): {0}")]
    Parse(#[from] serde_json::Error),
    /// It has no `request`.
    #[error("the AdmissionReview has no request")]
    NoRequest,
}

/// A parsed review: the typed request, and its object as sent.
#[derive(Debug)]
pub struct Review {
    /// The request (uid, kind, operation, ...).
    pub request: AdmissionRequest<DynamicObject>,
    /// `request.object` exactly as the API server sent it.
    pub object: Option<Value>,
}

/// Reads an AdmissionReview body.
pub fn parse(body: &[u8]) -> Result<Review, ReviewError> {
    let raw: Value = serde_json::from_slice(body)?;
    let object = raw
        .pointer("/request/object")
        .filter(|o| !o.is_null())
        .cloned();
    let review: AdmissionReview<DynamicObject> = serde_json::from_value(raw)?;
    let request = review.try_into().map_err(|_| ReviewError::NoRequest)?;
    Ok(Review { request, object })
}

/// The response to a body that could not be read: admitted (so that a
/// webhook fault never breaks a pod), with the reason as a warning.
pub fn unreadable(error: &ReviewError) -> AdmissionReview<DynamicObject> {
    let mut response = AdmissionResponse::invalid(error.to_string());
    response.allowed = true;
    response.warnings = Some(vec![format!("vigil: {error}")]);
    response.into_review()
}

/// A review as JSON, its patch a base64 string (as the Kubernetes
/// documentation writes `patch`; kube-rs would write an array of bytes).
pub fn to_json(review: &AdmissionReview<DynamicObject>) -> Value {
    use base64::Engine;
    let mut value = serde_json::to_value(review).unwrap_or(Value::Null);
    if let Some(patch) = review.response.as_ref().and_then(|r| r.patch.as_ref())
        && let Some(response) = value.get_mut("response").and_then(Value::as_object_mut)
    {
        let encoded = base64::engine::general_purpose::STANDARD.encode(patch);
        response.insert("patch".into(), Value::String(encoded));
    }
    value
}

/// The namespace of a request: its `namespace`, else the object's.
pub fn namespace_of(review: &Review) -> String {
    review
        .request
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .or_else(|| {
            review
                .object
                .as_ref()?
                .pointer("/metadata/namespace")?
                .as_str()
                .map(str::to_owned)
        })
        .unwrap_or_default()
}

/// The pod a review is about, when it is a pod being created (or, for
/// validation, given ephemeral containers).
fn pod(review: &Review, ephemeral_too: bool) -> Option<&Value> {
    let request = &review.request;
    let is_pod = request.kind.kind == "Pod" && request.kind.group.is_empty();
    let sub = request.sub_resource.as_deref().unwrap_or("");
    let wanted = match (&request.operation, sub) {
        (Operation::Create, "") => true,
        (Operation::Update, "ephemeralcontainers") => ephemeral_too,
        _ => false,
    };
    if is_pod && wanted {
        review.object.as_ref()
    } else {
        None
    }
}

fn allowed(review: &Review) -> AdmissionResponse {
    AdmissionResponse::from(&review.request)
}

fn warn(mut response: AdmissionResponse, warning: String) -> AdmissionResponse {
    response.warnings.get_or_insert_with(Vec::new).push(warning);
    response
}

/// `/mutate`: the patch that injects the sidecar, if the pod gets one.
/// `namespace` is `None` when it could not be looked up: then only the
/// pod's own `vigil.io/inject: enabled` counts.
pub fn mutate(
    review: &Review,
    namespace: Option<&Namespace>,
    args: &SidecarArgs,
) -> AdmissionResponse {
    let Some(object) = pod(review, false) else {
        return allowed(review);
    };
    let unknown = Namespace {
        name: namespace_of(review),
        ..Namespace::default()
    };
    let ns = namespace.unwrap_or(&unknown);
    if decide(object, ns) != Decision::Inject {
        let response = allowed(review);
        return match namespace {
            Some(_) => response,
            None => warn(
                response,
                format!(
                    "vigil: namespace {} could not be read; the pod was not injected",
                    ns.name
                ),
            ),
        };
    }
    let mut injected = object.clone();
    if injected.pointer("/metadata/namespace").is_none() && !ns.name.is_empty() {
        // The identity needs it; the patch must not add it.
        injected["metadata"]["namespace"] = Value::String(ns.name.clone());
    }
    let mut injected = inject(&injected, ns, args);
    if object.pointer("/metadata/namespace").is_none()
        && let Some(meta) = injected.get_mut("metadata").and_then(Value::as_object_mut)
    {
        meta.remove("namespace");
    }
    let patch = json_patch::diff(object, &injected);
    if patch.0.is_empty() {
        return allowed(review);
    }
    match allowed(review).with_patch(patch) {
        Ok(response) => response,
        Err(e) => warn(
            allowed(review),
            format!("vigil: the patch could not be written: {e}"),
        ),
    }
}

/// `/validate`: denies, when `mode` blocks, a pod that could get around the
/// sidecar; otherwise admits it, with each risk as a warning.
pub fn validate(
    review: &Review,
    namespace: Option<&Namespace>,
    mode: Mode,
    args: &SidecarArgs,
) -> AdmissionResponse {
    let Some(object) = pod(review, true) else {
        return allowed(review);
    };
    let Some(ns) = namespace else {
        return warn(
            allowed(review),
            format!(
                "vigil: namespace {} could not be read; the pod was not checked",
                namespace_of(review)
            ),
        );
    };
    let found = risks(object, ns, args);
    if found.is_empty() {
        return allowed(review);
    }
    let reasons: Vec<String> = found.iter().map(ToString::to_string).collect();
    if mode.blocks() {
        allowed(review).deny(format!(
            "vigil: namespace {} is in enforcement and this pod could get around its sidecar: {}",
            ns.name,
            reasons.join("; ")
        ))
    } else {
        let mut response = allowed(review);
        response.warnings = Some(reasons.into_iter().map(|r| format!("vigil: {r}")).collect());
        response
    }
}

#[cfg(test)]
mod tests;
