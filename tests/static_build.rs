//! End-to-end: the shipped sidecar, `cargo dist-proxy` (the `dist` profile
//! with glibc linked statically, see `.cargo/config.toml`), in a root that
//! holds nothing but the binary, `/etc/hosts` and `/etc/resolv.conf`: no
//! shared library, no `/dev`, no `/proc`. Name binding checks every name a
//! notebook gives against what the name resolves to, so the static binary's
//! own lookups (glibc's `getaddrinfo`, built in) must work there: names from
//! the root's hosts file and from its nameserver (a real UDP DNS server on
//! loopback, here: dnsmasq), and a name nobody knows refused rather than
//! guessed.
//!
//! The binary is the one `VIGIL_STATIC_PROXY` names, which `.ci/run` sets
//! after building it; without it the tests print why they are skipped and
//! pass. The chroot test needs root (chroot, and port 53 of a loopback
//! address) and `dnsmasq`; without them, it prints why it is skipped and
//! passes.

mod common;

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Upstream, curl, spawn_proc, wait_for};

/// The name only the root's hosts file knows.
const FILES_NAME: &str = "upstream-files.test";
/// The name only the root's nameserver knows.
const DNS_NAME: &str = "upstream-dns.test";

/// The static sidecar to test, or `None` (and why) when there is none.
fn static_proxy() -> Option<PathBuf> {
    match std::env::var_os("VIGIL_STATIC_PROXY") {
        Some(path) => Some(PathBuf::from(path)),
        None => {
            eprintln!(
                "skipped: VIGIL_STATIC_PROXY names no binary (.ci/run sets it after `cargo dist-proxy`)"
            );
            None
        }
    }
}

/// The `p_type` of each of an ELF64 file's program headers.
fn program_header_types(elf: &[u8]) -> Vec<u32> {
    assert_eq!(&elf[..5], b"\x7fELF\x02", "not an ELF64 file");
    let u16_at = |at: usize| u16::from_le_bytes(elf[at..at + 2].try_into().unwrap());
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
    let (size, count) = (usize::from(u16_at(0x36)), usize::from(u16_at(0x38)));
    (0..count)
        .map(|i| {
            let at = phoff + i * size;
            u32::from_le_bytes(elf[at..at + 4].try_into().unwrap())
        })
        .collect()
}

/// `PT_INTERP`: the program names the dynamic loader that must start it.
const PT_INTERP: u32 = 3;

#[test]
fn the_shipped_sidecar_needs_no_dynamic_loader() {
    let Some(path) = static_proxy() else { return };
    let types = program_header_types(&std::fs::read(&path).unwrap());
    assert!(!types.is_empty(), "no program headers");
    assert!(
        !types.contains(&PT_INTERP),
        "{} is linked dynamically (it names an interpreter)",
        path.display()
    );
    // The check itself: a dynamically linked binary of the same tree.
    let dynamic = std::fs::read(common::bin("vigil-proxy")).unwrap();
    assert!(program_header_types(&dynamic).contains(&PT_INTERP));
}

/// Whether this test may run the root's nameserver: port 53 needs root,
/// and dnsmasq must be installed; if not, why.
fn cannot_serve_dns(addr: Ipv4Addr) -> Option<String> {
    if !common::netns::on_path("dnsmasq") {
        return Some("`dnsmasq` is not installed (apt-get install -y dnsmasq-base)".to_owned());
    }
    match UdpSocket::bind((addr, 53)) {
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            Some(format!("binding port 53 needs root ({e})"))
        }
        _ => None,
    }
}

/// A root holding only `binary` (as `/vigil-proxy`), a hosts file naming
/// [`FILES_NAME`], and a resolv.conf naming `nameserver`.
fn empty_root(dir: &Path, binary: &Path, nameserver: Ipv4Addr) -> PathBuf {
    let root = dir.join("root");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::copy(binary, root.join("vigil-proxy")).unwrap();
    std::fs::write(
        root.join("etc/hosts"),
        format!("127.0.0.1 localhost\n127.0.0.1 {FILES_NAME}\n"),
    )
    .unwrap();
    std::fs::write(
        root.join("etc/resolv.conf"),
        format!("nameserver {nameserver}\noptions timeout:1 attempts:1\n"),
    )
    .unwrap();
    root
}

#[test]
fn a_static_sidecar_resolves_names_in_an_empty_root() {
    let Some(binary) = static_proxy() else { return };
    let dir = tempfile::tempdir().unwrap();
    // A loopback address of this test's own, so that its port 53 is free.
    let nameserver = Ipv4Addr::new(127, 53, (std::process::id() % 250) as u8 + 1, 1);
    if let Some(why) = cannot_serve_dns(nameserver) {
        eprintln!("skipped: {why}");
        return;
    }
    let dns = common::dnsmasq(
        Command::new("dnsmasq"),
        &nameserver.to_string(),
        "127.0.0.1",
        &[DNS_NAME],
        dir.path(),
    );
    wait_for("dnsmasq", || dns.log().contains("started").then_some(()));
    let root = empty_root(dir.path(), &binary, nameserver);
    let upstream = Upstream::start("static");
    let mut cmd = Command::new("chroot");
    cmd.arg(&root).arg("/vigil-proxy");
    cmd.args(["--workload", "static", "--namespace", "default"]);
    // No controller: the allow-all policy, at once.
    cmd.args(["--controller", &format!("http://{}", common::NOWHERE)]);
    cmd.args(["--policy-wait-ms", "0"]);
    for listener in ["--outbound-addr", "--inbound-addr", "--admin-addr"] {
        cmd.args([listener, "127.0.0.1:0"]);
    }
    for off in [
        "--outbound-addr6",
        "--inbound-addr6",
        "--dns-addr",
        "--udp-addr",
    ] {
        cmd.args([off, "off"]);
    }
    cmd.arg("--app-addr").arg(upstream.addr.to_string());
    let proxy = spawn_proc("vigil-proxy-static", cmd, dir.path());
    let (outbound, admin): (SocketAddr, SocketAddr) =
        wait_for("the static sidecar's start line", || {
            Some((
                proxy.logged_addr("outbound_addr")?,
                proxy.logged_addr("admin_addr")?,
            ))
        });
    wait_for("the static sidecar's /ready", || {
        (curl(&[&format!("http://{admin}/ready")]).0 == 200).then_some(())
    });

    let port = upstream.addr.port();
    let via = format!("http://{outbound}");
    let get = |host: &str, path: &str| curl(&["-x", &via, &format!("http://{host}:{port}{path}")]);
    assert_eq!(
        get(FILES_NAME, "/files"),
        (200, "static GET /files".to_owned()),
        "a name from the root's hosts file:\n{}",
        proxy.log()
    );
    assert_eq!(
        get(DNS_NAME, "/dns"),
        (200, "static GET /dns".to_owned()),
        "a name from the root's nameserver:\n{}",
        proxy.log()
    );
    let asked = format!("query[A] {DNS_NAME}");
    assert!(
        dns.log().contains(&asked),
        "the nameserver was asked:\n{}",
        dns.log()
    );
    let (status, _) = get("unknown.test", "/");
    assert_eq!(status, 502, "a name nobody knows:\n{}", proxy.log());
}
