//! Per-connection routing for the two data listeners: decide what an
//! accepted connection is, then serve it as HTTP (`http`) or as an opaque
//! stream (`tcp`).
//!
//! Outbound: a connection that was not redirected is a client using us as an
//! explicit proxy, so it speaks HTTP. A redirected one may be anything: its
//! first bytes are sniffed (HTTP/1, HTTP/2, TLS with SNI, Stratum, or opaque
//! after the detect timeout). Inbound connections are sniffed the same way.
//!
//! Data-path tier.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;

use crate::context::Shared;
use crate::detect::Protocol as Detected;
use crate::http;
use crate::listener::{Accepted, original_dst, serve_http};
use crate::sniff::{Sniffed, sniff};
use crate::tcp;

/// Serves one connection accepted by the outbound listener at `listener_addr`.
pub async fn outbound(
    shared: Arc<Shared>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    listener_addr: SocketAddr,
    accepted: Accepted,
) {
    let Accepted {
        stream,
        peer,
        watcher,
        permit: _permit,
    } = accepted;
    let dst = original_dst(&stream, listener_addr);
    let Some(dst) = dst else {
        // An explicit-proxy client speaks HTTP. hyper's header-read timeout
        // only starts once the HTTP version is known, so the version itself
        // is read here within that timeout: a client that sends nothing, or
        // half an HTTP/2 preface, cannot hold a connection slot forever.
        let timeout = shared.limits.header_read_timeout();
        let sniffed = match sniff(stream, timeout, timeout).await {
            Ok(sniffed) => sniffed,
            Err(e) => {
                return tracing::debug!(%peer, error = %e, "connection failed before a request");
            }
        };
        if !matches!(sniffed.protocol, Detected::Http1 | Detected::Http2) {
            return tracing::debug!(%peer, "no HTTP request within the header-read timeout; closing");
        }
        let service =
            hyper::service::service_fn(move |req| http::outbound::serve(shared.clone(), None, req));
        return serve_http(&builder, watcher, sniffed.io, service).await;
    };
    let mut sniffed = match sniff_redirected(&shared, stream).await {
        Ok(sniffed) => sniffed,
        Err(e) => return tracing::debug!(%peer, error = %e, "connection failed during detection"),
    };
    loop {
        tracing::trace!(%peer, %dst, protocol = ?sniffed.protocol, "outbound connection");
        if matches!(sniffed.protocol, Detected::Http1 | Detected::Http2) {
            let service = hyper::service::service_fn(move |req| {
                http::outbound::serve(shared.clone(), Some(dst), req)
            });
            return serve_http(&builder, watcher, sniffed.io, service).await;
        }
        // A silent client that speaks first after all comes back detected.
        match tcp::forward_outbound(shared.clone(), sniffed, dst).await {
            Some(late) => sniffed = late,
            None => return,
        }
    }
}

/// Sniffs a redirected connection: silent after `--detect-timeout-ms`,
/// and one that has begun has `--header-read-timeout-ms` to finish.
async fn sniff_redirected(
    shared: &Shared,
    stream: tokio::net::TcpStream,
) -> std::io::Result<Sniffed<tokio::net::TcpStream>> {
    let limits = &shared.limits;
    sniff(
        stream,
        limits.detect_timeout(),
        limits.header_read_timeout(),
    )
    .await
}

/// Where an inbound connection goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InboundTarget {
    /// Forward to this address.
    Forward(SocketAddr),
    /// Close the connection: it was redirected to one of the sidecar's own
    /// ports (forwarding it would make the pod an open proxy speaking with
    /// its identity, or loop back into this listener).
    SidecarPort(u16),
}

/// Where an inbound connection goes: a redirected one to its original
/// destination, the pod's own address and the port the caller asked for
/// (a pod may serve several), so that only what the pod serves to the
/// network is reachable and a service bound to loopback stays private (as
/// Istio does since 1.10); never to one of the sidecar's own ports. A
/// connection that was not redirected goes to `--app-addr`.
pub fn inbound_target(
    app_addr: SocketAddr,
    original_dst: Option<SocketAddr>,
    sidecar_ports: &[u16],
) -> InboundTarget {
    match original_dst {
        Some(dst) if sidecar_ports.contains(&dst.port()) => InboundTarget::SidecarPort(dst.port()),
        Some(dst) => InboundTarget::Forward(dst),
        None => InboundTarget::Forward(app_addr),
    }
}

/// Serves one connection accepted by the inbound listener at `listener_addr`.
pub async fn inbound(
    shared: Arc<Shared>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    listener_addr: SocketAddr,
    accepted: Accepted,
) {
    let Accepted {
        stream,
        peer,
        watcher,
        permit: _permit,
    } = accepted;
    let dst = original_dst(&stream, listener_addr);
    let app = match inbound_target(shared.app_addr, dst, &shared.sidecar_ports) {
        InboundTarget::Forward(app) => app,
        InboundTarget::SidecarPort(port) => {
            shared.metrics.inbound_refused.inc();
            return tracing::warn!(%peer, port, "refused an inbound connection to the sidecar's own port");
        }
    };
    let mut sniffed = match sniff_redirected(&shared, stream).await {
        Ok(sniffed) => sniffed,
        Err(e) => return tracing::debug!(%peer, error = %e, "connection failed during detection"),
    };
    loop {
        if matches!(sniffed.protocol, Detected::Http1 | Detected::Http2) {
            let (peer, app) = (peer.ip(), http::inbound::App::new(app));
            let service = hyper::service::service_fn(move |req| {
                http::inbound::serve(shared.clone(), app.clone(), peer, req)
            });
            return serve_http(&builder, watcher, sniffed.io, service).await;
        }
        match tcp::forward_inbound(shared.clone(), sniffed, app).await {
            Some(late) => sniffed = late,
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirected_inbound_goes_to_the_pod_address_it_asked_for() {
        let app: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let own = [4140, 4143, 4191];
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        let cases = [
            // Not redirected: the declared app.
            (None, InboundTarget::Forward(app)),
            // Redirected: the pod's own address and port, never loopback,
            // so a service bound to 127.0.0.1 is not reachable from outside.
            (
                Some(addr("10.0.0.5:8080")),
                InboundTarget::Forward(addr("10.0.0.5:8080")),
            ),
            (
                Some(addr("10.0.0.5:9090")),
                InboundTarget::Forward(addr("10.0.0.5:9090")),
            ),
            (
                Some(addr("[fd66::1]:8888")),
                InboundTarget::Forward(addr("[fd66::1]:8888")),
            ),
            // The sidecar's own ports: no open proxy, no loop.
            (
                Some(addr("10.0.0.5:4140")),
                InboundTarget::SidecarPort(4140),
            ),
            (
                Some(addr("10.0.0.5:4143")),
                InboundTarget::SidecarPort(4143),
            ),
            (
                Some(addr("[fd66::1]:4191")),
                InboundTarget::SidecarPort(4191),
            ),
        ];
        for (dst, want) in cases {
            assert_eq!(inbound_target(app, dst, &own), want, "{dst:?}");
        }
    }
}
