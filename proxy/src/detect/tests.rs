use super::*;
use crate::detect::testdata::{
    CGMINER_SUBSCRIBE, XMRIG_LOGIN, XorShift, curl_hello, openssl_hello, split_records,
};

fn done(p: Protocol) -> Detection {
    Detection::Done(p)
}

fn tls(sni: &str) -> Protocol {
    Protocol::Tls(ClientHello {
        sni: Some(sni.to_owned()),
        alpn: vec!["h2".to_owned(), "http/1.1".to_owned()],
    })
}

fn stratum(method: &str, agent: &str) -> Protocol {
    Protocol::Stratum(Stratum {
        method: method.to_owned(),
        agent: Some(agent.to_owned()),
    })
}

/// A pool's message, which names no agent.
fn pool(method: &str) -> Protocol {
    Protocol::Stratum(Stratum {
        method: method.to_owned(),
        agent: None,
    })
}

/// Blank space before the miner's or the pool's first line, and near misses.
fn blank_then_json() -> Vec<(Vec<u8>, Detection, usize)> {
    let blank_cgminer = format!(" \t\r\n\r\n{CGMINER_SUBSCRIBE}").into_bytes();
    let notify = b" {\"id\":1,\"method\":\"mining.notify\",\"params\":[\"j1\",\"00\"]}\n".to_vec();
    let reply = concat!(
        r#"{"id":1,"jsonrpc":"2.0","error":null,"result":{"id":"a1","#,
        r#""job":{"blob":"0e0e","job_id":"q3","target":"b88d0600"},"status":"OK"}}"#,
        "\n"
    );
    let job = b"\n{\"method\":\"job\",\"params\":{\"blob\":\"0e\",\"target\":\"ff\"}}\n".to_vec();
    let queue = b"\n{\"method\":\"job\",\"params\":{\"job_id\":\"7\"}}\n".to_vec();
    let (blank_len, notify_len, job_len) = (blank_cgminer.len(), notify.len(), job.len());
    vec![
        (
            blank_cgminer,
            done(stratum("mining.subscribe", "cgminer/4.10")),
            blank_len,
        ),
        (notify, done(pool("mining.notify")), notify_len),
        (
            reply.as_bytes().to_vec(),
            done(pool(stratum::LOGIN_REPLY_METHOD)),
            reply.len(),
        ),
        (job, done(pool("job")), job_len),
        (queue, done(Protocol::Opaque), usize::MAX),
        // The empty lines a server skips before a request: still HTTP.
        (
            b"\r\n\r\nGET / HTTP/1.1\r\n".to_vec(),
            done(Protocol::Http1),
            8,
        ),
        (
            b"\n\r\nPOST /x HTTP/1.1\r\n".to_vec(),
            done(Protocol::Http1),
            8,
        ),
        (
            b"\r\nPROPFIND /f HTTP/1.1\r\n".to_vec(),
            done(Protocol::Http1),
            24,
        ),
        // Not an empty line (a bare CR, blank space): not HTTP to a server.
        (
            b"\r\rGET / HTTP/1.1\r\n".to_vec(),
            done(Protocol::Opaque),
            3,
        ),
        (
            b"\r\n GET / HTTP/1.1\r\n".to_vec(),
            done(Protocol::Opaque),
            4,
        ),
        (b"  x".to_vec(), done(Protocol::Opaque), 3),
        (b"\n\x16\x03\x01".to_vec(), done(Protocol::Opaque), 2),
    ]
}

/// Complete inputs, what they are, and how many leading bytes it takes to
/// decide (every shorter prefix answers `NeedMore`).
fn table() -> Vec<(Vec<u8>, Detection, usize)> {
    let h2 = [H2_PREFACE, b"\x00\x00\x12\x04\x00\x00\x00\x00\x00"].concat();
    let openssl = openssl_hello();
    let curl = curl_hello();
    let split = split_records(&openssl, 50);
    let xmrig = XMRIG_LOGIN.as_bytes().to_vec();
    let cgminer = CGMINER_SUBSCRIBE.as_bytes().to_vec();
    let xmrig_agent = "XMRig/6.21.0 (Linux x86_64) libuv/1.44.2 gcc/11.3.0";
    let (openssl_len, curl_len, split_len) = (openssl.len(), curl.len(), split.len());
    let (xmrig_len, cgminer_len) = (xmrig.len(), cgminer.len());
    vec![
        (h2, done(Protocol::Http2), H2_PREFACE.len()),
        (
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(),
            done(Protocol::Http1),
            4,
        ),
        (
            b"HEAD / HTTP/1.0\r\n\r\n".to_vec(),
            done(Protocol::Http1),
            5,
        ),
        (b"POST /x HTTP/1.1\r\n".to_vec(), done(Protocol::Http1), 5),
        (b"PUT /x HTTP/1.1\r\n".to_vec(), done(Protocol::Http1), 4),
        (b"DELETE /x HTTP/1.1\r\n".to_vec(), done(Protocol::Http1), 7),
        (
            b"CONNECT a:443 HTTP/1.1\r\n".to_vec(),
            done(Protocol::Http1),
            8,
        ),
        (b"OPTIONS * HTTP/1.1\r\n".to_vec(), done(Protocol::Http1), 8),
        (b"TRACE / HTTP/1.1\r\n".to_vec(), done(Protocol::Http1), 6),
        (b"PATCH /x HTTP/1.1\r\n".to_vec(), done(Protocol::Http1), 6),
        (
            b"GET / HTTP/1.1\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n\r\n"
                .to_vec(),
            done(Protocol::Http1),
            4,
        ),
        (openssl, done(tls("pypi.org")), openssl_len),
        (curl, done(tls("example.com")), curl_len),
        (split, done(tls("pypi.org")), split_len),
        (xmrig, done(stratum("login", xmrig_agent)), xmrig_len),
        (
            cgminer,
            done(stratum("mining.subscribe", "cgminer/4.10")),
            cgminer_len,
        ),
        (
            b"{\"method\":\"eth_blockNumber\"}\n".to_vec(),
            done(Protocol::Opaque),
            usize::MAX,
        ),
        (
            b"{\"id\":1,\"result\":true}\n".to_vec(),
            done(Protocol::Opaque),
            usize::MAX,
        ),
        (
            b"SSH-2.0-OpenSSH_9.6\r\n".to_vec(),
            done(Protocol::Opaque),
            5,
        ),
        (b"*1\r\n$4\r\nPING\r\n".to_vec(), done(Protocol::Opaque), 1),
        (
            b"PROPFIND /files/ HTTP/1.1\r\nDepth: 1\r\n\r\n".to_vec(),
            done(Protocol::Http1),
            27,
        ),
        (b"MKCOL /d HTTP/1.0\n".to_vec(), done(Protocol::Http1), 18),
        (b"GEX / HTTP/1.1\r\n".to_vec(), done(Protocol::Http1), 16),
        (b"PING\r\n".to_vec(), done(Protocol::Opaque), 5),
        (b"AUTH secret\r\n".to_vec(), done(Protocol::Opaque), 13),
        (b"GEX / HTTP/2.0\r\n".to_vec(), done(Protocol::Opaque), 16),
        (b"GEX  HTTP/1.1\r\n".to_vec(), done(Protocol::Opaque), 15),
        (b"get / HTTP/1.1\r\n".to_vec(), done(Protocol::Opaque), 1),
        (b"GET\t/ HTTP/1.1\r\n".to_vec(), done(Protocol::Opaque), 4),
        (
            b"PRI * HTTP/1.1\r\n\r\n".to_vec(),
            done(Protocol::Opaque),
            12,
        ),
        // A handshake record that is not a readable ClientHello: TLS whose
        // name is unknown, not a nameless stream.
        (
            b"\x16\x03\x01\x00\x05\x02\x00\x00\x01\x00".to_vec(),
            done(Protocol::UnreadableTls),
            10,
        ),
        (b"\x16\x09".to_vec(), done(Protocol::Opaque), 2),
        (b"\x00\x00\x00\x00".to_vec(), done(Protocol::Opaque), 1),
    ]
    .into_iter()
    .chain(blank_then_json())
    .collect()
}

#[test]
fn detects_each_protocol_and_waits_on_prefixes() {
    assert_eq!(detect(b""), Detection::NeedMore);
    for (input, want, decided_at) in table() {
        assert_eq!(
            detect(&input),
            want,
            "{:?}",
            String::from_utf8_lossy(&input)
        );
        for len in 1..input.len() {
            let got = detect(&input[..len]);
            if len < decided_at {
                assert_eq!(got, Detection::NeedMore, "{:?}", &input[..len]);
            } else {
                assert_eq!(got, want, "{:?}", &input[..len]);
            }
        }
    }
}

#[test]
fn json_without_newline_waits_up_to_the_line_limit() {
    let mut buf = b"{\"method\":\"mining.subscribe\",\"params\":[".to_vec();
    assert_eq!(detect(&buf), Detection::NeedMore);
    buf.resize(stratum::MAX_LINE - 1, b' ');
    assert_eq!(detect(&buf), Detection::NeedMore);
    buf.push(b' ');
    assert_eq!(detect(&buf), done(Protocol::Opaque));
    buf.extend_from_slice(b"]}\n");
    assert_eq!(detect(&buf), done(Protocol::Opaque));
}

#[test]
fn blank_space_waits_up_to_max_peek() {
    let mut buf = b"\r\n".repeat(MAX_PEEK / 2 - 100);
    assert_eq!(detect(&buf), Detection::NeedMore);
    let mut late = buf.clone();
    late.extend_from_slice(CGMINER_SUBSCRIBE.as_bytes());
    assert!(late.len() < MAX_PEEK);
    assert_eq!(
        detect(&late),
        done(stratum("mining.subscribe", "cgminer/4.10"))
    );
    buf.resize(MAX_PEEK - 1, b' ');
    assert_eq!(detect(&buf), Detection::NeedMore);
    // Its newline past MAX_PEEK: never seen.
    let mut cut = buf.clone();
    cut.extend_from_slice(CGMINER_SUBSCRIBE.as_bytes());
    assert_eq!(detect(&cut), done(Protocol::Opaque));
    buf.push(b'\t');
    assert_eq!(detect(&buf), done(Protocol::Opaque));
}

#[test]
fn undecided_past_max_peek_is_opaque() {
    // A ClientHello that announces more than MAX_PEEK bytes across records.
    let mut buf = vec![0x16, 3, 1, 0, 4, 1, 0, 0x3f, 0xf0];
    while buf.len() < MAX_PEEK - 100 {
        buf.extend_from_slice(&[0x16, 3, 3, 0x10, 0]);
        buf.resize(buf.len() + 0x1000, 0);
    }
    assert_eq!(detect(&buf[..MAX_PEEK - 200]), Detection::NeedMore);
    buf.resize(MAX_PEEK + 10, 0);
    assert_eq!(detect(&buf[..MAX_PEEK]), done(Protocol::Opaque));
    assert_eq!(detect(&buf), done(Protocol::Opaque));
    let labels: Vec<_> = [Protocol::Http1, Protocol::Opaque]
        .iter()
        .map(Protocol::label)
        .collect();
    assert_eq!(labels, ["http1", "opaque"]);
}

/// Seeds for the mutation loop: one valid input per protocol.
fn seeds() -> Vec<Vec<u8>> {
    let mut seeds: Vec<Vec<u8>> = table().into_iter().map(|(input, _, _)| input).collect();
    seeds.push(split_records(&curl_hello(), 3));
    seeds
}

/// Checks the contract on one input: no panic, and once `detect` is done
/// on a prefix, appending bytes never changes the answer.
fn check_input(buf: &[u8]) {
    let _ = parse_client_hello(buf);
    let _ = parse_stratum(buf);
    let _ = looks_like_stratum(buf);
    let full = detect(buf);
    let step = buf.len() / 16 + 1;
    for len in (0..buf.len()).step_by(step) {
        if let decided @ Detection::Done(_) = detect(&buf[..len]) {
            assert_eq!(decided, full, "prefix {len} of {buf:?}");
            return;
        }
    }
}

#[test]
fn mutation_loop_never_panics_and_stays_monotone() {
    let seeds = seeds();
    let mut rng = XorShift(0x5eed_cafe_f00d_d00d);
    for _ in 0..4000 {
        let mut input = seeds[rng.below(seeds.len())].clone();
        rng.mutate(&mut input);
        check_input(&input);
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = XorShift(42);
    for _ in 0..2000 {
        let len = rng.below(600);
        let mut input: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        // Bias most of them towards TLS, JSON and blank-then-JSON starts.
        match rng.below(4) {
            0 if input.len() > 3 => input[..3].copy_from_slice(&[0x16, 3, 1]),
            1 if !input.is_empty() => input[0] = b'{',
            2 if input.len() > 2 => input[..3].copy_from_slice(b" \n{"),
            _ => {}
        }
        check_input(&input);
    }
}
