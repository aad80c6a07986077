//! Network namespaces for the tests that need root: a pod namespace where
//! `vigil-proxy init` writes iptables rules and the sidecar runs under its
//! own uid, joined by veth pairs to a server namespace and to the root
//! namespace (for the controller).
//!
//! Every namespace gets a unique name and is deleted on drop; every
//! iptables command in a namespace uses the same binary ([`IPTABLES`]), so
//! one firewall backend per namespace.

use std::ffi::OsStr;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use super::{Proc, bin, spawn_proc, wait_for};

/// The iptables binary used in every namespace (with [`IPTABLES_SAVE`]).
pub const IPTABLES: &str = "iptables";
/// The matching dump tool.
pub const IPTABLES_SAVE: &str = "iptables-save";
/// Its IPv6 twin (`vigil-proxy init` derives `ip6tables` from [`IPTABLES`]).
pub const IP6TABLES_SAVE: &str = "ip6tables-save";
/// The sidecar's uid (and gid), as `vigil-proxy init --proxy-uid`.
pub const PROXY_UID: &str = "2102";

/// Prints why the test is skipped and returns false when it cannot run.
pub fn able(test: &str) -> bool {
    let missing = if !is_root() {
        Some("not running as root".to_owned())
    } else {
        ["ip", IPTABLES, IPTABLES_SAVE, "setpriv", "curl"]
            .into_iter()
            .chain(ipv6().then_some(IP6TABLES_SAVE))
            .find(|tool| !on_path(tool))
            .map(|tool| format!("`{tool}` is not installed"))
    };
    match missing {
        None => true,
        Some(why) => {
            eprintln!(
                "SKIPPED {test}: {why}. It needs root, iproute2, iptables, setpriv and curl \
                 (apt-get install -y iptables iproute2); CI runs it."
            );
            false
        }
    }
}

/// Whether the kernel speaks IPv6 (then init writes ip6tables rules too,
/// and the end-to-end test checks IPv6 traffic).
pub fn ipv6() -> bool {
    Path::new("/proc/net/if_inet6").exists()
}

pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

pub fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
}

/// Runs `cmd`; panics with its stderr when it fails; returns its stdout.
pub fn check(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace with `lo` up, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(role: &str) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("vigil-{role}-{}-{n}", std::process::id());
        check(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns { name };
        ns.run("ip", &["link", "set", "lo", "up"]);
        ns
    }

    /// `program` to be run inside the namespace.
    pub fn cmd(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Gives the namespace its own `/etc/hosts` (`ip netns exec` mounts
    /// `/etc/netns/<name>/hosts` over it), one `ip names...` line each.
    pub fn hosts(&self, lines: &[&str]) {
        let dir = Path::new("/etc/netns").join(&self.name);
        std::fs::create_dir_all(&dir).unwrap();
        let mut text = String::from("127.0.0.1 localhost\n::1 localhost\n");
        for line in lines {
            text.push_str(line);
            text.push('\n');
        }
        std::fs::write(dir.join("hosts"), text).unwrap();
    }

    /// Gives the namespace its own `/etc/resolv.conf` (mounted over it by
    /// `ip netns exec`, like [`Netns::hosts`]), one line each, e.g.
    /// `nameserver 10.66.0.2`; removed on drop.
    pub fn resolv_conf(&self, lines: &[&str]) {
        let dir = Path::new("/etc/netns").join(&self.name);
        std::fs::create_dir_all(&dir).unwrap();
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        std::fs::write(dir.join("resolv.conf"), text).unwrap();
    }

    /// Runs `program args` inside; panics on failure; returns stdout.
    pub fn run(&self, program: &str, args: &[&str]) -> String {
        check(self.cmd(program).args(args))
    }

    /// The nat tables as `iptables-save` then (with IPv6) `ip6tables-save`
    /// print them, without comments and packet counters.
    pub fn nat_rules(&self) -> Vec<String> {
        self.rules("nat")
    }

    /// `table` as `iptables-save` then (with IPv6) `ip6tables-save` print
    /// it, without comments and packet counters.
    pub fn rules(&self, table: &str) -> Vec<String> {
        let mut saves = vec![IPTABLES_SAVE];
        if ipv6() {
            saves.push(IP6TABLES_SAVE);
        }
        saves
            .into_iter()
            .flat_map(|save| {
                let text = self.run(save, &["-t", table]);
                let rules: Vec<String> = text
                    .lines()
                    .filter(|l| !l.starts_with('#'))
                    .map(|l| match l.split_once(" [") {
                        Some((chain, _)) if l.starts_with(':') => chain.to_owned(),
                        _ => l.to_owned(),
                    })
                    .collect();
                std::iter::once(format!("# {save}")).chain(rules)
            })
            .collect()
    }

    /// curl from inside (as root); returns (status, body), status 0 when it
    /// could not connect.
    pub fn curl(&self, args: &[&str]) -> (u16, String) {
        let out = self
            .cmd("curl")
            .args(["-s", "--max-time", "5", "-w", "\n%{http_code}"])
            .args(args)
            .output()
            .expect("running curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", text.as_str()));
        (code.trim().parse().unwrap_or(0), body.to_owned())
    }

    /// Waits until the sidecar in this namespace (admin port 4191) enforces
    /// its policy, i.e. the controller's switch to enforcement arrived.
    pub fn wait_enforced(&self) {
        super::wait_for("policy enforce=true at the sidecar", || {
            let (status, body) = self.curl(&["http://127.0.0.1:4191/config_dump"]);
            let dump: serde_json::Value = serde_json::from_str(&body).ok()?;
            (status == 200 && dump["policy"]["enforce"] == true).then_some(())
        });
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(&self.name));
    }
}

/// The pod and server namespaces joined by a veth pair (10.66.0.1/30 <->
/// 10.66.0.2/30, and fd66::1/64 <-> fd66::2/64 when the kernel speaks
/// IPv6), and a veth pair from the root namespace into the pod
/// (for the controller), on a /30 of 10.77.0.0/16 chosen by the pid.
pub struct Network {
    pub root_link: String,
    pub root_ip: Ipv4Addr,
    pub pod: Netns,
    pub server: Netns,
}

impl Network {
    pub fn new() -> Self {
        let pod = Netns::new("pod");
        let server = Netns::new("srv");
        pod.run(
            "ip",
            &[
                "link",
                "add",
                "eth0",
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &server.name,
            ],
        );
        for (ns, ip, ip6) in [
            (&pod, "10.66.0.1/30", "fd66::1/64"),
            (&server, "10.66.0.2/30", "fd66::2/64"),
        ] {
            ns.run("ip", &["addr", "add", ip, "dev", "eth0"]);
            if ipv6() {
                // nodad: usable at once, not after duplicate detection.
                ns.run("ip", &["-6", "addr", "add", ip6, "dev", "eth0", "nodad"]);
            }
            ns.run("ip", &["link", "set", "eth0", "up"]);
        }
        // Unique per process and test in the root namespace: its name and
        // its /30 (tests may run as threads of one process).
        static NETWORKS: AtomicU32 = AtomicU32::new(0);
        let n = NETWORKS.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let block = (pid * 8 + n) % 16384;
        let base = u32::from(Ipv4Addr::new(10, 77, 0, 0)) + block * 4;
        let (root_ip, pod_ip) = (Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2));
        let root_link = format!("vgc{pid}x{n}");
        check(Command::new("ip").args([
            "link", "add", &root_link, "type", "veth", "peer", "name", "ctl0", "netns", &pod.name,
        ]));
        let network = Network {
            root_link,
            root_ip,
            pod,
            server,
        };
        let root_cidr = format!("{root_ip}/30");
        check(Command::new("ip").args(["addr", "add", &root_cidr, "dev", &network.root_link]));
        check(Command::new("ip").args(["link", "set", &network.root_link, "up"]));
        let pod_cidr = format!("{pod_ip}/30");
        network
            .pod
            .run("ip", &["addr", "add", &pod_cidr, "dev", "ctl0"]);
        network.pod.run("ip", &["link", "set", "ctl0", "up"]);
        network
    }
}

impl Network {
    /// A `vigil-controller` in the root namespace, its gRPC port on the pod
    /// link (where the sidecar reaches it), its API on loopback.
    pub fn controller(&self, dir: &Path) -> super::Controller {
        let grpc = SocketAddr::from((self.root_ip, 0));
        let http = SocketAddr::from(([127, 0, 0, 1], 0));
        super::Controller::start_on(&dir.join("data"), dir, grpc, http)
    }
}

impl Netns {
    /// `vigil-proxy init` in this namespace, as the pod's init container
    /// runs it; returns what it printed.
    pub fn init_redirect(&self) -> String {
        check(self.cmd(bin("vigil-proxy")).args([
            "init",
            "--iptables",
            IPTABLES,
            "--proxy-uid",
            PROXY_UID,
        ]))
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.root_link])
            .status();
    }
}

/// Starts `vigil-proxy` for workload `web` in `pod` as uid/gid
/// [`PROXY_UID`], with the pod ports of the README, and waits until ready.
pub fn sidecar(pod: &Netns, grpc: SocketAddr, log_dir: &Path) -> Proc {
    sidecar_for(pod, "web", grpc, log_dir)
}

/// [`sidecar`] for `workload` in namespace `default`.
pub fn sidecar_for(pod: &Netns, workload: &str, grpc: SocketAddr, log_dir: &Path) -> Proc {
    sidecar_with(pod, workload, grpc, log_dir, &[], None)
}

/// [`sidecar_for`] with `extra` flags and, with `resolv_conf`, that file
/// as the sidecar's own `/etc/resolv.conf` (bind-mounted in the private
/// mount namespace `ip netns exec` gives it), so its own lookups can
/// differ from the pod's.
pub fn sidecar_with(
    pod: &Netns,
    workload: &str,
    grpc: SocketAddr,
    log_dir: &Path,
    extra: &[&str],
    resolv_conf: Option<&Path>,
) -> Proc {
    let proxy = executable_copy(&bin("vigil-proxy"), log_dir);
    // The controller's token file is root's (0600): the sidecar's uid gets
    // its own copy, as a mounted secret would be.
    let token = log_dir.join("bin").join("sidecar.token");
    std::fs::copy(super::sidecar_token_file(log_dir), &token).unwrap();
    let uid = PROXY_UID.parse().unwrap();
    std::os::unix::fs::chown(&token, Some(uid), Some(uid)).unwrap();
    let mut cmd = match resolv_conf {
        None => pod.cmd("setpriv"),
        Some(file) => {
            let mut cmd = pod.cmd("sh");
            cmd.args([
                "-c",
                r#"mount --bind "$0" /etc/resolv.conf && exec setpriv "$@""#,
            ])
            .arg(file);
            cmd
        }
    };
    // CAP_NET_RAW only, as the sidecar container gets it: the UDP relay's
    // transparent sockets (IP_TRANSPARENT) need it.
    cmd.args(["--reuid", PROXY_UID, "--regid", PROXY_UID, "--clear-groups"])
        .args(["--inh-caps", "+net_raw", "--ambient-caps", "+net_raw"])
        .arg(&proxy)
        .args(["--workload", workload, "--namespace", "default"])
        .args(["--report-interval-ms", super::REPORT_MS])
        .args(["--outbound-addr", "127.0.0.1:4140"])
        .args(["--inbound-addr", "0.0.0.0:4143"])
        .args(["--admin-addr", "127.0.0.1:4191"])
        .args(["--app-addr", "127.0.0.1:8080"])
        .arg("--controller-token-file")
        .arg(&token)
        .arg("--controller")
        .arg(format!("http://{grpc}"))
        .args(extra);
    let proc = spawn_proc(&format!("vigil-proxy-{workload}"), cmd, log_dir);
    wait_for("the sidecar's /ready", || {
        (pod.curl(&["http://127.0.0.1:4191/ready"]).0 == 200).then_some(())
    });
    proc
}

/// A copy of `binary` that the sidecar's uid can execute (the build
/// directory may sit under a home directory it cannot enter).
pub fn executable_copy(binary: &Path, near: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = near.join("bin");
    std::fs::create_dir_all(&dir).unwrap();
    for d in [near, dir.as_path()] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let copy = dir.join(binary.file_name().unwrap());
    std::fs::copy(binary, &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    copy
}
