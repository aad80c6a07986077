//! The inbound side: peers calling the local workload. The caller is named
//! by the `vigil-source` header its own proxy set (absent: the internet).

use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;

use super::body::ProxyBody;
use super::outbound::error_chain;
use super::{DecisionLabel, Pending, Shared, denied_response, unavailable_response};
use crate::model::{Direction, Protocol, Record, SOURCE_HEADER, parse_source};
use crate::policy::{Decision, INTERNET, evaluate_inbound};
use crate::template::template;

/// Handles one inbound request: identify, decide, forward to the app at `app`.
pub async fn serve(
    shared: Arc<Shared>,
    app: std::net::SocketAddr,
    mut req: Request<Incoming>,
) -> Result<Response<ProxyBody>, std::convert::Infallible> {
    let source = req
        .headers()
        .get(SOURCE_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_source)
        .map(str::to_string);
    req.headers_mut().remove(SOURCE_HEADER);
    let pending = Pending::new(Record {
        direction: Direction::Inbound,
        protocol: Protocol::of_request(&req),
        source: source.clone().unwrap_or_default(),
        authority: String::new(),
        resolved: None,
        method: req.method().as_str().to_string(),
        path: template(req.uri().path()),
        status: 0,
        latency_us: 0,
        bytes_in: 0,
        bytes_out: 0,
        denied: false,
    });
    let policy = shared.current_policy().await;
    if let Decision::Deny { reason } = evaluate_inbound(&policy, source.as_deref()) {
        let workload = shared.identity.source();
        let caller = source.as_deref().unwrap_or(INTERNET);
        let response = denied_response(reason, ("source", caller), &workload, &policy.mode);
        return Ok(shared.respond(pending, response, DecisionLabel::deny, 403));
    }
    let host = app.to_string();
    match shared.send(req, app, &host, &pending).await {
        Ok(response) => {
            let status = response.status().as_u16();
            Ok(shared.respond(pending, response, DecisionLabel::allow, status))
        }
        Err(e) => {
            tracing::debug!(%app, error = %e, "application request failed");
            let response = unavailable_response(&host, &error_chain(&e));
            Ok(shared.respond(pending, response, DecisionLabel::error, 0))
        }
    }
}
