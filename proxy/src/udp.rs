//! The UDP relay: the pod's UDP other than DNS. `vigil-proxy init` marks
//! the app's UDP (every uid but the sidecar's, to any address outside the
//! pod, port 53 aside), routes it to `lo` and `TPROXY`s it to the relay's
//! transparent socket (`--udp-addr`), which reads each datagram's original
//! destination. A flow (the app's address and the destination) is counted
//! once, named ([`flow::authority`]: a name the pod's DNS answers bind to
//! the IP, else `ip:port`), recognised as QUIC by its first datagram
//! ([`quic`]), judged like a TCP stream ([`crate::destination::Judge`]), then
//! relayed through one upstream socket of the sidecar's own, answers going
//! back from a socket bound to the destination, or dropped when refused. A
//! flow is reported every interval with its bytes both ways, judged again
//! on every policy change (cut when refused), and ends after
//! `--udp-idle-timeout-ms` without a datagram; at most `--udp-max-flows`
//! are open (more are dropped and counted).
//!
//! Data-path tier: [`flow`] and [`quic`] are pure; the rest is thin I/O.

pub mod flow;
pub mod quic;
mod socket;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::UdpArgs;
use crate::destination::Judge;
use crate::detect::stratum::StratumScanner;
use crate::model::Protocol;
use crate::policy::{self, Decision, Policy, PolicyRx};
use crate::resolve::PodAnswers;
use crate::stream::LiveRecord;
use crate::telemetry::Telemetry;
use flow::{Drop, FlowKey, FlowTable};

/// Datagrams queued for one flow's upstream socket; more are dropped.
pub const FLOW_QUEUE: usize = 32;
/// Most bytes of datagrams queued in one relay's flows at once; more are
/// dropped (`backlog`). Without it the bound was flows x queue x 64 KiB,
/// gigabytes, while flows wait (for the first policy, say).
pub const MAX_QUEUED_BYTES: usize = 16 << 20;

/// A datagram queued for its flow, its bytes counted in the relay's
/// budget until it is taken or dropped.
#[derive(Debug)]
struct Queued {
    data: Vec<u8>,
    len: usize,
    budget: Arc<std::sync::atomic::AtomicUsize>,
}

impl Queued {
    /// `data`, if `budget` (bytes queued now) has room for it under `max`.
    fn reserve(
        data: Vec<u8>,
        budget: &Arc<std::sync::atomic::AtomicUsize>,
        max: usize,
    ) -> Option<Queued> {
        use std::sync::atomic::Ordering;
        let len = data.len();
        budget
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                (queued + len <= max).then_some(queued + len)
            })
            .ok()?;
        Some(Queued {
            data,
            len,
            budget: budget.clone(),
        })
    }

    /// The datagram; its bytes leave the budget.
    fn take(mut self) -> Vec<u8> {
        std::mem::take(&mut self.data)
    }
}

impl std::ops::Drop for Queued {
    fn drop(&mut self) {
        self.budget
            .fetch_sub(self.len, std::sync::atomic::Ordering::AcqRel);
    }
}
/// Largest UDP payload.
const MAX_DATAGRAM: usize = 65_535;

/// Why the relay could not start.
#[derive(Debug, thiserror::Error)]
pub enum UdpError {
    /// The transparent socket could not be opened.
    #[error(
        "cannot open the UDP relay on {addr}: {source} (IP_TRANSPARENT needs CAP_NET_RAW or CAP_NET_ADMIN: give the sidecar NET_RAW; or choose another --udp-addr, or `off`)"
    )]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Labels of `vigil_proxy_udp_dropped_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DropLabels {
    reason: &'static str,
}

/// The relay's metrics.
#[derive(Clone, Debug, Default)]
pub struct UdpMetrics {
    dropped: Family<DropLabels, Counter>,
    flows: Gauge,
}

impl UdpMetrics {
    /// Creates and registers the metrics.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "vigil_proxy_udp_dropped",
            "Datagrams of the pod's UDP dropped without a flow: sent to the relay itself (direct), past --udp-max-flows (full), or past a flow's queue or the relay's 16 MiB of queued bytes (backlog)",
            metrics.dropped.clone(),
        );
        registry.register(
            "vigil_proxy_udp_flows",
            "UDP flows open in the relay",
            metrics.flows.clone(),
        );
        metrics
    }

    fn drop(&self, why: Drop) {
        self.dropped
            .get_or_create(&DropLabels {
                reason: why.label(),
            })
            .inc();
    }
}

/// What the relay needs from the sidecar.
#[derive(Clone, Debug)]
pub struct Udp {
    /// The current policy.
    pub policy: PolicyRx,
    /// Until when a new flow waits for the controller's first policy.
    pub policy_deadline: tokio::time::Instant,
    /// The policy after that (`--default-policy`).
    pub default_policy: Arc<Policy>,
    /// Where records go.
    pub telemetry: Telemetry,
    /// The DNS answers the pod received (to name a destination).
    pub answers: PodAnswers,
    /// How often an open flow is reported.
    pub report_interval: Duration,
    /// A flow without a datagram for this long ends.
    pub idle_timeout: Duration,
    /// Most open flows (per listener).
    pub max_flows: usize,
    /// The metrics.
    pub metrics: UdpMetrics,
    /// Turns true when open flows must end.
    pub stop: watch::Receiver<bool>,
}

/// A bound relay socket.
#[derive(Debug)]
pub struct Bound {
    socket: UdpSocket,
    /// Its address (the port chosen when 0 was asked).
    pub addr: SocketAddr,
}

/// Opens the transparent relay socket on `addr`.
pub fn bind(addr: SocketAddr) -> Result<Bound, UdpError> {
    let listen_err = |source| UdpError::Listen { addr, source };
    let socket = socket::listen(addr).map_err(listen_err)?;
    let addr = socket.local_addr().map_err(listen_err)?;
    Ok(Bound { socket, addr })
}

/// Opens the relay's sockets as `args` ask: the IPv4 (or given) address
/// and its IPv6 twin (skipped on a host without IPv6). When `--udp-addr`
/// was not given, a socket that cannot be opened (no `CAP_NET_RAW`, say) is
/// left off with an error logged; when it was, that is an error.
pub fn open(args: &UdpArgs) -> Result<Vec<Bound>, UdpError> {
    let mut bound = Vec::new();
    for addr in [args.listen(), args.listen6()].into_iter().flatten() {
        match bind(addr) {
            Ok(b) => bound.push(b),
            Err(UdpError::Listen { source, .. })
                if addr.is_ipv6()
                    && matches!(
                        source.raw_os_error(),
                        Some(nix::libc::EAFNOSUPPORT | nix::libc::EADDRNOTAVAIL)
                    ) =>
            {
                tracing::warn!(%addr, "no IPv6 on this host: the IPv6 UDP relay is off");
            }
            Err(e) if !args.required() => {
                tracing::error!(error = %e, "the UDP relay is off: the pod's UDP other than DNS is dropped by init's rules, unrecorded");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(bound)
}

type Table = Arc<Mutex<FlowTable<mpsc::Sender<Queued>>>>;

/// Serves the relay socket until `shutdown` turns true.
pub fn spawn(udp: Arc<Udp>, bound: Bound, mut shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let table: Table = Arc::new(Mutex::new(FlowTable::new(udp.max_flows)));
        let budget = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            let received = tokio::select! {
                () = crate::model::stopped(&mut shutdown) => break,
                r = socket::receive(&bound.socket, &mut buf) => r,
            };
            let received = match received {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(error = %e, "UDP relay receive failed");
                    continue;
                }
            };
            let datagram = buf[..received.len].to_vec();
            let outcome = flow::classify(received.client, received.dst, bound.addr)
                .and_then(|key| deliver(&udp, &table, &budget, key, datagram));
            if let Err(why) = outcome {
                tracing::debug!(client = %received.client, dst = %received.dst, why = why.label(), "UDP datagram dropped");
                udp.metrics.drop(why);
            }
        }
    })
}

/// Hands `datagram` to `key`'s flow, opening one if there is none.
fn deliver(
    udp: &Arc<Udp>,
    table: &Table,
    budget: &Arc<std::sync::atomic::AtomicUsize>,
    key: FlowKey,
    datagram: Vec<u8>,
) -> Result<(), Drop> {
    let mut flows = table.lock().map_err(|_| Drop::Full)?;
    if let Some(tx) = flows.get(&key) {
        let queued = Queued::reserve(datagram, budget, MAX_QUEUED_BYTES).ok_or(Drop::Backlog)?;
        return tx.try_send(queued).map_err(|_| Drop::Backlog);
    }
    let (tx, rx) = mpsc::channel(FLOW_QUEUE);
    let id = flows.insert(key, tx)?;
    udp.metrics.flows.set(flows.len() as i64);
    let (udp, table) = (udp.clone(), table.clone());
    tokio::spawn(async move {
        run(&udp, key, datagram, rx).await;
        if let Ok(mut flows) = table.lock() {
            flows.remove(&key, id);
            udp.metrics.flows.set(flows.len() as i64);
        }
    });
    Ok(())
}

/// Why a flow ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ended {
    Idle,
    Stopping,
    Cut(&'static str),
}

/// One flow, from its first datagram to its end.
async fn run(udp: &Udp, key: FlowKey, first: Vec<u8>, rx: mpsc::Receiver<Queued>) {
    let start = Instant::now();
    let policy = policy::current(&udp.policy, udp.policy_deadline, &udp.default_policy).await;
    let names = udp.answers.names_of(key.dst.ip());
    let authority = flow::authority(key.dst, &names, &policy);
    let protocol = flow::protocol(&first);
    let judge = flow::judge(&key, &authority);
    let mut live = LiveRecord::new(flow::record(&key, &authority, protocol));
    if let Decision::Deny { reason } = judge.decide(&policy, protocol) {
        tracing::info!(client = %key.client, %authority, reason, "refused a UDP flow");
        emit(udp, &mut live, (0, 0), start, true);
        hold(udp, rx).await;
        return;
    }
    let sockets = async {
        Ok::<_, std::io::Error>((
            socket::upstream(key.dst).await?,
            socket::reply_from(key.dst)?,
        ))
    };
    let (upstream, reply) = match sockets.await {
        Ok(sockets) => sockets,
        Err(e) => {
            tracing::warn!(client = %key.client, %authority, error = %e, "cannot relay a UDP flow");
            emit(udp, &mut live, (0, 0), start, false);
            hold(udp, rx).await;
            return;
        }
    };
    let relay = Relay {
        udp,
        key,
        judge,
        start,
        live,
    };
    let ended = relay.pipe(first, rx, upstream, reply).await;
    tracing::debug!(client = %key.client, %authority, ?ended, "UDP flow ended");
}

fn emit(udp: &Udp, live: &mut LiveRecord, totals: (u64, u64), start: Instant, denied: bool) {
    if let Some(record) = live.emission(totals.0, totals.1, start.elapsed(), denied) {
        udp.telemetry.emit(record);
    }
}

/// Drops a refused (or unrelayable) flow's datagrams until it is idle, the
/// policy changes (the next datagram is then judged afresh) or the sidecar
/// stops: one record per flow, not one per datagram.
async fn hold(udp: &Udp, mut rx: mpsc::Receiver<Queued>) {
    let mut policy = udp.policy.clone();
    policy.borrow_and_update();
    let mut stop = udp.stop.clone();
    loop {
        tokio::select! {
            got = tokio::time::timeout(udp.idle_timeout, rx.recv()) => match got {
                Ok(Some(_)) => continue,
                _ => return,
            },
            _ = policy.changed() => return,
            () = crate::model::stopped(&mut stop) => return,
        }
    }
}

/// An allowed flow being relayed.
struct Relay<'a> {
    udp: &'a Udp,
    key: FlowKey,
    judge: Judge,
    start: Instant,
    live: LiveRecord,
}

impl Relay<'_> {
    /// Relays both ways until the flow ends, reporting every interval,
    /// looking for Stratum in the first bytes each way, and judging it again
    /// on every policy change.
    async fn pipe(
        mut self,
        first: Vec<u8>,
        mut rx: mpsc::Receiver<Queued>,
        upstream: UdpSocket,
        reply: UdpSocket,
    ) -> Ended {
        let udp = self.udp;
        let mut totals = (0u64, 0u64);
        let mut scanners = (StratumScanner::new(), StratumScanner::new());
        let mut policy = udp.policy.clone();
        // Judged when the flow began: a policy that came since is applied
        // before its first datagram goes (see `stream::run`).
        let current = policy.borrow_and_update().clone();
        let at_start = self.judge.decide(&current, self.live.protocol());
        let mut stop = udp.stop.clone();
        let mut ticker = tokio::time::interval_at(
            tokio::time::Instant::now() + udp.report_interval,
            udp.report_interval,
        );
        let idle = tokio::time::sleep(udp.idle_timeout);
        tokio::pin!(idle);
        let mut pending = Some(first);
        let ended = if let Decision::Deny { reason } = at_start {
            Ended::Cut(reason)
        } else {
            loop {
                let mut found = false;
                if let Some(datagram) = pending.take() {
                    // A send error (ICMP unreachable, say) loses the datagram, as
                    // the network would.
                    let _ = upstream.send(&datagram).await;
                    totals.0 += datagram.len() as u64;
                    found |= scan(&mut scanners.0, &datagram);
                    idle.as_mut()
                        .reset(tokio::time::Instant::now() + udp.idle_timeout);
                }
                if found && let Some(cut) = self.found_stratum(&policy.borrow().clone(), totals) {
                    break cut;
                }
                tokio::select! {
                    got = rx.recv() => match got {
                        Some(queued) => pending = Some(queued.take()),
                        None => break Ended::Stopping,
                    },
                    ready = upstream.readable() => {
                        let Some(answer) = ready.ok().and_then(|()| receive(&upstream)) else {
                            continue;
                        };
                        let _ = reply.send_to(&answer, self.key.client).await;
                        totals.1 += answer.len() as u64;
                        idle.as_mut().reset(tokio::time::Instant::now() + udp.idle_timeout);
                        if scan(&mut scanners.1, &answer)
                            && let Some(cut) = self.found_stratum(&policy.borrow().clone(), totals)
                        {
                            break cut;
                        }
                    }
                    () = &mut idle => break Ended::Idle,
                    () = crate::model::stopped(&mut stop) => break Ended::Stopping,
                    _ = ticker.tick() => emit(udp, &mut self.live, totals, self.start, false),
                    changed = policy.changed() => {
                        if changed.is_err() {
                            continue;
                        }
                        let current = policy.borrow_and_update().clone();
                        if let Decision::Deny { reason } = self.judge.decide(&current, self.live.protocol()) {
                            break Ended::Cut(reason);
                        }
                    }
                }
            }
        };
        if let Ended::Cut(reason) = ended {
            tracing::info!(client = %self.key.client, judge = ?self.judge, reason, "cut a UDP flow the policy no longer allows");
        }
        let cut = matches!(ended, Ended::Cut(_));
        emit(udp, &mut self.live, totals, self.start, cut);
        ended
    }

    /// Marks the flow as mining: the cut when the policy refuses that, else
    /// reported at once (counted under Stratum).
    fn found_stratum(&mut self, policy: &Policy, totals: (u64, u64)) -> Option<Ended> {
        tracing::warn!(judge = ?self.judge, "Stratum mining protocol found in a UDP flow");
        self.live.set_protocol(Protocol::Stratum);
        match self.judge.decide(policy, Protocol::Stratum) {
            Decision::Deny { reason } => Some(Ended::Cut(reason)),
            Decision::Allow => {
                emit(self.udp, &mut self.live, totals, self.start, false);
                None
            }
        }
    }
}

/// One answer waiting on `upstream`, in a buffer allocated for it (not
/// zeroed) and freed once relayed: a flow keeps no 64 KiB buffer while it
/// waits. `None` when there is none after all, or the kernel reports an
/// error (an ICMP unreachable, say).
fn receive(upstream: &UdpSocket) -> Option<Vec<u8>> {
    let mut answer = Vec::with_capacity(MAX_DATAGRAM);
    upstream.try_recv_buf(&mut answer).ok()?;
    Some(answer)
}

/// Feeds `bytes` to `scanner` until it is done; true when Stratum shows.
fn scan(scanner: &mut StratumScanner, bytes: &[u8]) -> bool {
    !scanner.is_done() && scanner.feed(bytes).is_some()
}

#[cfg(test)]
mod tests;
