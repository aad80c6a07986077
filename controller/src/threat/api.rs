//! `GET /api/v1/threats/check?name=NAME` (behind the API's bearer token):
//! whether a name is on a threat list, and on which. The feeds come from
//! the request's extensions (`axum::Extension` of a [`FeedsRx`], added to
//! the router when the controller starts).

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Query};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::watch;
use vigil_proto::threat::{authority_host, normalize_name, parse_ip_literal};

use super::Feeds;

/// The feeds in force, as published by the [`super::Reloader`].
pub type FeedsRx = watch::Receiver<Arc<Feeds>>;

/// The query: the name to check.
#[derive(Debug, Deserialize)]
pub struct CheckQuery {
    /// A host name or IP literal, with or without a port.
    pub name: String,
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckView {
    /// The name, as asked.
    pub name: String,
    /// Whether a feed lists it.
    pub listed: bool,
    /// The feed that lists it (`builtin`, or a `--threat-feed` file).
    pub feed: Option<String>,
    /// The entry that matched (`*.nanopool.org`).
    pub entry: Option<String>,
}

/// Whether `name` could be listed at all: a host name or an IP literal,
/// with or without a port.
pub fn is_checkable(name: &str) -> bool {
    let host = authority_host(name.trim());
    parse_ip_literal(host).is_some() || normalize_name(host).is_ok()
}

/// The answer for `name` under `feeds`.
pub fn check_name(feeds: &Feeds, name: &str) -> CheckView {
    let listing = feeds.lookup(name);
    CheckView {
        name: name.to_owned(),
        listed: listing.is_some(),
        feed: listing.as_ref().map(|l| l.feed.clone()),
        entry: listing.map(|l| l.entry),
    }
}

/// `GET /api/v1/threats/check?name=NAME`: `400` for a name that is no
/// host name, IP or `host:port`.
pub async fn check(
    Extension(feeds): Extension<FeedsRx>,
    query: Result<Query<CheckQuery>, QueryRejection>,
) -> Response {
    let bad = |message: String| {
        (StatusCode::BAD_REQUEST, Json(json!({ "error": message }))).into_response()
    };
    let Query(query) = match query {
        Ok(query) => query,
        Err(e) => return bad(format!("{}: use ?name=pool.example.com", e.body_text())),
    };
    if !is_checkable(&query.name) {
        return bad(format!(
            "{:?} is not a host name, IP address or host:port",
            query.name
        ));
    }
    let feeds = feeds.borrow().clone();
    Json(check_name(&feeds, &query.name)).into_response()
}
