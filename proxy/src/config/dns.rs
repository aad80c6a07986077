//! The DNS listener's flags: where it listens and which resolver it asks.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use serde::Serialize;

use super::TwinAddr;
use crate::resolve::parse_resolv_conf;

/// Env var of `--dns-addr`.
pub const ENV_DNS_ADDR: &str = "VIGIL_DNS_ADDR";
/// Env var of `--dns-addr6`.
pub const ENV_DNS_ADDR6: &str = "VIGIL_DNS_ADDR6";
/// Env var of `--dns-upstream`.
pub const ENV_DNS_UPSTREAM: &str = "VIGIL_DNS_UPSTREAM";
/// Where the default upstream resolver is read from.
pub const RESOLV_CONF: &str = "/etc/resolv.conf";
/// The DNS port.
pub const DNS_PORT: u16 = 53;

/// A listener's address, or `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenAddr {
    /// No listener.
    Off,
    /// This address.
    Addr(SocketAddr),
}

impl ListenAddr {
    /// The address, unless `off`.
    pub fn addr(self) -> Option<SocketAddr> {
        match self {
            ListenAddr::Off => None,
            ListenAddr::Addr(addr) => Some(addr),
        }
    }
}

impl std::str::FromStr for ListenAddr {
    type Err = std::net::AddrParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "off" => Ok(ListenAddr::Off),
            addr => addr.parse().map(ListenAddr::Addr),
        }
    }
}

/// `ip:port`, or an IP alone for port 53.
fn parse_upstream(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    s.parse::<SocketAddr>()
        .or_else(|_| s.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, DNS_PORT)))
        .map_err(|_| {
            format!("{s:?} is not an IP address or ip:port, e.g. 10.96.0.10 or 10.96.0.10:53")
        })
}

/// The DNS listener: the pod's queries (redirected from port 53 by
/// `vigil-proxy init`) are recorded, judged and forwarded to the pod's
/// resolver.
#[derive(Clone, Debug, clap::Args, Serialize)]
pub struct DnsArgs {
    /// DNS listener, UDP and TCP, where `vigil-proxy init` redirects the
    /// pod's DNS (port 53): an address, or `off`.
    #[arg(long, env = ENV_DNS_ADDR, default_value = "127.0.0.1:4153")]
    pub dns_addr: ListenAddr,
    /// IPv6 twin of --dns-addr, where ip6tables redirects IPv6 DNS: `auto`
    /// (`[::1]` on the same port when --dns-addr is loopback), an address,
    /// or `off`. Skipped on a host without IPv6.
    #[arg(long, env = ENV_DNS_ADDR6, default_value = "auto")]
    pub dns_addr6: TwinAddr,
    /// The resolver queries are forwarded to, `ip` or `ip:port` (default:
    /// the first `nameserver` of /etc/resolv.conf, port 53; 127.0.0.1
    /// when there is none, as the C library does).
    #[arg(long, env = ENV_DNS_UPSTREAM, value_parser = parse_upstream)]
    pub dns_upstream: Option<SocketAddr>,
}

impl DnsArgs {
    /// The IPv4 (or given) listener address, unless `off`.
    pub fn listen(&self) -> Option<SocketAddr> {
        self.dns_addr.addr()
    }

    /// The IPv6 twin's address, if any.
    pub fn listen6(&self) -> Option<SocketAddr> {
        self.dns_addr6.resolve(self.listen()?)
    }

    /// The upstream resolver: `--dns-upstream`, else the first nameserver
    /// of `resolv_conf` (its text, when it could be read) on port 53, else
    /// 127.0.0.1:53.
    pub fn upstream(&self, resolv_conf: Option<&str>) -> SocketAddr {
        self.dns_upstream.unwrap_or_else(|| {
            let ip = resolv_conf
                .and_then(parse_resolv_conf)
                .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
            SocketAddr::new(ip, DNS_PORT)
        })
    }
}
