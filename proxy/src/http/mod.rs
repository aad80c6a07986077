//! HTTP/1.1 forwarding: the shared upstream client, header hygiene, JSON
//! error responses and per-request bookkeeping (metrics and telemetry).
//!
//! Data-path tier: uses `policy`, `template`, `resolve` and `telemetry`;
//! never `control` or `admin`.

pub mod body;
mod headers;
pub mod inbound;
pub mod outbound;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde_json::json;
use tokio::sync::watch;

pub use headers::{decline_h2c, request_for_upstream, response_for_client, strip_hop_by_hop};

use crate::config::Limits;
use crate::model::{Direction, Identity, Protocol, Record};
use crate::policy::{Policy, PolicyRx};
use crate::resolve::Resolver;
use crate::stream::{Inspect, Judge, LiveRecord, Stream};
use crate::telemetry::Telemetry;
use body::{CountingBody, Finish, ProxyBody, finishing, full};

/// The one pooled upstream client shared by both directions.
pub type UpstreamClient = Client<HttpConnector, CountingBody<Incoming>>;

/// Builds a pooled upstream client (TCP_NODELAY, keep-alive pool): HTTP/1.1,
/// or HTTP/2 with prior knowledge when `h2` (for clients that spoke HTTP/2
/// to us, gRPC among them).
pub fn upstream_client(h2: bool) -> UpstreamClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(10)));
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
    requests: Family<RequestLabels, Counter>,
    duration: Family<DurationLabels, Histogram, fn() -> Histogram>,
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
        HttpMetrics {
            requests,
            duration,
            spoofed_sources,
            inbound_refused,
        }
    }

    fn record(&self, direction: Direction, decision: DecisionLabel, elapsed: Duration) {
        let direction = DirectionLabel::from(direction);
        self.requests
            .get_or_create(&RequestLabels {
                direction: direction.clone(),
                decision,
            })
            .inc();
        self.duration
            .get_or_create(&DurationLabels { direction })
            .observe(elapsed.as_secs_f64());
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
        let current = self.policy.borrow().clone();
        if current.is_from_controller() {
            return current;
        }
        let mut rx = self.policy.clone();
        let first = rx.wait_for(|p| p.is_from_controller());
        match tokio::time::timeout_at(self.policy_deadline, first).await {
            Ok(Ok(policy)) => policy.clone(),
            _ => self.default_policy.clone(),
        }
    }

    /// Counts the request, and wraps the response so that its record is
    /// emitted when the body is done. `status` is the status recorded (0 for
    /// transport errors).
    pub fn respond(
        &self,
        pending: Pending,
        response: Response<BoxBody<Bytes, hyper::Error>>,
        decision: DecisionLabel,
        status: u16,
    ) -> Response<ProxyBody> {
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
        };
        let live = (decision == DecisionLabel::allow)
            .then(|| body::Live::new(self.policy.clone(), self.report_interval));
        response.map(|b| finishing(b, finish, live))
    }

    /// Runs an upgraded connection (after `101`) as a live stream: reported
    /// while open, judged again on policy changes, and, for WebSocket,
    /// inspected inside its frames. Its opening request was counted already.
    fn spawn_upgraded(
        &self,
        client: hyper::upgrade::OnUpgrade,
        server: hyper::upgrade::OnUpgrade,
        request: &Record,
        websocket: bool,
    ) {
        let mut record = request.clone();
        record.status = StatusCode::SWITCHING_PROTOCOLS.as_u16();
        let stream = Stream {
            judge: Judge::of_record(&record),
            live: LiveRecord::counted(record),
            inspect: if websocket {
                Inspect::WebSocket
            } else {
                Inspect::Raw
            },
            start: Instant::now(),
        };
        let ctx = self.stream_context();
        tokio::spawn(async move {
            match tokio::try_join!(client, server) {
                Ok((client, server)) => {
                    let (client, server) = (TokioIo::new(client), TokioIo::new(server));
                    crate::stream::pipe(&ctx, client, server, stream, |_| {}).await;
                }
                Err(e) => tracing::debug!(error = %e, "upgrade failed"),
            }
        });
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

    /// `namespace/workload` as text.
    pub fn workload(&self) -> &str {
        self.source.to_str().unwrap_or_default()
    }

    /// Sends `req` to `addr` (see [`Shared::send`]) and answers with the
    /// upstream's response, or a 502 naming `destination` when it fails.
    pub async fn forward(
        &self,
        req: Request<Incoming>,
        addr: SocketAddr,
        destination: &str,
        pending: Pending,
    ) -> Response<ProxyBody> {
        match self.send(req, addr, destination, &pending).await {
            Ok(response) => {
                let status = response.status().as_u16();
                self.respond(pending, response, DecisionLabel::allow, status)
            }
            Err(e) => {
                tracing::debug!(%destination, %addr, error = %e, "upstream request failed");
                let response = unavailable_response(destination, &outbound::error_chain(&e));
                self.respond(pending, response, DecisionLabel::error, 0)
            }
        }
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

    /// Sends `req` to `addr` through a pooled client: rewrites the URI to
    /// `http://addr/path?query`, keeps (or sets) Host to `host`, strips
    /// hop-by-hop headers and counts the request body. HTTP/2 goes out as
    /// HTTP/2 (trailers and streaming kept); an HTTP/1.1 upgrade (WebSocket)
    /// is passed through and, on `101`, spliced byte for byte. An h2c
    /// upgrade offer is declined (see [`decline_h2c`]).
    pub async fn send(
        &self,
        mut req: Request<Incoming>,
        addr: SocketAddr,
        host: &str,
        pending: &Pending,
    ) -> Result<Response<BoxBody<Bytes, hyper::Error>>, hyper_util::client::legacy::Error> {
        let h2 = req.version() == http::Version::HTTP_2;
        decline_h2c(req.headers_mut());
        let (mut parts, body) = req.into_parts();
        let version = if h2 {
            http::Version::HTTP_2
        } else {
            http::Version::HTTP_11
        };
        let upgrade = request_for_upstream(&mut parts.headers, version);
        // The client's side of an upgrade, claimed before the request moves on.
        let client_side = upgrade
            .then(|| parts.extensions.remove::<hyper::upgrade::OnUpgrade>())
            .flatten();
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        parts.uri =
            Uri::try_from(format!("http://{addr}{path}")).unwrap_or_else(|_| Uri::from_static("/"));
        parts.version = version;
        if !h2
            && !parts.headers.contains_key(header::HOST)
            && let Ok(value) = HeaderValue::from_str(host)
        {
            parts.headers.insert(header::HOST, value);
        }
        let body = CountingBody::new(body, pending.bytes_in.clone());
        let client = if h2 {
            &self.client.http2
        } else {
            &self.client.http1
        };
        let mut response = client.request(Request::from_parts(parts, body)).await?;
        let upgraded = response.status() == StatusCode::SWITCHING_PROTOCOLS;
        match client_side {
            Some(client_side) if upgraded => {
                let server_side = hyper::upgrade::on(&mut response);
                let websocket = is_websocket(response.headers());
                response_for_client(response.headers_mut(), true);
                self.spawn_upgraded(client_side, server_side, &pending.record, websocket);
            }
            _ => response_for_client(response.headers_mut(), false),
        }
        Ok(response.map(BodyExt::boxed))
    }
}

/// Whether a `101` switched to WebSocket.
fn is_websocket(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case("websocket"))
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
