//! Opaque TCP tunnels opened with HTTP `CONNECT`: policy first, then the
//! upstream connection, then `200` and a byte-for-byte copy.
//!
//! Data-path tier: uses `policy`, `telemetry` and the `http` helpers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::http::body::ProxyBody;
use crate::http::outbound::empty_ok;
use crate::http::{DecisionLabel, Pending, Shared, denied_response, unavailable_response};
use crate::model::{Direction, Protocol, Record};
use crate::policy::{Decision, evaluate_outbound};

/// How long connecting to the tunnel's destination may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Handles `CONNECT host:port`.
pub async fn connect(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    host: String,
    port: u16,
) -> Response<ProxyBody> {
    let start = Instant::now();
    let authority = format!("{host}:{port}");
    let resolved = shared.resolver.resolve(&host, port).await;
    let mut record = Record {
        direction: Direction::Outbound,
        protocol: Protocol::Tcp,
        source: String::new(),
        authority: authority.clone(),
        resolved: resolved.as_ref().ok().copied(),
        method: "CONNECT".to_string(),
        path: String::new(),
        status: 0,
        latency_us: 0,
        bytes_in: 0,
        bytes_out: 0,
        denied: false,
    };
    let policy = shared.policy.borrow().clone();
    if let Decision::Deny { reason } = evaluate_outbound(&policy, &authority, record.resolved) {
        let workload = shared.identity.source();
        let response =
            denied_response(reason, ("destination", &authority), &workload, &policy.mode);
        return shared.respond(Pending::new(record), response, DecisionLabel::deny, 403);
    }
    let addr = match resolved {
        Ok(addr) => addr,
        Err(e) => {
            let response = unavailable_response(&authority, &e.to_string());
            return shared.respond(Pending::new(record), response, DecisionLabel::error, 0);
        }
    };
    let upstream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            let response = unavailable_response(&authority, &e.to_string());
            return shared.respond(Pending::new(record), response, DecisionLabel::error, 0);
        }
        Err(_) => {
            let response = unavailable_response(&authority, "connect timed out");
            return shared.respond(Pending::new(record), response, DecisionLabel::error, 0);
        }
    };
    let _ = upstream.set_nodelay(true);
    shared.metrics_record(Direction::Outbound, DecisionLabel::allow, start.elapsed());
    let tunnel_shared = shared.clone();
    tokio::spawn(async move {
        let mut stop = tunnel_shared.stop.clone();
        let mut upstream = upstream;
        let copied = tokio::select! {
            upgraded = hyper::upgrade::on(req) => match upgraded {
                Ok(upgraded) => {
                    let mut client = TokioIo::new(upgraded);
                    tokio::select! {
                        r = tokio::io::copy_bidirectional(&mut client, &mut upstream) => r.ok(),
                        _ = crate::model::stopped(&mut stop) => None,
                    }
                }
                Err(e) => {
                    tracing::debug!(%authority, error = %e, "CONNECT upgrade failed");
                    None
                }
            },
            _ = crate::model::stopped(&mut stop) => None,
        };
        let (bytes_in, bytes_out) = copied.unwrap_or_default();
        record.bytes_in = bytes_in;
        record.bytes_out = bytes_out;
        record.latency_us = start.elapsed().as_micros() as u64;
        tunnel_shared.telemetry.emit(record);
    });
    shared.untracked(empty_ok())
}
