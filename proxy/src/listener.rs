//! Listeners: binding, the original destination of redirected connections,
//! and the accept loop with a bounded graceful drain.
//!
//! Each accepted connection goes to a handler (see `app`), which decides
//! what the connection is (`sniff`) and serves it with [`serve_http`] or as
//! an opaque stream (`tcp`).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinHandle;

use crate::config::Limits;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    /// Binding failed.
    #[error("cannot listen on {addr} for the {name} listener: {source}")]
    Bind {
        /// Which listener.
        name: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Binds `addr` (port 0 allowed) and returns the listener with its address.
pub async fn bind(
    name: &'static str,
    addr: SocketAddr,
) -> Result<(TcpListener, SocketAddr), ListenerError> {
    let err = |source| ListenerError::Bind { name, addr, source };
    let listener = TcpListener::bind(addr).await.map_err(err)?;
    let local = listener.local_addr().map_err(err)?;
    Ok((listener, local))
}

/// Binds an IPv6 listener (`addr` is IPv6: the config checks it) with
/// `IPV6_V6ONLY` (so `[::]:P` and `0.0.0.0:P` can coexist), the twin of an
/// IPv4 one. Returns `None`, with a warning, when this host has no IPv6:
/// there is then nothing to listen for, and ip6tables cannot redirect to it
/// either.
pub async fn bind_v6_only(
    name: &'static str,
    addr: SocketAddr,
) -> Result<Option<(TcpListener, SocketAddr)>, ListenerError> {
    use nix::sys::socket::{setsockopt, sockopt::Ipv6V6Only};
    let err = |source| ListenerError::Bind { name, addr, source };
    let unavailable = |e: &std::io::Error| {
        matches!(
            e.raw_os_error().map(nix::errno::Errno::from_raw),
            Some(nix::errno::Errno::EAFNOSUPPORT | nix::errno::Errno::EADDRNOTAVAIL)
        )
    };
    let bound = (|| {
        let socket = tokio::net::TcpSocket::new_v6()?;
        setsockopt(&socket, Ipv6V6Only, &true)?;
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(1024)
    })();
    match bound {
        Ok(listener) => {
            let local = listener.local_addr().map_err(err)?;
            Ok(Some((listener, local)))
        }
        Err(e) if unavailable(&e) => {
            tracing::warn!(listener = name, %addr, error = %e, "no IPv6 here: not listening on IPv6");
            Ok(None)
        }
        Err(e) => Err(err(e)),
    }
}

/// The destination a connection had before an iptables `REDIRECT`, or
/// `None` when it was not redirected (it equals the listener's address).
pub fn original_dst(stream: &TcpStream, listener_addr: SocketAddr) -> Option<SocketAddr> {
    use nix::sys::socket::{SockaddrIn, SockaddrIn6, getsockopt, sockopt};
    let dst = match stream.local_addr().ok()? {
        SocketAddr::V4(_) => getsockopt(stream, sockopt::OriginalDst)
            .ok()
            .map(|a| SocketAddr::from(SockaddrIn::from(a))),
        SocketAddr::V6(_) => getsockopt(stream, sockopt::Ip6tOriginalDst)
            .ok()
            .map(|a| SocketAddr::from(SockaddrIn6::from(a))),
    }?;
    let local = stream.local_addr().ok();
    (dst != listener_addr && Some(dst) != local).then_some(dst)
}

/// Builds the HTTP server for a listener from the limits: HTTP/1.1 and
/// HTTP/2 (prior knowledge), header size limits and the header-read timeout.
pub fn http_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout())
        .max_buf_size(limits.max_header_bytes)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    builder
}

/// One accepted connection, handed to the listener's handler.
#[derive(Debug)]
pub struct Accepted {
    /// The client connection.
    pub stream: TcpStream,
    /// The client's address.
    pub peer: SocketAddr,
    /// Graceful-shutdown watcher for HTTP connections.
    pub watcher: Watcher,
    /// Holds one of the listener's connection slots until dropped.
    pub permit: OwnedSemaphorePermit,
}

/// Spawns the accept loop: each connection goes to `handle` on its own task.
/// At most `max_connections` are open at once; past that, new connections
/// are closed at once (and counted). When `shutdown` turns true the loop
/// stops accepting and waits at most `drain` for open HTTP connections.
pub fn spawn<H, F>(
    name: &'static str,
    listener: TcpListener,
    max_connections: usize,
    handle: H,
    mut shutdown: watch::Receiver<bool>,
    drain: Duration,
) -> JoinHandle<()>
where
    H: Fn(Accepted) -> F + Send + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(max_connections));
    tokio::spawn(async move {
        let graceful = GracefulShutdown::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let Ok(permit) = slots.clone().try_acquire_owned() else {
                            tracing::warn!(listener = name, %peer, max_connections, "connection limit reached; closing a new connection");
                            continue;
                        };
                        let _ = stream.set_nodelay(true);
                        tokio::spawn(handle(Accepted { stream, peer, watcher: graceful.watcher(), permit }));
                    }
                    Err(e) => {
                        tracing::warn!(listener = name, error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                _ = crate::model::stopped(&mut shutdown) => break,
            }
        }
        drop(listener);
        if tokio::time::timeout(drain, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(
                listener = name,
                "drain timed out; closing remaining connections"
            );
        }
    })
}

/// Serves HTTP/1.1 (with upgrades) or HTTP/2 on `io` until the client is
/// done or the graceful shutdown ends it.
pub async fn serve_http<I, S, B>(
    builder: &auto::Builder<TokioExecutor>,
    watcher: Watcher,
    io: I,
    service: S,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    if let Err(e) = watcher.watch(conn.into_owned()).await {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}
