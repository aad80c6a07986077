//! The sidecar's shape, as the webhook and `vigilctl inject` render it: one
//! typed set of flags (and `VIGIL_*` env vars), shared by both so that they
//! inject the same thing.

use serde::Serialize;

/// Env var names of the injection flags (also listed in the README).
pub mod env {
    /// `--proxy-image`.
    pub const PROXY_IMAGE: &str = "VIGIL_PROXY_IMAGE";
    /// `--proxy-image-pull-policy`.
    pub const PROXY_IMAGE_PULL_POLICY: &str = "VIGIL_PROXY_IMAGE_PULL_POLICY";
    /// `--proxy-uid`.
    pub const PROXY_UID: &str = "VIGIL_PROXY_UID";
    /// `--proxy-controller`.
    pub const PROXY_CONTROLLER: &str = "VIGIL_PROXY_CONTROLLER";
    /// `--proxy-token-secret`.
    pub const PROXY_TOKEN_SECRET: &str = "VIGIL_PROXY_TOKEN_SECRET";
    /// `--proxy-cpu-request`.
    pub const PROXY_CPU_REQUEST: &str = "VIGIL_PROXY_CPU_REQUEST";
    /// `--proxy-memory-request`.
    pub const PROXY_MEMORY_REQUEST: &str = "VIGIL_PROXY_MEMORY_REQUEST";
    /// `--proxy-cpu-limit`.
    pub const PROXY_CPU_LIMIT: &str = "VIGIL_PROXY_CPU_LIMIT";
    /// `--proxy-memory-limit`.
    pub const PROXY_MEMORY_LIMIT: &str = "VIGIL_PROXY_MEMORY_LIMIT";
    /// `--istio-uid`.
    pub const ISTIO_UID: &str = "VIGIL_ISTIO_UID";
    /// `--webhook-addr`.
    pub const WEBHOOK_ADDR: &str = "VIGIL_WEBHOOK_ADDR";
    /// `--webhook-cert`.
    pub const WEBHOOK_CERT: &str = "VIGIL_WEBHOOK_CERT";
    /// `--webhook-key`.
    pub const WEBHOOK_KEY: &str = "VIGIL_WEBHOOK_KEY";
}

/// Istio's proxy uid: Envoy runs as it, and Istio's rules let it out.
pub const ISTIO_UID: i64 = 1337;
/// The port of the sidecar's inbound listener.
pub const INBOUND_PORT: u16 = 4143;
/// The port of the sidecar's outbound listener.
pub const OUTBOUND_PORT: u16 = 4140;
/// The port of the sidecar's admin listener (`/live`, `/ready`, `/metrics`).
pub const ADMIN_PORT: u16 = 4191;
/// The port of the sidecar's DNS listener.
pub const DNS_PORT: u16 = 4153;

/// How the sidecar is rendered into a pod.
#[derive(Clone, Debug, clap::Args, Serialize, PartialEq, Eq)]
pub struct SidecarArgs {
    /// Image of `vigil-proxy` (the sidecar and its init container).
    #[arg(long, env = env::PROXY_IMAGE, default_value = "ghcr.io/vigil-mesh/vigil-proxy:0.1.0")]
    pub proxy_image: String,
    /// Pull policy of that image: Always, IfNotPresent or Never.
    #[arg(long, env = env::PROXY_IMAGE_PULL_POLICY, default_value = "IfNotPresent",
          value_parser = ["Always", "IfNotPresent", "Never"])]
    pub proxy_image_pull_policy: String,
    /// uid the sidecar runs as; its own traffic is never redirected. Not 0,
    /// and not Istio's 1337 (its egress must still pass through Envoy).
    #[arg(long, env = env::PROXY_UID, default_value_t = 2102,
          value_parser = clap::value_parser!(i64).range(1..=2_147_483_647))]
    pub proxy_uid: i64,
    /// The controller's gRPC URL, as the sidecars reach it.
    #[arg(long, env = env::PROXY_CONTROLLER,
          default_value = "http://vigil-controller.vigil-system.svc:8470")]
    pub proxy_controller: String,
    /// Secret (in the pod's namespace, key `token`) holding the sidecar
    /// token; mounted into the sidecar only.
    #[arg(long, env = env::PROXY_TOKEN_SECRET, default_value = "vigil-sidecar-token")]
    pub proxy_token_secret: String,
    /// CPU request of the sidecar ("" for none).
    #[arg(long, env = env::PROXY_CPU_REQUEST, default_value = "10m")]
    pub proxy_cpu_request: String,
    /// Memory request of the sidecar ("" for none).
    #[arg(long, env = env::PROXY_MEMORY_REQUEST, default_value = "32Mi")]
    pub proxy_memory_request: String,
    /// CPU limit of the sidecar ("" for none).
    #[arg(long, env = env::PROXY_CPU_LIMIT, default_value = "")]
    pub proxy_cpu_limit: String,
    /// Memory limit of the sidecar ("" for none).
    #[arg(long, env = env::PROXY_MEMORY_LIMIT, default_value = "256Mi")]
    pub proxy_memory_limit: String,
    /// uid of Istio's Envoy, when a pod also has Istio's sidecar: its
    /// traffic is left to Istio (never redirected into Vigil again).
    #[arg(long, env = env::ISTIO_UID, default_value_t = ISTIO_UID)]
    pub istio_uid: i64,
}

impl Default for SidecarArgs {
    fn default() -> Self {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Wrap {
            #[command(flatten)]
            sidecar: SidecarArgs,
        }
        Wrap::parse_from(["vigil"]).sidecar
    }
}

/// Why the injection flags are unusable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SidecarArgsError {
    /// The proxy uid collides with root or Istio's uid.
    #[error(
        "--proxy-uid {uid} is not usable: it must be neither 0 nor Istio's {istio}, or Envoy's traffic and the sidecar's could not be told apart"
    )]
    ProxyUid {
        /// The uid given.
        uid: i64,
        /// Istio's uid.
        istio: i64,
    },
    /// The image is empty.
    #[error("--proxy-image is empty: name the vigil-proxy image")]
    NoImage,
}

impl SidecarArgs {
    /// Checks the flags once, at start.
    pub fn validate(&self) -> Result<(), SidecarArgsError> {
        if self.proxy_uid == 0 || self.proxy_uid == self.istio_uid {
            return Err(SidecarArgsError::ProxyUid {
                uid: self.proxy_uid,
                istio: self.istio_uid,
            });
        }
        if self.proxy_image.trim().is_empty() {
            return Err(SidecarArgsError::NoImage);
        }
        Ok(())
    }
}

/// Flags of the admission webhook served by the controller.
#[derive(Clone, Debug, clap::Args, Serialize)]
pub struct WebhookArgs {
    /// HTTPS address of the admission webhook (`/mutate`, `/validate`).
    /// Served only when `--webhook-cert` is given.
    #[arg(long, env = env::WEBHOOK_ADDR, default_value = "0.0.0.0:8443")]
    pub webhook_addr: std::net::SocketAddr,
    /// PEM certificate chain of the webhook (re-read when the file changes).
    #[arg(long, env = env::WEBHOOK_CERT, requires = "webhook_key")]
    pub webhook_cert: Option<std::path::PathBuf>,
    /// PEM private key of the webhook.
    #[arg(long, env = env::WEBHOOK_KEY, requires = "webhook_cert")]
    pub webhook_key: Option<std::path::PathBuf>,
    /// How the sidecar is rendered.
    #[command(flatten)]
    pub sidecar: SidecarArgs,
}

impl Default for WebhookArgs {
    /// Not served (no certificate), the sidecar as the flags' defaults.
    fn default() -> Self {
        Self {
            webhook_addr: std::net::SocketAddr::from(([0, 0, 0, 0], 8443)),
            webhook_cert: None,
            webhook_key: None,
            sidecar: SidecarArgs::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_uid_may_be_neither_root_nor_istio() {
        let mut args = SidecarArgs::default();
        assert_eq!(args.validate(), Ok(()));
        for uid in [0, 1337] {
            args.proxy_uid = uid;
            assert!(matches!(
                args.validate(),
                Err(SidecarArgsError::ProxyUid { .. })
            ));
        }
        args.proxy_uid = 2102;
        args.proxy_image = " ".into();
        assert_eq!(args.validate(), Err(SidecarArgsError::NoImage));
    }
}
