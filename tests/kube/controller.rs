//! The real `vigil-controller` started with `--kubernetes on` against the
//! loopback API server ([`Replay`]), and the sidecar token a test's gRPC
//! calls carry. Shared by the test crates that replay the API.

// Each test crate that includes this file uses a part of it.
#![allow(dead_code)]

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

/// A simulated sidecar's open streams (it is connected while held).
pub struct Sidecar {
    /// The policies the controller pushes.
    pub policies: tonic::Streaming<vigil_proto::v1::Policy>,
    /// Where report batches go.
    pub reports: tokio::sync::mpsc::Sender<vigil_proto::v1::ReportBatch>,
    /// The controller's acknowledgements.
    pub _acks: tonic::Streaming<vigil_proto::v1::ReportAck>,
    /// Who it registered as.
    pub identity: vigil_proto::v1::Identity,
}

/// Registers `identity` with the controller at `ctl` and opens its report
/// stream, over real gRPC with the sidecar token.
pub async fn sidecar(
    ctl: &Controller,
    token: &str,
    identity: vigil_proto::v1::Identity,
) -> Sidecar {
    use vigil_proto::v1;
    let url = format!("http://{}", ctl.grpc);
    let mut client = v1::controller_client::ControllerClient::connect(url)
        .await
        .expect("the controller's gRPC port");
    let registration = v1::Registration {
        identity: Some(identity.clone()),
        inbound_addrs: vec![],
        proxy_version: "test".into(),
    };
    let policies = client
        .register(with_token(registration, token))
        .await
        .expect("Register")
        .into_inner();
    let (reports, rx) = tokio::sync::mpsc::channel(4);
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    let acks = client
        .report(with_token(stream, token))
        .await
        .expect("Report")
        .into_inner();
    Sidecar {
        policies,
        reports,
        _acks: acks,
        identity,
    }
}
