//! The UDP part of init: the pod's UDP other than DNS goes to the sidecar's
//! UDP relay with `TPROXY`, which keeps the original destination (a `nat`
//! `REDIRECT` would rewrite it, and for UDP no socket option gives it back).
//!
//! `TPROXY` only works in `PREROUTING`, so the app's datagrams (every uid
//! but the sidecar's, to an address outside the pod, port 53 aside: DNS has
//! its own listener, or is left alone with `--redirect-dns off`) are marked
//! in `mangle OUTPUT` (chain [`MARK_CHAIN`], bit [`MARK`]), routed to `lo`
//! by a policy rule (`fwmark` -> table [`ROUTE_TABLE`], `local default dev
//! lo`), and delivered in `mangle PREROUTING` (chain [`TPROXY_CHAIN`]) to
//! the relay on `127.0.0.1:--udp-port` (`[::1]` for IPv6). Nothing there
//! listening means the datagram is dropped: the pod's UDP never leaves
//! unseen. One mark bit, so another mesh's marks keep working beside it.
//!
//! Pure planning, as the rest of init: [`plan`] and [`plan_remove`] give the
//! commands, idempotent (the chains are refilled in one `iptables-restore`
//! transaction, jumps and the policy rule are added when absent, the route
//! is replaced).

use super::{Family, Guard, InitArgs, IptablesCommand, Switch, restore_program, strings};

/// The `mangle OUTPUT` chain that marks the app's UDP.
pub const MARK_CHAIN: &str = "VIGIL_UDP";
/// The `mangle PREROUTING` chain that delivers marked UDP to the relay.
pub const TPROXY_CHAIN: &str = "VIGIL_UDP_TPROXY";
/// The `mangle POSTROUTING` chain that drops marked UDP leaving by any
/// device but `lo`: a socket bound to a device (`SO_BINDTODEVICE`, which
/// any user may set since Linux 5.7) is routed again with that device
/// after the mark, the policy route to `lo` does not match it, and the
/// datagram would go out unjudged.
pub const LEAK_CHAIN: &str = "VIGIL_UDP_LEAK";
/// The mark bit (value and mask) of the app's UDP.
pub const MARK: &str = "0x4000/0x4000";
/// The routing table that sends marked packets to `lo`.
pub const ROUTE_TABLE: &str = "4154";
/// The iproute2 binary.
pub const IP: &str = "ip";
/// UDP-Lite's protocol number: unprivileged sockets may speak it, and
/// `TPROXY` cannot deliver it, so the app's is dropped (numeric, as an
/// init image may have no /etc/protocols).
pub const UDPLITE: &str = "136";

/// Builds `iptables -w -t mangle <op> <rest...>` arguments.
fn mangle(op: &str, rest: &[&str]) -> Vec<String> {
    strings(&[&["-w", "-t", "mangle", op][..], rest].concat())
}

/// The jumps from the built-in chains: (parent, rule spec).
fn jumps() -> [(&'static str, [&'static str; 4]); 4] {
    [
        ("OUTPUT", ["-p", "udp", "-j", MARK_CHAIN]),
        ("OUTPUT", ["-p", UDPLITE, "-j", MARK_CHAIN]),
        ("PREROUTING", ["-p", "udp", "-j", TPROXY_CHAIN]),
        ("POSTROUTING", ["-p", "udp", "-j", LEAK_CHAIN]),
    ]
}

/// The rules of [`MARK_CHAIN`] for one family: the sidecar's own, DNS and
/// the pod talking to itself pass; UDP-Lite out of the pod is dropped; UDP
/// is marked.
pub fn mark_rules(args: &InitArgs) -> Vec<Vec<String>> {
    let mut rules = super::own_returns(args);
    rules.extend([
        // Only the pod's own queries: `nat` sends them to the DNS listener.
        // A packet to port 53 that answers a flow another host began (the
        // notebook replying to `host:53`) is no query and gets no `nat`:
        // it is marked, as any other UDP.
        strings(&[
            "-p",
            "udp",
            "--dport",
            super::DNS_PORT,
            "-m",
            "conntrack",
            "--ctdir",
            "ORIGINAL",
            "-j",
            "RETURN",
        ]),
        strings(&["-m", "addrtype", "--dst-type", "LOCAL", "-j", "RETURN"]),
        strings(&["-p", UDPLITE, "-j", "DROP"]),
        strings(&["-p", "udp", "-j", "MARK", "--set-xmark", MARK]),
    ]);
    rules
}

/// The rules of [`TPROXY_CHAIN`] for one family.
pub fn tproxy_rules(args: &InitArgs, v6: bool) -> Vec<Vec<String>> {
    let on_ip = if v6 { "::1" } else { "127.0.0.1" };
    let port = args.udp_port.to_string();
    vec![strings(&[
        "-p",
        "udp",
        "-m",
        "mark",
        "--mark",
        MARK,
        "-j",
        "TPROXY",
        "--on-ip",
        on_ip,
        "--on-port",
        &port,
        "--tproxy-mark",
        MARK,
    ])]
}

/// The rules of [`LEAK_CHAIN`].
pub fn leak_rules() -> Vec<Vec<String>> {
    vec![strings(&[
        "-m", "mark", "--mark", MARK, "!", "-o", "lo", "-j", "DROP",
    ])]
}

fn ip(family: &Family, rest: &[&str]) -> Vec<String> {
    let version = if family.v6 { "-6" } else { "-4" };
    strings(&[&[version][..], rest].concat())
}

fn rule_spec() -> [&'static str; 4] {
    ["fwmark", MARK, "lookup", ROUTE_TABLE]
}

fn route_spec(family: &Family) -> [&'static str; 6] {
    let default = if family.v6 { "::/0" } else { "0.0.0.0/0" };
    ["local", default, "dev", "lo", "table", ROUTE_TABLE]
}

/// The commands that send the pod's UDP to the relay (or, with
/// `--redirect-udp off`, take back an earlier run's), for each family.
pub fn plan(args: &InitArgs, families: &[Family]) -> Vec<IptablesCommand> {
    if args.redirect_udp == Switch::Off {
        return plan_remove(families);
    }
    families.iter().flat_map(|f| plan_family(args, f)).collect()
}

fn plan_family(args: &InitArgs, family: &Family) -> Vec<IptablesCommand> {
    let iptables = |a: Vec<String>, guard: Guard| IptablesCommand {
        program: family.program.clone(),
        args: a,
        guard,
        stdin: None,
    };
    let route = ip(
        family,
        &[&["route", "replace"][..], &route_spec(family)].concat(),
    );
    let rule = |op: &str| ip(family, &[&["rule", op][..], &rule_spec()].concat());
    let mut out = vec![
        IptablesCommand {
            program: IP.to_owned(),
            args: route,
            guard: Guard::Always,
            stdin: None,
        },
        IptablesCommand {
            program: IP.to_owned(),
            args: rule("add"),
            guard: Guard::UnlessPrints(rule("list")),
            stdin: None,
        },
    ];
    let chains = [
        (MARK_CHAIN, mark_rules(args)),
        (TPROXY_CHAIN, tproxy_rules(args, family.v6)),
        (LEAK_CHAIN, leak_rules()),
    ];
    let input = super::restore_input("mangle", &chains);
    out.push(IptablesCommand {
        program: restore_program(&family.program),
        args: strings(&["-w", "--noflush"]),
        guard: Guard::Always,
        stdin: Some(input),
    });
    for (parent, spec) in jumps() {
        let check = [&[parent][..], &spec].concat();
        // First in the built-in chain, as the nat jumps: before another
        // mesh's rules.
        let add = mangle("-I", &[&[parent, "1"][..], &spec].concat());
        out.push(iptables(add, Guard::UnlessOk(mangle("-C", &check))));
    }
    out
}

/// The commands that remove the UDP redirect (jumps, chains, policy rule,
/// route) for each family, each guarded so that removing twice succeeds.
pub fn plan_remove(families: &[Family]) -> Vec<IptablesCommand> {
    families.iter().flat_map(plan_remove_family).collect()
}

fn plan_remove_family(family: &Family) -> Vec<IptablesCommand> {
    let iptables = |a: Vec<String>, guard: Guard| IptablesCommand {
        program: family.program.clone(),
        args: a,
        guard,
        stdin: None,
    };
    let ip_command = |a: Vec<String>, guard: Guard| IptablesCommand {
        program: IP.to_owned(),
        args: a,
        guard,
        stdin: None,
    };
    let mut out = Vec::new();
    for (parent, spec) in jumps() {
        let check = [&[parent][..], &spec].concat();
        out.push(iptables(
            mangle("-D", &check),
            Guard::IfOk(mangle("-C", &check)),
        ));
    }
    for chain in [MARK_CHAIN, TPROXY_CHAIN, LEAK_CHAIN] {
        for op in ["-F", "-X"] {
            out.push(iptables(
                mangle(op, &[chain]),
                Guard::IfOk(mangle("-S", &[chain])),
            ));
        }
    }
    let rule = |op: &str| ip(family, &[&["rule", op][..], &rule_spec()].concat());
    out.push(ip_command(rule("del"), Guard::IfPrints(rule("list"))));
    let route = |op: &str| ip(family, &[&["route", op][..], &route_spec(family)].concat());
    let table = ip(family, &["route", "show", "table", ROUTE_TABLE]);
    out.push(ip_command(route("del"), Guard::IfPrints(table)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::testing::{lines, parse};

    #[test]
    fn plans_the_udp_redirect_for_both_families() {
        let args = parse(&["--proxy-uid", "1337", "--udp-port", "5154"]);
        let want4 = [
            "ip -4 route replace local 0.0.0.0/0 dev lo table 4154",
            "[ -n \"$(ip -4 rule list fwmark 0x4000/0x4000 lookup 4154)\" ] || ip -4 rule add fwmark 0x4000/0x4000 lookup 4154",
            "iptables-restore -w --noflush <<'EOF'\n\
             *mangle\n\
             :VIGIL_UDP - [0:0]\n\
             :VIGIL_UDP_TPROXY - [0:0]\n\
             :VIGIL_UDP_LEAK - [0:0]\n\
             -A VIGIL_UDP -m owner --uid-owner 1337 -j RETURN\n\
             -A VIGIL_UDP -p udp --dport 53 -m conntrack --ctdir ORIGINAL -j RETURN\n\
             -A VIGIL_UDP -m addrtype --dst-type LOCAL -j RETURN\n\
             -A VIGIL_UDP -p 136 -j DROP\n\
             -A VIGIL_UDP -p udp -j MARK --set-xmark 0x4000/0x4000\n\
             -A VIGIL_UDP_TPROXY -p udp -m mark --mark 0x4000/0x4000 -j TPROXY --on-ip 127.0.0.1 --on-port 5154 --tproxy-mark 0x4000/0x4000\n\
             -A VIGIL_UDP_LEAK -m mark --mark 0x4000/0x4000 ! -o lo -j DROP\n\
             COMMIT\n\
             EOF",
            "iptables -w -t mangle -C OUTPUT -p udp -j VIGIL_UDP 2>/dev/null || iptables -w -t mangle -I OUTPUT 1 -p udp -j VIGIL_UDP",
            "iptables -w -t mangle -C OUTPUT -p 136 -j VIGIL_UDP 2>/dev/null || iptables -w -t mangle -I OUTPUT 1 -p 136 -j VIGIL_UDP",
            "iptables -w -t mangle -C PREROUTING -p udp -j VIGIL_UDP_TPROXY 2>/dev/null || iptables -w -t mangle -I PREROUTING 1 -p udp -j VIGIL_UDP_TPROXY",
            "iptables -w -t mangle -C POSTROUTING -p udp -j VIGIL_UDP_LEAK 2>/dev/null || iptables -w -t mangle -I POSTROUTING 1 -p udp -j VIGIL_UDP_LEAK",
        ];
        let both = lines(&plan(&args, &args.families(true)));
        let beside_istio = parse(&["--proxy-uid", "2102", "--skip-outbound-uids", "1337"]);
        let marks: Vec<String> = mark_rules(&beside_istio)
            .iter()
            .map(|r| r.join(" "))
            .collect();
        assert_eq!(
            marks[..2],
            [
                "-m owner --uid-owner 2102 -j RETURN",
                "-m owner --uid-owner 1337 -j RETURN"
            ],
            "Envoy's UDP is let out like the sidecar's"
        );
        assert_eq!(both[..7], want4);
        assert_eq!(both.len(), 14);
        assert_eq!(both[7], "ip -6 route replace local ::/0 dev lo table 4154");
        assert!(both[9].starts_with("ip6tables-restore"), "{}", both[9]);
        assert!(
            both[9].contains("--on-ip ::1 --on-port 5154"),
            "{}",
            both[9]
        );
    }

    #[test]
    fn off_and_remove_take_back_only_the_udp_redirect() {
        let want = [
            "iptables -w -t mangle -C OUTPUT -p udp -j VIGIL_UDP 2>/dev/null && iptables -w -t mangle -D OUTPUT -p udp -j VIGIL_UDP",
            "iptables -w -t mangle -C OUTPUT -p 136 -j VIGIL_UDP 2>/dev/null && iptables -w -t mangle -D OUTPUT -p 136 -j VIGIL_UDP",
            "iptables -w -t mangle -C PREROUTING -p udp -j VIGIL_UDP_TPROXY 2>/dev/null && iptables -w -t mangle -D PREROUTING -p udp -j VIGIL_UDP_TPROXY",
            "iptables -w -t mangle -C POSTROUTING -p udp -j VIGIL_UDP_LEAK 2>/dev/null && iptables -w -t mangle -D POSTROUTING -p udp -j VIGIL_UDP_LEAK",
            "iptables -w -t mangle -S VIGIL_UDP 2>/dev/null && iptables -w -t mangle -F VIGIL_UDP",
            "iptables -w -t mangle -S VIGIL_UDP 2>/dev/null && iptables -w -t mangle -X VIGIL_UDP",
            "iptables -w -t mangle -S VIGIL_UDP_TPROXY 2>/dev/null && iptables -w -t mangle -F VIGIL_UDP_TPROXY",
            "iptables -w -t mangle -S VIGIL_UDP_TPROXY 2>/dev/null && iptables -w -t mangle -X VIGIL_UDP_TPROXY",
            "iptables -w -t mangle -S VIGIL_UDP_LEAK 2>/dev/null && iptables -w -t mangle -F VIGIL_UDP_LEAK",
            "iptables -w -t mangle -S VIGIL_UDP_LEAK 2>/dev/null && iptables -w -t mangle -X VIGIL_UDP_LEAK",
            "[ -n \"$(ip -4 rule list fwmark 0x4000/0x4000 lookup 4154)\" ] && ip -4 rule del fwmark 0x4000/0x4000 lookup 4154",
            "[ -n \"$(ip -4 route show table 4154)\" ] && ip -4 route del local 0.0.0.0/0 dev lo table 4154",
        ];
        let off = parse(&["--redirect-udp", "off"]);
        assert_eq!(lines(&plan(&off, &off.families(false))), want);
        assert_eq!(lines(&plan_remove(&off.families(false))), want);
    }
}
