use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use super::{Finish, Live, ProxyBody, finishing};
use crate::model::{Direction, Protocol, Record};
use crate::policy::Policy;
use crate::telemetry::{Records, channel};

type Sender = mpsc::Sender<Result<Frame<Bytes>, hyper::Error>>;

/// A streaming response body (unknown length) for a request to
/// `pool.test:3333`, its frame sender, the policy and the records.
fn streaming(policy: Policy) -> (ProxyBody, Sender, watch::Sender<Arc<Policy>>, Records) {
    declaring(policy, None)
}

/// A body that declares an exact length it need not keep to (as a server
/// may: `Content-Length: 2^60`, then a trickle).
struct Declared<B>(B, u64);

impl<B: http_body::Body + Unpin> http_body::Body for Declared<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        std::pin::Pin::new(&mut self.0).poll_frame(cx)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.1)
    }
}

/// [`streaming`], declaring `length` when given.
fn declaring(
    policy: Policy,
    length: Option<u64>,
) -> (ProxyBody, Sender, watch::Sender<Arc<Policy>>, Records) {
    let mut registry = prometheus_client::registry::Registry::default();
    let (telemetry, records) = channel(&mut registry);
    let (tx, rx) = mpsc::channel(8);
    let stream = StreamBody::new(ReceiverStream::new(rx));
    let inner = match length {
        Some(length) => Declared(stream, length).boxed(),
        None => stream.boxed(),
    };
    let policy = Arc::new(policy);
    let (policy_tx, policy_rx) = watch::channel(policy.clone());
    let record = Record {
        authority: "pool.test:3333".into(),
        method: "GET".into(),
        path: "/events".into(),
        status: 200,
        ..Record::new(Direction::Outbound, Protocol::Http1)
    };
    let finish = Finish {
        record,
        bytes_in: Default::default(),
        telemetry,
        live: None,
        cap: None,
    };
    let live = Live::new(policy_rx, Duration::from_secs(1), Some(policy));
    (finishing(inner, finish, Some(live)), tx, policy_tx, records)
}

/// Sends a policy that quarantines the workload: it refuses everything.
fn quarantine(policy: &watch::Sender<Arc<Policy>>, version: u64) {
    let quarantined = Policy {
        version,
        quarantined: true,
        ..Policy::allow_all()
    };
    policy.send(Arc::new(quarantined)).unwrap();
}

fn drain(records: &mut Records) -> Vec<Record> {
    std::iter::from_fn(|| records.try_next()).collect()
}

#[tokio::test(start_paused = true)]
async fn a_streaming_response_is_reported_while_open() {
    let (mut body, tx, _policy, mut records) = streaming(Policy::allow_all());
    tx.send(Ok(Frame::data(Bytes::from_static(b"data: one\n\n"))))
        .await
        .unwrap();
    body.frame().await.unwrap().unwrap();
    // The body waits for more; the report tick wakes it.
    let next = tokio::spawn(async move {
        let frame = body.frame().await;
        (body, frame)
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let open = drain(&mut records);
    assert_eq!(open.len(), 1, "reported while open: {open:?}");
    assert_eq!((open[0].count, open[0].bytes_out), (1, 11));
    tx.send(Ok(Frame::data(Bytes::from_static(b"data: two\n\n"))))
        .await
        .unwrap();
    drop(tx);
    let (mut body, frame) = next.await.unwrap();
    assert!(frame.unwrap().unwrap().is_data());
    assert!(body.frame().await.is_none());
    let end = drain(&mut records);
    assert_eq!(end.len(), 1, "{end:?}");
    assert_eq!((end[0].count, end[0].bytes_out), (0, 11), "counted once");
}

#[tokio::test(start_paused = true)]
async fn a_streaming_response_the_policy_no_longer_allows_is_ended() {
    let (mut body, tx, policy, mut records) = streaming(Policy::allow_all());
    tx.send(Ok(Frame::data(Bytes::from_static(b"job\n"))))
        .await
        .unwrap();
    body.frame().await.unwrap().unwrap();
    policy
        .send(Arc::new(Policy {
            version: 2,
            enforce: true,
            mode: "enforcement".into(),
            ..Policy::allow_all()
        }))
        .unwrap();
    // The next report tick judges it again and ends it.
    assert!(body.frame().await.is_none(), "ended");
    let records = drain(&mut records);
    assert!(
        records.iter().any(|r| r.denied && r.count == 1),
        "the cut is recorded: {records:?}"
    );
    drop(tx);
}

/// A body that declares a length and trickles is judged again all the
/// same: it was not, and outlived a quarantine.
#[tokio::test(start_paused = true)]
async fn a_trickled_response_of_any_declared_length_is_judged_again() {
    let (mut body, tx, policy, mut records) = declaring(Policy::allow_all(), Some(1 << 60));
    let _subscribed = policy.subscribe();
    tx.send(Ok(Frame::data(Bytes::from_static(b"job\n"))))
        .await
        .unwrap();
    body.frame().await.unwrap().unwrap();
    quarantine(&policy, 2);
    let next = tokio::time::timeout(Duration::from_secs(10), body.frame()).await;
    assert!(matches!(next, Ok(None)), "ended at the next tick");
    let records = drain(&mut records);
    assert!(records.iter().any(|r| r.denied), "{records:?}");
    drop(tx);
}

/// A response that arrives at once arms no timer; one that is always
/// ready (a slow client paces it) is armed once it has moved
/// `LIVE_AFTER` bytes.
#[tokio::test(start_paused = true)]
async fn only_a_response_that_lasts_is_armed() {
    let armed = |body: &ProxyBody| {
        let live = body.finish.as_ref().and_then(|f| f.live.as_ref());
        live.is_some_and(|live| live.next.is_some())
    };
    let (mut body, tx, _policy, _records) = streaming(Policy::allow_all());
    tx.send(Ok(Frame::data(Bytes::from_static(b"small"))))
        .await
        .unwrap();
    body.frame().await.unwrap().unwrap();
    assert!(!armed(&body), "ready at once: no timer");
    let chunk = Bytes::from(vec![b'x'; 40 * 1024]);
    for _ in 0..2 {
        tx.send(Ok(Frame::data(chunk.clone()))).await.unwrap();
        body.frame().await.unwrap().unwrap();
    }
    assert!(armed(&body), "past LIVE_AFTER");

    let (mut body, tx, _policy, _records) = streaming(Policy::allow_all());
    let waiting = tokio::time::timeout(Duration::from_millis(10), body.frame()).await;
    assert!(waiting.is_err());
    assert!(
        !armed(&body),
        "waiting for the first bytes, as every response"
    );
    tx.send(Ok(Frame::data(Bytes::from_static(b"one"))))
        .await
        .unwrap();
    // The frame that was waited for comes; then it waits again.
    let next = tokio::time::timeout(Duration::from_millis(10), body.frame()).await;
    assert!(next.is_ok());
    let waiting = tokio::time::timeout(Duration::from_millis(10), body.frame()).await;
    assert!(waiting.is_err());
    assert!(armed(&body), "waited again after its first bytes");
    drop(tx);
}

/// A frame that comes after a policy change that refuses the response is
/// not passed on: the response ends there, without waiting for a tick.
#[tokio::test(start_paused = true)]
async fn no_frame_passes_after_a_refusing_change() {
    let (mut body, tx, policy, mut records) = streaming(Policy::allow_all());
    tx.send(Ok(Frame::data(Bytes::from_static(b"job 1\n"))))
        .await
        .unwrap();
    body.frame().await.unwrap().unwrap();
    quarantine(&policy, 2);
    tx.send(Ok(Frame::data(Bytes::from_static(b"job 2\n"))))
        .await
        .unwrap();
    let start = tokio::time::Instant::now();
    assert!(body.frame().await.is_none(), "job 2 is not passed on");
    assert_eq!(start.elapsed(), Duration::ZERO, "at once, not at a tick");
    let records = drain(&mut records);
    assert!(
        records.iter().any(|r| r.denied && r.bytes_out == 6),
        "{records:?}"
    );
    drop(tx);
}

/// The policy a request was judged by is not judged again, however its
/// receiver came to see it and however often the controller sends it: a
/// response judged under a quarantine (a health check's, say) passes
/// frames under that quarantine sent again, and is refused under the next.
#[tokio::test(start_paused = true)]
async fn the_policy_a_request_was_judged_by_is_not_judged_again() {
    let (mut body, tx, policy_tx, judged) = judged_by_a_quarantine();
    tx.send(Ok(Frame::data(Bytes::from_static(b"ok"))))
        .await
        .unwrap();
    assert!(body.frame().await.unwrap().is_ok(), "judged by version 2");
    // The controller sends the same policy again (a new stream, say).
    policy_tx.send(Arc::new((*judged).clone())).unwrap();
    tx.send(Ok(Frame::data(Bytes::from_static(b"again"))))
        .await
        .unwrap();
    assert!(body.frame().await.unwrap().is_ok(), "the same policy");
    quarantine(&policy_tx, 3);
    tx.send(Ok(Frame::data(Bytes::from_static(b"more"))))
        .await
        .unwrap();
    assert!(body.frame().await.is_none(), "version 3 judges it again");
}

/// A controller that restarts counts its versions from the start again, so
/// a sidecar can get another policy under the number it judged by: a
/// response judged under a quarantine's version 2 that lets it through
/// (a health check), then version 2 of a new controller process that
/// refuses it, is judged again. Compared by number, it passed.
#[tokio::test(start_paused = true)]
async fn another_policy_under_the_same_version_judges_it_again() {
    let (mut body, tx, policy_tx, _judged) = judged_by_a_quarantine();
    tx.send(Ok(Frame::data(Bytes::from_static(b"ok"))))
        .await
        .unwrap();
    assert!(body.frame().await.unwrap().is_ok());
    let restarted = Policy {
        version: 2,
        enforce: true,
        mode: "enforcement".into(),
        ..Policy::allow_all()
    };
    policy_tx.send(Arc::new(restarted)).unwrap();
    tx.send(Ok(Frame::data(Bytes::from_static(b"more"))))
        .await
        .unwrap();
    assert!(body.frame().await.is_none(), "another policy, same number");
}

/// A response to `pool.test:3333` judged by a quarantine (version 2) that
/// let it through, with a receiver that has not marked it seen.
fn judged_by_a_quarantine() -> (ProxyBody, Sender, watch::Sender<Arc<Policy>>, Arc<Policy>) {
    let mut registry = prometheus_client::registry::Registry::default();
    let (telemetry, _records) = channel(&mut registry);
    let (tx, rx) = mpsc::channel(8);
    let inner = StreamBody::new(ReceiverStream::new(rx)).boxed();
    let judged = Arc::new(Policy {
        version: 2,
        quarantined: true,
        ..Policy::allow_all()
    });
    let (policy_tx, policy_rx) = watch::channel(Arc::new(Policy::allow_all()));
    policy_tx.send(judged.clone()).unwrap();
    let finish = Finish {
        record: Record {
            authority: "pool.test:3333".into(),
            ..Record::new(Direction::Outbound, Protocol::Http1)
        },
        bytes_in: Default::default(),
        telemetry,
        live: None,
        cap: None,
    };
    let live = Live::new(policy_rx, Duration::from_secs(1), Some(judged.clone()));
    (finishing(inner, finish, Some(live)), tx, policy_tx, judged)
}

/// A request body still coming when the policy stops allowing its request
/// ends in a cut (the rest is not sent), recognisable through the error
/// chain; a change that still allows it, or a body that arrives at once,
/// goes on.
#[tokio::test(start_paused = true)]
async fn a_request_body_the_policy_no_longer_allows_is_cut() {
    use super::{RequestBody, RequestBodyError};
    let record = Record {
        authority: "pool.test:3333".into(),
        method: "POST".into(),
        ..Record::new(Direction::Outbound, Protocol::Http1)
    };
    let judged = Arc::new(Policy::allow_all());
    let (policy_tx, policy_rx) = watch::channel(judged.clone());
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, hyper::Error>>(8);
    let inner = StreamBody::new(ReceiverStream::new(rx));
    let interval = Duration::from_secs(1);
    let mut body = RequestBody::judged(inner, &record, &policy_rx, Some(&judged), interval, None);
    tx.send(Ok(Frame::data(Bytes::from_static(b"share 1"))))
        .await
        .unwrap();
    body.frame().await.unwrap().unwrap();
    policy_tx.send_modify(|p| Arc::make_mut(p).version = 2);
    let waiting = tokio::time::timeout(Duration::from_secs(3), body.frame()).await;
    assert!(waiting.is_err(), "a change that allows it: it goes on");
    quarantine(&policy_tx, 3);
    let cut = tokio::time::timeout(Duration::from_secs(3), body.frame())
        .await
        .expect("cut at the next tick")
        .unwrap()
        .unwrap_err();
    assert!(matches!(cut, RequestBodyError::Cut(_)), "{cut}");
    let wrapped: Box<dyn std::error::Error + Send + Sync> = Box::new(cut);
    assert!(RequestBodyError::cut_in(&*wrapped).is_some());
    drop(tx);
}

/// What a pooled upstream connection queues per request slot (hyper's
/// dispatch channel holds requests by value, 32 to a block, two blocks per
/// connection) stays small: the response's record is not carried inline by
/// every request body. It was 832 bytes, 27 KiB a block.
#[test]
fn a_queued_upstream_request_is_small() {
    use std::mem::size_of;
    let request = size_of::<http::Request<super::CountingBody<hyper::body::Incoming>>>();
    assert!(
        request <= 320,
        "a request to send upstream takes {request} bytes"
    );
    let response = size_of::<http::Response<ProxyBody>>();
    assert!(
        response <= 200,
        "a response to the client takes {response} bytes"
    );
}

/// An outbound request body that carries a mining call (getwork over HTTP)
/// is reported as Stratum, counted anew, even split across frames: let
/// through while learning, cut in enforcement (no baseline allows mining).
/// An ordinary JSON-RPC call is not mining, and the scan stops after
/// `SCAN_BODY` bytes.
#[tokio::test(start_paused = true)]
async fn a_mining_call_in_a_request_body_is_reported_and_cut_in_enforcement() {
    use super::{RequestBody, RequestBodyError, SCAN_BODY};
    let record = Record {
        authority: "pool.test:8888".into(),
        method: "POST".into(),
        path: "/".into(),
        ..Record::new(Direction::Outbound, Protocol::Http1)
    };
    let login: &[&[u8]] = &[
        b"{\"id\":1,\"jsonrpc\":\"2.0\",\"method\":\"eth_sub",
        b"mitLogin\",\"params\":[\"0xwallet\"]}",
    ];
    let enforcing = Policy {
        enforce: true,
        mode: "enforcement".into(),
        ..Policy::allow_all()
    };
    let padded = [vec![b' '; SCAN_BODY].as_slice(), login[0], login[1]].concat();
    let benign: &[u8] =
        b"{\"id\":1,\"jsonrpc\":\"2.0\",\"method\":\"eth_blockNumber\",\"params\":[]}";
    let cases = [
        ("learning", Policy::allow_all(), login.to_vec(), Some(false)),
        ("enforcement", enforcing.clone(), login.to_vec(), Some(true)),
        ("an ordinary call", enforcing.clone(), vec![benign], None),
        ("past the scan", enforcing, vec![padded.as_slice()], None),
    ];
    for (case, policy, frames, want) in cases {
        let mut registry = prometheus_client::registry::Registry::default();
        let (telemetry, mut records) = channel(&mut registry);
        let (_policy_tx, policy_rx) = watch::channel(Arc::new(policy));
        let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, hyper::Error>>(8);
        let inner = StreamBody::new(ReceiverStream::new(rx));
        let interval = Duration::from_secs(1);
        let mut body =
            RequestBody::judged(inner, &record, &policy_rx, None, interval, Some(&telemetry));
        for frame in &frames {
            tx.send(Ok(Frame::data(Bytes::copy_from_slice(frame))))
                .await
                .unwrap();
        }
        drop(tx);
        let mut cut = false;
        while let Some(frame) = body.frame().await {
            if let Err(e) = frame {
                assert!(matches!(e, RequestBodyError::Cut(_)), "{case}: {e}");
                cut = true;
                break;
            }
        }
        let mining: Vec<Record> = drain(&mut records)
            .into_iter()
            .filter(|r| r.protocol == Protocol::Stratum)
            .collect();
        match want {
            Some(denied) => {
                assert_eq!(mining.len(), 1, "{case}: {mining:?}");
                assert_eq!((mining[0].count, mining[0].denied), (1, denied), "{case}");
                assert_eq!(mining[0].authority, "pool.test:8888", "{case}");
                assert_eq!(cut, denied, "{case}: cut only in enforcement");
            }
            None => assert!(mining.is_empty() && !cut, "{case}: {mining:?}"),
        }
    }
}

/// A health check let through by a quarantine carries at most its cap: the
/// frame that would pass it ends the body, and the record says what went.
#[tokio::test(start_paused = true)]
async fn a_capped_body_ends_at_its_cap() {
    let mut registry = prometheus_client::registry::Registry::default();
    let (telemetry, mut records) = channel(&mut registry);
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, hyper::Error>>(8);
    let inner = StreamBody::new(ReceiverStream::new(rx)).boxed();
    let finish = Finish {
        record: Record {
            path: "/healthz".into(),
            ..Record::new(Direction::Inbound, Protocol::Http1)
        },
        bytes_in: Default::default(),
        telemetry,
        live: None,
        cap: Some(10),
    };
    let mut body = finishing(inner, finish, None);
    for chunk in [&b"ok: 1\n"[..], b"ok: 2\n"] {
        tx.send(Ok(Frame::data(Bytes::from_static(chunk))))
            .await
            .unwrap();
    }
    let first = body.frame().await.unwrap().unwrap();
    assert_eq!(first.into_data().unwrap(), &b"ok: 1\n"[..]);
    assert!(
        body.frame().await.is_none(),
        "the second frame passes the cap"
    );
    let sent = drain(&mut records);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].bytes_out, 6);
}
