//! End-to-end: the pod's DNS goes through the sidecar, in real network
//! namespaces (see `common::netns`). `vigil-proxy init` redirects UDP and
//! TCP port 53 to the sidecar's DNS listener, which forwards to the pod's
//! resolver (dnsmasq in the server namespace), records each query, feeds the
//! answers to name binding and, in enforcement, refuses names outside the
//! baseline.
//!
//! Needs root, what `able()` lists, `dig` (Debian bind9-dnsutils) and
//! `dnsmasq` (Debian dnsmasq-base); without them the test prints why it is
//! skipped and passes. CI installs them.
//!
//! ```text
//!  root ns                  pod ns                                  server ns
//!  vigil-controller  veth   vigil-proxy (uid 2102), dig as uid 1000  veth  dnsmasq :53
//!  gRPC 10.77.a.b+1 ------- 10.77.a.b+2   10.66.0.1 ------------------------ 10.66.0.2
//!                           resolv.conf: nameserver 10.66.0.2                pypi :8000
//! ```

mod common;

use std::path::Path;

use common::netns::{Netns, Network, able, ipv6, on_path, sidecar_with};
use common::{Proc, serve_forever, spawn_proc, wait_for};

/// Env var that turns [`helper_dns_http_server`] into a server: `name@ip:port`.
const SERVE_ENV: &str = "DNS_TEST_SERVE";
/// The uid the notebook's tools run as.
const USER: &str = "1000";

/// Not a test of Vigil: the body of the HTTP server this file starts in the
/// server namespace (by re-running this test binary with [`SERVE_ENV`]).
#[test]
fn helper_dns_http_server() {
    let Ok(spec) = std::env::var(SERVE_ENV) else {
        return;
    };
    let (name, addr) = spec.split_once('@').expect("name@ip:port");
    serve_forever(
        Box::leak(name.to_owned().into_boxed_str()),
        addr.parse().expect("ip:port"),
    );
}

fn http_server(ns: &Netns, name: &str, addr: &str, log_dir: &Path) -> Proc {
    let mut cmd = ns.cmd(std::env::current_exe().unwrap());
    cmd.args(["helper_dns_http_server", "--exact", "--nocapture"])
        .env(SERVE_ENV, format!("{name}@{addr}"));
    spawn_proc(&format!("{name}-{}", ns.name), cmd, log_dir)
}

/// `dig args` in the pod as uid [`USER`]; returns its output.
fn dig(pod: &Netns, args: &[&str]) -> String {
    let out = pod
        .cmd("setpriv")
        .args(["--reuid", USER, "--regid", USER, "--clear-groups", "dig"])
        .args(["+time=3", "+tries=1"])
        .args(args)
        .output()
        .expect("running dig");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// curl in the pod as uid [`USER`]; returns the status (0: no answer).
fn curl_as_user(pod: &Netns, url: &str) -> u16 {
    curl_user(pod, &[url]).0
}

/// curl `args` in the pod as uid [`USER`]; returns the status (0: no
/// answer) and the body.
fn curl_user(pod: &Netns, args: &[&str]) -> (u16, String) {
    let out = pod
        .cmd("setpriv")
        .args(["--reuid", USER, "--regid", USER, "--clear-groups", "curl"])
        .args(["-s", "--max-time", "8", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("running curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    (status.trim().parse().unwrap_or(0), body.to_owned())
}

/// The sidecar's metric line for DNS queries of `name` (`requests` or
/// `denied`), with its count.
fn dns_metric(pod: &Netns, kind: &str, name: &str) -> Option<u64> {
    let (_, metrics) = pod.curl(&["http://127.0.0.1:4191/metrics"]);
    let prefix = format!(
        "vigil_proxy_observed_{kind}_total{{direction=\"outbound\",protocol=\"dns\",destination=\"{name}\"}} "
    );
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|n| n.trim().parse().ok())
}

/// Whether `test` can run here: root and network namespaces (`able`), dig,
/// dnsmasq, sh and mount; prints why not.
fn can_run(test: &str) -> bool {
    if !able(test) {
        return false;
    }
    if let Some(tool) = ["dig", "dnsmasq", "sh", "mount"]
        .into_iter()
        .find(|t| !on_path(t))
    {
        eprintln!(
            "SKIPPED {test}: `{tool}` is not installed (apt-get install -y bind9-dnsutils dnsmasq-base); CI runs it."
        );
        return false;
    }
    true
}

#[test]
fn dns_goes_through_the_sidecar() {
    let test = "dns_goes_through_the_sidecar";
    if !can_run(test) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let net = Network::new();
    let (pod, srv) = (&net.pod, &net.server);
    // The pod's resolver is dnsmasq; a DNS server the notebook picks itself
    // (TEST-NET-1, routed into the server namespace, which forwards nothing)
    // is never reached: the redirect answers for it.
    pod.resolv_conf(&["nameserver 10.66.0.2"]);
    pod.run("ip", &["route", "add", "192.0.2.0/24", "via", "10.66.0.2"]);
    let names = ["pypi.test", "late.test", "never-seen.test", "unlooked.test"];
    let resolver = common::dnsmasq(
        srv.cmd("dnsmasq"),
        "10.66.0.2",
        "10.66.0.2",
        &names,
        tmp.path(),
    );
    let _pypi = http_server(srv, "pypi", "10.66.0.2:8000", tmp.path());
    wait_for("the pypi server", || {
        (srv.curl(&["http://10.66.0.2:8000/"]).0 == 200).then_some(())
    });
    wait_for("dnsmasq", || {
        let out = srv
            .cmd("dig")
            .args(["+short", "+time=1", "+tries=1", "@10.66.0.2", "pypi.test"])
            .output()
            .ok()?;
        (String::from_utf8_lossy(&out.stdout).trim() == "10.66.0.2").then_some(())
    });

    let ctl = net.controller(tmp.path());
    let out = pod.init_redirect();
    assert!(out.contains("DNS to port 4153"), "{out}");
    // The sidecar's own resolver knows none of these names (nothing listens
    // on 127.0.0.1:53 for it): what it believes of them comes from the
    // answers the pod received.
    let own = tmp.path().join("sidecar-resolv.conf");
    std::fs::write(&own, "nameserver 127.0.0.1\n").unwrap();
    let sidecar = sidecar_with(
        pod,
        "web",
        ctl.grpc,
        tmp.path(),
        &["--dns-upstream", "10.66.0.2"],
        Some(&own),
    );
    assert!(
        sidecar.log().contains("dns_addr=127.0.0.1:4153"),
        "{}",
        sidecar.log()
    );

    // Learning. Through the redirect, over UDP and TCP, and to a server
    // the notebook picks itself: answered by the pod's resolver.
    assert_eq!(dig(pod, &["+short", "pypi.test"]).trim(), "10.66.0.2");
    assert_eq!(
        dig(pod, &["+short", "+tcp", "pypi.test"]).trim(),
        "10.66.0.2"
    );
    assert_eq!(
        dig(pod, &["+short", "@192.0.2.53", "pypi.test"]).trim(),
        "10.66.0.2"
    );
    // Over IPv6 too (ip6tables to the [::1] twin); dnsmasq listens on
    // 10.66.0.2 only, so an answer proves the redirect.
    let mut queries = 3;
    if ipv6() {
        let six = dig(pod, &["+short", "@fd66::2", "pypi.test"]);
        assert_eq!(six.trim(), "10.66.0.2", "IPv6");
        queries += 1;
    } else {
        eprintln!("no IPv6 in this kernel: DNS over IPv6 is not checked");
    }
    wait_for("the DNS queries in the sidecar's metrics", || {
        (dns_metric(pod, "requests", "pypi.test")? >= queries).then_some(())
    });
    let edge = ctl.wait_edge("workload:default/web", "external:pypi.test", queries);
    assert_eq!(edge["in_baseline"], true, "{edge}");
    // The sidecar's own lookups do not know the names: one the pod did not
    // look up (curl --resolve) is judged by the address it went to (a name
    // mismatch, never learned).
    let unlooked = "unlooked.test:8000:10.66.0.2";
    let (status, _) = pod.curl(&["--resolve", unlooked, "http://unlooked.test:8000/"]);
    assert_eq!(status, 200, "learning");
    let edge = ctl.wait_edge("workload:default/web", "external:10.66.0.2:8000", 1);
    assert_eq!(edge["in_baseline"], false, "{edge}");
    // A name only DNS told the pod about is bound to its answer: curl
    // resolves late.test through the sidecar, then connects to 10.66.0.2.
    assert_eq!(curl_as_user(pod, "http://late.test:8000/"), 200);
    ctl.wait_edge("workload:default/web", "external:late.test:8000", 1);

    // Enforcement.
    ctl.set_mode(&["enforcement"]);
    pod.wait_enforced();
    assert_eq!(dig(pod, &["+short", "pypi.test"]).trim(), "10.66.0.2");
    assert_eq!(
        curl_as_user(pod, "http://late.test:8000/"),
        200,
        "the pod's answer binds late.test to 10.66.0.2 in enforcement"
    );
    // A name outside the baseline is refused, and never reaches dnsmasq.
    let refused = dig(pod, &["never-seen.test"]);
    assert!(refused.contains("status: REFUSED"), "{refused}");
    let refused = dig(pod, &["+tcp", "@192.0.2.53", "never-seen.test"]);
    assert!(refused.contains("status: REFUSED"), "{refused}");
    wait_for("the refusal in the sidecar's metrics", || {
        (dns_metric(pod, "denied", "never-seen.test")? >= 2).then_some(())
    });
    assert!(
        !resolver.log().contains("never-seen.test"),
        "a refused name was forwarded: {}",
        resolver.log()
    );
    let alert = ctl.wait_alert("unknown_egress", "web", Some("never-seen.test"));
    assert_eq!(alert["action"], "blocked", "{alert}");
    drop(sidecar);
}

/// A name that is both a cluster Service (`db` in namespace `shop`, which
/// the pod's resolver finds through its search list: `ndots:5`) and a public
/// name (`shop` is a top-level domain: the attacker registers `db.shop`) is
/// bound to what the pod's resolver answers for it, never to what the
/// notebook got by asking the public name itself. Before the search list
/// was read, `dig db.shop` bound `db.shop` to the attacker's address, and a
/// connection there showing `Host: db.shop` passed as the learned
/// `db.shop:8000`.
#[test]
fn a_cluster_name_is_not_bound_by_asking_the_public_name() {
    let test = "a_cluster_name_is_not_bound_by_asking_the_public_name";
    if !can_run(test) {
        return;
    }
    const SEARCH: &str = "search default.svc.cluster.local svc.cluster.local cluster.local";
    const NDOTS: &str = "options ndots:5";
    let tmp = tempfile::tempdir().unwrap();
    let net = Network::new();
    let (pod, srv) = (&net.pod, &net.server);
    pod.resolv_conf(&["nameserver 10.66.0.2", SEARCH, NDOTS]);
    // The attacker's server, at an address of its choosing.
    pod.run("ip", &["route", "add", "192.0.2.0/24", "via", "10.66.0.2"]);
    srv.run("ip", &["addr", "add", "192.0.2.80/32", "dev", "lo"]);
    // The cluster's DNS: db.shop.svc.cluster.local is the Service, no other
    // cluster name exists (NXDOMAIN); asked as it is, db.shop is the public
    // name; cdn.test is another public name.
    let mut cluster_dns = srv.cmd("dnsmasq");
    cluster_dns.args([
        "--local=/cluster.local/",
        "--address=/db.shop.svc.cluster.local/10.66.0.2",
        "--address=/db.shop/192.0.2.80",
        "--address=/cdn.test/10.66.0.2",
    ]);
    let _resolver = common::dnsmasq(cluster_dns, "10.66.0.2", "10.66.0.2", &[], tmp.path());
    // The sidecar's own lookups go to a resolver that knows the Service but
    // no public name: what it believes of cdn.test comes from the pod's
    // answers, and of db.shop from its own search-list lookup.
    let mut own_dns = pod.cmd("dnsmasq");
    own_dns.args([
        "--local=/cluster.local/",
        "--address=/db.shop.svc.cluster.local/10.66.0.2",
    ]);
    let _own_resolver = common::dnsmasq(own_dns, "127.0.0.53", "127.0.0.53", &[], tmp.path());
    let _db = http_server(srv, "db", "10.66.0.2:8000", tmp.path());
    let _evil = http_server(srv, "evil", "192.0.2.80:8000", tmp.path());
    for (ns, server, name, want) in [
        (srv, "@10.66.0.2", "db.shop", "192.0.2.80"),
        (srv, "@10.66.0.2", "db.shop.svc.cluster.local", "10.66.0.2"),
        (pod, "@127.0.0.53", "db.shop.svc.cluster.local", "10.66.0.2"),
    ] {
        wait_for(&format!("dnsmasq {server} to answer {name}"), || {
            let out = ns
                .cmd("dig")
                .args(["+short", "+time=1", "+tries=1", server, name])
                .output()
                .ok()?;
            (String::from_utf8_lossy(&out.stdout).trim() == want).then_some(())
        });
    }
    for server in ["10.66.0.2:8000", "192.0.2.80:8000"] {
        wait_for(&format!("the server at {server}"), || {
            (srv.curl(&[&format!("http://{server}/")]).0 == 200).then_some(())
        });
    }

    let ctl = net.controller(tmp.path());
    pod.init_redirect();
    let own = tmp.path().join("sidecar-resolv.conf");
    std::fs::write(&own, format!("nameserver 127.0.0.53\n{SEARCH}\n{NDOTS}\n")).unwrap();
    let sidecar = sidecar_with(
        pod,
        "web",
        ctl.grpc,
        tmp.path(),
        &["--dns-upstream", "10.66.0.2"],
        Some(&own),
    );

    // Learning: the notebook's resolver (curl, the C library) finds the
    // Service by the search list, and cdn.test after its search names were
    // NXDOMAIN: both are learned by name.
    let (status, body) = curl_user(pod, &["http://db.shop:8000/"]);
    assert_eq!((status, body.as_str()), (200, "db GET /"));
    assert_eq!(curl_as_user(pod, "http://cdn.test:8000/"), 200);
    ctl.wait_edge("workload:default/web", "external:db.shop:8000", 1);
    ctl.wait_edge("workload:default/web", "external:cdn.test:8000", 1);

    ctl.set_mode(&["enforcement"]);
    pod.wait_enforced();
    let (status, body) = curl_user(pod, &["http://db.shop:8000/"]);
    assert_eq!((status, body.as_str()), (200, "db GET /"), "the Service");
    assert_eq!(
        curl_as_user(pod, "http://cdn.test:8000/"),
        200,
        "a public name is still bound to the pod's answer"
    );

    // The notebook asks the public db.shop itself (an allowed name, so it
    // is answered), then connects to that address showing db.shop.
    assert_eq!(dig(pod, &["+short", "db.shop"]).trim(), "192.0.2.80");
    let (status, body) = curl_user(
        pod,
        &[
            "--resolve",
            "db.shop:8000:192.0.2.80",
            "http://db.shop:8000/",
        ],
    );
    assert_eq!(status, 403, "the attacker's db.shop was reached: {body}");
    assert!(!body.contains("evil"), "{body}");
    let (_, metrics) = pod.curl(&["http://127.0.0.1:4191/metrics"]);
    let unbound: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("vigil_proxy_dns_unbound_total "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(unbound >= 1, "{metrics}");
    let alert = ctl.wait_alert("name_mismatch", "web", Some("192.0.2.80:8000"));
    assert_eq!(alert["action"], "blocked", "{alert}");
    drop(sidecar);
}
