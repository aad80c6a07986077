use super::*;
use crate::detect::testdata::{CGMINER_SUBSCRIBE, XMRIG_LOGIN};

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
