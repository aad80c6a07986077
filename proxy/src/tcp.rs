//! Opaque streams: HTTP `CONNECT` tunnels, and redirected connections that
//! are not HTTP (TLS by SNI, Stratum, plain TCP). Policy first, then the
//! upstream connection, then [`crate::stream::pipe`]: a byte-for-byte copy,
//! reported while open, inspected, and judged again on policy changes.
//!
//! Data-path tier: uses `policy`, `destination`, `sniff`, `stream`,
//! `telemetry` and the `http` helpers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::body::ProxyBody;
use crate::context::{DecisionLabel, Pending, Shared, empty_ok, unavailable_response};
use crate::destination::{Claim, Judge, Judged};
use crate::detect::Protocol as Detected;
use crate::model::{Direction, Protocol, Record};
use crate::policy::Decision;
use crate::resolve::Lookup;
use crate::sniff::{PrefixedIo, Sniffed, Speaker, first_speaker, sniff};
use crate::stream::{Inspect, LiveRecord, Stream};

/// How long connecting to a stream's destination may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The protocol recorded for an opaque stream, from what detection found.
pub fn stream_protocol(detected: &Detected) -> Protocol {
    match detected {
        Detected::Tls(_) | Detected::UnreadableTls => Protocol::Tls,
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
    let tunnel = Pending::new(record(
        Direction::Outbound,
        Protocol::Tcp,
        String::new(),
        None,
        "CONNECT",
    ));
    let (addr, tunnel) = match shared.judge_named(tunnel, &host, port).await {
        Ok(judged) => judged,
        Err(refused) => return refused,
    };
    let authority = tunnel.record.authority.clone();
    let upstream = match dial(addr).await {
        Ok(stream) => stream,
        Err(detail) => {
            let response = unavailable_response(&authority, &detail);
            return shared.respond(tunnel, response, DecisionLabel::error, 0);
        }
    };
    let mut record = tunnel.record.clone();
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
        let (silence, stall) = (limits.detect_timeout(), limits.header_read_timeout());
        let mut sniffed = match sniff(TokioIo::new(upgraded), silence, stall).await {
            Ok(sniffed) => sniffed,
            Err(e) => {
                tracing::debug!(%authority, error = %e, "CONNECT tunnel closed early");
                return;
            }
        };
        if sniffed.silent {
            // A client that waits out the detect timeout and then speaks
            // (TLS, HTTP) is judged as if it had not waited.
            match first_speaker(sniffed.io, &upstream, stall, limits.idle_timeout()).await {
                Ok(Speaker::Server(io)) => sniffed.io = io,
                Ok(Speaker::Client(late)) => sniffed = late,
                Err(e) => {
                    tracing::debug!(%authority, error = %e, "CONNECT tunnel ended before either side spoke");
                    return;
                }
            }
        }
        if matches!(sniffed.protocol, Detected::Http1 | Detected::Http2) {
            // Plain HTTP inside the tunnel: served as a connection
            // redirected to `addr`, so that each request's Host is judged
            // against the address, as on a redirected connection. Piped
            // raw, a tunnel to an allowed name on a shared (CDN) address
            // carried requests for any other site on it.
            drop(upstream);
            return serve_tunnelled_http(tunnel_shared, sniffed.io, addr).await;
        }
        record.protocol = stream_protocol(&sniffed.protocol);
        // The tunnel was judged by its CONNECT name; a TLS name inside must
        // go where the tunnel goes too.
        // The TLS name is checked against the threat list as well.
        let mut mismatch = false;
        let mut inner_name = None;
        if let Detected::Tls(hello) = &sniffed.protocol
            && let Some(sni) = hello.sni.as_deref()
        {
            inner_name = Some(sni.to_owned());
            if let Some(claimed) = judge_name(&tunnel_shared, Some(sni), addr).await.mismatch {
                tracing::info!(%claimed, %authority, "a TLS name inside a CONNECT tunnel that does not go to its address");
                record.claimed_authority = claimed;
                mismatch = true;
            }
        }
        if matches!(sniffed.protocol, Detected::UnreadableTls) {
            tracing::info!(%authority, "a TLS ClientHello inside a CONNECT tunnel that cannot be read");
            record.claimed_authority = crate::detect::UNREADABLE_TLS.to_owned();
            mismatch = true;
        }
        let judge = Judge::Outbound {
            authority,
            dst: Some(addr),
            mismatch,
            claimed: inner_name,
        };
        let policy = tunnel_shared.current_policy().await;
        let decision = judge.decide(&policy, record.protocol);
        let stream = Stream {
            live: LiveRecord::new(record),
            judge,
            inspect: Inspect::Raw,
            start,
        };
        match decision {
            // The client already has its 200: closing the tunnel is all.
            Decision::Deny { reason } => refuse(&tunnel_shared, stream, reason),
            Decision::Allow => run(&tunnel_shared, sniffed.io, upstream, stream, |_| {}).await,
        }
    });
    shared.untracked(empty_ok())
}

/// Serves the HTTP a client speaks inside a `CONNECT` tunnel to `addr` as
/// a connection redirected there (see [`crate::http::outbound::serve`]),
/// until the client is done or the sidecar stops.
async fn serve_tunnelled_http<I>(shared: Arc<Shared>, io: I, addr: SocketAddr)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let builder = crate::listener::http_builder(&shared.limits);
    let mut stop = shared.stop.clone();
    let service = hyper::service::service_fn(move |req| serve_in_tunnel(shared.clone(), addr, req));
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::select! {
        ended = conn => if let Err(e) = ended {
            tracing::debug!(%addr, error = %e, "HTTP inside a CONNECT tunnel ended with an error");
        },
        () = crate::model::stopped(&mut stop) => {}
    }
}

/// One request inside a tunnel, boxed: the tunnel is opened by a request
/// that [`crate::http::outbound::serve`] serves, so its future's type
/// would otherwise contain itself.
fn serve_in_tunnel(
    shared: Arc<Shared>,
    addr: SocketAddr,
    req: Request<Incoming>,
) -> std::pin::Pin<
    Box<
        dyn std::future::Future<Output = Result<Response<ProxyBody>, std::convert::Infallible>>
            + Send,
    >,
> {
    Box::pin(crate::http::outbound::serve(shared, Some(addr), req))
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
///
/// A silent client (see [`crate::sniff::first_speaker`]) that speaks first
/// after all is handed back, detected, to be served as what it speaks.
pub async fn forward_outbound(
    shared: Arc<Shared>,
    sniffed: Sniffed<TcpStream>,
    dst: SocketAddr,
) -> Option<Sniffed<TcpStream>> {
    let start = Instant::now();
    let Sniffed {
        protocol: detected,
        silent,
        io: client,
    } = sniffed;
    let detected = &detected;
    let sni = match detected {
        Detected::Tls(hello) => hello.sni.as_deref(),
        _ => None,
    };
    let mut judged = judge_name(&shared, sni, dst).await;
    if matches!(detected, Detected::UnreadableTls) {
        judged.mismatch = Some(crate::detect::UNREADABLE_TLS.to_owned());
    }
    let mut record = record(
        Direction::Outbound,
        stream_protocol(detected),
        judged.authority.clone(),
        Some(dst),
        "",
    );
    if let Some(claimed) = &judged.mismatch {
        tracing::info!(%claimed, %dst, "a TLS name that does not go to this address; judged by the address");
        record.claimed_authority = claimed.clone();
    }
    let judge = judged.judge(dst);
    decide_then_pipe(&shared, (client, silent), judge, dst, record, start).await
}

/// The name `sni` a stream to `dst` gives, judged against `dst` (see
/// [`crate::destination::judge`]).
async fn judge_name(shared: &Shared, sni: Option<&str>, dst: SocketAddr) -> Judged {
    let claim = sni.map(|host| Claim { host, port: None });
    let resolved = match claim.filter(|c| c.ip().is_none()) {
        Some(c) => {
            let policy = shared.current_policy().await;
            let lookup = Lookup::allowed_if(crate::policy::may_look_up(&policy, c.host));
            (shared.resolver)
                .addresses_reaching(c.host, dst.ip(), lookup)
                .await
        }
        None => Arc::from([]),
    };
    crate::destination::judge(claim, dst, &resolved)
}

/// Forwards an inbound connection that is not HTTP to the application.
/// Such callers carry no Vigil identity: they are the internet.
/// A silent client that speaks first after all is handed back, as by
/// [`forward_outbound`].
pub async fn forward_inbound(
    shared: Arc<Shared>,
    sniffed: Sniffed<TcpStream>,
    app: SocketAddr,
) -> Option<Sniffed<TcpStream>> {
    let start = Instant::now();
    let record = record(
        Direction::Inbound,
        stream_protocol(&sniffed.protocol),
        String::new(),
        None,
        "",
    );
    let judge = Judge::Inbound { source: None };
    let client = (sniffed.io, sniffed.silent);
    decide_then_pipe(&shared, client, judge, app, record, start).await
}

/// Judges an opaque stream by `judge` (its protocol included: no baseline
/// allows mining in enforcement): denied -> reset and record; allowed ->
/// dial `target` and pipe (reset when it is unreachable). A `silent`
/// client is piped only if the server speaks first; one that speaks first
/// is handed back, detected, with nothing recorded for it here.
async fn decide_then_pipe(
    shared: &Shared,
    (client, silent): (PrefixedIo<TcpStream>, bool),
    judge: Judge,
    target: SocketAddr,
    record: Record,
    start: Instant,
) -> Option<Sniffed<TcpStream>> {
    let protocol = record.protocol;
    if protocol == Protocol::Stratum {
        tracing::warn!(authority = %record.authority, "Stratum mining protocol detected");
    }
    let decision = judge.decide(&*shared.current_policy().await, protocol);
    let stream = Stream {
        live: LiveRecord::new(record),
        judge,
        inspect: Inspect::Raw,
        start,
    };
    if let Decision::Deny { reason } = decision {
        reset(client.get_ref());
        refuse(shared, stream, reason);
        return None;
    }
    match dial(target).await {
        Ok(upstream) if silent => {
            let limits = &shared.limits;
            let (stall, idle) = (limits.header_read_timeout(), limits.idle_timeout());
            match first_speaker(client, &upstream, stall, idle).await {
                Ok(Speaker::Server(client)) => {
                    run(shared, client, upstream, stream, |c| reset(c.get_ref())).await;
                }
                Ok(Speaker::Client(late)) => return Some(late),
                Err(e) => {
                    tracing::debug!(%target, error = %e, "a silent stream ended before either side spoke")
                }
            }
        }
        Ok(upstream) => run(shared, client, upstream, stream, |c| reset(c.get_ref())).await,
        Err(detail) => {
            tracing::debug!(%target, %detail, "opaque stream's destination unavailable");
            reset(client.get_ref());
            let Stream {
                mut live, start, ..
            } = stream;
            shared.metrics_record(
                live.record().direction,
                DecisionLabel::error,
                start.elapsed(),
            );
            if let Some(record) = live.emission(0, 0, start.elapsed(), false) {
                shared.telemetry.emit(record);
            }
        }
    }
    None
}

/// Records a stream refused before it reached its destination.
fn refuse(shared: &Shared, stream: Stream, reason: &str) {
    let Stream {
        mut live, start, ..
    } = stream;
    let record = live.record();
    tracing::info!(authority = %record.authority, reason, protocol = ?record.protocol, direction = ?record.direction, "denied a stream; reset it");
    shared.metrics_record(record.direction, DecisionLabel::deny, start.elapsed());
    if let Some(record) = live.emission(0, 0, start.elapsed(), true) {
        shared.telemetry.emit(record);
    }
}

/// Runs an allowed stream (see [`crate::stream::pipe`]).
async fn run<C, U>(shared: &Shared, client: C, upstream: U, stream: Stream, reset: impl FnOnce(&C))
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let direction = stream.live.record().direction;
    shared.metrics_record(direction, DecisionLabel::allow, stream.start.elapsed());
    crate::stream::pipe(&shared.stream_context(), client, upstream, stream, reset).await;
}

/// Closes with a TCP RST instead of a FIN.
fn reset(stream: &TcpStream) {
    let _ = stream.set_zero_linger();
}
