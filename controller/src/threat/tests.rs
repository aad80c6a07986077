use std::io::Write;

use prometheus_client::registry::Registry;

use super::reload::POLL_INTERVAL;
use super::*;

fn feeds(entries: &[&str]) -> Feeds {
    Feeds::new([&parse_feed("test", &entries.join("\n")).unwrap()])
}

/// The table the sidecar's policy is held to as well.
#[test]
fn the_shared_cases() {
    for (entries, name, want) in vigil_proto::threat::SHARED_CASES {
        let got = feeds(entries).lookup(name).map(|l| l.entry);
        assert_eq!(got.as_deref(), *want, "{entries:?} lookup {name:?}");
    }
}

#[test]
fn the_builtin_feed_lists_the_pools_miners_use() {
    let feed = builtin();
    assert!(feed.entries.len() > 90, "{}", feed.entries.len());
    let all = Feeds::new([&feed]);
    let cases = [
        ("pool.supportxmr.com:3333", Some("*.supportxmr.com")),
        ("xmr-eu1.nanopool.org:14433", Some("*.nanopool.org")),
        ("nanopool.org", Some("nanopool.org")),
        (
            "gulf.moneroocean.stream:10128",
            Some("*.moneroocean.stream"),
        ),
        ("donate.v2.xmrig.com:3333", Some("donate.v2.xmrig.com")),
        ("stratum.antpool.com", Some("stratum.antpool.com")),
        ("XMR.Pool.MinerGate.com.", Some("xmr.pool.minergate.com")),
        ("eu.minergate.com", Some("*.minergate.com")),
        ("rx.unmineable.com:443", Some("*.unmineable.com")),
        // Not pools.
        ("pypi.org:443", None),
        ("github.com", None),
        ("antpool.com", None),
    ];
    for (name, want) in cases {
        let got = all.lookup(name);
        assert_eq!(got.as_ref().map(|l| l.entry.as_str()), want, "{name}");
        if let Some(listing) = got {
            assert_eq!(listing.feed, BUILTIN_FEED);
        }
    }
    let denied = all.denied_names();
    assert_eq!(denied.len(), all.len());
    assert!(denied.contains("*.nanopool.org") && denied.contains("nanopool.org"));
}

#[test]
fn a_feed_file_has_comments_and_every_entry_kind() {
    let text = "# pools we saw\n\n  Pool.Evil.TEST.  # trailing comment\n*.miner.test\n\
                203.0.113.0/24\n2001:db8::/32\n198.51.100.7\npööl.test\n";
    let feed = parse_feed("ours.txt", text).unwrap();
    let shown: Vec<String> = feed.entries.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        [
            "pool.evil.test",
            "*.miner.test",
            "203.0.113.0/24",
            "2001:db8::/32",
            "198.51.100.7",
            "xn--pl-fkaa.test"
        ]
    );
    let all = Feeds::new([&feed]);
    assert_eq!(
        all.lookup("203.0.113.9:3333"),
        Some(Listing {
            feed: "ours.txt".into(),
            entry: "203.0.113.0/24".into()
        })
    );
    assert_eq!(
        all.lookup_ip("2001:db8::5".parse().unwrap()).unwrap().entry,
        "2001:db8::/32"
    );
}

#[test]
fn a_bad_line_is_named() {
    let cases = [
        ("ok.test\n*.com\n", 2, "top-level"),
        (
            "ok.test\n\n# note\npool.test:3333\n",
            4,
            "not a domain name",
        ),
        ("a.*.test", 1, "wildcard"),
        ("10.0.0.0/33", 1, "not a CIDR"),
        ("pool..test", 1, "empty label"),
    ];
    for (text, line, why) in cases {
        let err = parse_feed("feeds/pools.txt", text).unwrap_err();
        let shown = err.to_string();
        assert!(
            shown.starts_with(&format!("threat feed feeds/pools.txt, line {line}: ")),
            "{shown}"
        );
        assert!(shown.contains(why), "{shown}");
    }
}

#[test]
fn the_first_feed_names_an_entry_both_list() {
    let builtin = parse_feed(BUILTIN_FEED, "*.pool.test\n").unwrap();
    let file = parse_feed("mine.txt", "*.pool.test\nother.test\n").unwrap();
    let all = Feeds::new([&builtin, &file]);
    assert_eq!(all.lookup("a.pool.test").unwrap().feed, BUILTIN_FEED);
    assert_eq!(all.lookup("other.test").unwrap().feed, "mine.txt");
    assert_eq!(all.len(), 2);
    assert_eq!(all.feeds().len(), 2);
}

#[test]
fn ports_are_evidence_not_listings() {
    assert!(is_miner_port(3333) && is_miner_port(4444) && is_miner_port(14444));
    assert!(!is_miner_port(443));
    let all = Feeds::new([&builtin()]);
    assert_eq!(all.lookup("203.0.113.9:3333"), None);
    assert_eq!(all.lookup("example.com:14444"), None);
}

fn write(path: &std::path::Path, text: &str) {
    let mut file = std::fs::File::create(path).unwrap();
    file.write_all(text.as_bytes()).unwrap();
}

#[test]
fn a_changed_file_is_reloaded_and_a_bad_one_keeps_its_entries() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pools.txt");
    write(&path, "pool.one.test\n");
    let mut registry = Registry::default();
    let metrics = ThreatMetrics::register(&mut registry);
    let mut reloader = Reloader::load(std::slice::from_ref(&path), false, metrics.clone()).unwrap();
    let mut rx = reloader.subscribe();
    assert!(rx.borrow_and_update().lookup("pool.one.test").is_some());
    // Nothing changed: nothing read, nothing published.
    assert!(reloader.reload(false).is_empty());
    assert!(!rx.has_changed().unwrap());
    // Replaced by rename (a new inode), as editors and ConfigMaps do.
    let tmp = dir.path().join("pools.tmp");
    write(&tmp, "pool.two.test\n");
    std::fs::rename(&tmp, &path).unwrap();
    assert!(reloader.reload(false).is_empty());
    assert!(rx.has_changed().unwrap());
    let now = rx.borrow_and_update().clone();
    assert!(now.lookup("pool.two.test").is_some());
    assert!(now.lookup("pool.one.test").is_none());
    // A bad line: named, and the previous entries stay.
    write(&path, "pool.three.test\n*.test\n");
    let errors = reloader.reload(false);
    assert_eq!(errors.len(), 1);
    assert!(errors[0].to_string().contains("line 2"), "{}", errors[0]);
    assert!(!rx.has_changed().unwrap());
    assert!(reloader.current().lookup("pool.two.test").is_some());
    assert!(reloader.current().lookup("pool.three.test").is_none());
    // Reported once, not at every look.
    assert!(reloader.reload(false).is_empty());
    // A file that is gone keeps its entries too; SIGHUP reads all again.
    std::fs::remove_file(&path).unwrap();
    let errors = reloader.reload(true);
    assert!(errors[0].to_string().contains("pools.txt"), "{}", errors[0]);
    assert!(reloader.current().lookup("pool.two.test").is_some());
    write(&path, "pool.four.test\n");
    assert!(reloader.reload(true).is_empty());
    assert!(reloader.current().lookup("pool.four.test").is_some());
    assert_eq!(metrics.entries.get(), 1);
    let ok = metrics.reloads.get_or_create(&reload::ReloadLabels {
        result: reload::ReloadResult::ok,
    });
    let failed = metrics.reloads.get_or_create(&reload::ReloadLabels {
        result: reload::ReloadResult::failed,
    });
    assert_eq!((ok.get(), failed.get()), (3, 2));
}

#[test]
fn a_bad_file_at_start_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pools.txt");
    write(&path, "ok.test\nnot a name\n");
    let err =
        Reloader::load(std::slice::from_ref(&path), true, ThreatMetrics::default()).unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("threat feed {}, line 2:", path.display())),
        "{err}"
    );
    let missing = dir.path().join("missing.txt");
    let err = Reloader::load(&[missing], true, ThreatMetrics::default()).unwrap_err();
    assert!(err.to_string().contains("missing.txt"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn the_running_reloader_sees_a_change_within_a_poll() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pools.txt");
    write(&path, "pool.one.test\n");
    let reloader =
        Reloader::load(std::slice::from_ref(&path), true, ThreatMetrics::default()).unwrap();
    let mut rx = reloader.subscribe();
    rx.borrow_and_update();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(reloader.run(POLL_INTERVAL, stopped));
    write(&path, "pool.one.test\npool.two.test\n");
    tokio::time::timeout(POLL_INTERVAL * 2, rx.changed())
        .await
        .expect("published within two polls")
        .unwrap();
    let now = rx.borrow().clone();
    assert!(now.lookup("pool.two.test").is_some());
    assert!(now.lookup("xmr-eu1.nanopool.org").is_some(), "builtin kept");
    stop.send(true).unwrap();
    task.await.unwrap();
}

#[test]
fn the_check_answers_names_and_refuses_what_cannot_be_one() {
    let all = feeds(&["*.pool.test", "203.0.113.0/24"]);
    let listed = api::check_name(&all, "XMR.pool.test.:3333");
    assert_eq!(
        listed,
        api::CheckView {
            name: "XMR.pool.test.:3333".into(),
            listed: true,
            feed: Some("test".into()),
            entry: Some("*.pool.test".into()),
        }
    );
    let json = serde_json::to_value(api::check_name(&all, "pypi.org")).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"name": "pypi.org", "listed": false, "feed": null, "entry": null})
    );
    for ok in [
        "pool.test",
        "pool.test:3333",
        "203.0.113.9",
        "[2001:db8::1]:443",
        "pööl.test",
    ] {
        assert!(api::is_checkable(ok), "{ok}");
    }
    for bad in ["", "a b", "pool..test", "http://pool.test/", "*.pool.test"] {
        assert!(!api::is_checkable(bad), "{bad}");
    }
}

/// The detector asks for a resolved address without writing it out: the
/// answer is the one the address's text gets, for either family and for
/// an IPv4 address mapped into IPv6.
#[test]
fn an_address_is_listed_as_its_text_is() {
    use crate::detect::Threats;
    let all = feeds(&["203.0.113.0/24", "2001:db8::/32", "pool.test"]);
    for (ip, listed) in [
        ("203.0.113.9", Some("test: 203.0.113.0/24")),
        ("::ffff:203.0.113.9", Some("test: 203.0.113.0/24")),
        ("2001:db8::5", Some("test: 2001:db8::/32")),
        ("198.51.100.7", None),
        ("2001:db9::1", None),
    ] {
        let ip: std::net::IpAddr = ip.parse().unwrap();
        assert_eq!(all.listed_ip(ip).as_deref(), listed, "{ip}");
        assert_eq!(all.listed_ip(ip), all.listed(&ip.to_string()), "{ip}");
    }
}
