//! Web sessions: a random id in an HttpOnly cookie, pointing at a role, a
//! per-session CSRF token and an expiry. Held in memory only: a restarted
//! controller signs everyone out.
//!
//! The clock is passed in ([`Instant`]), never read here, so expiry is
//! tested without sleeping.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

/// How long a session lasts after sign-in (absolute, not sliding).
pub const SESSION_TTL: Duration = Duration::from_secs(8 * 60 * 60);
/// Most sessions held at once; past it the one closest to expiry goes.
pub const MAX_SESSIONS: usize = 1024;
/// Name of the session cookie.
pub const COOKIE: &str = "vigil_session";

/// What a signed-in user (or a bearer token) may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Read and change (modes, ...): the admin token.
    Admin,
    /// Read only: the viewer token.
    Viewer,
}

impl Role {
    /// Whether this role may make a request with `method` (viewers only
    /// read).
    pub fn may(self, method: &http::Method) -> bool {
        self == Self::Admin || is_safe(method)
    }
}

/// Whether `method` reads only (GET, HEAD, OPTIONS).
pub fn is_safe(method: &http::Method) -> bool {
    matches!(
        *method,
        http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
    )
}

/// One signed-in browser.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// Its role.
    pub role: Role,
    /// The token state-changing requests must carry in `X-CSRF-Token`.
    pub csrf: String,
    /// When it ends.
    pub expires: Instant,
}

/// The live sessions, by id.
#[derive(Debug)]
pub struct Sessions {
    inner: Mutex<HashMap<String, Session>>,
    ttl: Duration,
}

impl Default for Sessions {
    fn default() -> Self {
        Self::new(SESSION_TTL)
    }
}

/// 256 random bits, hex.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system's random source");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Sessions {
    /// Sessions that last `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Self {
            inner: Mutex::new(HashMap::new()),
            ttl,
        }
    }

    /// How long a new session lasts.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a session for `role`; returns its id and the session.
    pub fn create(&self, role: Role, now: Instant) -> (String, Session) {
        let id = random_token();
        let session = Session {
            role,
            csrf: random_token(),
            expires: now + self.ttl,
        };
        let mut map = self.lock();
        if map.len() >= MAX_SESSIONS {
            map.retain(|_, s| s.expires > now);
        }
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        map.insert(id.clone(), session.clone());
        (id, session)
    }

    /// The session `id` names, unless it has expired (then it is removed).
    pub fn get(&self, id: &str, now: Instant) -> Option<Session> {
        let mut map = self.lock();
        match map.get(id) {
            Some(s) if s.expires > now => Some(s.clone()),
            Some(_) => {
                map.remove(id);
                None
            }
            None => None,
        }
    }

    /// Ends the session `id` (sign-out).
    pub fn remove(&self, id: &str) {
        self.lock().remove(id);
    }

    /// Sessions held now (expired ones not yet pruned included).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none are held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The session id in a `Cookie` header value, if it names ours.
pub fn session_cookie(header: &str) -> Option<&str> {
    header
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim_matches('"'))
        .filter(|v| !v.is_empty())
}

/// The `Set-Cookie` value that hands a browser session `id` (`Secure` when
/// the page came over TLS).
pub fn set_cookie(id: &str, ttl: Duration, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!(
        "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        ttl.as_secs()
    )
}

/// The `Set-Cookie` value that removes the session cookie.
pub fn clear_cookie(secure: bool) -> String {
    set_cookie("", Duration::ZERO, secure)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_lives_until_its_expiry_and_not_after() {
        let sessions = Sessions::new(Duration::from_secs(60));
        let t0 = Instant::now();
        let (id, s) = sessions.create(Role::Viewer, t0);
        assert_eq!(id.len(), 64);
        assert_eq!(s.csrf.len(), 64);
        assert_ne!(id, s.csrf);
        let cases = [(0, true), (59, true), (60, false), (61, false)];
        for (secs, alive) in cases {
            let again = Sessions::new(Duration::from_secs(60));
            let (id2, _) = again.create(Role::Admin, t0);
            assert_eq!(
                again.get(&id2, t0 + Duration::from_secs(secs)).is_some(),
                alive,
                "at {secs}s"
            );
        }
        assert_eq!(sessions.get(&id, t0).map(|s| s.role), Some(Role::Viewer));
        assert!(sessions.get(&id, t0 + Duration::from_secs(60)).is_none());
        // Expired sessions are forgotten, not revived.
        assert!(sessions.get(&id, t0).is_none());
        assert!(sessions.get("nope", t0).is_none());
    }

    #[test]
    fn sign_out_ends_only_that_session() {
        let sessions = Sessions::default();
        let now = Instant::now();
        let (a, _) = sessions.create(Role::Admin, now);
        let (b, _) = sessions.create(Role::Admin, now);
        assert_ne!(a, b);
        sessions.remove(&a);
        assert!(sessions.get(&a, now).is_none());
        assert!(sessions.get(&b, now).is_some());
    }

    #[test]
    fn the_number_of_sessions_is_bounded() {
        let sessions = Sessions::default();
        let now = Instant::now();
        let (first, _) = sessions.create(Role::Viewer, now);
        for i in 0..MAX_SESSIONS + 10 {
            sessions.create(Role::Viewer, now + Duration::from_millis(i as u64 + 1));
        }
        assert_eq!(sessions.len(), MAX_SESSIONS);
        assert!(sessions.get(&first, now).is_none(), "the oldest went first");
    }

    #[test]
    fn the_cookie_header_is_read_exactly() {
        let cases = [
            ("vigil_session=abc", Some("abc")),
            ("a=1; vigil_session=abc; b=2", Some("abc")),
            ("vigil_session=\"abc\"", Some("abc")),
            ("xvigil_session=abc", None),
            ("vigil_session=", None),
            ("other=vigil_session", None),
            ("", None),
        ];
        for (header, want) in cases {
            assert_eq!(session_cookie(header), want, "{header:?}");
        }
    }

    #[test]
    fn cookies_are_httponly_strict_and_secure_over_tls() {
        let plain = set_cookie("id", Duration::from_secs(5), false);
        assert_eq!(
            plain,
            "vigil_session=id; Path=/; HttpOnly; SameSite=Strict; Max-Age=5"
        );
        assert!(set_cookie("id", Duration::from_secs(5), true).ends_with("; Secure"));
        assert!(clear_cookie(false).contains("Max-Age=0"));
    }

    #[test]
    fn viewers_only_read() {
        use http::Method;
        let cases = [
            (Role::Viewer, Method::GET, true),
            (Role::Viewer, Method::HEAD, true),
            (Role::Viewer, Method::PUT, false),
            (Role::Viewer, Method::POST, false),
            (Role::Viewer, Method::DELETE, false),
            (Role::Admin, Method::PUT, true),
            (Role::Admin, Method::POST, true),
        ];
        for (role, method, ok) in cases {
            assert_eq!(role.may(&method), ok, "{role:?} {method}");
        }
    }
}
