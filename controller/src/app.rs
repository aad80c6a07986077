//! Wiring: opens the store, starts the engine, the gRPC server and the HTTP
//! API, and shuts them down in order.

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;

use crate::config::Args;
use crate::engine;
use crate::ingest::Ingest;
use crate::store::{Store, StoreError};

/// File name of the admin token inside the data directory.
pub const TOKEN_FILE: &str = "admin.token";

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
    /// The admin token could not be read or written.
    #[error("cannot read or create the admin token {path}: {source}")]
    Token {
        /// The token file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
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
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    engine: std::thread::JoinHandle<()>,
}

/// Reads the admin token, or creates it (mode 0600) on first start.
pub fn admin_token(data_dir: &Path) -> Result<(PathBuf, String), StartError> {
    let path = data_dir.join(TOKEN_FILE);
    let err = |source| StartError::Token {
        path: path.clone(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(token) if !token.trim().is_empty() => {
            let mode = std::fs::metadata(&path).map_err(err)?.permissions().mode();
            if mode & 0o077 != 0 {
                tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777), "the admin token is readable by others: chmod 600 it");
            }
            return Ok((path, token.trim().to_owned()));
        }
        Ok(_) => {
            return Err(err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "the file is empty; delete it to get a new token",
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| err(std::io::Error::other(e.to_string())))?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(err)?;
    writeln!(file, "{token}")
        .and_then(|()| file.sync_all())
        .map_err(err)?;
    tracing::info!(path = %path.display(), "wrote a new admin token");
    Ok((path, token))
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
    let store = Store::open(&args.data_dir)?;
    let mut registry = prometheus_client::registry::Registry::default();
    let (handle, engine) = engine::spawn(store, &mut registry)?;
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

    let mut stop = signal.clone();
    let ingest = Ingest::new(handle.clone()).into_server();
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
    let mut stop = signal;
    let router = crate::api::router(handle, &token, std::sync::Arc::new(registry));
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
    tracing::info!(%grpc_addr, %http_addr, data_dir = %args.data_dir.display(), "vigil-controller started");
    Ok(Running {
        grpc_addr,
        http_addr,
        token_path,
        token,
        shutdown,
        tasks: vec![grpc_task, http_task],
        engine,
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
        // The engine ends when the last handle (held by the servers) is gone.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_admin_token_is_created_once_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let (path, token) = admin_token(dir.path()).unwrap();
        assert_eq!(token.len(), 64);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let (_, again) = admin_token(dir.path()).unwrap();
        assert_eq!(again, token);
        let other = tempfile::tempdir().unwrap();
        assert_ne!(admin_token(other.path()).unwrap().1, token);
    }

    #[test]
    fn an_empty_token_file_is_an_error_not_an_open_door() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(TOKEN_FILE), "\n").unwrap();
        let err = admin_token(dir.path()).unwrap_err().to_string();
        assert!(err.contains("empty"), "{err}");
    }
}
