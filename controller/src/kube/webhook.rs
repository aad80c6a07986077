//! The admission webhook's HTTPS server (thin): `POST /mutate` and
//! `POST /validate` take an AdmissionReview and answer with one, through
//! [`super::admission`]. TLS by rustls with the certificate and key files
//! re-read when they change (cert-manager rotates them in place). The
//! namespace of each pod is read from the API server with kube-rs; the
//! mode of a namespace comes from the engine's snapshot. `/validate` also
//! checks a new workload's profile against the baseline
//! ([`super::admission::profile`]).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use ::kube::core::DynamicObject;
use ::kube::core::admission::AdmissionReview;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::admission::{self, Review};
use super::config::SidecarArgs;
use super::identity::Namespace;
use crate::engine::Handle;

/// Largest AdmissionReview body accepted (a pod with many containers and
/// long environment lists stays far below it).
pub const MAX_BODY: usize = 4 * 1024 * 1024;
/// How long a namespace read from the API server is believed.
pub const NAMESPACE_TTL: Duration = Duration::from_secs(10);
/// How long a namespace read may take before the pod is admitted without it.
pub const NAMESPACE_TIMEOUT: Duration = Duration::from_secs(3);

/// Why the webhook could not start.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// A certificate or key file could not be read.
    #[error("cannot read the webhook {what} {path}: {reason}")]
    Pem {
        /// `certificate` or `key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The webhook's address could not be bound.
    #[error("cannot listen on {addr} (admission webhook): {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The flags are unusable.
    #[error(transparent)]
    Sidecar(#[from] super::config::SidecarArgsError),
    /// The key does not fit rustls.
    #[error("the webhook key {path} is not usable: {source}")]
    Key {
        /// The file.
        path: PathBuf,
        /// Why.
        source: rustls::Error,
    },
}

/// Certificate and key files, re-read when either file's modification
/// time changes.
#[derive(Debug)]
pub struct CertFiles {
    cert: PathBuf,
    key: PathBuf,
    loaded: Mutex<(Option<SystemTime>, Arc<CertifiedKey>)>,
}

fn mtime(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn load(cert: &Path, key: &Path) -> Result<CertifiedKey, WebhookError> {
    let pem = |what, path: &Path, e: rustls::pki_types::pem::Error| WebhookError::Pem {
        what,
        path: path.to_owned(),
        reason: e.to_string(),
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| pem("certificate", cert, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem("certificate", cert, e))?;
    if chain.is_empty() {
        return Err(WebhookError::Pem {
            what: "certificate",
            path: cert.to_owned(),
            reason: "no CERTIFICATE block".into(),
        });
    }
    let der = PrivateKeyDer::from_pem_file(key).map_err(|e| pem("key", key, e))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&der).map_err(|source| {
        WebhookError::Key {
            path: key.to_owned(),
            source,
        }
    })?;
    Ok(CertifiedKey::new(chain, signing))
}

impl CertFiles {
    /// Loads the files once (failing at start if they are unusable).
    pub fn new(cert: &Path, key: &Path) -> Result<Self, WebhookError> {
        let loaded = load(cert, key)?;
        Ok(Self {
            cert: cert.to_owned(),
            key: key.to_owned(),
            loaded: Mutex::new((mtime(cert).max(mtime(key)), Arc::new(loaded))),
        })
    }

    fn current(&self) -> Arc<CertifiedKey> {
        let stamp = mtime(&self.cert).max(mtime(&self.key));
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        if stamp != loaded.0 {
            match load(&self.cert, &self.key) {
                Ok(fresh) => {
                    tracing::info!(cert = %self.cert.display(), "webhook certificate reloaded");
                    *loaded = (stamp, Arc::new(fresh));
                }
                // Half-written files: keep serving the old pair.
                Err(e) => tracing::warn!(error = %e, "webhook certificate not reloaded"),
            }
        }
        loaded.1.clone()
    }
}

impl ResolvesServerCert for CertFiles {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// Reads namespaces from the API server, with a short cache.
#[derive(Clone)]
pub struct Namespaces {
    client: Option<::kube::Client>,
    cache: Arc<Mutex<std::collections::HashMap<String, (std::time::Instant, Namespace)>>>,
}

impl Namespaces {
    /// A reader with kube-rs's usual configuration (in-cluster service
    /// account, or `KUBECONFIG`); without one, every lookup fails and pods
    /// are admitted unchanged.
    pub async fn infer() -> Self {
        let client = match ::kube::Client::try_default().await {
            Ok(client) => Some(client),
            Err(e) => {
                tracing::warn!(error = %e, "no Kubernetes API: namespaces cannot be read, only pods with vigil.io/inject: enabled get the sidecar");
                None
            }
        };
        Self {
            client,
            cache: Arc::default(),
        }
    }

    /// The namespace `name`, or `None` when it cannot be read.
    pub async fn get(&self, name: &str) -> Option<Namespace> {
        let now = std::time::Instant::now();
        if let Some((at, ns)) = self.cache.lock().ok()?.get(name)
            && now.duration_since(*at) < NAMESPACE_TTL
        {
            return Some(ns.clone());
        }
        let client = self.client.clone()?;
        let api: ::kube::Api<k8s_openapi::api::core::v1::Namespace> = ::kube::Api::all(client);
        let read = tokio::time::timeout(NAMESPACE_TIMEOUT, api.get(name)).await;
        let object = match read {
            Ok(Ok(object)) => object,
            Ok(Err(e)) => {
                tracing::warn!(namespace = name, error = %e, "cannot read the namespace");
                return None;
            }
            Err(_) => {
                tracing::warn!(namespace = name, "reading the namespace timed out");
                return None;
            }
        };
        let ns = Namespace::from_object(&serde_json::to_value(object).ok()?);
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(name.to_owned(), (now, ns.clone()));
        }
        Some(ns)
    }
}

#[derive(Clone)]
struct Webhook {
    engine: Handle,
    namespaces: Namespaces,
    sidecar: Arc<SidecarArgs>,
}

/// The webhook's routes.
fn router(engine: Handle, namespaces: Namespaces, sidecar: SidecarArgs) -> Router {
    Router::new()
        .route("/mutate", post(mutate))
        .route("/validate", post(validate))
        .with_state(Webhook {
            engine,
            namespaces,
            sidecar: Arc::new(sidecar),
        })
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
}

fn reply(review: AdmissionReview<DynamicObject>) -> Response {
    (StatusCode::OK, axum::Json(admission::to_json(&review))).into_response()
}

async fn read(hook: &Webhook, body: &Bytes) -> Result<(Review, Option<Namespace>), Response> {
    let review = admission::parse(body).map_err(|e| {
        tracing::warn!(error = %e, "unreadable AdmissionReview");
        reply(admission::unreadable(&e))
    })?;
    let name = admission::namespace_of(&review);
    let namespace = hook.namespaces.get(&name).await;
    Ok((review, namespace))
}

async fn mutate(State(hook): State<Webhook>, body: Bytes) -> Response {
    let (review, namespace) = match read(&hook, &body).await {
        Ok(read) => read,
        Err(response) => return response,
    };
    let response = admission::mutate(&review, namespace.as_ref(), &hook.sidecar);
    tracing::debug!(uid = %response.uid, patched = response.patch.is_some(), "mutate");
    reply(response.into_review())
}

async fn validate(State(hook): State<Webhook>, body: Bytes) -> Response {
    let (review, namespace) = match read(&hook, &body).await {
        Ok(read) => read,
        Err(response) => return response,
    };
    let name = admission::namespace_of(&review);
    let mode = hook.engine.snapshot().modes.of(&name);
    let response = admission::validate(&review, namespace.as_ref(), mode, &hook.sidecar);
    let response = check_profile(&hook, &review, namespace.as_ref(), mode, response).await;
    if !response.allowed {
        tracing::info!(namespace = %name, reason = %response.result.message, "pod denied");
    }
    reply(response.into_review())
}

/// The profile check on top of `response`: outside learning, a new
/// workload whose profile is not in its namespace's baseline is denied
/// (enforcement) or warned about (alert-only), and alerted as a
/// `new_deployment` when the engine has never seen the workload (a dry run
/// raises nothing).
async fn check_profile(
    hook: &Webhook,
    review: &Review,
    namespace: Option<&Namespace>,
    mode: crate::model::Mode,
    response: ::kube::core::admission::AdmissionResponse,
) -> ::kube::core::admission::AdmissionResponse {
    use admission::profile::{self, Verdict};
    if mode == crate::model::Mode::Learning {
        return response;
    }
    let unknown = Namespace {
        name: admission::namespace_of(review),
        ..Namespace::default()
    };
    let Some(workload) = profile::workload_of(review, namespace.unwrap_or(&unknown)) else {
        return response;
    };
    let known = match tokio::time::timeout(NAMESPACE_TIMEOUT, hook.engine.export()).await {
        Ok(Ok(baseline)) => baseline.has_workload(&workload.baseline_id()),
        _ => {
            tracing::warn!(workload = %workload.id, "the baseline could not be read: profile not checked");
            let warning = format!(
                "vigil: the baseline could not be read; profile {} was not checked",
                workload.profile_label()
            );
            return profile::apply(response, &Verdict::Warn(warning));
        }
    };
    let verdict = profile::decide(&workload, mode, known);
    let node = format!("workload:{}", workload.id);
    let seen = || {
        hook.engine
            .snapshot()
            .graph
            .nodes
            .iter()
            .any(|n| n.id == node)
    };
    if verdict != Verdict::Admit && !review.request.dry_run && !seen() {
        // A workload never seen: the engine raises new_deployment (once).
        let found = crate::inventory::Discovered {
            id: workload.id.clone(),
            profile: workload.profile.clone(),
            tenant: workload.tenant.clone(),
            ..Default::default()
        };
        if let Err(e) = hook.engine.discovered(vec![found]).await {
            tracing::warn!(workload = %workload.id, error = %e, "new deployment not alerted");
        }
    }
    profile::apply(response, &verdict)
}

/// Serves the webhook on `listener` until `stop` turns true.
pub async fn serve(
    listener: TcpListener,
    certs: CertFiles,
    engine: Handle,
    namespaces: Namespaces,
    sidecar: SidecarArgs,
    mut stop: watch::Receiver<bool>,
) {
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports the default versions")
    .with_no_client_auth()
    .with_cert_resolver(Arc::new(certs));
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let app = router(engine, namespaces, sidecar);
    let stopped = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    tokio::pin!(stopped);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut stopped => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "webhook accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let handshake = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp));
            let stream = match handshake.await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    return tracing::debug!(%peer, error = %e, "webhook TLS handshake failed");
                }
                Err(_) => return tracing::debug!(%peer, "webhook TLS handshake timed out"),
            };
            let service = hyper::service::service_fn(move |request| {
                use tower::ServiceExt;
                app.clone().oneshot(request)
            });
            let served =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "webhook connection ended");
            }
        });
    }
}

/// Binds the webhook's address and starts serving, when `--webhook-cert`
/// is given: the bound address and the task.
pub async fn start(
    args: &super::config::WebhookArgs,
    engine: Handle,
    stop: watch::Receiver<bool>,
) -> Result<Option<(std::net::SocketAddr, tokio::task::JoinHandle<()>)>, WebhookError> {
    let (Some(cert), Some(key)) = (&args.webhook_cert, &args.webhook_key) else {
        return Ok(None);
    };
    args.sidecar.validate()?;
    let certs = CertFiles::new(cert, key)?;
    let bind = |source| WebhookError::Bind {
        addr: args.webhook_addr,
        source,
    };
    let listener = TcpListener::bind(args.webhook_addr).await.map_err(bind)?;
    let addr = listener.local_addr().map_err(bind)?;
    let namespaces = Namespaces::infer().await;
    let sidecar = args.sidecar.clone();
    let task = tokio::spawn(serve(listener, certs, engine, namespaces, sidecar, stop));
    tracing::info!(webhook_addr = %addr, "admission webhook serving /mutate and /validate");
    Ok(Some((addr, task)))
}
