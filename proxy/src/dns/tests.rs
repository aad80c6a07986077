use std::net::IpAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, RecordType};

use super::*;
use crate::telemetry::{self, Records};

fn query(id: u16, name: &str) -> Vec<u8> {
    let mut message = Message::new(id, MessageType::Query, OpCode::Query);
    message.add_query(Query::query(Name::from_str(name).unwrap(), RecordType::A));
    message.to_vec().unwrap()
}

/// What the fake upstream answers: `name` is 10.66.0.2 for 120 s.
fn upstream_answer(query: &[u8]) -> Vec<u8> {
    let mut message = Message::from_vec(query).unwrap();
    message.metadata.message_type = MessageType::Response;
    message.metadata.response_code = ResponseCode::NoError;
    let name = message.queries[0].name().clone();
    message.add_answer(hickory_proto::rr::Record::from_rdata(
        name,
        120,
        RData::A(A([10, 66, 0, 2].into())),
    ));
    message.to_vec().unwrap()
}

/// A resolver on loopback (UDP and TCP on one port) counting queries.
async fn fake_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let udp = UdpSocket::bind(addr).await.unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; MAX_MESSAGE];
        while let Ok((n, peer)) = udp.recv_from(&mut buf).await {
            counter.fetch_add(1, Ordering::SeqCst);
            let _ = udp.send_to(&upstream_answer(&buf[..n]), peer).await;
        }
    });
    let counter = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = tcp.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            let query = read_framed(&mut stream).await.unwrap();
            write_framed(&mut stream, &upstream_answer(&query))
                .await
                .unwrap();
        }
    });
    (addr, seen)
}

fn dns(upstream: SocketAddr, policy: Policy) -> (Arc<Dns>, Records) {
    let (telemetry, records) = telemetry::channel(&mut Registry::default());
    let (_, rx) = watch::channel(Arc::new(policy));
    let dns = Dns {
        upstream,
        policy: rx,
        policy_deadline: tokio::time::Instant::now(),
        default_policy: Arc::new(Policy::allow_all()),
        telemetry,
        answers: PodAnswers::default(),
        metrics: DnsMetrics::default(),
        in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
    };
    (Arc::new(dns), records)
}

fn enforcing(authorities: &[&str]) -> Policy {
    Policy {
        version: 1,
        enforce: true,
        allowed_authorities: authorities.iter().map(|a| a.to_string()).collect(),
        ..Policy::allow_all()
    }
}

/// Starts the listener (UDP and TCP) for `dns`; returns its address and
/// the shutdown signal, which stops it when dropped.
async fn listen(dns: Arc<Dns>) -> (SocketAddr, watch::Sender<bool>) {
    let bound = bind("127.0.0.1:0".parse().unwrap(), false)
        .await
        .unwrap()
        .unwrap();
    let (stop, shutdown) = watch::channel(false);
    spawn_udp(dns.clone(), bound.udp, shutdown.clone());
    spawn_tcp(dns, bound.tcp, shutdown);
    (bound.addr, stop)
}

async fn ask_udp(server: SocketAddr, query: &[u8]) -> Vec<u8> {
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    client.send_to(query, server).await.unwrap();
    let mut buf = vec![0u8; MAX_MESSAGE];
    let n = tokio::time::timeout(Duration::from_secs(10), client.recv(&mut buf))
        .await
        .expect("an answer")
        .unwrap();
    buf.truncate(n);
    buf
}

async fn ask_tcp(server: SocketAddr, query: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(server).await.unwrap();
    write_framed(&mut stream, query).await.unwrap();
    read_framed(&mut stream).await.unwrap()
}

fn rcode_of(response: &[u8]) -> ResponseCode {
    Message::from_vec(response).unwrap().metadata.response_code
}

#[tokio::test]
async fn queries_are_forwarded_recorded_and_their_answers_kept() {
    let (upstream, seen) = fake_upstream().await;
    let policy = enforcing(&["pypi.test:443", "github.com"]);
    let (dns, mut records) = dns(upstream, policy);
    let (server, _stop) = listen(dns.clone()).await;

    let q = query(41, "Files.PyPI.test.");
    let got = ask_udp(server, &q).await;
    assert_eq!(got, upstream_answer(&q), "relayed byte for byte");
    let q = query(42, "api.github.com.");
    assert_eq!(ask_tcp(server, &q).await, upstream_answer(&q));
    assert_eq!(seen.load(Ordering::SeqCst), 2);

    let ip: IpAddr = "10.66.0.2".parse().unwrap();
    assert_eq!(dns.answers.get("files.pypi.test"), vec![ip]);
    assert_eq!(dns.answers.get("api.github.com"), vec![ip]);
    for name in ["files.pypi.test", "api.github.com"] {
        let record = records.try_next().expect("a record per query");
        assert_eq!(
            (record.authority.as_str(), record.method.as_str()),
            (name, "A")
        );
        assert_eq!(
            (record.protocol, record.direction),
            (Protocol::Dns, Direction::Outbound)
        );
        assert_eq!((record.status, record.denied), (0, false));
    }
}

#[tokio::test]
async fn in_enforcement_an_unknown_name_is_refused_and_never_forwarded() {
    let (upstream, seen) = fake_upstream().await;
    let (dns, mut records) = dns(upstream, enforcing(&["pypi.test:443"]));
    let (server, _stop) = listen(dns.clone()).await;
    for (q, tcp) in [
        (query(7, "6578666974.evil.test."), false),
        (query(8, "never-seen.test."), true),
    ] {
        let got = if tcp {
            ask_tcp(server, &q).await
        } else {
            ask_udp(server, &q).await
        };
        assert_eq!(rcode_of(&got), ResponseCode::Refused);
        assert_eq!(
            Message::from_vec(&got).unwrap().metadata.id,
            u16::from_be_bytes([q[0], q[1]])
        );
        let record = records.try_next().unwrap();
        assert_eq!((record.status, record.denied), (5, true), "{record:?}");
    }
    assert_eq!(seen.load(Ordering::SeqCst), 0, "nothing was forwarded");
    assert!(dns.answers.is_empty());
    // A malformed query (two questions) is answered FORMERR, not forwarded.
    let mut two = Message::from_vec(&query(9, "pypi.test.")).unwrap();
    two.add_query(Query::query(
        Name::from_str("b.pypi.test.").unwrap(),
        RecordType::A,
    ));
    let got = ask_udp(server, &two.to_vec().unwrap()).await;
    assert_eq!(rcode_of(&got), ResponseCode::FormErr);
    assert_eq!(seen.load(Ordering::SeqCst), 0);
    // In learning, the same name passes.
    let (learning, _) = self::dns(
        upstream,
        Policy {
            version: 2,
            ..Policy::allow_all()
        },
    );
    let (server, _stop) = listen(learning).await;
    let q = query(10, "never-seen.test.");
    assert_eq!(ask_udp(server, &q).await, upstream_answer(&q));
}

#[tokio::test(start_paused = true)]
async fn a_silent_upstream_is_answered_servfail_after_the_timeout() {
    // Bound but never read: the query is lost.
    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (dns, mut records) = dns(silent.local_addr().unwrap(), enforcing(&["pypi.test"]));
    let q = query(5, "pypi.test.");
    let response = dns.handle(&q, Transport::Udp).await.unwrap();
    assert_eq!(rcode_of(&response), ResponseCode::ServFail);
    let record = records.try_next().unwrap();
    assert_eq!((record.authority.as_str(), record.status), ("pypi.test", 2));
    // A response sent to the listener is dropped, not answered.
    assert_eq!(dns.handle(&upstream_answer(&q), Transport::Udp).await, None);
}

#[tokio::test]
async fn a_threat_listed_name_is_refused_even_when_learned_and_a_quarantine_refuses_all() {
    let (upstream, seen) = fake_upstream().await;
    let threats = |enforce_threats, quarantined| Policy {
        denied_names: crate::policy::DeniedNames::compile(["*.pool.test"]).unwrap(),
        enforce_threats,
        quarantined,
        ..enforcing(&["xmr.pool.test:3333", "pypi.test:443"])
    };
    // (policy, name, refused)
    let cases = [
        (threats(true, false), "xmr.pool.test.", true),
        (threats(true, false), "XMR.Pool.TEST.", true),
        (threats(true, false), "pypi.test.", false),
        // Listed but not enforced (alert-only, learning): forwarded, so
        // the controller sees the query and alerts.
        (threats(false, false), "xmr.pool.test.", false),
        // Quarantined: even a learned name.
        (threats(false, true), "pypi.test.", true),
        (
            Policy {
                version: 1,
                quarantined: true,
                ..Policy::allow_all()
            },
            "anything.test.",
            true,
        ),
    ];
    for (i, (policy, name, refused)) in cases.into_iter().enumerate() {
        let (dns, mut records) = dns(upstream, policy);
        let (server, _stop) = listen(dns).await;
        let before = seen.load(Ordering::SeqCst);
        let q = query(20 + i as u16, name);
        let got = ask_udp(server, &q).await;
        let record = records.try_next().unwrap();
        if refused {
            assert_eq!(rcode_of(&got), ResponseCode::Refused, "{name}");
            assert!(record.denied, "{name}");
            assert_eq!(seen.load(Ordering::SeqCst), before, "{name} not forwarded");
        } else {
            assert_eq!(got, upstream_answer(&q), "{name}");
            assert!(!record.denied, "{name}");
        }
    }
}

#[test]
fn only_an_address_querys_nxdomain_marks_a_name_missing() {
    use super::binding_rcode;
    use message::rcode::{NOERROR, NXDOMAIN, SERVFAIL};
    // (query type, response code, what binding takes)
    let cases = [
        ("A", NXDOMAIN, NXDOMAIN),
        ("AAAA", NXDOMAIN, NXDOMAIN),
        ("TXT", NXDOMAIN, NOERROR),
        ("TYPE65280", NXDOMAIN, NOERROR),
        ("A", NOERROR, NOERROR),
        ("MX", SERVFAIL, SERVFAIL),
    ];
    for (qtype, rcode, want) in cases {
        assert_eq!(binding_rcode(qtype, rcode), want, "{qtype} {rcode}");
    }
}

/// In enforcement the search names of an allowed name are forwarded as
/// the name is (a resolver asks them first and stops at a REFUSED), and
/// those of an unknown one are refused.
#[tokio::test]
async fn the_search_names_of_an_allowed_name_are_forwarded_in_enforcement() {
    let (upstream, seen) = fake_upstream().await;
    let (dns, _records) = dns(upstream, enforcing(&["pypi.test:443"]));
    let search = crate::resolve::SearchList::parse(
        "search lab.svc.cluster.local svc.cluster.local\noptions ndots:5\n",
    );
    let dns = Arc::new(Dns {
        answers: PodAnswers::new(search),
        ..Arc::into_inner(dns).unwrap()
    });
    let (server, _stop) = listen(dns).await;
    let asked = query(11, "pypi.test.lab.svc.cluster.local.");
    assert_eq!(ask_udp(server, &asked).await, upstream_answer(&asked));
    assert_eq!(seen.load(Ordering::SeqCst), 1);
    for name in [
        "evil.test.lab.svc.cluster.local.",
        "pypi.test.evil.example.",
    ] {
        let got = ask_udp(server, &query(12, name)).await;
        assert_eq!(rcode_of(&got), ResponseCode::Refused, "{name}");
    }
    assert_eq!(seen.load(Ordering::SeqCst), 1, "nothing else was forwarded");
}
