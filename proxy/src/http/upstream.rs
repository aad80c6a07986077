//! The upstream of an HTTP/1.1 client connection: each client connection
//! opens its own upstream connection on its first request, reuses it for
//! the requests that follow, and drives it on the client connection's own
//! task ([`drive`]).
//!
//! This is the data path's fast path. With a shared pool, every request
//! locked the pool, hashed its key, rebuilt an absolute URI, and woke a
//! second task (the pooled connection's) twice on the way there and back;
//! here a request and its upstream exchange are served by one task, and
//! requests whose URI is already origin-form go out unchanged. A client
//! connection's requests are sequential in HTTP/1.1, so one upstream
//! connection per client connection is all it needs, and the upstream sees
//! the same connection pattern as the client made (what the app's own
//! connection limits and logs expect). HTTP/2 from a client goes through
//! the shared HTTP/2 client instead, where one connection multiplexes many
//! streams.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// How long opening an upstream connection may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// An upstream connection's future: it runs until the connection closes
/// (or hands its socket to an upgrade).
type Connection = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Why a request could not be sent upstream, or got no response.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The TCP connection failed.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// Where.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TCP connection did not open in time.
    #[error("connecting to {addr} timed out after {timeout:?}")]
    ConnectTimeout {
        /// Where.
        addr: SocketAddr,
        /// The bound.
        timeout: Duration,
    },
    /// The HTTP/1.1 connection could not be set up.
    #[error("cannot start HTTP/1.1 with {addr}: {source}")]
    Handshake {
        /// Where.
        addr: SocketAddr,
        /// hyper's error.
        source: hyper::Error,
    },
    /// The exchange failed (the upstream closed or sent garbage).
    #[error("request to {addr} failed: {source}")]
    Request {
        /// Where.
        addr: SocketAddr,
        /// hyper's error.
        source: hyper::Error,
    },
    /// The shared HTTP/2 client failed.
    #[error(transparent)]
    Pooled(#[from] hyper_util::client::legacy::Error),
}

/// One client connection's upstream: the idle sender of its upstream
/// connection, and where new upstream connections go to be driven.
pub struct Upstream<B> {
    idle: Arc<Idle<B>>,
    connections: mpsc::UnboundedSender<Connection>,
}

/// The idle sender of a client connection's upstream connection.
type Idle<B> = Mutex<Option<(SocketAddr, http1::SendRequest<B>)>>;

impl<B> std::fmt::Debug for Upstream<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream").finish_non_exhaustive()
    }
}

/// The receiving end of a client connection's upstream connections, given
/// to [`drive`].
pub struct Connections<B> {
    rx: mpsc::UnboundedReceiver<Connection>,
    idle: Arc<Idle<B>>,
}

impl<B> std::fmt::Debug for Connections<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connections").finish_non_exhaustive()
    }
}

impl<B> Upstream<B>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// A client connection's upstream (it has no connection yet) and the
    /// connections to drive beside the client's.
    pub fn new() -> (Arc<Self>, Connections<B>) {
        let (connections, rx) = mpsc::unbounded_channel();
        let idle = Arc::new(Mutex::new(None));
        let upstream = Upstream {
            idle: idle.clone(),
            connections,
        };
        (Arc::new(upstream), Connections { rx, idle })
    }

    /// Sends `req` (origin-form URI and `Host` set) to `addr` on this client
    /// connection's upstream connection, opening one when there is none
    /// for `addr` or it closed. A request the closed connection never took
    /// is sent once more on a new one; one that was written is not (its body
    /// is gone), and fails.
    pub async fn send(
        &self,
        addr: SocketAddr,
        req: Request<B>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let mut req = req;
        let mut fresh = false;
        loop {
            let mut sender = match (fresh, self.take(addr)) {
                (false, Some(sender)) => sender,
                _ => self.connect(addr).await?,
            };
            if let Err(source) = sender.ready().await {
                // It closed while idle; nothing was sent on it.
                if fresh {
                    return Err(UpstreamError::Request { addr, source });
                }
                fresh = true;
                continue;
            }
            let response = sender.try_send_request(req);
            self.put(addr, sender);
            match response.await {
                Ok(response) => return Ok(response),
                Err(mut e) => match e.take_message() {
                    Some(back) if !fresh => {
                        req = back;
                        fresh = true;
                    }
                    _ => {
                        return Err(UpstreamError::Request {
                            addr,
                            source: e.into_error(),
                        });
                    }
                },
            }
        }
    }

    /// The idle sender for `addr`, if there is one still open.
    fn take(&self, addr: SocketAddr) -> Option<http1::SendRequest<B>> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        match idle.take() {
            Some((at, sender)) if at == addr && !sender.is_closed() => Some(sender),
            _ => None,
        }
    }

    fn put(&self, addr: SocketAddr, sender: http1::SendRequest<B>) {
        *self.idle.lock().unwrap_or_else(|e| e.into_inner()) = Some((addr, sender));
    }

    /// Opens a connection to `addr` and hands its future to [`drive`].
    async fn connect(&self, addr: SocketAddr) -> Result<http1::SendRequest<B>, UpstreamError> {
        let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(source)) => return Err(UpstreamError::Connect { addr, source }),
            Err(_) => {
                return Err(UpstreamError::ConnectTimeout {
                    addr,
                    timeout: CONNECT_TIMEOUT,
                });
            }
        };
        let _ = stream.set_nodelay(true);
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|source| UpstreamError::Handshake { addr, source })?;
        let connection = connection.with_upgrades();
        let _ = self.connections.send(Box::pin(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%addr, error = %e, "upstream connection ended with an error");
            }
        }));
        Ok(sender)
    }
}

/// Runs `client` (the client connection being served) and, beside it on
/// the same task, the upstream connections its requests open. When the
/// client connection is done, its idle upstream connection is let go, and
/// the upstream connections still open finish what they were doing (an
/// upgrade handing over its socket, say) and close.
pub async fn drive<F: Future, B>(client: F, connections: Connections<B>) -> F::Output {
    let Connections { mut rx, idle } = connections;
    let mut running = FuturesUnordered::new();
    tokio::pin!(client);
    // Upstream connections are polled first: one that closed while idle is
    // seen closed before the next request looks for it.
    let output = loop {
        tokio::select! {
            biased;
            Some(()) = running.next(), if !running.is_empty() => {}
            Some(connection) = rx.recv() => running.push(connection),
            output = &mut client => break output,
        }
    };
    rx.close();
    drop(idle.lock().unwrap_or_else(|e| e.into_inner()).take());
    while let Ok(connection) = rx.try_recv() {
        running.push(connection);
    }
    while running.next().await.is_some() {}
    output
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use bytes::Bytes;
    use http_body_util::{BodyExt, Empty};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A raw HTTP/1.1 server answering `ok` to each request; it closes a
    /// connection after `per_connection` answers. Counts the connections it
    /// accepted, and sends one on `closed` for each that the client closed.
    async fn server(
        per_connection: usize,
    ) -> (SocketAddr, Arc<AtomicUsize>, mpsc::UnboundedReceiver<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let (closed_tx, closed) = mpsc::unbounded_channel();
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                let closed_tx = closed_tx.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut answered = 0;
                    while answered < per_connection {
                        let mut chunk = [0u8; 1024];
                        let n = stream.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            let _ = closed_tx.send(());
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            buf.drain(..end + 4);
                            stream
                                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                                .await
                                .unwrap();
                            answered += 1;
                        }
                    }
                });
            }
        });
        (addr, accepted, closed)
    }

    fn request(addr: SocketAddr) -> Request<Empty<Bytes>> {
        Request::get("/")
            .header(http::header::HOST, addr.to_string())
            .body(Empty::new())
            .unwrap()
    }

    async fn get(upstream: &Upstream<Empty<Bytes>>, addr: SocketAddr) -> String {
        let response = upstream.send(addr, request(addr)).await.unwrap();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(body.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn a_client_connections_requests_share_one_upstream_connection() {
        let (addr, accepted, _closed) = server(usize::MAX).await;
        let (upstream, connections) = Upstream::new();
        drive(
            async {
                for _ in 0..5 {
                    assert_eq!(get(&upstream, addr).await, "ok");
                }
            },
            connections,
        )
        .await;
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_upstream_that_closed_while_idle_is_replaced() {
        // The app closes each connection after one answer (keep-alive off).
        let (addr, accepted, _closed) = server(1).await;
        let (upstream, connections) = Upstream::new();
        drive(
            async {
                for _ in 0..3 {
                    assert_eq!(get(&upstream, addr).await, "ok");
                }
            },
            connections,
        )
        .await;
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn the_upstream_connection_closes_with_the_client_connection() {
        let (addr, _accepted, mut closed) = server(usize::MAX).await;
        let (upstream, connections) = Upstream::new();
        drive(
            async {
                assert_eq!(get(&upstream, addr).await, "ok");
            },
            connections,
        )
        .await;
        // The app sees the connection end, not an idle socket left open,
        // even while something still holds the client's `Upstream`.
        closed.recv().await.unwrap();
    }

    #[tokio::test]
    async fn each_destination_gets_its_own_connection() {
        let (a, accepted_a, _ca) = server(usize::MAX).await;
        let (b, accepted_b, _cb) = server(usize::MAX).await;
        let (upstream, connections) = Upstream::new();
        drive(
            async {
                for addr in [a, a, b, a] {
                    assert_eq!(get(&upstream, addr).await, "ok");
                }
            },
            connections,
        )
        .await;
        // a, then b (a's is let go), then a again on a new connection.
        assert_eq!(accepted_a.load(Ordering::SeqCst), 2);
        assert_eq!(accepted_b.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_refused_connection_is_an_error_naming_the_address() {
        let addr = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap()
        };
        let (upstream, connections) = Upstream::<Empty<Bytes>>::new();
        let e = drive(upstream.send(addr, request(addr)), connections)
            .await
            .unwrap_err();
        assert!(matches!(e, UpstreamError::Connect { .. }), "{e:?}");
        assert!(e.to_string().contains(&addr.to_string()), "{e}");
    }
}
