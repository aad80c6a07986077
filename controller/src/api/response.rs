//! The API's answers to people: quarantine and release, accepting an alert
//! into the baseline, the audit log, and the baseline as a YAML document
//! (export and import, see [`crate::baseline_doc`]).
//!
//! Changes are `POST`/`PUT`, which only the admin token (or an admin web
//! session) may send, so the audit log records them as `admin`. A refused
//! change (unknown workload or alert, a bad document) changes nothing.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::{Api, ApiError};
use crate::baseline_doc;
use crate::engine::{EngineError, ResponseError};
use crate::model::{Quarantine, WorkloadId, validate_name};

/// Who the audit log names for a change made through the API: only the
/// admin role may change anything.
pub const ACTOR: &str = "admin";

/// Largest baseline document accepted by `PUT /api/v1/baseline`.
pub const MAX_DOCUMENT_BYTES: usize = 16 << 20;

/// Media type of the baseline document.
pub const YAML: &str = "application/yaml";

fn engine_error(e: EngineError) -> ApiError {
    let status = match &e {
        EngineError::Refused(ResponseError::NoAlert(_) | ResponseError::UnknownWorkload(_)) => {
            StatusCode::NOT_FOUND
        }
        EngineError::Refused(
            ResponseError::NotAcceptable(_) | ResponseError::CpuLearnsByItself,
        ) => StatusCode::CONFLICT,
        EngineError::Store(_) | EngineError::Stopped => StatusCode::SERVICE_UNAVAILABLE,
    };
    ApiError::new(status, e.to_string())
}

fn bad_request(e: impl ToString) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, e.to_string())
}

/// Answer of `POST /api/v1/workloads/{ns}/{name}/quarantine` and `.../release`.
#[derive(Debug, Serialize, Deserialize)]
pub struct QuarantineView {
    /// The workload, `NS/NAME`.
    pub workload: String,
    /// Whether it is quarantined now.
    pub quarantined: bool,
    /// Whether this call changed that (false: it already was).
    pub changed: bool,
}

/// One entry of `GET /api/v1/quarantine`.
#[derive(Debug, Serialize, Deserialize)]
pub struct QuarantinedView {
    /// The workload, `NS/NAME`.
    pub workload: String,
    /// Since when, who and why.
    #[serde(flatten)]
    pub quarantine: Quarantine,
}

async fn set_quarantine(api: &Api, ns: &str, name: &str, on: bool) -> Result<Response, ApiError> {
    let id = WorkloadId::new(ns, name).map_err(bad_request)?;
    let changed = api
        .engine
        .quarantine(id.clone(), on, ACTOR)
        .await
        .map_err(engine_error)?;
    Ok(Json(QuarantineView {
        workload: id.to_string(),
        quarantined: on,
        changed,
    })
    .into_response())
}

/// `POST /api/v1/workloads/{ns}/{name}/quarantine`: every sidecar of the
/// workload refuses all traffic but its health checks, until released.
pub(super) async fn quarantine(
    State(api): State<Api>,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    set_quarantine(&api, &ns, &name, true).await
}

/// `POST /api/v1/workloads/{ns}/{name}/release`.
pub(super) async fn release(
    State(api): State<Api>,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    set_quarantine(&api, &ns, &name, false).await
}

/// `GET /api/v1/quarantine`: the workloads under quarantine.
pub(super) async fn quarantined(State(api): State<Api>) -> Json<Vec<QuarantinedView>> {
    let snapshot = api.engine.snapshot();
    Json(
        snapshot
            .quarantined
            .iter()
            .map(|(workload, q)| QuarantinedView {
                workload: workload.clone(),
                quarantine: q.clone(),
            })
            .collect(),
    )
}

/// `POST /api/v1/alerts/{id}/accept`: what the alert saw becomes normal;
/// answers the alert.
pub(super) async fn accept(
    State(api): State<Api>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let alert = api.engine.accept(id, ACTOR).await.map_err(engine_error)?;
    Ok(Json(alert).into_response())
}

/// `GET /api/v1/audit`: the audit log, oldest first.
pub(super) async fn audit(State(api): State<Api>) -> Result<Response, ApiError> {
    let entries = api.engine.audit().await.map_err(engine_error)?;
    Ok(Json(entries).into_response())
}

/// Query of `GET` and `PUT /api/v1/baseline`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BaselineQuery {
    namespace: Option<String>,
    #[serde(default)]
    merge: Option<bool>,
}

fn query(q: Result<Query<BaselineQuery>, QueryRejection>) -> Result<BaselineQuery, ApiError> {
    let Query(q) = q.map_err(|e| bad_request(e.body_text()))?;
    if let Some(ns) = &q.namespace {
        validate_name("namespace", ns).map_err(bad_request)?;
    }
    Ok(q)
}

/// `GET /api/v1/baseline[?namespace=NS]`: the baseline document, YAML.
pub(super) async fn export(
    State(api): State<Api>,
    q: Result<Query<BaselineQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    if q.merge.is_some() {
        return Err(bad_request("merge applies to PUT only"));
    }
    let baseline = api.engine.export().await.map_err(engine_error)?;
    let yaml = baseline_doc::to_yaml(&baseline, q.namespace.as_deref());
    Ok(([(header::CONTENT_TYPE, YAML)], yaml).into_response())
}

/// Answer of `PUT /api/v1/baseline`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ImportView {
    /// The namespace imported, or none for all.
    pub namespace: Option<String>,
    /// Added to the baseline (true) or replaced it.
    pub merged: bool,
    /// The baseline's size before.
    pub before: Sizes,
    /// And after.
    pub after: Sizes,
}

/// Numbers of workloads and edges in a baseline.
#[derive(Debug, Serialize, Deserialize)]
pub struct Sizes {
    /// Workloads (profiles).
    pub workloads: usize,
    /// Edges.
    pub edges: usize,
}

/// `PUT /api/v1/baseline?merge=true|false[&namespace=NS]` with the YAML
/// document as body: checked whole first (a bad one changes nothing and
/// its error names the line), then merged into or replacing the baseline
/// of the namespace (of the document's `namespace:`, or of every namespace).
pub(super) async fn import(
    State(api): State<Api>,
    q: Result<Query<BaselineQuery>, QueryRejection>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let text = std::str::from_utf8(&body)
        .map_err(|e| bad_request(format!("the baseline document is not UTF-8 text: {e}")))?;
    let parsed = baseline_doc::parse(text)
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
    let namespace = match (q.namespace, parsed.namespace) {
        (Some(asked), Some(file)) if asked != file => {
            return Err(bad_request(format!(
                "the document is for namespace {file}, not {asked}"
            )));
        }
        (asked, file) => asked.or(file),
    };
    let merged = q.merge.unwrap_or(false);
    let (before, after) = api
        .engine
        .import(parsed.baseline, namespace.clone(), merged, ACTOR)
        .await
        .map_err(engine_error)?;
    let sizes = |(workloads, edges)| Sizes { workloads, edges };
    Ok(Json(ImportView {
        namespace,
        merged,
        before: sizes(before),
        after: sizes(after),
    })
    .into_response())
}
