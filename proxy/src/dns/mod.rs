//! The DNS listener: `vigil-proxy init` redirects the pod's DNS (UDP and
//! TCP port 53, whatever server it names) here. Each query is recorded
//! (protocol `dns`: the name, the query type, the response code), judged
//! ([`crate::policy::evaluate_dns`]: in enforcement a name neither in the
//! baseline nor under a learned domain is answered `REFUSED`; so is a
//! threat-listed name while threats are enforced, and every name while the
//! workload is quarantined), and
//! forwarded to the pod's resolver (`--dns-upstream`) over the same
//! transport; the answer is relayed byte for byte, and the addresses it
//! gives the name feed name binding ([`PodAnswers`]).
//!
//! Data-path tier: [`message`] is the pure part (parse, build, extract);
//! the rest is thin I/O. The sidecar's own lookups are not redirected
//! (init skips its uid), so forwarding to the pod's resolver does not loop.

pub mod message;

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use crate::listener::{self, Accepted};
use crate::model::{Direction, Protocol, Record};
use crate::policy::{Decision, Policy, PolicyRx, evaluate_dns};
use crate::resolve::PodAnswers;
use crate::telemetry::Telemetry;
use message::{Incoming, Question, rcode};

/// How long the upstream resolver has to answer one query.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(5);
/// Most queries forwarded at once (UDP and TCP together); further UDP
/// queries are dropped (clients retry), TCP ones wait.
pub const MAX_IN_FLIGHT: usize = 1024;
/// Most open TCP connections to the listener.
pub const MAX_TCP_CONNECTIONS: usize = 256;
/// How long a TCP client may stay silent between queries (RFC 7766 asks
/// for seconds, not minutes).
pub const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest DNS message.
const MAX_MESSAGE: usize = 65_535;

/// Why the DNS listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// A socket could not be bound.
    #[error(
        "cannot listen on {addr} ({transport}) for DNS: {source} (choose another --dns-addr, or `off`)"
    )]
    Bind {
        /// `udp` or `tcp`.
        transport: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// The listener's sockets: TCP and UDP on the same address.
#[derive(Debug)]
pub struct Bound {
    /// The TCP listener.
    pub tcp: TcpListener,
    /// The UDP socket.
    pub udp: UdpSocket,
    /// Their address (the port chosen when 0 was asked).
    pub addr: SocketAddr,
}

/// Binds TCP on `addr`, then UDP on the same address and port. With `v6`,
/// both are IPv6-only (beside an IPv4 twin), and `None` (with a warning)
/// on a host without IPv6.
pub async fn bind(addr: SocketAddr, v6: bool) -> Result<Option<Bound>, DnsError> {
    let tcp_err = |source| DnsError::Bind {
        transport: "tcp",
        addr,
        source,
    };
    let (tcp, local) = if v6 {
        match listener::bind_v6_only("dns6", addr).await {
            Ok(Some(bound)) => bound,
            Ok(None) => return Ok(None),
            Err(listener::ListenerError::Bind { source, .. }) => return Err(tcp_err(source)),
        }
    } else {
        match listener::bind("dns", addr).await {
            Ok(bound) => bound,
            Err(listener::ListenerError::Bind { source, .. }) => return Err(tcp_err(source)),
        }
    };
    let udp = bind_udp(local, v6).map_err(|source| DnsError::Bind {
        transport: "udp",
        addr: local,
        source,
    })?;
    Ok(Some(Bound {
        tcp,
        udp,
        addr: local,
    }))
}

fn bind_udp(addr: SocketAddr, v6_only: bool) -> std::io::Result<UdpSocket> {
    use nix::sys::socket::{
        AddressFamily, SockFlag, SockType, SockaddrIn6, bind, setsockopt, socket, sockopt,
    };
    let std = match addr {
        SocketAddr::V6(v6) if v6_only => {
            let flags = SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK;
            let fd = socket(AddressFamily::Inet6, SockType::Datagram, flags, None)?;
            setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
            bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn6::from(v6))?;
            std::net::UdpSocket::from(fd)
        }
        _ => {
            let socket = std::net::UdpSocket::bind(addr)?;
            socket.set_nonblocking(true)?;
            socket
        }
    };
    UdpSocket::from_std(std)
}

/// The DNS listener's metrics.
#[derive(Clone, Debug, Default)]
pub struct DnsMetrics {
    dropped: Counter,
    unbound: Counter,
}

impl DnsMetrics {
    /// Creates and registers the metrics.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "vigil_proxy_dns_dropped",
            "DNS queries over UDP dropped because too many were in flight",
            metrics.dropped.clone(),
        );
        registry.register(
            "vigil_proxy_dns_unbound",
            "DNS answers with addresses not bound to their name, because the pod's resolver asks a search name first (resolv.conf search, ndots) and that name was not answered NXDOMAIN: asked directly, its answer is not what a client reaches by the name",
            metrics.unbound.clone(),
        );
        metrics
    }
}

/// Everything the listener needs, shared by its tasks.
#[derive(Debug)]
pub struct Dns {
    /// The resolver queries go to.
    pub upstream: SocketAddr,
    /// The current policy.
    pub policy: PolicyRx,
    /// Until when queries wait for the controller's first policy.
    pub policy_deadline: tokio::time::Instant,
    /// The policy applied when none came by then (`--default-policy`).
    pub default_policy: Arc<Policy>,
    /// Where records go.
    pub telemetry: Telemetry,
    /// Where the answers go, for name binding.
    pub answers: PodAnswers,
    /// Metrics.
    pub metrics: DnsMetrics,
    /// Slots of queries in flight.
    pub in_flight: Arc<Semaphore>,
}

/// How a query came, and so how it is forwarded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transport {
    Udp,
    Tcp,
}

impl Dns {
    /// The policy to judge a query by: as for requests, the controller's
    /// latest, or before the first one a wait bounded by `--policy-wait-ms`
    /// after start, then `--default-policy`.
    async fn current_policy(&self) -> Arc<Policy> {
        crate::policy::current(&self.policy, self.policy_deadline, &self.default_policy).await
    }

    /// Answers one message a client sent (`None`: send nothing back).
    async fn handle(&self, query: &[u8], transport: Transport) -> Option<Vec<u8>> {
        let start = Instant::now();
        let question = match message::inspect(query) {
            Incoming::Ignore => return None,
            Incoming::Reject {
                rcode,
                response,
                question,
            } => {
                if let Some(q) = question {
                    tracing::info!(name = %q.name, qtype = %q.qtype, rcode, "malformed DNS query answered without forwarding");
                    self.emit(
                        &q,
                        rcode,
                        rcode == message::rcode::REFUSED,
                        start,
                        query,
                        &response,
                    );
                }
                return Some(response);
            }
            Incoming::Query(question) => question,
        };
        let policy = self.current_policy().await;
        let mut decision = evaluate_dns(&policy, &question.name);
        // A resolver asks an allowed short name with the search domains
        // first (`pypi.org.<ns>.svc.cluster.local`), and stops at a REFUSED:
        // those are allowed as the name is (no data of the notebook's in
        // them), so enforcement needs no learned search names.
        if matches!(decision, Decision::Deny { .. })
            && self
                .answers
                .search()
                .searched(&question.name)
                .any(|short| evaluate_dns(&policy, short) == Decision::Allow)
        {
            decision = Decision::Allow;
        }
        if let Decision::Deny { reason } = decision {
            tracing::info!(name = %question.name, qtype = %question.qtype, reason, "DNS query refused");
            let response = message::answer(query, rcode::REFUSED);
            self.emit(&question, rcode::REFUSED, true, start, query, &response);
            return Some(response);
        }
        Some(self.forward(&question, query, transport, start).await)
    }

    /// Forwards an allowed query upstream; returns the answer to relay
    /// (`SERVFAIL` when none came), recorded, its addresses kept.
    async fn forward(
        &self,
        question: &Question,
        query: &[u8],
        transport: Transport,
        start: Instant,
    ) -> Vec<u8> {
        let forwarded = tokio::time::timeout(UPSTREAM_TIMEOUT, async {
            match transport {
                Transport::Udp => forward_udp(self.upstream, query).await,
                Transport::Tcp => forward_tcp(self.upstream, query).await,
            }
        })
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()));
        match forwarded {
            Ok(response) => {
                let status = match message::read_response(&response, question) {
                    Some(answer) => {
                        let rcode = binding_rcode(&question.qtype, answer.rcode);
                        let bound = self
                            .answers
                            .answered(&question.name, rcode, &answer.addresses);
                        if !bound && !answer.addresses.is_empty() {
                            self.metrics.unbound.inc();
                            tracing::debug!(name = %question.name, "answer not bound to the name: a search name before it was not answered NXDOMAIN");
                        }
                        answer.rcode
                    }
                    None => u16::from(response.get(3).map_or(0, |b| b & 0x0f)),
                };
                self.emit(question, status, false, start, query, &response);
                response
            }
            Err(e) => {
                tracing::warn!(name = %question.name, upstream = %self.upstream, error = %e, "the DNS upstream did not answer; answering SERVFAIL");
                let response = message::answer(query, rcode::SERVFAIL);
                // Recorded as what the client was answered (0 would read
                // as NOERROR).
                self.emit(question, rcode::SERVFAIL, false, start, query, &response);
                response
            }
        }
    }

    fn emit(
        &self,
        q: &Question,
        status: u16,
        denied: bool,
        start: Instant,
        query: &[u8],
        response: &[u8],
    ) {
        self.telemetry.emit(Record {
            authority: q.name.clone(),
            method: q.qtype.clone(),
            status,
            denied,
            latency_us: start.elapsed().as_micros() as u64,
            bytes_in: query.len() as u64,
            bytes_out: response.len() as u64,
            ..Record::new(Direction::Outbound, Protocol::Dns)
        });
    }
}

/// The response code name binding takes from an answer to a `qtype`
/// query: an NXDOMAIN marks a name missing only when an address was asked
/// for (`A`, `AAAA`), as a resolver's search does; some servers answer
/// NXDOMAIN for a name that exists when asked another type, and a notebook
/// could use one to mark a cluster name missing.
fn binding_rcode(qtype: &str, rcode: u16) -> u16 {
    if rcode == rcode::NXDOMAIN && !matches!(qtype, "A" | "AAAA") {
        rcode::NOERROR
    } else {
        rcode
    }
}

/// Sends `query` to `upstream` from a fresh socket (a fresh source port
/// for each query) and returns the first datagram that answers its id.
async fn forward_udp(upstream: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let any: SocketAddr = match upstream {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(any).await?;
    socket.connect(upstream).await?;
    socket.send(query).await?;
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        let n = socket.recv(&mut buf).await?;
        let answers = n >= 3 && buf[..2] == query[..2] && buf[2] & 0x80 != 0;
        if answers {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

/// Sends `query` to `upstream` over a new TCP connection (2-byte length
/// framing) and reads one answer.
async fn forward_tcp(upstream: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(upstream).await?;
    write_framed(&mut stream, query).await?;
    read_framed(&mut stream).await
}

async fn write_framed(stream: &mut TcpStream, message: &[u8]) -> std::io::Result<()> {
    let len = u16::try_from(message.len()).map_err(|_| std::io::ErrorKind::InvalidData)?;
    let mut framed = Vec::with_capacity(message.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(message);
    stream.write_all(&framed).await
}

async fn read_framed(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let len = stream.read_u16().await?;
    let mut message = vec![0u8; usize::from(len)];
    stream.read_exact(&mut message).await?;
    Ok(message)
}

/// Spawns the UDP loop: each query is answered on its own task, at most
/// [`MAX_IN_FLIGHT`] at once; the loop ends when `shutdown` turns true.
pub fn spawn_udp(
    dns: Arc<Dns>,
    socket: UdpSocket,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let socket = Arc::new(socket);
    tokio::spawn(async move {
        let mut buf = vec![0u8; MAX_MESSAGE];
        loop {
            let (n, peer) = tokio::select! {
                received = socket.recv_from(&mut buf) => match received {
                    Ok(received) => received,
                    Err(e) => {
                        tracing::debug!(error = %e, "DNS receive failed");
                        continue;
                    }
                },
                _ = crate::model::stopped(&mut shutdown) => break,
            };
            let Ok(permit) = dns.in_flight.clone().try_acquire_owned() else {
                dns.metrics.dropped.inc();
                continue;
            };
            let (dns, socket, query) = (dns.clone(), socket.clone(), buf[..n].to_vec());
            tokio::spawn(async move {
                let _permit = permit;
                if let Some(response) = dns.handle(&query, Transport::Udp).await {
                    let _ = socket.send_to(&response, peer).await;
                }
            });
        }
    })
}

/// Spawns the TCP accept loop (at most [`MAX_TCP_CONNECTIONS`]); each
/// connection's queries are answered in turn.
pub fn spawn_tcp(
    dns: Arc<Dns>,
    tcp: TcpListener,
    shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    listener::spawn(
        "dns",
        tcp,
        MAX_TCP_CONNECTIONS,
        move |accepted: Accepted| serve_tcp(dns.clone(), accepted.stream),
        shutdown,
        Duration::ZERO,
    )
}

async fn serve_tcp(dns: Arc<Dns>, mut stream: TcpStream) {
    loop {
        let query = match tokio::time::timeout(TCP_IDLE_TIMEOUT, read_framed(&mut stream)).await {
            Ok(Ok(query)) => query,
            _ => return,
        };
        let Ok(_permit) = dns.in_flight.acquire().await else {
            return;
        };
        let Some(response) = dns.handle(&query, Transport::Tcp).await else {
            return;
        };
        if write_framed(&mut stream, &response).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests;
