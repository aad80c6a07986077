//! Who may make a request: the one access decision for the JSON API, the
//! live stream and the web pages.
//!
//! A request is let in by a bearer token (`vigilctl`: the admin or the
//! viewer token) or by a session cookie (a browser). A cookie is ambient (the
//! browser attaches it by itself), so a cookie request must also be
//! same-origin (`Sec-Fetch-Site`, `Origin` against `Host`) and, when it
//! changes anything, carry the session's CSRF token in `X-CSRF-Token`.
//! `SameSite=Strict` alone is not enough: another port on the same host (a
//! notebook server, say) is the same *site*. Viewers only read.

use std::sync::Arc;
use std::time::Instant;

use http::{HeaderMap, Method, StatusCode, header};

use super::session::{Role, Session, Sessions, is_safe, session_cookie};
use crate::token::{bearer, constant_time_eq};

/// Header that carries the session's CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The two tokens of the HTTP API.
#[derive(Clone, Debug)]
pub struct Tokens {
    admin: Arc<str>,
    viewer: Arc<str>,
}

impl Tokens {
    /// The admin token (`<data-dir>/admin.token`) and the read-only viewer
    /// token (`<data-dir>/viewer.token`).
    pub fn new(admin: &str, viewer: &str) -> Self {
        Self {
            admin: admin.into(),
            viewer: viewer.into(),
        }
    }

    /// The role `presented` gives, comparing against both tokens in
    /// constant time.
    pub fn role_of(&self, presented: &str) -> Option<Role> {
        let admin = constant_time_eq(presented.as_bytes(), self.admin.as_bytes());
        let viewer = constant_time_eq(presented.as_bytes(), self.viewer.as_bytes());
        match (admin, viewer) {
            (true, _) => Some(Role::Admin),
            (false, true) => Some(Role::Viewer),
            (false, false) => None,
        }
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Neither a bearer token nor a session cookie.
    #[error("missing Authorization: Bearer <token> header")]
    Missing,
    /// A bearer token that is neither the admin nor the viewer token.
    #[error("the bearer token is wrong")]
    WrongToken,
    /// A session cookie that names no live session.
    #[error("the session has expired or was signed out: sign in again")]
    NoSession,
    /// A cookie request from another origin.
    #[error("cross-origin request refused")]
    CrossSite,
    /// A state-changing cookie request without the session's CSRF token.
    #[error("missing or wrong X-CSRF-Token header")]
    Csrf,
    /// A viewer tried to change something.
    #[error("the viewer token is read-only: use the admin token to change anything")]
    ReadOnly,
}

impl Refusal {
    /// The HTTP status to answer with.
    pub fn status(self) -> StatusCode {
        match self {
            Self::Missing | Self::WrongToken | Self::NoSession => StatusCode::UNAUTHORIZED,
            Self::CrossSite | Self::Csrf | Self::ReadOnly => StatusCode::FORBIDDEN,
        }
    }
}

/// A request let in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Granted {
    /// What it may do.
    pub role: Role,
    /// The session (id and state) when it came with a cookie.
    pub session: Option<(String, Session)>,
}

fn header_str(headers: &HeaderMap, name: impl header::AsHeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Whether a browser request comes from our own origin: `Sec-Fetch-Site`
/// when the browser sends it (`same-origin`, or `none` for a navigation the
/// user typed, on reads only), and `Origin`, when present, naming `Host`.
pub fn same_origin(method: &Method, headers: &HeaderMap) -> bool {
    if let Some(site) = header_str(headers, "sec-fetch-site") {
        let ok = site == "same-origin" || (site == "none" && is_safe(method));
        if !ok {
            return false;
        }
    }
    match headers.get(header::ORIGIN) {
        None => true,
        Some(origin) => {
            let (Ok(origin), Some(host)) = (origin.to_str(), header_str(headers, header::HOST))
            else {
                return false;
            };
            origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"))
                .is_some_and(|authority| authority.eq_ignore_ascii_case(host))
        }
    }
}

/// The access decision. `now` is the clock for session expiry.
pub fn authorize(
    tokens: &Tokens,
    sessions: &Sessions,
    method: &Method,
    headers: &HeaderMap,
    now: Instant,
) -> Result<Granted, Refusal> {
    let presented = header_str(headers, header::AUTHORIZATION).and_then(bearer);
    if let Some(token) = presented {
        let role = tokens.role_of(token).ok_or(Refusal::WrongToken)?;
        if !role.may(method) {
            return Err(Refusal::ReadOnly);
        }
        return Ok(Granted {
            role,
            session: None,
        });
    }
    let id = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(session_cookie)
        .ok_or(Refusal::Missing)?;
    let session = sessions.get(id, now).ok_or(Refusal::NoSession)?;
    if !same_origin(method, headers) {
        return Err(Refusal::CrossSite);
    }
    if !is_safe(method) {
        let csrf = header_str(headers, CSRF_HEADER).unwrap_or("");
        if !constant_time_eq(csrf.as_bytes(), session.csrf.as_bytes()) {
            return Err(Refusal::Csrf);
        }
    }
    if !session.role.may(method) {
        return Err(Refusal::ReadOnly);
    }
    Ok(Granted {
        role: session.role,
        session: Some((id.to_owned(), session)),
    })
}

/// Whether the page was served over TLS, as a TLS-terminating proxy in front
/// tells (`X-Forwarded-Proto: https`, `Forwarded: proto=https`): then the
/// cookie is `Secure`. Believing a forged header only makes the cookie
/// stricter.
pub fn over_tls(headers: &HeaderMap) -> bool {
    let forwarded_proto = header_str(headers, "x-forwarded-proto")
        .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"));
    let forwarded = header_str(headers, header::FORWARDED).is_some_and(|f| {
        f.split([';', ','])
            .any(|part| part.trim().eq_ignore_ascii_case("proto=https"))
    });
    forwarded_proto || forwarded
}

#[cfg(test)]
#[path = "guard_tests.rs"]
mod tests;
