//! vigil-proxy: Vigil's sidecar. It forwards the workload's outbound and
//! inbound traffic (HTTP/1.1, HTTP/2 and gRPC, TLS by SNI, Stratum, opaque
//! TCP), enforces the policy the controller sends, and reports what it
//! observed. `vigil-proxy init` writes the iptables rules of transparent
//! interception.
//!
//! Modules are tiered (each uses only those above it): base (`config`,
//! `model`), pure logic (`detect`, `template`, `policy`, `destination`, `resolve`,
//! `init`'s plan), data path (`listener`, `sniff`, `connection`, `http`, `tcp`,
//! `stream`, `dns`, `telemetry`, `upstream`), outside I/O (`control`, `admin`, on the `runtime` of their own), wiring (`app`). It must not depend on vigil-controller: the
//! proto crate is the contract.

pub mod admin;
pub mod app;
pub mod body;
pub mod config;
pub mod connection;
pub mod context;
pub mod control;
pub mod destination;
pub mod detect;
pub mod dns;
pub mod http;
pub mod init;
pub mod listener;
pub mod model;
pub mod policy;
pub mod resolve;
pub mod runtime;
pub mod sniff;
pub mod stream;
pub mod tcp;
pub mod telemetry;
pub mod template;
pub mod udp;
pub mod upstream;

pub use app::{Running, StartError, start};
pub use config::Args;
