//! The relay's flow logic on real loopback sockets. The reply socket is a
//! plain one here (binding to a foreign address needs `CAP_NET_RAW`; the
//! transparent path is tested end to end in `tests/udp.rs`).

use super::*;
use crate::model::Record;
use crate::telemetry::{self, Records};

/// `data` as the relay queues it (its own budget).
fn queued(data: &[u8]) -> Queued {
    let budget = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    Queued::reserve(data.to_vec(), &budget, MAX_QUEUED_BYTES).unwrap()
}

struct Harness {
    udp: Udp,
    records: Records,
    policy_tx: watch::Sender<Arc<Policy>>,
    _stop: watch::Sender<bool>,
}

fn harness(idle: Duration) -> Harness {
    let mut registry = Registry::default();
    let (telemetry, records) = telemetry::channel(&mut registry);
    let (policy_tx, policy) = watch::channel(Arc::new(Policy {
        version: 1,
        ..Policy::allow_all()
    }));
    let (stop_tx, stop) = watch::channel(false);
    let udp = Udp {
        policy,
        policy_deadline: tokio::time::Instant::now(),
        default_policy: Arc::new(Policy::allow_all()),
        telemetry,
        answers: PodAnswers::default(),
        report_interval: Duration::from_millis(50),
        idle_timeout: idle,
        max_flows: 8,
        metrics: UdpMetrics::register(&mut registry),
        stop,
    };
    Harness {
        udp,
        records,
        policy_tx,
        _stop: stop_tx,
    }
}

fn drain(records: &mut Records) -> Vec<Record> {
    std::iter::from_fn(|| records.try_next()).collect()
}

/// An echo server on loopback answering each datagram with `reply` + it.
async fn echo(reply: &'static [u8]) -> SocketAddr {
    let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = server.recv_from(&mut buf).await {
            let answer = [reply, &buf[..n]].concat();
            let _ = server.send_to(&answer, from).await;
        }
    });
    addr
}

struct Flow {
    client: UdpSocket,
    tx: mpsc::Sender<Queued>,
    task: JoinHandle<Ended>,
}

/// Starts a relayed flow from a fresh client socket to `dst`, whose first
/// datagram is `first`.
async fn relay(h: &Harness, dst: SocketAddr, first: &[u8]) -> Flow {
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let key = FlowKey {
        client: client.local_addr().unwrap(),
        dst,
    };
    let authority = flow::authority(dst, &[], &h.udp.policy.borrow());
    let protocol = flow::protocol(first);
    let upstream = socket::upstream(dst).await.unwrap();
    let reply = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (tx, rx) = mpsc::channel(FLOW_QUEUE);
    let udp = h.udp.clone();
    let first = first.to_vec();
    let task = tokio::spawn(async move {
        let relay = Relay {
            udp: &udp,
            key,
            judge: flow::judge(&key, &authority),
            start: Instant::now(),
            live: LiveRecord::new(flow::record(&key, &authority, protocol)),
        };
        relay.pipe(first, rx, upstream, reply).await
    });
    Flow { client, tx, task }
}

async fn answer(client: &UdpSocket) -> Vec<u8> {
    let mut buf = [0u8; 2048];
    let n = tokio::time::timeout(Duration::from_secs(5), client.recv(&mut buf))
        .await
        .expect("an answer")
        .unwrap();
    buf[..n].to_vec()
}

#[tokio::test]
async fn a_flow_is_relayed_both_ways_counted_once_and_ends_when_idle() {
    let mut h = harness(Duration::from_millis(300));
    let dst = echo(b"re:").await;
    let flow = relay(&h, dst, b"one").await;
    assert_eq!(answer(&flow.client).await, b"re:one");
    flow.tx.send(queued(b"second")).await.unwrap();
    assert_eq!(answer(&flow.client).await, b"re:second");
    assert_eq!(flow.task.await.unwrap(), Ended::Idle);
    let records = drain(&mut h.records);
    let sum = |f: fn(&Record) -> u64| records.iter().map(f).sum::<u64>();
    assert_eq!(sum(|r| r.count), 1, "{records:?}");
    assert_eq!(sum(|r| r.bytes_in), 9);
    assert_eq!(sum(|r| r.bytes_out), 15);
    assert!(
        records
            .iter()
            .all(|r| r.protocol == Protocol::Udp && !r.denied)
    );
    assert_eq!(records[0].authority, dst.to_string());
}

#[tokio::test]
async fn a_policy_that_no_longer_allows_the_flow_cuts_it_as_a_denial() {
    let mut h = harness(Duration::from_secs(30));
    let dst = echo(b"").await;
    let flow = relay(&h, dst, b"ping").await;
    assert_eq!(answer(&flow.client).await, b"ping");
    h.policy_tx.send_replace(Arc::new(Policy {
        version: 2,
        enforce: true,
        ..Policy::allow_all()
    }));
    let ended = tokio::time::timeout(Duration::from_secs(5), flow.task)
        .await
        .expect("cut at once")
        .unwrap();
    assert!(matches!(ended, Ended::Cut(_)), "{ended:?}");
    let records = drain(&mut h.records);
    let last = records.last().unwrap();
    assert!(last.denied && last.count == 1, "{records:?}");
}

/// A policy that came after the flow was judged and before its first
/// datagram went is applied first: the datagram is not sent.
#[tokio::test]
async fn a_policy_that_came_before_the_first_datagram_is_applied() {
    let mut h = harness(Duration::from_secs(30));
    let dst = echo(b"").await;
    h.policy_tx.send_replace(Arc::new(Policy {
        version: 2,
        enforce: true,
        ..Policy::allow_all()
    }));
    let flow = relay(&h, dst, b"ping").await;
    let ended = tokio::time::timeout(Duration::from_secs(5), flow.task)
        .await
        .expect("cut at once")
        .unwrap();
    assert!(matches!(ended, Ended::Cut(_)), "{ended:?}");
    let mut buf = [0u8; 64];
    let echoed = tokio::time::timeout(Duration::from_millis(300), flow.client.recv(&mut buf)).await;
    assert!(echoed.is_err(), "the first datagram went upstream");
    let records = drain(&mut h.records);
    let last = records.last().unwrap();
    assert!(
        last.denied && last.count == 1 && last.bytes_in == 0,
        "{records:?}"
    );
}

#[tokio::test]
async fn stratum_in_a_udp_flow_is_cut_in_enforcement_even_to_a_learned_destination() {
    let mut h = harness(Duration::from_secs(30));
    let dst = echo(b"").await;
    h.policy_tx.send_replace(Arc::new(Policy {
        version: 2,
        enforce: true,
        allowed_authorities: [dst.to_string()].into(),
        ..Policy::allow_all()
    }));
    let login = br#"{"id":1,"method":"mining.subscribe","params":[]}"#;
    let flow = relay(&h, dst, &[&login[..], b"\n"].concat()).await;
    let ended = tokio::time::timeout(Duration::from_secs(5), flow.task)
        .await
        .expect("cut at once")
        .unwrap();
    assert_eq!(ended, Ended::Cut(crate::destination::MINING_REASON));
    let records = drain(&mut h.records);
    assert!(
        records
            .iter()
            .any(|r| r.protocol == Protocol::Stratum && r.denied && r.count == 1),
        "{records:?}"
    );
}

#[tokio::test]
async fn a_refused_flow_swallows_its_datagrams_until_idle_with_one_record() {
    let mut h = harness(Duration::from_millis(200));
    h.policy_tx.send_replace(Arc::new(Policy {
        version: 2,
        enforce: true,
        ..Policy::allow_all()
    }));
    let dst = echo(b"").await;
    let key = FlowKey {
        client: "127.0.0.1:9".parse().unwrap(),
        dst,
    };
    let (tx, rx) = mpsc::channel(FLOW_QUEUE);
    for _ in 0..5 {
        tx.send(queued(b"more")).await.unwrap();
    }
    run(&h.udp, key, b"first".to_vec(), rx).await;
    let records = drain(&mut h.records);
    assert_eq!(records.len(), 1, "{records:?}");
    assert!(records[0].denied && records[0].count == 1);
    assert_eq!(records[0].bytes_in, 0, "nothing was relayed");
}

#[tokio::test]
async fn a_quic_initial_names_the_flow_quic() {
    let mut h = harness(Duration::from_millis(100));
    let dst = echo(b"").await;
    let mut initial = vec![0xc3, 0, 0, 0, 1, 8, 1, 2, 3, 4, 5, 6, 7, 8, 0];
    initial.resize(1200, 0);
    let flow = relay(&h, dst, &initial).await;
    assert_eq!(answer(&flow.client).await.len(), 1200);
    assert_eq!(flow.task.await.unwrap(), Ended::Idle);
    let records = drain(&mut h.records);
    assert!(
        records.iter().all(|r| r.protocol == Protocol::Quic),
        "{records:?}"
    );
}

#[tokio::test]
async fn the_flow_table_is_bounded_and_a_flows_datagrams_go_to_it() {
    let h = harness(Duration::from_millis(100));
    let table: Table = Arc::new(Mutex::new(FlowTable::new(1)));
    let udp = Arc::new(h.udp.clone());
    let key = FlowKey {
        client: "10.66.0.1:5".parse().unwrap(),
        dst: "10.66.0.2:9".parse().unwrap(),
    };
    let budget = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    assert_eq!(deliver(&udp, &table, &budget, key, b"a".to_vec()), Ok(()));
    let other = FlowKey {
        client: "10.66.0.1:6".parse().unwrap(),
        ..key
    };
    assert_eq!(
        deliver(&udp, &table, &budget, other, b"b".to_vec()),
        Err(Drop::Full)
    );
    assert_eq!(
        deliver(&udp, &table, &budget, key, b"c".to_vec()),
        Ok(()),
        "same flow"
    );
    // A datagram past the relay's byte budget is refused as backlog.
    budget.store(MAX_QUEUED_BYTES, std::sync::atomic::Ordering::Release);
    assert_eq!(
        deliver(&udp, &table, &budget, key, b"d".to_vec()),
        Err(Drop::Backlog)
    );
}

#[tokio::test]
async fn a_relay_that_cannot_open_is_off_by_default_and_an_error_when_asked_for() {
    use clap::Parser;
    // Taken already (and without CAP_NET_RAW, refused anyway): either way
    // the relay cannot open on this address.
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let args = |extra: &[&str]| {
        let argv = ["vigil-proxy", "--workload", "w", "--udp-addr6", "off"];
        crate::config::Args::try_parse_from(argv.into_iter().chain(extra.iter().copied()))
            .unwrap()
            .udp
    };
    // Not given: whether 127.0.0.1:4154 opens here or not, the sidecar
    // starts.
    assert!(
        open(&args(&[])).is_ok(),
        "the default never stops the sidecar"
    );
    let err = open(&args(&["--udp-addr", &addr])).expect_err("asked for, it must open");
    let text = err.to_string();
    assert!(
        text.contains(&addr) && text.contains("CAP_NET_RAW") && text.contains("--udp-addr"),
        "{text}"
    );
    assert!(open(&args(&["--udp-addr", "off"])).unwrap().is_empty());
}

/// Datagrams queued across a relay's flows share one byte budget: past it
/// they are refused, and each one taken or dropped gives its bytes back.
#[test]
fn queued_datagrams_share_a_byte_budget() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let budget = Arc::new(AtomicUsize::new(0));
    let a = Queued::reserve(vec![0; 600], &budget, 1000).expect("room");
    assert!(
        Queued::reserve(vec![0; 500], &budget, 1000).is_none(),
        "over"
    );
    let b = Queued::reserve(vec![0; 400], &budget, 1000).expect("exactly full");
    assert_eq!(budget.load(Ordering::Acquire), 1000);
    assert_eq!(a.take().len(), 600, "taken: its bytes are back");
    assert_eq!(budget.load(Ordering::Acquire), 400);
    drop(b);
    assert_eq!(budget.load(Ordering::Acquire), 0, "dropped unsent");
}
