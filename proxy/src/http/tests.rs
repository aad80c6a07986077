use super::*;
use http::header::{HeaderMap, HeaderName};

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

#[test]
fn an_h2c_upgrade_offer_is_declined_and_others_kept() {
    let headers = |pairs: &[(&str, &str)]| {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    };
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
