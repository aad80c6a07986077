//! The controller's web view: the live application security graph in the
//! browser, served on `--http-addr` beside the JSON API.
//!
//! - [`session`]: sign-in sessions (random id in an HttpOnly, SameSite=Strict
//!   cookie; role and CSRF token in the session; absolute expiry).
//! - [`guard`]: the one access decision for pages, the API and the live
//!   stream (bearer token or session; same origin and CSRF for cookie
//!   requests; viewers only read).
//! - [`delta`]: what changed between two snapshots (pure, table-tested).
//! - [`events`]: the live stream of those changes (server-sent events).
//! - [`pages`]: sign-in, sign-out, the page and its embedded assets.
//!
//! Reads snapshots and sends changes through the JSON API's typed commands;
//! it never touches the engine's state itself.

pub mod delta;
pub mod events;
pub mod guard;
pub mod pages;
pub mod session;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use tokio::sync::watch;

pub use guard::{Granted, Refusal, Tokens};
pub use session::{Role, Sessions};

use crate::engine::Handle;

/// The Content-Security-Policy of every page: scripts and styles from this
/// origin only (no inline script); the one inline style allowed by its hash
/// is the rule Cytoscape.js adds to the page (`.__________cytoscape_container
/// { position: relative; }`); images from `data:` for graph exports; no
/// framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self' 'sha256-pgvDUBa4IjFA2yuSJ2cqcyxmNYJMborsd0ORcRv9vw8='; \
     img-src 'self' data:; connect-src 'self'; form-action 'self'; \
     frame-ancestors 'none'; base-uri 'none'";

/// What the web view and the API's access checks share.
#[derive(Clone, Debug)]
pub struct Web {
    /// The admin and viewer tokens.
    pub tokens: Tokens,
    /// Signed-in browsers.
    pub sessions: Arc<Sessions>,
    stop: watch::Receiver<bool>,
}

impl Web {
    /// Access with `tokens`; live streams end when `stop` turns true (the
    /// controller shuts down).
    pub fn new(tokens: Tokens, stop: watch::Receiver<bool>) -> Self {
        Self {
            tokens,
            sessions: Arc::new(Sessions::default()),
            stop,
        }
    }

    /// The access decision ([`guard::authorize`]) now.
    pub fn authorize(&self, method: &Method, headers: &HeaderMap) -> Result<Granted, Refusal> {
        guard::authorize(
            &self.tokens,
            &self.sessions,
            method,
            headers,
            Instant::now(),
        )
    }

    /// The live stream of `engine`'s changes (the caller is authorized).
    pub fn events(&self, engine: Handle) -> Response {
        events::stream(engine, self.stop.clone())
    }
}

/// The pages: `/`, `/login`, `/logout`, `/ui/session`, `/assets/...` (and
/// an empty `/favicon.ico`).
pub fn router(web: Web) -> Router {
    Router::new()
        .route("/", get(pages::index))
        .route("/login", get(pages::login_form).post(pages::login))
        .route("/logout", post(pages::logout))
        .route("/ui/session", get(pages::session))
        .route("/assets/app.css", get(pages::app_css))
        .route("/assets/app.js", get(pages::app_js))
        .route("/assets/cytoscape.min.js", get(pages::cytoscape_js))
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .layer(middleware::from_fn(security_headers))
        .with_state(web)
}

/// Adds the page security headers: CSP, no framing, no sniffing, no
/// referrer to other sites, no caching of data.
pub async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let set = [
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        // Not `no-referrer`: with it, browsers send `Origin: null` on form
        // posts, and the same-origin check could not tell ours apart.
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        ),
        (
            header::HeaderName::from_static("cross-origin-opener-policy"),
            HeaderValue::from_static("same-origin"),
        ),
        (
            header::HeaderName::from_static("cross-origin-resource-policy"),
            HeaderValue::from_static("same-origin"),
        ),
    ];
    for (name, value) in set {
        headers.insert(name, value);
    }
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}
