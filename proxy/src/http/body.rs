//! Bodies that count their bytes, and emit the request's record once the
//! response body ends or is dropped.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};

use crate::model::Record;
use crate::telemetry::Telemetry;

/// The body type every proxy response carries.
pub type ProxyBody = CountingBody<BoxBody<Bytes, hyper::Error>>;

/// A body that adds the size of each data frame to a shared counter and, if
/// given a [`Finish`], emits its record at end of stream or on drop.
#[derive(Debug)]
pub struct CountingBody<B> {
    inner: B,
    counter: Arc<AtomicU64>,
    finish: Option<Finish>,
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
            finish.emit(self.counter.load(Ordering::Relaxed));
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
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.counter.fetch_add(data.len() as u64, Ordering::Relaxed);
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => this.done(),
            Poll::Pending => {}
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
}

impl Finish {
    fn emit(mut self, bytes_out: u64) {
        self.record.bytes_in = self.bytes_in.load(Ordering::Relaxed);
        self.record.bytes_out = bytes_out;
        self.telemetry.emit(self.record);
    }
}

/// Wraps a response body so that `finish` is emitted when it completes.
pub fn finishing(inner: BoxBody<Bytes, hyper::Error>, finish: Finish) -> ProxyBody {
    CountingBody {
        inner,
        counter: Arc::new(AtomicU64::new(0)),
        finish: Some(finish),
    }
}

/// A complete in-memory body.
pub fn full(bytes: impl Into<Bytes>) -> BoxBody<Bytes, hyper::Error> {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}
