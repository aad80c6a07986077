use super::*;
use crate::detect::testdata::{CGMINER_SUBSCRIBE, XMRIG_LOGIN, XorShift};

fn found(method: &str, agent: Option<&str>) -> Option<Stratum> {
    Some(Stratum {
        method: method.to_owned(),
        agent: agent.map(str::to_owned),
    })
}

#[test]
fn recognises_mining_lines() {
    let cases: &[(&str, Option<Stratum>)] = &[
        (
            XMRIG_LOGIN,
            found(
                "login",
                Some("XMRig/6.21.0 (Linux x86_64) libuv/1.44.2 gcc/11.3.0"),
            ),
        ),
        (
            CGMINER_SUBSCRIBE,
            found("mining.subscribe", Some("cgminer/4.10")),
        ),
        (
            "{\"id\":2,\"method\":\"mining.subscribe\",\"params\":[\"NiceHash/1.0.0\",\"EthereumStratum/1.0.0\"]}\r\n",
            found("mining.subscribe", Some("NiceHash/1.0.0")),
        ),
        (
            "{\"id\":1,\"method\":\"mining.subscribe\",\"params\":[]}\n",
            found("mining.subscribe", None),
        ),
        (
            "{\"params\":[\"wallet.worker\",\"x\"],\"id\":2,\"method\":\"mining.authorize\"}\n",
            found("mining.authorize", None),
        ),
        (
            "{\"id\":4,\"method\":\"mining.submit\",\"params\":[\"w\",\"j\",\"00\",\"5f\",\"00\"]}\n",
            found("mining.submit", None),
        ),
        (
            "{\"id\":3,\"method\":\"mining.extranonce.subscribe\",\"params\":[]}\n",
            found("mining.extranonce.subscribe", None),
        ),
        (
            "{\"id\":1,\"method\":\"mining.configure\",\"params\":[[\"version-rolling\"],{}]}\n",
            found("mining.configure", None),
        ),
        (
            "{\"id\":1,\"jsonrpc\":\"2.0\",\"method\":\"eth_submitLogin\",\"params\":[\"0xabc\",\"x\"]}\n",
            found("eth_submitLogin", None),
        ),
        (
            "{\"id\":5,\"method\":\"eth_getWork\",\"params\":[]}\n",
            found("eth_getWork", None),
        ),
        (
            "{\"method\":\"login\",\"params\":{\"login\":\"w\"}}\n",
            found("login", None),
        ),
    ];
    for (line, want) in cases {
        assert_eq!(&parse_stratum(line.as_bytes()), want, "{line}");
        assert!(looks_like_stratum(line.as_bytes()), "{line}");
    }
}

#[test]
fn rejects_other_json_and_garbage() {
    let cases: &[&str] = &[
        // Ordinary Ethereum node calls are JSON-RPC but not mining.
        "{\"jsonrpc\":\"2.0\",\"method\":\"eth_blockNumber\",\"params\":[],\"id\":1}\n",
        "{\"method\":\"eth_blockNumber\"}\n",
        // `login` without XMRig's params.login is some other app's login.
        "{\"method\":\"login\",\"params\":{\"user\":\"bob\",\"password\":\"x\"}}\n",
        "{\"method\":\"login\",\"params\":[\"bob\"]}\n",
        "{\"method\":\"login\"}\n",
        "{\"method\":\"Mining.Subscribe\",\"params\":[]}\n",
        "{\"method\":[\"mining.subscribe\"]}\n",
        "{\"id\":1,\"result\":true,\"error\":null}\n",
        "[{\"method\":\"mining.subscribe\",\"params\":[]}]\n",
        "\"mining.subscribe\"\n",
        "{\"method\":\"mining.subscribe\"\n",
        "{garbage}\n",
        "\n",
        "",
        "GET / HTTP/1.1\r\n",
    ];
    for line in cases {
        assert_eq!(parse_stratum(line.as_bytes()), None, "{line}");
        assert!(!looks_like_stratum(line.as_bytes()), "{line}");
    }
    assert_eq!(parse_stratum(b"\xff\xfe{\n"), None);
}

#[test]
fn needs_the_newline_and_looks_at_the_first_line_only() {
    let line = CGMINER_SUBSCRIBE.as_bytes();
    let unterminated = &line[..line.len() - 1];
    assert_eq!(parse_stratum(unterminated), None);
    // As an HTTP body the newline is optional.
    assert!(looks_like_stratum(unterminated));
    for len in 0..line.len() - 1 {
        assert_eq!(parse_stratum(&line[..len]), None, "cut at {len}");
    }
    let mut two = b"{\"id\":0}\n".to_vec();
    two.extend_from_slice(line);
    assert_eq!(parse_stratum(&two), None);
    let mut then = line.to_vec();
    then.extend_from_slice(b"{\"id\":0}\n");
    assert_eq!(
        parse_stratum(&then).map(|s| s.method),
        Some("mining.subscribe".into())
    );
}

#[test]
fn long_lines_and_long_agents() {
    let pad = " ".repeat(MAX_LINE);
    let long = format!("{{\"method\":\"mining.subscribe\",{pad}\"params\":[]}}\n");
    assert_eq!(parse_stratum(long.as_bytes()), None);
    assert!(!looks_like_stratum(long.as_bytes()));
    // A line of exactly MAX_LINE bytes, newline included, is accepted.
    let head = "{\"method\":\"mining.subscribe\",\"params\":[]";
    let fill = " ".repeat(MAX_LINE - head.len() - 2);
    let exact = format!("{head}{fill}}}\n");
    assert_eq!(exact.len(), MAX_LINE);
    assert!(parse_stratum(exact.as_bytes()).is_some());

    let agent = "A".repeat(1000);
    let line = format!("{{\"method\":\"mining.subscribe\",\"params\":[\"{agent}\"]}}\n");
    let got = parse_stratum(line.as_bytes()).and_then(|s| s.agent);
    assert_eq!(got.map(|a| a.chars().count()), Some(MAX_AGENT_CHARS));
}

#[test]
fn deep_nesting_does_not_overflow() {
    let deep = format!("{}{}\n", "[".repeat(2000), "]".repeat(2000));
    assert_eq!(parse_stratum(deep.as_bytes()), None);
    let deep = format!(
        "{{\"method\":\"login\",\"params\":{}\n",
        "{\"a\":".repeat(2000)
    );
    assert_eq!(parse_stratum(deep.as_bytes()), None);
    assert!(!looks_like_stratum(deep.as_bytes()));
}

#[test]
fn skips_leading_blank_space_and_blank_lines() {
    let line = CGMINER_SUBSCRIBE;
    for lead in [" ", "\t", "\r\n", "\n\n\n", " \t\r\n \r\n\t "] {
        let input = format!("{lead}{line}");
        assert_eq!(
            parse_stratum(input.as_bytes()),
            found("mining.subscribe", Some("cgminer/4.10")),
            "{input:?}"
        );
        assert!(looks_like_stratum(input.as_bytes()), "{input:?}");
        // As an HTTP body, blank lines before and no newline after.
        let body = format!("{lead}{}", line.trim_end());
        assert!(looks_like_stratum(body.as_bytes()), "{body:?}");
    }
    // The line limit counts from the `{`, not from the blank space.
    let lead = " ".repeat(MAX_LINE * 2);
    assert!(parse_stratum(format!("{lead}{line}").as_bytes()).is_some());
    for blank in ["", " ", "\n", "\r\n\r\n", "\t \n"] {
        assert_eq!(parse_stratum(blank.as_bytes()), None, "{blank:?}");
    }
    // Other blank-looking bytes are not JSON whitespace.
    for lead in ["\x0c", "\x0b", "\u{a0}", "\u{feff}"] {
        let input = format!("{lead}{line}");
        assert_eq!(parse_stratum(input.as_bytes()), None, "{input:?}");
    }
}

/// A real Stratum V1 job from a pool (from the protocol's documentation).
const V1_NOTIFY: &str = concat!(
    r#"{"params": ["bf", "4d16b6f85af6e2198f44ae2a6de67f78487ae5611b77c6c0440b921e00000000","#,
    r#""01000000010000000000000000000000000000000000000000000000000000000000000000ffffffff20020862062f503253482f04b8864e5008","#,
    r#""072f736c7573682f000000000100f2052a010000001976a914d23fcdf86f7e756a64a7a9688ef9903327048ed988ac00000000", [],"#,
    r#""00000002", "1c2ac4af", "504e86b9", false], "id": null, "method": "mining.notify"}"#,
    "\n"
);

/// A Monero pool's job to XMRig.
const XMRIG_JOB: &str = concat!(
    r#"{"jsonrpc":"2.0","method":"job","params":{"blob":"0e0ea9a1e0a906a7","#,
    r#""job_id":"q3GhzBbQxB3lXyrdKdVqVJbxL7Ex","target":"b88d0600","algo":"rx/0","#,
    r#""height":3087245,"seed_hash":"a6b8c1d2"}}"#,
    "\n"
);

/// A Monero pool's reply to XMRig's login.
const XMRIG_LOGIN_REPLY: &str = concat!(
    r#"{"id":1,"jsonrpc":"2.0","error":null,"result":{"id":"a1b2c3","#,
    r#""job":{"blob":"0e0ea9a1e0a906a7","job_id":"q3Gh","target":"b88d0600","algo":"rx/0"},"#,
    r#""extensions":["algo","nicehash","keepalive"],"status":"OK"}}"#,
    "\n"
);

#[test]
fn recognises_the_pools_side() {
    let cases: &[(&str, &str)] = &[
        (V1_NOTIFY, "mining.notify"),
        (
            "{\"id\":null,\"method\":\"mining.set_difficulty\",\"params\":[2]}\n",
            "mining.set_difficulty",
        ),
        (
            "{\"id\":null,\"method\":\"mining.set_extranonce\",\"params\":[\"08000002\",4]}\n",
            "mining.set_extranonce",
        ),
        (
            "{\"id\":null,\"method\":\"mining.set_target\",\"params\":[\"00000000ffff0000\"]}\r\n",
            "mining.set_target",
        ),
        (
            "{\"id\":null,\"method\":\"mining.set_version_mask\",\"params\":[\"1fffe000\"]}\n",
            "mining.set_version_mask",
        ),
        (XMRIG_JOB, "job"),
        (
            "{\"method\":\"job\",\"params\":{\"blob\":\"\",\"target\":\"\"}}\n",
            "job",
        ),
        (XMRIG_LOGIN_REPLY, LOGIN_REPLY_METHOD),
        // XMRig reads any message with an id as a reply.
        (
            "{\"id\":1,\"method\":\"x\",\"result\":{\"job\":{\"blob\":\"00\",\"target\":\"ff\"}}}\n",
            LOGIN_REPLY_METHOD,
        ),
    ];
    for (line, method) in cases {
        assert_eq!(
            &parse_stratum(line.as_bytes()),
            &found(method, None),
            "{line}"
        );
        assert!(looks_like_stratum(line.as_bytes()), "{line}");
        assert!(POOL_METHODS.contains(method), "{method}");
    }
}

/// JSON that is not mining, in either direction.
const NOT_MINING: &[&str] = &[
    "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":\"0x10d4f\"}\n",
    // `job` without XMRig's blob and target is some job queue.
    "{\"method\":\"job\",\"params\":{\"job_id\":\"42\",\"state\":\"queued\"}}\n",
    "{\"method\":\"job\",\"params\":{\"blob\":\"00\"}}\n",
    "{\"method\":\"job\",\"params\":{\"target\":\"00\"}}\n",
    "{\"method\":\"job\",\"params\":{\"blob\":1,\"target\":\"00\"}}\n",
    "{\"method\":\"job\",\"params\":{\"blob\":\"00\",\"target\":null}}\n",
    "{\"method\":\"job\",\"params\":[\"blob\",\"target\"]}\n",
    "{\"method\":\"job\"}\n",
    "{\"method\":\"jobs\",\"params\":{\"blob\":\"00\",\"target\":\"ff\"}}\n",
    // Replies with a job that is not XMRig's.
    "{\"id\":1,\"result\":{\"job\":{\"id\":7,\"status\":\"done\"}},\"error\":null}\n",
    "{\"id\":1,\"result\":{\"job\":\"backup\"}}\n",
    "{\"id\":1,\"result\":{\"blob\":\"00\",\"target\":\"ff\"}}\n",
    "{\"id\":1,\"result\":[{\"job\":{\"blob\":\"00\",\"target\":\"ff\"}}]}\n",
    "{\"id\":1,\"error\":{\"job\":{\"blob\":\"00\",\"target\":\"ff\"}}}\n",
    // Language-server messages.
    "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\",\"params\":{\"processId\":1,\"rootUri\":null,\"capabilities\":{}}}\n",
    "{\"jsonrpc\":\"2.0\",\"method\":\"textDocument/didOpen\",\"params\":{\"textDocument\":{\"uri\":\"file:///a.rs\",\"languageId\":\"rust\",\"version\":1,\"text\":\"\"}}}\n",
    "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"capabilities\":{\"hoverProvider\":true}}}\n",
    // Near misses of the pool's methods.
    "{\"method\":\"mining.notifyx\",\"params\":[]}\n",
    "{\"method\":\"Mining.Notify\",\"params\":[]}\n",
    "{\"method\":\"set_difficulty\",\"params\":[2]}\n",
    // A mining method nested in ordinary JSON is not a mining message.
    "{\"params\":{\"method\":\"mining.subscribe\",\"params\":[]}}\n",
];

#[test]
fn rejects_ordinary_json_rpc_in_either_direction() {
    for line in NOT_MINING {
        assert_eq!(parse_stratum(line.as_bytes()), None, "{line}");
        assert!(!looks_like_stratum(line.as_bytes()), "{line}");
    }
}

/// Feeds `stream` in pieces cut at `cuts`; what was found, and where.
fn scan_in_pieces(stream: &[u8], cuts: &[usize]) -> Vec<(usize, Stratum)> {
    let mut scanner = StratumScanner::new();
    let mut hits = Vec::new();
    let mut start = 0;
    for (i, &cut) in cuts.iter().chain([&stream.len()]).enumerate() {
        if let Some(hit) = scanner.feed(&stream[start..cut]) {
            hits.push((i, hit));
        }
        start = cut;
    }
    hits
}

/// What a scanner fed `stream` at once finds.
fn scan(stream: &[u8]) -> Option<Stratum> {
    StratumScanner::new().feed(stream)
}

#[test]
fn scanner_agrees_with_parse_stratum_on_lines() {
    let lines = [
        CGMINER_SUBSCRIBE,
        XMRIG_LOGIN,
        V1_NOTIFY,
        XMRIG_JOB,
        XMRIG_LOGIN_REPLY,
        "  \r\n{\"id\":1,\"method\":\"mining.authorize\",\"params\":[\"w\",\"x\"]}\r\n",
        // Brackets and escaped quotes inside strings.
        "{\"id\":1,\"method\":\"mining.subscribe\",\"params\":[\"x\\\"}\", \"\\\\\"]}\n",
    ];
    for line in lines {
        let want = parse_stratum(line.as_bytes());
        assert!(want.is_some(), "{line}");
        assert_eq!(scan(line.as_bytes()), want, "{line}");
        // Without its newline (a message in a WebSocket frame).
        assert_eq!(scan(line.trim_end().as_bytes()), want, "{line}");
    }
    for line in NOT_MINING {
        assert_eq!(scan(line.as_bytes()), None, "{line}");
    }
    for line in [
        "{\"method\":\"eth_blockNumber\"}\n",
        "{garbage}\n",
        "\n",
        "",
    ] {
        assert_eq!(scan(line.as_bytes()), None, "{line}");
    }
}

/// A stream where Stratum shows up late: an HTTP-looking preamble, binary
/// junk, ordinary JSON, then the miner's subscribe.
fn late_stratum_stream() -> Vec<u8> {
    let mut stream =
        b"POST /rpc HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n\r\n".to_vec();
    stream.extend_from_slice(b"\x00\x01{\xff\xfe\x7b\"k\x02[}\x80\n");
    stream.extend_from_slice(b"{\"jsonrpc\":\"2.0\",\"method\":\"eth_blockNumber\",\"id\":1}\n");
    stream.extend_from_slice(b"{\"s\":\"}{\\\"method\\\":\\\"mining.submit\\\"}\"}\n");
    stream.extend_from_slice(CGMINER_SUBSCRIBE.as_bytes());
    stream.extend_from_slice(XMRIG_JOB.as_bytes());
    stream
}

#[test]
fn scanner_finds_a_line_however_the_stream_is_cut() {
    let stream = late_stratum_stream();
    let want = found("mining.subscribe", Some("cgminer/4.10")).unwrap();
    assert_eq!(scan(&stream), Some(want.clone()));
    // The subscribe ends at its `}`: that is the feed that reports it.
    let end = stream.len() - XMRIG_JOB.len() - 2;
    assert_eq!(stream[end], b'}');
    for cut in 0..=stream.len() {
        let which = usize::from(cut <= end);
        assert_eq!(
            scan_in_pieces(&stream, &[cut]),
            [(which, want.clone())],
            "cut at {cut}"
        );
    }
    let every_byte: Vec<usize> = (1..stream.len()).collect();
    assert_eq!(scan_in_pieces(&stream, &every_byte), [(end, want.clone())]);
    let threes: Vec<usize> = (3..stream.len()).step_by(3).collect();
    assert_eq!(scan_in_pieces(&stream, &threes).len(), 1);
}

#[test]
fn scanner_reports_once_then_is_done() {
    let mut scanner = StratumScanner::new();
    assert!(!scanner.is_done());
    assert_eq!(scanner.feed(b""), None);
    assert_eq!(scanner.feed(b"{\"id\":1}\n"), None);
    assert!(!scanner.is_done());
    let both = [XMRIG_JOB, CGMINER_SUBSCRIBE].concat();
    assert_eq!(
        scanner.feed(both.as_bytes()).map(|s| s.method),
        Some("job".into())
    );
    assert!(scanner.is_done());
    assert_eq!(scanner.feed(CGMINER_SUBSCRIBE.as_bytes()), None);
    assert_eq!(scanner.object.capacity(), 0, "the buffer is given back");
}

#[test]
fn scanner_finds_stratum_without_newlines_or_after_junk() {
    let body = CGMINER_SUBSCRIBE.trim_end();
    let want = found("mining.subscribe", Some("cgminer/4.10"));
    let cases = [
        // An HTTP body: getwork-style, no newline.
        format!(
            "POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
        // Text before it on the line.
        format!("hello {body} bye"),
        // WebSocket messages one after the other.
        format!("{{\"id\":0}}{body}"),
        // A batch.
        format!("[{body}]\n"),
        // Junk opening an object that never closes, broken by a control byte.
        format!("{{\"a\":[1,\x01{body}"),
        format!("{{\"a\":\"\x00{body}"),
        format!("{{{{\u{e9}{body}"),
        // Blank space beyond MAX_LINE before it.
        format!("{}{body}", " ".repeat(MAX_LINE * 2)),
    ];
    for stream in &cases {
        assert_eq!(scan(stream.as_bytes()), want, "{stream:?}");
    }
}

#[test]
fn scanner_resyncs_when_started_mid_stream() {
    // Started inside a string, then inside an object: the next line counts.
    for head in [
        "ing\",\"params\":[\"x\"]}\n",
        "\"}\n",
        "2]]}}}\n",
        "\\\"{\"\n",
    ] {
        let stream = format!("{head}{CGMINER_SUBSCRIBE}");
        assert_eq!(
            scan(stream.as_bytes()).map(|s| s.method),
            Some("mining.subscribe".into()),
            "{stream:?}"
        );
    }
}

#[test]
fn scanner_skips_objects_longer_than_a_line() {
    let pad = " ".repeat(MAX_LINE);
    let long = format!("{{\"method\":\"mining.subscribe\",{pad}\"params\":[]}}");
    assert_eq!(scan(long.as_bytes()), None);
    assert_eq!(scan(format!("{long}\n").as_bytes()), None);
    // Then the next object, on the same line or the next, counts.
    for sep in ["", "\n", " "] {
        let stream = format!("{long}{sep}{CGMINER_SUBSCRIBE}");
        assert!(scan(stream.as_bytes()).is_some(), "{sep:?}");
    }
    // An object of exactly MAX_LINE bytes counts.
    let head = "{\"method\":\"mining.subscribe\",\"params\":[]";
    let exact = format!("{head}{}}}", " ".repeat(MAX_LINE - head.len() - 1));
    assert_eq!(exact.len(), MAX_LINE);
    assert!(scan(exact.as_bytes()).is_some());
    let over = format!("{head}{}}}", " ".repeat(MAX_LINE - head.len()));
    assert_eq!(scan(over.as_bytes()), None);
}

#[test]
fn scanner_stops_at_the_scan_limit() {
    let line = CGMINER_SUBSCRIBE.trim_end().as_bytes();
    // The object's last byte is the SCAN_LIMIT-th byte: found.
    let mut stream = vec![b'x'; SCAN_LIMIT - line.len()];
    stream.extend_from_slice(line);
    assert!(scan(&stream).is_some());
    let mut scanner = StratumScanner::new();
    assert_eq!(scanner.feed(&stream[..SCAN_LIMIT - 1]), None);
    assert!(!scanner.is_done());
    assert!(scanner.feed(&stream[SCAN_LIMIT - 1..]).is_some());
    // One byte later: not looked at.
    stream.insert(0, b'x');
    assert_eq!(scan(&stream), None);
    let mut scanner = StratumScanner::new();
    for piece in stream.chunks(1000) {
        assert_eq!(scanner.feed(piece), None);
    }
    assert!(scanner.is_done());
    assert_eq!(scanner.feed(CGMINER_SUBSCRIBE.as_bytes()), None);
    assert_eq!(scanner.object.capacity(), 0);
}

#[test]
fn scanner_cost_is_bounded_on_a_long_stream() {
    // 64 MiB in 64 KiB pieces: everything after SCAN_LIMIT is a no-op.
    let piece: Vec<u8> = b"{\"a\":["
        .iter()
        .copied()
        .cycle()
        .take(64 * 1024)
        .collect();
    let mut scanner = StratumScanner::new();
    for _ in 0..1024 {
        assert_eq!(scanner.feed(&piece), None);
        assert!(scanner.object.capacity() <= MAX_LINE);
    }
    assert!(scanner.is_done());
    assert_eq!(scanner.seen, SCAN_LIMIT);
}

#[test]
fn scanner_on_junk_never_panics_and_ignores_how_it_is_cut() {
    let seeds = [
        late_stratum_stream(),
        XMRIG_LOGIN_REPLY.as_bytes().to_vec(),
        V1_NOTIFY.as_bytes().to_vec(),
    ];
    let mut rng = XorShift(0x5ca7_7e55);
    for round in 0..3000 {
        let input: Vec<u8> = if round % 2 == 0 {
            let mut input = seeds[rng.below(seeds.len())].clone();
            rng.mutate(&mut input);
            input
        } else {
            let len = rng.below(2000);
            let alphabet = b"{}[]\"\\: \n\x00\xffab";
            (0..len)
                .map(|_| alphabet[rng.below(alphabet.len())])
                .collect()
        };
        let whole = scan(&input);
        let mut cuts: Vec<usize> = (0..rng.below(6))
            .map(|_| rng.below(input.len() + 1))
            .collect();
        cuts.sort_unstable();
        let pieces = scan_in_pieces(&input, &cuts);
        assert_eq!(
            pieces.into_iter().map(|(_, s)| s).next(),
            whole,
            "{input:?}"
        );
        if let Some(found) = whole {
            let method = found.method.as_str();
            assert!(MINING_METHODS.contains(&method) || POOL_METHODS.contains(&method));
        }
    }
}
