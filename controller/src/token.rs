//! Secret tokens: the admin token of the HTTP API and the sidecar token of
//! the gRPC port. Each is random (256 bits, hex), created on first start in
//! a file of mode 0600 and read back afterwards; an empty file is an error,
//! never an open door. Comparisons take constant time.
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
