//! The admin listener: `/live`, `/ready`, `/metrics` (OpenMetrics text) and
//! `/config_dump` (the configuration and the policy in force, as JSON).
//!
//! Outside-I/O tier: reads the shared registry, config and policy; the
//! data path never depends on it. Readiness does not depend on the
//! controller.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use prometheus_client::registry::Registry;
use serde_json::json;

use crate::config::Config;
use crate::policy::PolicyRx;

/// Content type of `/metrics`.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What the admin endpoints read.
#[derive(Debug)]
pub struct AdminState {
    /// All metrics.
    pub registry: Registry,
    /// True once every listener is bound.
    pub ready: AtomicBool,
    /// The validated configuration.
    pub config: Config,
    /// The current policy.
    pub policy: PolicyRx,
}

fn text(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}

/// Answers one admin request.
pub async fn serve(
    state: Arc<AdminState>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    const PLAIN: &str = "text/plain; charset=utf-8";
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(text(StatusCode::METHOD_NOT_ALLOWED, PLAIN, "use GET\n"));
    }
    let response = match req.uri().path() {
        "/live" => text(StatusCode::OK, PLAIN, "live\n"),
        "/ready" if state.ready.load(Ordering::Relaxed) => text(StatusCode::OK, PLAIN, "ready\n"),
        "/ready" => text(StatusCode::SERVICE_UNAVAILABLE, PLAIN, "not ready\n"),
        "/metrics" => {
            let mut out = String::new();
            match prometheus_client::encoding::text::encode(&mut out, &state.registry) {
                Ok(()) => text(StatusCode::OK, OPENMETRICS, out),
                Err(_) => text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    PLAIN,
                    "cannot encode metrics\n",
                ),
            }
        }
        "/config_dump" => {
            let policy = state.policy.borrow().clone();
            let dump = json!({ "config": state.config, "policy": *policy });
            text(StatusCode::OK, "application/json", dump.to_string())
        }
        _ => text(
            StatusCode::NOT_FOUND,
            PLAIN,
            "not found: try /live, /ready, /metrics, /config_dump\n",
        ),
    };
    Ok(response)
}
