//! The relay's sockets: the transparent listener that `TPROXY` delivers the
//! app's datagrams to, each read with its original destination
//! (`IP_RECVORIGDSTADDR`); a reply socket per flow, bound to that
//! destination (`IP_TRANSPARENT` and `IP_FREEBIND`), so that answers reach
//! the app from the address it sent to; and a plain upstream socket.
//!
//! `IP_TRANSPARENT` needs `CAP_NET_RAW` (or `CAP_NET_ADMIN`) in the pod's
//! network namespace; without it [`listen`] fails with `EPERM`.

use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, SockaddrIn, SockaddrIn6, SockaddrStorage, recvmsg, setsockopt,
    sockopt,
};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// A datagram the app sent.
#[derive(Debug)]
pub struct Received {
    /// Its length in the buffer.
    pub len: usize,
    /// The app's address.
    pub client: SocketAddr,
    /// Where the app sent it (the original destination); the listener's own
    /// address when it was sent there directly.
    pub dst: SocketAddr,
}

fn new_socket(addr: SocketAddr) -> std::io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_cloexec(true)?;
    socket.set_nonblocking(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    Ok(socket)
}

fn transparent(socket: &Socket, addr: SocketAddr) -> std::io::Result<()> {
    if addr.is_ipv6() {
        socket.set_ip_transparent_v6(true)?;
        socket.set_freebind_v6(true)
    } else {
        socket.set_ip_transparent_v4(true)?;
        socket.set_freebind_v4(true)
    }
}

/// The transparent listener on `addr` (IPv6-only for an IPv6 address),
/// reporting each datagram's original destination.
pub fn listen(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = new_socket(addr)?;
    transparent(&socket, addr)?;
    if addr.is_ipv6() {
        setsockopt(&socket, sockopt::Ipv6OrigDstAddr, &true)?;
    } else {
        setsockopt(&socket, sockopt::Ipv4OrigDstAddr, &true)?;
    }
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

/// A socket bound to `dst` (not one of the pod's addresses), from which the
/// flow's answers are sent to the app. Several flows to one destination
/// each bind their own (`SO_REUSEADDR`); none is connected, so `TPROXY`
/// keeps delivering the app's datagrams to the listener.
pub fn reply_from(dst: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = new_socket(dst)?;
    socket.set_reuse_address(true)?;
    transparent(&socket, dst)?;
    socket.bind(&dst.into())?;
    UdpSocket::from_std(socket.into())
}

/// A socket of the sidecar's own, connected to `dst`.
pub async fn upstream(dst: SocketAddr) -> std::io::Result<UdpSocket> {
    let any: SocketAddr = match dst {
        SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(any).await?;
    socket.connect(dst).await?;
    Ok(socket)
}

/// Receives one datagram into `buf`, with where it came from and where it
/// was sent.
pub async fn receive(socket: &UdpSocket, buf: &mut [u8]) -> std::io::Result<Received> {
    socket
        .async_io(Interest::READABLE, || receive_now(socket, buf))
        .await
}

fn receive_now(socket: &UdpSocket, buf: &mut [u8]) -> std::io::Result<Received> {
    let local = socket.local_addr()?;
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let mut space = nix::cmsg_space!(nix::libc::sockaddr_in6);
    let msg = recvmsg::<SockaddrStorage>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_DONTWAIT,
    )?;
    let client = msg
        .address
        .and_then(|a| socket_addr(&a))
        .ok_or_else(|| std::io::Error::other("a datagram without a source address"))?;
    let mut dst = local;
    for cmsg in msg.cmsgs()? {
        match cmsg {
            ControlMessageOwned::Ipv4OrigDstAddr(sin) => {
                dst = SocketAddrV4::from(SockaddrIn::from(sin)).into();
            }
            ControlMessageOwned::Ipv6OrigDstAddr(sin6) => {
                dst = SocketAddrV6::from(SockaddrIn6::from(sin6)).into();
            }
            _ => {}
        }
    }
    Ok(Received {
        len: msg.bytes,
        client,
        dst,
    })
}

fn socket_addr(addr: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = addr.as_sockaddr_in() {
        return Some(SocketAddrV4::from(*v4).into());
    }
    addr.as_sockaddr_in6()
        .map(|v6| SocketAddrV6::from(*v6).into())
}
