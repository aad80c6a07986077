//! A loopback stand-in for the Kubernetes API server that replays list and
//! watch responses: each list path answers its lists in turn (the last one
//! again and again), each watch (`?watch=true`) plays its script as a
//! chunked body (one JSON event a line, as the API server streams them),
//! then ends or stays open. Every request is logged, so a test can check
//! which resourceVersion each watch resumed from.

#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::common;

/// One step of a watch body.
pub enum Step {
    /// A watch event, written as one line.
    Event(Value),
    /// Waits until the test opens this gate.
    Gate(watch::Receiver<bool>),
}

/// What one watch request gets.
pub struct Watch {
    /// Its events, in order.
    pub steps: Vec<Step>,
    /// Whether the body stays open after them (else it ends).
    pub hold: bool,
}

#[derive(Default)]
struct Resource {
    lists: VecDeque<Value>,
    watches: VecDeque<Watch>,
}

/// The replaying server.
#[derive(Clone)]
pub struct Replay {
    pub addr: SocketAddr,
    resources: Arc<Mutex<BTreeMap<String, Resource>>>,
    log: Arc<Mutex<Vec<String>>>,
}

type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>;

fn json_response(status: u16, body: &Value) -> hyper::Response<Body> {
    let mut response =
        hyper::Response::new(Full::new(Bytes::from(body.to_string())).boxed_unsync());
    *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

/// Where Leases live (any namespace).
const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/";

fn status(code: u16, reason: &str, message: &str) -> hyper::Response<Body> {
    json_response(
        code,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": message, "reason": reason, "code": code}),
    )
}

fn not_found(path: &str) -> hyper::Response<Body> {
    status(404, "NotFound", &format!("{path} not found"))
}

/// The API server's Lease semantics, kept in `resources` under the
/// Lease's path: GET, POST (409 when it exists) and PUT (409 unless the
/// body carries the stored resourceVersion); each write bumps it.
fn lease(
    resources: &Mutex<BTreeMap<String, Resource>>,
    method: &hyper::Method,
    path: &str,
    body: &[u8],
) -> hyper::Response<Body> {
    let mut all = resources.lock().unwrap();
    let stored = |all: &BTreeMap<String, Resource>, key: &str| {
        all.get(key).and_then(|r| r.lists.front().cloned())
    };
    let mut object: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let key = match *method {
        hyper::Method::POST => format!(
            "{path}/{}",
            object["metadata"]["name"].as_str().unwrap_or("")
        ),
        _ => path.to_owned(),
    };
    let current = stored(&all, &key);
    let version = current
        .as_ref()
        .and_then(|c| {
            c["metadata"]["resourceVersion"]
                .as_str()?
                .parse::<u64>()
                .ok()
        })
        .unwrap_or(0);
    match (method.clone(), current) {
        (hyper::Method::GET, Some(lease)) => json_response(200, &lease),
        (hyper::Method::GET, None) => not_found(path),
        (hyper::Method::POST, Some(_)) => status(409, "AlreadyExists", "lease exists"),
        (hyper::Method::PUT, None) => not_found(path),
        (hyper::Method::PUT, Some(_))
            if object["metadata"]["resourceVersion"] != json!(version.to_string()) =>
        {
            status(409, "Conflict", "the object has been modified")
        }
        (hyper::Method::POST | hyper::Method::PUT, _) => {
            object["metadata"]["resourceVersion"] = json!((version + 1).to_string());
            object["apiVersion"] = json!("coordination.k8s.io/v1");
            object["kind"] = json!("Lease");
            let code = if *method == hyper::Method::POST {
                201
            } else {
                200
            };
            all.insert(
                key,
                Resource {
                    lists: VecDeque::from([object.clone()]),
                    watches: VecDeque::new(),
                },
            );
            json_response(code, &object)
        }
        _ => status(405, "MethodNotAllowed", "not served here"),
    }
}

impl Replay {
    /// The Lease at `path` as stored, if any.
    pub fn lease(&self, namespace: &str, name: &str) -> Option<Value> {
        let key = format!("{LEASES}{namespace}/leases/{name}");
        self.resources
            .lock()
            .unwrap()
            .get(&key)
            .and_then(|r| r.lists.front().cloned())
    }
}

/// A chunked body playing `watch`.
fn watch_response(watch: Watch) -> hyper::Response<Body> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(16);
    tokio::spawn(async move {
        for step in watch.steps {
            match step {
                Step::Event(event) => {
                    let line = Bytes::from(format!("{event}\n"));
                    if tx.send(Ok(Frame::data(line))).await.is_err() {
                        return;
                    }
                }
                Step::Gate(mut gate) => {
                    let _ = gate.wait_for(|open| *open).await;
                }
            }
        }
        if watch.hold {
            // The client ends the connection (or the process ends).
            tx.closed().await;
        }
    });
    let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    let mut response = hyper::Response::new(body.boxed_unsync());
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

impl Replay {
    /// Starts the server with nothing to serve (every path a 404).
    pub fn start() -> Self {
        let resources: Arc<Mutex<BTreeMap<String, Resource>>> = Arc::default();
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        let (shared, logged) = (resources.clone(), log.clone());
        let addr = common::spawn_server(move |stream| {
            let (shared, logged) = (shared.clone(), logged.clone());
            async move {
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let (shared, logged) = (shared.clone(), logged.clone());
                        async move {
                            let method = req.method().clone();
                            let path = req.uri().path().to_owned();
                            let query = req.uri().query().unwrap_or("").to_owned();
                            let body = req.into_body().collect().await.map(|b| b.to_bytes());
                            let body = body.unwrap_or_default();
                            logged.lock().unwrap().push(format!("{path}?{query}"));
                            if method == hyper::Method::PATCH {
                                // A server-side apply: kept, answered with the object.
                                let mut object: Value =
                                    serde_json::from_slice(&body).unwrap_or(Value::Null);
                                logged
                                    .lock()
                                    .unwrap()
                                    .push(format!("PATCH {path} {object}"));
                                object["metadata"]["resourceVersion"] = json!("1000");
                                return Ok::<_, Infallible>(json_response(200, &object));
                            }
                            if path.starts_with(LEASES) {
                                return Ok::<_, Infallible>(lease(&shared, &method, &path, &body));
                            }
                            let watching = query
                                .split('&')
                                .any(|p| p == "watch=true" || p == "watch=1");
                            let mut all = shared.lock().unwrap();
                            let response = match all.get_mut(&path) {
                                None => not_found(&path),
                                Some(r) if watching => {
                                    let watch = r.watches.pop_front().unwrap_or(Watch {
                                        steps: Vec::new(),
                                        hold: true,
                                    });
                                    watch_response(watch)
                                }
                                Some(r) => {
                                    let list = if r.lists.len() > 1 {
                                        r.lists.pop_front().unwrap()
                                    } else {
                                        r.lists.front().cloned().unwrap_or(Value::Null)
                                    };
                                    json_response(200, &list)
                                }
                            };
                            Ok::<_, Infallible>(response)
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
        Self {
            addr,
            resources,
            log,
        }
    }

    /// Serves `path` (e.g. `/api/v1/pods`): its lists in turn, then its
    /// watches in turn (later watches stay open with no events).
    pub fn serve(&self, path: &str, lists: Vec<Value>, watches: Vec<Watch>) {
        self.resources.lock().unwrap().insert(
            path.to_owned(),
            Resource {
                lists: lists.into(),
                watches: watches.into(),
            },
        );
    }

    /// An empty list (and no watch events) at each of `resources`
    /// (`(path, apiVersion, kind)`), at `resource_version`.
    pub fn serve_empty(&self, resources: &[(&str, &str, &str)], resource_version: &str) {
        for (path, api_version, kind) in resources {
            let list = empty_list(api_version, kind, resource_version);
            self.serve(path, vec![list], vec![]);
        }
    }

    /// The server-side applies so far: (path, object).
    pub fn patches(&self) -> Vec<(String, Value)> {
        self.requests()
            .iter()
            .filter_map(|r| {
                let (path, object) = r.strip_prefix("PATCH ")?.split_once(' ')?;
                Some((path.to_owned(), serde_json::from_str(object).ok()?))
            })
            .collect()
    }

    /// Every request so far, as `path?query`.
    pub fn requests(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// The requests to `path` so far: (is a watch, its resourceVersion).
    pub fn calls(&self, path: &str) -> Vec<(bool, String)> {
        self.requests()
            .iter()
            .filter_map(|r| {
                let (p, query) = r.split_once('?')?;
                (p == path).then(|| {
                    let param = |name: &str| {
                        query
                            .split('&')
                            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                            .unwrap_or("")
                            .to_owned()
                    };
                    (param("watch") == "true", param("resourceVersion"))
                })
            })
            .collect()
    }

    /// A kubeconfig that points kube-rs at this server.
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: replay\n  cluster:\n    server: http://{}\n\
             users:\n- name: replay\n  user:\n    token: test\ncontexts:\n- name: replay\n  context:\n    \
             cluster: replay\n    user: replay\ncurrent-context: replay\n",
            self.addr
        );
        std::fs::write(&path, text).unwrap();
        path
    }
}

/// An empty list of `kind` at `resource_version`.
/// What discovery watches beside namespaces and pods: services, endpoint
/// slices and the owners it names workloads after.
pub const WORKLOAD_LISTS: &[(&str, &str, &str)] = &[
    ("/api/v1/services", "v1", "ServiceList"),
    (
        "/apis/discovery.k8s.io/v1/endpointslices",
        "discovery.k8s.io/v1",
        "EndpointSliceList",
    ),
    ("/apis/apps/v1/deployments", "apps/v1", "DeploymentList"),
    ("/apis/apps/v1/statefulsets", "apps/v1", "StatefulSetList"),
    ("/apis/batch/v1/jobs", "batch/v1", "JobList"),
];

/// Vigil's own resources.
pub const VIGIL_LISTS: &[(&str, &str, &str)] = &[
    (
        "/apis/vigil.io/v1alpha1/vigilpolicies",
        "vigil.io/v1alpha1",
        "VigilPolicyList",
    ),
    (
        "/apis/vigil.io/v1alpha1/vigilbaselines",
        "vigil.io/v1alpha1",
        "VigilBaselineList",
    ),
];

pub fn empty_list(api_version: &str, kind: &str, resource_version: &str) -> Value {
    json!({"kind": kind, "apiVersion": api_version,
           "metadata": {"resourceVersion": resource_version}, "items": []})
}
