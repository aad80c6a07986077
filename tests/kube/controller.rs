//! The real `vigil-controller` started with `--kubernetes on` against the
//! loopback API server ([`Replay`]), and the sidecar token a test's gRPC
//! calls carry. Shared by the test crates that replay the API.

use std::path::Path;
use std::process::Command;

use crate::common::{self, Controller, bin, spawn_proc, wait_for};
use crate::replay::Replay;

/// A controller named `name` (its log and data under `dir/name`), with
/// `extra` flags, whose API server is `api`.
pub fn start_named(dir: &Path, api: &Replay, name: &str, extra: &[&str]) -> Controller {
    let dir = dir.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let data_dir = dir.join("data");
    let mut cmd = Command::new(bin("vigil-controller"));
    cmd.args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .args(["--kubernetes", "on"])
        .args(extra)
        .arg("--data-dir")
        .arg(&data_dir)
        .arg("--sidecar-token-file")
        .arg(common::sidecar_token_file(&dir))
        .env("KUBECONFIG", api.kubeconfig(&dir))
        .env_remove("KUBERNETES_SERVICE_HOST");
    let proc = spawn_proc(name, cmd, &dir);
    let (grpc, http) = wait_for("the controller's start line", || {
        Some((
            proc.logged_addr("grpc_addr")?,
            proc.logged_addr("http_addr")?,
        ))
    });
    Controller {
        proc,
        grpc,
        http,
        data_dir,
    }
}

/// `message` carrying the sidecar token.
pub fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let bearer = format!("Bearer {token}").parse().unwrap();
    request.metadata_mut().insert("authorization", bearer);
    request
}
