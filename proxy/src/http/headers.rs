//! Header hygiene between client and upstream: hop-by-hop headers, the
//! end-to-end headers an HTTP/1.1 upgrade needs, splicing an upgraded
//! connection, and declining h2c upgrade offers.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Removes an HTTP/1.1 `Upgrade: h2c` offer (and its `HTTP2-Settings`), so
/// that the upstream answers in HTTP/1.1 and every later request on the
/// connection stays visible to policy and telemetry, instead of becoming an
/// opaque spliced stream after `101`. A server may always ignore the offer
/// (RFC 7540, section 3.2), and RFC 9113 deprecates it; clients that want
/// HTTP/2 without TLS use prior knowledge, which is proxied as HTTP/2.
/// Returns whether there was an offer.
pub fn decline_h2c(headers: &mut HeaderMap) -> bool {
    let h2c = headers
        .get_all(header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("h2c"));
    if h2c {
        let others: Vec<HeaderValue> = headers
            .get_all(header::UPGRADE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|t| !t.is_empty() && !t.eq_ignore_ascii_case("h2c"))
            .filter_map(|t| HeaderValue::from_str(t).ok())
            .collect();
        headers.remove(header::UPGRADE);
        headers.remove("http2-settings");
        for other in others {
            headers.append(header::UPGRADE, other);
        }
    }
    h2c
}

/// The headers an upgrade needs end to end: `Connection`, `Upgrade` and the
/// headers `Connection` names (e.g. `HTTP2-Settings` for h2c).
pub(super) fn upgrade_headers(headers: &HeaderMap) -> HeaderMap {
    let mut kept = HeaderMap::new();
    for name in connection_named(headers)
        .into_iter()
        .chain([header::CONNECTION, header::UPGRADE])
    {
        for value in headers.get_all(&name) {
            kept.append(name.clone(), value.clone());
        }
    }
    kept
}

/// Copies bytes both ways between the two sides of an upgraded connection.
pub(super) async fn splice(client: hyper::upgrade::OnUpgrade, server: hyper::upgrade::OnUpgrade) {
    match tokio::try_join!(client, server) {
        Ok((client, server)) => {
            let mut client = hyper_util::rt::TokioIo::new(client);
            let mut server = hyper_util::rt::TokioIo::new(server);
            if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut server).await {
                tracing::debug!(error = %e, "upgraded connection ended");
            }
        }
        Err(e) => tracing::debug!(error = %e, "upgrade failed"),
    }
}

fn connection_named(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect()
}

/// Removes hop-by-hop headers: `Connection` and the headers it names, and
/// the fixed list of RFC 9110 (plus `Proxy-Connection`).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    for name in connection_named(headers) {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        HeaderName::from_static("proxy-connection"),
        HeaderName::from_static("keep-alive"),
        header::PROXY_AUTHORIZATION,
        header::PROXY_AUTHENTICATE,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
}
