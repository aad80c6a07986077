//! The gRPC contract between `vigil-proxy` and `vigil-controller`.
//!
//! This crate holds only the generated protobuf and tonic types; the proxy and
//! the controller convert them into their own domain types at their edges.
//! It depends on nothing of ours.

#![allow(missing_docs, clippy::all)]

/// Version 1 of the Vigil protocol (`package vigil.v1`).
pub mod v1 {
    tonic::include_proto!("vigil.v1");
}

pub mod threat;

/// The authority a sidecar reports traffic to new destinations under once
/// its aggregator is full, and the destination the controller counts a
/// workload's new destinations under once it reached its cap: a reserved
/// name (RFC 2606 `.invalid`) that never resolves, so it names no real host.
pub const OVERFLOW_AUTHORITY: &str = "overflow.vigil.invalid:0";

/// Longest tenant or profile accepted.
pub const MAX_LABEL_LEN: usize = 253;

/// Whether `tenant` (the account owning a workload: a JupyterHub user name,
/// a Kubeflow profile owner's e-mail) is acceptable: empty (unknown), or up
/// to [`MAX_LABEL_LEN`] of ASCII letters, digits and `@ . _ + = -`. Both
/// ends check it, so a tenant is safe in logs, tables and notifications.
pub fn is_valid_tenant(tenant: &str) -> bool {
    tenant.len() <= MAX_LABEL_LEN
        && tenant
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"@._+=-".contains(&b))
}

/// Whether `profile` (a group of workloads sharing a baseline: a
/// `vigil.io/profile` label or an image repository such as
/// `jupyter/scipy-notebook`) is acceptable: empty (the workload's own
/// name), or up to [`MAX_LABEL_LEN`] of lower-case letters, digits and
/// `. _ - /`, not starting with `/`.
pub fn is_valid_profile(profile: &str) -> bool {
    profile.len() <= MAX_LABEL_LEN
        && !profile.starts_with('/')
        && profile
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-/".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants_and_profiles_are_checked() {
        for ok in ["", "alice", "alice@example.com", "user-2d1", "a.b+c=d_e"] {
            assert!(is_valid_tenant(ok), "{ok}");
        }
        for bad in ["a b", "a\nb", "<script>", "a/b", &"x".repeat(254)] {
            assert!(!is_valid_tenant(bad), "{bad}");
        }
        for ok in ["", "jupyter", "jupyter/scipy-notebook", "kubeflow.v1_2"] {
            assert!(is_valid_profile(ok), "{ok}");
        }
        for bad in ["/abs", "Upper", "a b", "a:b", &"x".repeat(254)] {
            assert!(!is_valid_profile(bad), "{bad}");
        }
    }
}
