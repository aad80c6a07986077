//! Kubernetes: sidecar injection into notebook namespaces. The pure parts
//! (`identity`, `inject`, `risks`, `admission`, `manifest`) take JSON and
//! give JSON; `webhook` is the thin HTTPS server the API server calls, the
//! only part that talks to the API server (kube-rs). `vigilctl inject`
//! uses the same `inject` through `manifest`. `metrics` reads the CPU of
//! injected pods from the metrics API for `resource_spike` (decided in
//! `crate::resource`). Depends on `model`, `inventory`, `resource` and
//! the engine's `Handle`, nothing else of the controller.

pub mod admission;
pub mod cli;
pub mod config;
pub mod crd;
pub mod discovery;
pub mod identity;
pub mod inject;
pub mod lease;
pub mod manifest;
pub mod metrics;
pub mod risks;
pub mod webhook;
