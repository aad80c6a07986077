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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::config::{Args, Config};

    fn parse(extra: &[&str]) -> Result<Config, String> {
        let argv = ["vigil-proxy", "--workload", "w"]
            .into_iter()
            .chain(extra.iter().copied());
        let args = Args::try_parse_from(argv).map_err(|e| e.to_string())?;
        Config::from_args(args).map_err(|e| e.to_string())
    }

    #[test]
    fn the_relay_listens_on_loopback_by_default_and_may_be_turned_off() {
        let c = parse(&[]).unwrap();
        let udp = &c.args.udp;
        assert_eq!(udp.listen(), "127.0.0.1:4154".parse().ok());
        assert_eq!(udp.listen6(), "[::1]:4154".parse().ok());
        assert!(
            !udp.required(),
            "the default is left off when it cannot open"
        );
        assert_eq!(udp.idle_timeout().as_secs(), 60);
        assert_eq!(udp.udp_max_flows, 4096);
        let given = parse(&["--udp-addr", "127.0.0.1:5154"]).unwrap();
        assert!(given.args.udp.required());
        assert_eq!(given.args.udp.listen6(), "[::1]:5154".parse().ok());
        let off = parse(&["--udp-addr", "off"]).unwrap();
        assert_eq!(
            (off.args.udp.listen(), off.args.udp.listen6()),
            (None, None)
        );
        let no6 = parse(&["--udp-addr6", "off"]).unwrap();
        assert_eq!(no6.args.udp.listen6(), None);
    }

    #[test]
    fn bad_relay_flags_are_refused_with_the_flag_named() {
        let cases = [
            (vec!["--udp-addr", "on"], "--udp-addr"),
            (
                vec!["--udp-addr6", "127.0.0.1:4154"],
                "--udp-addr6 127.0.0.1:4154",
            ),
            (vec!["--udp-max-flows", "0"], "--udp-max-flows"),
            (vec!["--udp-idle-timeout-ms", "0"], "--udp-idle-timeout-ms"),
        ];
        for (args, want) in cases {
            let err = parse(&args).err().unwrap_or_default();
            assert!(err.contains(want), "{args:?}: {err}");
        }
    }
}
