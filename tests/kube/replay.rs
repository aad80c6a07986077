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
                        let path = req.uri().path().to_owned();
                        let query = req.uri().query().unwrap_or("").to_owned();
                        logged.lock().unwrap().push(format!("{path}?{query}"));
                        let watching = query
                            .split('&')
                            .any(|p| p == "watch=true" || p == "watch=1");
                        let response = {
                            let mut all = shared.lock().unwrap();
                            match all.get_mut(&path) {
                                None => json_response(
                                    404,
                                    &json!({"kind": "Status",
                                    "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                    "message": format!("{path} not found"), "reason": "NotFound",
                                    "code": 404}),
                                ),
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
                            }
                        };
                        async move { Ok::<_, Infallible>(response) }
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
pub fn empty_list(api_version: &str, kind: &str, resource_version: &str) -> Value {
    json!({"kind": kind, "apiVersion": api_version,
           "metadata": {"resourceVersion": resource_version}, "items": []})
}
