//! Bodies that count their bytes, and emit the request's record once the
//! response body ends or is dropped. Every frame of a response or a request
//! body is judged again when the policy has changed since (an atomic
//! version check otherwise), and none passes once the policy refuses it.
//! A response that lasts (server-sent events, gRPC streams, long
//! downloads, and a body of any declared length that its server trickles)
//! is live: once it waits again after its first bytes, or has moved
//! [`LIVE_AFTER`] bytes, its record is reported at every report interval
//! with the bytes so far, and it is judged at each tick too, so that one
//! the policy no longer allows is ended even while no byte comes. A
//! response that arrives at once (most) never arms a timer.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use tokio::time::Sleep;

use crate::destination::Judge;
use crate::model::Record;
use crate::policy::{Decision, Policy, PolicyRx};
use crate::stream::LiveRecord;
use crate::telemetry::Telemetry;

/// Bytes after which a body that never waited again is made live all the
/// same: one that a slow client paces is always ready, and a declared
/// length says nothing about how long it lasts (`Content-Length: 2^60`,
/// trickled, outlived a quarantine before).
pub const LIVE_AFTER: u64 = 64 * 1024;

/// The body type every proxy response carries.
pub type ProxyBody = CountingBody<BoxBody<Bytes, hyper::Error>>;

/// A body that adds the size of each data frame to a shared counter and, if
/// given a [`Finish`], emits its record at end of stream or on drop.
///
/// The [`Finish`] is boxed: a request body never has one, and each pooled
/// upstream connection queues its requests by value in blocks of 32 slots
/// (hyper's dispatch channel on tokio's mpsc), two blocks per connection.
/// With the record inline a queued request took 832 bytes, and those
/// blocks were 1.7 MiB of a sidecar's 4 MiB heap under 32 connections.
#[derive(Debug)]
pub struct CountingBody<B> {
    inner: B,
    counter: Arc<AtomicU64>,
    finish: Option<Box<Finish>>,
}

impl<B> CountingBody<B> {
    /// Wraps `inner`, counting into `counter`.
    pub fn new(inner: B, counter: Arc<AtomicU64>) -> Self {
        CountingBody {
            inner,
            counter,
            finish: None,
        }
    }

    fn done(&mut self) {
        if let Some(finish) = self.finish.take() {
            (*finish).emit(self.counter.load(Ordering::Relaxed));
        }
    }
}

impl<B> Drop for CountingBody<B> {
    fn drop(&mut self) {
        self.done();
    }
}

impl<B> Body for CountingBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        if let Some(finish) = &mut this.finish
            && finish.tick(cx, &this.counter)
        {
            // The policy no longer allows it: end it here.
            this.finish = None;
            return Poll::Ready(None);
        }
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(finish) = &mut this.finish
                    && finish.refused(&this.counter)
                {
                    // The policy changed and no longer allows it: this
                    // frame is not passed on.
                    this.finish = None;
                    return Poll::Ready(None);
                }
                let len = frame.data_ref().map_or(0, |d| d.len() as u64);
                if let Some(cap) = this.finish.as_ref().and_then(|f| f.cap)
                    && this.counter.load(Ordering::Relaxed) + len > cap
                {
                    // Past its cap: this frame is not passed on.
                    this.done();
                    return Poll::Ready(None);
                }
                let total = this.counter.fetch_add(len, Ordering::Relaxed) + len;
                if total > LIVE_AFTER
                    && let Some(finish) = &mut this.finish
                {
                    finish.arm(cx);
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => this.done(),
            Poll::Pending => {
                // Waiting after bytes came: it lasts. Waiting for the
                // first bytes is what every response does, once.
                if this.counter.load(Ordering::Relaxed) > 0
                    && let Some(finish) = &mut this.finish
                {
                    finish.arm(cx);
                }
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What is needed to emit a request's record once its response is sent.
#[derive(Debug)]
pub struct Finish {
    /// The record, without `bytes_out` (and `bytes_in` read from `bytes_in`).
    pub record: Record,
    /// Request body bytes, counted by the request's [`CountingBody`].
    pub bytes_in: Arc<AtomicU64>,
    /// Where the record goes.
    pub telemetry: Telemetry,
    /// Set for a streaming response: reported and judged while open.
    pub live: Option<Live>,
    /// The most body bytes passed on; past them the body ends (a health
    /// check let through by a quarantine).
    pub cap: Option<u64>,
}

/// A streaming response's reporting and re-judging state; its record is a
/// [`LiveRecord`], as a long-lived stream's is.
#[derive(Debug)]
pub struct Live {
    /// The current policy.
    pub policy: PolicyRx,
    /// The policy it was last judged by.
    judged: Option<Arc<Policy>>,
    /// How often it is reported.
    pub interval: std::time::Duration,
    next: Option<Pin<Box<Sleep>>>,
    record: Option<LiveRecord>,
}

impl Live {
    /// Live reporting every `interval`, judged against `policy` when it is
    /// no longer `judged`, the one the request was judged by (none: at its
    /// first change).
    pub fn new(
        policy: PolicyRx,
        interval: std::time::Duration,
        judged: Option<Arc<Policy>>,
    ) -> Self {
        Live {
            policy,
            judged,
            interval,
            next: None,
            record: None,
        }
    }
}

impl Finish {
    /// Starts a live response's report timer, once: its first tick comes
    /// one interval from now and wakes the body's task.
    fn arm(&mut self, cx: &mut Context<'_>) {
        if let Some(live) = &mut self.live
            && live.next.is_none()
        {
            let next = live
                .next
                .insert(Box::pin(tokio::time::sleep(live.interval)));
            // Registers the waker; an interval has not passed yet.
            let _ = next.as_mut().poll(cx);
        }
    }

    /// Whether a policy that came since it was last judged refuses it (the
    /// denial is recorded): checked on each frame, so that none passes
    /// after such a change, timer or not.
    fn refused(&mut self, bytes_out: &AtomicU64) -> bool {
        let Some(live) = &mut self.live else {
            return false;
        };
        if !live.policy.has_changed().unwrap_or(false) {
            return false;
        }
        let policy = live.policy.borrow_and_update().clone();
        let then = live.judged.replace(policy.clone());
        if !crate::policy::differs(then.as_ref(), &policy) {
            return false;
        }
        let judge = Judge::of_record(&self.record);
        if !judge.decide(&policy, self.record.protocol).is_deny() {
            return false;
        }
        tracing::info!(authority = %self.record.authority, source = %self.record.source, "ended a response the policy no longer allows");
        self.report(bytes_out.load(Ordering::Relaxed), true);
        true
    }

    /// At a report tick of a live response: reports the bytes so far and
    /// judges it again if the policy changed. True when it must end (the
    /// denial is recorded).
    fn tick(&mut self, cx: &mut Context<'_>, bytes_out: &AtomicU64) -> bool {
        let Some(live) = &mut self.live else {
            return false;
        };
        let interval = live.interval;
        let Some(next) = live.next.as_mut() else {
            return false;
        };
        if next.as_mut().poll(cx).is_pending() {
            return false;
        }
        next.as_mut().reset(tokio::time::Instant::now() + interval);
        let _ = next.as_mut().poll(cx);
        let changed = live.policy.has_changed().unwrap_or(false);
        let policy = live.policy.borrow_and_update().clone();
        let changed = changed && {
            let then = live.judged.replace(policy.clone());
            crate::policy::differs(then.as_ref(), &policy)
        };
        let denied = changed
            && matches!(
                Judge::of_record(&self.record).decide(&policy, self.record.protocol),
                Decision::Deny { .. }
            );
        if denied {
            tracing::info!(authority = %self.record.authority, source = %self.record.source, "ended a streaming response the policy no longer allows");
        }
        self.report(bytes_out.load(Ordering::Relaxed), denied);
        denied
    }

    /// Emits what is new since the last report: the request is counted in
    /// its first one, with its latency (to the response's headers); a
    /// denial is an event of its own.
    fn report(&mut self, total_out: u64, denied: bool) {
        let total_in = self.bytes_in.load(Ordering::Relaxed);
        let latency = std::time::Duration::from_micros(self.record.latency_us);
        let mut once = None;
        let live = match &mut self.live {
            Some(live) => live
                .record
                .get_or_insert_with(|| LiveRecord::new(self.record.clone())),
            None => once.insert(LiveRecord::new(self.record.clone())),
        };
        if let Some(record) = live.emission(total_in, total_out, latency, denied) {
            self.telemetry.emit(record);
        }
    }

    /// The end of the response: what is left to report. A response that
    /// was never reported live gives its record away, uncopied.
    fn emit(mut self, bytes_out: u64) {
        if self.live.as_ref().is_some_and(|live| live.record.is_some()) {
            return self.report(bytes_out, false);
        }
        let total_in = self.bytes_in.load(Ordering::Relaxed);
        let latency = std::time::Duration::from_micros(self.record.latency_us);
        if let Some(record) =
            LiveRecord::new(self.record).into_emission(total_in, bytes_out, latency, false)
        {
            self.telemetry.emit(record);
        }
    }
}

/// Wraps a response body so that `finish` is emitted when it completes;
/// given `live`, a body that lasts is made live (see [`Live`]), whatever
/// length it declares.
pub fn finishing(
    inner: BoxBody<Bytes, hyper::Error>,
    mut finish: Finish,
    live: Option<Live>,
) -> ProxyBody {
    if !inner.is_end_stream() {
        finish.live = live;
    }
    CountingBody {
        inner,
        counter: Arc::new(AtomicU64::new(0)),
        finish: Some(Box::new(finish)),
    }
}

/// Why a request body stopped short of its end.
#[derive(Debug, thiserror::Error)]
pub enum RequestBodyError {
    /// The client's body failed.
    #[error(transparent)]
    Client(#[from] hyper::Error),
    /// The policy no longer allows the request while its body was still
    /// coming: the rest is not sent.
    #[error("the policy no longer allows this request: {0}")]
    Cut(&'static str),
}

impl RequestBodyError {
    /// The reason, when `e` (or what caused it) is a request body cut by
    /// the policy.
    pub fn cut_in(e: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
        let mut next = Some(e);
        while let Some(e) = next {
            if let Some(RequestBodyError::Cut(reason)) = e.downcast_ref::<RequestBodyError>() {
                return Some(reason);
            }
            next = e.source();
        }
        None
    }
}

/// A request body, judged again while it lasts: each frame after a policy
/// change, and, once it waits again after its first bytes or has moved
/// [`LIVE_AFTER`] bytes, each timer tick, judge the request as it was
/// judged at first; refused, the body ends in [`RequestBodyError::Cut`] and
/// the rest is not sent. A chunked upload that never ends (a miner's
/// shares going up) outlived a quarantine before. A body that arrives at
/// once arms nothing.
#[derive(Debug)]
pub struct RequestBody<B = hyper::body::Incoming> {
    inner: B,
    guard: Option<Box<Guard>>,
}

/// What judges a request body while it lasts.
#[derive(Debug)]
struct Guard {
    policy: PolicyRx,
    judged: Option<Arc<Policy>>,
    judge: Judge,
    protocol: crate::model::Protocol,
    interval: std::time::Duration,
    next: Option<Pin<Box<Sleep>>>,
    moved: u64,
    scan: Option<MiningScan>,
}

/// How much of an outbound request body is scanned for a mining call
/// (getwork over HTTP: `eth_getWork`, `eth_submitLogin`, `mining.*`): such a
/// call is one short JSON object, and the scan costs a step per byte.
pub const SCAN_BODY: usize = crate::detect::stratum::MAX_LINE;

/// The scan of an outbound request body for a mining call, and where it is
/// reported: the request's record again, counted anew under Stratum (as a
/// stream whose protocol turns out to be Stratum), so the controller's
/// mining detector sees it.
#[derive(Debug)]
struct MiningScan {
    scanner: crate::detect::stratum::StratumScanner,
    record: Record,
    telemetry: Telemetry,
}

impl<B: Body> RequestBody<B> {
    /// `inner`, judged as `record` was against `policy` when it lasts
    /// (checked every `interval`). A body that is already over (a `GET`'s,
    /// most requests') gets no guard: nothing is allocated for it.
    ///
    /// With `scan` (outbound requests), its first [`SCAN_BODY`] bytes are
    /// scanned for a mining call too: found, it is reported to `scan` as
    /// Stratum and judged as mining (no baseline allows it in enforcement:
    /// the body is cut).
    pub fn judged(
        inner: B,
        record: &Record,
        policy: &PolicyRx,
        judged: Option<&Arc<Policy>>,
        interval: std::time::Duration,
        scan: Option<&Telemetry>,
    ) -> Self {
        if inner.is_end_stream() {
            return RequestBody { inner, guard: None };
        }
        RequestBody {
            inner,
            guard: Some(Box::new(Guard {
                policy: policy.clone(),
                judged: judged.cloned(),
                judge: Judge::of_record(record),
                protocol: record.protocol,
                interval,
                next: None,
                moved: 0,
                scan: scan.map(|telemetry| MiningScan {
                    scanner: crate::detect::stratum::StratumScanner::new(),
                    record: record.clone(),
                    telemetry: telemetry.clone(),
                }),
            })),
        }
    }
}

impl Guard {
    /// Scans `data`, the next bytes of the body (the first [`SCAN_BODY`]
    /// of it), for a mining call; found, reports it and gives the refusal
    /// when the policy in force refuses mining.
    fn scan(&mut self, data: &[u8]) -> Option<&'static str> {
        let scan = self.scan.as_mut()?;
        let room = SCAN_BODY.saturating_sub(usize::try_from(self.moved).unwrap_or(usize::MAX));
        let found = scan.scanner.feed(&data[..data.len().min(room)]);
        let done = found.is_some() || data.len() >= room;
        let scan = if done { self.scan.take()? } else { return None };
        let found = found?;
        let policy = self.policy.borrow().clone();
        let protocol = crate::model::Protocol::Stratum;
        let refusal = match self.judge.decide(&policy, protocol) {
            Decision::Deny { reason } => Some(reason),
            Decision::Allow => None,
        };
        tracing::warn!(judge = ?self.judge, method = %found.method, "a mining call inside an HTTP request body");
        let MiningScan {
            mut record,
            telemetry,
            ..
        } = scan;
        record.protocol = protocol;
        record.count = 1;
        record.denied = refusal.is_some();
        telemetry.emit(record);
        refusal
    }

    fn arm(&mut self, cx: &mut Context<'_>) {
        if self.next.is_none() {
            let next = self
                .next
                .insert(Box::pin(tokio::time::sleep(self.interval)));
            let _ = next.as_mut().poll(cx);
        }
    }

    /// The refusal, at a tick after a policy change that no longer allows
    /// the request.
    fn tick(&mut self, cx: &mut Context<'_>) -> Option<&'static str> {
        let next = self.next.as_mut()?;
        if next.as_mut().poll(cx).is_pending() {
            return None;
        }
        next.as_mut()
            .reset(tokio::time::Instant::now() + self.interval);
        let _ = next.as_mut().poll(cx);
        self.refused()
    }

    /// The refusal, when a policy that came since the last judgement no
    /// longer allows the request.
    fn refused(&mut self) -> Option<&'static str> {
        if !self.policy.has_changed().unwrap_or(false) {
            return None;
        }
        let policy = self.policy.borrow_and_update().clone();
        let then = self.judged.replace(policy.clone());
        if !crate::policy::differs(then.as_ref(), &policy) {
            return None;
        }
        match self.judge.decide(&policy, self.protocol) {
            Decision::Deny { reason } => Some(reason),
            Decision::Allow => None,
        }
    }
}

impl<B> Body for RequestBody<B>
where
    B: Body<Data = Bytes, Error = hyper::Error> + Unpin,
{
    type Data = Bytes;
    type Error = RequestBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RequestBodyError>>> {
        let this = self.get_mut();
        if let Some(guard) = &mut this.guard
            && let Some(reason) = guard.tick(cx)
        {
            tracing::info!(judge = ?guard.judge, reason, "cut a request body the policy no longer allows");
            this.guard = None;
            return Poll::Ready(Some(Err(RequestBodyError::Cut(reason))));
        }
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Some(guard) = &mut this.guard {
            match &polled {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(reason) = guard.refused() {
                        tracing::info!(judge = ?guard.judge, reason, "cut a request body the policy no longer allows");
                        this.guard = None;
                        return Poll::Ready(Some(Err(RequestBodyError::Cut(reason))));
                    }
                    if let Some(data) = frame.data_ref()
                        && let Some(reason) = guard.scan(data)
                    {
                        this.guard = None;
                        return Poll::Ready(Some(Err(RequestBodyError::Cut(reason))));
                    }
                    guard.moved += frame.data_ref().map_or(0, |d| d.len() as u64);
                    if guard.moved > LIVE_AFTER {
                        guard.arm(cx);
                    }
                }
                Poll::Pending if guard.moved > 0 => guard.arm(cx),
                _ => {}
            }
        }
        polled.map(|frame| frame.map(|r| r.map_err(RequestBodyError::Client)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A complete in-memory body.
pub fn full(bytes: impl Into<Bytes>) -> BoxBody<Bytes, hyper::Error> {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

#[cfg(test)]
mod tests;
