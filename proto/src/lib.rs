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

/// The authority a sidecar reports traffic to new destinations under once
/// its aggregator is full, and the destination the controller counts a
/// workload's new destinations under once it reached its cap: a reserved
/// name (RFC 2606 `.invalid`) that never resolves, so it names no real host.
pub const OVERFLOW_AUTHORITY: &str = "overflow.vigil.invalid:0";
