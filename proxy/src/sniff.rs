//! Reading a connection's first bytes to detect its protocol, and replaying
//! them: [`sniff`] reads until `detect` decides (or a timeout for
//! server-first protocols), and [`PrefixedIo`] gives those bytes back to
//! whoever serves the connection, so detection never loses a byte.
//!
//! Data-path tier: uses the pure `detect` module.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

use crate::detect::{self, Detection, MAX_PEEK, Protocol as Detected};

/// An I/O stream with bytes already read from it put back in front.
#[derive(Debug)]
pub struct PrefixedIo<T> {
    prefix: Bytes,
    io: T,
}

impl<T> PrefixedIo<T> {
    /// Replays `prefix` before reading from `io`.
    pub fn new(prefix: Bytes, io: T) -> Self {
        Self { prefix, io }
    }

    /// The bytes not yet replayed.
    pub fn prefix(&self) -> &[u8] {
        &self.prefix
    }

    /// The inner stream.
    pub fn get_ref(&self) -> &T {
        &self.io
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for PrefixedIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for PrefixedIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// What sniffing found.
#[derive(Debug)]
pub struct Sniffed<T> {
    /// The protocol (`Opaque` when the client sent nothing in time).
    pub protocol: Detected,
    /// The stream, with the bytes read so far put back.
    pub io: PrefixedIo<T>,
}

/// Reads from `io` until the protocol is known, at most [`MAX_PEEK`] bytes.
/// When the client sends nothing within `timeout` (a server-first protocol
/// such as SMTP or MySQL) or stops sending before detection decides, the
/// connection is opaque.
pub async fn sniff<T: AsyncRead + Unpin>(mut io: T, timeout: Duration) -> io::Result<Sniffed<T>> {
    let mut buf = BytesMut::with_capacity(1024);
    let deadline = tokio::time::Instant::now() + timeout;
    let protocol = loop {
        if buf.len() >= MAX_PEEK {
            break Detected::Opaque;
        }
        let read = tokio::time::timeout_at(deadline, io.read_buf(&mut buf)).await;
        match read {
            Err(_elapsed) => break Detected::Opaque,
            Ok(Err(e)) => return Err(e),
            Ok(Ok(0)) => break Detected::Opaque,
            Ok(Ok(_)) => match detect::detect(&buf) {
                Detection::Done(protocol) => break protocol,
                Detection::NeedMore => {}
            },
        }
    };
    Ok(Sniffed {
        protocol,
        io: PrefixedIo::new(buf.freeze(), io),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn sniffed_bytes_are_replayed_in_order() {
        let (mut client, server) = tokio::io::duplex(64);
        client
            .write_all(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let sniffed = sniff(server, Duration::from_secs(5)).await.unwrap();
        assert!(matches!(sniffed.protocol, Detected::Http1));
        let mut io = sniffed.io;
        client.write_all(b"tail").await.unwrap();
        drop(client);
        let mut all = Vec::new();
        io.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"GET /a HTTP/1.1\r\nHost: x\r\n\r\ntail");
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_client_is_opaque_after_the_timeout() {
        let (_client, server) = tokio::io::duplex(64);
        let sniffed = sniff(server, Duration::from_millis(500)).await.unwrap();
        assert!(matches!(sniffed.protocol, Detected::Opaque));
        assert!(sniffed.io.prefix().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_partial_preface_then_silence_is_opaque_and_kept() {
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(b"PRI * HTTP/2").await.unwrap();
        let sniffed = sniff(server, Duration::from_millis(500)).await.unwrap();
        assert!(matches!(sniffed.protocol, Detected::Opaque));
        assert_eq!(sniffed.io.prefix(), b"PRI * HTTP/2");
    }
}
