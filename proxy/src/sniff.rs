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
    /// The client sent nothing in time: a server-first protocol (SMTP,
    /// MySQL), or a client that waits before it speaks. Which one, only the
    /// first side to speak tells: see [`first_speaker`].
    pub silent: bool,
    /// The stream, with the bytes read so far put back.
    pub io: PrefixedIo<T>,
}

/// Reads from `io` until the protocol is known, at most [`MAX_PEEK`] bytes.
/// A client that sends nothing within `silence` is `silent` (opaque until
/// it speaks). One that has begun must finish what decides within `stall`
/// of its first byte: a pause does not make its request opaque (an error
/// then; the connection is closed). A client that ends its stream before
/// detection decides is opaque.
pub async fn sniff<T: AsyncRead + Unpin>(
    mut io: T,
    silence: Duration,
    stall: Duration,
) -> io::Result<Sniffed<T>> {
    let mut buf = BytesMut::with_capacity(1024);
    match tokio::time::timeout(silence, io.read_buf(&mut buf)).await {
        Err(_elapsed) => {
            return Ok(Sniffed {
                protocol: Detected::Opaque,
                silent: true,
                io: PrefixedIo::new(Bytes::new(), io),
            });
        }
        Ok(read) => {
            read?;
        }
    }
    sniff_rest(buf, io, stall).await
}

/// Goes on detecting from the bytes in `buf` (the first read, whatever it
/// returned), with `stall` to decide.
async fn sniff_rest<T: AsyncRead + Unpin>(
    mut buf: BytesMut,
    mut io: T,
    stall: Duration,
) -> io::Result<Sniffed<T>> {
    let deadline = tokio::time::Instant::now() + stall;
    let mut ended = buf.is_empty();
    let protocol = loop {
        if ended || buf.len() >= MAX_PEEK {
            break Detected::Opaque;
        }
        if let Detection::Done(protocol) = detect::detect(&buf) {
            break protocol;
        }
        match tokio::time::timeout_at(deadline, io.read_buf(&mut buf)).await {
            Err(_elapsed) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client stopped before its protocol was known",
                ));
            }
            Ok(read) => ended = read? == 0,
        }
    };
    Ok(Sniffed {
        protocol,
        silent: false,
        io: PrefixedIo::new(buf.freeze(), io),
    })
}

/// Who spoke first on a connection whose client was silent.
#[derive(Debug)]
pub enum Speaker<T> {
    /// The server (a server-first protocol): the client's stream, as it was.
    Server(PrefixedIo<T>),
    /// The client, late: what it speaks, detected as if it had not waited.
    Client(Sniffed<T>),
}

/// After a silent [`sniff`], with `server` connected: waits until one side
/// speaks (at most `idle`). A server that speaks (or closes) first makes
/// the stream opaque; a client that speaks first is sniffed as any other
/// (`stall`), so waiting out the detect timeout does not turn its HTTP or
/// TLS into an opaque stream that hides its `Host` or SNI.
pub async fn first_speaker<T: AsyncRead + Unpin>(
    client: PrefixedIo<T>,
    server: &tokio::net::TcpStream,
    stall: Duration,
    idle: Duration,
) -> io::Result<Speaker<T>> {
    let PrefixedIo { prefix, mut io } = client;
    let mut buf = BytesMut::with_capacity(1024);
    buf.extend_from_slice(&prefix);
    let first = tokio::time::timeout(idle, async {
        tokio::select! {
            biased;
            ready = server.readable() => ready.map(|()| false),
            read = io.read_buf(&mut buf) => read.map(|_| true),
        }
    })
    .await;
    match first {
        Err(_elapsed) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "neither side spoke within the idle timeout",
        )),
        Ok(Err(e)) => Err(e),
        Ok(Ok(false)) => Ok(Speaker::Server(PrefixedIo::new(buf.freeze(), io))),
        Ok(Ok(true)) => sniff_rest(buf, io, stall).await.map(Speaker::Client),
    }
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
        let sniffed = sniff(server, SILENCE, STALL).await.unwrap();
        assert!(matches!(sniffed.protocol, Detected::Http1));
        let mut io = sniffed.io;
        client.write_all(b"tail").await.unwrap();
        drop(client);
        let mut all = Vec::new();
        io.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"GET /a HTTP/1.1\r\nHost: x\r\n\r\ntail");
    }

    const SILENCE: Duration = Duration::from_millis(500);
    const STALL: Duration = Duration::from_secs(10);

    #[tokio::test(start_paused = true)]
    async fn a_silent_client_is_opaque_after_the_timeout() {
        let (_client, server) = tokio::io::duplex(64);
        let sniffed = sniff(server, SILENCE, STALL).await.unwrap();
        assert!(matches!(sniffed.protocol, Detected::Opaque));
        assert!(sniffed.silent);
        assert!(sniffed.io.prefix().is_empty());
    }

    /// A pause after the first bytes does not make a request opaque: it
    /// was piped raw past the judgement of its `Host` or SNI. The client
    /// has `stall` to finish; then the connection is an error.
    #[tokio::test(start_paused = true)]
    async fn a_pause_after_the_first_bytes_is_not_opaque() {
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(b"G").await.unwrap();
        let sniffing = tokio::spawn(sniff(server, SILENCE, STALL));
        tokio::time::sleep(Duration::from_secs(2)).await;
        client.write_all(b"ET / HTTP/1.1\r\n").await.unwrap();
        let sniffed = sniffing.await.unwrap().unwrap();
        assert!(matches!(sniffed.protocol, Detected::Http1));
        assert!(!sniffed.silent);
        assert_eq!(sniffed.io.prefix(), b"GET / HTTP/1.1\r\n");

        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(b"PRI * HTTP/2").await.unwrap();
        let stalled = sniff(server, SILENCE, STALL).await.unwrap_err();
        assert_eq!(stalled.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test(start_paused = true)]
    async fn a_partial_preface_then_the_end_is_opaque_and_kept() {
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(b"PRI * HTTP/2").await.unwrap();
        client.shutdown().await.unwrap();
        let sniffed = sniff(server, SILENCE, STALL).await.unwrap();
        assert!(matches!(sniffed.protocol, Detected::Opaque));
        assert_eq!(sniffed.io.prefix(), b"PRI * HTTP/2");
    }

    /// After a silence, the first side to speak decides: a server that
    /// greets (SMTP, MySQL) makes the stream opaque, a client that speaks
    /// late is detected as if it had not waited.
    #[tokio::test]
    async fn after_a_silence_the_first_to_speak_decides() {
        use tokio::net::{TcpListener, TcpStream};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        for server_first in [true, false] {
            let upstream = TcpStream::connect(addr).await.unwrap();
            let (mut accepted, _) = listener.accept().await.unwrap();
            let (mut client, proxied) = tokio::io::duplex(256);
            let silent = PrefixedIo::new(Bytes::new(), proxied);
            if server_first {
                accepted
                    .write_all(b"220 smtp.test ESMTP\r\n")
                    .await
                    .unwrap();
            } else {
                client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
            }
            let speaker = first_speaker(silent, &upstream, STALL, STALL)
                .await
                .unwrap();
            match (server_first, speaker) {
                (true, Speaker::Server(io)) => assert!(io.prefix().is_empty()),
                (false, Speaker::Client(sniffed)) => {
                    assert!(matches!(sniffed.protocol, Detected::Http1));
                    assert_eq!(sniffed.io.prefix(), b"GET / HTTP/1.1\r\n");
                }
                (server_first, other) => panic!("server first: {server_first}: {other:?}"),
            }
        }
    }
}
