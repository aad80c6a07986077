//! Configuration of `vigil-controller`: one typed tree from flags and
//! `VIGIL_*` environment variables, validated once at start.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Serialize;

/// Env var names, one constant each (also listed in the README).
pub mod env {
    /// `--grpc-addr`.
    pub const GRPC_ADDR: &str = "VIGIL_GRPC_ADDR";
    /// `--http-addr`.
    pub const HTTP_ADDR: &str = "VIGIL_HTTP_ADDR";
    /// `--data-dir`.
    pub const DATA_DIR: &str = "VIGIL_DATA_DIR";
    /// `--log`.
    pub const LOG: &str = "VIGIL_LOG";
    /// `--sidecar-token-file`.
    pub const SIDECAR_TOKEN_FILE: &str = "VIGIL_SIDECAR_TOKEN_FILE";
    /// `--threat-feed`.
    pub const THREAT_FEED: &str = "VIGIL_THREAT_FEED";
    /// `--no-builtin-threats`.
    pub const NO_BUILTIN_THREATS: &str = "VIGIL_NO_BUILTIN_THREATS";
    /// `--auto-quarantine`.
    pub const AUTO_QUARANTINE: &str = "VIGIL_AUTO_QUARANTINE";
    /// `--history-retention`.
    pub const HISTORY_RETENTION: &str = "VIGIL_HISTORY_RETENTION";
}

/// Flags of `vigil-controller`.
#[derive(Clone, Debug, clap::Parser, Serialize)]
#[command(
    name = "vigil-controller",
    version,
    about = "Vigil's control plane: learns the service graph, raises alerts and pushes policy to the sidecars"
)]
pub struct Args {
    /// Address of the gRPC server the sidecars connect to.
    #[arg(long, env = env::GRPC_ADDR, default_value = "127.0.0.1:8470")]
    pub grpc_addr: SocketAddr,
    /// Address of the HTTP API (vigilctl, web view). Loopback by default:
    /// expose it only behind a trusted proxy.
    #[arg(long, env = env::HTTP_ADDR, default_value = "127.0.0.1:8480")]
    pub http_addr: SocketAddr,
    /// Directory of the store (vigil.redb) and the admin token (admin.token).
    #[arg(long, env = env::DATA_DIR, default_value = "./vigil-data")]
    pub data_dir: PathBuf,
    /// The token every sidecar must present on the gRPC port (created,
    /// mode 0600, on first start). Give it to the sidecars as a secret:
    /// `vigil-proxy --controller-token-file`. Default:
    /// `<data-dir>/sidecar.token`.
    #[arg(long, env = env::SIDECAR_TOKEN_FILE)]
    pub sidecar_token_file: Option<PathBuf>,
    /// A threat feed file (repeatable; comma-separated in the env var): a
    /// domain, `*.domain` (its subdomains) or CIDR a line, `#` comments.
    /// Reloaded on SIGHUP and when it changes; a bad line is an error at
    /// start and, later, keeps the previous list.
    #[arg(long = "threat-feed", env = env::THREAT_FEED, value_delimiter = ',')]
    pub threat_feed: Vec<PathBuf>,
    /// Leave out the built-in feed of mining pools (only `--threat-feed`
    /// files list anything).
    #[arg(long, env = env::NO_BUILTIN_THREATS)]
    pub no_builtin_threats: bool,
    /// Alert kinds that quarantine the workload at once, comma-separated
    /// (e.g. `threat,mining_protocol`); none by default.
    #[arg(long, env = env::AUTO_QUARANTINE, value_delimiter = ',', value_name = "KIND", value_parser = parse_alert_kind)]
    pub auto_quarantine: Vec<crate::model::AlertKind>,
    /// How long reported observations are kept (at most 100,000 of them)
    /// for `vigilctl baseline simulate`, e.g. `24h`, `7d`.
    #[arg(long, env = env::HISTORY_RETENTION, default_value = "24h", value_parser = crate::simulate::parse_window)]
    pub history_retention: u64,
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `vigil_controller=debug`.
    #[arg(long, env = env::LOG, default_value = "info")]
    pub log: String,
    /// The Kubernetes admission webhook (sidecar injection).
    #[command(flatten)]
    pub webhook: crate::kube::config::WebhookArgs,
    /// Kubernetes discovery (workloads, pod IPs, services).
    #[command(flatten)]
    pub discovery: crate::kube::discovery::DiscoveryArgs,
    /// Notifications: Slack and a signed JSON webhook.
    #[command(flatten)]
    pub notify: crate::notify::NotifyArgs,
}

/// Parses an `--auto-quarantine` kind; the error lists the valid ones.
fn parse_alert_kind(s: &str) -> Result<crate::model::AlertKind, String> {
    s.trim().parse()
}
