//! HTTP forwarding: the upstream request (header hygiene, pooled clients,
//! HTTP/2 kept HTTP/2), upgrades handed to [`crate::stream`] after `101`, and
//! the two sides' request handlers (`outbound`, `inbound`).
//!
//! Data-path tier: uses `context`, `body`, `policy`, `destination`,
//! `template`, `resolve`, `stream`, `tcp` (for `CONNECT`) and `telemetry`;
//! never `control` or `admin`.

mod headers;
pub mod inbound;
pub mod outbound;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

pub use headers::{decline_h2c, request_for_upstream, response_for_client, strip_hop_by_hop};

use crate::body::{CountingBody, ProxyBody};
use crate::context::{DecisionLabel, Pending, Shared, unavailable_response};
use crate::destination::Judge;
use crate::model::Record;
use crate::stream::{Inspect, LiveRecord, Stream};

impl Shared {
    /// Runs an upgraded connection (after `101`) as a live stream: reported
    /// while open, judged again on policy changes, and, for WebSocket,
    /// inspected inside its frames. Its opening request was counted already.
    fn spawn_upgraded(
        &self,
        client: hyper::upgrade::OnUpgrade,
        server: hyper::upgrade::OnUpgrade,
        request: &Record,
        websocket: bool,
    ) {
        let mut record = request.clone();
        record.status = StatusCode::SWITCHING_PROTOCOLS.as_u16();
        let stream = Stream {
            judge: Judge::of_record(&record),
            live: LiveRecord::counted(record),
            inspect: if websocket {
                Inspect::WebSocket
            } else {
                Inspect::Raw
            },
            start: Instant::now(),
        };
        let ctx = self.stream_context();
        tokio::spawn(async move {
            match tokio::try_join!(client, server) {
                Ok((client, server)) => {
                    let (client, server) = (TokioIo::new(client), TokioIo::new(server));
                    crate::stream::pipe(&ctx, client, server, stream, |_| {}).await;
                }
                Err(e) => tracing::debug!(error = %e, "upgrade failed"),
            }
        });
    }

    /// Sends `req` to `addr` (see [`Shared::send`]) and answers with the
    /// upstream's response, or a 502 naming `destination` when it fails.
    /// `hop` is what this hop adds (on the way out, our identity).
    pub async fn forward(
        &self,
        req: Request<Incoming>,
        addr: SocketAddr,
        destination: &str,
        hop: Hop,
        pending: Pending,
    ) -> Response<ProxyBody> {
        match self.send(req, addr, destination, hop, &pending).await {
            Ok(response) => {
                let status = response.status().as_u16();
                self.respond(pending, response, DecisionLabel::allow, status)
            }
            Err(e) => {
                if let Some(reason) = crate::body::RequestBodyError::cut_in(&e) {
                    let mode = self.policy.borrow().mode.clone();
                    let about = ("destination", destination);
                    let response =
                        crate::context::denied_response(reason, about, self.workload(), &mode);
                    return self.respond(pending, response, DecisionLabel::deny, 403);
                }
                tracing::debug!(%destination, %addr, error = %e, "upstream request failed");
                let response = unavailable_response(destination, &outbound::error_chain(&e));
                self.respond(pending, response, DecisionLabel::error, 0)
            }
        }
    }

    /// Sends `req` to `addr` through a pooled client: rewrites the URI to
    /// `http://addr/path?query`, keeps (or sets) Host to `host`, strips
    /// hop-by-hop headers and counts the request body. HTTP/2 goes out as
    /// HTTP/2 (trailers and streaming kept); an HTTP/1.1 upgrade (WebSocket)
    /// is passed through and, on `101`, spliced byte for byte. An h2c
    /// upgrade offer is declined (see [`decline_h2c`]).
    pub async fn send(
        &self,
        mut req: Request<Incoming>,
        addr: SocketAddr,
        host: &str,
        hop: Hop,
        pending: &Pending,
    ) -> Result<Response<BoxBody<Bytes, hyper::Error>>, hyper_util::client::legacy::Error> {
        let h2 = req.version() == http::Version::HTTP_2;
        decline_h2c(req.headers_mut());
        let (mut parts, body) = req.into_parts();
        let version = if h2 {
            http::Version::HTTP_2
        } else {
            http::Version::HTTP_11
        };
        let identity = match hop {
            Hop::Outbound { source } => Some(source),
            Hop::Inbound => None,
        };
        // Outbound request bodies are scanned for mining calls.
        let scan = identity.is_some().then_some(&self.telemetry);
        let upgrade = request_for_upstream(&mut parts.headers, version, identity);
        // The client's side of an upgrade, claimed before the request moves on.
        let client_side = upgrade
            .then(|| parts.extensions.remove::<hyper::upgrade::OnUpgrade>())
            .flatten();
        parts.uri = upstream_uri(std::mem::take(&mut parts.uri), addr);
        parts.version = version;
        if h2 {
            // HTTP/2 names its site in `:authority`, which was judged; a
            // `host` field beside it names another one for the servers that
            // read it (RFC 9113, section 8.3.1), unjudged.
            parts.headers.remove(header::HOST);
        } else if !parts.headers.contains_key(header::HOST)
            && let Ok(value) = HeaderValue::from_str(host)
        {
            parts.headers.insert(header::HOST, value);
        }
        let body = crate::body::RequestBody::judged(
            body,
            &pending.record,
            &self.policy,
            pending.judged_by.as_ref(),
            self.report_interval,
            scan,
        );
        let body = CountingBody::new(body, pending.bytes_in.clone());
        let client = if h2 {
            &self.client.http2
        } else {
            &self.client.http1
        };
        let mut response = client.request(Request::from_parts(parts, body)).await?;
        let upgraded = response.status() == StatusCode::SWITCHING_PROTOCOLS;
        match client_side {
            Some(client_side) if upgraded => {
                let server_side = hyper::upgrade::on(&mut response);
                let websocket = is_websocket(response.headers());
                response_for_client(response.headers_mut(), true);
                self.spawn_upgraded(client_side, server_side, &pending.record, websocket);
            }
            _ => response_for_client(response.headers_mut(), false),
        }
        Ok(response.map(BodyExt::boxed))
    }
}

/// The URI a request goes upstream with: `http://addr` and the request's
/// path and query (`/` when it has none), which the pooled client picks its
/// connection by. Built from parts: the path is moved, not formatted into a
/// string and parsed again. Should an address not make an authority, the
/// URI is `/`, which the client refuses: the request fails with a 502, and
/// nothing panics on a request's path.
fn upstream_uri(uri: Uri, addr: SocketAddr) -> Uri {
    let Some(authority) = authority_of(addr) else {
        return Uri::from_static("/");
    };
    let mut parts = uri.into_parts();
    parts.path_and_query = Some(match parts.path_and_query.take() {
        Some(p) if p.as_str().starts_with('/') || p.as_str() == "*" => p,
        // An absolute-form target with a query but no path (`http://a?q`).
        Some(p) if !p.as_str().is_empty() => PathAndQuery::try_from(format!("/{}", p.as_str()))
            .unwrap_or_else(|_| PathAndQuery::from_static("/")),
        _ => PathAndQuery::from_static("/"),
    });
    parts.scheme = Some(Scheme::HTTP);
    parts.authority = Some(authority);
    Uri::from_parts(parts).unwrap_or_else(|_| Uri::from_static("/"))
}

/// `addr` as a URI authority (`1.2.3.4:80`, `[::1]:80`). An IPv4 address is
/// written digit by digit: `Display` for socket addresses handles width and
/// padding, and took 2.8% of the sidecar's instructions per request.
fn authority_of(addr: SocketAddr) -> Option<Authority> {
    let SocketAddr::V4(v4) = addr else {
        return Authority::try_from(addr.to_string()).ok();
    };
    let mut text = Text::default();
    for (i, octet) in v4.ip().octets().into_iter().enumerate() {
        if i > 0 {
            text.push(b'.');
        }
        text.number(octet.into());
    }
    text.push(b':');
    text.number(v4.port());
    Authority::from_maybe_shared(Bytes::copy_from_slice(text.as_bytes())).ok()
}

/// Room for `255.255.255.255:65535`.
#[derive(Default)]
struct Text {
    buf: [u8; 21],
    len: usize,
}

impl Text {
    fn push(&mut self, byte: u8) {
        self.buf[self.len] = byte;
        self.len += 1;
    }

    fn number(&mut self, mut n: u16) {
        let mut digits = [0u8; 5];
        let mut first = digits.len();
        loop {
            first -= 1;
            digits[first] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        for &digit in &digits[first..] {
            self.push(digit);
        }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// What the sidecar adds to a request on its own hop, after the client's
/// hop-by-hop fields are gone.
#[derive(Clone, Debug)]
pub enum Hop {
    /// To the local app: nothing (the caller's claim was checked and
    /// removed).
    Inbound,
    /// Out of the pod: our identity, `vigil-source`, whatever the client
    /// sent in its place.
    Outbound {
        /// The `namespace/workload` value.
        source: HeaderValue,
    },
}

/// Whether a `101` switched to WebSocket.
fn is_websocket(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case("websocket"))
}
