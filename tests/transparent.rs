//! End-to-end: transparent interception in real network namespaces.
//! `vigil-proxy init` writes the iptables rules, the sidecar runs under its
//! own uid, and plain clients (curl without `-x`) are redirected through it.
//!
//! These tests need root, `ip` (iproute2), `iptables` + `iptables-save`
//! (and `ip6tables-save` on a kernel with IPv6), `setpriv` and curl. Without them each test prints why it is skipped and
//! passes; CI runs them as root. Every namespace gets a unique name and is
//! deleted on drop; every iptables command in a namespace uses the same
//! binary ([`IPTABLES`]), so one firewall backend per namespace.
//!
//! Layout of the end-to-end test:
//! ```text
//!  root ns                  pod ns                                 server ns
//!  vigil-controller  veth   vigil-proxy (uid 2102), app   veth     pypi :8000
//!  gRPC 10.77.a.b+1 ------- 10.77.a.b+2   10.66.0.1 ------------- 10.66.0.2
//!  API 127.0.0.1            iptables: vigil-proxy init             pool :8001
//!                                         fd66::1 --------------- fd66::2
//!                           ip6tables (with IPv6)                  pypi6, pool6
//! ```

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use common::netns::{
    IP6TABLES_SAVE, IPTABLES, Netns, Network, able, check, ipv6, on_path, sidecar,
};
use common::{Proc, bin, serve_forever, spawn_proc, wait_for};
/// Env var that turns [`helper_http_server`] into a server: `name@ip:port`.
const SERVE_ENV: &str = "TRANSPARENT_TEST_SERVE";

/// Not a test of Vigil: the body of the helper HTTP servers this file starts
/// inside namespaces (by re-running this test binary with [`SERVE_ENV`]).
/// Without the env var it returns at once.
#[test]
fn helper_http_server() {
    let Ok(spec) = std::env::var(SERVE_ENV) else {
        return;
    };
    let (name, addr) = spec.split_once('@').expect("name@ip:port");
    let addr: SocketAddr = addr.parse().expect("ip:port");
    match name {
        "echo" => serve_tcp(addr, None),
        "banner" => serve_tcp(addr, Some(b"220 banner\r\n")),
        _ => serve_forever(Box::leak(name.to_owned().into_boxed_str()), addr),
    }
}

/// A plain TCP echo server; with a banner, the server speaks first.
fn serve_tcp(addr: SocketAddr, banner: Option<&'static [u8]>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind(addr).expect("bind");
    for stream in listener.incoming().flatten() {
        std::thread::spawn(move || {
            let mut stream = stream;
            if let Some(banner) = banner {
                let _ = stream.write_all(banner);
            }
            let mut buf = [0u8; 4096];
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 || stream.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
    }
}

/// `init` in a fresh namespace: the chains and jumps appear, a second run
/// changes nothing, `--remove` restores exactly the earlier ruleset.
#[test]
fn init_is_idempotent_and_removes_only_its_own_rules() {
    if !able("init_is_idempotent_and_removes_only_its_own_rules") {
        return;
    }
    let ns = Netns::new("init");
    let proxy = bin("vigil-proxy");
    let init = |extra: &[&str]| {
        let mut cmd = ns.cmd(&proxy);
        cmd.args(["init", "--iptables", IPTABLES]).args(extra);
        check(&mut cmd)
    };
    ns.run(
        IPTABLES,
        &[
            "-t", "nat", "-A", "OUTPUT", "-p", "udp", "--dport", "53", "-j", "RETURN",
        ],
    );
    let unrelated = "-A OUTPUT -p udp -m udp --dport 53 -j RETURN";
    let before = ns.nat_rules();
    let filter_before = ns.rules("filter");
    assert!(before.contains(&unrelated.to_owned()), "{before:#?}");

    init(&[]);
    let once = ns.nat_rules();
    for want in [
        ":VIGIL_INBOUND -",
        ":VIGIL_OUTBOUND -",
        "-A PREROUTING -p tcp -j VIGIL_INBOUND",
        "-A OUTPUT -p tcp -j VIGIL_OUTBOUND",
        "-A VIGIL_INBOUND -p tcp -m tcp --dport 4191 -j RETURN",
        "-A VIGIL_INBOUND -p tcp -m addrtype --dst-type LOCAL -j REDIRECT --to-ports 4143",
        "-A VIGIL_OUTBOUND -m owner --uid-owner 2102 -j RETURN",
        "-A VIGIL_OUTBOUND -d 127.0.0.0/8 -j RETURN",
        "-A VIGIL_OUTBOUND -p tcp -j REDIRECT --to-ports 4140",
        // DNS, over UDP and TCP, to the DNS listener.
        "-A OUTPUT -p udp -m udp --dport 53 -j VIGIL_OUTBOUND",
        "-A VIGIL_OUTBOUND -p udp -m udp --dport 53 -j REDIRECT --to-ports 4153",
        "-A VIGIL_OUTBOUND -p tcp -m tcp --dport 53 -j REDIRECT --to-ports 4153",
        unrelated,
    ] {
        assert!(
            once.contains(&want.to_owned()),
            "missing {want:?} in {once:#?}"
        );
    }
    if ipv6() {
        let v6 = once
            .iter()
            .skip_while(|l| !l.contains(IP6TABLES_SAVE))
            .collect::<Vec<_>>();
        for want in [
            "-A OUTPUT -p tcp -j VIGIL_OUTBOUND",
            "-A VIGIL_OUTBOUND -d ::1/128 -j RETURN",
            "-A OUTPUT -p udp -m udp --dport 53 -j VIGIL_OUTBOUND",
            "-A VIGIL_OUTBOUND -p udp -m udp --dport 53 -j REDIRECT --to-ports 4153",
            "-A VIGIL_OUTBOUND -p tcp -j REDIRECT --to-ports 4140",
            "-A VIGIL_INBOUND -p tcp -m addrtype --dst-type LOCAL -j REDIRECT --to-ports 4143",
        ] {
            assert!(
                v6.iter().any(|l| *l == want),
                "IPv6: missing {want:?} in {v6:#?}"
            );
        }
    } else {
        eprintln!("no IPv6 in this kernel: only the IPv4 rules are checked");
    }
    // What is neither TCP nor UDP, and ICMP echo requests, are dropped.
    let filter = ns.rules("filter");
    for want in [
        ":VIGIL_EGRESS -",
        "-A OUTPUT -j VIGIL_EGRESS",
        "-A VIGIL_EGRESS -o lo -j RETURN",
        "-A VIGIL_EGRESS -m owner --uid-owner 2102 -j RETURN",
        "-A VIGIL_EGRESS -p tcp -j RETURN",
        "-A VIGIL_EGRESS -p udp -j RETURN",
        "-A VIGIL_EGRESS -p icmp -m icmp --icmp-type 8 -j DROP",
        "-A VIGIL_EGRESS -p icmp -j RETURN",
        "-A VIGIL_EGRESS -j DROP",
    ] {
        assert!(
            filter.contains(&want.to_owned()),
            "missing {want:?} in {filter:#?}"
        );
    }
    if ipv6() {
        assert!(
            filter
                .iter()
                .any(|l| l.contains("-p ipv6-icmp") && l.contains("--icmpv6-type 128 -j DROP")),
            "{filter:#?}"
        );
    }
    init(&[]);
    assert_eq!(ns.nat_rules(), once, "a second run changes nothing");
    assert_eq!(ns.rules("filter"), filter, "a second run changes nothing");
    init(&["--block-other-protocols", "off"]);
    assert_eq!(
        ns.rules("filter"),
        filter_before,
        "off takes the chain back"
    );
    init(&[]);

    // Other flags (here through env vars) replace Vigil's rules, not add to them.
    let mut cmd = ns.cmd(&proxy);
    cmd.args(["init", "--iptables", IPTABLES])
        .env("VIGIL_INIT_PROXY_UID", "1337")
        .env("VIGIL_INIT_SKIP_OUTBOUND_CIDRS", "10.96.0.0/12");
    check(&mut cmd);
    let other = ns.nat_rules();
    assert!(other.contains(&"-A VIGIL_OUTBOUND -d 10.96.0.0/12 -j RETURN".to_owned()));
    assert!(other.contains(&"-A VIGIL_OUTBOUND -m owner --uid-owner 1337 -j RETURN".to_owned()));
    assert_eq!(other.len(), once.len() + 1, "{other:#?}");

    // DNS off: its rules and its UDP jump go, the rest stays.
    init(&["--redirect-dns", "off"]);
    let off = ns.nat_rules();
    assert!(
        off.iter()
            .all(|l| !l.contains("--dport 53 -j VIGIL_OUTBOUND")),
        "{off:#?}"
    );
    assert!(
        off.iter().all(|l| !l.contains("--to-ports 4153")),
        "{off:#?}"
    );
    assert!(off.contains(&"-A OUTPUT -p tcp -j VIGIL_OUTBOUND".to_owned()));

    init(&["--remove"]);
    assert_eq!(
        ns.nat_rules(),
        before,
        "--remove restores the earlier ruleset"
    );
    assert_eq!(ns.rules("filter"), filter_before, "and the filter table's");
    init(&["--remove"]);
    assert_eq!(ns.nat_rules(), before, "removing twice is fine");

    let out = ns
        .cmd(&proxy)
        .args(["init", "--iptables", "/nonexistent/iptables"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a missing binary fails");
    assert!(
        stderr.contains("cannot run `/nonexistent/iptables-restore -w --noflush`"),
        "{stderr}"
    );
}

/// Outbound and inbound traffic of a pod, redirected to its sidecar with
/// no client configuration; learned, then enforced.
#[test]
fn transparent_redirect_is_observed_and_enforced() {
    if !able("transparent_redirect_is_observed_and_enforced") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let net = Network::new();
    let (pod, srv) = (&net.pod, &net.server);

    // Workloads: two servers outside the pod, the app inside it.
    let _pypi = helper(srv, "pypi", "10.66.0.2:8000", tmp.path());
    let _pool = helper(srv, "pool", "10.66.0.2:8001", tmp.path());
    // The app serves the network on every address (both families when the
    // kernel speaks IPv6); a private service listens on loopback only.
    let v6 = ipv6();
    let any = |port: u16| {
        if v6 {
            format!("[::]:{port}")
        } else {
            format!("0.0.0.0:{port}")
        }
    };
    let _app = helper(pod, "web", &any(8080), tmp.path());
    let _metrics = helper(pod, "web-metrics", &any(9090), tmp.path());
    let _private = helper(pod, "private", "127.0.0.1:9091", tmp.path());
    let mut ready = vec![
        (srv, "http://10.66.0.2:8000/"),
        (srv, "http://10.66.0.2:8001/"),
        (pod, "http://127.0.0.1:8080/"),
        (pod, "http://127.0.0.1:9090/"),
        (pod, "http://127.0.0.1:9091/"),
    ];
    // The same servers on IPv6, a way around a sidecar that only sees IPv4.
    let _v6_servers = v6.then(|| {
        ready.push((srv, "http://[fd66::2]:8000/"));
        ready.push((srv, "http://[fd66::2]:8001/"));
        [
            helper(srv, "pypi6", "[fd66::2]:8000", tmp.path()),
            helper(srv, "pool6", "[fd66::2]:8001", tmp.path()),
        ]
    });
    if !v6 {
        eprintln!("no IPv6 in this kernel: only IPv4 traffic is checked");
    }
    for (ns, url) in ready {
        wait_for(&format!("{url} in {}", ns.name), || {
            (ns.curl(&[url]).0 == 200).then_some(())
        });
    }

    // The controller in the root namespace, its gRPC port on the pod link.
    let ctl = net.controller(tmp.path());
    let grpc = ctl.grpc;

    // ICMP echo, which a notebook can send without privileges, leaves the
    // pod before init and not after: it is neither TCP nor UDP, so the
    // sidecar would never see it (a tunnel to any address).
    let ping = |addr: &str| {
        let mut cmd = pod.cmd("ping");
        cmd.args(["-c", "1", "-W", "1", addr])
            .stdout(std::process::Stdio::null());
        cmd.status().unwrap().success()
    };
    let pings = on_path("ping");
    if pings {
        assert!(ping("10.66.0.2"), "the server answers pings before init");
    } else {
        eprintln!("no ping here: ICMP echo from the pod is not checked");
    }

    // The pod: rules first (as an init container), then the sidecar.
    let out = pod.init_redirect();
    assert!(out.contains("installed"), "{out}");
    let _sidecar = sidecar(pod, grpc, tmp.path());
    if pings {
        assert!(!ping("10.66.0.2"), "an ICMP echo left the pod after init");
        if v6 {
            assert!(!ping("fd66::2"), "an ICMPv6 echo left the pod after init");
        }
    }

    // Outbound: plain curl, redirected to the sidecar's outbound listener.
    let (status, body) = pod.curl(&["http://10.66.0.2:8000/simple/x"]);
    assert_eq!((status, body.as_str()), (200, "pypi GET /simple/x"));
    let edge = ctl.wait_edge("workload:default/web", "external:10.66.0.2:8000", 1);
    assert_eq!(edge["in_baseline"], true, "{edge}");
    // HTTP/2 with prior knowledge (h2c), redirected: served as HTTP/2 and
    // forwarded as HTTP/2 to the original destination.
    let (status, body) = pod.curl(&["--http2-prior-knowledge", "http://10.66.0.2:8000/h2"]);
    assert_eq!((status, body.as_str()), (200, "pypi GET /h2"));
    let edge = ctl.wait_edge("workload:default/web", "external:10.66.0.2:8000", 2);
    assert!(common::has_protocol(&edge, "http2"), "{edge}");
    // An explicit proxy client in the same pod is not redirected twice.
    let (status, body) = pod.curl(&["-x", "http://127.0.0.1:4140", "http://10.66.0.2:8000/e"]);
    assert_eq!((status, body.as_str()), (200, "pypi GET /e"));
    ctl.wait_edge("workload:default/web", "external:10.66.0.2:8000", 3);

    // IPv6: redirected by the ip6tables rules to the IPv6 listeners.
    if v6 {
        let (status, body) = pod.curl(&["http://[fd66::2]:8000/v6"]);
        assert_eq!((status, body.as_str()), (200, "pypi6 GET /v6"));
        let edge = ctl.wait_edge("workload:default/web", "external:[fd66::2]:8000", 1);
        assert_eq!(edge["in_baseline"], true, "{edge}");
        let (status, body) = srv.curl(&["http://[fd66::1]:8080/hi6"]);
        assert_eq!(
            (status, body.as_str()),
            (200, "web GET /hi6"),
            "inbound IPv6"
        );
        ctl.wait_edge("internet", "workload:default/web", 1);
    }

    // Inbound: the pod's IP on the app port, redirected to the inbound
    // listener, which forwards to that same address.
    let (status, body) = srv.curl(&["http://10.66.0.1:8080/hi"]);
    assert_eq!((status, body.as_str()), (200, "web GET /hi"));
    ctl.wait_edge("internet", "workload:default/web", 1);
    let (status, body) = srv.curl(&["--http2-prior-knowledge", "http://10.66.0.1:8080/h2in"]);
    assert_eq!(
        (status, body.as_str()),
        (200, "web GET /h2in"),
        "inbound HTTP/2"
    );
    // A second port of the pod reaches the app on that port, not --app-addr.
    let (status, body) = srv.curl(&["http://10.66.0.1:9090/m"]);
    assert_eq!((status, body.as_str()), (200, "web-metrics GET /m"));
    // What listens on loopback only stays private: the inbound side goes to
    // the pod's address, never to 127.0.0.1.
    let (status, body) = srv.curl(&["http://10.66.0.1:9091/secret"]);
    assert_eq!(
        status, 502,
        "a loopback-only service reached from outside: {body}"
    );
    assert!(body.contains("Connection refused"), "{body}");
    // The sidecar's own outbound port is no open proxy for outsiders.
    let (status, body) = srv.curl(&["http://10.66.0.1:4140/", "-H", "Host: 10.66.0.2:8000"]);
    assert_eq!(
        status, 0,
        "the outbound listener reached from outside: {body}"
    );
    let (status, body) = srv.curl(&["-x", "http://10.66.0.1:4140", "http://10.66.0.2:8000/o"]);
    assert_eq!(status, 0, "the pod as an open proxy: {body}");
    let (_, metrics) = pod.curl(&["http://127.0.0.1:4191/metrics"]);
    assert!(
        metrics.contains("vigil_proxy_inbound_refused_total 2"),
        "{metrics}"
    );

    // Enforcement: the learned destination passes, a new one gets 403.
    ctl.set_mode(&["enforcement"]);
    pod.wait_enforced();
    assert_eq!(pod.curl(&["http://10.66.0.2:8000/simple/y"]).0, 200);
    let (status, body) = pod.curl(&["http://10.66.0.2:8001/"]);
    assert_eq!(status, 403, "a new destination is blocked: {body}");
    let json: serde_json::Value = serde_json::from_str(&body).expect("the 403 body is JSON");
    assert!(
        json["error"].as_str().unwrap_or("").contains("denied"),
        "{json}"
    );
    let alert = ctl.wait_alert("unknown_egress", "web", Some("10.66.0.2:8001"));
    assert_eq!(alert["action"], "blocked");
    if v6 {
        assert_eq!(pod.curl(&["http://[fd66::2]:8000/v6"]).0, 200, "learned");
        let (status, body) = pod.curl(&["http://[fd66::2]:8001/"]);
        assert_eq!(status, 403, "no way around over IPv6: {body}");
        ctl.wait_alert("unknown_egress", "web", Some("[fd66::2]:8001"));
    }
    assert_eq!(
        srv.curl(&["http://10.66.0.1:8080/hi"]).0,
        200,
        "learned inbound"
    );
}

/// Starts a helper HTTP server answering `<name> <method> <path>` on `addr`
/// inside `ns` (this test binary, re-run as [`helper_http_server`]).
fn helper(ns: &Netns, name: &str, addr: &str, log_dir: &Path) -> Proc {
    let mut cmd = ns.cmd(std::env::current_exe().unwrap());
    cmd.args(["helper_http_server", "--exact", "--nocapture"])
        .env(SERVE_ENV, format!("{name}@{addr}"));
    spawn_proc(&format!("{name}-{}", ns.name), cmd, log_dir)
}

/// A real TLS server (OpenSSL `s_server`, a self-signed certificate for
/// `pypi.test`) on port 8443 of every address of `ns`.
fn tls_server(ns: &Netns, dir: &Path) -> Proc {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    check(
        Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args(["-subj", "/CN=pypi.test", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert),
    );
    let mut tls = ns.cmd("openssl");
    tls.args(["s_server", "-accept", "8443", "-www", "-quiet", "-cert"])
        .arg(&cert)
        .arg("-key")
        .arg(&key);
    spawn_proc("openssl-s_server", tls, dir)
}

/// Redirected TLS is forwarded without decryption and named by its SNI, so
/// policy can tell two names on one IP apart; a denied TLS stream is reset.
/// Plain TCP (client-first and server-first) passes byte for byte.
#[test]
fn transparent_tls_by_sni_and_opaque_tcp() {
    if !able("transparent_tls_by_sni_and_opaque_tcp") || !on_path("openssl") || !on_path("bash") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let net = Network::new();
    let (pod, srv) = (&net.pod, &net.server);
    // Two names on one address (a CDN): the sidecar tells them apart by SNI.
    pod.hosts(&["10.66.0.2 pypi.test evil.test"]);
    // A real TLS server (OpenSSL) outside the pod, and two TCP servers.
    let _tls = tls_server(srv, tmp.path());
    let _echo = helper(srv, "echo", "10.66.0.2:9000", tmp.path());
    let _banner = helper(srv, "banner", "10.66.0.2:9001", tmp.path());
    let _app = helper(pod, "web", "127.0.0.1:8080", tmp.path());
    let https = |name: &str| {
        let resolve = format!("{name}:8443:10.66.0.2");
        let url = format!("https://{name}:8443/");
        pod.curl(&["-k", "--resolve", &resolve, &url])
    };
    wait_for("the TLS server", || {
        (srv.curl(&["-k", "https://10.66.0.2:8443/"]).0 == 200).then_some(())
    });

    let ctl = net.controller(tmp.path());
    let grpc = ctl.grpc;
    pod.init_redirect();
    let _sidecar = sidecar(pod, grpc, tmp.path());

    // TLS: learned by SNI name, not by IP.
    let (status, body) = https("pypi.test");
    assert_eq!(status, 200, "TLS through the redirect: {body}");
    let edge = ctl.wait_edge("workload:default/web", "external:pypi.test:8443", 1);
    assert_eq!(edge["protocols"], serde_json::json!(["tls"]), "{edge}");
    // Opaque TCP, client first and server first (after the detect timeout).
    let tcp = |script: &str| check(pod.cmd("bash").args(["-c", script]));
    let echoed =
        tcp("exec 3<>/dev/tcp/10.66.0.2/9000; printf 'ping\\n' >&3; timeout 5 head -c 5 <&3");
    assert_eq!(echoed, "ping\n");
    let banner = tcp("exec 3<>/dev/tcp/10.66.0.2/9001; timeout 5 head -c 12 <&3");
    assert_eq!(banner, "220 banner\r\n", "a server-first protocol works");
    let edge = ctl.wait_edge("workload:default/web", "external:10.66.0.2:9000", 1);
    assert_eq!(edge["protocols"], serde_json::json!(["tcp"]), "{edge}");
    ctl.wait_edge("workload:default/web", "external:10.66.0.2:9001", 1);

    // Enforcement: another SNI name on the same IP and port is reset.
    ctl.set_mode(&["enforcement"]);
    pod.wait_enforced();
    assert_eq!(https("pypi.test").0, 200, "the learned name still passes");
    let out = pod
        .cmd("curl")
        .args([
            "-sk",
            "--max-time",
            "5",
            "--resolve",
            "evil.test:8443:10.66.0.2",
            "https://evil.test:8443/",
        ])
        .output()
        .unwrap();
    let code = out.status.code();
    assert!(
        matches!(code, Some(35 | 56)),
        "curl sees the connection reset during the handshake, got {code:?}"
    );
    // In enforcement the sidecar does not look up a name the pod may not
    // look up (the query itself would carry data out; here the pod's
    // hosts file names it, which only the pod reads): the name is not bound
    // to the address, so the stream is judged, and alerted, by its
    // address.
    let alert = ctl.wait_alert("unknown_egress", "web", Some("10.66.0.2:8443"));
    assert_eq!(alert["action"], "blocked");
    assert_eq!(
        tcp("exec 3<>/dev/tcp/10.66.0.2/9000; printf 'again\\n' >&3; timeout 5 head -c 6 <&3"),
        "again\n"
    );
}

/// The notebook lies about where it is going: a learned name (`Host`,
/// `:authority`, TLS SNI) sent to a never-seen address is judged by that
/// address, refused in enforcement and alerted as `name_mismatch`; the
/// truth still passes. Clients run as the notebook's own uid, not root.
#[test]
fn a_learned_name_sent_to_another_address_is_refused() {
    if !able("a_learned_name_sent_to_another_address_is_refused") || !on_path("openssl") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let net = Network::new();
    let (pod, srv) = (&net.pod, &net.server);
    // A learned server (10.66.0.2) and a never-seen one (10.67.0.2), both
    // outside the pod; the pod resolves pypi.test to the learned one.
    srv.run("ip", &["addr", "add", "10.67.0.2/24", "dev", "eth0"]);
    pod.run("ip", &["route", "add", "10.67.0.0/24", "dev", "eth0"]);
    pod.hosts(&["10.66.0.2 pypi.test"]);
    let _learned = helper(srv, "pypi", "10.66.0.2:8000", tmp.path());
    let _unknown = helper(srv, "miner", "10.67.0.2:8000", tmp.path());
    let _other_port = helper(srv, "other", "10.66.0.2:8001", tmp.path());
    let _tls = tls_server(srv, tmp.path());
    for url in [
        "http://10.66.0.2:8000/",
        "http://10.66.0.2:8001/",
        "http://10.67.0.2:8000/",
        "https://10.67.0.2:8443/",
    ] {
        wait_for(url, || (srv.curl(&["-k", url]).0 == 200).then_some(()));
    }

    let ctl = net.controller(tmp.path());
    pod.init_redirect();
    let _sidecar = sidecar(pod, ctl.grpc, tmp.path());
    // The notebook's clients: its own uid, no proxy settings.
    let notebook = |program: &str| {
        let mut cmd = pod.cmd("setpriv");
        cmd.args([
            "--reuid",
            "1000",
            "--regid",
            "1000",
            "--clear-groups",
            program,
        ]);
        cmd
    };
    let curl = |args: &[&str]| {
        let out = notebook("curl")
            .args(["-sk", "--max-time", "5", "-w", "\n%{http_code}"])
            .args(args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        (code.trim().parse::<u16>().unwrap_or(0), body.to_owned())
    };
    let to_unknown = "pypi.test:8000:10.67.0.2";

    // Learning: the truth is learned by name; a lie is alerted, not learned.
    assert_eq!(curl(&["http://pypi.test:8000/simple/"]).0, 200);
    assert_eq!(curl(&["https://pypi.test:8443/"]).0, 200);
    ctl.wait_edge("workload:default/web", "external:pypi.test:8443", 1);
    let edge = ctl.wait_edge("workload:default/web", "external:pypi.test:8000", 1);
    assert_eq!(edge["in_baseline"], true, "{edge}");
    let (status, body) = curl(&["--resolve", to_unknown, "http://pypi.test:8000/learning"]);
    assert_eq!(
        (status, body.as_str()),
        (200, "miner GET /learning"),
        "learning lets it pass"
    );
    let alert = ctl.wait_alert("name_mismatch", "web", Some("10.67.0.2:8000"));
    assert_eq!(alert["claimed"], "pypi.test:8000", "{alert}");
    assert_eq!(alert["action"], "flagged", "{alert}");
    let edge = ctl.wait_edge("workload:default/web", "external:10.67.0.2:8000", 1);
    assert_eq!(edge["in_baseline"], false, "a lie is never learned: {edge}");

    ctl.set_mode(&["enforcement"]);
    pod.wait_enforced();
    // The truth passes.
    assert_eq!(
        curl(&["http://pypi.test:8000/simple/"]),
        (200, "pypi GET /simple/".into())
    );
    // HTTP/1.1: the learned name, to the never-seen address.
    for args in [
        vec!["--resolve", to_unknown, "http://pypi.test:8000/a"],
        vec!["-H", "Host: pypi.test:8000", "http://10.67.0.2:8000/b"],
        vec!["-H", "Host: pypi.test", "http://10.67.0.2:8000/c"],
        vec![
            "--http2-prior-knowledge",
            "--resolve",
            to_unknown,
            "http://pypi.test:8000/d",
        ],
    ] {
        let (status, body) = curl(&args);
        assert_eq!(status, 403, "{args:?}: {body}");
        assert!(body.contains("does not match"), "{args:?}: {body}");
        assert!(!body.contains("miner"), "{args:?}: {body}");
    }
    // Each request on a connection is checked: the truth, then a lie on the
    // same (reused) connection.
    let out = notebook("curl")
        .args([
            "-s",
            "--max-time",
            "5",
            "-w",
            " %{http_code} %{num_connects}\n",
        ])
        .args([
            "http://pypi.test:8000/first",
            "--next",
            "-s",
            "--max-time",
            "5",
        ])
        .args([
            "-w",
            " %{http_code} %{num_connects}\n",
            "-H",
            "Host: evil.test:8000",
        ])
        .arg("http://pypi.test:8000/second")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&out.stdout);
    let codes: Vec<&str> = out
        .lines()
        .filter_map(|l| l.rsplit_once(' ')?.0.rsplit(' ').next())
        .collect();
    assert_eq!(codes, ["200", "403"], "{out}");
    assert!(
        out.lines().last().unwrap().ends_with(" 0"),
        "one connection: {out}"
    );
    // `Host: learned:80` on a learned address but another port is judged by
    // the real port, which was never learned.
    let (status, body) = curl(&["-H", "Host: pypi.test:8000", "http://10.66.0.2:8001/"]);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("pypi.test:8001"), "{body}");
    // TLS: the learned SNI to the never-seen address is reset.
    let out = notebook("openssl")
        .args([
            "s_client",
            "-connect",
            "10.67.0.2:8443",
            "-servername",
            "pypi.test",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains("BEGIN CERTIFICATE"),
        "the handshake completed:\n{text}"
    );
    let alert = ctl.wait_alert("name_mismatch", "web", Some("10.67.0.2:8443"));
    assert_eq!(alert["claimed"], "pypi.test:8443", "{alert}");
    let alert = wait_for("the name_mismatch alert to count the refusals", || {
        let alert = ctl.wait_alert("name_mismatch", "web", Some("10.67.0.2:8000"));
        (alert["denied"].as_u64() >= Some(4)).then_some(alert)
    });
    assert_eq!(alert["action"], "blocked", "{alert}");
}

/// The inbound side serves the pod's own addresses, never a destination
/// that only passes by: a neighbour that routes `192.0.2.77` through the
/// pod (the node, or a pod on the same bridge with raw sockets) got its
/// connection redirected to the sidecar, which dialled `192.0.2.77:8000`
/// for it as uid 2102 (never redirected, never judged as outbound): an
/// open proxy out of the pod.
#[test]
fn the_inbound_side_is_no_open_proxy() {
    if !able("the_inbound_side_is_no_open_proxy") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let net = Network::new();
    let (pod, srv) = (&net.pod, &net.server);
    srv.run("ip", &["addr", "add", "192.0.2.77/32", "dev", "lo"]);
    pod.run("ip", &["route", "add", "192.0.2.0/24", "via", "10.66.0.2"]);
    let _far = helper(srv, "far", "192.0.2.77:8000", tmp.path());
    let _app = helper(pod, "web", "0.0.0.0:8080", tmp.path());
    for (ns, url) in [
        (srv, "http://192.0.2.77:8000/"),
        (pod, "http://127.0.0.1:8080/"),
    ] {
        wait_for(&format!("{url} in {}", ns.name), || {
            (ns.curl(&[url]).0 == 200).then_some(())
        });
    }
    let ctl = net.controller(tmp.path());
    pod.init_redirect();
    let _sidecar = sidecar(pod, ctl.grpc, tmp.path());
    // The root namespace is the neighbour: the pod is its way to 192.0.2.77.
    let pod_ip = std::net::Ipv4Addr::from(u32::from(net.root_ip) + 1).to_string();
    check(Command::new("ip").args(["route", "add", "192.0.2.77/32", "via", &pod_ip]));
    let curl = |url: &str| {
        let out = Command::new("curl")
            .args(["-s", "--max-time", "3", "-w", "\n%{http_code}", url])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // The pod's own address is served (learning: the app answers)...
    let own = curl(&format!("http://{pod_ip}:8080/"));
    assert!(own.starts_with("web GET /"), "{own}");
    // ...a destination behind it is not.
    let through = curl("http://192.0.2.77:8000/");
    assert!(
        !through.contains("far GET"),
        "the pod relayed a neighbour's connection to 192.0.2.77:8000: {through}"
    );
}
