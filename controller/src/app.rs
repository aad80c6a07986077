//! Wiring: opens the store, starts the engine, the gRPC server and the HTTP
//! API, and shuts them down in order.

use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;

use crate::config::Args;
use crate::engine;
use crate::ingest::Ingest;
use crate::store::{Store, StoreError};
use crate::token::{self, TokenError};

/// File name of the admin token inside the data directory.
pub const TOKEN_FILE: &str = "admin.token";
/// File name of the read-only viewer token inside the data directory (the
/// web view and the API: reads only).
pub const VIEWER_TOKEN_FILE: &str = "viewer.token";
/// File name of the sidecar token inside the data directory (the default
/// of `--sidecar-token-file`).
pub const SIDECAR_TOKEN_FILE: &str = "sidecar.token";

/// Why the controller could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data directory could not be created.
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A token could not be read or written.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// A threat feed file could not be loaded (the error names its line).
    #[error(transparent)]
    Threat(#[from] crate::threat::FeedError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The admission webhook could not start.
    #[error(transparent)]
    Webhook(#[from] crate::kube::webhook::WebhookError),
    /// The notifiers could not start (a flag or a secret file is wrong).
    #[error(transparent)]
    Notify(#[from] crate::notify::NotifyError),
    /// `--kubernetes on` and no Kubernetes API configuration.
    #[error(transparent)]
    Discovery(#[from] crate::kube::discovery::DiscoveryError),
    /// A listener could not bind.
    #[error("cannot listen on {addr} ({what}): {source}; is another controller running?")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

/// A running controller.
#[derive(Debug)]
pub struct Running {
    /// Bound gRPC address.
    pub grpc_addr: SocketAddr,
    /// Bound HTTP API address.
    pub http_addr: SocketAddr,
    /// Path of the admin token.
    pub token_path: PathBuf,
    /// The admin token.
    pub token: String,
    /// Path of the read-only viewer token.
    pub viewer_token_path: PathBuf,
    /// The read-only viewer token.
    pub viewer_token: String,
    /// Path of the token sidecars present on the gRPC port.
    pub sidecar_token_path: PathBuf,
    /// Bound address of the admission webhook, when it is served.
    pub webhook_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    engine: std::thread::JoinHandle<()>,
    stopper: engine::Stopper,
}

/// Reads the admin token, or creates it (mode 0600) on first start.
pub fn admin_token(data_dir: &Path) -> Result<(PathBuf, String), StartError> {
    let path = data_dir.join(TOKEN_FILE);
    let token = token::load_or_create(&path, "admin")?;
    Ok((path, token))
}

/// Encodes the JSON of each published snapshot's new edge views on the
/// blocking pool (see [`crate::snapshot::Snapshot::warm`]), so that graph
/// reads copy bytes: at 50,000 edges a read that encoded them all would
/// take the better part of 100 ms. A snapshot published while the last is
/// warmed waits, and only the newest is warmed; the work follows the
/// edges reports change, never the engine thread. Ends with the engine.
/// `warmed` counts the edges encoded.
async fn keep_warm(
    mut snapshots: watch::Receiver<std::sync::Arc<crate::snapshot::Snapshot>>,
    warmed: prometheus_client::metrics::counter::Counter,
) {
    loop {
        let snapshot = snapshots.borrow_and_update().clone();
        match tokio::task::spawn_blocking(move || snapshot.warm()).await {
            Ok(encoded) => {
                warmed.inc_by(encoded as u64);
            }
            Err(_) => return,
        }
        if snapshots.changed().await.is_err() {
            return;
        }
    }
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { what, addr, source })
}

/// Starts the controller; port 0 binds free ports (see [`Running`]).
pub async fn start(args: &Args) -> Result<Running, StartError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&args.data_dir)
        .map_err(|source| StartError::DataDir {
            path: args.data_dir.clone(),
            source,
        })?;
    let (token_path, token) = admin_token(&args.data_dir)?;
    let viewer_token_path = args.data_dir.join(VIEWER_TOKEN_FILE);
    let viewer_token = token::load_or_create(&viewer_token_path, "viewer")?;
    let sidecar_token_path = args
        .sidecar_token_file
        .clone()
        .unwrap_or_else(|| args.data_dir.join(SIDECAR_TOKEN_FILE));
    let sidecar_token = token::load_or_create(&sidecar_token_path, "sidecar")?;
    let store = Store::open(&args.data_dir)?;
    let mut registry = prometheus_client::registry::Registry::default();
    // Threat feeds: `threat_feeds` sees every reload.
    let threats = crate::threat::Reloader::load(
        &args.threat_feed,
        !args.no_builtin_threats,
        crate::threat::ThreatMetrics::register(&mut registry),
    )?;
    let threat_feeds = threats.subscribe();
    let options = engine::Options {
        auto_quarantine: args.auto_quarantine.iter().copied().collect(),
        history_retention: args.history_retention,
        publish_every: engine::PUBLISH_EVERY,
        commit_linger: engine::COMMIT_LINGER,
    };
    let (handle, engine) = engine::spawn_with(store, &mut registry, options)?;
    let stopper = handle.stopper();
    let grpc = bind("gRPC", args.grpc_addr).await?;
    let http = bind("HTTP API", args.http_addr).await?;
    let grpc_addr = grpc.local_addr().map_err(|source| StartError::Bind {
        what: "gRPC",
        addr: args.grpc_addr,
        source,
    })?;
    let http_addr = http.local_addr().map_err(|source| StartError::Bind {
        what: "HTTP API",
        addr: args.http_addr,
        source,
    })?;
    let (shutdown, signal) = watch::channel(false);
    let warmed = prometheus_client::metrics::counter::Counter::default();
    registry.register(
        "vigil_controller_snapshot_edges_warmed",
        "Graph edges encoded as JSON ahead of reads, off the engine thread (the views snapshots built)",
        warmed.clone(),
    );
    tokio::spawn(keep_warm(handle.snapshots(), warmed));
    tokio::spawn(threats.run(crate::threat::reload::POLL_INTERVAL, signal.clone()));
    tokio::spawn(crate::threat::feed_engine(
        threat_feeds.clone(),
        handle.clone(),
    ));

    let mut stop = signal.clone();
    let ingest = Ingest::new(handle.clone()).into_server(sidecar_token, &mut registry);
    let grpc_task = tokio::spawn(async move {
        let served = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(std::time::Duration::from_secs(20)))
            .add_service(ingest)
            .serve_with_incoming_shutdown(TcpListenerStream::new(grpc), async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "gRPC server failed");
        }
    });
    let notifications = crate::notify::start(
        &args.notify,
        &args.data_dir,
        &handle,
        &mut registry,
        signal.clone(),
    )?;
    let webhook =
        crate::kube::webhook::start(&args.webhook, handle.clone(), signal.clone()).await?;
    let discovery =
        crate::kube::discovery::start(&args.discovery, handle.clone(), signal.clone()).await?;
    let web = crate::web::Web::new(
        crate::web::Tokens::new(&token, &viewer_token),
        signal.clone(),
    );
    let mut stop = signal;
    let router = crate::api::router(handle, web, std::sync::Arc::new(registry));
    let router = router.layer(axum::Extension(notifications));
    let router = router.layer(axum::Extension(threat_feeds));
    let http_task = tokio::spawn(async move {
        let served = axum::serve(http, router)
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "HTTP API failed");
        }
    });
    tracing::info!(%grpc_addr, %http_addr, data_dir = %args.data_dir.display(), sidecar_token_file = %sidecar_token_path.display(), "vigil-controller started");
    Ok(Running {
        grpc_addr,
        http_addr,
        token_path,
        token,
        viewer_token_path,
        viewer_token,
        sidecar_token_path,
        shutdown,
        webhook_addr: webhook.as_ref().map(|(addr, _)| *addr),
        tasks: [grpc_task, http_task]
            .into_iter()
            .chain(webhook.map(|(_, task)| task))
            .chain(discovery)
            .collect(),
        engine,
        stopper,
    })
}

impl Running {
    /// Stops the servers (bounded: open streams are cut after 5 s), then
    /// the engine, once every queued change is stored.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let abort = task.abort_handle();
            if tokio::time::timeout(std::time::Duration::from_secs(5), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
        // Sidecar streams may outlive the servers: stop the engine
        // explicitly, once what is queued is stored. Its end closes every
        // policy stream.
        self.stopper.stop(std::time::Duration::from_secs(5)).await;
        let engine = self.engine;
        let _ = tokio::task::spawn_blocking(move || engine.join()).await;
        tracing::info!("vigil-controller stopped");
    }

    /// Runs until SIGINT or SIGTERM, then shuts down.
    pub async fn wait(self) {
        shutdown_signal().await;
        self.shutdown().await;
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
