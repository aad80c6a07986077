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
        let upgrade = request_for_upstream(&mut h, version);
        assert_eq!(lines(&h), want, "{given:?} over {version:?}");
        assert_eq!(upgrade, asks, "{given:?} over {version:?}");
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
fn denied_body() {
    let r = denied_response(
        "destination not in baseline",
        ("destination", "pool:3333"),
        "default/miner",
        "enforcement",
    );
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
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

#[test]
fn a_request_dropped_unanswered_still_emits_its_record() {
    let mut registry = prometheus_client::registry::Registry::default();
    let (telemetry, mut records) = crate::telemetry::channel(&mut registry);
    let req = Request::post("/pkg.Svc/Slow").body(()).unwrap();
    let start = std::time::Instant::now();

    // Cancelled before an answer (a gRPC deadline resets the stream).
    let mut pending =
        Pending::for_request(Direction::Inbound, &req, start).armed(telemetry.clone());
    pending.record.source = "default/client".into();
    pending
        .bytes_in
        .store(7, std::sync::atomic::Ordering::Relaxed);
    drop(pending);
    let record = records
        .try_next()
        .expect("a record for the dropped request");
    assert_eq!(record.status, 0);
    assert_eq!(record.method, "POST");
    assert_eq!(record.source, "default/client");
    assert_eq!(record.bytes_in, 7);
    assert!(records.try_next().is_none(), "exactly one");

    // Answered: the record is the response's, once, not the guard's.
    let pending = Pending::for_request(Direction::Inbound, &req, start).armed(telemetry);
    let (record, _, _) = pending.settle();
    assert_eq!(record.method, "POST");
    assert!(
        records.try_next().is_none(),
        "settled: the guard is disarmed"
    );

    // Unarmed requests (tunnels answered at once) emit nothing on drop.
    drop(Pending::for_request(Direction::Inbound, &req, start));
    assert!(records.try_next().is_none());
}

mod live {
    use std::sync::Arc;
    use std::time::Duration;

    use bytes::Bytes;
    use http_body::Frame;
    use http_body_util::{BodyExt, StreamBody};
    use tokio::sync::{mpsc, watch};
    use tokio_stream::wrappers::ReceiverStream;

    use crate::http::body::{Finish, Live, ProxyBody, finishing};
    use crate::model::{Direction, Protocol, Record};
    use crate::policy::Policy;
    use crate::telemetry::{Records, channel};

    type Sender = mpsc::Sender<Result<Frame<Bytes>, hyper::Error>>;

    /// A streaming response body (unknown length) for a request to
    /// `pool.test:3333`, its frame sender, the policy and the records.
    fn streaming(policy: Policy) -> (ProxyBody, Sender, watch::Sender<Arc<Policy>>, Records) {
        let mut registry = prometheus_client::registry::Registry::default();
        let (telemetry, records) = channel(&mut registry);
        let (tx, rx) = mpsc::channel(8);
        let inner = StreamBody::new(ReceiverStream::new(rx)).boxed();
        let (policy_tx, policy_rx) = watch::channel(Arc::new(policy));
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
        };
        let live = Live::new(policy_rx, Duration::from_secs(1));
        (finishing(inner, finish, Some(live)), tx, policy_tx, records)
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
}
