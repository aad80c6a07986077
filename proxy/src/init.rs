//! `vigil-proxy init`: the pod's init step (like linkerd's proxy-init or
//! istio-init). It writes iptables `nat` rules so that the pod's TCP traffic
//! passes through the sidecar: inbound to the inbound listener, outbound to
//! the outbound listener (a transparent redirect target), and its DNS (UDP
//! and TCP port 53, whatever the server) to the DNS listener.
//!
//! DNS comes right after the sidecar's own traffic, before loopback and the
//! skip lists: `--skip-outbound-ports` and `--skip-outbound-cidrs` exempt
//! TCP connections, not DNS (the cluster's DNS service usually lies in the
//! service network such lists name, and a server the notebook picks itself
//! must be answered by the pod's resolver too); `--redirect-dns off` is the
//! way to leave DNS alone.
//!
//! Decide, then do: [`plan`] and [`plan_remove`] turn the flags into a list
//! of [`IptablesCommand`]s (pure, table-tested); [`apply`] runs them. Vigil
//! only touches its own chains, [`INBOUND_CHAIN`] and [`OUTBOUND_CHAIN`],
//! and one jump to each from `PREROUTING` and `OUTPUT`: planning is
//! idempotent (one `iptables-restore --noflush` transaction creates or
//! flushes and refills its chains, so a re-run swaps their rules at once;
//! a jump is added only when `-C` says it is absent) and `--remove` deletes
//! exactly those.
//!
//! Both IP families: the same chains are written with `ip6tables` whenever
//! the kernel speaks IPv6 (`--ipv6 auto`), because a pod whose IPv6 TCP is
//! not redirected has a way around the sidecar. If that cannot be done,
//! init fails rather than leave the hole open; `--ipv6 off` opts out.
//!
//! Beside another mesh (Istio): the jumps are inserted first in
//! `PREROUTING` and `OUTPUT`, so Vigil's rules run ahead of Istio's
//! whichever init ran first, and `--skip-outbound-uids 1337` lets Envoy's
//! own traffic out untouched. The workload's connections then reach the
//! sidecar first; the sidecar's (its uid is not Envoy's) go on through
//! Istio's rules to Envoy, which keeps its mTLS.
//!
//! Base tier: depends on nothing else in this crate.

mod apply;
pub mod egress;
pub mod udp;
mod values;

use std::fmt;

use clap::{Parser, ValueEnum};

pub use apply::{apply, apply_with};
pub use values::{CidrList, IpCidr, PortList, PortRange};

/// The chain that `PREROUTING` jumps to for TCP arriving at the pod.
pub const INBOUND_CHAIN: &str = "VIGIL_INBOUND";
/// The chain that `OUTPUT` jumps to for TCP leaving the pod.
pub const OUTBOUND_CHAIN: &str = "VIGIL_OUTBOUND";
/// IPv4 destinations never redirected outbound: the pod talking to itself.
pub const LOOPBACK_CIDR: &str = "127.0.0.0/8";
/// The IPv6 counterpart of [`LOOPBACK_CIDR`].
pub const LOOPBACK_CIDR6: &str = "::1/128";
/// Exists when the kernel (in this network namespace) speaks IPv6.
const IF_INET6: &str = "/proc/net/if_inet6";

/// Env var for `--inbound-port`.
pub const ENV_INIT_INBOUND_PORT: &str = "VIGIL_INIT_INBOUND_PORT";
/// Env var for `--outbound-port`.
pub const ENV_INIT_OUTBOUND_PORT: &str = "VIGIL_INIT_OUTBOUND_PORT";
/// Env var for `--proxy-uid`.
pub const ENV_INIT_PROXY_UID: &str = "VIGIL_INIT_PROXY_UID";
/// Env var for `--skip-outbound-uids` (comma-separated).
pub const ENV_INIT_SKIP_OUTBOUND_UIDS: &str = "VIGIL_INIT_SKIP_OUTBOUND_UIDS";
/// Env var for `--dns-port`.
pub const ENV_INIT_DNS_PORT: &str = "VIGIL_INIT_DNS_PORT";
/// Env var for `--redirect-dns` (`on` or `off`).
pub const ENV_INIT_REDIRECT_DNS: &str = "VIGIL_INIT_REDIRECT_DNS";
/// The port of DNS.
pub const DNS_PORT: &str = "53";
/// Env var for `--udp-port`.
pub const ENV_INIT_UDP_PORT: &str = "VIGIL_INIT_UDP_PORT";
/// Env var for `--redirect-udp` (`on` or `off`).
pub const ENV_INIT_REDIRECT_UDP: &str = "VIGIL_INIT_REDIRECT_UDP";
/// Env var for `--block-other-protocols`.
pub const ENV_INIT_BLOCK_OTHER_PROTOCOLS: &str = "VIGIL_INIT_BLOCK_OTHER_PROTOCOLS";
/// Env var for `--skip-inbound-ports` (comma-separated).
pub const ENV_INIT_SKIP_INBOUND_PORTS: &str = "VIGIL_INIT_SKIP_INBOUND_PORTS";
/// Env var for `--skip-outbound-ports` (comma-separated).
pub const ENV_INIT_SKIP_OUTBOUND_PORTS: &str = "VIGIL_INIT_SKIP_OUTBOUND_PORTS";
/// Env var for `--skip-outbound-cidrs` (comma-separated).
pub const ENV_INIT_SKIP_OUTBOUND_CIDRS: &str = "VIGIL_INIT_SKIP_OUTBOUND_CIDRS";
/// Env var for `--iptables`.
pub const ENV_INIT_IPTABLES: &str = "VIGIL_INIT_IPTABLES";
/// Env var for `--ipv6` (`auto`, `on` or `off`).
pub const ENV_INIT_IPV6: &str = "VIGIL_INIT_IPV6";
/// Env var for `--ip6tables`.
pub const ENV_INIT_IP6TABLES: &str = "VIGIL_INIT_IP6TABLES";
/// Env var for `--dry-run` (`true`/`false`).
pub const ENV_INIT_DRY_RUN: &str = "VIGIL_INIT_DRY_RUN";
/// Env var for `--remove` (`true`/`false`).
pub const ENV_INIT_REMOVE: &str = "VIGIL_INIT_REMOVE";

/// vigil-proxy init: redirect the pod's TCP traffic through the sidecar with
/// iptables (nat table, chains VIGIL_INBOUND and VIGIL_OUTBOUND). Run it as
/// root (or with CAP_NET_ADMIN) in the pod's network namespace before the
/// sidecar and the workload start. Every flag can also be set by its env var.
#[derive(Clone, Debug, Parser, PartialEq, Eq)]
#[command(name = "vigil-proxy init", bin_name = "vigil-proxy init", version)]
pub struct InitArgs {
    /// Port of the sidecar's inbound listener (`--inbound-addr`).
    #[arg(long, env = ENV_INIT_INBOUND_PORT, default_value_t = 4143,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub inbound_port: u16,
    /// Port of the sidecar's outbound listener (`--outbound-addr`).
    #[arg(long, env = ENV_INIT_OUTBOUND_PORT, default_value_t = 4140,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub outbound_port: u16,
    /// Port of the sidecar's DNS listener (`--dns-addr`, and its IPv6 twin).
    #[arg(long, env = ENV_INIT_DNS_PORT, default_value_t = 4153,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub dns_port: u16,
    /// Redirect the pod's DNS (UDP and TCP port 53, to any server) to the
    /// DNS listener: `on` or `off`.
    #[arg(long, env = ENV_INIT_REDIRECT_DNS, value_enum, default_value_t = Switch::On)]
    pub redirect_dns: Switch,
    /// Port of the sidecar's UDP relay (`--udp-addr`, on 127.0.0.1 and
    /// [::1]).
    #[arg(long, env = ENV_INIT_UDP_PORT, default_value_t = 4154,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub udp_port: u16,
    /// Send the pod's UDP other than DNS (every uid but the sidecar's, to
    /// any address outside the pod) to the UDP relay with TPROXY (mangle
    /// table, chains VIGIL_UDP and VIGIL_UDP_TPROXY, a policy route to lo):
    /// `on` or `off`.
    #[arg(long, env = ENV_INIT_REDIRECT_UDP, value_enum, default_value_t = Switch::On)]
    pub redirect_udp: Switch,
    /// Drop what the pod sends that is neither TCP nor UDP (every uid but
    /// the sidecar's and --skip-outbound-uids; loopback and ICMP other than
    /// echo requests pass): ICMP echo tunnels and other protocols would
    /// leave unseen (filter table, chain VIGIL_EGRESS): `on` or `off`.
    #[arg(long, env = ENV_INIT_BLOCK_OTHER_PROTOCOLS, value_enum, default_value_t = Switch::On)]
    pub block_other_protocols: Switch,
    /// uid the sidecar runs as: its own connections are never redirected
    /// (without this, they would loop back into it).
    #[arg(long, env = ENV_INIT_PROXY_UID, default_value_t = 2102)]
    pub proxy_uid: u32,
    /// Other uids whose outbound traffic is never redirected, e.g. `1337`
    /// for Istio's Envoy beside the sidecar (its egress then leaves as
    /// Istio routes it, instead of looping back into Vigil).
    #[arg(long, env = ENV_INIT_SKIP_OUTBOUND_UIDS, value_delimiter = ',', value_name = "UIDS")]
    pub skip_outbound_uids: Vec<u32>,
    /// Inbound ports not redirected, e.g. `4191,9000-9100` (the default is
    /// the sidecar's admin port; pass "" for none).
    #[arg(long, env = ENV_INIT_SKIP_INBOUND_PORTS, default_value = "4191", value_name = "PORTS")]
    pub skip_inbound_ports: PortList,
    /// Outbound destination ports not redirected, e.g. `25,5432`.
    #[arg(long, env = ENV_INIT_SKIP_OUTBOUND_PORTS, default_value = "", value_name = "PORTS")]
    pub skip_outbound_ports: PortList,
    /// Outbound destination networks not redirected, IPv4 or IPv6, e.g.
    /// `10.96.0.0/12,169.254.169.254,fd00:10:96::/112`.
    #[arg(long, env = ENV_INIT_SKIP_OUTBOUND_CIDRS, default_value = "", value_name = "CIDRS")]
    pub skip_outbound_cidrs: CidrList,
    /// The iptables binary: `iptables`, `iptables-legacy` or `iptables-nft`.
    #[arg(long, env = ENV_INIT_IPTABLES, default_value = "iptables")]
    pub iptables: String,
    /// Redirect IPv6 TCP too: `auto` does when the kernel speaks IPv6
    /// (and fails if it cannot, rather than leave a way around the
    /// sidecar), `on` always does, `off` never does.
    #[arg(long, env = ENV_INIT_IPV6, value_enum, default_value_t = Ipv6Mode::Auto)]
    pub ipv6: Ipv6Mode,
    /// The ip6tables binary (default: `--iptables` with `iptables` in its
    /// name changed to `ip6tables`, e.g. `ip6tables-legacy`).
    #[arg(long, env = ENV_INIT_IP6TABLES)]
    pub ip6tables: Option<String>,
    /// Print the commands (as a shell script) instead of running them.
    #[arg(long, env = ENV_INIT_DRY_RUN)]
    pub dry_run: bool,
    /// Delete Vigil's jumps and chains (and nothing else) instead.
    #[arg(long, env = ENV_INIT_REMOVE)]
    pub remove: bool,
}

/// A feature turned `on` or `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    /// On.
    On,
    /// Off.
    Off,
}

/// Whether `init` writes IPv6 rules too.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Ipv6Mode {
    /// When the kernel speaks IPv6.
    Auto,
    /// Always.
    On,
    /// Never.
    Off,
}

/// One IP family's rules: the binary that writes them, and which family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Family {
    /// `iptables` or `ip6tables` (or a variant).
    pub program: String,
    /// Whether this is IPv6.
    pub v6: bool,
}

impl InitArgs {
    /// The ip6tables binary: `--ip6tables`, or `--iptables` renamed.
    pub fn ip6tables(&self) -> String {
        if let Some(program) = &self.ip6tables {
            return program.clone();
        }
        let (dir, name) = match self.iptables.rsplit_once('/') {
            Some((dir, name)) => (format!("{dir}/"), name),
            None => (String::new(), self.iptables.as_str()),
        };
        match name.strip_prefix("iptables") {
            Some(rest) => format!("{dir}ip6tables{rest}"),
            None => format!("{dir}ip6tables"),
        }
    }

    /// The families to write rules for, given whether the kernel speaks
    /// IPv6: IPv4 always, then IPv6 unless `--ipv6` rules it out.
    pub fn families(&self, kernel_ipv6: bool) -> Vec<Family> {
        let mut out = vec![Family {
            program: self.iptables.clone(),
            v6: false,
        }];
        let v6 = match self.ipv6 {
            Ipv6Mode::On => true,
            Ipv6Mode::Off => false,
            Ipv6Mode::Auto => kernel_ipv6,
        };
        if v6 {
            out.push(Family {
                program: self.ip6tables(),
                v6: true,
            });
        }
        out
    }
}

/// Whether the kernel, in this network namespace, speaks IPv6.
pub fn kernel_ipv6() -> bool {
    std::path::Path::new(IF_INET6).exists()
}

/// Why init failed.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// A port list entry is not a port or a `first-last` range.
    #[error("{0:?} is not a port (1-65535) or a range such as 9000-9100")]
    BadPort(String),
    /// A CIDR list entry is not an IP address or network.
    #[error("{0:?} is not an IP address or network such as 10.96.0.0/12 or fd00::/8")]
    BadCidr(String),
    /// The iptables binary could not be started.
    #[error(
        "cannot run `{command}`: {source} (is iptables installed? choose the binaries with --iptables and --ip6tables; --ipv6 off skips IPv6)"
    )]
    Spawn {
        /// The command line.
        command: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// An iptables command exited with an error.
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it printed on stderr.
        stderr: String,
    },
}

/// When an [`IptablesCommand`] runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Guard {
    /// Always.
    Always,
    /// Only if this check command (same binary) succeeds.
    IfOk(Vec<String>),
    /// Only if this check command (same binary) fails.
    UnlessOk(Vec<String>),
    /// Only if this check command (same binary) succeeds and prints
    /// something (`ip rule list ...` succeeds either way).
    IfPrints(Vec<String>),
    /// Unless this check command (same binary) succeeds and prints
    /// something.
    UnlessPrints(Vec<String>),
}

/// One iptables invocation, possibly guarded by a check, possibly fed on
/// stdin (`iptables-restore`). Displayed as a shell line (`check ||
/// command`, or a heredoc), which is what `--dry-run` prints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IptablesCommand {
    /// The binary, e.g. `iptables`.
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// When it runs.
    pub guard: Guard,
    /// What it reads on stdin, if anything.
    pub stdin: Option<String>,
}

impl IptablesCommand {
    /// The command line of `args` run by this command's binary.
    fn line(&self, args: &[String]) -> String {
        std::iter::once(self.program.as_str())
            .chain(args.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl fmt::Display for IptablesCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut command = self.line(&self.args);
        if let Some(input) = &self.stdin {
            command = format!("{command} <<'EOF'\n{input}EOF");
        }
        match &self.guard {
            Guard::Always => write!(f, "{command}"),
            Guard::IfOk(check) => write!(f, "{} 2>/dev/null && {command}", self.line(check)),
            Guard::UnlessOk(check) => write!(f, "{} 2>/dev/null || {command}", self.line(check)),
            Guard::IfPrints(check) => write!(f, "[ -n \"$({})\" ] && {command}", self.line(check)),
            Guard::UnlessPrints(check) => {
                write!(f, "[ -n \"$({})\" ] || {command}", self.line(check))
            }
        }
    }
}

/// Builds `iptables -w -t nat <op> <rest...>` arguments.
fn nat(op: &str, rest: &[&str]) -> Vec<String> {
    ["-w", "-t", "nat", op]
        .into_iter()
        .chain(rest.iter().copied())
        .map(str::to_string)
        .collect()
}

/// The jumps from a built-in chain to Vigil's chains: (parent, rule spec).
/// TCP goes to both chains; UDP only for DNS (the last, [`DNS_JUMP`]).
fn jumps() -> [(&'static str, &'static [&'static str]); 3] {
    [
        ("PREROUTING", &["-p", "tcp", "-j", INBOUND_CHAIN]),
        ("OUTPUT", &["-p", "tcp", "-j", OUTBOUND_CHAIN]),
        (
            "OUTPUT",
            &["-p", "udp", "--dport", DNS_PORT, "-j", OUTBOUND_CHAIN],
        ),
    ]
}

/// The index in [`jumps`] of the UDP DNS jump, written only with
/// `--redirect-dns on`.
const DNS_JUMP: usize = 2;

/// `-m owner --uid-owner <uid> -j RETURN` for the sidecar's uid, then for
/// each of `--skip-outbound-uids` (Envoy's 1337 beside Istio: its traffic
/// already left Vigil's sidecar once, or is Envoy's own): what every
/// outbound chain leaves alone first.
pub fn own_returns(args: &InitArgs) -> Vec<Vec<String>> {
    std::iter::once(args.proxy_uid)
        .chain(args.skip_outbound_uids.iter().copied())
        .map(|uid| {
            let uid = uid.to_string();
            strings(&["-m", "owner", "--uid-owner", &uid, "-j", "RETURN"])
        })
        .collect()
}

/// Test helpers shared by init's modules.
#[cfg(test)]
pub(crate) mod testing {
    use clap::Parser;

    use super::{InitArgs, IptablesCommand};

    /// `vigil-proxy init` with `extra` flags.
    pub fn parse(extra: &[&str]) -> InitArgs {
        let argv = std::iter::once("vigil-proxy init").chain(extra.iter().copied());
        InitArgs::try_parse_from(argv).unwrap()
    }

    /// The commands as the dry run prints them.
    pub fn lines(commands: &[IptablesCommand]) -> Vec<String> {
        commands.iter().map(ToString::to_string).collect()
    }
}

/// The rules of `VIGIL_INBOUND`, as rule specs (after `-A VIGIL_INBOUND`).
pub fn inbound_rules(args: &InitArgs) -> Vec<Vec<String>> {
    let mut rules: Vec<Vec<String>> = args
        .skip_inbound_ports
        .0
        .iter()
        .map(|p| strings(&["-p", "tcp", "--dport", &p.to_string(), "-j", "RETURN"]))
        .collect();
    let to = args.inbound_port.to_string();
    // Only what comes for the pod's own addresses: a connection that only
    // passes by (a neighbour routing another destination through the pod)
    // would have the sidecar dial that destination for it, unjudged.
    rules.push(strings(&[
        "-p",
        "tcp",
        "-m",
        "addrtype",
        "--dst-type",
        "LOCAL",
        "-j",
        "REDIRECT",
        "--to-ports",
        &to,
    ]));
    rules
}

/// The rules of `VIGIL_OUTBOUND` for one family, as rule specs (after
/// `-A VIGIL_OUTBOUND`): the sidecar's own traffic and loopback first, then
/// the skips (networks of this family only), then the redirect.
pub fn outbound_rules(args: &InitArgs, v6: bool) -> Vec<Vec<String>> {
    let loopback = if v6 { LOOPBACK_CIDR6 } else { LOOPBACK_CIDR };
    let mut rules = own_returns(args);
    if args.redirect_dns == Switch::On {
        let to = args.dns_port.to_string();
        for proto in ["udp", "tcp"] {
            rules.push(strings(&[
                "-p",
                proto,
                "--dport",
                DNS_PORT,
                "-j",
                "REDIRECT",
                "--to-ports",
                &to,
            ]));
        }
    }
    rules.push(strings(&["-d", loopback, "-j", "RETURN"]));
    for p in &args.skip_outbound_ports.0 {
        rules.push(strings(&[
            "-p",
            "tcp",
            "--dport",
            &p.to_string(),
            "-j",
            "RETURN",
        ]));
    }
    for cidr in args
        .skip_outbound_cidrs
        .0
        .iter()
        .filter(|c| c.addr.is_ipv6() == v6)
    {
        rules.push(strings(&["-d", &cidr.to_string(), "-j", "RETURN"]));
    }
    let to = args.outbound_port.to_string();
    rules.push(strings(&["-p", "tcp", "-j", "REDIRECT", "--to-ports", &to]));
    rules
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// The iptables-restore binary beside `program`: `iptables-legacy` ->
/// `iptables-legacy-restore`, `/usr/sbin/ip6tables` ->
/// `/usr/sbin/ip6tables-restore`.
pub fn restore_program(program: &str) -> String {
    format!("{program}-restore")
}

/// The `iptables-restore` input that creates (or flushes) each of `chains`
/// in `table` and fills it with its rules, in one transaction.
pub fn restore_input(table: &str, chains: &[(&str, Vec<Vec<String>>)]) -> String {
    let mut input = format!("*{table}\n");
    for (chain, _) in chains {
        input.push_str(&format!(":{chain} - [0:0]\n"));
    }
    for (chain, rules) in chains {
        for rule in rules {
            input.push_str(&format!("-A {chain} {}\n", rule.join(" ")));
        }
    }
    input.push_str("COMMIT\n");
    input
}

/// The commands that install Vigil's rules for each of `families`: one
/// `iptables-restore --noflush` that creates or flushes and fills the
/// chains in one transaction, then each jump unless `-C` finds it. Running
/// them twice yields the same ruleset.
pub fn plan(args: &InitArgs, families: &[Family]) -> Vec<IptablesCommand> {
    families
        .iter()
        .flat_map(|family| plan_family(args, family))
        .collect()
}

fn plan_family(args: &InitArgs, family: &Family) -> Vec<IptablesCommand> {
    let make = |a: Vec<String>, guard: Guard| IptablesCommand {
        program: family.program.clone(),
        args: a,
        guard,
        stdin: None,
    };
    let chains = [
        (INBOUND_CHAIN, inbound_rules(args)),
        (OUTBOUND_CHAIN, outbound_rules(args, family.v6)),
    ];
    // One iptables-restore transaction creates (or flushes) and fills both
    // chains: a re-run swaps their rules at once, never leaving them empty.
    let input = restore_input("nat", &chains);
    let mut out = vec![IptablesCommand {
        program: restore_program(&family.program),
        args: strings(&["-w", "--noflush"]),
        guard: Guard::Always,
        stdin: Some(input),
    }];
    for (index, (parent, spec)) in jumps().into_iter().enumerate() {
        let check = [&[parent][..], spec].concat();
        if index == DNS_JUMP && args.redirect_dns == Switch::Off {
            // A re-run with DNS off takes back an earlier run's jump.
            out.push(make(nat("-D", &check), Guard::IfOk(nat("-C", &check))));
        } else {
            // First in its chain, ahead of another mesh's jump (Istio's).
            let add = nat("-I", &[&[parent, "1"][..], spec].concat());
            out.push(make(add, Guard::UnlessOk(nat("-C", &check))));
        }
    }
    out
}

/// The commands that remove Vigil's jumps and chains for each of
/// `families`, each guarded so that removing twice (or when nothing was
/// installed) succeeds. Every other rule is left alone.
pub fn plan_remove(families: &[Family]) -> Vec<IptablesCommand> {
    families.iter().flat_map(plan_remove_family).collect()
}

fn plan_remove_family(family: &Family) -> Vec<IptablesCommand> {
    let make = |a: Vec<String>, guard: Guard| IptablesCommand {
        program: family.program.clone(),
        args: a,
        guard,
        stdin: None,
    };
    let mut out = Vec::new();
    for (parent, spec) in jumps() {
        let check = [&[parent][..], spec].concat();
        out.push(make(nat("-D", &check), Guard::IfOk(nat("-C", &check))));
    }
    for chain in [INBOUND_CHAIN, OUTBOUND_CHAIN] {
        for op in ["-F", "-X"] {
            out.push(make(nat(op, &[chain]), Guard::IfOk(nat("-S", &[chain]))));
        }
    }
    out
}

/// Runs `vigil-proxy init`: plans, then prints (`--dry-run`) or applies.
/// What was done is written to `out`.
pub fn run(args: &InitArgs, out: &mut impl std::io::Write) -> Result<(), InitError> {
    let families = args.families(kernel_ipv6());
    let commands = if args.remove {
        [
            plan_remove(&families),
            udp::plan_remove(&families),
            egress::plan_remove(&families),
        ]
        .concat()
    } else {
        [
            plan(args, &families),
            udp::plan(args, &families),
            egress::plan(args, &families),
        ]
        .concat()
    };
    if args.dry_run {
        for command in &commands {
            let _ = writeln!(out, "{command}");
        }
        return Ok(());
    }
    apply(&commands)?;
    let done = if args.remove { "removed" } else { "installed" };
    let programs: Vec<&str> = families.iter().map(|f| f.program.as_str()).collect();
    let dns = match (args.remove, args.redirect_dns) {
        (false, Switch::On) => format!("; DNS to port {}", args.dns_port),
        _ => String::new(),
    };
    let udp = match (args.remove, args.redirect_udp) {
        (false, Switch::On) => format!(
            "; other UDP to port {} ({} and {}, mangle table, TPROXY)",
            args.udp_port,
            udp::MARK_CHAIN,
            udp::TPROXY_CHAIN
        ),
        _ => String::new(),
    };
    let egress = match (args.remove, args.block_other_protocols) {
        (false, Switch::On) => format!(
            "; other protocols and ICMP echo requests dropped ({}, filter table)",
            egress::CHAIN
        ),
        _ => String::new(),
    };
    let _ = writeln!(
        out,
        "vigil-proxy init: {done} {INBOUND_CHAIN} and {OUTBOUND_CHAIN} (nat table, {}{dns}){udp}{egress}",
        programs.join(" and ")
    );
    Ok(())
}

#[cfg(test)]
mod tests;
