//! End-to-end: the pod's UDP other than DNS goes through the sidecar's UDP
//! relay, in real network namespaces (see `common::netns`). `vigil-proxy
//! init` marks the app's UDP, routes it to `lo` and `TPROXY`s it to the
//! relay (the sidecar runs as uid 2102 with CAP_NET_RAW only), which
//! records each flow, names it by the pod's DNS answers, relays it with the
//! answers coming back from the address the app sent to, and drops it in
//! enforcement when the baseline does not hold it. The notebook is a
//! python3 UDP sender run as uid 1000: a UDP "tunnel" on an odd port, a
//! QUIC v1 Initial to a host never seen, a spoofed source port, a datagram
//! straight to the relay's own port, IPv6.
//!
//! Needs root, what `able()` lists, `dig` and `dnsmasq` (as `tests/dns.rs`)
//! and a `python3` uid 1000 may run; without them the test prints why it is
//! skipped and passes. CI installs them.
//!
//! ```text
//!  root ns             pod ns                                    server ns
//!  vigil-controller    vigil-proxy (uid 2102, NET_RAW)    veth    dnsmasq :53 (media.test)
//!  gRPC ------- veth   python3 as uid 1000 ---------------------  UDP echo 10.66.0.2:7000, :51820
//!                      10.66.0.1, fd66::1                         192.0.2.7:443, [fd66::2]:7000, :51821
//! ```

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;

use common::netns::{Netns, Network, able, ipv6, on_path, sidecar_with};
use common::{Proc, spawn_proc, wait_for};

/// Env var that turns [`helper_udp_echo`] into a server: `ip:port,...`.
const ECHO_ENV: &str = "UDP_TEST_ECHO";
/// The uid the notebook's tools run as.
const USER: &str = "1000";
/// Where uid 1000 finds a python3 (root's may sit under /root).
const PYTHONS: [&str; 2] = ["/usr/bin/python3", "/usr/local/bin/python3"];

/// Not a test of Vigil: the UDP echo servers this file starts in the server
/// namespace (by re-running this test binary with [`ECHO_ENV`]). Each
/// datagram is answered with `echo:` and itself, and logged as
/// `got <len> at <local> from <peer>`.
#[test]
fn helper_udp_echo() {
    let Ok(spec) = std::env::var(ECHO_ENV) else {
        return;
    };
    let threads: Vec<_> = spec
        .split(',')
        .map(|addr| {
            let addr: SocketAddr = addr.parse().expect("ip:port");
            let socket = UdpSocket::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
            println!("listening at {addr}");
            std::thread::spawn(move || {
                let mut buf = [0u8; 65_535];
                while let Ok((n, peer)) = socket.recv_from(&mut buf) {
                    println!("got {n} at {addr} from {peer}");
                    let answer = [&b"echo:"[..], &buf[..n]].concat();
                    let _ = socket.send_to(&answer, peer);
                }
            })
        })
        .collect();
    for thread in threads {
        let _ = thread.join();
    }
}

fn echo_servers(ns: &Netns, addrs: &[&str], log_dir: &Path) -> Proc {
    let mut cmd = ns.cmd(std::env::current_exe().unwrap());
    cmd.args(["helper_udp_echo", "--exact", "--nocapture"])
        .env(ECHO_ENV, addrs.join(","));
    let proc = spawn_proc(&format!("udp-echo-{}", ns.name), cmd, log_dir);
    wait_for("the UDP echo servers", || {
        (proc.log().matches("listening at").count() == addrs.len()).then_some(())
    });
    proc
}

/// The notebook's UDP sender: one datagram from a fresh socket, then the
/// answer (if any within 2 s) and where it came from.
const SENDER: &str = r#"
import socket, sys
dst, port, payload, bind, connect = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
family = socket.AF_INET6 if ":" in dst else socket.AF_INET
s = socket.socket(family, socket.SOCK_DGRAM)
s.settimeout(2)
if len(sys.argv) > 6:
    # Bound to a device, as any user may since Linux 5.7: the kernel routes
    # the datagram again with that device after the mangle table marked it.
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, sys.argv[6].encode())
if payload == "quic":
    # A QUIC v1 Initial long header (RFC 9000 17.2.2): 8-byte DCID, no SCID,
    # padded to the 1200 bytes a client Initial must fill.
    data = bytes([0xc3, 0, 0, 0, 1, 8]) + bytes(range(1, 9)) + bytes([0, 0, 0x44, 0x9e])
    data = data.ljust(1200, b"\0")
else:
    data = payload.encode()
try:
    if bind != "-":
        host, _, p = bind.rpartition(":")
        s.bind((host.strip("[]"), int(p)))
    if connect == "connect":
        s.connect((dst, port))
        s.send(data)
        answer, peer = s.recv(65535), s.getpeername()
    else:
        s.sendto(data, (dst, port))
        answer, peer = s.recvfrom(65535)
    print("answer", peer[0], peer[1], answer[:5].decode(errors="replace"), len(answer))
except socket.timeout:
    print("timeout")
except OSError as e:
    print("error", e.errno)
"#;

/// A UDP-Lite receiver on 10.66.0.2:7001, logging `got <len>`.
const UDPLITE_SERVER: &str = r#"
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, 136)
s.bind(("10.66.0.2", 7001))
print("listening")
while True:
    data, peer = s.recvfrom(65535)
    print("got", len(data), peer)
"#;

/// The notebook's UDP server on port 9053: answers each datagram with
/// `leak:` and itself.
const POD_ECHO: &str = r#"
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 9053))
print("listening", flush=True)
while True:
    data, peer = s.recvfrom(65535)
    s.sendto(b"leak:" + data, peer)
"#;

/// A host that begins a flow from port 53 (`192.0.2.7:53`) to the
/// notebook's server and waits 2 s for its answer.
const FROM_PORT_53: &str = r#"
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("192.0.2.7", 53))
s.settimeout(2)
s.sendto(b"ping", ("10.66.0.1", 9053))
try:
    print("answer", s.recvfrom(65535)[0].decode())
except socket.timeout:
    print("timeout")
"#;

/// What the notebook's sender saw.
#[derive(Debug, PartialEq, Eq)]
enum Sent {
    /// An answer from this address, starting with these bytes, this long.
    Answer(SocketAddr, String, usize),
    /// No answer within 2 s.
    Timeout,
    /// The kernel refused to send (errno).
    Error(i32),
}

struct Notebook<'a> {
    pod: &'a Netns,
    python: &'static str,
}

impl Notebook<'_> {
    /// Sends `payload` (or `quic`: an Initial) to `ip`:`port` as uid 1000,
    /// from `bind` (`-`: any), `connect`ed or not.
    fn send(&self, ip: &str, port: u16, payload: &str, bind: &str, connect: bool) -> Sent {
        self.send_via(ip, port, payload, bind, connect, None)
    }

    /// As [`Notebook::send`], from a socket bound to `device`
    /// (`SO_BINDTODEVICE`) when given.
    fn send_via(
        &self,
        ip: &str,
        port: u16,
        payload: &str,
        bind: &str,
        connect: bool,
        device: Option<&str>,
    ) -> Sent {
        let out = self
            .pod
            .cmd("setpriv")
            .args(["--reuid", USER, "--regid", USER, "--clear-groups"])
            .args([
                self.python,
                "-c",
                SENDER,
                ip,
                &port.to_string(),
                payload,
                bind,
            ])
            .arg(if connect { "connect" } else { "sendto" })
            .args(device)
            .output()
            .expect("running python3");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let words: Vec<&str> = text.split_whitespace().collect();
        match words.as_slice() {
            ["answer", host, port, head, len] => {
                let ip: std::net::IpAddr = host.parse().unwrap();
                let from = SocketAddr::new(ip.to_canonical(), port.parse().unwrap());
                Sent::Answer(from, (*head).to_owned(), len.parse().unwrap())
            }
            ["timeout"] => Sent::Timeout,
            ["error", errno] => Sent::Error(errno.parse().unwrap()),
            _ => panic!(
                "the sender printed {text:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }

    /// Sends `payload` over UDP-Lite to 10.66.0.2:7001 as uid 1000.
    fn udplite(&self, payload: &str) {
        // A DROP in OUTPUT fails the send (EPERM): either way nothing leaves.
        let script = "import socket,sys\n\
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, 136)\n\
            try: s.sendto(sys.argv[1].encode(), ('10.66.0.2', 7001))\n\
            except OSError: pass";
        let status = self
            .pod
            .cmd("setpriv")
            .args(["--reuid", USER, "--regid", USER, "--clear-groups"])
            .args([self.python, "-c", script, payload])
            .status()
            .expect("running python3");
        assert!(status.success(), "UDP-Lite sender: {status}");
    }

    fn echo(&self, ip: &str, port: u16, payload: &str) -> Sent {
        self.send(ip, port, payload, "-", false)
    }
}

fn answer(from: &str, head: &str, len: usize) -> Sent {
    Sent::Answer(from.parse().unwrap(), head.to_owned(), len)
}

/// The sidecar's observed-traffic metric for UDP flows (`requests` or
/// `denied`) of `protocol` to `destination`.
fn udp_metric(pod: &Netns, kind: &str, protocol: &str, destination: &str) -> Option<u64> {
    let (_, metrics) = pod.curl(&["http://127.0.0.1:4191/metrics"]);
    let prefix = format!(
        "vigil_proxy_observed_{kind}_total{{direction=\"outbound\",protocol=\"{protocol}\",destination=\"{destination}\"}} "
    );
    metric(&metrics, &prefix)
}

fn metric(metrics: &str, prefix: &str) -> Option<u64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|n| n.trim().parse().ok())
}

#[test]
fn udp_goes_through_the_sidecar_and_is_enforced() {
    let test = "udp_goes_through_the_sidecar_and_is_enforced";
    if !able(test) {
        return;
    }
    let python = PYTHONS.into_iter().find(|p| Path::new(p).is_file());
    let missing = ["dig", "dnsmasq", "sh", "mount"]
        .into_iter()
        .find(|t| !on_path(t))
        .or(python.is_none().then_some("python3 (in /usr/bin)"));
    if let Some(tool) = missing {
        eprintln!(
            "SKIPPED {test}: `{tool}` is not installed (apt-get install -y bind9-dnsutils dnsmasq-base python3); CI runs it."
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let net = Network::new();
    let (pod, srv) = (&net.pod, &net.server);
    pod.resolv_conf(&["nameserver 10.66.0.2"]);
    // A host the notebook never resolved, reached through the server
    // namespace (TEST-NET-1).
    pod.run("ip", &["route", "add", "192.0.2.0/24", "via", "10.66.0.2"]);
    srv.run("ip", &["addr", "add", "192.0.2.7/32", "dev", "lo"]);
    let mut addrs = vec!["10.66.0.2:7000", "10.66.0.2:51820", "192.0.2.7:443"];
    if ipv6() {
        addrs.extend(["[fd66::2]:7000", "[fd66::2]:51821"]);
    }
    let servers = echo_servers(srv, &addrs, tmp.path());
    let _resolver = common::dnsmasq(
        srv.cmd("dnsmasq"),
        "10.66.0.2",
        "10.66.0.2",
        &["media.test"],
        tmp.path(),
    );
    wait_for("dnsmasq", || {
        let out = srv
            .cmd("dig")
            .args(["+short", "+time=1", "+tries=1", "@10.66.0.2", "media.test"])
            .output()
            .ok()?;
        (String::from_utf8_lossy(&out.stdout).trim() == "10.66.0.2").then_some(())
    });

    let ctl = net.controller(tmp.path());
    let out = pod.init_redirect();
    assert!(out.contains("other UDP to port 4154"), "{out}");
    let mangle = pod.run("iptables-save", &["-t", "mangle"]);
    assert!(
        mangle.contains("-j TPROXY --on-port 4154 --on-ip 127.0.0.1"),
        "{mangle}"
    );
    let sidecar = sidecar_with(
        pod,
        "web",
        ctl.grpc,
        tmp.path(),
        &["--dns-upstream", "10.66.0.2"],
        None,
    );
    assert!(
        sidecar.log().contains("udp_addr=127.0.0.1:4154"),
        "{}",
        sidecar.log()
    );
    let notebook = Notebook {
        pod,
        python: python.unwrap(),
    };

    // Learning. A name the pod resolved names the flow; the answer comes
    // back from the address the notebook sent to, connected or not.
    let dig = pod
        .cmd("setpriv")
        .args(["--reuid", USER, "--regid", USER, "--clear-groups"])
        .args(["dig", "+short", "+time=3", "+tries=1", "media.test"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&dig.stdout).trim(), "10.66.0.2");
    let hello = answer("10.66.0.2:7000", "echo:", 10);
    assert_eq!(notebook.echo("10.66.0.2", 7000, "hello"), hello);
    assert_eq!(
        notebook.send("10.66.0.2", 7000, "hello", "-", true),
        hello,
        "a connected socket accepts the answer: it comes from 10.66.0.2:7000"
    );
    wait_for("the UDP flows in the sidecar's metrics", || {
        (udp_metric(pod, "requests", "udp", "media.test:7000")? >= 2).then_some(())
    });
    let edge = ctl.wait_edge("workload:default/web", "external:media.test:7000", 2);
    assert_eq!(edge["in_baseline"], true, "{edge}");
    assert!(
        servers
            .log()
            .contains("got 5 at 10.66.0.2:7000 from 10.66.0.1:"),
        "the server saw the datagrams, from the pod: {}",
        servers.log()
    );
    if ipv6() {
        let six = notebook.echo("fd66::2", 7000, "hello6");
        assert_eq!(six, answer("[fd66::2]:7000", "echo:", 11), "IPv6");
        ctl.wait_edge("workload:default/web", "external:[fd66::2]:7000", 1);
    } else {
        eprintln!("no IPv6 in this kernel: UDP over IPv6 is not checked");
    }

    // Enforcement.
    ctl.set_mode(&["enforcement"]);
    pod.wait_enforced();
    // The learned flow still works, from any source port the notebook picks.
    assert_eq!(notebook.echo("10.66.0.2", 7000, "again"), hello);
    assert_eq!(
        notebook.send("10.66.0.2", 7000, "again", "0.0.0.0:4140", false),
        hello
    );
    // A UDP "tunnel" on an odd port of a known host: dropped, recorded.
    assert_eq!(notebook.echo("10.66.0.2", 51820, "tunnel"), Sent::Timeout);
    // The same from a spoofed source port (the DNS port, the relay's own),
    // and over a connected socket.
    for bind in ["0.0.0.0:53", "0.0.0.0:4154", "10.66.0.1:40000"] {
        let sent = notebook.send("10.66.0.2", 51820, "tunnel", bind, false);
        assert!(
            matches!(sent, Sent::Timeout | Sent::Error(_)),
            "{bind}: {sent:?}"
        );
    }
    assert_eq!(
        notebook.send("10.66.0.2", 51820, "tunnel", "-", true),
        Sent::Timeout
    );
    // From a socket bound to the pod's interface: the policy route to the
    // relay does not match that device, and the datagram would leave by it.
    for connect in [false, true] {
        let sent = notebook.send_via("10.66.0.2", 51820, "device", "-", connect, Some("eth0"));
        assert!(
            matches!(sent, Sent::Timeout | Sent::Error(_)),
            "SO_BINDTODEVICE: {sent:?}"
        );
    }
    // A host sends from port 53 to a server in the notebook: the answer
    // goes to port 53 but is no DNS query (nat never sees it), so it is
    // judged as any UDP: 192.0.2.7:53 is not in the baseline.
    let mut cmd = pod.cmd("setpriv");
    cmd.args(["--reuid", USER, "--regid", USER, "--clear-groups"])
        .args([notebook.python, "-u", "-c", POD_ECHO]);
    let pod_echo = spawn_proc(&format!("pod-echo-{}", pod.name), cmd, tmp.path());
    wait_for("the notebook's UDP server", || {
        pod_echo.log().contains("listening").then_some(())
    });
    let out = srv
        .cmd(notebook.python)
        .args(["-c", FROM_PORT_53])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "timeout",
        "the answer to port 53 left the pod: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A QUIC Initial to a host the pod never resolved nor reached.
    assert_eq!(notebook.echo("192.0.2.7", 443, "quic"), Sent::Timeout);
    // Straight to the relay itself: nothing comes back, nothing goes out.
    assert_eq!(notebook.echo("127.0.0.1", 4154, "direct"), Sent::Timeout);
    if ipv6() {
        assert_eq!(notebook.echo("fd66::2", 51821, "tunnel6"), Sent::Timeout);
        assert_eq!(notebook.echo("::1", 4154, "direct6"), Sent::Timeout);
        assert_eq!(
            notebook.echo("fd66::2", 7000, "hello6"),
            answer("[fd66::2]:7000", "echo:", 11)
        );
    }
    wait_for("the refusals in the sidecar's metrics", || {
        let tunnel = udp_metric(pod, "denied", "udp", "media.test:51820")?;
        let quic = udp_metric(pod, "denied", "quic", "192.0.2.7:443")?;
        (tunnel >= 1 && quic >= 1).then_some(())
    });
    let (_, metrics) = pod.curl(&["http://127.0.0.1:4191/metrics"]);
    let direct = metric(
        &metrics,
        "vigil_proxy_udp_dropped_total{reason=\"direct\"} ",
    );
    assert!(direct >= Some(1), "{metrics}");
    let alert = ctl.wait_alert("unknown_egress", "web", Some("192.0.2.7:443"));
    assert_eq!(alert["action"], "blocked", "{alert}");
    ctl.wait_alert("unknown_egress", "web", Some("media.test:51820"));
    let log = servers.log();
    for never in ["10.66.0.2:51820", "192.0.2.7:443", "[fd66::2]:51821"] {
        let got = format!(" at {never} from ");
        assert!(!log.contains(&got), "{never} was reached:\n{log}");
    }
    drop(sidecar);
}

/// The UDP part of `init` in a fresh namespace: a second run changes
/// nothing (one policy rule, the same mangle table), `--redirect-udp off`
/// and `--remove` take it all back.
#[test]
fn init_udp_rules_are_idempotent_and_removable() {
    if !able("init_udp_rules_are_idempotent_and_removable") {
        return;
    }
    let pod = Netns::new("udpinit");
    let families: &[&str] = if ipv6() { &["-4", "-6"] } else { &["-4"] };
    let state = || {
        let mut out = vec![pod.run("iptables-save", &["-t", "mangle"])];
        if ipv6() {
            out.push(pod.run("ip6tables-save", &["-t", "mangle"]));
        }
        for family in families {
            out.push(pod.run("ip", &[family, "rule", "list"]));
            out.push(pod.run("ip", &[family, "route", "show", "table", "all"]));
        }
        out.into_iter()
            .map(|text| {
                text.lines()
                    .filter(|l| !l.starts_with('#'))
                    .map(|l| l.split(" [").next().unwrap_or(l).to_owned())
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .collect::<Vec<_>>()
    };
    let before = state();
    pod.init_redirect();
    let once = state();
    assert!(once[0].contains(":VIGIL_UDP -"), "{}", once[0]);
    pod.init_redirect();
    assert_eq!(state(), once, "a second run changes nothing");
    for family in families {
        let rules = pod.run("ip", &[family, "rule", "list"]);
        assert_eq!(
            rules.matches("fwmark 0x4000/0x4000 lookup 4154").count(),
            1,
            "{rules}"
        );
    }
    let init = |extra: &[&str]| {
        common::netns::check(
            pod.cmd(common::bin("vigil-proxy"))
                .args(["init", "--iptables", common::netns::IPTABLES])
                .args(extra),
        )
    };
    init(&["--redirect-udp", "off"]);
    let off = state();
    assert!(!off.join("\n").contains("VIGIL_UDP"), "{off:?}");
    assert!(!off.join("\n").contains("4154"), "{off:?}");
    init(&[]);
    init(&["--remove"]);
    assert_eq!(state(), before, "--remove restores the namespace");
}

/// A sidecar without CAP_NET_RAW cannot open its transparent relay: it
/// starts, says so, and the pod's UDP is dropped by the kernel (nothing
/// listens where TPROXY points), never let through unseen.
#[test]
fn without_net_raw_the_pods_udp_is_dropped_not_let_through() {
    let test = "without_net_raw_the_pods_udp_is_dropped_not_let_through";
    if !able(test) {
        return;
    }
    let Some(python) = PYTHONS.into_iter().find(|p| Path::new(p).is_file()) else {
        eprintln!("SKIPPED {test}: no python3 in /usr/bin (apt-get install -y python3)");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let net = Network::new();
    let (pod, srv) = (&net.pod, &net.server);
    let servers = echo_servers(srv, &["10.66.0.2:7000"], tmp.path());
    let notebook = Notebook { pod, python };
    // UDP-Lite (protocol 136): unprivileged sockets speak it, TPROXY cannot
    // deliver it, so init drops it.
    let mut cmd = srv.cmd(python);
    cmd.args(["-u", "-c", UDPLITE_SERVER]);
    let lite = spawn_proc(&format!("udplite-{}", srv.name), cmd, tmp.path());
    wait_for("the UDP-Lite server", || {
        lite.log().contains("listening").then_some(())
    });
    notebook.udplite("before");
    wait_for("UDP-Lite before init", || {
        lite.log().contains("got 6").then_some(())
    });
    assert_eq!(
        notebook.echo("10.66.0.2", 7000, "hi"),
        answer("10.66.0.2:7000", "echo:", 7),
        "no init yet"
    );
    pod.init_redirect();
    let proxy = common::netns::executable_copy(&common::bin("vigil-proxy"), tmp.path());
    let mut cmd = pod.cmd("setpriv");
    cmd.args(["--reuid", "2102", "--regid", "2102", "--clear-groups"])
        .arg(&proxy)
        .args(["--workload", "web", "--controller", "http://127.0.0.1:1"])
        .args(["--policy-wait-ms", "0", "--inbound-addr", "0.0.0.0:4143"]);
    let sidecar = spawn_proc("vigil-proxy-no-net-raw", cmd, tmp.path());
    wait_for("the sidecar's /ready", || {
        (pod.curl(&["http://127.0.0.1:4191/ready"]).0 == 200).then_some(())
    });
    let log = sidecar.log();
    assert!(log.contains("udp_addr=off"), "{log}");
    assert!(log.contains("CAP_NET_RAW"), "the log says why: {log}");
    assert_eq!(notebook.echo("10.66.0.2", 7000, "hello"), Sent::Timeout);
    let sent = notebook.send_via("10.66.0.2", 7000, "device", "-", false, Some("eth0"));
    assert!(
        matches!(sent, Sent::Timeout | Sent::Error(_)),
        "SO_BINDTODEVICE: {sent:?}"
    );
    notebook.udplite("after!!");
    // The UDP datagram above took 2 s to time out: UDP-Lite sent after it
    // would have arrived by now.
    notebook.echo("10.66.0.2", 7000, "wait");
    assert!(
        !lite.log().contains("got 7"),
        "UDP-Lite left the pod: {}",
        lite.log()
    );
    for got in ["got 5 at 10.66.0.2:7000", "got 6 at 10.66.0.2:7000"] {
        assert!(
            !servers.log().contains(got),
            "the datagram left the pod: {}",
            servers.log()
        );
    }
}
