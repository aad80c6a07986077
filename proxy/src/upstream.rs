//! The pooled upstream clients' connector: hyper-util's `HttpConnector`
//! (TCP_NODELAY, a connect timeout), whose connections report nothing to
//! the pool beyond themselves.
//!
//! `HttpConnector`'s own connections report the peer's and the local
//! address (`HttpInfo`, two system calls per connection), which the pooled
//! client then copies into the extensions of every response it returns: a
//! boxed map, its table and a boxed value, three allocations per request
//! that nothing in the proxy reads.
//!
//! Data-path tier: depends on nothing of the proxy's.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Why a connection could not be made (hyper-util's error, boxed: its type
/// is not public).
pub type ConnectError = Box<dyn std::error::Error + Send + Sync>;

/// A connection being made.
pub type Connecting = Pin<Box<dyn Future<Output = Result<Plain, ConnectError>> + Send>>;

/// Makes plain TCP connections to the address a request's URI names.
#[derive(Clone, Debug)]
pub struct Connector(HttpConnector);

impl Connector {
    /// TCP_NODELAY, and `timeout` to connect.
    pub fn new(timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(timeout));
        Connector(connector)
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = Plain;
    type Error = ConnectError;
    type Future = Connecting;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let connecting = self.0.call(dst);
        Box::pin(async move { connecting.await.map(Plain).map_err(Into::into) })
    }
}

/// An upstream TCP connection that reports no extras to the pool.
#[derive(Debug)]
pub struct Plain(TokioIo<TcpStream>);

impl Connection for Plain {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl Read for Plain {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl Write for Plain {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write_vectored(cx, bufs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower_service::Service;

    /// A connection reports no extras, so the pooled client adds nothing
    /// to the responses it returns; and it carries bytes both ways.
    #[tokio::test]
    async fn connections_report_no_extras_and_carry_bytes() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let echo = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let (mut r, mut w) = socket.split();
            tokio::io::copy(&mut r, &mut w).await.unwrap();
        });
        let uri: Uri = format!("http://{addr}/").parse().unwrap();
        let mut connector = Connector::new(Duration::from_secs(5));
        std::future::poll_fn(|cx| connector.poll_ready(cx))
            .await
            .unwrap();
        let conn = connector.call(uri).await.unwrap();
        let mut extensions = http::Extensions::new();
        conn.connected().get_extras(&mut extensions);
        assert!(extensions.is_empty(), "{extensions:?}");
        let mut io = TokioIo::new(conn);
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        io.write_all(b"ping").await.unwrap();
        let mut back = [0u8; 4];
        io.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"ping");
        io.shutdown().await.unwrap();
        echo.await.unwrap();
    }
}
