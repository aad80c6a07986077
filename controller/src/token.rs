//! Secret tokens: the admin token of the HTTP API and the sidecar token of
//! the gRPC port. Each is random (256 bits, hex), created on first start in
//! a file of mode 0600 and read back afterwards; an empty file is an error,
//! never an open door. Comparisons take constant time.
//!
//! A sidecar token can be narrowed to one namespace ([`namespace_token`]):
//! what the chart puts in each notebook namespace's Secret, so that whoever
//! may read Secrets there (in Kubeflow, the notebook's own service account)
//! can speak for that namespace's sidecars only ([`scope_of`]).
//!
//! Base tier: depends on nothing else in this crate.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Why a token file could not be read or created.
#[derive(Debug, thiserror::Error)]
#[error("cannot read or create the {what} token {path}: {source}")]
pub struct TokenError {
    /// Which token.
    pub what: &'static str,
    /// The token file.
    pub path: PathBuf,
    /// The cause.
    pub source: std::io::Error,
}

/// Reads the token in `path`, or creates it (mode 0600) when the file does
/// not exist. `what` names it in errors and logs.
pub fn load_or_create(path: &Path, what: &'static str) -> Result<String, TokenError> {
    let err = |source| TokenError {
        what,
        path: path.to_owned(),
        source,
    };
    match std::fs::read_to_string(path) {
        Ok(token) if !token.trim().is_empty() => {
            let mode = std::fs::metadata(path).map_err(err)?.permissions().mode();
            if mode & 0o077 != 0 {
                tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777), "the {what} token is readable by others: chmod 600 it");
            }
            return Ok(token.trim().to_owned());
        }
        Ok(_) => {
            return Err(err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "the file is empty; delete it to get a new token",
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| err(std::io::Error::other(e.to_string())))?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(err)?;
    writeln!(file, "{token}")
        .and_then(|()| file.sync_all())
        .map_err(err)?;
    tracing::info!(path = %path.display(), "wrote a new {what} token");
    Ok(token)
}

/// Compares in time independent of where the inputs differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What a presented sidecar token lets its holder speak for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// The sidecar token itself: any namespace.
    Any,
    /// A namespace token: the sidecars of this namespace only.
    Namespace(String),
}

impl Scope {
    /// Whether a sidecar of `namespace` may be spoken for.
    pub fn allows(&self, namespace: &str) -> bool {
        match self {
            Scope::Any => true,
            Scope::Namespace(ns) => ns == namespace,
        }
    }
}

/// Prefix of a namespace token: `ns.<namespace>.<digest>`.
pub const NAMESPACE_TOKEN_PREFIX: &str = "ns.";

/// The sidecar token narrowed to `namespace`: `ns.<namespace>.<hex of
/// SHA-256("<namespace>:<sidecar token>")>`. The digest takes the secret
/// last, so that none of another namespace's can be derived from it (a
/// hash's length extension would need the secret first); the digest has no
/// dot, so a namespace may. The chart computes the same with `sha256sum`.
pub fn namespace_token(sidecar_token: &str, namespace: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("{namespace}:{sidecar_token}").as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{NAMESPACE_TOKEN_PREFIX}{namespace}.{hex}")
}

/// What `presented` lets its holder speak for, given the sidecar token:
/// anything when it is the sidecar token, one namespace when it is that
/// namespace's token, nothing otherwise. Compared in constant time.
pub fn scope_of(presented: &str, sidecar_token: &str) -> Option<Scope> {
    if constant_time_eq(presented.as_bytes(), sidecar_token.as_bytes()) {
        return Some(Scope::Any);
    }
    let rest = presented.strip_prefix(NAMESPACE_TOKEN_PREFIX)?;
    // The digest is hex: the namespace is all before the last dot.
    let (namespace, _) = rest.rsplit_once('.')?;
    let valid = !namespace.is_empty()
        && namespace.len() <= 253
        && namespace.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
        });
    let expected = namespace_token(sidecar_token, namespace);
    (valid && constant_time_eq(presented.as_bytes(), expected.as_bytes()))
        .then(|| Scope::Namespace(namespace.to_owned()))
}

/// The token of an `Authorization: Bearer <token>` header value.
pub fn bearer(header: &str) -> Option<&str> {
    header.strip_prefix("Bearer ").map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_created_once_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.token");
        let token = load_or_create(&path, "admin").unwrap();
        assert_eq!(token.len(), 64);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load_or_create(&path, "admin").unwrap(), token);
        let other = dir.path().join("sidecar.token");
        assert_ne!(load_or_create(&other, "sidecar").unwrap(), token);
    }

    #[test]
    fn a_namespace_token_speaks_for_its_namespace_only() {
        let secret = "5ec7e7";
        let lab = namespace_token(secret, "lab");
        assert!(lab.starts_with("ns.lab.") && lab.len() == "ns.lab.".len() + 64);
        // What `printf lab:5ec7e7 | sha256sum` prints, as the chart does.
        assert_eq!(
            lab,
            "ns.lab.c063e0b3b39032216310ab5d0f5cdd992893374a6ff90cc1bd4fcecf3b6a8b64"
        );
        let cases = [
            (secret.to_owned(), Some(Scope::Any)),
            (lab.clone(), Some(Scope::Namespace("lab".into()))),
            // Another namespace's name on lab's digest, a digest one off,
            // the digest alone, a token of another secret, junk.
            (lab.replacen("ns.lab.", "ns.prod.", 1), None),
            (format!("{}0", &lab[..lab.len() - 1]), None),
            (lab["ns.lab.".len()..].to_owned(), None),
            (namespace_token("other", "lab"), None),
            ("ns..x".to_owned(), None),
            (
                namespace_token(secret, "team.a"),
                Some(Scope::Namespace("team.a".into())),
            ),
            ("ns.LAB.x".to_owned(), None),
            (String::new(), None),
        ];
        for (presented, want) in cases {
            assert_eq!(scope_of(&presented, secret), want, "{presented}");
        }
        assert!(Scope::Any.allows("prod"));
        assert!(Scope::Namespace("lab".into()).allows("lab"));
        assert!(!Scope::Namespace("lab".into()).allows("prod"));
    }

    #[test]
    fn an_empty_token_file_is_an_error_not_an_open_door() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sidecar.token");
        std::fs::write(&path, "\n").unwrap();
        let err = load_or_create(&path, "sidecar").unwrap_err().to_string();
        assert!(
            err.contains("sidecar token") && err.contains("empty"),
            "{err}"
        );
    }

    #[test]
    fn bearer_tokens_compare_exactly() {
        assert_eq!(bearer("Bearer abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
    }
}
