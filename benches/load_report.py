"""Reading the load tools' output and writing the harness's tables.

Part of benches/load.py (see there): parsers of wrk and h2load output, the
machine description, the ratios and the Markdown table. Standard library only.
"""

import os
import re
import subprocess
import time

BODY_BYTES = 100


class HarnessError(Exception):
    """A step of the harness failed; the message names it."""


# ---------------------------------------------------------------- parsers

UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def ms(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not m:
        raise HarnessError(f"cannot read the latency {text!r}")
    return float(m.group(1)) * UNITS[m.group(2)]


def parse_wrk(out):
    """req/s, requests, p50 and p99 (ms) and errors from `wrk --latency`."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    if not (rps and total and p50 and p99):
        raise HarnessError(f"cannot read wrk's output:\n{out}")
    errors = 0
    for m in re.finditer(r"Non-2xx or 3xx responses: (\d+)", out):
        errors += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += sum(int(g) for g in m.groups())
    return {"rps": float(rps.group(1)), "requests": int(total.group(1)),
            "p50_ms": ms(p50.group(1)), "p99_ms": ms(p99.group(1)), "errors": errors}


def percentile(sorted_values, q):
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[k]


def parse_h2load(out, log_file):
    """req/s, succeeded requests and p50/p99 (ms, from the per-request log)."""
    rps = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    done = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, "
                     r"(\d+) failed, (\d+) errored, (\d+) timeout", out)
    status = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    if not (rps and done and status):
        raise HarnessError(f"cannot read h2load's output:\n{out}")
    durations = []
    with open(log_file) as f:
        for line in f:
            parts = line.split("\t")
            if len(parts) == 3:
                durations.append(int(parts[2]) / 1000.0)
    durations.sort()
    errors = sum(int(g) for g in done.groups()[1:]) + int(status.group(3)) + int(status.group(4))
    return {"rps": float(rps.group(1)), "requests": int(done.group(1)),
            "p50_ms": percentile(durations, 0.50), "p99_ms": percentile(durations, 0.99),
            "errors": errors}


# ---------------------------------------------------------------- report

def version(argv, pattern):
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        m = re.search(pattern, out.stdout + out.stderr)
        return m.group(1) if m else "?"
    except OSError:
        return "absent"


def machine(args, root):
    cpu = "?"
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    commit = subprocess.run(["git", "-C", root, "describe", "--always", "--dirty"],
                            capture_output=True, text=True).stdout.strip() or "?"
    return {
        "nproc": os.cpu_count(), "cpu": cpu, "kernel": os.uname().release,
        "loadavg_start": open("/proc/loadavg").read().split()[:3],
        "nginx": version(["nginx", "-v"], r"nginx/(\S+)"),
        "haproxy": version(["haproxy", "-v"], r"version (\S+)"),
        "wrk": version(["wrk", "-v"], r"wrk (\S+)"),
        "h2load": version(["h2load", "--version"], r"nghttp2/(\S+)"),
        "commit": commit, "bin_dir": args.bin_dir, "proxy_bin": args.proxy_bin,
        "proxy_built": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(
            os.path.getmtime(args.proxy_bin))), "proxy_cpu": args.proxy_cpu,
        "load_cpu": args.load_cpu,
    }


def ratio(a, b):
    return a / b if a and b else None


def add_ratios(rows):
    def find(name, proto):
        return next((r for r in rows if r["path"] == name and r["proto"] == proto), None)

    for proto in ("http/1.1", "h2c"):
        refs = [r for r in (find("nginx", proto), find("haproxy", proto)) if r]
        best = max(refs, key=lambda r: r["rps"]) if refs else None
        direct = find("direct", proto)
        for r in (r for r in rows if r["proto"] == proto):
            if best:
                r["best_reference"] = best["path"]
                r["rps_vs_best"] = ratio(r["rps"], best["rps"])
                r["cpu_vs_best"] = ratio(r["cpu_us_per_req"], best["cpu_us_per_req"])
            if direct and "rate" in r and "rate" in direct:
                r["rate"]["added_p99_ms"] = r["rate"]["p99_ms"] - direct["rate"]["p99_ms"]
                r["rate"]["added_p50_ms"] = r["rate"]["p50_ms"] - direct["rate"]["p50_ms"]
    # added p99 against the better (lower) of nginx and haproxy.
    refs = [r for r in rows if r["proto"] == "http/1.1" and r["path"] in ("nginx", "haproxy")
            and "added_p99_ms" in r.get("rate", {})]
    if refs:
        best = min(r["rate"]["added_p99_ms"] for r in refs)
        for r in rows:
            if "added_p99_ms" in r.get("rate", {}) and r["path"] != "direct":
                r["rate"]["added_p99_vs_best"] = ratio(r["rate"]["added_p99_ms"], best) \
                    if best > 0 else None
    on, off = find("vigil-inbound", "http/1.1"), find("vigil-inbound-off", "http/1.1")
    return {"telemetry_on_vs_off": ratio(on["rps"], off["rps"])} if on and off else {}


def fmt(value, spec):
    return "-" if value is None else format(value, spec)


def markdown(result):
    m, a = result["machine"], result["settings"]
    lines = [
        f"Machine: {m['nproc']} cores ({m['cpu']}), kernel {m['kernel']}, load average at start "
        f"{' '.join(m['loadavg_start'])}; nginx {m['nginx']}, haproxy {m['haproxy']}, wrk {m['wrk']}, "
        f"h2load {m['h2load']}; commit {m['commit']}; binaries {m['bin_dir']} "
        f"(vigil-proxy {m['proxy_bin']}, built {m['proxy_built']}).",
        "",
        f"Proxy under test and nginx upstream on CPU {m['proxy_cpu']}, load generator and controller "
        f"on CPU {m['load_cpu']}{', all at nice ' + str(a['nice']) if a['nice'] else ''}. {a['reps']} run{'s' if a['reps'] != 1 else ''} of {a['duration']} s per path, medians, "
        f"{'one path after the other' if a.get('sequential') else 'in rounds (every proxy up, each loaded in turn)'}; "
        f"HTTP/1.1 `wrk -t1 -c{a['connections']}`, h2c `h2load -c{a['h2_clients']} -m{a['h2_streams']}`, "
        f"{BODY_BYTES}-byte body. Ratios against the better of nginx and haproxy (req/s: higher is "
        "better; CPU: lower is better).",
        "",
        "| proto | path | req/s | p50 ms | p99 ms | CPU µs/req | user / kernel µs | RSS idle / peak MiB | req/s vs best | CPU vs best | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["paths"]:
        lines.append(
            f"| {r['proto']} | {r['path']} | {r['rps']:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
            f"{r['cpu_us_per_req']:.1f} | {fmt(r.get('user_us_per_req'), '.1f')} / {fmt(r.get('sys_us_per_req'), '.1f')} | "
            f"{r['idle_rss_kib'] / 1024:.1f} / {r['peak_rss_kib'] / 1024:.1f} | "
            f"{fmt(r.get('rps_vs_best'), '.2f')} | {fmt(r.get('cpu_vs_best'), '.2f')} | {r['errors']} |")
    rate_rows = [r for r in result["paths"] if "rate" in r]
    if rate_rows:
        lines += ["", f"Fixed rate, ~{a['rate']} req/s, {a['reps']} run{'s' if a['reps'] != 1 else ''} of "
                  f"{a['rate_duration']} s, medians "
                  + ("(`h2load --h1 --rps`, open loop per client, its 10 clients sending together; "
                     if a.get("rate_client") == "h2load" else
                     "(`benches/paced.py`, one request every 1/rate s over 10 connections, latency from "
                     "the instant each was due; ")
                  + "added p99 = p99 minus the direct path's):",
                  "", "| path | req/s | p50 ms | p99 ms | added p50 ms | added p99 ms | added p99 vs best |",
                  "|---|---|---|---|---|---|---|"]
        for r in rate_rows:
            x = r["rate"]
            lines.append(f"| {r['path']} | {x['rps']:,.0f} | {x['p50_ms']:.2f} | {x['p99_ms']:.2f} | "
                         f"{fmt(x.get('added_p50_ms'), '+.2f')} | {fmt(x.get('added_p99_ms'), '+.2f')} | "
                         f"{fmt(x.get('added_p99_vs_best'), '.2f')} |")
    if result.get("hold"):
        lines += ["", "Open keep-alive connections held through the listener (each carried a request):",
                  "", "| path | connections | RSS idle MiB | RSS holding MiB | KiB per connection | "
                  "upstream connections |", "|---|---|---|---|---|---|"]
        for h in result["hold"]:
            per = (h["rss_kib"] - h["idle_rss_kib"]) / h["connections"]
            lines.append(f"| {h['path']} | {h['connections']} | {h['idle_rss_kib'] / 1024:.1f} | "
                         f"{h['rss_kib'] / 1024:.1f} | {per:.1f} | {h.get('upstream_connections', '-')} |")
    if result["summary"].get("telemetry_on_vs_off"):
        lines += ["", f"vigil-proxy inbound with the controller (policy, reporting) versus without: "
                  f"{result['summary']['telemetry_on_vs_off']:.2f}x req/s."]
    if result.get("instructions"):
        ins = result["instructions"]
        lines += ["", f"Instructions per request of vigil-proxy inbound (callgrind, {ins['requests']} "
                  "HTTP/1.1 requests; thread 1 runs the data path, thread 2 the control runtime):",
                  "", "| thread | instructions | per request |", "|---|---|---|"]
        for t in ins["threads"]:
            lines.append(f"| {t['thread']} | {t['instructions']:,} | {t['per_request']:,} |")
    return "\n".join(lines) + "\n"
