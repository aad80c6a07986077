//! End-to-end: the shipped sidecar, `cargo dist-proxy` (the `dist` profile
//! with glibc linked statically, see `.cargo/config.toml`), in a root that
//! holds nothing but the binary, `/etc/hosts` and `/etc/resolv.conf`: no
//! shared library, no `/dev`, no `/proc`. Name binding checks every name a
//! notebook gives against what the name resolves to, so the static binary's
//! own lookups (glibc's `getaddrinfo`, built in) must work there: names from
//! the root's hosts file and from its nameserver (a real UDP DNS server on
//! loopback, here), and a name nobody knows refused rather than guessed.
//!
//! The binary is the one `VIGIL_STATIC_PROXY` names, which `.ci/run` sets
//! after building it; without it the tests print why they are skipped and
//! pass. The chroot test needs root (chroot, and port 53 of a loopback
//! address); without it, it prints why it is skipped and passes.

mod common;

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

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

/// A DNS server on `addr`:53 that knows one name, `name` -> 127.0.0.1:
/// NXDOMAIN for every other, no AAAA. Counts the questions about `name`.
/// `None` (and why) without the privilege to bind port 53.
fn serve_dns(addr: Ipv4Addr, name: &'static str) -> Option<Arc<AtomicUsize>> {
    let socket = match UdpSocket::bind((addr, 53)) {
        Ok(socket) => socket,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            eprintln!("skipped: binding port 53 needs root ({e})");
            return None;
        }
        Err(e) => panic!("cannot bind {addr}:53: {e}"),
    };
    let asked = Arc::new(AtomicUsize::new(0));
    let counter = asked.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        loop {
            let Ok((n, from)) = socket.recv_from(&mut buf) else {
                return;
            };
            let query = &buf[..n];
            // Header (12 bytes), then one question: labels, type, class.
            let mut at = 12;
            let mut labels = Vec::new();
            while at < n && query[at] != 0 {
                let len = usize::from(query[at]);
                labels.push(String::from_utf8_lossy(&query[at + 1..at + 1 + len]).into_owned());
                at += 1 + len;
            }
            let question_end = at + 5;
            if question_end > n {
                continue;
            }
            let qtype = u16::from_be_bytes([query[at + 1], query[at + 2]]);
            let known = labels.join(".").eq_ignore_ascii_case(name);
            if known {
                counter.fetch_add(1, Ordering::SeqCst);
            }
            let answer = known && qtype == 1;
            let mut reply = Vec::with_capacity(question_end + 16);
            reply.extend_from_slice(&query[..2]);
            // A response, recursion desired and available; NXDOMAIN for
            // names it does not know.
            let rcode = if known { 0 } else { 3 };
            reply.extend_from_slice(&[0x81, 0x80 | rcode, 0, 1, 0, u8::from(answer), 0, 0, 0, 0]);
            reply.extend_from_slice(&query[12..question_end]);
            if answer {
                // The name (a pointer to the question), A, IN, TTL 60, 127.0.0.1.
                reply.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 1]);
            }
            let _ = socket.send_to(&reply, from);
        }
    });
    Some(asked)
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
    let Some(asked) = serve_dns(nameserver, DNS_NAME) else {
        return;
    };
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
    assert!(asked.load(Ordering::SeqCst) > 0, "the nameserver was asked");
    let (status, _) = get("unknown.test", "/");
    assert_eq!(status, 502, "a name nobody knows:\n{}", proxy.log());
}
