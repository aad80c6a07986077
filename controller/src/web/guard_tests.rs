use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderValue, Method};

use super::*;

const ADMIN: &str = "a1";
const VIEWER: &str = "v1";

struct World {
    tokens: Tokens,
    sessions: Sessions,
    admin_sid: String,
    admin_csrf: String,
    viewer_sid: String,
    viewer_csrf: String,
    now: Instant,
}

fn world() -> World {
    let sessions = Sessions::new(Duration::from_secs(100));
    let now = Instant::now();
    let (admin_sid, a) = sessions.create(Role::Admin, now);
    let (viewer_sid, v) = sessions.create(Role::Viewer, now);
    World {
        tokens: Tokens::new(ADMIN, VIEWER),
        sessions,
        admin_sid,
        admin_csrf: a.csrf,
        viewer_sid,
        viewer_csrf: v.csrf,
        now,
    }
}

/// Headers from `name: value` pairs; `$A`/`$V` are replaced by the admin's
/// or the viewer's session id, `$a`/`$v` by their CSRF tokens.
fn headers(w: &World, pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    map.insert("host", HeaderValue::from_static("127.0.0.1:8480"));
    for (name, value) in pairs {
        let value = value
            .replace("$A", &w.admin_sid)
            .replace("$V", &w.viewer_sid)
            .replace("$a", &w.admin_csrf)
            .replace("$v", &w.viewer_csrf);
        map.append(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(&value).unwrap(),
        );
    }
    map
}

/// One row: name, method, headers, expected outcome.
type Case<'a> = (
    &'a str,
    Method,
    Vec<(&'a str, &'a str)>,
    Result<Role, Refusal>,
);

#[test]
fn the_access_decision() {
    use Refusal::*;
    let w = world();
    let admin = Ok(Role::Admin);
    let viewer = Ok(Role::Viewer);
    let same = ("sec-fetch-site", "same-origin");
    let origin = ("origin", "http://127.0.0.1:8480");
    let cases: Vec<Case> = vec![
        ("nothing", Method::GET, vec![], Err(Missing)),
        (
            "admin bearer",
            Method::PUT,
            vec![("authorization", "Bearer a1")],
            admin,
        ),
        (
            "viewer bearer reads",
            Method::GET,
            vec![("authorization", "Bearer v1")],
            viewer,
        ),
        (
            "viewer bearer cannot change",
            Method::PUT,
            vec![("authorization", "Bearer v1")],
            Err(ReadOnly),
        ),
        (
            "wrong bearer",
            Method::GET,
            vec![("authorization", "Bearer a2")],
            Err(WrongToken),
        ),
        (
            "a wrong bearer is not saved by a good cookie",
            Method::GET,
            vec![
                ("authorization", "Bearer nope"),
                ("cookie", "vigil_session=$A"),
            ],
            Err(WrongToken),
        ),
        (
            "cookie read",
            Method::GET,
            vec![("cookie", "vigil_session=$A"), same],
            admin,
        ),
        (
            "cookie read, old browser without fetch metadata",
            Method::GET,
            vec![("cookie", "vigil_session=$A")],
            admin,
        ),
        (
            "typed navigation",
            Method::GET,
            vec![("cookie", "vigil_session=$V"), ("sec-fetch-site", "none")],
            viewer,
        ),
        (
            "unknown session",
            Method::GET,
            vec![("cookie", "vigil_session=ffff")],
            Err(NoSession),
        ),
        (
            "cross-site read",
            Method::GET,
            vec![
                ("cookie", "vigil_session=$A"),
                ("sec-fetch-site", "cross-site"),
            ],
            Err(CrossSite),
        ),
        (
            "same-site but another port (a notebook server)",
            Method::GET,
            vec![
                ("cookie", "vigil_session=$A"),
                ("sec-fetch-site", "same-site"),
            ],
            Err(CrossSite),
        ),
        (
            "foreign origin",
            Method::PUT,
            vec![
                ("cookie", "vigil_session=$A"),
                ("origin", "http://127.0.0.1:8888"),
                ("x-csrf-token", "$a"),
            ],
            Err(CrossSite),
        ),
        (
            "null origin",
            Method::PUT,
            vec![
                ("cookie", "vigil_session=$A"),
                ("origin", "null"),
                ("x-csrf-token", "$a"),
            ],
            Err(CrossSite),
        ),
        (
            "a change typed in the address bar is no change",
            Method::POST,
            vec![
                ("cookie", "vigil_session=$A"),
                ("sec-fetch-site", "none"),
                ("x-csrf-token", "$a"),
            ],
            Err(CrossSite),
        ),
        (
            "change without CSRF token",
            Method::PUT,
            vec![("cookie", "vigil_session=$A"), same, origin],
            Err(Csrf),
        ),
        (
            "change with another session's CSRF token",
            Method::PUT,
            vec![
                ("cookie", "vigil_session=$A"),
                same,
                origin,
                ("x-csrf-token", "$v"),
            ],
            Err(Csrf),
        ),
        (
            "admin change",
            Method::PUT,
            vec![
                ("cookie", "vigil_session=$A"),
                same,
                origin,
                ("x-csrf-token", "$a"),
            ],
            admin,
        ),
        (
            "viewer change",
            Method::PUT,
            vec![
                ("cookie", "vigil_session=$V"),
                same,
                origin,
                ("x-csrf-token", "$v"),
            ],
            Err(ReadOnly),
        ),
    ];
    for (name, method, pairs, want) in cases {
        let got =
            authorize(&w.tokens, &w.sessions, &method, &headers(&w, &pairs), w.now).map(|g| g.role);
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn an_expired_session_lets_nothing_in() {
    let w = world();
    let h = headers(&w, &[("cookie", "vigil_session=$A")]);
    let later = w.now + Duration::from_secs(100);
    assert_eq!(
        authorize(&w.tokens, &w.sessions, &Method::GET, &h, later),
        Err(Refusal::NoSession)
    );
}

#[test]
fn tokens_map_to_roles() {
    let t = Tokens::new("adm", "view");
    assert_eq!(t.role_of("adm"), Some(Role::Admin));
    assert_eq!(t.role_of("view"), Some(Role::Viewer));
    assert_eq!(t.role_of("ad"), None);
    assert_eq!(t.role_of(""), None);
}

#[test]
fn tls_is_believed_from_the_proxy_in_front() {
    let cases = [
        (vec![], false),
        (vec![("x-forwarded-proto", "https")], true),
        (vec![("x-forwarded-proto", "http")], false),
        (vec![("forwarded", "for=1.2.3.4;proto=https")], true),
        (vec![("forwarded", "for=1.2.3.4;proto=http")], false),
    ];
    let w = world();
    for (pairs, want) in cases {
        assert_eq!(over_tls(&headers(&w, &pairs)), want, "{pairs:?}");
    }
}
