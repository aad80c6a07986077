//! The web view's pages: sign-in and sign-out, the graph page, the session
//! info its script needs, and the static assets embedded in the binary
//! (`controller/web/`, with Cytoscape.js vendored from its npm package).

use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::Web;
use super::guard::{Refusal, over_tls, same_origin};
use super::session::{clear_cookie, set_cookie};

const INDEX_HTML: &str = include_str!("../../web/index.html");
const LOGIN_HTML: &str = include_str!("../../web/login.html");
const APP_JS: &str = include_str!("../../web/app.js");
const APP_CSS: &str = include_str!("../../web/app.css");
const CYTOSCAPE_JS: &str = include_str!("../../web/vendor/cytoscape.min.js");

/// Where the login page shows its message.
const MESSAGE_SLOT: &str = "<!--message-->";

fn see_other(to: &'static str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response()
}

fn login_page(status: StatusCode, message: &str) -> Response {
    let html = if message.is_empty() {
        LOGIN_HTML.to_owned()
    } else {
        // Fixed messages only: nothing the client sent is echoed.
        LOGIN_HTML.replace(
            MESSAGE_SLOT,
            &format!("<p class=\"error\" role=\"alert\">{message}</p>"),
        )
    };
    html_response(status, html)
}

fn html_response(status: StatusCode, html: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        html,
    )
        .into_response()
}

/// `GET /login`: the sign-in form (or the graph, when signed in already).
pub async fn login_form(State(web): State<Web>, headers: HeaderMap) -> Response {
    if web.authorize(&Method::GET, &headers).is_ok() {
        return see_other("/");
    }
    login_page(StatusCode::OK, "")
}

/// `POST /login` with the form field `token`: a session for the admin or
/// the viewer token, in a cookie, then the graph.
pub async fn login(State(web): State<Web>, headers: HeaderMap, body: Bytes) -> Response {
    if !same_origin(&Method::POST, &headers) {
        return login_page(
            StatusCode::FORBIDDEN,
            "Sign-in refused: the form was sent from another site.",
        );
    }
    let Some(token) = form_field(&body, "token") else {
        return login_page(StatusCode::BAD_REQUEST, "Enter a token.");
    };
    let Some(role) = web.tokens.role_of(token.trim()) else {
        tracing::warn!("web sign-in with a wrong token");
        return login_page(
            StatusCode::UNAUTHORIZED,
            "That token is wrong: use the one in &lt;data-dir&gt;/admin.token or viewer.token.",
        );
    };
    let (id, _) = web.sessions.create(role, Instant::now());
    tracing::info!(role = ?role, "web sign-in");
    let cookie = set_cookie(&id, web.sessions.ttl(), over_tls(&headers));
    let mut response = see_other("/");
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// `POST /logout` (with the CSRF header): ends the session.
pub async fn logout(State(web): State<Web>, headers: HeaderMap) -> Response {
    match web.authorize(&Method::POST, &headers) {
        Ok(granted) => {
            if let Some((id, _)) = granted.session {
                web.sessions.remove(&id);
            }
            let mut response = StatusCode::NO_CONTENT.into_response();
            if let Ok(value) = HeaderValue::from_str(&clear_cookie(over_tls(&headers))) {
                response.headers_mut().insert(header::SET_COOKIE, value);
            }
            response
        }
        Err(refusal) => refused(refusal),
    }
}

/// A refusal as a small JSON error.
pub fn refused(refusal: Refusal) -> Response {
    (
        refusal.status(),
        Json(json!({ "error": refusal.to_string() })),
    )
        .into_response()
}

/// `GET /`: the graph page, or the sign-in form without a session.
pub async fn index(State(web): State<Web>, headers: HeaderMap) -> Response {
    match web.authorize(&Method::GET, &headers) {
        Ok(_) => html_response(StatusCode::OK, INDEX_HTML.to_owned()),
        Err(Refusal::Missing | Refusal::NoSession | Refusal::WrongToken) => see_other("/login"),
        Err(refusal) => refused(refusal),
    }
}

/// `GET /ui/session`: the role and the CSRF token the page's script sends
/// with changes.
pub async fn session(State(web): State<Web>, headers: HeaderMap) -> Response {
    match web.authorize(&Method::GET, &headers) {
        Ok(granted) => Json(json!({
            "role": granted.role,
            "csrf": granted.session.map(|(_, s)| s.csrf),
        }))
        .into_response(),
        Err(refusal) => refused(refusal),
    }
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// `GET /assets/app.css`: styles (no data; the sign-in page uses them).
pub async fn app_css() -> Response {
    asset("text/css; charset=utf-8", APP_CSS)
}

/// `GET /assets/app.js`: the page's script (signed in only).
pub async fn app_js(State(web): State<Web>, headers: HeaderMap) -> Response {
    match web.authorize(&Method::GET, &headers) {
        Ok(_) => asset("text/javascript; charset=utf-8", APP_JS),
        Err(refusal) => refused(refusal),
    }
}

/// `GET /assets/cytoscape.min.js`: the vendored graph library (signed in
/// only).
pub async fn cytoscape_js(State(web): State<Web>, headers: HeaderMap) -> Response {
    match web.authorize(&Method::GET, &headers) {
        Ok(_) => asset("text/javascript; charset=utf-8", CYTOSCAPE_JS),
        Err(refusal) => refused(refusal),
    }
}

/// The value of `field` in an `application/x-www-form-urlencoded` body.
pub fn form_field(body: &[u8], field: &str) -> Option<String> {
    body.split(|b| *b == b'&').find_map(|pair| {
        let (name, value) = match pair.iter().position(|b| *b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &[][..]),
        };
        (percent_decode(name)? == field).then(|| percent_decode(value))?
    })
}

fn percent_decode(bytes: &[u8]) -> Option<String> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_fields_are_decoded() {
        let cases: [(&[u8], Option<&str>); 8] = [
            (b"token=abc", Some("abc")),
            (b"x=1&token=a%20b+c", Some("a b c")),
            (b"token=", Some("")),
            (b"token", Some("")),
            (b"tokens=abc", None),
            (b"token=%zz", None),
            (b"token=%4", None),
            (b"", None),
        ];
        for (body, want) in cases {
            assert_eq!(
                form_field(body, "token").as_deref(),
                want,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn the_login_page_has_a_slot_for_its_message() {
        assert!(LOGIN_HTML.contains(MESSAGE_SLOT));
        assert!(!INDEX_HTML.contains("<script>"), "no inline scripts");
        assert!(
            !LOGIN_HTML.contains("<script"),
            "the sign-in page needs no script"
        );
    }
}
