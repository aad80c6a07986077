//! The HTTP API for `vigilctl` and the web view: JSON reads of the latest
//! snapshot, the live stream of its changes, and typed commands to the
//! engine.
//!
//! Secure by default: every `/api/` call needs `Authorization: Bearer
//! <token>` (the admin token in `<data-dir>/admin.token`, or the read-only
//! viewer token in `<data-dir>/viewer.token`) or a web session
//! ([`crate::web::guard`]); only `/healthz` and `/metrics` (counts, no names)
//! are open. The web pages are merged in from [`crate::web`].

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::engine::Handle;
use crate::model::{Mode, validate_name};
use crate::snapshot::{GraphJson, namespace_modes};

mod response;
mod simulate;
use axum::extract::DefaultBodyLimit;
use axum::routing::post;
pub use response::{ImportView, QuarantineView, QuarantinedView, Sizes, YAML};

/// Shared state of the handlers.
#[derive(Clone)]
struct Api {
    engine: Handle,
    web: crate::web::Web,
    started: std::time::Instant,
    registry: Arc<Registry>,
}

/// A JSON error response: `{"error": "..."}` with a status code.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

/// Builds the router.
pub fn router(engine: Handle, web: crate::web::Web, registry: Arc<Registry>) -> Router {
    let api = Api {
        engine,
        web: web.clone(),
        started: std::time::Instant::now(),
        registry,
    };
    let authed = Router::new()
        .route("/api/v1/status", get(status))
        .route("/api/v1/mode", get(modes).put(set_mode).post(set_mode))
        .route("/api/v1/graph", get(graph))
        .route("/api/v1/alerts", get(alerts))
        .route("/api/v1/alerts/{id}/accept", post(response::accept))
        .route("/api/v1/quarantine", get(response::quarantined))
        .route(
            "/api/v1/workloads/{ns}/{name}/quarantine",
            post(response::quarantine),
        )
        .route(
            "/api/v1/workloads/{ns}/{name}/release",
            post(response::release),
        )
        .route("/api/v1/audit", get(response::audit))
        .route("/api/v1/baseline/simulate", get(simulate::simulate))
        .route(
            "/api/v1/baseline",
            get(response::export)
                .put(response::import)
                .layer(DefaultBodyLimit::max(response::MAX_DOCUMENT_BYTES)),
        )
        .route("/api/v1/threats/check", get(crate::threat::api::check))
        .route("/api/v1/events", get(events))
        .fallback(not_found)
        .route_layer(middleware::from_fn_with_state(api.clone(), authenticate));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .merge(authed)
        .with_state(api)
        .merge(crate::web::router(web))
}

async fn authenticate(State(api): State<Api>, request: Request, next: Next) -> Response {
    match api.web.authorize(request.method(), request.headers()) {
        Ok(_) => next.run(request).await,
        Err(refusal) if refusal.status() == StatusCode::UNAUTHORIZED => {
            unauthorized(&refusal.to_string())
        }
        Err(refusal) => ApiError::new(refusal.status(), refusal.to_string()).into_response(),
    }
}

/// `GET /api/v1/events`: the live stream (see [`crate::web::events`]).
async fn events(State(api): State<Api>) -> Response {
    api.web.events(api.engine.clone())
}

fn unauthorized(why: &str) -> Response {
    let body = json!({
        "error": why,
        "hint": "use the token in <data-dir>/admin.token (vigilctl --token-file or VIGIL_TOKEN)",
    });
    let mut response = (StatusCode::UNAUTHORIZED, Json(body)).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    response
}

/// `GET /metrics`: Prometheus text (counts only, no auth, like `/healthz`).
async fn metrics(State(api): State<Api>) -> Response {
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &api.registry) {
        return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such API endpoint")
}

/// `GET /api/v1/status`.
#[derive(Debug, Serialize, Deserialize)]
pub struct StatusView {
    /// Always true when the controller answers.
    pub healthy: bool,
    /// Controller version.
    pub version: String,
    /// Seconds since start.
    pub uptime_seconds: u64,
    /// Default mode.
    pub default_mode: Mode,
    /// Mode per known namespace.
    pub modes: std::collections::BTreeMap<String, Mode>,
    /// Counts of workloads, sidecars, graph and alerts.
    #[serde(flatten)]
    pub counts: crate::snapshot::Counts,
    /// Notification deliveries per sink (none when none is configured).
    #[serde(default)]
    pub notifications: crate::notify::NotificationsView,
    /// Learning stability per namespace whose baseline grew.
    #[serde(default)]
    pub stability: std::collections::BTreeMap<String, crate::stability::Stability>,
}

async fn status(
    State(api): State<Api>,
    notify: Option<axum::Extension<crate::notify::Status>>,
) -> Json<StatusView> {
    let snap = api.engine.snapshot();
    Json(StatusView {
        healthy: true,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        uptime_seconds: api.started.elapsed().as_secs(),
        default_mode: snap.modes.default,
        modes: namespace_modes(&snap),
        counts: snap.counts.clone(),
        notifications: notify.map(|n| n.0.view()).unwrap_or_default(),
        stability: snap.stability.clone(),
    })
}

/// `GET /api/v1/mode`: the default and every known namespace's mode.
#[derive(Debug, Serialize, Deserialize)]
pub struct ModesView {
    /// Mode of namespaces without their own.
    pub default: Mode,
    /// Mode per namespace (set explicitly or seen in the graph).
    pub namespaces: std::collections::BTreeMap<String, Mode>,
}

async fn modes(State(api): State<Api>) -> Json<ModesView> {
    let snap = api.engine.snapshot();
    Json(ModesView {
        default: snap.modes.default,
        namespaces: namespace_modes(&snap),
    })
}

/// Body of `PUT /api/v1/mode`.
#[derive(Debug, Serialize, Deserialize)]
pub struct SetModeRequest {
    /// `learning` or `enforcement`.
    pub mode: String,
    /// With `enforcement`: alert but do not block.
    #[serde(default)]
    pub alert_only: bool,
    /// Only this namespace; all namespaces (and the default) when absent.
    #[serde(default)]
    pub namespace: Option<String>,
}

async fn set_mode(
    State(api): State<Api>,
    body: Result<Json<SetModeRequest>, JsonRejection>,
) -> Result<Json<ModesView>, ApiError> {
    let Json(req) = body.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let mode = match (req.mode.as_str(), req.alert_only) {
        ("learning", false) => Mode::Learning,
        ("learning", true) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "alert_only applies to enforcement mode only",
            ));
        }
        ("enforcement", alert_only) => Mode::Enforcement { alert_only },
        (other, _) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("unknown mode {other:?}: use learning or enforcement"),
            ));
        }
    };
    if let Some(ns) = &req.namespace {
        validate_name("namespace", ns)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    }
    api.engine
        .set_mode(req.namespace, mode)
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    Ok(modes(State(api)).await)
}

async fn graph(State(api): State<Api>) -> Response {
    let snapshot = api.engine.snapshot();
    // The nodes, and the edges a snapshot made that warming has not
    // reached yet, are encoded here: off the async runtime.
    let json = match tokio::task::spawn_blocking(move || GraphJson::new(snapshot)).await {
        Ok(json) => json,
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    let len = json.content_length();
    let pieces = futures_util::stream::iter(json.map(Ok::<_, std::convert::Infallible>));
    (
        [
            (header::CONTENT_TYPE, "application/json".to_owned()),
            (header::CONTENT_LENGTH, len.to_string()),
        ],
        axum::body::Body::from_stream(pieces),
    )
        .into_response()
}

/// Filters of `GET /api/v1/alerts`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertFilter {
    tenant: Option<String>,
    namespace: Option<String>,
    kind: Option<String>,
    /// The least severity shown.
    severity: Option<String>,
}

async fn alerts(
    State(api): State<Api>,
    query: Result<axum::extract::Query<AlertFilter>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let axum::extract::Query(filter) =
        query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let bad = |e: String| ApiError::new(StatusCode::BAD_REQUEST, e);
    let kind = filter
        .kind
        .as_deref()
        .map(str::parse::<crate::model::AlertKind>)
        .transpose()
        .map_err(bad)?;
    let severity = filter
        .severity
        .as_deref()
        .map(str::parse::<crate::model::Severity>)
        .transpose()
        .map_err(bad)?;
    let snapshot = api.engine.snapshot();
    let shown: Vec<&crate::model::Alert> = snapshot
        .alerts
        .iter()
        .filter(|a| filter.tenant.as_ref().is_none_or(|t| &a.tenant == t))
        .filter(|a| filter.namespace.as_ref().is_none_or(|n| &a.namespace == n))
        .filter(|a| kind.is_none_or(|k| a.kind == k))
        .filter(|a| severity.is_none_or(|s| a.severity >= s))
        .collect();
    Ok(Json(shown).into_response())
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;
    use crate::model::{Batch, WorkloadId, outbound};

    /// `GET /api/v1/graph` of a graph larger than one piece: the body comes
    /// in several frames, adds up to its Content-Length, and is the graph
    /// (each edge once, in order).
    #[tokio::test]
    async fn the_graph_is_streamed_with_its_length() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, thread) = crate::engine::spawn(
            crate::store::Store::open(dir.path()).unwrap(),
            &mut Registry::default(),
        )
        .unwrap();
        let observations = (0..400)
            .map(|i| outbound(&format!("svc-{i:03}.example.com:443"), None, 1))
            .collect();
        engine
            .report(Batch {
                reporter: WorkloadId::new("default", "nb").unwrap(),
                instance: String::new(),
                seq: 0,
                observations,
                dropped: 0,
            })
            .await
            .unwrap();
        let (_stop, stopped) = tokio::sync::watch::channel(false);
        let web = crate::web::Web::new(crate::web::Tokens::new("admin", "viewer"), stopped);
        let app = router(engine.clone(), web, Arc::new(Registry::default()));
        let request = axum::http::Request::get("/api/v1/graph")
            .header(header::AUTHORIZATION, "Bearer viewer")
            .body(Body::empty())
            .unwrap();
        let response = app.oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let length: usize = response.headers()[header::CONTENT_LENGTH]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let mut body = response.into_body();
        let (mut frames, mut bytes) = (0, Vec::new());
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.unwrap().into_data() {
                frames += 1;
                bytes.extend_from_slice(&data);
            }
        }
        assert!(frames > 1, "{frames} frame(s) of {length} bytes");
        assert_eq!(bytes.len(), length);
        let graph: crate::snapshot::GraphView = serde_json::from_slice(&bytes).unwrap();
        let targets: Vec<&str> = graph.edges.iter().map(|e| &*e.target).collect();
        assert_eq!(targets.len(), 400);
        assert!(targets.is_sorted(), "in order");
        assert_eq!(targets[0], "external:svc-000.example.com:443");
        // The engine stops once its last handle is gone.
        drop(engine);
        tokio::task::spawn_blocking(move || thread.join().unwrap())
            .await
            .unwrap();
    }
}
