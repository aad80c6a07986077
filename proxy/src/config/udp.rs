//! The UDP relay's flags: where its transparent socket listens, how long a
//! quiet flow lives and how many may be open.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;

use super::{ListenAddr, TwinAddr};

/// Env var of `--udp-addr`.
pub const ENV_UDP_ADDR: &str = "VIGIL_UDP_ADDR";
/// Env var of `--udp-addr6`.
pub const ENV_UDP_ADDR6: &str = "VIGIL_UDP_ADDR6";
/// Env var of `--udp-idle-timeout-ms`.
pub const ENV_UDP_IDLE_TIMEOUT_MS: &str = "VIGIL_UDP_IDLE_TIMEOUT_MS";
/// Env var of `--udp-max-flows`.
pub const ENV_UDP_MAX_FLOWS: &str = "VIGIL_UDP_MAX_FLOWS";
/// Where the relay listens when `--udp-addr` is not given.
pub const DEFAULT_UDP_ADDR: &str = "127.0.0.1:4154";

/// The UDP relay: the pod's UDP other than DNS, which `vigil-proxy init`
/// sends here with `TPROXY`.
#[derive(Clone, Debug, clap::Args, Serialize)]
pub struct UdpArgs {
    /// UDP relay (a transparent socket: needs CAP_NET_RAW) where
    /// `vigil-proxy init` sends the pod's UDP other than DNS: an address, or
    /// `off`. Not given: 127.0.0.1:4154 when the sidecar may open it, else
    /// off with an error logged (the pod's UDP is then dropped by init's
    /// rules); given: the sidecar does not start without it.
    #[arg(long, env = ENV_UDP_ADDR)]
    pub udp_addr: Option<ListenAddr>,
    /// IPv6 twin of --udp-addr: `auto` (`[::1]` on the same port when
    /// --udp-addr is loopback), an address, or `off`. Skipped on a host
    /// without IPv6.
    #[arg(long, env = ENV_UDP_ADDR6, default_value = "auto")]
    pub udp_addr6: TwinAddr,
    /// A UDP flow without a datagram either way for this long ends (the
    /// next datagram starts a new, newly judged flow), in milliseconds.
    #[arg(long, env = ENV_UDP_IDLE_TIMEOUT_MS, default_value_t = 60_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub udp_idle_timeout_ms: u64,
    /// Most UDP flows open at once per relay socket; datagrams of further
    /// flows are dropped and counted in vigil_proxy_udp_dropped_total.
    #[arg(long, env = ENV_UDP_MAX_FLOWS, default_value_t = 4096,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub udp_max_flows: u64,
}

impl UdpArgs {
    /// The IPv4 (or given) relay address, unless `off`.
    pub fn listen(&self) -> Option<SocketAddr> {
        match self.udp_addr {
            Some(addr) => addr.addr(),
            None => DEFAULT_UDP_ADDR.parse().ok(),
        }
    }

    /// The IPv6 twin's address, if any.
    pub fn listen6(&self) -> Option<SocketAddr> {
        self.udp_addr6.resolve(self.listen()?)
    }

    /// Whether the relay must open (`--udp-addr` given), rather than be
    /// left off with an error when it cannot.
    pub fn required(&self) -> bool {
        self.udp_addr.is_some()
    }

    /// The idle timeout.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.udp_idle_timeout_ms)
    }
}
