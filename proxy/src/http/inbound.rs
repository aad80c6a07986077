//! The inbound side: peers calling the local workload. The caller is named
//! by the `vigil-source` header its own proxy set (absent: the internet).

use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;

use super::body::ProxyBody;
use super::{DecisionLabel, Pending, Shared, denied_response};
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
        let caller = source.as_deref().unwrap_or(INTERNET);
        let response = denied_response(reason, ("source", caller), shared.workload(), &policy.mode);
        return Ok(shared.respond(pending, response, DecisionLabel::deny, 403));
    }
    Ok(shared.forward(req, app, &app.to_string(), pending).await)
}
