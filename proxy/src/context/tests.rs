use http::{Request, StatusCode, header};

use super::*;

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
