use super::*;

#[test]
fn strips_hop_by_hop() {
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("connection", "keep-alive, x-secret"),
        ("x-secret", "1"),
        ("keep-alive", "timeout=5"),
        ("proxy-connection", "keep-alive"),
        ("proxy-authorization", "Basic x"),
        ("te", "trailers"),
        ("trailer", "x"),
        ("transfer-encoding", "chunked"),
        ("upgrade", "websocket"),
        ("host", "api:80"),
        ("accept", "*/*"),
    ] {
        h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
    }
    strip_hop_by_hop(&mut h);
    let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
    left.sort();
    assert_eq!(left, vec!["accept", "host"]);
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
