use std::sync::Arc;

use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};

use super::*;
use crate::destination::{MINING_REASON, MISMATCH_REASON};
use crate::model::Direction;
use crate::policy::Policy;
use crate::telemetry::{Records, channel};

fn outbound_record(authority: &str) -> Record {
    Record {
        authority: authority.into(),
        ..Record::new(Direction::Outbound, Protocol::Tcp)
    }
}

fn enforcing(allowed: &[&str]) -> Policy {
    Policy {
        version: 2,
        enforce: true,
        allowed_authorities: allowed.iter().map(|a| a.to_string()).collect(),
        mode: "enforcement".into(),
        ..Policy::allow_all()
    }
}

#[test]
fn streams_are_judged_by_destination_caller_and_protocol() {
    let pool = Judge::Outbound {
        authority: "pool.test:3333".into(),
        dst: None,
        mismatch: false,
        claimed: None,
    };
    let learned = Judge::Outbound {
        authority: "pypi.test:443".into(),
        dst: None,
        mismatch: false,
        claimed: None,
    };
    let lying = Judge::Outbound {
        authority: "10.0.0.9:443".into(),
        dst: None,
        mismatch: true,
        claimed: None,
    };
    let internet = Judge::Inbound { source: None };
    let deny = |reason| Decision::Deny { reason };
    let learning = Policy::allow_all();
    let enforce = enforcing(&["pypi.test:443", "10.0.0.9:443"]);
    let cases = [
        (&learning, &pool, Protocol::Tcp, Decision::Allow),
        (&learning, &pool, Protocol::Stratum, Decision::Allow),
        (&enforce, &learned, Protocol::Tls, Decision::Allow),
        // No baseline ever allows mining.
        (&enforce, &learned, Protocol::Stratum, deny(MINING_REASON)),
        (
            &enforce,
            &pool,
            Protocol::Tcp,
            deny("destination not in baseline"),
        ),
        // A lie is refused even to a learned address.
        (&enforce, &lying, Protocol::Tls, deny(MISMATCH_REASON)),
        (&learning, &lying, Protocol::Tls, Decision::Allow),
        (
            &enforce,
            &internet,
            Protocol::Tcp,
            deny("source not in baseline"),
        ),
    ];
    for (policy, judge, protocol, want) in cases {
        assert_eq!(
            judge.decide(policy, protocol),
            want,
            "{judge:?} {protocol:?}"
        );
    }
}

#[test]
fn a_live_record_counts_its_stream_once_and_its_bytes_as_they_flow() {
    let mut live = LiveRecord::new(outbound_record("pool.test:3333"));
    let second = Duration::from_secs(1);
    // First report: the stream is counted, with the bytes so far.
    let r = live.emission(10, 20, second, false).unwrap();
    assert_eq!(
        (r.count, r.bytes_in, r.bytes_out, r.denied),
        (1, 10, 20, false)
    );
    assert_eq!(r.latency_us, 1_000_000);
    // Later reports: bytes since the last one, not counted again.
    let r = live.emission(15, 20, 2 * second, false).unwrap();
    assert_eq!((r.count, r.bytes_in, r.bytes_out), (0, 5, 0));
    assert!(
        live.emission(15, 20, 3 * second, false).is_none(),
        "nothing new"
    );
    // Mining found: counted again under the new protocol.
    live.set_protocol(Protocol::Stratum);
    let r = live.emission(15, 20, 4 * second, false).unwrap();
    assert_eq!((r.count, r.protocol), (1, Protocol::Stratum));
    // A cut is its own counted, denied event.
    let r = live.emission(16, 20, 5 * second, true).unwrap();
    assert_eq!((r.count, r.denied, r.bytes_in), (1, true, 1));
    // An upgraded request's stream was counted by the request.
    let mut upgraded = LiveRecord::counted(outbound_record("api.test:80"));
    let r = upgraded.emission(3, 4, second, false).unwrap();
    assert_eq!((r.count, r.bytes_in), (0, 3));
}

/// A stream between two in-memory pipes, with a policy channel and the
/// records it emits.
struct Harness {
    client: DuplexStream,
    server: DuplexStream,
    policy: watch::Sender<Arc<Policy>>,
    records: Records,
    task: tokio::task::JoinHandle<Ended>,
}

fn harness(policy: Policy, judge: Judge, inspect: Inspect) -> Harness {
    harness_changed(policy, judge, inspect, None)
}

/// [`harness`], with the policy changed to `then` after the stream was
/// judged and before it is piped (during its dial, say).
fn harness_changed(
    policy: Policy,
    judge: Judge,
    inspect: Inspect,
    then: Option<Policy>,
) -> Harness {
    let mut registry = Registry::default();
    let (telemetry, records) = channel(&mut registry);
    let (policy_tx, policy_rx) = watch::channel(Arc::new(policy));
    if let Some(then) = then {
        policy_tx.send(Arc::new(then)).unwrap();
    }
    let (_stop_tx, stop) = watch::channel(false);
    let ctx = StreamContext {
        telemetry,
        policy: policy_rx,
        report_interval: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(300),
        stop,
    };
    let (client, proxy_client) = duplex(64 * 1024);
    let (proxy_server, server) = duplex(64 * 1024);
    let stream = Stream {
        live: LiveRecord::new(outbound_record("pool.test:3333")),
        judge,
        inspect,
        start: Instant::now(),
    };
    let task = tokio::spawn(async move {
        let _stop_tx = _stop_tx;
        pipe(&ctx, proxy_client, proxy_server, stream, |_| {}).await
    });
    Harness {
        client,
        server,
        policy: policy_tx,
        records,
        task,
    }
}

fn drain(records: &mut Records) -> Vec<Record> {
    std::iter::from_fn(|| records.try_next()).collect()
}

fn pool_judge() -> Judge {
    Judge::Outbound {
        authority: "pool.test:3333".into(),
        dst: None,
        mismatch: false,
        claimed: None,
    }
}

#[tokio::test(start_paused = true)]
async fn an_open_stream_is_reported_every_interval() {
    let mut h = harness(Policy::allow_all(), pool_judge(), Inspect::Raw);
    h.client.write_all(b"hello").await.unwrap();
    let mut buf = [0u8; 5];
    h.server.read_exact(&mut buf).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let first = drain(&mut h.records);
    assert_eq!(first.len(), 1, "one report after one interval: {first:?}");
    assert_eq!((first[0].count, first[0].bytes_in), (1, 5));
    h.server.write_all(b"world!").await.unwrap();
    h.client.read_exact(&mut [0u8; 6]).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let second = drain(&mut h.records);
    assert_eq!(second.len(), 1, "{second:?}");
    assert_eq!((second[0].count, second[0].bytes_out), (0, 6));
    drop(h.client);
    drop(h.server);
    assert!(matches!(h.task.await.unwrap(), Ended::Closed(_)));
}

#[tokio::test(start_paused = true)]
async fn a_policy_that_no_longer_allows_a_stream_cuts_it() {
    let mut h = harness(Policy::allow_all(), pool_judge(), Inspect::Raw);
    h.client.write_all(b"tunnel").await.unwrap();
    h.server.read_exact(&mut [0u8; 6]).await.unwrap();
    // Enforcement arrives while the tunnel is open.
    h.policy
        .send(Arc::new(enforcing(&["pypi.test:443"])))
        .unwrap();
    let ended = h.task.await.unwrap();
    assert_eq!(ended, Ended::Cut("destination not in baseline"));
    let records = drain(&mut h.records);
    let denied: Vec<_> = records.iter().filter(|r| r.denied).collect();
    assert_eq!(denied.len(), 1, "the cut is recorded: {records:?}");
    // The client sees its connection closed.
    let mut rest = Vec::new();
    h.client.read_to_end(&mut rest).await.unwrap();
}

/// A policy that came between the stream's judgement and its first byte
/// (a quarantine during a slow dial, an upgrade answered late) is applied
/// before any byte moves.
#[tokio::test(start_paused = true)]
async fn a_policy_that_came_before_the_first_byte_is_applied() {
    let then = Some(enforcing(&["pypi.test:443"]));
    let mut h = harness_changed(Policy::allow_all(), pool_judge(), Inspect::Raw, then);
    h.client.write_all(b"mining.subscribe").await.unwrap();
    let ended = h.task.await.unwrap();
    assert_eq!(ended, Ended::Cut("destination not in baseline"));
    let mut reached = Vec::new();
    h.server.read_to_end(&mut reached).await.unwrap();
    assert!(reached.is_empty(), "{reached:?} went upstream");
    let records = drain(&mut h.records);
    assert!(records.iter().any(|r| r.denied), "{records:?}");

    // Still allowed: piped as usual.
    let then = Some(enforcing(&["pool.test:3333"]));
    let mut h = harness_changed(Policy::allow_all(), pool_judge(), Inspect::Raw, then);
    h.client.write_all(b"still").await.unwrap();
    h.server.read_exact(&mut [0u8; 5]).await.unwrap();
    assert!(!h.task.is_finished());
}

#[tokio::test(start_paused = true)]
async fn a_policy_that_still_allows_a_stream_keeps_it() {
    let mut h = harness(Policy::allow_all(), pool_judge(), Inspect::Raw);
    h.policy
        .send(Arc::new(enforcing(&["pool.test:3333"])))
        .unwrap();
    tokio::task::yield_now().await;
    h.client.write_all(b"still").await.unwrap();
    h.server.read_exact(&mut [0u8; 5]).await.unwrap();
    assert!(!h.task.is_finished());
}

#[tokio::test(start_paused = true)]
async fn mining_found_mid_stream_is_reported_and_cut_in_enforcement() {
    let mut h = harness(enforcing(&["pool.test:3333"]), pool_judge(), Inspect::Raw);
    // Some innocent bytes, then the pool's job, server to client.
    h.client.write_all(b"hello\n").await.unwrap();
    h.server.read_exact(&mut [0u8; 6]).await.unwrap();
    h.server
        .write_all(b"{\"id\":1,\"method\":\"mining.notify\",\"params\":[\"j1\",\"00\"]}\n")
        .await
        .unwrap();
    let ended = h.task.await.unwrap();
    assert_eq!(ended, Ended::Cut(MINING_REASON));
    let records = drain(&mut h.records);
    assert!(
        records
            .iter()
            .any(|r| r.protocol == Protocol::Stratum && r.denied),
        "{records:?}"
    );
}

/// Compression is declined on every WebSocket upgrade, so a compressed
/// frame (RSV1) was agreed behind the sidecar's back to hide its payload
/// from the scan: it is taken as mining, cut in enforcement.
#[tokio::test(start_paused = true)]
async fn a_compressed_websocket_frame_is_taken_as_mining() {
    let mut h = harness(
        enforcing(&["pool.test:3333"]),
        pool_judge(),
        Inspect::WebSocket,
    );
    // An unmasked server text frame, RSV1 set, deflated payload.
    let frame = [0xc1, 0x05, 0xf2, 0x48, 0xcd, 0xc9, 0xc9];
    h.server.write_all(&frame).await.unwrap();
    let ended = h.task.await.unwrap();
    assert_eq!(ended, Ended::Cut(MINING_REASON));

    // Plain frames are not.
    let mut h = harness(
        enforcing(&["pool.test:3333"]),
        pool_judge(),
        Inspect::WebSocket,
    );
    let plain = [0x81, 0x05, b'h', b'e', b'l', b'l', b'o'];
    h.server.write_all(&plain).await.unwrap();
    h.client.read_exact(&mut [0u8; 7]).await.unwrap();
    assert!(!h.task.is_finished());
}

#[tokio::test(start_paused = true)]
async fn mining_inside_websocket_frames_is_found() {
    let mut h = harness(Policy::allow_all(), pool_judge(), Inspect::WebSocket);
    let line = b"{\"id\":1,\"method\":\"mining.subscribe\",\"params\":[\"xmrig/6.21\"]}\n";
    // A masked client text frame (RFC 6455 section 5.3).
    let key = [0x11, 0x22, 0x33, 0x44];
    let mut frame = vec![0x81, 0x80 | line.len() as u8];
    frame.extend_from_slice(&key);
    frame.extend(line.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    h.client.write_all(&frame).await.unwrap();
    h.server
        .read_exact(&mut vec![0u8; frame.len()])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    let records = drain(&mut h.records);
    assert!(
        records
            .iter()
            .any(|r| r.protocol == Protocol::Stratum && r.count == 1 && !r.denied),
        "flagged while learning: {records:?}"
    );
    assert!(!h.task.is_finished(), "learning lets it run");
}

#[tokio::test(start_paused = true)]
async fn a_fake_websocket_upgrade_carrying_raw_stratum_is_found() {
    let mut h = harness(Policy::allow_all(), pool_judge(), Inspect::WebSocket);
    let line = b"{\"id\":1,\"method\":\"mining.subscribe\",\"params\":[\"xmrig/6.21\"]}\n";
    h.client.write_all(line).await.unwrap();
    h.server
        .read_exact(&mut vec![0u8; line.len()])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    let records = drain(&mut h.records);
    assert!(
        records.iter().any(|r| r.protocol == Protocol::Stratum),
        "{records:?}"
    );
}
