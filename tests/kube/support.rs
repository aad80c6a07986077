//! Helpers of the Kubernetes tests: the recorded fixtures, a controller
//! serving the admission webhook over real TLS (openssl certificates), a
//! stand-in API server for the namespaces it reads (kube-rs reaches it
//! through a kubeconfig), and AdmissionReviews sent with curl.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use crate::common::{self, Controller, bin, spawn_proc, wait_for};

/// The host name in the webhook's test certificate.
pub const HOST: &str = "vigil-webhook.test";

/// The recorded Kubernetes payloads (`tests/fixtures/k8s`, copied
/// with their sources and licenses, or `$VIGIL_K8S_FIXTURES`).
pub fn fixtures() -> PathBuf {
    let dir = std::env::var_os("VIGIL_K8S_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/k8s"));
    assert!(
        dir.join("README.md").is_file(),
        "the Kubernetes fixtures are missing at {}: they live in tests/fixtures/k8s \
         (set VIGIL_K8S_FIXTURES to another copy)",
        dir.display()
    );
    dir
}

/// A fixture's text.
pub fn fixture_text(path: &str) -> String {
    let file = fixtures().join(path);
    std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("reading {}: {e}", file.display()))
}

/// A JSON fixture.
pub fn fixture_json(path: &str) -> Value {
    serde_json::from_str(&fixture_text(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The documents of a YAML fixture.
pub fn fixture_yaml(path: &str) -> Vec<Value> {
    yaml_docs(&fixture_text(path))
}

/// The non-empty documents of a YAML text.
pub fn yaml_docs(text: &str) -> Vec<Value> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(text).unwrap_or_else(|e| panic!("{e}"));
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

/// A self-signed certificate and key for [`HOST`] in `dir`, named `name`.
pub fn certificate(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "1", "-subj", &format!("/CN={HOST}")])
        .args(["-addext", &format!("subjectAltName=DNS:{HOST}")])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl is needed (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

/// A stand-in for the API server's `GET /api/v1/namespaces/{name}`, with
/// the namespaces given (others get the API server's 404 Status).
#[derive(Clone)]
pub struct ApiServer {
    pub addr: SocketAddr,
    namespaces: Arc<Mutex<BTreeMap<String, Value>>>,
}

impl ApiServer {
    pub fn start() -> Self {
        let namespaces: Arc<Mutex<BTreeMap<String, Value>>> = Arc::default();
        let shared = namespaces.clone();
        let addr = common::spawn_server(move |stream| {
            let shared = shared.clone();
            async move {
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let path = req.uri().path().to_owned();
                        let found = path
                            .strip_prefix("/api/v1/namespaces/")
                            .and_then(|name| shared.lock().unwrap().get(name).cloned());
                        let (status, body) = match found {
                            Some(ns) => (200, ns),
                            None => (
                                404,
                                json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                            "status": "Failure", "message": format!("{path} not found"),
                            "reason": "NotFound", "code": 404}),
                            ),
                        };
                        async move {
                            let mut response = hyper::Response::new(http_body_util::Full::new(
                                bytes::Bytes::from(body.to_string()),
                            ));
                            *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                            response.headers_mut().insert(
                                hyper::header::CONTENT_TYPE,
                                hyper::header::HeaderValue::from_static("application/json"),
                            );
                            Ok::<_, std::convert::Infallible>(response)
                        }
                    },
                );
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await;
            }
        });
        Self { addr, namespaces }
    }

    /// Serves namespace `name` with these labels and annotations (a copy of
    /// the recorded `default` namespace, renamed).
    pub fn namespace(&self, name: &str, labels: Value, annotations: Value) {
        let list = fixture_json("api/namespacelist-vm-test.json");
        let mut ns = list["items"][0].clone();
        ns["metadata"]["name"] = json!(name);
        let mut all_labels = json!({"kubernetes.io/metadata.name": name});
        for (k, v) in labels.as_object().unwrap() {
            all_labels[k] = v.clone();
        }
        ns["metadata"]["labels"] = all_labels;
        ns["metadata"]["annotations"] = annotations;
        self.namespaces.lock().unwrap().insert(name.to_owned(), ns);
    }

    /// A kubeconfig that points kube-rs at this server.
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: http://{}\n\
             users:\n- name: test\n  user:\n    token: test\ncontexts:\n- name: test\n  context:\n    \
             cluster: test\n    user: test\ncurrent-context: test\n",
            self.addr
        );
        std::fs::write(&path, text).unwrap();
        path
    }
}

/// A controller serving the webhook with `cert`/`key`, reading namespaces
/// from `api`; with its webhook address.
pub struct Webhook {
    pub controller: Controller,
    pub addr: SocketAddr,
    pub ca: PathBuf,
}

impl Webhook {
    pub fn start(dir: &Path, api: &ApiServer) -> Self {
        let (cert, key) = certificate(dir, "webhook");
        Self::start_with(dir, api, &cert, &key, &[])
    }

    pub fn start_with(
        dir: &Path,
        api: &ApiServer,
        cert: &Path,
        key: &Path,
        extra: &[&str],
    ) -> Self {
        let data_dir = dir.join("data");
        let mut cmd = Command::new(bin("vigil-controller"));
        cmd.args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
            .args(["--webhook-addr", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--sidecar-token-file")
            .arg(common::sidecar_token_file(dir))
            .arg("--webhook-cert")
            .arg(cert)
            .arg("--webhook-key")
            .arg(key)
            .args(extra)
            .env("KUBECONFIG", api.kubeconfig(dir));
        let proc = spawn_proc("vigil-controller", cmd, dir);
        let (grpc, http, addr) = wait_for("the controller's start lines", || {
            Some((
                proc.logged_addr("grpc_addr")?,
                proc.logged_addr("http_addr")?,
                proc.logged_addr("webhook_addr")?,
            ))
        });
        wait_for("the controller's /healthz", || {
            (common::curl(&[&format!("http://{http}/healthz")]).0 == 200).then_some(())
        });
        Webhook {
            controller: Controller {
                proc,
                grpc,
                http,
                data_dir,
            },
            addr,
            ca: cert.to_owned(),
        }
    }

    /// POSTs `body` to `path` over TLS (trusting only [`Webhook::ca`]);
    /// returns the status and the parsed answer.
    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post_raw(path, body.to_string().as_bytes(), &self.ca)
    }

    pub fn post_raw(&self, path: &str, body: &[u8], ca: &Path) -> (u16, Value) {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), body).unwrap();
        let resolve = format!("{HOST}:{}:127.0.0.1", self.addr.port());
        let url = format!("https://{HOST}:{}{path}", self.addr.port());
        let data = format!("@{}", file.path().display());
        let ca = ca.display().to_string();
        let (status, text) = common::curl(&[
            "--cacert",
            &ca,
            "--resolve",
            &resolve,
            "-H",
            "content-type: application/json",
            "--data-binary",
            &data,
            &url,
        ]);
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value)
    }
}

/// An AdmissionReview v1 around `request` (an AdmissionRequest).
pub fn review(request: Value) -> Value {
    json!({"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1", "request": request})
}

/// An AdmissionReview v1 creating `pod` in `namespace`.
pub fn pod_review(uid: &str, namespace: &str, pod: &Value) -> Value {
    review(json!({
        "uid": uid,
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
        "requestResource": {"group": "", "version": "v1", "resource": "pods"},
        "name": pod["metadata"]["name"].as_str().unwrap_or(""),
        "namespace": namespace,
        "operation": "CREATE",
        "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
        "object": pod,
        "oldObject": null,
        "dryRun": false,
        "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"},
    }))
}

/// The pod a controller would create from `template` (a workload's pod
/// template), owned by `kind`/`owner`.
pub fn pod_from_template(template: &Value, kind: &str, owner: &str, api_version: &str) -> Value {
    let mut pod = template.clone();
    pod["apiVersion"] = json!("v1");
    pod["kind"] = json!("Pod");
    pod["metadata"]["generateName"] = json!(format!("{owner}-"));
    pod["metadata"]["ownerReferences"] = json!([{"apiVersion": api_version, "kind": kind,
        "name": owner, "uid": "0b1c7e3c-0000-4000-8000-000000000001", "controller": true,
        "blockOwnerDeletion": true}]);
    pod
}

/// Applies the response's JSONPatch to `object`, checking the response.
pub fn patched(object: &Value, answer: &Value, uid: &str) -> Value {
    let response = &answer["response"];
    assert_eq!(response["uid"], uid, "{answer}");
    assert_eq!(response["allowed"], true, "{answer}");
    assert_eq!(response["patchType"], "JSONPatch", "{answer}");
    let bytes = base64_decode(
        response["patch"]
            .as_str()
            .unwrap_or_else(|| panic!("a patch: {answer}")),
    );
    let patch: json_patch::Patch = serde_json::from_slice(&bytes).expect("a JSONPatch");
    let mut out = object.clone();
    json_patch::patch(&mut out, &patch).unwrap_or_else(|e| panic!("the patch does not apply: {e}"));
    out
}

/// Standard base64 (the `patch` field), decoded.
pub fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let clean: Vec<u8> = text.bytes().filter(|&c| c != b'=').collect();
    let mut out = Vec::new();
    for chunk in clean.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= value(c) << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}

/// The names of a pod's containers in `list`.
pub fn names(pod: &Value, list: &str) -> Vec<String> {
    pod["spec"][list]
        .as_array()
        .map(|cs| {
            cs.iter()
                .map(|c| c["name"].as_str().unwrap_or("").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The container `name` of a pod's `list`.
pub fn container<'a>(pod: &'a Value, list: &str, name: &str) -> &'a Value {
    pod["spec"][list]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no {list} {name} in {pod}"))
}

/// The value of env var `name` in `container`.
pub fn env<'a>(container: &'a Value, name: &str) -> &'a Value {
    container["env"]
        .as_array()
        .and_then(|e| e.iter().find(|v| v["name"] == name))
        .map(|v| &v["value"])
        .unwrap_or_else(|| panic!("no env {name} in {container}"))
}
