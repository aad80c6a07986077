//! The inbound side: peers calling the local workload. The caller is named
//! by the `vigil-source` header its own proxy set (absent: the internet),
//! believed only from an IP that workload calls from (see
//! [`identify_caller`]).

use std::sync::Arc;

use http::{Request, Response};
use hyper::body::{Body as _, Incoming};

use crate::body::ProxyBody;
use crate::context::{DecisionLabel, Pending, Shared, denied_response};
use crate::model::{Direction, SOURCE_HEADER, parse_source};
use crate::policy::{
    Caller, Decision, INTERNET, evaluate_inbound, identify_caller, is_health_check,
};

/// The app a connection's requests go to, with its name made once per
/// connection rather than per request.
#[derive(Clone, Debug)]
pub struct App {
    /// Its address.
    pub addr: std::net::SocketAddr,
    /// `addr` as text (the Host of requests without one, and error bodies).
    pub name: Arc<str>,
}

impl App {
    /// The app at `addr`.
    pub fn new(addr: std::net::SocketAddr) -> Self {
        App {
            addr,
            name: addr.to_string().into(),
        }
    }
}

/// Handles one inbound request from `peer`: identify, decide, forward to
/// `app`.
pub async fn serve(
    shared: Arc<Shared>,
    app: App,
    peer: std::net::IpAddr,
    mut req: Request<Incoming>,
) -> Result<Response<ProxyBody>, std::convert::Infallible> {
    let start = std::time::Instant::now();
    let claimed = req
        .headers()
        .get(SOURCE_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_source)
        .map(str::to_string);
    req.headers_mut().remove(SOURCE_HEADER);
    let policy = shared.current_policy().await;
    let caller = identify_caller(&policy, claimed.as_deref(), peer);
    if let Caller::Spoofed(name) = &caller {
        shared.metrics.spoofed_sources.inc();
        tracing::debug!(%peer, claimed = %name, "vigil-source from an IP that workload does not call from; the caller is the internet");
    }
    let source = caller.identity().map(str::to_string);
    let mut pending = shared.track(Pending::for_request(Direction::Inbound, &req, start));
    pending.record.source = source.clone().unwrap_or_default();
    match caller {
        Caller::Spoofed(name) => pending.record.claimed_source = name,
        // A claim outside the baseline: the controller checks the IP.
        Caller::Unverified(_) => pending.record.source_ip = Some(peer.to_canonical()),
        Caller::Internet | Caller::Verified(_) => {}
    }
    // A quarantine lets the pod's health checks through, from anyone (looked
    // at only then: nothing more per request otherwise).
    pending.health_check = policy.quarantined && {
        let upgrade = req.method() == http::Method::CONNECT
            || req.headers().contains_key(http::header::UPGRADE);
        let body = !req.body().is_end_stream();
        is_health_check(
            &shared.limits.health_paths,
            req.method(),
            req.uri().path(),
            upgrade,
            body,
        )
    };
    if !pending.health_check
        && let Decision::Deny { reason } = evaluate_inbound(&policy, source.as_deref())
    {
        let caller = source.as_deref().unwrap_or(INTERNET);
        let response = denied_response(reason, ("source", caller), shared.workload(), &policy.mode);
        return Ok(shared.respond(pending, response, DecisionLabel::deny, 403));
    }
    pending.judged_by = Some(policy);
    Ok(shared
        .forward(req, app.addr, &app.name, super::Hop::Inbound, pending)
        .await)
}
