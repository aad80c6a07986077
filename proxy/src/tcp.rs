//! Opaque streams: HTTP `CONNECT` tunnels, and redirected connections that
//! are not HTTP (TLS by SNI, Stratum, plain TCP). Policy first, then the
//! upstream connection, then a byte-for-byte copy with byte counts, an idle
//! timeout and one telemetry record when the stream ends.
//!
//! Data-path tier: uses `policy`, `sniff`, `telemetry` and the `http` helpers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::detect::Protocol as Detected;
use crate::http::body::ProxyBody;
use crate::http::outbound::empty_ok;
use crate::http::{DecisionLabel, Pending, Shared, denied_response, unavailable_response};
use crate::model::{Direction, Protocol, Record};
use crate::policy::{Decision, evaluate_inbound, evaluate_outbound};
use crate::sniff::{PrefixedIo, sniff};

/// How long connecting to a stream's destination may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The protocol recorded for an opaque stream, from what detection found.
pub fn stream_protocol(detected: &Detected) -> Protocol {
    match detected {
        Detected::Tls(_) => Protocol::Tls,
        Detected::Stratum(_) => Protocol::Stratum,
        Detected::Http2 => Protocol::Http2,
        Detected::Http1 => Protocol::Http1,
        Detected::Opaque => Protocol::Tcp,
    }
}

fn record(
    direction: Direction,
    protocol: Protocol,
    authority: String,
    resolved: Option<SocketAddr>,
    method: &str,
) -> Record {
    Record {
        authority,
        resolved,
        method: method.to_string(),
        ..Record::new(direction, protocol)
    }
}

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
    let mut record = record(
        Direction::Outbound,
        Protocol::Tcp,
        authority.clone(),
        resolved.as_ref().ok().copied(),
        "CONNECT",
    );
    let policy = shared.current_policy().await;
    if let Decision::Deny { reason } = evaluate_outbound(&policy, &authority, record.resolved) {
        let response = denied_response(
            reason,
            ("destination", &authority),
            shared.workload(),
            &policy.mode,
        );
        return shared.respond(Pending::new(record), response, DecisionLabel::deny, 403);
    }
    let addr = match resolved {
        Ok(addr) => addr,
        Err(e) => {
            let response = unavailable_response(&authority, &e.to_string());
            return shared.respond(Pending::new(record), response, DecisionLabel::error, 0);
        }
    };
    let upstream = match dial(addr).await {
        Ok(stream) => stream,
        Err(detail) => {
            let response = unavailable_response(&authority, &detail);
            return shared.respond(Pending::new(record), response, DecisionLabel::error, 0);
        }
    };
    shared.metrics_record(Direction::Outbound, DecisionLabel::allow, start.elapsed());
    let tunnel_shared = shared.clone();
    tokio::spawn(async move {
        let upgraded = match hyper::upgrade::on(req).await {
            Ok(upgraded) => upgraded,
            Err(e) => {
                tracing::debug!(%authority, error = %e, "CONNECT upgrade failed");
                return;
            }
        };
        // What runs inside the tunnel (TLS, Stratum, ...) is recorded too.
        let limits = &tunnel_shared.limits;
        let client = match sniff(TokioIo::new(upgraded), limits.detect_timeout()).await {
            Ok(sniffed) => {
                record.protocol = stream_protocol(&sniffed.protocol);
                if record.protocol == Protocol::Stratum {
                    tracing::warn!(%authority, "Stratum mining protocol in a CONNECT tunnel");
                }
                // The TLS name inside must go where the tunnel goes too.
                if let Detected::Tls(hello) = &sniffed.protocol
                    && let Some(sni) = hello.sni.as_deref()
                {
                    // The tunnel itself was judged by its CONNECT name:
                    // only a lie about the address is refused here.
                    let (judged, decision) = judge_stream(&tunnel_shared, Some(sni), addr).await;
                    let lied = judged.mismatch.is_some();
                    if let Some(claimed) = judged.mismatch {
                        tracing::info!(%claimed, %authority, "a TLS name inside a CONNECT tunnel that does not go to its address");
                        record.claimed_authority = claimed;
                    }
                    if lied && decision.is_deny() {
                        record.denied = true;
                        tunnel_shared.telemetry.emit(record);
                        return;
                    }
                }
                sniffed.io
            }
            Err(e) => {
                tracing::debug!(%authority, error = %e, "CONNECT tunnel closed early");
                return;
            }
        };
        pipe(&tunnel_shared, client, upstream, record, start).await;
    });
    shared.untracked(empty_ok())
}

/// Connects to `addr` within [`CONNECT_TIMEOUT`]; the error is a short
/// human-readable detail.
async fn dial(addr: SocketAddr) -> Result<TcpStream, String> {
    match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            Ok(stream)
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("connect timed out".to_string()),
    }
}

/// Forwards a redirected outbound connection that is not HTTP to its
/// original destination `dst`. Denied streams are reset (TCP RST), so the
/// client sees the connection refused rather than a half-open stream.
pub async fn forward_outbound(
    shared: Arc<Shared>,
    client: PrefixedIo<TcpStream>,
    detected: &Detected,
    dst: SocketAddr,
) {
    let start = Instant::now();
    let sni = match detected {
        Detected::Tls(hello) => hello.sni.as_deref(),
        _ => None,
    };
    let (judged, decision) = judge_stream(&shared, sni, dst).await;
    let mut record = record(
        Direction::Outbound,
        stream_protocol(detected),
        judged.authority.clone(),
        Some(dst),
        "",
    );
    if record.protocol == Protocol::Stratum {
        tracing::warn!(authority = %judged.authority, "Stratum mining protocol detected");
    }
    if let Some(claimed) = judged.mismatch {
        tracing::info!(%claimed, %dst, "a TLS name that does not go to this address; judged by the address");
        record.claimed_authority = claimed;
    }
    decide_then_pipe(&shared, client, decision, dst, record, start).await;
}

/// The one decision on a stream to `dst` that names itself `sni`: see
/// [`crate::destination::decide`].
async fn judge_stream(
    shared: &Shared,
    sni: Option<&str>,
    dst: SocketAddr,
) -> (crate::destination::Judged, Decision) {
    let claim = sni.map(|host| crate::destination::Claim { host, port: None });
    let resolved = match claim.filter(|c| c.ip().is_none()) {
        Some(c) => shared.resolver.addresses(c.host).await,
        None => Arc::from([]),
    };
    let policy = shared.current_policy().await;
    crate::destination::decide(&policy, claim, dst, &resolved)
}

/// Forwards an inbound connection that is not HTTP to the application.
/// Such callers carry no Vigil identity: they are the internet.
pub async fn forward_inbound(
    shared: Arc<Shared>,
    client: PrefixedIo<TcpStream>,
    detected: &Detected,
    app: SocketAddr,
) {
    let start = Instant::now();
    let record = record(
        Direction::Inbound,
        stream_protocol(detected),
        String::new(),
        None,
        "",
    );
    let decision = evaluate_inbound(&*shared.current_policy().await, None);
    decide_then_pipe(&shared, client, decision, app, record, start).await;
}

/// Carries out a policy decision on an opaque stream: denied -> reset and
/// record; allowed -> dial `target` and pipe (reset when it is unreachable).
async fn decide_then_pipe(
    shared: &Shared,
    client: PrefixedIo<TcpStream>,
    decision: Decision,
    target: SocketAddr,
    mut record: Record,
    start: Instant,
) {
    let direction = record.direction;
    if let Decision::Deny { reason } = decision {
        tracing::info!(authority = %record.authority, reason, protocol = ?record.protocol, ?direction, "denied an opaque stream; resetting it");
        reset(client.get_ref());
        record.denied = true;
        shared.metrics_record(direction, DecisionLabel::deny, start.elapsed());
        shared.telemetry.emit(record);
        return;
    }
    match dial(target).await {
        Ok(upstream) => {
            shared.metrics_record(direction, DecisionLabel::allow, start.elapsed());
            pipe(shared, client, upstream, record, start).await;
        }
        Err(detail) => {
            tracing::debug!(%target, %detail, "opaque stream's destination unavailable");
            reset(client.get_ref());
            shared.metrics_record(direction, DecisionLabel::error, start.elapsed());
            shared.telemetry.emit(record);
        }
    }
}

/// Closes with a TCP RST instead of a FIN.
fn reset(stream: &TcpStream) {
    let _ = stream.set_zero_linger();
}

/// Copies both ways until either side closes, the stream is idle for the
/// idle timeout, or the proxy stops; then emits the record with the bytes.
async fn pipe<C>(
    shared: &Shared,
    client: C,
    upstream: TcpStream,
    mut record: Record,
    start: Instant,
) where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let activity = Arc::new(AtomicU64::new(0));
    let mut client = Active::new(client, activity.clone());
    let mut upstream = Active::new(upstream, activity.clone());
    let mut stop = shared.stop.clone();
    let idle = shared.limits.idle_timeout();
    let outcome = tokio::select! {
        r = tokio::io::copy_bidirectional(&mut client, &mut upstream) => r.map_err(|e| e.to_string()),
        () = idle_watch(&activity, idle) => Err("idle timeout".to_string()),
        () = crate::model::stopped(&mut stop) => Err("proxy stopping".to_string()),
    };
    if let Err(why) = outcome {
        tracing::debug!(authority = %record.authority, %why, "stream ended");
    }
    record.bytes_in = client.read;
    record.bytes_out = upstream.read;
    record.latency_us = start.elapsed().as_micros() as u64;
    shared.telemetry.emit(record);
}

/// Resolves once no byte moved for `idle`.
async fn idle_watch(activity: &AtomicU64, idle: Duration) {
    loop {
        let seen = activity.load(Ordering::Relaxed);
        tokio::time::sleep(idle).await;
        if activity.load(Ordering::Relaxed) == seen {
            return;
        }
    }
}

/// A stream that counts the bytes read from it and bumps a shared activity
/// counter on every read and write (bytes are counted even when the copy
/// ends with an error).
struct Active<T> {
    io: T,
    read: u64,
    activity: Arc<AtomicU64>,
}

impl<T> Active<T> {
    fn new(io: T, activity: Arc<AtomicU64>) -> Self {
        Self {
            io,
            read: 0,
            activity,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Active<T> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut this.io).poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        if n > 0 {
            this.read += n;
            this.activity.fetch_add(1, Ordering::Relaxed);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Active<T> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        this.activity.fetch_add(1, Ordering::Relaxed);
        std::pin::Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
