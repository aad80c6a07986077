//! `GET /api/v1/baseline/simulate`: the dry run of enforcement over the
//! recent history, judged against the current baseline.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{Api, ApiError};

/// Query of the dry run.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SimulateQuery {
    /// Only this namespace.
    namespace: Option<String>,
    /// The window, e.g. `1h` (default).
    since: Option<String>,
}

/// Replays the window and answers what enforcement would have done.
pub(super) async fn simulate(
    State(api): State<Api>,
    query: Result<Query<SimulateQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    if let Some(ns) = &query.namespace {
        crate::model::validate_name("namespace", ns)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    }
    let window = crate::simulate::parse_window(query.since.as_deref().unwrap_or("1h"))
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e))?;
    let report = api
        .engine
        .simulate(query.namespace, window)
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    Ok(Json(report).into_response())
}
