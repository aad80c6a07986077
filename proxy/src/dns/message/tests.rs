use std::str::FromStr;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::*;

fn name(text: &str) -> Name {
    Name::from_str(text).unwrap()
}

fn query_of(id: u16, names: &[(&str, RecordType)]) -> Message {
    let mut message = Message::new(id, MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = true;
    for (n, t) in names {
        message.add_query(Query::query(name(n), *t));
    }
    message
}

fn query(id: u16, n: &str, t: RecordType) -> Vec<u8> {
    query_of(id, &[(n, t)]).to_vec().unwrap()
}

fn question(id: u16, n: &str, t: &str) -> Question {
    Question {
        id,
        name: n.into(),
        qtype: t.into(),
    }
}

/// What the listener should do: forward this question, or answer at once
/// with this rcode (and read this question).
type Want = Result<Question, (u16, Option<Question>)>;

#[test]
fn queries_are_read_and_bad_ones_answered_at_once() {
    let long_label = format!("{}.test.", "a".repeat(63));
    let two = query_of(9, &[("a.test.", RecordType::A), ("b.test.", RecordType::A)])
        .to_vec()
        .unwrap();
    let mut notify = query_of(4, &[("a.test.", RecordType::SOA)]);
    notify.metadata.op_code = OpCode::Notify;
    let mut response = query_of(5, &[("a.test.", RecordType::A)]);
    response.metadata.message_type = MessageType::Response;
    let no_question = query_of(6, &[]).to_vec().unwrap();
    // (bytes, what the listener does: the question, or the rcode it answers)
    let cases: Vec<(Vec<u8>, Want)> = vec![
        (
            query(1, "PyPI.Org.", RecordType::A),
            Ok(question(1, "pypi.org", "A")),
        ),
        (
            query(2, "files.pypi.org", RecordType::AAAA),
            Ok(question(2, "files.pypi.org", "AAAA")),
        ),
        (query(3, ".", RecordType::NS), Ok(question(3, ".", "NS"))),
        (
            query(7, "x.test.", RecordType::Unknown(65280)),
            Ok(question(7, "x.test", "TYPE65280")),
        ),
        (
            query(8, &long_label, RecordType::TXT),
            Ok(question(8, &long_label[..long_label.len() - 1], "TXT")),
        ),
        (two, Err((rcode::FORMERR, Some(question(9, "a.test", "A"))))),
        (no_question, Err((rcode::FORMERR, None))),
        (
            notify.to_vec().unwrap(),
            Err((rcode::NOTIMP, Some(question(4, "a.test", "SOA")))),
        ),
        // A header and garbage: FORMERR with the id.
        (
            vec![0, 10, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xff],
            Err((rcode::FORMERR, None)),
        ),
    ];
    for (bytes, want) in cases {
        match (inspect(&bytes), want) {
            (Incoming::Query(got), Ok(want)) => assert_eq!(got, want),
            (
                Incoming::Reject {
                    rcode: got,
                    response,
                    question,
                },
                Err((want, want_q)),
            ) => {
                assert_eq!((got, &question), (want, &want_q), "{bytes:?}");
                let parsed = Message::from_vec(&response).unwrap();
                assert_eq!(parsed.metadata.id, u16::from_be_bytes([bytes[0], bytes[1]]));
                assert_eq!(u16::from(parsed.metadata.response_code), want);
                assert_eq!(parsed.metadata.message_type, MessageType::Response);
            }
            (got, want) => panic!("{bytes:?}: got {got:?}, want {want:?}"),
        }
    }
    // A name over 253 bytes cannot be real: hickory refuses to decode it
    // (FORMERR above), and `well_formed` stands behind that.
    let longest = format!("{0}.{0}.{0}.{1}.", "a".repeat(63), "b".repeat(61));
    assert_eq!(longest.len() - 1, MAX_NAME);
    assert!(well_formed(&name(&longest)));
    let longest = query(12, &longest, RecordType::A);
    assert!(matches!(inspect(&longest), Incoming::Query(_)));
    assert!(well_formed(&name("pypi.org.")));
    // Built by hand, 5 labels of 63 bytes: never decoded, never forwarded.
    let mut too_long = vec![0, 13, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for _ in 0..5 {
        too_long.push(63);
        too_long.extend_from_slice(&[b'a'; 63]);
    }
    too_long.extend_from_slice(&[0, 0, 1, 0, 1]);
    assert!(matches!(
        inspect(&too_long),
        Incoming::Reject {
            rcode: rcode::FORMERR,
            ..
        }
    ));
    // Responses and runts are dropped, not answered.
    assert_eq!(inspect(&response.to_vec().unwrap()), Incoming::Ignore);
    assert_eq!(inspect(&[0, 1, 2]), Incoming::Ignore);
    assert_eq!(answer(&[0, 1, 2], rcode::REFUSED), Vec::<u8>::new());
}

#[test]
fn a_refusal_echoes_the_question_with_the_same_id() {
    let bytes = query(0xbeef, "exfil-6465616462656566.evil.test.", RecordType::TXT);
    let refused = Message::from_vec(&answer(&bytes, rcode::REFUSED)).unwrap();
    assert_eq!(refused.metadata.id, 0xbeef);
    assert_eq!(refused.metadata.message_type, MessageType::Response);
    assert_eq!(refused.metadata.response_code, ResponseCode::Refused);
    assert!(refused.metadata.recursion_desired);
    assert_eq!(
        refused.queries,
        query_of(0, &[("exfil-6465616462656566.evil.test.", RecordType::TXT)]).queries
    );
    assert!(refused.answers.is_empty());
}

fn response(id: u16, qname: &str, answers: Vec<Record>, code: ResponseCode) -> Vec<u8> {
    let mut message = query_of(id, &[(qname, RecordType::A)]);
    message.metadata.message_type = MessageType::Response;
    message.metadata.response_code = code;
    message.answers = answers;
    message.to_vec().unwrap()
}

fn a(owner: &str, ttl: u32, ip: [u8; 4]) -> Record {
    Record::from_rdata(name(owner), ttl, RData::A(A(ip.into())))
}

fn cname(owner: &str, ttl: u32, target: &str) -> Record {
    Record::from_rdata(name(owner), ttl, RData::CNAME(CNAME(name(target))))
}

#[test]
fn addresses_belong_to_the_queried_name_through_cname_chains() {
    let q = question(7, "files.pypi.org", "A");
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let six = Record::from_rdata(
        name("cdn.example.net."),
        60,
        RData::AAAA(AAAA("fd66::2".parse().unwrap())),
    );
    let txt = Record::from_rdata(
        name("files.pypi.org."),
        60,
        RData::TXT(TXT::new(vec!["x".into()])),
    );
    let cases = [
        // Direct answers; the owner's case does not matter.
        (
            vec![
                a("Files.PyPI.org.", 300, [10, 0, 0, 1]),
                a("files.pypi.org.", 20, [10, 0, 0, 2]),
            ],
            vec![(ip("10.0.0.1"), 300), (ip("10.0.0.2"), 20)],
        ),
        // A chain: the smallest TTL along it counts.
        (
            vec![
                cname("files.pypi.org.", 100, "dualstack.pypi.map.fastly.net."),
                cname("dualstack.pypi.map.fastly.net.", 50, "cdn.example.net."),
                a("cdn.example.net.", 600, [151, 101, 0, 223]),
                six.clone(),
            ],
            vec![(ip("151.101.0.223"), 50), (ip("fd66::2"), 50)],
        ),
        // Records of names the chain does not reach are not the name's.
        (vec![a("evil.test.", 60, [6, 6, 6, 6]), txt], vec![]),
        // A CNAME loop ends.
        (
            vec![
                cname("files.pypi.org.", 60, "loop.test."),
                cname("loop.test.", 60, "files.pypi.org."),
                a("loop.test.", 30, [10, 0, 0, 3]),
            ],
            vec![(ip("10.0.0.3"), 30)],
        ),
    ];
    for (answers, want) in cases {
        let bytes = response(7, "files.pypi.org.", answers.clone(), ResponseCode::NoError);
        let got = read_response(&bytes, &q).unwrap();
        assert_eq!(got.rcode, rcode::NOERROR);
        assert_eq!(got.addresses, want, "{answers:?}");
    }
    let nx = response(7, "files.pypi.org.", vec![], ResponseCode::NXDomain);
    assert_eq!(read_response(&nx, &q).unwrap().rcode, rcode::NXDOMAIN);
    // Not the answer to this question: another id, another name, a query.
    let other_id = response(8, "files.pypi.org.", vec![], ResponseCode::NoError);
    let other_name = response(7, "pypi.org.", vec![], ResponseCode::NoError);
    for bytes in [
        other_id,
        other_name,
        query(7, "files.pypi.org.", RecordType::A),
        vec![1, 2],
    ] {
        assert_eq!(read_response(&bytes, &q), None);
    }
}
