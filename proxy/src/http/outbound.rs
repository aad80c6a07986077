//! The outbound side: the workload's requests, either as an explicit HTTP
//! proxy (absolute-form, `CONNECT`) or as an iptables redirect target
//! (origin-form plus the socket's original destination).
//!
//! `classify` decides what a request is (pure, table-tested); `serve` does it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::uri::Authority;
use http::{Method, Request, Response, StatusCode, Uri, header};
use hyper::body::Incoming;
use serde_json::json;

use crate::body::ProxyBody;
use crate::context::{DecisionLabel, Pending, Shared, denied_response, json_response};
use crate::destination::{self, Claim};
use crate::model::Direction;
use crate::policy::Decision;
use crate::resolve::Lookup;

use super::Hop;

/// What an outbound request asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// `CONNECT host:port`: an opaque tunnel.
    Connect {
        /// Lower-case host.
        host: String,
        /// Port.
        port: u16,
    },
    /// Forward an HTTP request.
    Forward {
        /// Lower-case host (as named by the client).
        host: String,
        /// Port.
        port: u16,
        /// Already known destination (transparent redirect), no resolution.
        resolved: Option<SocketAddr>,
    },
    /// Refuse it with a 400.
    Reject(Reject),
}

/// Why an outbound request is refused before policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reject {
    /// `https://` absolute-form: the client must use CONNECT.
    HttpsAbsolute,
    /// Origin-form on a connection that was not redirected.
    NotProxy,
    /// The target authority is missing or malformed.
    BadAuthority,
    /// More than one `Host`, or one that is not visible text (RFC 9112,
    /// section 3.2: a 400). Taking the first, or none, judged a name other
    /// than the one a server might read.
    BadHost,
}

/// The request's one `Host` (none: `Ok(None)`), or `Err` when it has
/// several or one that is not visible ASCII.
pub fn one_host(headers: &http::HeaderMap) -> Result<Option<&str>, Reject> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let (first, second) = (hosts.next(), hosts.next());
    match (first, second) {
        (None, _) => Ok(None),
        (Some(_), Some(_)) => Err(Reject::BadHost),
        (Some(host), None) => host.to_str().map(Some).map_err(|_| Reject::BadHost),
    }
}

/// Decides what an outbound request is. `original_dst` is the redirected
/// destination of the connection, `None` when it was not redirected.
/// HTTP/2 requests always carry `:scheme` and `:authority`; on a redirected
/// connection they go to the original destination.
pub fn classify(
    method: &Method,
    uri: &Uri,
    host: Option<&str>,
    original_dst: Option<SocketAddr>,
    version: http::Version,
) -> Target {
    let split = |a: &Authority, default_port: u16| {
        (
            a.host().to_ascii_lowercase(),
            a.port_u16().unwrap_or(default_port),
        )
    };
    if method == Method::CONNECT {
        return match uri.authority() {
            Some(a) => {
                let (host, port) = split(a, 443);
                Target::Connect { host, port }
            }
            None => Target::Reject(Reject::BadAuthority),
        };
    }
    let redirected_h2 = version == http::Version::HTTP_2 && original_dst.is_some();
    match (uri.scheme_str(), uri.authority()) {
        (Some("http"), Some(a)) => {
            let (host, port) = split(a, 80);
            Target::Forward {
                host,
                port,
                resolved: original_dst.filter(|_| redirected_h2),
            }
        }
        (Some("https"), _) => Target::Reject(Reject::HttpsAbsolute),
        (Some(_), _) => Target::Reject(Reject::BadAuthority),
        (None, _) => match original_dst {
            None => Target::Reject(Reject::NotProxy),
            Some(dst) => match host.map(str::parse::<Authority>) {
                Some(Ok(a)) => {
                    let (host, port) = split(&a, 80);
                    Target::Forward {
                        host,
                        port,
                        resolved: Some(dst),
                    }
                }
                Some(Err(_)) => Target::Reject(Reject::BadAuthority),
                None => Target::Forward {
                    // `[ip]` for IPv6, so that `host:port` stays one name.
                    host: match dst {
                        SocketAddr::V4(v4) => v4.ip().to_string(),
                        SocketAddr::V6(v6) => format!("[{}]", v6.ip()),
                    },
                    port: dst.port(),
                    resolved: Some(dst),
                },
            },
        },
    }
}

fn reject_response(
    reject: Reject,
) -> Response<http_body_util::combinators::BoxBody<bytes::Bytes, hyper::Error>> {
    let detail = match reject {
        Reject::HttpsAbsolute => {
            "https:// URLs must be tunnelled: use CONNECT (curl -x / HTTPS_PROXY)"
        }
        Reject::NotProxy => {
            "this is vigil-proxy's outbound listener: use it as an HTTP proxy (curl -x, HTTP_PROXY) or redirect traffic to it with iptables"
        }
        Reject::BadAuthority => "the request target has no valid host:port",
        Reject::BadHost => "a request has one Host, in visible ASCII",
    };
    let error = match reject {
        Reject::NotProxy => "not a proxy request",
        _ => "bad proxy request",
    };
    json_response(
        StatusCode::BAD_REQUEST,
        json!({"error": error, "detail": detail}),
    )
}

/// Handles one outbound request on a connection whose redirected
/// destination is `original_dst`.
pub async fn serve(
    shared: Arc<Shared>,
    original_dst: Option<SocketAddr>,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, std::convert::Infallible> {
    let start = Instant::now();
    let target = match one_host(req.headers()) {
        Ok(host) => classify(req.method(), req.uri(), host, original_dst, req.version()),
        Err(reject) => Target::Reject(reject),
    };
    let (host, port, resolved) = match target {
        Target::Reject(reject) => {
            return Ok(shared.reject(Direction::Outbound, start, reject_response(reject)));
        }
        Target::Connect { host, port } => {
            return Ok(crate::tcp::connect(shared, req, host, port).await);
        }
        Target::Forward {
            host,
            port,
            resolved,
        } => (host, port, resolved),
    };
    let pending = shared.track(Pending::for_request(Direction::Outbound, &req, start));
    match resolved {
        Some(dst) => Ok(redirected(shared, req, pending, &host, port, dst).await),
        None => Ok(named(shared, req, pending, &host, port).await),
    }
}

/// An explicit-proxy request: judged by the name it gives, and sent to
/// where the sidecar resolves that name, so the name is the destination.
async fn named(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    pending: Pending,
    host: &str,
    port: u16,
) -> Response<ProxyBody> {
    match shared.judge_named(pending, host, port).await {
        Ok((addr, pending)) => {
            let authority = pending.record.authority.clone();
            let mut req = req;
            let version = req.version();
            name_the_judged_host(req.headers_mut(), version, &authority);
            send(&shared, req, addr, &authority, pending).await
        }
        Err(refused) => refused,
    }
}

/// An explicit-proxy request goes to the host its target names, so that
/// is the `Host` it carries (RFC 9112, 3.2.2: a proxy replaces the `Host`
/// of an absolute-form request with the target's). Kept, a client's own
/// `Host` would pick another site on the judged name's server (a shared
/// CDN address serves both `pypi.org` and `attacker.example`) while the
/// judgement and the record say `pypi.org`. On HTTP/2 a client's `host`
/// field is removed: the request's authority is the target's.
fn name_the_judged_host(headers: &mut http::HeaderMap, version: http::Version, authority: &str) {
    if version == http::Version::HTTP_2 {
        headers.remove(header::HOST);
    } else if let Ok(value) = http::HeaderValue::from_str(authority) {
        headers.insert(header::HOST, value);
    } else {
        headers.remove(header::HOST);
    }
}

/// A redirected request, which goes to the address the client connected
/// to (`dst`) whatever it says: its `Host` (or `:authority`) is believed
/// only when `dst` is an address that name resolves to (see
/// [`crate::destination`]); each request on the connection is checked.
async fn redirected(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    mut pending: Pending,
    host: &str,
    port: u16,
    dst: SocketAddr,
) -> Response<ProxyBody> {
    let claim = Claim {
        host,
        port: Some(port),
    };
    let policy = shared.current_policy().await;
    let resolved = match claim.ip() {
        Some(_) => Arc::from([]),
        None => {
            let lookup = Lookup::allowed_if(crate::policy::may_look_up(&policy, host));
            (shared.resolver)
                .addresses_reaching(host, dst.ip(), lookup)
                .await
        }
    };
    let judged = destination::judge(Some(claim), dst, &resolved);
    let decision = judged.judge(dst).decide(&policy, pending.record.protocol);
    pending.record.authority = judged.authority.clone();
    pending.record.resolved = Some(dst);
    if let Some(claimed) = judged.mismatch {
        tracing::info!(%claimed, %dst, "a request named a destination it does not go to; judged by its address");
        pending.record.claimed_authority = claimed;
    }
    if let Decision::Deny { reason } = decision {
        return deny(&shared, pending, reason, &judged.authority, &policy.mode);
    }
    pending.judged_by = Some(policy);
    send(&shared, req, dst, &judged.authority, pending).await
}

fn deny(
    shared: &Shared,
    pending: Pending,
    reason: &str,
    authority: &str,
    mode: &str,
) -> Response<ProxyBody> {
    let response = denied_response(reason, ("destination", authority), shared.workload(), mode);
    shared.respond(pending, response, DecisionLabel::deny, 403)
}

/// Sends the request on with our `vigil-source` (set after the client's
/// hop-by-hop fields are removed: see [`Hop`]).
async fn send(
    shared: &Shared,
    req: Request<Incoming>,
    addr: SocketAddr,
    authority: &str,
    pending: Pending,
) -> Response<ProxyBody> {
    let hop = Hop::Outbound {
        source: shared.source.clone(),
    };
    shared.forward(req, addr, authority, hop, pending).await
}

/// An error and its sources, joined with `: `.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    type Case = (
        Method,
        &'static str,
        Option<&'static str>,
        Option<SocketAddr>,
        Target,
    );

    /// The judged name replaces whatever `Host` the client sent, however
    /// many; on HTTP/2 no `host` field goes on.
    #[test]
    fn an_explicit_proxy_request_carries_the_judged_host() {
        let cases = [
            (
                http::Version::HTTP_11,
                vec!["attacker.example"],
                Some("pypi.org:80"),
            ),
            (http::Version::HTTP_11, vec![], Some("pypi.org:80")),
            (
                http::Version::HTTP_11,
                vec!["attacker.example", "pypi.org:80"],
                Some("pypi.org:80"),
            ),
            (
                http::Version::HTTP_10,
                vec!["attacker.example"],
                Some("pypi.org:80"),
            ),
            (http::Version::HTTP_2, vec!["attacker.example"], None),
        ];
        for (version, sent, want) in cases {
            let mut headers = http::HeaderMap::new();
            for host in &sent {
                headers.append(header::HOST, host.parse().unwrap());
            }
            name_the_judged_host(&mut headers, version, "pypi.org:80");
            let got: Vec<_> = headers.get_all(header::HOST).iter().collect();
            assert_eq!(
                got,
                want.into_iter().collect::<Vec<_>>(),
                "{version:?} {sent:?}"
            );
        }
    }

    #[test]
    fn a_request_has_one_host_in_visible_ascii() {
        let headers = |values: &[&[u8]]| {
            let mut map = http::HeaderMap::new();
            for v in values {
                map.append(header::HOST, http::HeaderValue::from_bytes(v).unwrap());
            }
            map
        };
        let none: &[&[u8]] = &[];
        let cases = [
            (none, Ok(None)),
            (&[b"pypi.org"], Ok(Some("pypi.org"))),
            (&[b"pypi.org", b"pool.example"], Err(Reject::BadHost)),
            (&[b"pool.example\x80"], Err(Reject::BadHost)),
            (&[b"\xffx", b"pypi.org"], Err(Reject::BadHost)),
        ];
        for (values, want) in cases {
            assert_eq!(one_host(&headers(values)), want, "{values:?}");
        }
    }

    #[test]
    fn classifies() {
        let dst: SocketAddr = "10.0.0.9:8080".parse().unwrap();
        let dst6: SocketAddr = "[fd66::2]:8000".parse().unwrap();
        let fwd = |h: &str, p: u16, r: Option<SocketAddr>| Target::Forward {
            host: h.into(),
            port: p,
            resolved: r,
        };
        let cases: Vec<Case> = vec![
            (
                Method::GET,
                "http://API.example.com/x?y",
                None,
                None,
                fwd("api.example.com", 80, None),
            ),
            (
                Method::GET,
                "http://api:8080/x",
                Some("other"),
                Some(dst),
                fwd("api", 8080, None),
            ),
            (
                Method::GET,
                "https://api/x",
                None,
                None,
                Target::Reject(Reject::HttpsAbsolute),
            ),
            (
                Method::GET,
                "ftp://api/x",
                None,
                None,
                Target::Reject(Reject::BadAuthority),
            ),
            (
                Method::CONNECT,
                "api:443",
                None,
                None,
                Target::Connect {
                    host: "api".into(),
                    port: 443,
                },
            ),
            (
                Method::CONNECT,
                "pool.example.com:3333",
                None,
                None,
                Target::Connect {
                    host: "pool.example.com".into(),
                    port: 3333,
                },
            ),
            (
                Method::GET,
                "/x",
                Some("api"),
                None,
                Target::Reject(Reject::NotProxy),
            ),
            (
                Method::GET,
                "/x",
                Some("api"),
                Some(dst),
                fwd("api", 80, Some(dst)),
            ),
            (
                Method::GET,
                "/x",
                Some("api:9000"),
                Some(dst),
                fwd("api", 9000, Some(dst)),
            ),
            (
                Method::GET,
                "/x",
                None,
                Some(dst),
                fwd("10.0.0.9", 8080, Some(dst)),
            ),
            (
                Method::GET,
                "/x",
                None,
                Some(dst6),
                fwd("[fd66::2]", 8000, Some(dst6)),
            ),
            (
                Method::GET,
                "/x",
                Some("[fd66::2]:8000"),
                Some(dst6),
                fwd("[fd66::2]", 8000, Some(dst6)),
            ),
            (
                Method::GET,
                "/x",
                Some("bad host"),
                Some(dst),
                Target::Reject(Reject::BadAuthority),
            ),
        ];
        for (method, uri, host, dst, want) in cases {
            let uri: Uri = uri.parse().unwrap();
            let v1 = http::Version::HTTP_11;
            assert_eq!(
                classify(&method, &uri, host, dst, v1),
                want,
                "{method} {uri}"
            );
        }
        // HTTP/2 on a redirected connection goes to the original destination;
        // to an explicit proxy, to the named authority.
        let uri: Uri = "http://api:8080/pkg.Svc/Call".parse().unwrap();
        let h2 = http::Version::HTTP_2;
        assert_eq!(
            classify(&Method::POST, &uri, None, Some(dst), h2),
            fwd("api", 8080, Some(dst))
        );
        assert_eq!(
            classify(&Method::POST, &uri, None, None, h2),
            fwd("api", 8080, None)
        );
    }
}
