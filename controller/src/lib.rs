//! vigil-controller: the control plane of Vigil.
//!
//! Data moves forward only: `ingest` (gRPC from the sidecars) ->
//! `inventory` / `graph` -> `baseline` -> `detect` -> `policy` (streamed back
//! to the sidecars), with `store` making it durable and `api` serving reads
//! and typed commands to `vigilctl` and the web view. The `engine` task is the
//! one writer of all state. This crate never depends on `vigil-proxy`; the
//! `vigil-proto` crate is the contract.

pub mod api;
pub mod app;
pub mod baseline;
pub mod baseline_doc;
pub mod cli;
pub mod config;
pub mod detect;
pub mod engine;
pub mod explain;
pub mod graph;
pub mod ingest;
pub mod inventory;
pub mod kube;
pub mod metrics;
pub mod model;
pub mod notify;
pub mod policy;
pub mod resource;
pub mod simulate;
pub mod snapshot;
pub mod stability;
pub mod store;
pub mod threat;
pub mod token;
pub mod web;

pub use app::{Running, StartError, start};
pub use config::Args;
