//! Long-lived streams: `CONNECT` tunnels, redirected TLS and opaque TCP,
//! WebSocket and other HTTP upgrades. One live record per stream, reported
//! at every report interval while the stream is open (the bytes since the
//! last report), not only when it closes, so a miner that stays connected
//! for hours is seen within one interval. Both directions are inspected for
//! Stratum in their first bytes (inside the frames after a WebSocket
//! upgrade). Whenever the policy changes the stream is judged again, and it
//! is cut when the policy no longer allows it, or when mining shows up in
//! enforcement; the cut is recorded as a denial.
//!
//! Data-path tier: uses `policy`, `destination`, `detect` and `telemetry`;
//! never `http` or `tcp` (they call it).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Notify, watch};

use crate::destination::Judge;
use crate::detect::stratum::StratumScanner;
use crate::detect::websocket::WsDecoder;
use crate::model::{Protocol, Record};
use crate::policy::{Decision, PolicyRx};
use crate::telemetry::Telemetry;

/// A stream's record over its life: each emission carries the bytes since
/// the last one. The stream is counted once (in its first emission, and
/// again under a new protocol when inspection finds Stratum); later ones
/// carry bytes only (`count` 0). A cut is its own counted, denied event.
#[derive(Debug)]
pub struct LiveRecord {
    record: Record,
    counted: Option<Protocol>,
    sent_in: u64,
    sent_out: u64,
}

impl LiveRecord {
    /// A stream not counted yet.
    pub fn new(record: Record) -> Self {
        LiveRecord {
            record,
            counted: None,
            sent_in: 0,
            sent_out: 0,
        }
    }

    /// A stream whose opening was already counted (the request that was
    /// upgraded).
    pub fn counted(record: Record) -> Self {
        let protocol = record.protocol;
        LiveRecord {
            counted: Some(protocol),
            ..Self::new(record)
        }
    }

    /// The record so far.
    pub fn record(&self) -> &Record {
        &self.record
    }

    /// The protocol now.
    pub fn protocol(&self) -> Protocol {
        self.record.protocol
    }

    /// Marks the stream as mining (found by inspection).
    pub fn set_protocol(&mut self, protocol: Protocol) {
        self.record.protocol = protocol;
    }

    /// The record to emit now, with totals so far and the time since the
    /// stream started; `None` when there is nothing new to say.
    pub fn emission(
        &mut self,
        total_in: u64,
        total_out: u64,
        elapsed: Duration,
        denied: bool,
    ) -> Option<Record> {
        let stamp = self.stamp(total_in, total_out, elapsed, denied)?;
        Some(stamp.apply(self.record.clone()))
    }

    /// The last [`emission`](Self::emission) of a stream, which gives its
    /// record away rather than copying it (one request's record, emitted
    /// when its response ends).
    pub fn into_emission(
        mut self,
        total_in: u64,
        total_out: u64,
        elapsed: Duration,
        denied: bool,
    ) -> Option<Record> {
        let stamp = self.stamp(total_in, total_out, elapsed, denied)?;
        Some(stamp.apply(self.record))
    }

    /// What the next emission says, and the totals marked as sent.
    fn stamp(
        &mut self,
        total_in: u64,
        total_out: u64,
        elapsed: Duration,
        denied: bool,
    ) -> Option<Stamp> {
        let new_count = denied || self.counted != Some(self.record.protocol);
        let (bytes_in, bytes_out) = (total_in - self.sent_in, total_out - self.sent_out);
        if !new_count && bytes_in == 0 && bytes_out == 0 {
            return None;
        }
        self.sent_in = total_in;
        self.sent_out = total_out;
        if new_count && !denied {
            self.counted = Some(self.record.protocol);
        }
        Some(Stamp {
            bytes_in,
            bytes_out,
            denied,
            count: u64::from(new_count),
            latency_us: if new_count {
                elapsed.as_micros() as u64
            } else {
                0
            },
        })
    }
}

/// The figures of one emission.
struct Stamp {
    bytes_in: u64,
    bytes_out: u64,
    denied: bool,
    count: u64,
    latency_us: u64,
}

impl Stamp {
    fn apply(self, mut record: Record) -> Record {
        record.bytes_in = self.bytes_in;
        record.bytes_out = self.bytes_out;
        // A request refused before it was answered (a 403) stays denied.
        record.denied |= self.denied;
        record.count = self.count;
        record.latency_us = self.latency_us;
        record
    }
}

/// What inspecting a stream needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inspect {
    /// The bytes as they are.
    Raw,
    /// WebSocket frames (after an upgrade): their payloads, unmasked.
    WebSocket,
}

/// What a stream needs from the sidecar.
#[derive(Clone, Debug)]
pub struct StreamContext {
    /// Where records go.
    pub telemetry: Telemetry,
    /// The current policy.
    pub policy: PolicyRx,
    /// How often an open stream is reported.
    pub report_interval: Duration,
    /// An idle stream is closed after this long.
    pub idle_timeout: Duration,
    /// Turns true when open streams must close.
    pub stop: watch::Receiver<bool>,
}

/// One stream to run.
#[derive(Debug)]
pub struct Stream {
    /// Its record.
    pub live: LiveRecord,
    /// How it is judged again.
    pub judge: Judge,
    /// How it is inspected.
    pub inspect: Inspect,
    /// When it started.
    pub start: Instant,
}

/// Why a stream ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ended {
    /// Either side closed, or an I/O error.
    Closed(String),
    /// No byte moved for the idle timeout.
    Idle,
    /// The sidecar is stopping.
    Stopping,
    /// The policy refused it while open.
    Cut(&'static str),
}

/// Copies both ways until the stream ends (see [`Ended`]), reporting it
/// every interval, inspecting it and judging it again on every policy
/// change. `reset` is called on the client when the stream is cut, before
/// it is dropped (a TCP RST for a plain socket).
pub async fn pipe<C, U>(
    ctx: &StreamContext,
    client: C,
    upstream: U,
    mut stream: Stream,
    reset: impl FnOnce(&C),
) -> Ended
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let found = Arc::new(Found::default());
    let activity = Arc::new(AtomicU64::new(0));
    let mut client = Watched::new(client, activity.clone(), stream.inspect, found.clone());
    let mut upstream = Watched::new(upstream, activity.clone(), stream.inspect, found.clone());
    let (client_read, upstream_read) = (client.read.clone(), upstream.read.clone());
    let totals = || {
        (
            client_read.load(Ordering::Relaxed),
            upstream_read.load(Ordering::Relaxed),
        )
    };
    let emit = |live: &mut LiveRecord, denied: bool| {
        let (total_in, total_out) = totals();
        if let Some(record) = live.emission(total_in, total_out, stream.start.elapsed(), denied) {
            ctx.telemetry.emit(record);
        }
    };
    let mut policy = ctx.policy.clone();
    // The stream was judged before it was dialled (or before its upgrade
    // was answered): a policy that came in between is applied before a byte
    // moves. Only marked as seen, it would never be judged, and the stream
    // would outlive a quarantine that came during its dial.
    let current = policy.borrow_and_update().clone();
    let at_start = stream.judge.decide(&current, stream.live.protocol());
    let mut stop = ctx.stop.clone();
    let mut ticker = tokio::time::interval_at(
        tokio::time::Instant::now() + ctx.report_interval,
        ctx.report_interval,
    );
    let idle = idle_watch(&activity, ctx.idle_timeout);
    tokio::pin!(idle);
    let ended = if let Decision::Deny { reason } = at_start {
        Ended::Cut(reason)
    } else {
        let copy = tokio::io::copy_bidirectional(&mut client, &mut upstream);
        tokio::pin!(copy);
        loop {
            tokio::select! {
                r = &mut copy => break Ended::Closed(match r {
                    Ok(_) => "closed".to_owned(),
                    Err(e) => e.to_string(),
                }),
                () = &mut idle => break Ended::Idle,
                () = crate::model::stopped(&mut stop) => break Ended::Stopping,
                _ = ticker.tick() => emit(&mut stream.live, false),
                () = found.notify.notified() => {
                    tracing::warn!(judge = ?stream.judge, "Stratum mining protocol found inside a stream");
                    stream.live.set_protocol(Protocol::Stratum);
                    let current = policy.borrow().clone();
                    if let Decision::Deny { reason } = stream.judge.decide(&current, Protocol::Stratum) {
                        break Ended::Cut(reason);
                    }
                    // Flagged: reported at once, counted under Stratum.
                    emit(&mut stream.live, false);
                }
                changed = policy.changed() => {
                    if changed.is_err() {
                        continue;
                    }
                    let current = policy.borrow_and_update().clone();
                    if let Decision::Deny { reason } = stream.judge.decide(&current, stream.live.protocol()) {
                        break Ended::Cut(reason);
                    }
                }
            }
        }
    };
    match &ended {
        Ended::Cut(reason) => {
            tracing::info!(judge = ?stream.judge, reason, "cut an open stream the policy no longer allows");
            reset(&client.io);
            emit(&mut stream.live, true);
        }
        other => {
            tracing::debug!(judge = ?stream.judge, why = ?other, "stream ended");
            emit(&mut stream.live, false);
        }
    }
    ended
}

/// Resolves once no byte moved for `idle`.
async fn idle_watch(activity: &AtomicU64, idle: Duration) {
    loop {
        let seen = activity.load(Ordering::Relaxed);
        tokio::time::sleep(idle).await;
        if activity.load(Ordering::Relaxed) == seen {
            return;
        }
    }
}

/// Set when either direction's inspection finds Stratum.
#[derive(Debug, Default)]
struct Found {
    notify: Notify,
}

/// Raw bytes of one direction inspected at most (framing, pings and
/// compressed WebSocket messages never feed the scanner's own budget).
const INSPECT_LIMIT: u64 = 4 * crate::detect::stratum::SCAN_LIMIT as u64;

/// One direction's inspection state.
#[derive(Debug)]
struct Inspector {
    scanner: StratumScanner,
    frames: Option<WsDecoder>,
    raw: u64,
}

impl Inspector {
    /// Feeds bytes read; true when Stratum was found in them. Bytes that do
    /// not parse as WebSocket frames after an upgrade (a fake `101`) are
    /// scanned as they are.
    fn feed(&mut self, bytes: &[u8]) -> bool {
        self.raw += bytes.len() as u64;
        let scanner = &mut self.scanner;
        match &mut self.frames {
            Some(frames) if !frames.is_broken() => {
                let mut hit = false;
                frames.feed(bytes, &mut |payload| hit |= scanner.feed(payload).is_some());
                // The sidecar declined compression on the upgrade: a
                // compressed frame was agreed behind its back, and hides
                // its payload from this scan. It is taken as mining.
                hit || frames.saw_compressed()
                    || (frames.is_broken() && scanner.feed(bytes).is_some())
            }
            _ => scanner.feed(bytes).is_some(),
        }
    }

    fn is_done(&self) -> bool {
        self.scanner.is_done() || self.raw >= INSPECT_LIMIT
    }
}

/// A stream side that counts the bytes read from it, bumps a shared
/// activity counter on every read and write, and inspects what it reads.
struct Watched<T> {
    io: T,
    read: Arc<AtomicU64>,
    activity: Arc<AtomicU64>,
    inspector: Option<Inspector>,
    found: Arc<Found>,
}

impl<T> Watched<T> {
    fn new(io: T, activity: Arc<AtomicU64>, inspect: Inspect, found: Arc<Found>) -> Self {
        let inspector = Inspector {
            scanner: StratumScanner::new(),
            frames: (inspect == Inspect::WebSocket).then(WsDecoder::new),
            raw: 0,
        };
        Watched {
            io,
            read: Arc::new(AtomicU64::new(0)),
            activity,
            inspector: Some(inspector),
            found,
        }
    }

    fn inspect(&mut self, bytes: &[u8]) {
        let Some(inspector) = &mut self.inspector else {
            return;
        };
        let hit = inspector.feed(bytes);
        let done = inspector.is_done();
        if hit {
            self.found.notify.notify_one();
        }
        if hit || done {
            self.inspector = None;
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        let new = &buf.filled()[before..];
        if !new.is_empty() {
            this.read.fetch_add(new.len() as u64, Ordering::Relaxed);
            this.activity.fetch_add(1, Ordering::Relaxed);
            this.inspect(new);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        this.activity.fetch_add(1, Ordering::Relaxed);
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
