//! Command-line flags and environment variables, validated once at start
//! into a serialisable [`Config`] (dumped on the admin port).
//!
//! Base tier: depends only on `resolve` for the hosts-file parser.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use serde::Serialize;

pub mod dns;
pub mod udp;

pub use dns::{DnsArgs, ListenAddr};
pub use udp::UdpArgs;

use crate::model::is_valid_name;
use crate::resolve::{ResolveError, SearchList, parse_hosts};

/// Env var for `--outbound-addr`.
pub const ENV_OUTBOUND_ADDR: &str = "VIGIL_OUTBOUND_ADDR";
/// Env var for `--inbound-addr`.
pub const ENV_INBOUND_ADDR: &str = "VIGIL_INBOUND_ADDR";
/// Env var for `--outbound-addr6`.
pub const ENV_OUTBOUND_ADDR6: &str = "VIGIL_OUTBOUND_ADDR6";
/// Env var for `--inbound-addr6`.
pub const ENV_INBOUND_ADDR6: &str = "VIGIL_INBOUND_ADDR6";
/// Env var for `--controller-token-file`.
pub const ENV_CONTROLLER_TOKEN_FILE: &str = "VIGIL_CONTROLLER_TOKEN_FILE";
/// Env var for `--app-addr`.
pub const ENV_APP_ADDR: &str = "VIGIL_APP_ADDR";
/// Env var for `--admin-addr`.
pub const ENV_ADMIN_ADDR: &str = "VIGIL_ADMIN_ADDR";
/// Env var for `--workload`.
pub const ENV_WORKLOAD: &str = "VIGIL_WORKLOAD";
/// Env var for `--namespace`.
pub const ENV_NAMESPACE: &str = "VIGIL_NAMESPACE";
/// Env var for `--tenant`.
pub const ENV_TENANT: &str = "VIGIL_TENANT";
/// Env var for `--profile`.
pub const ENV_PROFILE: &str = "VIGIL_PROFILE";
/// Env var for `--controller`.
pub const ENV_CONTROLLER: &str = "VIGIL_CONTROLLER";
/// Env var for `--hosts-file`.
pub const ENV_HOSTS_FILE: &str = "VIGIL_HOSTS_FILE";
/// Env var for `--advertise-addr` (comma-separated).
pub const ENV_ADVERTISE_ADDR: &str = "VIGIL_ADVERTISE_ADDR";
/// Env var for `--report-interval-ms`.
pub const ENV_REPORT_INTERVAL_MS: &str = "VIGIL_REPORT_INTERVAL_MS";
/// Env var for `--log`.
pub const ENV_LOG: &str = "VIGIL_LOG";
/// Env var for `--worker-threads`.
pub const ENV_WORKER_THREADS: &str = "VIGIL_WORKER_THREADS";
/// Env var of `--default-policy`.
pub const ENV_DEFAULT_POLICY: &str = "VIGIL_DEFAULT_POLICY";
/// Env var of `--policy-cache`.
pub const ENV_POLICY_CACHE: &str = "VIGIL_POLICY_CACHE";
/// Env var of `--policy-wait-ms`.
pub const ENV_POLICY_WAIT_MS: &str = "VIGIL_POLICY_WAIT_MS";
/// Env var of `--max-connections`.
pub const ENV_MAX_CONNECTIONS: &str = "VIGIL_MAX_CONNECTIONS";
/// Env var of `--max-header-bytes`.
pub const ENV_MAX_HEADER_BYTES: &str = "VIGIL_MAX_HEADER_BYTES";
/// Env var of `--header-read-timeout-ms`.
pub const ENV_HEADER_READ_TIMEOUT_MS: &str = "VIGIL_HEADER_READ_TIMEOUT_MS";
/// Env var of `--idle-timeout-ms`.
pub const ENV_IDLE_TIMEOUT_MS: &str = "VIGIL_IDLE_TIMEOUT_MS";
/// Env var of `--detect-timeout-ms`.
pub const ENV_DETECT_TIMEOUT_MS: &str = "VIGIL_DETECT_TIMEOUT_MS";
/// Env var of `--drain-timeout-ms`.
pub const ENV_DRAIN_TIMEOUT_MS: &str = "VIGIL_DRAIN_TIMEOUT_MS";
/// Env var of `--health-path` (comma-separated).
pub const ENV_HEALTH_PATHS: &str = "VIGIL_HEALTH_PATHS";

/// The IPv6 twin of a listener: `auto`, `off`, or an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TwinAddr {
    /// Follow the IPv4 listener: `[::1]` for loopback, `[::]` for any
    /// address, on the same port; none for another address.
    Auto,
    /// No IPv6 listener.
    Off,
    /// This address.
    Addr(SocketAddr),
}

impl TwinAddr {
    /// The IPv6 address to listen on beside the IPv4 listener at `v4`.
    pub fn resolve(self, v4: SocketAddr) -> Option<SocketAddr> {
        match self {
            TwinAddr::Off => None,
            TwinAddr::Addr(addr) => Some(addr),
            TwinAddr::Auto => {
                let ip = match v4.ip() {
                    ip if ip.is_loopback() => std::net::Ipv6Addr::LOCALHOST,
                    ip if ip.is_unspecified() => std::net::Ipv6Addr::UNSPECIFIED,
                    _ => return None,
                };
                Some(SocketAddr::from((ip, v4.port())))
            }
        }
    }
}

impl std::str::FromStr for TwinAddr {
    type Err = std::net::AddrParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "auto" => Ok(TwinAddr::Auto),
            "" | "off" => Ok(TwinAddr::Off),
            addr => addr.parse().map(TwinAddr::Addr),
        }
    }
}

/// vigil-proxy: the Vigil sidecar. Every flag can also be set by its env var.
#[derive(Clone, Debug, Parser, Serialize)]
#[command(
    name = "vigil-proxy",
    version,
    after_help = "Transparent interception: run `vigil-proxy init --help` (the pod's init container writes the iptables rules)."
)]
pub struct Args {
    /// Listener for the workload's outgoing traffic (explicit proxy or iptables redirect).
    #[arg(long, env = ENV_OUTBOUND_ADDR, default_value = "127.0.0.1:4140")]
    pub outbound_addr: SocketAddr,
    /// Listener for peers calling the workload.
    #[arg(long, env = ENV_INBOUND_ADDR, default_value = "0.0.0.0:4143")]
    pub inbound_addr: SocketAddr,
    /// IPv6 twin of --outbound-addr, where ip6tables redirects the
    /// workload's IPv6 traffic: `auto` (`[::1]` on the same port when
    /// --outbound-addr is loopback), an address, or `off`. Skipped on a host
    /// without IPv6.
    #[arg(long, env = ENV_OUTBOUND_ADDR6, default_value = "auto")]
    pub outbound_addr6: TwinAddr,
    /// IPv6 twin of --inbound-addr, IPv6 only: `auto` (`[::]` on the same
    /// port when --inbound-addr is 0.0.0.0, `[::1]` when loopback), an
    /// address, or `off`. Skipped on a host without IPv6.
    #[arg(long, env = ENV_INBOUND_ADDR6, default_value = "auto")]
    pub inbound_addr6: TwinAddr,
    /// The local workload's address.
    #[arg(long, env = ENV_APP_ADDR, default_value = "127.0.0.1:8080")]
    pub app_addr: SocketAddr,
    /// Admin listener: /live, /ready, /metrics, /config_dump.
    #[arg(long, env = ENV_ADMIN_ADDR, default_value = "127.0.0.1:4191")]
    pub admin_addr: SocketAddr,
    /// Name of the workload beside this proxy.
    #[arg(long, env = ENV_WORKLOAD)]
    pub workload: String,
    /// Namespace of the workload.
    #[arg(long, env = ENV_NAMESPACE, default_value = "default")]
    pub namespace: String,
    /// The account that owns the workload (a JupyterHub user, a Kubeflow
    /// profile owner), carried into every alert so the operator can act on
    /// it. Letters, digits and `@ . _ + = -`.
    #[arg(long, env = ENV_TENANT, default_value = "")]
    pub tenant: String,
    /// The profile of the workload: workloads of one profile share a
    /// baseline (a `vigil.io/profile` label, an image repository). Default:
    /// the workload name.
    #[arg(long, env = ENV_PROFILE, default_value = "")]
    pub profile: String,
    /// gRPC URL of vigil-controller.
    #[arg(long, env = ENV_CONTROLLER, default_value = "http://127.0.0.1:8470")]
    pub controller: String,
    /// File holding the sidecar token the controller requires (its
    /// `<data-dir>/sidecar.token`, mounted as a secret). Read at each
    /// connect.
    #[arg(long, env = ENV_CONTROLLER_TOKEN_FILE)]
    pub controller_token_file: Option<PathBuf>,
    /// File of `name ip` (or `ip name...`) lines overriding name resolution.
    #[arg(long, env = ENV_HOSTS_FILE)]
    pub hosts_file: Option<PathBuf>,
    /// Addresses at which peers reach the inbound listener (default: its bound address).
    #[arg(long, env = ENV_ADVERTISE_ADDR, value_delimiter = ',')]
    pub advertise_addr: Vec<SocketAddr>,
    /// How often observations are reported to the controller, in milliseconds.
    #[arg(long, env = ENV_REPORT_INTERVAL_MS, default_value_t = 1000)]
    pub report_interval_ms: u64,
    /// Log filter: a level, and `target=level` directives, comma-separated
    /// (tracing's `Targets` syntax), e.g. `info,vigil_proxy=debug`.
    #[arg(long, env = ENV_LOG, default_value = "info")]
    pub log: String,
    /// Data-path threads. 0 (the default): one per CPU this process may use
    /// (its CPU affinity and cgroup quota); with one CPU the data path runs
    /// on a single-threaded runtime, with no work stealing or cross-thread
    /// wake-ups. Admin and control traffic have their own thread either way.
    #[arg(long, env = ENV_WORKER_THREADS, default_value_t = 0)]
    pub worker_threads: usize,
    /// What to do before the controller's first policy arrives: `allow`
    /// (fail open) or `deny` (fail closed).
    #[arg(long, env = ENV_DEFAULT_POLICY, value_enum, default_value = "allow")]
    pub default_policy: crate::policy::DefaultPolicy,
    /// How long a request waits for the first policy after start, in
    /// milliseconds, before `--default-policy` applies. Policy arrives within
    /// milliseconds when the controller is up, so the first packets of a new
    /// pod are judged by it, not by the default.
    #[arg(long, env = ENV_POLICY_WAIT_MS, default_value_t = 2000)]
    pub policy_wait_ms: u64,
    /// File keeping the last policy received, so a restarted sidecar enforces
    /// it while the controller is away (e.g. on an emptyDir volume).
    #[arg(long, env = ENV_POLICY_CACHE)]
    pub policy_cache: Option<PathBuf>,
    /// Limits and timeouts of the data path.
    #[command(flatten)]
    pub limits: Limits,
    /// The DNS listener.
    #[command(flatten)]
    pub dns: DnsArgs,
    /// The UDP relay.
    #[command(flatten)]
    pub udp: UdpArgs,
}

/// Limits and timeouts: each bounds what one slow or hostile client can hold.
#[derive(Clone, Debug, clap::Args, Serialize)]
pub struct Limits {
    /// Most open connections per listener; further ones are closed at once.
    #[arg(long, env = ENV_MAX_CONNECTIONS, default_value_t = 10_000)]
    pub max_connections: usize,
    /// Largest HTTP/1 request head, and HTTP/2 header list, in bytes.
    #[arg(long, env = ENV_MAX_HEADER_BYTES, default_value_t = 64 * 1024)]
    pub max_header_bytes: usize,
    /// How long a client may take to send request headers, in milliseconds.
    #[arg(long, env = ENV_HEADER_READ_TIMEOUT_MS, default_value_t = 10_000)]
    pub header_read_timeout_ms: u64,
    /// How long an opaque stream (TCP, TLS, CONNECT tunnel) may stay
    /// without traffic, in milliseconds. Idle HTTP keep-alive connections
    /// are closed by the header-read timeout.
    #[arg(long, env = ENV_IDLE_TIMEOUT_MS, default_value_t = 300_000)]
    pub idle_timeout_ms: u64,
    /// How long to wait for a client's first bytes before treating the
    /// connection as opaque TCP (server-first protocols), in milliseconds.
    #[arg(long, env = ENV_DETECT_TIMEOUT_MS, default_value_t = 500)]
    pub detect_timeout_ms: u64,
    /// How long in-flight requests may take to finish on SIGTERM, in milliseconds.
    #[arg(long, env = ENV_DRAIN_TIMEOUT_MS, default_value_t = 10_000)]
    pub drain_timeout_ms: u64,
    /// An inbound HTTP path that is a health check (the pod's probes, such
    /// as `/healthz`): while the workload is quarantined, requests for
    /// exactly this path, from any caller, are still forwarded; everything
    /// else is refused. Repeatable; comma-separated in the env var.
    #[arg(long = "health-path", env = ENV_HEALTH_PATHS, value_delimiter = ',')]
    pub health_paths: Vec<String>,
}

impl Limits {
    /// `--header-read-timeout-ms`.
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms)
    }
    /// `--idle-timeout-ms`.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }
    /// `--detect-timeout-ms`.
    pub fn detect_timeout(&self) -> Duration {
        Duration::from_millis(self.detect_timeout_ms)
    }
    /// `--drain-timeout-ms`.
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.drain_timeout_ms)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let zero = [
            ("max-connections", self.max_connections as u64),
            ("max-header-bytes", self.max_header_bytes as u64),
            ("header-read-timeout-ms", self.header_read_timeout_ms),
            ("idle-timeout-ms", self.idle_timeout_ms),
            ("detect-timeout-ms", self.detect_timeout_ms),
        ];
        if let Some((flag, _)) = zero.iter().find(|(_, v)| *v == 0) {
            return Err(ConfigError::Zero(flag));
        }
        if self.max_header_bytes < 8192 {
            return Err(ConfigError::HeaderLimit(self.max_header_bytes));
        }
        if let Some(bad) = self.health_paths.iter().find(|p| !is_health_path(p)) {
            return Err(ConfigError::BadHealthPath(bad.clone()));
        }
        Ok(())
    }
}

/// Whether `path` can be a `--health-path`: absolute, visible ASCII, with
/// no query or fragment (requests are matched on their path exactly).
fn is_health_path(path: &str) -> bool {
    path.starts_with('/')
        && path
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#')
}

/// Why the flags were refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `--workload` or `--namespace` is not a valid name.
    #[error("--{flag} {value:?} is invalid: use 1-63 characters of a-z, 0-9, '-', '.', '_'")]
    BadName {
        /// The flag.
        flag: &'static str,
        /// Its value.
        value: String,
    },
    /// `--tenant` or `--profile` holds characters it may not.
    #[error("--{flag} {value:?} is invalid: use up to 253 characters of {allowed}")]
    BadLabel {
        /// The flag.
        flag: &'static str,
        /// Its value.
        value: String,
        /// What it may hold.
        allowed: &'static str,
    },
    /// `--controller` is not an http(s) URL.
    #[error("--controller {0:?} is invalid: expected a URL such as http://127.0.0.1:8470")]
    BadController(String),
    /// `--log` is not a valid filter.
    #[error(
        "--log {value:?} is not a valid tracing filter (e.g. `info` or `vigil_proxy=debug`): {detail}"
    )]
    BadLog {
        /// The value.
        value: String,
        /// The parser's message.
        detail: String,
    },
    /// An IPv6 listener flag holds an IPv4 address.
    #[error("--{flag} {addr} is not an IPv6 address: use e.g. [::1]:4140, or off")]
    NotIpv6 {
        /// The flag.
        flag: &'static str,
        /// Its value.
        addr: SocketAddr,
    },
    /// The DNS upstream is the DNS listener itself.
    #[error("--dns-upstream {0} is the DNS listener itself: name the pod's resolver")]
    DnsLoop(SocketAddr),
    /// `--report-interval-ms` is zero.
    #[error("--report-interval-ms must be at least 1")]
    ZeroInterval,
    /// A limit is zero.
    #[error("--{0} must be at least 1")]
    Zero(&'static str),
    /// A `--health-path` is not an absolute path.
    #[error("--health-path {0:?} is not a path: use e.g. /healthz (no query, no spaces)")]
    BadHealthPath(String),
    /// `--max-header-bytes` is too small for real clients.
    #[error("--max-header-bytes {0} is too small: use at least 8192")]
    HeaderLimit(usize),
    /// The hosts file cannot be read.
    #[error("cannot read --hosts-file {path}: {source}")]
    ReadHosts {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The hosts file is malformed.
    #[error("--hosts-file {path}: {source}")]
    ParseHosts {
        /// The file.
        path: PathBuf,
        /// The parse error.
        source: ResolveError,
    },
}

/// The validated configuration.
#[derive(Clone, Debug, Serialize)]
pub struct Config {
    /// The flags as given.
    pub args: Args,
    /// Parsed hosts-file overrides.
    pub hosts: HashMap<String, IpAddr>,
    /// Where the DNS listener forwards queries (`--dns-upstream` or
    /// resolv.conf); `None` when the listener is off.
    pub dns_upstream: Option<SocketAddr>,
    /// The pod's search list (resolv.conf): which answers bind a short
    /// name (see [`SearchList`]).
    pub search: SearchList,
}

impl Config {
    /// Validates `args` (and reads the hosts file).
    pub fn from_args(args: Args) -> Result<Config, ConfigError> {
        for (flag, value) in [("workload", &args.workload), ("namespace", &args.namespace)] {
            if !is_valid_name(value) {
                return Err(ConfigError::BadName {
                    flag,
                    value: value.clone(),
                });
            }
        }
        if !vigil_proto::is_valid_tenant(&args.tenant) {
            return Err(ConfigError::BadLabel {
                flag: "tenant",
                value: args.tenant.clone(),
                allowed: "letters, digits and '@', '.', '_', '+', '=', '-'",
            });
        }
        if !vigil_proto::is_valid_profile(&args.profile) {
            return Err(ConfigError::BadLabel {
                flag: "profile",
                value: args.profile.clone(),
                allowed: "a-z, 0-9, '.', '_', '-', '/' (not first)",
            });
        }
        let uri: http::Uri = args
            .controller
            .parse()
            .map_err(|_| ConfigError::BadController(args.controller.clone()))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(ConfigError::BadController(args.controller.clone()));
        }
        if let Err(e) = args.log.parse::<tracing_subscriber::filter::Targets>() {
            return Err(ConfigError::BadLog {
                value: args.log.clone(),
                detail: e.to_string(),
            });
        }
        for (flag, twin) in [
            ("outbound-addr6", args.outbound_addr6),
            ("inbound-addr6", args.inbound_addr6),
            ("dns-addr6", args.dns.dns_addr6),
            ("udp-addr6", args.udp.udp_addr6),
        ] {
            if let TwinAddr::Addr(addr) = twin
                && addr.is_ipv4()
            {
                return Err(ConfigError::NotIpv6 { flag, addr });
            }
        }
        if args.report_interval_ms == 0 {
            return Err(ConfigError::ZeroInterval);
        }
        args.limits.validate()?;
        let hosts = match &args.hosts_file {
            None => HashMap::new(),
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| ConfigError::ReadHosts {
                        path: path.clone(),
                        source,
                    })?;
                parse_hosts(&text).map_err(|source| ConfigError::ParseHosts {
                    path: path.clone(),
                    source,
                })?
            }
        };
        // The pod's resolv.conf (the sidecar shares it): the upstream
        // resolver, and the search list its clients resolve short names by.
        let resolv_conf = std::fs::read_to_string(dns::RESOLV_CONF).ok();
        let dns_upstream = args
            .dns
            .listen()
            .map(|_| args.dns.upstream(resolv_conf.as_deref()));
        let search = resolv_conf
            .as_deref()
            .map(SearchList::parse)
            .unwrap_or_default();
        if let Some(upstream) = dns_upstream
            && [args.dns.listen(), args.dns.listen6()].contains(&Some(upstream))
        {
            return Err(ConfigError::DnsLoop(upstream));
        }
        Ok(Config {
            args,
            hosts,
            dns_upstream,
            search,
        })
    }

    /// The reporting interval.
    pub fn report_interval(&self) -> Duration {
        Duration::from_millis(self.args.report_interval_ms)
    }

    /// Addresses advertised to the controller, given the bound inbound address.
    pub fn advertise_addrs(&self, bound_inbound: SocketAddr) -> Vec<SocketAddr> {
        if !self.args.advertise_addr.is_empty() {
            return self.args.advertise_addr.clone();
        }
        let mut addr = bound_inbound;
        if addr.ip().is_unspecified() {
            addr.set_ip(IpAddr::from([127, 0, 0, 1]));
        }
        vec![addr]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &[&str]) -> Result<Config, String> {
        let mut argv = vec!["vigil-proxy"];
        argv.extend_from_slice(extra);
        let args = Args::try_parse_from(argv).map_err(|e| e.to_string())?;
        Config::from_args(args).map_err(|e| e.to_string())
    }

    #[test]
    fn health_paths() {
        let c = parse(&["--workload", "w"]).unwrap();
        assert!(c.args.limits.health_paths.is_empty());
        let c = parse(&[
            "--workload",
            "w",
            "--health-path",
            "/healthz",
            "--health-path",
            "/api,/ready",
        ])
        .unwrap();
        assert_eq!(c.args.limits.health_paths, ["/healthz", "/api", "/ready"]);
        for bad in ["healthz", "/a?b", "/a b", ""] {
            let err = parse(&["--workload", "w", "--health-path", bad]).unwrap_err();
            assert!(err.contains("--health-path"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn defaults_and_validation() {
        let c = parse(&["--workload", "web"]).unwrap();
        assert_eq!(c.args.namespace, "default");
        assert_eq!(c.args.outbound_addr.to_string(), "127.0.0.1:4140");
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(
            c.args.outbound_addr6.resolve(c.args.outbound_addr),
            Some(addr("[::1]:4140")),
            "the IPv6 twins are on by default"
        );
        assert_eq!(
            c.args.inbound_addr6.resolve(c.args.inbound_addr),
            Some(addr("[::]:4143"))
        );
        let twins = [
            (TwinAddr::Auto, "127.0.0.1:5140", Some("[::1]:5140")),
            (TwinAddr::Auto, "0.0.0.0:0", Some("[::]:0")),
            (TwinAddr::Auto, "10.0.0.5:4143", None),
            (TwinAddr::Off, "127.0.0.1:4140", None),
            (
                TwinAddr::Addr(addr("[fd00::1]:9")),
                "0.0.0.0:1",
                Some("[fd00::1]:9"),
            ),
        ];
        for (twin, v4, want) in twins {
            assert_eq!(
                twin.resolve(addr(v4)),
                want.map(addr),
                "{twin:?} beside {v4}"
            );
        }
        assert_eq!(c.args.dns.listen(), Some(addr("127.0.0.1:4153")));
        assert_eq!(c.args.dns.listen6(), Some(addr("[::1]:4153")));
        assert!(
            c.dns_upstream.is_some(),
            "from resolv.conf, or 127.0.0.1:53"
        );
        let dns = parse(&["--workload", "w", "--dns-upstream", "10.96.0.10"]).unwrap();
        assert_eq!(dns.dns_upstream, Some(addr("10.96.0.10:53")));
        let dns = parse(&["--workload", "w", "--dns-upstream", "[fd00::a]:5353"]).unwrap();
        assert_eq!(dns.dns_upstream, Some(addr("[fd00::a]:5353")));
        let dns = parse(&["--workload", "w", "--dns-addr", "off"]).unwrap();
        assert_eq!(
            (dns.args.dns.listen(), dns.args.dns.listen6()),
            (None, None)
        );
        assert_eq!(dns.dns_upstream, None);
        let resolv = "search svc\nnameserver 10.96.0.10\n";
        assert_eq!(c.args.dns.upstream(Some(resolv)), addr("10.96.0.10:53"));
        assert_eq!(c.args.dns.upstream(Some("")), addr("127.0.0.1:53"));
        assert_eq!(c.args.dns.upstream(None), addr("127.0.0.1:53"));
        let off = parse(&["--workload", "w", "--outbound-addr6", "off"]).unwrap();
        assert_eq!(off.args.outbound_addr6, TwinAddr::Off);
        let bound: SocketAddr = "0.0.0.0:4143".parse().unwrap();
        assert_eq!(
            c.advertise_addrs(bound),
            vec!["127.0.0.1:4143".parse().unwrap()]
        );

        let c = parse(&[
            "--workload",
            "web",
            "--advertise-addr",
            "10.0.0.1:1,10.0.0.2:2",
        ])
        .unwrap();
        assert_eq!(c.advertise_addrs(bound).len(), 2);

        let cases = [
            (vec!["--workload", "Web"], "--workload"),
            (vec!["--workload", "w", "--tenant", "a b"], "--tenant"),
            (vec!["--workload", "w", "--profile", "/x"], "--profile"),
            (vec!["--workload", "w", "--namespace", "a/b"], "--namespace"),
            (
                vec!["--workload", "w", "--controller", "nope"],
                "--controller",
            ),
            (
                vec!["--workload", "w", "--report-interval-ms", "0"],
                "--report-interval-ms",
            ),
            (
                vec!["--workload", "w", "--hosts-file", "/nonexistent/x"],
                "--hosts-file",
            ),
            (vec!["--workload", "w", "--app-addr", "x"], "--app-addr"),
            (
                vec!["--workload", "w", "--inbound-addr6", "0.0.0.0:4143"],
                "--inbound-addr6 0.0.0.0:4143 is not an IPv6 address",
            ),
            (
                vec!["--workload", "w", "--outbound-addr6", "nope"],
                "--outbound-addr6",
            ),
            (vec!["--workload", "w", "--log", "a=b=c"], "--log"),
            (
                vec!["--workload", "w", "--max-connections", "0"],
                "--max-connections",
            ),
            (
                vec!["--workload", "w", "--max-header-bytes", "100"],
                "--max-header-bytes",
            ),
            (
                vec!["--workload", "w", "--detect-timeout-ms", "0"],
                "--detect-timeout-ms",
            ),
            (
                vec!["--workload", "w", "--dns-upstream", "resolver"],
                "not an IP address or ip:port",
            ),
            (vec!["--workload", "w", "--dns-addr", "on"], "--dns-addr"),
            (
                vec!["--workload", "w", "--dns-addr6", "127.0.0.1:4153"],
                "--dns-addr6 127.0.0.1:4153 is not an IPv6 address",
            ),
            (
                vec!["--workload", "w", "--dns-upstream", "127.0.0.1:4153"],
                "is the DNS listener itself",
            ),
        ];
        for (argv, want) in cases {
            let err = parse(&argv).unwrap_err();
            assert!(err.contains(want), "{argv:?}: {err}");
        }
    }
}
