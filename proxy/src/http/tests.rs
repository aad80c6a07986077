use super::*;
use http::header::{HeaderMap, HeaderName};

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

/// Every field as `name: value` lines, sorted, repeated lines kept: a
/// duplicated `Upgrade` shows twice.
fn lines(h: &HeaderMap) -> Vec<String> {
    let mut out: Vec<String> = h
        .iter()
        .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap()))
        .collect();
    out.sort();
    out
}

#[test]
fn strips_hop_by_hop_and_keeps_end_to_end_fields() {
    let mut h = headers(&[
        ("connection", "keep-alive, x-secret"),
        ("x-secret", "1"),
        ("keep-alive", "timeout=5"),
        ("proxy-connection", "keep-alive"),
        ("proxy-authorization", "Basic x"),
        ("te", "trailers"),
        ("trailer", "grpc-status"),
        ("transfer-encoding", "chunked"),
        ("upgrade", "websocket"),
        ("host", "api:80"),
        ("accept", "*/*"),
    ]);
    strip_hop_by_hop(&mut h);
    // Trailer is end to end (RFC 9110 section 6.6.2): hyper's HTTP/1.1
    // encoder sends only the trailer fields it names.
    assert_eq!(
        lines(&h),
        ["accept: */*", "host: api:80", "trailer: grpc-status"]
    );
}

/// Each hop-by-hop field is removed when it is the only one (the check
/// that skips requests without any must not miss one), and a request
/// without any is left as it came.
#[test]
fn each_hop_by_hop_field_alone_is_removed() {
    let cases = [
        ("connection", "close"),
        ("proxy-connection", "keep-alive"),
        ("keep-alive", "timeout=5"),
        ("Keep-Alive", "timeout=5"),
        ("proxy-authorization", "Basic x"),
        ("proxy-authenticate", "Basic"),
        ("te", "trailers"),
        ("transfer-encoding", "chunked"),
        ("upgrade", "websocket"),
    ];
    for (name, value) in cases {
        let mut h = headers(&[(name, value), ("accept", "*/*")]);
        strip_hop_by_hop(&mut h);
        assert_eq!(lines(&h), ["accept: */*"], "{name}");
    }
    let mut h = headers(&[("host", "api:80"), ("accept", "*/*"), ("x-a", "1")]);
    strip_hop_by_hop(&mut h);
    assert_eq!(lines(&h), ["accept: */*", "host: api:80", "x-a: 1"]);
}

#[test]
fn requests_carry_their_own_hop_fields_exactly_once() {
    use http::Version;
    let h11 = Version::HTTP_11;
    let h2 = Version::HTTP_2;
    // (client's fields, version, upstream's fields, asks to upgrade)
    type Case = (
        Vec<(&'static str, &'static str)>,
        Version,
        Vec<&'static str>,
        bool,
    );
    let cases: Vec<Case> = vec![
        // A WebSocket handshake as browsers and websocket-client send it:
        // Connection names Upgrade, which used to be copied twice.
        (
            vec![
                ("connection", "Upgrade"),
                ("upgrade", "websocket"),
                ("sec-websocket-key", "k"),
            ],
            h11,
            vec![
                "connection: upgrade",
                "sec-websocket-key: k",
                "upgrade: websocket",
            ],
            true,
        ),
        // Compression is not offered: compressed frames hide what they carry.
        (
            vec![
                ("connection", "Upgrade"),
                ("upgrade", "websocket"),
                (
                    "sec-websocket-extensions",
                    "permessage-deflate; client_max_window_bits",
                ),
            ],
            h11,
            vec!["connection: upgrade", "upgrade: websocket"],
            true,
        ),
        // Firefox: `keep-alive, Upgrade`; the keep-alive option is this hop's.
        (
            vec![
                ("connection", "keep-alive, Upgrade"),
                ("upgrade", "websocket"),
            ],
            h11,
            vec!["connection: upgrade", "upgrade: websocket"],
            true,
        ),
        // An Upgrade list on two lines is carried as one.
        (
            vec![
                ("upgrade", "websocket"),
                ("upgrade", "foo/2"),
                ("connection", "upgrade"),
            ],
            h11,
            vec!["connection: upgrade", "upgrade: websocket, foo/2"],
            true,
        ),
        // gRPC over HTTP/2: `te: trailers` must reach the server (grpcio's C
        // core resets a stream without it).
        (
            vec![("te", "trailers"), ("content-type", "application/grpc")],
            h2,
            vec!["content-type: application/grpc", "te: trailers"],
            false,
        ),
        // HTTP/2 never upgrades, and other TE codings are not ours to pass.
        (
            vec![("te", "gzip"), ("upgrade", "websocket")],
            h2,
            vec![],
            false,
        ),
        // HTTP/1.1: trailers accepted among codings, with `Connection: te`.
        (
            vec![("te", "gzip;q=0.5, trailers"), ("connection", "TE")],
            h11,
            vec!["connection: te", "te: trailers"],
            false,
        ),
        (
            vec![
                ("te", "trailers"),
                ("connection", "te, upgrade"),
                ("upgrade", "websocket"),
            ],
            h11,
            vec![
                "connection: te, upgrade",
                "te: trailers",
                "upgrade: websocket",
            ],
            true,
        ),
        // Fields named by Connection go; a plain request gains nothing.
        (
            vec![
                ("connection", "close, x-hop"),
                ("x-hop", "1"),
                ("accept", "*/*"),
            ],
            h11,
            vec!["accept: */*"],
            false,
        ),
        // An empty Upgrade is no upgrade.
        (vec![("upgrade", " , ")], h11, vec![], false),
    ];
    for (given, version, want, asks) in cases {
        let mut h = headers(&given);
        let upgrade = request_for_upstream(&mut h, version, None);
        assert_eq!(lines(&h), want, "{given:?} over {version:?}");
        assert_eq!(upgrade, asks, "{given:?} over {version:?}");
    }
}

/// On the way out the sidecar's identity goes exactly once, whatever the
/// client sent in its place or named in `Connection` to have it stripped.
#[test]
fn the_identity_survives_whatever_the_client_names() {
    let cases: [&[(&str, &str)]; 4] = [
        &[("accept", "*/*")],
        &[("vigil-source", "evil/spoof")],
        &[
            ("connection", "vigil-source"),
            ("vigil-source", "evil/spoof"),
        ],
        &[
            ("connection", "close, Vigil-Source"),
            ("vigil-source", "a"),
            ("vigil-source", "b"),
        ],
    ];
    for given in cases {
        for version in [http::Version::HTTP_11, http::Version::HTTP_2] {
            let mut h = headers(given);
            let identity = HeaderValue::from_static("default/web");
            request_for_upstream(&mut h, version, Some(identity));
            let ours: Vec<_> = h.get_all("vigil-source").iter().collect();
            assert_eq!(ours, ["default/web"], "{given:?} over {version:?}");
        }
    }
}

#[test]
fn responses_carry_upgrade_once_and_only_on_an_upgrade() {
    let switching = [
        ("connection", "Upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-accept", "a"),
    ];
    // The 101 of a WebSocket handshake (Tornado's): exactly once each.
    let mut h = headers(&switching);
    response_for_client(&mut h, true);
    assert_eq!(
        lines(&h),
        [
            "connection: upgrade",
            "sec-websocket-accept: a",
            "upgrade: websocket"
        ]
    );
    // Not an upgrade: Upgrade is only advertised hop by hop, so it goes.
    let mut h = headers(&switching);
    response_for_client(&mut h, false);
    assert_eq!(lines(&h), ["sec-websocket-accept: a"]);
    // Trailer announcements and ordinary fields pass.
    let mut h = headers(&[
        ("transfer-encoding", "chunked"),
        ("trailer", "x-checksum"),
        ("keep-alive", "timeout=5"),
        ("connection", "keep-alive"),
    ]);
    response_for_client(&mut h, false);
    assert_eq!(lines(&h), ["trailer: x-checksum"]);
}

#[test]
fn an_h2c_upgrade_offer_is_declined_and_others_kept() {
    let mut h2c = headers(&[
        ("connection", "Upgrade, HTTP2-Settings"),
        ("upgrade", "h2c"),
        ("http2-settings", "AAMAAABkAARAAAAAAAIAAAAA"),
        ("host", "api"),
    ]);
    assert!(decline_h2c(&mut h2c));
    assert!(!h2c.contains_key("upgrade") && !h2c.contains_key("http2-settings"));
    assert_eq!(h2c["host"], "api");

    let mut mixed = headers(&[("upgrade", "H2C, websocket")]);
    assert!(decline_h2c(&mut mixed));
    assert_eq!(mixed["upgrade"], "websocket", "other offers stay");

    let mut ws = headers(&[("upgrade", "websocket"), ("connection", "Upgrade")]);
    assert!(!decline_h2c(&mut ws));
    assert_eq!(ws["upgrade"], "websocket");
}

/// A field that `Connection` names is removed in any case, with the
/// connection options beside it; a name for a field that is not there
/// removes nothing else.
#[test]
fn fields_that_connection_names_are_removed_in_any_case() {
    let mut h = headers(&[
        ("connection", "Close, X-Trace, keep-alive, x-absent"),
        ("x-trace", "1"),
        ("x-kept", "2"),
        ("keep-alive", "timeout=5"),
    ]);
    strip_hop_by_hop(&mut h);
    assert_eq!(lines(&h), ["x-kept: 2"]);
    // A response's usual hop-by-hop field alone.
    let mut h = headers(&[("connection", "keep-alive"), ("server", "nginx")]);
    strip_hop_by_hop(&mut h);
    assert_eq!(lines(&h), ["server: nginx"]);
}

/// The upstream URI is the destination's address, whatever authority the
/// request named, with the request's own path and query.
#[test]
fn the_upstream_uri_is_the_address_and_the_requests_path() {
    let v4: SocketAddr = "10.1.2.3:8080".parse().unwrap();
    let cases = [
        ("/", "http://10.1.2.3:8080/"),
        ("/a/b?c=d&e", "http://10.1.2.3:8080/a/b?c=d&e"),
        ("http://pool.example:3333/x?y", "http://10.1.2.3:8080/x?y"),
        ("http://pool.example", "http://10.1.2.3:8080/"),
        ("http://pool.example?q=1", "http://10.1.2.3:8080/?q=1"),
        ("*", "http://10.1.2.3:8080*"),
    ];
    for (target, want) in cases {
        let uri: Uri = target.parse().unwrap();
        let got = upstream_uri(uri, v4);
        assert_eq!(got.to_string(), want, "{target}");
        assert_eq!(
            got.authority().unwrap().as_str(),
            "10.1.2.3:8080",
            "{target}"
        );
    }
}

/// An address as an authority reads as its `Display` does, at the edges
/// of each octet's and the port's digits, and for IPv6.
#[test]
fn an_address_is_written_as_its_authority() {
    for addr in [
        "0.0.0.0:0",
        "1.2.3.4:5",
        "9.10.99.100:10",
        "127.0.0.1:18080",
        "255.255.255.255:65535",
        "[::1]:80",
        "[2001:db8::1]:443",
    ] {
        let addr: SocketAddr = addr.parse().unwrap();
        assert_eq!(authority_of(addr).unwrap().as_str(), addr.to_string());
    }
    // A link-local destination with its zone (a notebook may connect to
    // one) keeps it.
    let zoned = SocketAddr::V6(std::net::SocketAddrV6::new(
        "fe80::1".parse().unwrap(),
        80,
        0,
        2,
    ));
    assert_eq!(
        upstream_uri("/x".parse().unwrap(), zoned).to_string(),
        "http://[fe80::1%2]:80/x"
    );
}
