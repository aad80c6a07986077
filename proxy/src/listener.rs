//! Listeners: binding, the original destination of redirected connections,
//! and the accept loop with a bounded graceful drain.
//!
//! Each accepted connection goes through [`serve_connection`], where a
//! protocol `detect` step will be inserted (HTTP/2, TLS, opaque TCP); for now
//! every connection is served as HTTP/1.1.

use std::net::SocketAddr;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long a client may take to send request headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

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

/// Spawns the accept loop: each connection is served with the service
/// `make` returns for it. When `shutdown` turns true the loop stops
/// accepting and waits at most `drain` for open connections.
pub fn spawn<M, S, B>(
    name: &'static str,
    listener: TcpListener,
    make: M,
    mut shutdown: watch::Receiver<bool>,
    drain: Duration,
) -> JoinHandle<()>
where
    M: Fn(&TcpStream) -> S + Send + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(true);
    tokio::spawn(async move {
        let graceful = GracefulShutdown::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _peer)) => {
                        let _ = stream.set_nodelay(true);
                        let service = make(&stream);
                        serve_connection(builder.clone(), stream, service, graceful.watcher());
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

/// Serves one accepted connection. The protocol `detect` step goes here.
fn serve_connection<S, B>(
    builder: auto::Builder<TokioExecutor>,
    stream: TcpStream,
    service: S,
    watcher: Watcher,
) where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    tokio::spawn(async move {
        let io = TokioIo::new(stream);
        let conn = builder.serve_connection_with_upgrades(io, service);
        if let Err(e) = watcher.watch(conn.into_owned()).await {
            tracing::debug!(error = %e, "connection ended with an error");
        }
    });
}
