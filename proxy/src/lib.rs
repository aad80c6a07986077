//! vigil-proxy: Vigil's sidecar. It forwards the workload's outbound and
//! inbound HTTP/1.1 traffic, enforces the policy the controller sends, and
//! reports what it observed.
//!
//! Modules are tiered (each uses only those above it): base (`config`,
//! `model`), pure logic (`template`, `policy`, `resolve`), data path
//! (`listener`, `http`, `tcp`, `telemetry`), outside I/O (`control`,
//! `admin`), wiring (`app`). It must not depend on vigil-controller: the
//! proto crate is the contract.

pub mod admin;
pub mod app;
pub mod config;
pub mod connection;
pub mod control;
pub mod detect;
pub mod http;
pub mod init;
pub mod listener;
pub mod model;
pub mod policy;
pub mod resolve;
pub mod sniff;
pub mod tcp;
pub mod telemetry;
pub mod template;

pub use app::{Running, StartError, start};
pub use config::Args;
