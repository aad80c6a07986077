use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Output};

use super::*;

fn parse(extra: &[&str]) -> Result<InitArgs, String> {
    let mut argv = vec!["vigil-proxy init"];
    argv.extend_from_slice(extra);
    InitArgs::try_parse_from(argv).map_err(|e| e.to_string())
}

fn lines(commands: &[IptablesCommand]) -> Vec<String> {
    commands.iter().map(ToString::to_string).collect()
}

/// The rules a plan's iptables-restore transactions append, each prefixed
/// with its restore binary.
fn restored(commands: &[IptablesCommand]) -> Vec<String> {
    commands
        .iter()
        .filter_map(|c| Some((&c.program, c.stdin.as_ref()?)))
        .flat_map(|(program, input)| {
            input
                .lines()
                .filter(|l| l.starts_with("-A "))
                .map(move |l| format!("{program} {l}"))
        })
        .collect()
}

/// The IPv4 family alone, as on a kernel without IPv6.
fn v4(args: &InitArgs) -> Vec<Family> {
    args.families(false)
}

#[test]
fn plans_the_default_rules() {
    let args = parse(&[]).unwrap();
    let want = [
        "iptables-restore -w --noflush <<'EOF'\n\
         *nat\n\
         :VIGIL_INBOUND - [0:0]\n\
         :VIGIL_OUTBOUND - [0:0]\n\
         -A VIGIL_INBOUND -p tcp --dport 4191 -j RETURN\n\
         -A VIGIL_INBOUND -p tcp -m addrtype --dst-type LOCAL -j REDIRECT --to-ports 4143\n\
         -A VIGIL_OUTBOUND -m owner --uid-owner 2102 -j RETURN\n\
         -A VIGIL_OUTBOUND -p udp --dport 53 -j REDIRECT --to-ports 4153\n\
         -A VIGIL_OUTBOUND -p tcp --dport 53 -j REDIRECT --to-ports 4153\n\
         -A VIGIL_OUTBOUND -d 127.0.0.0/8 -j RETURN\n\
         -A VIGIL_OUTBOUND -p tcp -j REDIRECT --to-ports 4140\n\
         COMMIT\n\
         EOF",
        "iptables -w -t nat -C PREROUTING -p tcp -j VIGIL_INBOUND 2>/dev/null || iptables -w -t nat -I PREROUTING 1 -p tcp -j VIGIL_INBOUND",
        "iptables -w -t nat -C OUTPUT -p tcp -j VIGIL_OUTBOUND 2>/dev/null || iptables -w -t nat -I OUTPUT 1 -p tcp -j VIGIL_OUTBOUND",
        "iptables -w -t nat -C OUTPUT -p udp --dport 53 -j VIGIL_OUTBOUND 2>/dev/null || iptables -w -t nat -I OUTPUT 1 -p udp --dport 53 -j VIGIL_OUTBOUND",
    ];
    assert_eq!(lines(&plan(&args, &v4(&args))), want);
}

#[test]
fn plans_skips_ports_uid_and_binary() {
    let args = parse(&[
        "--iptables",
        "iptables-legacy",
        "--proxy-uid",
        "1337",
        "--inbound-port",
        "15006",
        "--outbound-port",
        "15001",
        "--skip-inbound-ports",
        "22, 9000-9100",
        "--skip-outbound-ports",
        "5432",
        "--skip-outbound-cidrs",
        "10.96.0.0/12,169.254.169.254",
    ])
    .unwrap();
    let rules = restored(&plan(&args, &v4(&args)));
    let p = "iptables-legacy-restore -A";
    assert_eq!(
        rules,
        [
            format!("{p} VIGIL_INBOUND -p tcp --dport 22 -j RETURN"),
            format!("{p} VIGIL_INBOUND -p tcp --dport 9000:9100 -j RETURN"),
            format!(
                "{p} VIGIL_INBOUND -p tcp -m addrtype --dst-type LOCAL -j REDIRECT --to-ports 15006"
            ),
            format!("{p} VIGIL_OUTBOUND -m owner --uid-owner 1337 -j RETURN"),
            format!("{p} VIGIL_OUTBOUND -p udp --dport 53 -j REDIRECT --to-ports 4153"),
            format!("{p} VIGIL_OUTBOUND -p tcp --dport 53 -j REDIRECT --to-ports 4153"),
            format!("{p} VIGIL_OUTBOUND -d 127.0.0.0/8 -j RETURN"),
            format!("{p} VIGIL_OUTBOUND -p tcp --dport 5432 -j RETURN"),
            format!("{p} VIGIL_OUTBOUND -d 10.96.0.0/12 -j RETURN"),
            format!("{p} VIGIL_OUTBOUND -d 169.254.169.254/32 -j RETURN"),
            format!("{p} VIGIL_OUTBOUND -p tcp -j REDIRECT --to-ports 15001"),
        ]
    );
    let none = parse(&["--skip-inbound-ports", ""]).unwrap();
    assert_eq!(inbound_rules(&none).len(), 1, "\"\" skips nothing");
}

#[test]
fn plans_removal_of_only_its_own_rules() {
    let args = parse(&["--remove"]).unwrap();
    assert!(args.remove);
    let want = [
        "iptables -w -t nat -C PREROUTING -p tcp -j VIGIL_INBOUND 2>/dev/null && iptables -w -t nat -D PREROUTING -p tcp -j VIGIL_INBOUND",
        "iptables -w -t nat -C OUTPUT -p tcp -j VIGIL_OUTBOUND 2>/dev/null && iptables -w -t nat -D OUTPUT -p tcp -j VIGIL_OUTBOUND",
        "iptables -w -t nat -C OUTPUT -p udp --dport 53 -j VIGIL_OUTBOUND 2>/dev/null && iptables -w -t nat -D OUTPUT -p udp --dport 53 -j VIGIL_OUTBOUND",
        "iptables -w -t nat -S VIGIL_INBOUND 2>/dev/null && iptables -w -t nat -F VIGIL_INBOUND",
        "iptables -w -t nat -S VIGIL_INBOUND 2>/dev/null && iptables -w -t nat -X VIGIL_INBOUND",
        "iptables -w -t nat -S VIGIL_OUTBOUND 2>/dev/null && iptables -w -t nat -F VIGIL_OUTBOUND",
        "iptables -w -t nat -S VIGIL_OUTBOUND 2>/dev/null && iptables -w -t nat -X VIGIL_OUTBOUND",
    ];
    assert_eq!(lines(&plan_remove(&v4(&args))), want);
}

#[test]
fn dns_is_redirected_before_the_skips_and_can_be_turned_off() {
    // DNS to any server, also one in a skipped network or on a skipped
    // port, goes to the DNS listener; the sidecar's own lookups do not.
    let args = parse(&[
        "--dns-port",
        "15053",
        "--skip-outbound-ports",
        "53",
        "--skip-outbound-cidrs",
        "10.96.0.0/12",
    ])
    .unwrap();
    let rules = outbound_rules(&args, false);
    let text: Vec<String> = rules.iter().map(|r| r.join(" ")).collect();
    assert_eq!(text[0], "-m owner --uid-owner 2102 -j RETURN");
    assert_eq!(text[1], "-p udp --dport 53 -j REDIRECT --to-ports 15053");
    assert_eq!(text[2], "-p tcp --dport 53 -j REDIRECT --to-ports 15053");
    assert!(
        text[3..]
            .iter()
            .all(|r| !r.contains("REDIRECT --to-ports 15053"))
    );
    let v6: Vec<String> = outbound_rules(&args, true)
        .iter()
        .map(|r| r.join(" "))
        .collect();
    assert_eq!(text[..3], v6[..3], "IPv6 alike");

    // Off: no DNS rules, and a re-run takes back an earlier run's UDP jump.
    let mut env_off = parse(&[]).unwrap();
    env_off.redirect_dns = Switch::Off;
    assert_eq!(parse(&["--redirect-dns", "off"]).unwrap(), env_off);
    let rules = outbound_rules(&env_off, false);
    assert!(
        rules.iter().all(|r| !r.contains(&"53".to_owned())),
        "{rules:?}"
    );
    let plan = lines(&plan(&env_off, &v4(&env_off)));
    assert_eq!(
        plan.last().unwrap(),
        "iptables -w -t nat -C OUTPUT -p udp --dport 53 -j VIGIL_OUTBOUND 2>/dev/null && iptables -w -t nat -D OUTPUT -p udp --dport 53 -j VIGIL_OUTBOUND"
    );
    assert!(plan.iter().all(|l| !l.contains("4153")), "{plan:#?}");
}

#[test]
fn refuses_bad_values() {
    let cases = [
        (vec!["--skip-inbound-ports", "0"], "--skip-inbound-ports"),
        (vec!["--skip-inbound-ports", "80,x"], "\"x\""),
        (vec!["--skip-outbound-ports", "9100-9000"], "9100-9000"),
        (vec!["--skip-outbound-ports", "70000"], "70000"),
        (vec!["--skip-outbound-cidrs", "10.0.0.0/33"], "10.0.0.0/33"),
        (vec!["--skip-outbound-cidrs", "fd00::/129"], "fd00::/129"),
        (vec!["--skip-outbound-cidrs", "10.0.0.0/8,nope"], "\"nope\""),
        (vec!["--ipv6", "maybe"], "--ipv6"),
        (vec!["--inbound-port", "0"], "--inbound-port"),
        (vec!["--proxy-uid", "x"], "--proxy-uid"),
        (vec!["--dns-port", "0"], "--dns-port"),
        (vec!["--redirect-dns", "yes"], "--redirect-dns"),
    ];
    for (argv, want) in cases {
        let err = parse(&argv).unwrap_err();
        assert!(err.contains(want), "{argv:?}: {err}");
    }
}

fn output(code: i32, stderr: &str) -> Output {
    Output {
        status: ExitStatus::from_raw(code << 8),
        stdout: Vec::new(),
        stderr: stderr.as_bytes().to_vec(),
    }
}

#[test]
fn applies_guards_and_reports_failures() {
    let args = parse(&[]).unwrap();
    // A table where the PREROUTING jump is present already.
    let mut ran = Vec::new();
    let result = apply_with(&plan(&args, &v4(&args)), |program, a, stdin| {
        let code = match a.get(3).map(String::as_str) {
            Some("-C") if a[4] == "PREROUTING" => 0,
            Some("-C") => 1,
            _ => 0,
        };
        ran.push((
            format!("{program} {}", a.join(" ")),
            stdin.map(str::to_owned),
        ));
        Ok(output(code, ""))
    });
    result.unwrap();
    let changes: Vec<&str> = ran
        .iter()
        .map(|(line, _)| line.as_str())
        .filter(|l| !l.contains(" -C "))
        .collect();
    assert_eq!(
        changes,
        [
            "iptables-restore -w --noflush",
            "iptables -w -t nat -I OUTPUT 1 -p tcp -j VIGIL_OUTBOUND",
            "iptables -w -t nat -I OUTPUT 1 -p udp --dport 53 -j VIGIL_OUTBOUND",
        ]
    );
    let fed = ran[0].1.as_deref().unwrap();
    assert!(
        fed.starts_with("*nat\n:VIGIL_INBOUND - [0:0]\n") && fed.ends_with("COMMIT\n"),
        "the restore is fed its transaction: {fed}"
    );
    assert!(ran[1..].iter().all(|(_, stdin)| stdin.is_none()));

    let err = apply_with(&plan(&args, &v4(&args)), |_, a, _| {
        let code = if a.contains(&"--noflush".to_owned()) {
            2
        } else {
            0
        };
        Ok(output(code, "iptables-restore: line 4 failed\n"))
    })
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("`iptables-restore -w --noflush` failed")
            && err.contains("exit status: 2")
            && err.ends_with("line 4 failed"),
        "{err}"
    );

    let err = apply_with(&plan(&args, &v4(&args)), |_, _, _| {
        Err(std::io::Error::from(std::io::ErrorKind::NotFound))
    })
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("cannot run `iptables-restore -w --noflush`"),
        "{err}"
    );
    assert!(err.contains("--iptables"), "{err}");
}

#[test]
fn dry_run_prints_without_running() {
    let args = parse(&["--dry-run", "--iptables", "/nonexistent/iptables"]).unwrap();
    let mut out = Vec::new();
    run(&args, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    let families = args.families(kernel_ipv6());
    let want: String = [
        plan(&args, &families),
        udp::plan(&args, &families),
        egress::plan(&args, &families),
    ]
    .concat()
    .iter()
    .map(|c| format!("{c}\n"))
    .collect();
    assert_eq!(text, want);
    assert!(
        text.starts_with("/nonexistent/iptables-restore -w --noflush <<'EOF'\n*nat\n"),
        "{text}"
    );
}

#[test]
fn plans_ipv6_with_ip6tables_and_only_ipv6_networks() {
    let args = parse(&[
        "--iptables",
        "/usr/sbin/iptables-legacy",
        "--skip-outbound-cidrs",
        "10.96.0.0/12, fd00:10:96::/112,2001:db8::1",
    ])
    .unwrap();
    assert_eq!(
        args.ipv6,
        Ipv6Mode::Auto,
        "IPv6 follows the kernel by default"
    );
    let both = args.families(true);
    assert_eq!(
        both.iter().map(|f| f.program.as_str()).collect::<Vec<_>>(),
        ["/usr/sbin/iptables-legacy", "/usr/sbin/ip6tables-legacy"]
    );
    assert_eq!(args.families(false).len(), 1, "no IPv6 in the kernel");
    let v6: Vec<String> = lines(&plan(&args, &both[1..]));
    let p = "/usr/sbin/ip6tables-legacy-restore -A VIGIL_OUTBOUND";
    let v6_rules = restored(&plan(&args, &both[1..]));
    let outbound: Vec<&String> = v6_rules.iter().filter(|l| l.starts_with(p)).collect();
    assert_eq!(
        outbound,
        [
            &format!("{p} -m owner --uid-owner 2102 -j RETURN"),
            &format!("{p} -p udp --dport 53 -j REDIRECT --to-ports 4153"),
            &format!("{p} -p tcp --dport 53 -j REDIRECT --to-ports 4153"),
            &format!("{p} -d ::1/128 -j RETURN"),
            &format!("{p} -d fd00:10:96::/112 -j RETURN"),
            &format!("{p} -d 2001:db8::1/128 -j RETURN"),
            &format!("{p} -p tcp -j REDIRECT --to-ports 4140"),
        ]
    );
    assert!(
        v6.iter().all(|l| !l.contains("10.96.0.0")),
        "IPv4 networks stay out of ip6tables: {v6:#?}"
    );
    let v4_rules = lines(&plan(&args, &both[..1]));
    assert!(
        v4_rules
            .iter()
            .all(|l| !l.contains("fd00") && !l.contains("::")),
        "{v4_rules:#?}"
    );
    assert!(
        v6.iter()
            .any(|l| l.ends_with("-I PREROUTING 1 -p tcp -j VIGIL_INBOUND")),
        "{v6:#?}"
    );
    // Both families, IPv4 first; removal covers both too.
    assert_eq!(plan(&args, &both).len(), v4_rules.len() + v6.len());
    let removal = lines(&plan_remove(&both));
    assert!(
        removal[0].starts_with("/usr/sbin/iptables-legacy "),
        "{removal:#?}"
    );
    assert!(
        removal
            .last()
            .unwrap()
            .contains("ip6tables-legacy -w -t nat -X VIGIL_OUTBOUND")
    );

    let on = parse(&["--ipv6", "on", "--ip6tables", "my6tables"]).unwrap();
    assert_eq!(on.families(false)[1].program, "my6tables", "on: always");
    let off = parse(&["--ipv6", "off"]).unwrap();
    assert_eq!(off.families(true).len(), 1, "off: never");
    let odd = parse(&["--iptables", "xt"]).unwrap();
    assert_eq!(odd.ip6tables(), "ip6tables");
}

#[test]
fn envoys_uid_is_let_out_before_dns_and_jumps_come_first() {
    let args = parse(&["--skip-outbound-uids", "1337,1338"]).unwrap();
    let rules = restored(&plan(&args, &v4(&args)));
    let at = |rule: &str| {
        rules
            .iter()
            .position(|l| *l == format!("iptables-restore {rule}"))
            .unwrap_or_else(|| panic!("missing {rule:?} in {rules:#?}"))
    };
    let own = at("-A VIGIL_OUTBOUND -m owner --uid-owner 2102 -j RETURN");
    let envoy = at("-A VIGIL_OUTBOUND -m owner --uid-owner 1337 -j RETURN");
    at("-A VIGIL_OUTBOUND -m owner --uid-owner 1338 -j RETURN");
    let dns = at("-A VIGIL_OUTBOUND -p udp --dport 53 -j REDIRECT --to-ports 4153");
    assert!(own < envoy && envoy < dns, "{rules:#?}");
    assert!(parse(&["--skip-outbound-uids", "envoy"]).is_err());
    assert!(parse(&[]).unwrap().skip_outbound_uids.is_empty());
    // The jumps go first in their chains, ahead of another mesh's.
    for line in lines(&plan(&args, &v4(&args))).iter().skip(1) {
        assert!(line.contains(" -I ") && line.contains(" 1 -p "), "{line}");
    }
}
