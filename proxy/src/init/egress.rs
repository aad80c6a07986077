//! The egress part of init: what the pod sends that is neither TCP nor UDP
//! is dropped, so that nothing leaves the pod without the sidecar seeing
//! it. TCP and UDP go to the sidecar (the `nat` and `mangle` chains); any
//! other protocol would leave unjudged and unrecorded. The one a notebook
//! can open without privileges is ICMP echo (an unprivileged "ping" socket,
//! where the runtime sets `net.ipv4.ping_group_range`, as containerd and
//! Docker do): enough to tunnel any traffic to any address through a
//! cooperating host. With `CAP_NET_RAW`, or a kernel with SCTP or DCCP
//! loaded, others too.
//!
//! So the `filter OUTPUT` chain [`CHAIN`] lets through, for every uid but
//! the sidecar's (and `--skip-outbound-uids`): the pod talking to itself
//! (`lo`), TCP, UDP, and ICMP but its echo requests (errors, and the echo
//! replies the kernel answers pings with; ICMPv6 carries neighbour
//! discovery, which IPv6 cannot do without). Everything else is dropped.
//! `--block-other-protocols off` leaves it all to pass (and takes back an
//! earlier run's chain).
//!
//! Pure planning, as the rest of init: [`plan`] and [`plan_remove`] give
//! the commands, idempotent (the chain is refilled in one
//! `iptables-restore` transaction, the jump added when absent).

use super::{Family, Guard, InitArgs, IptablesCommand, Switch, restore_program, strings};

/// The `filter OUTPUT` chain that drops what is neither TCP nor UDP.
pub const CHAIN: &str = "VIGIL_EGRESS";

/// Builds `iptables -w -t filter <op> <rest...>` arguments.
fn filter(op: &str, rest: &[&str]) -> Vec<String> {
    strings(&[&["-w", "-t", "filter", op][..], rest].concat())
}

/// The jump from `OUTPUT`: (parent, rule spec).
fn jump() -> (&'static str, [&'static str; 2]) {
    ("OUTPUT", ["-j", CHAIN])
}

/// The rules of [`CHAIN`] for one family (`v6`: ICMPv6).
pub fn rules(args: &InitArgs, v6: bool) -> Vec<Vec<String>> {
    let mut rules = vec![strings(&["-o", "lo", "-j", "RETURN"])];
    rules.extend(super::own_returns(args));
    rules.push(strings(&["-p", "tcp", "-j", "RETURN"]));
    rules.push(strings(&["-p", "udp", "-j", "RETURN"]));
    let (icmp, echo_request) = if v6 {
        (["-p", "ipv6-icmp", "--icmpv6-type"], "echo-request")
    } else {
        (["-p", "icmp", "--icmp-type"], "echo-request")
    };
    rules.push(strings(
        &[&icmp[..], &[echo_request, "-j", "DROP"]].concat(),
    ));
    rules.push(strings(&[icmp[0], icmp[1], "-j", "RETURN"]));
    rules.push(strings(&["-j", "DROP"]));
    rules
}

/// The commands that drop the pod's other protocols (or, with
/// `--block-other-protocols off`, take back an earlier run's), for each
/// family.
pub fn plan(args: &InitArgs, families: &[Family]) -> Vec<IptablesCommand> {
    if args.block_other_protocols == Switch::Off {
        return plan_remove(families);
    }
    families
        .iter()
        .flat_map(|family| {
            let input = super::restore_input("filter", &[(CHAIN, rules(args, family.v6))]);
            let (parent, spec) = jump();
            let check = [&[parent][..], &spec].concat();
            // First in OUTPUT: before rules that would accept it.
            let add = filter("-I", &[&[parent, "1"][..], &spec].concat());
            [
                IptablesCommand {
                    program: restore_program(&family.program),
                    args: strings(&["-w", "--noflush"]),
                    guard: Guard::Always,
                    stdin: Some(input),
                },
                IptablesCommand {
                    program: family.program.clone(),
                    args: add,
                    guard: Guard::UnlessOk(filter("-C", &check)),
                    stdin: None,
                },
            ]
        })
        .collect()
}

/// The commands that remove the jump and the chain for each family, each
/// guarded so that removing twice succeeds.
pub fn plan_remove(families: &[Family]) -> Vec<IptablesCommand> {
    let mut out = Vec::new();
    for family in families {
        let make = |a: Vec<String>, guard: Guard| IptablesCommand {
            program: family.program.clone(),
            args: a,
            guard,
            stdin: None,
        };
        let (parent, spec) = jump();
        let check = [&[parent][..], &spec].concat();
        out.push(make(
            filter("-D", &check),
            Guard::IfOk(filter("-C", &check)),
        ));
        for op in ["-F", "-X"] {
            out.push(make(
                filter(op, &[CHAIN]),
                Guard::IfOk(filter("-S", &[CHAIN])),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::testing::{lines, parse};

    fn families() -> [Family; 2] {
        [
            Family {
                program: "iptables".into(),
                v6: false,
            },
            Family {
                program: "ip6tables".into(),
                v6: true,
            },
        ]
    }

    /// Each family's chain: loopback, the sidecar and the skipped uids,
    /// TCP, UDP and ICMP but echo requests pass; the rest is dropped.
    #[test]
    fn drops_what_is_neither_tcp_nor_udp_for_both_families() {
        let args = parse(&["--skip-outbound-uids", "1337"]);
        let planned = lines(&plan(&args, &families()));
        let v4 = "*filter\n:VIGIL_EGRESS - [0:0]\n\
            -A VIGIL_EGRESS -o lo -j RETURN\n\
            -A VIGIL_EGRESS -m owner --uid-owner 2102 -j RETURN\n\
            -A VIGIL_EGRESS -m owner --uid-owner 1337 -j RETURN\n\
            -A VIGIL_EGRESS -p tcp -j RETURN\n\
            -A VIGIL_EGRESS -p udp -j RETURN\n\
            -A VIGIL_EGRESS -p icmp --icmp-type echo-request -j DROP\n\
            -A VIGIL_EGRESS -p icmp -j RETURN\n\
            -A VIGIL_EGRESS -j DROP\nCOMMIT\n";
        assert_eq!(plan(&args, &families())[0].stdin.as_deref(), Some(v4));
        let v6 = plan(&args, &families())[2].stdin.clone().unwrap();
        assert!(
            v6.contains("-A VIGIL_EGRESS -p ipv6-icmp --icmpv6-type echo-request -j DROP\n")
                && v6.contains("-A VIGIL_EGRESS -p ipv6-icmp -j RETURN\n"),
            "{v6}"
        );
        assert_eq!(
            planned[1],
            "iptables -w -t filter -C OUTPUT -j VIGIL_EGRESS 2>/dev/null || \
             iptables -w -t filter -I OUTPUT 1 -j VIGIL_EGRESS"
        );
        assert!(
            planned[3].starts_with("ip6tables -w -t filter -C OUTPUT"),
            "{planned:?}"
        );
    }

    /// Off takes back an earlier run's jump and chain, as removal does;
    /// both run twice without failing.
    #[test]
    fn off_and_remove_take_back_the_chain() {
        let off = lines(&plan(
            &parse(&["--block-other-protocols", "off"]),
            &families(),
        ));
        assert_eq!(off, lines(&plan_remove(&families())));
        assert_eq!(
            off[..3],
            [
                "iptables -w -t filter -C OUTPUT -j VIGIL_EGRESS 2>/dev/null && \
                 iptables -w -t filter -D OUTPUT -j VIGIL_EGRESS",
                "iptables -w -t filter -S VIGIL_EGRESS 2>/dev/null && \
                 iptables -w -t filter -F VIGIL_EGRESS",
                "iptables -w -t filter -S VIGIL_EGRESS 2>/dev/null && \
                 iptables -w -t filter -X VIGIL_EGRESS",
            ]
        );
    }
}
