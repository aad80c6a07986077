//! The policy cache (`--policy-cache FILE`): the last policy received is
//! kept on disk, so a sidecar restarted while the controller is away enforces
//! it at once instead of `--default-policy`.
//!
//! Writes are atomic (temporary file, fsync, rename): a crash leaves the old
//! policy or the new one, never half of one.

use std::path::{Path, PathBuf};

use crate::policy::Policy;

/// Why the cache could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// Reading or writing the file failed.
    #[error("policy cache {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file does not hold a policy.
    #[error(
        "policy cache {path} is not a Vigil policy ({source}); it is ignored and will be rewritten"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: serde_json::Error,
    },
}

/// Reads the cached policy; `None` when there is no cache file yet.
pub fn load(path: &Path) -> Result<Option<Policy>, CacheError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(CacheError::Io {
                path: path.to_owned(),
                source,
            });
        }
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| CacheError::Corrupt {
            path: path.to_owned(),
            source,
        })
}

/// Writes `policy` atomically.
pub async fn save(path: &Path, policy: &Policy) -> Result<(), CacheError> {
    let io = |source| CacheError::Io {
        path: path.to_owned(),
        source,
    };
    let json = serde_json::to_vec(policy).expect("a policy always serialises");
    let tmp = path.with_extension("tmp");
    let file = tokio::fs::File::create(&tmp).await.map_err(io)?;
    let mut file = tokio::io::BufWriter::new(file);
    tokio::io::AsyncWriteExt::write_all(&mut file, &json)
        .await
        .map_err(io)?;
    tokio::io::AsyncWriteExt::flush(&mut file)
        .await
        .map_err(io)?;
    file.into_inner().sync_all().await.map_err(io)?;
    tokio::fs::rename(&tmp, path).await.map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_saved_policy_loads_back_and_garbage_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.json");
        assert!(load(&path).unwrap().is_none());
        let mut policy = Policy::deny_all();
        policy.version = 7;
        policy.allowed_authorities.insert("pypi.org:443".into());
        policy.allowed_addrs.insert("10.0.0.1:80".parse().unwrap());
        policy.source_ips.insert(
            "default/web".into(),
            ["10.0.0.5".parse().unwrap()].into_iter().collect(),
        );
        save(&path, &policy).await.unwrap();
        assert_eq!(load(&path).unwrap(), Some(policy));
        // A cache written before source_ips existed still loads.
        std::fs::write(
            &path,
            br#"{"version":3,"enforce":true,"allowed_authorities":["pypi.org:443"],
                "allowed_addrs":[],"allowed_sources":["internet"],"mode":"enforcement"}"#,
        )
        .unwrap();
        let old = load(&path).unwrap().expect("the older cache");
        assert!(old.enforce && old.source_ips.is_empty());
        std::fs::write(&path, b"{\"version\": 1").unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(err.contains("not a Vigil policy"), "{err}");
    }
}
