//! The control client: watches this proxy's policy and streams reports to
//! vigil-controller over gRPC. Both tasks reconnect with exponential backoff
//! and never affect forwarding: when the controller is away the proxy keeps
//! enforcing the last policy it received.
//!
//! Every call carries the sidecar token (`--controller-token-file`, read
//! again at each connect so that a rotated secret is picked up).
//!
//! Outside-I/O tier: publishes into the policy `watch` and consumes the
//! telemetry batch channel; the data path never calls into it.

pub mod cache;
pub mod policy;
pub mod report;

use std::path::PathBuf;
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tonic::transport::{Channel, Endpoint};
use vigil_proto::v1::controller_client::ControllerClient;

/// First reconnect delay.
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Largest reconnect delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Timeout for establishing a connection to the controller.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Why talking to the controller failed (logged, then retried).
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The controller URL is not a valid endpoint.
    #[error("invalid controller URL {url}: {source}")]
    BadUrl {
        /// The URL.
        url: String,
        /// The parse error.
        source: tonic::transport::Error,
    },
    /// Connecting failed.
    #[error("cannot connect to the controller at {url}: {source}")]
    Connect {
        /// The URL.
        url: String,
        /// The transport error.
        source: tonic::transport::Error,
    },
    /// The sidecar token could not be read.
    #[error("cannot read the sidecar token --controller-token-file {path}: {source}")]
    Token {
        /// The token file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A call or stream failed.
    #[error("controller call failed: {0}")]
    Call(#[from] tonic::Status),
    /// The controller ended the stream.
    #[error("the controller closed the stream")]
    StreamEnded,
    /// The controller sent a policy that cannot be used.
    #[error(transparent)]
    BadPolicy(#[from] crate::policy::PolicyError),
}

/// Exponential backoff: 100 ms doubling to 5 s, reset after a success.
#[derive(Clone, Debug)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: BACKOFF_MIN }
    }
}

impl Backoff {
    /// The delay to wait now; doubles the following one.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        delay
    }

    /// Back to the first delay, after a success.
    pub fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }
}

/// Metrics of the control client.
#[derive(Clone, Debug, Default)]
pub struct ControlMetrics {
    /// 1 while the policy stream is established.
    pub connected: Gauge,
    /// Version of the policy in force.
    pub policy_version: Gauge,
}

impl ControlMetrics {
    /// Creates and registers the metrics.
    pub fn register(registry: &mut Registry) -> Self {
        let m = ControlMetrics::default();
        registry.register(
            "vigil_proxy_controller_connected",
            "1 while the policy stream to the controller is established",
            m.connected.clone(),
        );
        registry.register(
            "vigil_proxy_policy_version",
            "Version of the policy in force (0 before any policy arrived)",
            m.policy_version.clone(),
        );
        m
    }
}

/// The controller, and the token that proves this is one of its sidecars.
#[derive(Clone, Debug)]
pub struct Target {
    /// gRPC URL, e.g. `http://127.0.0.1:8470`.
    pub url: String,
    /// File holding the sidecar token, if any.
    pub token_file: Option<PathBuf>,
}

impl Target {
    /// A client on a new connection.
    pub async fn client(&self) -> Result<ControllerClient<Channel>, ControlError> {
        Ok(ControllerClient::new(connect(&self.url).await?))
    }

    /// `message` as a request that carries the sidecar token.
    pub async fn request<T>(&self, message: T) -> Result<tonic::Request<T>, ControlError> {
        let mut request = tonic::Request::new(message);
        let Some(path) = &self.token_file else {
            return Ok(request);
        };
        let err = |source| ControlError::Token {
            path: path.clone(),
            source,
        };
        let token = tokio::fs::read_to_string(path).await.map_err(err)?;
        let invalid = |why: &str| err(std::io::Error::new(std::io::ErrorKind::InvalidData, why));
        let token = token.trim();
        if token.is_empty() {
            return Err(invalid("the file is empty"));
        }
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|_| invalid("the token is not printable ASCII"))?;
        request.metadata_mut().insert("authorization", value);
        Ok(request)
    }
}

/// Connects to the controller at `url`.
pub async fn connect(url: &str) -> Result<Channel, ControlError> {
    let endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|source| ControlError::BadUrl {
            url: url.to_string(),
            source,
        })?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true);
    endpoint
        .connect()
        .await
        .map_err(|source| ControlError::Connect {
            url: url.to_string(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_resets() {
        let mut b = Backoff::default();
        let delays: Vec<u128> = (0..8).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(delays, vec![100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        b.reset();
        assert_eq!(b.next_delay(), BACKOFF_MIN);
    }
}
