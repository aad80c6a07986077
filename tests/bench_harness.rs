//! The load harness (`benches/load.sh`) works: a `--quick` run with the
//! binaries cargo just built measures every path through real nginx,
//! haproxy, wrk, h2load and vigil-proxy, and writes its Markdown and JSON.
//! Speed is not asserted here (figures come from the harness itself, see
//! benches/RESULTS.md); only that each path carried requests without an
//! error. Skipped, with the reason printed, where the tools are absent
//! (CI installs them: .ci/run).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

/// The tools the harness drives.
const TOOLS: [&str; 6] = ["nginx", "haproxy", "wrk", "h2load", "taskset", "valgrind"];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn on_path(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The paths every full run measures, as (protocol, name).
const PATHS: [(&str, &str); 11] = [
    ("http/1.1", "direct"),
    ("http/1.1", "nginx"),
    ("http/1.1", "haproxy"),
    ("http/1.1", "vigil-inbound"),
    ("http/1.1", "vigil-inbound-off"),
    ("http/1.1", "vigil-outbound"),
    ("http/1.1", "vigil-outbound-name"),
    ("h2c", "direct"),
    ("h2c", "haproxy"),
    ("h2c", "vigil-inbound"),
    ("h2c", "vigil-outbound"),
];

#[test]
fn quick_run_measures_every_path_and_writes_its_tables() {
    let missing: Vec<_> = TOOLS.into_iter().filter(|t| !on_path(t)).collect();
    if !missing.is_empty() {
        println!(
            "skipped: {} not installed (apt-get install nginx-light haproxy wrk nghttp2-client)",
            missing.join(", ")
        );
        return;
    }
    let bin_dir = common::bin("vigil-proxy")
        .parent()
        .expect("binary directory")
        .to_path_buf();
    let out = tempfile::tempdir().unwrap();
    let (md, json) = (out.path().join("latest.md"), out.path().join("latest.json"));
    let run = Command::new(repo().join("benches/load.sh"))
        .arg("--quick")
        .arg("--instructions")
        .arg("100")
        .arg("--bin-dir")
        .arg(&bin_dir)
        .arg("--out-md")
        .arg(&md)
        .arg("--out-json")
        .arg(&json)
        .env_remove("CI")
        .output()
        .expect("running benches/load.sh");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "benches/load.sh --quick failed:\n{stderr}"
    );

    let result: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).expect("the JSON parses");
    let rows = result["paths"].as_array().expect("paths");
    for (proto, name) in PATHS {
        let row = rows
            .iter()
            .find(|r| r["proto"] == proto && r["path"] == name)
            .unwrap_or_else(|| panic!("{proto} {name} missing from {json:?}"));
        let rps = row["rps"].as_f64().unwrap();
        assert!(rps > 0.0, "{proto} {name}: no requests: {row}");
        assert_eq!(row["errors"], 0, "{proto} {name}: errors: {row}");
        assert!(row["peak_rss_kib"].as_u64().unwrap() > 0, "{row}");
        assert!(row["cpu_us_per_req"].as_f64().unwrap() >= 0.0, "{row}");
        // Each run's CPU is its user-space and kernel time together.
        for rep in row["reps"].as_array().expect("reps") {
            let (user, sys) = (
                rep["user_us_per_req"].as_f64(),
                rep["sys_us_per_req"].as_f64(),
            );
            let (user, sys) = (user.expect("user time"), sys.expect("kernel time"));
            assert!(user >= 0.0 && sys >= 0.0, "{rep}");
            let cpu = rep["cpu_us_per_req"].as_f64().unwrap();
            assert!((user + sys - cpu).abs() < 1e-6, "{rep}");
        }
    }
    // The fixed-rate run of the HTTP/1.1 references and the inbound listener.
    for name in ["direct", "nginx", "haproxy", "vigil-inbound"] {
        let row = rows
            .iter()
            .find(|r| r["proto"] == "http/1.1" && r["path"] == name)
            .unwrap();
        // Paced at the rate asked for (1,000 a second), neither faster
        // nor falling behind.
        let rps = row["rate"]["rps"].as_f64().unwrap();
        assert!((800.0..1100.0).contains(&rps), "{name}: {rps} req/s: {row}");
        assert!(row["rate"]["p99_ms"].as_f64().unwrap() > 0.0, "{row}");
        assert_eq!(row["rate"]["errors"], 0, "{row}");
    }
    let held = result["hold"].as_array().expect("hold");
    assert!(
        held.iter()
            .any(|h| h["path"] == "vigil-inbound" && h["rss_kib"].as_u64().unwrap() > 0),
        "{held:?}"
    );
    assert!(
        result["machine"]["commit"]
            .as_str()
            .is_some_and(|c| !c.is_empty())
    );

    // Instructions per request, counted by callgrind: the data path's
    // thread executes tens of thousands per proxied request (a debug build
    // more), the other threads less.
    let threads = result["instructions"]["threads"]
        .as_array()
        .expect("instructions per thread");
    let data = threads
        .iter()
        .find(|t| t["thread"] == 1)
        .unwrap_or_else(|| panic!("no data thread in {threads:?}"));
    let per_request = data["per_request"].as_u64().unwrap();
    assert!(
        (5_000..5_000_000).contains(&per_request),
        "{per_request} instructions per request on the data thread"
    );
    let profile = std::fs::read_to_string(out.path().join("instructions-inbound.txt")).unwrap();
    assert!(profile.contains("vigil_proxy"), "{profile}");

    let table = std::fs::read_to_string(&md).unwrap();
    assert!(
        table.contains("Instructions per request of vigil-proxy inbound"),
        "{table}"
    );
    assert!(table.contains("| http/1.1 | vigil-inbound |"), "{table}");
    assert!(table.contains("| h2c | haproxy |"), "{table}");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        stdout.contains("req/s vs best"),
        "the table is printed: {stdout}"
    );
}

#[test]
fn missing_tools_name_the_apt_get_line_and_fail() {
    // A PATH with the shell and python but none of the load tools.
    let dir = tempfile::tempdir().unwrap();
    for tool in ["bash", "id", "dirname", "python3"] {
        let found = which(tool).unwrap_or_else(|| panic!("{tool} not found"));
        std::os::unix::fs::symlink(found, dir.path().join(tool)).unwrap();
    }
    let run = Command::new(which("bash").unwrap())
        .arg(repo().join("benches/load.sh"))
        .arg("--quick")
        .env("PATH", dir.path())
        .env_remove("CI")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "apt-get install -y --no-install-recommends nginx-light haproxy wrk nghttp2-client"
        ),
        "{stderr}"
    );
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(tool))
        .find(|p| Path::new(p).is_file())
}
