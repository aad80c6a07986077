//! The data path's shared context: what every connection handler needs
//! (policy, telemetry, limits, resolver, upstream clients, metrics), a
//! request in flight ([`Pending`]) and the responses the sidecar answers
//! itself (403, 502, 400, 200 to `CONNECT`). HTTP (`http`) and streams
//! (`tcp`) both use it; it uses neither, so they do not import each other.
//!
//! Data-path tier: uses `body`, `policy`, `resolve`, `stream`,
//! `telemetry` and `upstream`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde_json::json;
use tokio::sync::watch;

use crate::body::{self, CountingBody, Finish, ProxyBody, finishing, full};
use crate::config::Limits;
use crate::model::{Direction, Identity, Protocol, Record};
use crate::policy::{Decision, Policy, PolicyRx, evaluate_outbound};
use crate::resolve::Lookup;
use crate::resolve::Resolver;
use crate::telemetry::Telemetry;
use crate::upstream::Connector;

/// The one pooled upstream client shared by both directions.
pub type UpstreamClient = Client<Connector, CountingBody<body::RequestBody>>;

/// Builds a pooled upstream client (TCP_NODELAY, keep-alive pool): HTTP/1.1,
/// or HTTP/2 with prior knowledge when `h2` (for clients that spoke HTTP/2
/// to us, gRPC among them).
pub fn upstream_client(h2: bool) -> UpstreamClient {
    let connector = Connector::new(Duration::from_secs(10));
    let mut builder = Client::builder(TokioExecutor::new());
    builder.pool_idle_timeout(Duration::from_secs(90));
    if h2 {
        builder.http2_only(true);
    }
    builder.build(connector)
}

/// The upstream clients, by protocol.
#[derive(Clone, Debug)]
pub struct UpstreamClients {
    /// HTTP/1.1.
    pub http1: UpstreamClient,
    /// HTTP/2 prior knowledge.
    pub http2: UpstreamClient,
}

impl UpstreamClients {
    /// Both pools.
    pub fn new() -> Self {
        Self {
            http1: upstream_client(false),
            http2: upstream_client(true),
        }
    }
}

impl Default for UpstreamClients {
    fn default() -> Self {
        Self::new()
    }
}

/// `direction` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum DirectionLabel {
    /// Inbound requests.
    inbound,
    /// Outbound requests.
    outbound,
}

impl From<Direction> for DirectionLabel {
    fn from(d: Direction) -> Self {
        match d {
            Direction::Inbound => DirectionLabel::inbound,
            Direction::Outbound => DirectionLabel::outbound,
        }
    }
}

/// `decision` label.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum DecisionLabel {
    /// Forwarded.
    allow,
    /// Denied by policy.
    deny,
    /// Failed (bad request, resolution or upstream failure).
    error,
}

/// Labels of `vigil_proxy_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Direction.
    pub direction: DirectionLabel,
    /// Outcome.
    pub decision: DecisionLabel,
}

/// Labels of `vigil_proxy_request_duration_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DurationLabels {
    /// Direction.
    pub direction: DirectionLabel,
}

fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Metrics of the HTTP data path.
#[derive(Clone, Debug)]
pub struct HttpMetrics {
    /// Every series of `vigil_proxy_requests_total`, made at start (and so
    /// exported as 0 until counted): by direction, then decision. A
    /// request counts without a lookup in the family (a lock and a hash).
    requests: [[Counter; 3]; 2],
    /// Every series of the duration histogram, by direction.
    duration: [Histogram; 2],
    /// Inbound requests whose `vigil-source` named a workload that does not
    /// call from the peer's IP (treated as the internet).
    pub spoofed_sources: Counter,
    /// Redirected inbound connections refused because they asked for one of
    /// the sidecar's own ports.
    pub inbound_refused: Counter,
}

impl HttpMetrics {
    /// Creates and registers the metrics.
    pub fn register(registry: &mut Registry) -> Self {
        let requests = Family::<RequestLabels, Counter>::default();
        let duration = Family::new_with_constructor(duration_histogram as fn() -> Histogram);
        registry.register(
            "vigil_proxy_requests",
            "Requests and tunnels handled, by direction and decision",
            requests.clone(),
        );
        registry.register(
            "vigil_proxy_request_duration_seconds",
            "Time to response headers (or tunnel setup)",
            duration.clone(),
        );
        let spoofed_sources = Counter::default();
        registry.register(
            "vigil_proxy_spoofed_sources",
            "Inbound requests whose vigil-source header named a workload that does not call from their IP; they count as the internet",
            spoofed_sources.clone(),
        );
        let inbound_refused = Counter::default();
        registry.register(
            "vigil_proxy_inbound_refused",
            "Redirected inbound connections refused because they asked for one of the sidecar's own ports",
            inbound_refused.clone(),
        );
        let directions = [DirectionLabel::inbound, DirectionLabel::outbound];
        let decisions = [
            DecisionLabel::allow,
            DecisionLabel::deny,
            DecisionLabel::error,
        ];
        HttpMetrics {
            requests: directions.clone().map(|direction| {
                decisions.map(|decision| {
                    let labels = RequestLabels {
                        direction: direction.clone(),
                        decision,
                    };
                    requests.get_or_create(&labels).clone()
                })
            }),
            duration: directions.map(|direction| {
                duration
                    .get_or_create(&DurationLabels { direction })
                    .clone()
            }),
            spoofed_sources,
            inbound_refused,
        }
    }

    fn record(&self, direction: Direction, decision: DecisionLabel, elapsed: Duration) {
        let d = match direction {
            Direction::Inbound => 0,
            Direction::Outbound => 1,
        };
        let i = match decision {
            DecisionLabel::allow => 0,
            DecisionLabel::deny => 1,
            DecisionLabel::error => 2,
        };
        self.requests[d][i].inc();
        self.duration[d].observe(elapsed.as_secs_f64());
    }
}

/// Everything a request handler needs, shared by all connections.
#[derive(Clone, Debug)]
pub struct Shared {
    /// The pooled upstream clients.
    pub client: UpstreamClients,
    /// Limits and timeouts.
    pub limits: Limits,
    /// The current policy.
    pub policy: PolicyRx,
    /// Where records go.
    pub telemetry: Telemetry,
    /// Data-path metrics.
    pub metrics: HttpMetrics,
    /// Name resolution.
    pub resolver: Resolver,
    /// Our identity.
    pub identity: Identity,
    /// `namespace/workload`, built once: the `vigil-source` header value on
    /// every outbound request and the `workload` of 403 bodies.
    pub source: HeaderValue,
    /// The local workload's address (inbound target).
    pub app_addr: SocketAddr,
    /// The ports the sidecar itself listens on: a redirected inbound
    /// connection to one of them is refused.
    pub sidecar_ports: Vec<u16>,
    /// Turns true when open tunnels must close (after the drain period).
    pub stop: watch::Receiver<bool>,
    /// Until when requests wait for the controller's first policy.
    pub policy_deadline: tokio::time::Instant,
    /// The policy applied when none came by then (`--default-policy`).
    pub default_policy: Arc<Policy>,
    /// How often open streams are reported (`--report-interval-ms`).
    pub report_interval: Duration,
}

/// A request in flight: its record so far, start time and body counter.
///
/// Once armed with [`Shared::track`], it is a guard: a request that ends
/// before it is answered (the client reset the stream, say a gRPC deadline,
/// or hung up) still emits its record, with status 0, when it is dropped.
#[derive(Debug)]
pub struct Pending {
    /// The record, filled in as the request progresses.
    pub record: Record,
    /// When the request arrived.
    pub start: Instant,
    /// Request body bytes.
    pub bytes_in: Arc<AtomicU64>,
    /// The policy it was judged by (none before its judgement): another
    /// one judges its bodies again.
    pub judged_by: Option<Arc<Policy>>,
    /// An inbound health check let through by a quarantine (see
    /// [`crate::policy::is_health_check`]): its response is not judged
    /// again, and is cut past [`crate::policy::HEALTH_BODY_MAX`].
    pub health_check: bool,
    /// Where the record goes if the request is dropped unanswered.
    guard: Option<Telemetry>,
}

impl Pending {
    /// Starts tracking a request (unarmed: nothing is emitted on drop).
    pub fn new(record: Record) -> Self {
        Pending {
            record,
            start: Instant::now(),
            bytes_in: Arc::new(AtomicU64::new(0)),
            judged_by: None,
            health_check: false,
            guard: None,
        }
    }

    /// Starts tracking `req`, which arrived at `start`: its protocol,
    /// method and path template. The caller fills in who called or where it
    /// goes.
    pub fn for_request<B>(direction: Direction, req: &Request<B>, start: Instant) -> Self {
        let mut pending = Pending::new(Record {
            method: req.method().as_str().to_string(),
            path: crate::template::template(req.uri().path()),
            ..Record::new(direction, Protocol::of_request(req))
        });
        pending.start = start;
        pending
    }

    /// Arms the guard: dropped unanswered, it emits its record to
    /// `telemetry` with status 0.
    pub fn armed(mut self, telemetry: Telemetry) -> Self {
        self.guard = Some(telemetry);
        self
    }

    /// Takes the record out and disarms the guard: the caller emits it.
    fn settle(mut self) -> (Record, Arc<AtomicU64>, Instant) {
        self.guard = None;
        let empty = Record::new(self.record.direction, self.record.protocol);
        let record = std::mem::replace(&mut self.record, empty);
        (record, self.bytes_in.clone(), self.start)
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(telemetry) = self.guard.take() {
            let empty = Record::new(self.record.direction, self.record.protocol);
            let mut record = std::mem::replace(&mut self.record, empty);
            record.status = 0;
            record.latency_us = self.start.elapsed().as_micros() as u64;
            record.bytes_in = self.bytes_in.load(std::sync::atomic::Ordering::Relaxed);
            telemetry.emit(record);
        }
    }
}

impl Shared {
    /// The policy to judge a request by: the controller's latest; before
    /// the first one arrives, a wait for it bounded by `--policy-wait-ms`
    /// after start, then `--default-policy`.
    pub async fn current_policy(&self) -> Arc<Policy> {
        crate::policy::current(&self.policy, self.policy_deadline, &self.default_policy).await
    }

    /// Counts the request, and wraps the response so that its record is
    /// emitted when the body is done. `status` is the status recorded (0 for
    /// transport errors).
    pub fn respond(
        &self,
        mut pending: Pending,
        response: Response<BoxBody<Bytes, hyper::Error>>,
        decision: DecisionLabel,
        status: u16,
    ) -> Response<ProxyBody> {
        let (judged, health_check) = (pending.judged_by.take(), pending.health_check);
        let (mut record, bytes_in, start) = pending.settle();
        let elapsed = start.elapsed();
        self.metrics.record(record.direction, decision, elapsed);
        record.status = status;
        record.latency_us = elapsed.as_micros() as u64;
        record.denied = decision == DecisionLabel::deny;
        let finish = Finish {
            record,
            bytes_in,
            telemetry: self.telemetry.clone(),
            live: None,
            cap: health_check.then_some(crate::policy::HEALTH_BODY_MAX),
        };
        let live = (decision == DecisionLabel::allow && !health_check)
            .then(|| body::Live::new(self.policy.clone(), self.report_interval, judged));
        response.map(|b| finishing(b, finish, live))
    }

    /// What a long-lived stream needs from the sidecar.
    pub fn stream_context(&self) -> crate::stream::StreamContext {
        crate::stream::StreamContext {
            telemetry: self.telemetry.clone(),
            policy: self.policy.clone(),
            report_interval: self.report_interval,
            idle_timeout: self.limits.idle_timeout(),
            stop: self.stop.clone(),
        }
    }

    /// Arms `pending` so that its record is emitted even if the request is
    /// dropped before it is answered.
    pub fn track(&self, pending: Pending) -> Pending {
        pending.armed(self.telemetry.clone())
    }

    /// The one decision on a destination the client named (an explicit
    /// proxy request: absolute-form or `CONNECT`): resolve `host`, judge
    /// `host:port` and its address, and give the address to connect to, or
    /// the answer that refuses it (403 JSON; 502 when it does not resolve),
    /// recorded on `pending`. The request then goes where the name resolved,
    /// so the name judged is the destination.
    pub async fn judge_named(
        &self,
        pending: Pending,
        host: &str,
        port: u16,
    ) -> Result<(SocketAddr, Pending), Response<ProxyBody>> {
        let mut pending = pending;
        let authority = format!("{host}:{port}");
        pending.record.authority = authority.clone();
        let policy = self.current_policy().await;
        let lookup = Lookup::allowed_if(crate::policy::may_look_up(&policy, host));
        let resolved = self.resolver.resolve(host, port, lookup).await;
        pending.record.resolved = resolved.as_ref().ok().copied();
        if let Decision::Deny { reason } =
            evaluate_outbound(&policy, &authority, pending.record.resolved)
        {
            let about = ("destination", authority.as_str());
            let response = denied_response(reason, about, self.workload(), &policy.mode);
            return Err(self.respond(pending, response, DecisionLabel::deny, 403));
        }
        pending.judged_by = Some(policy);
        match resolved {
            Ok(addr) => Ok((addr, pending)),
            Err(e) => {
                let response = unavailable_response(&authority, &e.to_string());
                Err(self.respond(pending, response, DecisionLabel::error, 0))
            }
        }
    }

    /// `namespace/workload` as text.
    pub fn workload(&self) -> &str {
        self.source.to_str().unwrap_or_default()
    }

    /// Counts a request that produced no record (e.g. not a proxy request).
    pub fn reject(
        &self,
        direction: Direction,
        start: Instant,
        response: Response<BoxBody<Bytes, hyper::Error>>,
    ) -> Response<ProxyBody> {
        self.metrics
            .record(direction, DecisionLabel::error, start.elapsed());
        self.untracked(response)
    }

    /// Counts a request in the metrics only.
    pub fn metrics_record(&self, direction: Direction, decision: DecisionLabel, elapsed: Duration) {
        self.metrics.record(direction, decision, elapsed);
    }

    /// Wraps a response without emitting any record.
    pub fn untracked(
        &self,
        response: Response<BoxBody<Bytes, hyper::Error>>,
    ) -> Response<ProxyBody> {
        response.map(|b| CountingBody::new(b, Arc::new(AtomicU64::new(0))))
    }
}

/// A JSON response with this status.
pub fn json_response(
    status: StatusCode,
    value: serde_json::Value,
) -> Response<BoxBody<Bytes, hyper::Error>> {
    let mut response = Response::new(full(value.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The 403 sent for a request denied by policy. `about` is the
/// `("destination", ..)` or `("source", ..)` pair.
pub fn denied_response(
    reason: &str,
    about: (&str, &str),
    workload: &str,
    mode: &str,
) -> Response<BoxBody<Bytes, hyper::Error>> {
    let mut body = json!({
        "error": "denied by vigil policy",
        "reason": reason,
        "workload": workload,
        "mode": mode,
    });
    body[about.0] = json!(about.1);
    json_response(StatusCode::FORBIDDEN, body)
}

/// The 502 sent when the destination cannot be reached or resolved.
pub fn unavailable_response(
    destination: &str,
    detail: &str,
) -> Response<BoxBody<Bytes, hyper::Error>> {
    json_response(
        StatusCode::BAD_GATEWAY,
        json!({"error": "upstream unavailable", "destination": destination, "detail": detail}),
    )
}

/// A 200 with an empty body (CONNECT established).
pub fn empty_ok() -> Response<BoxBody<Bytes, hyper::Error>> {
    Response::new(full(Bytes::new()))
}

#[cfg(test)]
mod tests;
