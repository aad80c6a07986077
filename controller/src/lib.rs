//! vigil-controller: the control plane of Vigil.
//!
//! Data moves forward only: `ingest` (gRPC from the sidecars) ->
//! `inventory` / `graph` -> `baseline` -> `detect` -> `policy` (streamed back
//! to the sidecars), with `store` making it durable and `api` serving reads
//! and typed commands to `vigilctl` and the web view. The `engine` task is the
//! one writer of all state. This crate never depends on `vigil-proxy`; the
//! `vigil-proto` crate is the contract.

pub mod baseline;
pub mod detect;
pub mod graph;
pub mod inventory;
pub mod model;
pub mod policy;
pub mod store;
pub mod engine;
pub mod snapshot;
pub mod ingest;
