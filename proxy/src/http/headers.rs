//! Header hygiene between client and upstream (RFC 9110 section 7.6.1, RFC
//! 9113 section 8.2.2): every hop-by-hop field is removed once, then the
//! proxy writes its own hop's fields: `te: trailers` when the client accepts
//! trailers (the one TE value HTTP/2 allows; the proxy passes trailers
//! through), and on an HTTP/1.1 upgrade `Upgrade` with `Connection: upgrade`,
//! each exactly once, in both directions. Also declines h2c upgrade offers,
//! and WebSocket compression, so that frames stay open to inspection.
//!
//! The functions here are pure and table-tested in `tests.rs`.

use http::Version;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::model::SOURCE_HEADER;

/// The hop-by-hop fields of RFC 9110 section 7.6.1 (plus the legacy
/// `Proxy-Connection` and the proxy-authentication fields meant for this
/// proxy). `Trailer` is not one: it names end-to-end trailer fields, and
/// hyper's HTTP/1.1 encoder sends only the trailers it names.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("proxy-connection"),
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes an HTTP/1.1 `Upgrade: h2c` offer (and its `HTTP2-Settings`), so
/// that the upstream answers in HTTP/1.1 and every later request on the
/// connection stays visible to policy and telemetry, instead of becoming an
/// opaque spliced stream after `101`. A server may always ignore the offer
/// (RFC 7540, section 3.2), and RFC 9113 deprecates it; clients that want
/// HTTP/2 without TLS use prior knowledge, which is proxied as HTTP/2.
/// Returns whether there was an offer.
pub fn decline_h2c(headers: &mut HeaderMap) -> bool {
    if !tokens(headers, &header::UPGRADE).any(|t| t.eq_ignore_ascii_case("h2c")) {
        return false;
    }
    let others: Vec<&str> = tokens(headers, &header::UPGRADE)
        .filter(|t| !t.eq_ignore_ascii_case("h2c"))
        .collect();
    let others = (!others.is_empty())
        .then(|| HeaderValue::from_str(&others.join(", ")).ok())
        .flatten();
    headers.remove(header::UPGRADE);
    headers.remove("http2-settings");
    if let Some(value) = others {
        headers.insert(header::UPGRADE, value);
    }
    true
}

/// The comma-separated elements of every `name` field, trimmed, empty ones
/// left out (RFC 9110 section 5.6.1: a list may span several lines).
/// Borrowed: nothing is allocated on a request's path to read them.
fn tokens<'a>(headers: &'a HeaderMap, name: &HeaderName) -> impl Iterator<Item = &'a str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Whether a request's `TE` accepts trailers (`te: trailers`, possibly among
/// transfer codings and with parameters).
fn accepts_trailers(headers: &HeaderMap) -> bool {
    tokens(headers, &header::TE).any(|t| {
        t.split(';')
            .next()
            .is_some_and(|c| c.trim().eq_ignore_ascii_case("trailers"))
    })
}

/// The protocols of an `Upgrade` field as one value, or `None` when there
/// are none.
fn upgrade_value(headers: &HeaderMap) -> Option<HeaderValue> {
    let mut offers = tokens(headers, &header::UPGRADE);
    let first = offers.next()?;
    match offers.next() {
        // The common case, one protocol: its value as it came.
        None => HeaderValue::from_str(first).ok(),
        Some(second) => {
            let all: Vec<&str> = [first, second].into_iter().chain(offers).collect();
            HeaderValue::from_str(&all.join(", ")).ok()
        }
    }
}

/// Removes every hop-by-hop field: `Connection`, the fields it names, and
/// the fixed list of RFC 9110 section 7.6.1.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the few fields a message has (names compared, standard
    // ones as enum tags) notes which of the fixed list are present; only
    // those are removed, each by one hashed lookup. Usually there are none
    // on a request, and only `Connection: keep-alive` on a response.
    let mut present = 0u8;
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return;
    }
    if present & 1 != 0 {
        // `Connection` (HOP_BY_HOP[0]) names more fields. Its usual
        // options (`keep-alive`, `close`, `upgrade`, `te`) are on the fixed
        // list or name no field present: a name is made and collected only
        // for a field that is there (so the Vec allocates only then).
        let named: Vec<HeaderName> = tokens(headers, &header::CONNECTION)
            .filter(|t| {
                !HOP_BY_HOP
                    .iter()
                    .any(|h| h.as_str().eq_ignore_ascii_case(t))
            })
            .filter(|t| headers.contains_key(*t))
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
}

/// Rewrites a request's fields for the upstream hop, which speaks `version`
/// (the client's): removes the client's hop-by-hop fields, then sets this
/// hop's own. `te: trailers` is kept when the client accepts trailers, on
/// HTTP/2 (gRPC servers refuse a request without it) and on HTTP/1.1 (with
/// `Connection: te`, as RFC 9110 section 10.1.4 asks). On an HTTP/1.1
/// request that asks to upgrade, `Upgrade` and `Connection: upgrade` are
/// carried exactly once. On the way out of the pod, `identity` goes as
/// `vigil-source`, written after the removal: a client that names that
/// field in `Connection` cannot have it stripped (and the callee take the
/// call for the internet's). Returns whether the request asks to upgrade.
pub fn request_for_upstream(
    headers: &mut HeaderMap,
    version: Version,
    identity: Option<HeaderValue>,
) -> bool {
    let trailers = accepts_trailers(headers);
    let upgrade = (version != Version::HTTP_2)
        .then(|| upgrade_value(headers))
        .flatten();
    strip_hop_by_hop(headers);
    if let Some(identity) = identity {
        headers.insert(SOURCE_HEADER, identity);
    }
    if trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    if version == Version::HTTP_2 {
        return false;
    }
    let connection = match (trailers, upgrade.is_some()) {
        (true, true) => Some("te, upgrade"),
        (true, false) => Some("te"),
        (false, true) => Some("upgrade"),
        (false, false) => None,
    };
    if let Some(connection) = connection {
        headers.insert(header::CONNECTION, HeaderValue::from_static(connection));
    }
    match upgrade {
        Some(upgrade) => {
            if upgrade
                .to_str()
                .is_ok_and(|u| u.to_ascii_lowercase().contains("websocket"))
            {
                // Compressed frames (permessage-deflate) could not be
                // inspected for mining: offer none, and the stream stays
                // plain (every WebSocket peer must cope without).
                headers.remove(header::SEC_WEBSOCKET_EXTENSIONS);
            }
            headers.insert(header::UPGRADE, upgrade);
            true
        }
        None => false,
    }
}

/// Rewrites a response's fields for the client: removes the upstream's
/// hop-by-hop fields; on a `101` that completes an upgrade (`upgraded`),
/// carries `Upgrade` and `Connection: upgrade` exactly once.
pub fn response_for_client(headers: &mut HeaderMap, upgraded: bool) {
    let upgrade = upgraded.then(|| upgrade_value(headers)).flatten();
    strip_hop_by_hop(headers);
    if let Some(upgrade) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, upgrade);
    }
}
