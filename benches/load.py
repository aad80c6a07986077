#!/usr/bin/env python3
"""Vigil's load harness: vigil-proxy against nginx and haproxy in one run.

Run it through benches/load.sh (which checks and installs the tools); see
benches/RESULTS.md for what it measures and how to read it. Standard library
only.

Every proxy under test (and the nginx upstream behind it) is pinned to one
core, the load generator (and the controller) to another. Each path has its
own proxy process (the direct path its own nginx), so its idle and peak RSS
are its own:

  1. idle RSS (VmRSS once ready, before any load);
  2. saturation: `--reps` runs of wrk (HTTP/1.1) or h2load (h2c); CPU per
     request from the proxy's utime+stime (/proc/PID/stat) over each run,
     also shown apart (user space, kernel);
  3. peak RSS (VmHWM) after the saturation runs;
  4. HTTP/1.1 paths: `--reps` fixed-rate runs (benches/paced.py: one request
     every 1/rate s, open loop, latency from the instant each was due; or
     `--rate-client h2load`, whose clients send in bursts) whose p99 minus
     the direct path's p99 is the added p99.

By default every proxy is up at once and the runs go in rounds (each path
once per round), so a burst of other work on the machine falls on all paths
alike; `--sequential` runs one path after the other instead.

Then, apart, the RSS of a fresh proxy holding `--hold` open keep-alive
connections (each has carried one request) through its listener.

With `--instructions N`, also the instructions vigil-proxy inbound executes
per request, per thread, counted by valgrind's callgrind over N requests at a
low rate after a warm-up: a figure that does not move with what else the
machine is doing, for A/B comparisons on a noisy host.
"""

import argparse
import atexit
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.dont_write_bytecode = True  # no __pycache__ beside the scripts
from load_report import (BODY_BYTES, HarnessError, add_ratios, machine, markdown,  # noqa: E402
                         parse_h2load, parse_wrk)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLK_TCK = os.sysconf("SC_CLK_TCK")
# A loopback port nothing listens on: the controller of the "off" run.
NOWHERE = "http://127.0.0.1:1"


# ---------------------------------------------------------------- processes

class Procs:
    """Every process the harness starts, stopped on exit whatever happens."""

    def __init__(self, work, nice):
        self.work = work
        self.nice = nice
        self.live = []

    def start(self, name, argv, cpu):
        log = open(os.path.join(self.work, f"{name}.log"), "ab")
        argv = [*niced(self.nice), "taskset", "-c", str(cpu), *argv]
        # The sidecar reads every flag from a VIGIL_* variable too: none leaks in.
        env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=self.work, env=env)
        proc.name = name
        self.live.append(proc)
        return proc

    def stop(self, proc):
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc in self.live:
            self.live.remove(proc)

    def stop_all(self):
        for proc in reversed(list(self.live)):
            self.stop(proc)

    def tail(self, proc):
        """The end of a process's log, headed by its name."""
        with open(os.path.join(self.work, f"{proc.name}.log"), errors="replace") as f:
            return f"--- {proc.name}:\n{f.read()[-2000:]}"

    def check(self, proc):
        if proc.poll() is not None:
            raise HarnessError(f"{proc.name} exited with {proc.returncode}:\n{self.tail(proc)}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(what, check, proc=None, procs=None, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None:
            procs.check(proc)
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.05)
    logs = "".join(procs.tail(p) for p in [proc, *procs.live] if p is not None) if procs else ""
    raise HarnessError(f"timed out waiting for {what}\n{logs}")


def http_ok(url):
    with urllib.request.urlopen(url, timeout=2) as r:
        return r.status == 200


def tcp_open(port):
    with socket.create_connection(("127.0.0.1", port), timeout=1):
        return True


def cpu_seconds(pid):
    """(user, system) CPU seconds of the process, all its threads."""
    # Fields after the command name (which may hold spaces): utime is the
    # 14th field of the line, stime the 15th; both cover all threads.
    stat = open(f"/proc/{pid}/stat").read()
    fields = stat[stat.rindex(")") + 2:].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def rss_kib(pid):
    out = {}
    for line in open(f"/proc/{pid}/status"):
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def established_to(port):
    """How many established IPv4 connections have `port` as their remote port."""
    count = 0
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            if fields[3] == "01" and int(fields[2].split(":")[1], 16) == port:
                count += 1
    return count


def niced(nice):
    """`nice -n N` before a command, for every process the harness starts alike."""
    return ["nice", "-n", str(nice)] if nice else []


def run(argv, cpu, timeout, nice=0):
    out = subprocess.run([*niced(nice), "taskset", "-c", str(cpu), *argv], capture_output=True,
                         text=True, timeout=timeout)
    if out.returncode != 0:
        raise HarnessError(f"{' '.join(argv)} failed:\n{out.stdout}{out.stderr}")
    return out.stdout


# ---------------------------------------------------------------- configs

def nginx_upstream_conf(work, h1, h2, name):
    return f"""worker_processes 1;
master_process off;
daemon off;
pid {work}/{name}.pid;
error_log {work}/{name}.err;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  server {{ listen 127.0.0.1:{h1}; root {work}/html; }}
  server {{ listen 127.0.0.1:{h2} http2; root {work}/html; }}
}}
"""


def nginx_proxy_conf(work, port, upstream, name):
    return f"""worker_processes 1;
master_process off;
daemon off;
pid {work}/{name}.pid;
error_log {work}/{name}.err;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  upstream app {{ server 127.0.0.1:{upstream}; keepalive 64; keepalive_requests 100000000; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
"""


def haproxy_conf(port, upstream, h2):
    proto = " proto h2" if h2 else ""
    return f"""global
  nbthread 1
  maxconn 8192
defaults
  mode http
  timeout connect 5s
  timeout client 300s
  timeout server 300s
  timeout http-keep-alive 300s
frontend f
  bind 127.0.0.1:{port}{proto}
  default_backend b
backend b
  http-reuse always
  server s1 127.0.0.1:{upstream}{proto}
"""


# ---------------------------------------------------------------- the bench

class Bench:
    def __init__(self, args, work):
        self.a = args
        self.work = work
        self.procs = Procs(work, args.nice)
        self.bin = args.bin_dir
        self.proxy_bin = args.proxy_bin
        self.up_h1 = free_port()
        self.up_h2 = free_port()
        self.grpc = self.api = None
        self.token = None
        self.seq = 0

    def unique(self, name):
        """`name` with a number: file and log names of processes alive at once."""
        self.seq += 1
        return f"{name}-{self.seq}"

    # -- fixtures

    def start_upstream(self):
        os.makedirs(os.path.join(self.work, "html"), exist_ok=True)
        with open(os.path.join(self.work, "html", "index.html"), "w") as f:
            f.write("x" * BODY_BYTES)
        conf = os.path.join(self.work, "upstream.conf")
        with open(conf, "w") as f:
            f.write(nginx_upstream_conf(self.work, self.up_h1, self.up_h2, "upstream"))
        self.upstream = self.procs.start("upstream", ["nginx", "-c", conf], self.a.proxy_cpu)
        wait_until("the nginx upstream", lambda: http_ok(f"http://127.0.0.1:{self.up_h1}/"),
                   self.upstream, self.procs)
        wait_until("the nginx h2c upstream", lambda: tcp_open(self.up_h2), self.upstream, self.procs)

    def start_controller(self):
        self.grpc, self.api = free_port(), free_port()
        data = os.path.join(self.work, "data")
        self.controller = self.procs.start("controller", [
            f"{self.bin}/vigil-controller", "--grpc-addr", f"127.0.0.1:{self.grpc}",
            "--http-addr", f"127.0.0.1:{self.api}", "--data-dir", data, "--log", "warn",
        ], self.a.load_cpu)
        self.token = os.path.join(data, "sidecar.token")
        wait_until("the controller", lambda: os.path.getsize(self.token) > 0
                   and tcp_open(self.grpc), self.controller, self.procs)

    # -- proxies under test: each returns (process, port to load)

    def start_direct(self, h2):
        """A dedicated nginx serving the page: the direct path's own process."""
        name = self.unique("nginx-direct")
        h1_port, h2_port = free_port(), free_port()
        conf = os.path.join(self.work, f"{name}.conf")
        with open(conf, "w") as f:
            f.write(nginx_upstream_conf(self.work, h1_port, h2_port, name))
        proc = self.procs.start(name, ["nginx", "-c", conf], self.a.proxy_cpu)
        wait_until("nginx", lambda: tcp_open(h1_port) and tcp_open(h2_port), proc, self.procs)
        return proc, h2_port if h2 else h1_port

    def start_nginx_proxy(self, h2):
        name = self.unique("nginx-proxy")
        port = free_port()
        conf = os.path.join(self.work, f"{name}.conf")
        with open(conf, "w") as f:
            f.write(nginx_proxy_conf(self.work, port, self.up_h1, name))
        proc = self.procs.start(name, ["nginx", "-c", conf], self.a.proxy_cpu)
        wait_until("nginx as a proxy", lambda: http_ok(f"http://127.0.0.1:{port}/"), proc, self.procs)
        return proc, port

    def start_haproxy(self, h2):
        port = free_port()
        name = self.unique("haproxy")
        conf = os.path.join(self.work, f"{name}.cfg")
        with open(conf, "w") as f:
            f.write(haproxy_conf(port, self.up_h2 if h2 else self.up_h1, h2))
        proc = self.procs.start(name, ["haproxy", "-f", conf, "-q"], self.a.proxy_cpu)
        wait_until("haproxy", lambda: tcp_open(port), proc, self.procs)
        return proc, port

    def start_vigil(self, h2, direction, telemetry=True, wrap=(), timeout=30):
        inbound, outbound, admin = free_port(), free_port(), free_port()
        app = self.up_h2 if h2 else self.up_h1
        argv = [*wrap, self.proxy_bin, "--workload", "bench", "--log", "warn",
                "--inbound-addr", f"127.0.0.1:{inbound}", "--outbound-addr", f"127.0.0.1:{outbound}",
                "--inbound-addr6", "off", "--outbound-addr6", "off",
                "--admin-addr", f"127.0.0.1:{admin}", "--app-addr", f"127.0.0.1:{app}",
                "--dns-addr", "off", "--udp-addr", "off"]
        if telemetry:
            argv += ["--controller", f"http://127.0.0.1:{self.grpc}",
                     "--controller-token-file", self.token]
        else:
            # No controller: no policy beyond the allow-all default, nothing reported.
            argv += ["--controller", NOWHERE, "--policy-wait-ms", "0"]
        proc = self.procs.start(self.unique("vigil-proxy"), argv, self.a.proxy_cpu)
        wait_until("vigil-proxy", lambda: http_ok(f"http://127.0.0.1:{admin}/ready"), proc, self.procs,
                   timeout)
        if telemetry:
            def has_policy():
                with urllib.request.urlopen(f"http://127.0.0.1:{admin}/config_dump", timeout=2) as r:
                    return json.load(r)["policy"].get("version", 0) >= 1
            wait_until("vigil-proxy's first policy", has_policy, proc, self.procs, timeout)
        return proc, inbound if direction == "inbound" else outbound

    # -- load generators

    def wrk(self, port, secs, conns, script=None):
        argv = ["wrk", "-t1", f"-c{conns}", f"-d{secs}s", "--latency"]
        if script:
            argv += ["-s", script]
        argv.append(f"http://127.0.0.1:{port}/")
        return parse_wrk(run(argv, self.a.load_cpu, secs + 30, self.a.nice))

    def h2load(self, port, secs, authority=None, h1_rate=None):
        log = os.path.join(self.work, "h2load.log")
        if os.path.exists(log):
            os.remove(log)
        if h1_rate:
            # Open loop per client: --rps requests a second each, h1 keep-alive.
            clients = max(1, min(10, h1_rate // 100))
            argv = ["h2load", "--h1", "-c", str(clients), "--rps", str(h1_rate // clients)]
        else:
            argv = ["h2load", "-c", str(self.a.h2_clients), "-m", str(self.a.h2_streams)]
        argv += ["-D", str(secs), f"--log-file={log}"]
        if authority:
            argv += ["-H", f":authority: {authority}"]
        argv.append(f"http://127.0.0.1:{port}/")
        return parse_h2load(run(argv, self.a.load_cpu, secs + 30, self.a.nice), log)

    # -- one path

    def open(self, path):
        """Starts the path's proxy; its idle RSS is read before any load."""
        proc, port = path["start"](path["proto"] == "h2c")
        return {"path": path, "proc": proc, "port": port, "idle": rss_kib(proc.pid)["VmRSS"],
                "load": self.make_load(path, port), "reps": [], "fixed": []}

    def saturate(self, live, secs, record=True):
        """One saturation run, with the proxy's CPU over it."""
        pid = live["proc"].pid
        user0, sys0 = cpu_seconds(pid)
        result = live["load"](secs)
        user1, sys1 = cpu_seconds(pid)
        per_req = 1e6 / max(1, result["requests"])
        # User space (the proxy's own work) and the kernel's (the system
        # calls and the TCP stack, which every proxy making the same calls
        # pays alike): the split says what a change in user space can gain.
        result["user_us_per_req"] = (user1 - user0) * per_req
        result["sys_us_per_req"] = (sys1 - sys0) * per_req
        result["cpu_us_per_req"] = result["user_us_per_req"] + result["sys_us_per_req"]
        if record:
            live["reps"].append(result)

    def fixed_rate(self, live):
        if self.a.rate_client == "h2load":
            result = self.h2load(live["port"], self.a.rate_duration, h1_rate=self.a.rate)
        else:
            result = self.paced(live["port"], self.a.rate_duration, self.a.rate)
        live["fixed"].append(result)

    def paced(self, port, secs, rate):
        """One request every 1/rate s over 10 keep-alive connections (benches/paced.py), each
        request's latency counted from the instant it was due."""
        script = os.path.join(ROOT, "benches", "paced.py")
        argv = [sys.executable, script, "--port", str(port), "--rate", str(rate),
                "--duration", str(secs), "--connections", "10"]
        out = run(argv, self.a.load_cpu, secs + 60, self.a.nice)
        try:
            return json.loads(out)
        except ValueError as e:
            raise HarnessError(f"cannot read paced.py's output ({e}):\n{out}") from e

    def close(self, live):
        """Stops the path's proxy and returns its row (medians of its runs)."""
        path, proc, reps, fixed = live["path"], live["proc"], live["reps"], live["fixed"]
        row = {"path": path["name"], "proto": path["proto"], "what": path["what"], "reps": reps,
               "idle_rss_kib": live["idle"], "peak_rss_kib": live["peak"]}
        for key in ("rps", "p50_ms", "p99_ms", "cpu_us_per_req", "user_us_per_req", "sys_us_per_req"):
            row[key] = statistics.median(r[key] for r in reps)
        row["errors"] = sum(r["errors"] for r in reps)
        if fixed:
            row["rate"] = {k: statistics.median(f[k] for f in fixed)
                           for k in ("rps", "p50_ms", "p99_ms")}
            row["rate"]["errors"] = sum(f["errors"] for f in fixed)
            row["rate"]["p99_ms_runs"] = [f["p99_ms"] for f in fixed]
        self.procs.check(proc)
        self.procs.stop(proc)
        return row

    def measure(self, paths, say):
        """Every path, in rounds: all proxies stay up and each round loads each in turn, so a
        burst of other load on the machine falls on every path alike (--sequential: one path
        after the other)."""
        groups = [[p] for p in paths] if self.a.sequential else [paths]
        rows = []
        for group in groups:
            live = []
            for path in group:
                say(f"{path['proto']} {path['name']}: {path['what']}")
                live.append(self.open(path))
            if self.a.warmup > 0:
                for l in live:
                    self.saturate(l, self.a.warmup, record=False)
            for rep in range(self.a.reps):
                for l in live:
                    say(f"run {rep + 1}/{self.a.reps}: {l['path']['proto']} {l['path']['name']}")
                    self.saturate(l, self.a.duration)
            for l in live:
                l["peak"] = rss_kib(l["proc"].pid)["VmHWM"]
            for rep in range(self.a.reps):
                for l in (l for l in live if l["path"].get("rate") and self.a.rate_duration > 0):
                    say(f"fixed rate {rep + 1}/{self.a.reps}: {l['path']['name']}")
                    self.fixed_rate(l)
            rows += [self.close(l) for l in live]
        return rows

    def make_load(self, path, port):
        if path["proto"] == "h2c":
            return lambda secs: self.h2load(port, secs, authority=path.get("authority"))
        script = None
        if path.get("target"):
            script = os.path.join(self.work, f"{path['name']}.lua")
            with open(script, "w") as f:
                f.write(f'wrk.path = "{path["target"]}"\n')
        return lambda secs: self.wrk(port, secs, self.a.connections, script)

    def hold(self, name, start, count):
        """RSS of a fresh proxy holding `count` keep-alive connections open."""
        proc, port = start(False)
        idle = rss_kib(proc.pid)["VmRSS"]
        socks = []
        try:
            request = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
            for _ in range(count):
                s = socket.create_connection(("127.0.0.1", port), timeout=10)
                s.sendall(request)
                socks.append(s)
            for s in socks:
                read_response(s)
            time.sleep(0.2)
            rss = rss_kib(proc.pid)
            upstream = established_to(self.up_h1)
            # Every connection is still open: one more request on each answers.
            for s in socks:
                s.sendall(request)
            for s in socks:
                read_response(s)
        finally:
            for s in socks:
                s.close()
        self.procs.check(proc)
        self.procs.stop(proc)
        return {"path": name, "connections": count, "idle_rss_kib": idle,
                "rss_kib": rss["VmRSS"], "peak_rss_kib": rss["VmHWM"], "upstream_connections": upstream}

    # -- the paths

    def paths(self):
        vin = lambda h2: self.start_vigil(h2, "inbound")
        vout = lambda h2: self.start_vigil(h2, "outbound")
        voff = lambda h2: self.start_vigil(h2, "inbound", telemetry=False)
        up = f"127.0.0.1:{self.up_h1}"
        all_paths = [
            {"name": "direct", "proto": "http/1.1", "what": "wrk -> nginx",
             "start": self.start_direct, "rate": True},
            {"name": "nginx", "proto": "http/1.1", "what": "nginx proxy_pass (keepalive upstream)",
             "start": self.start_nginx_proxy, "rate": True},
            {"name": "haproxy", "proto": "http/1.1", "what": "haproxy, http-reuse always",
             "start": self.start_haproxy, "rate": True},
            {"name": "vigil-inbound", "proto": "http/1.1", "what": "inbound listener -> app",
             "start": vin, "rate": True, "vigil": True},
            {"name": "vigil-inbound-off", "proto": "http/1.1",
             "what": "inbound, no controller (policy and reporting off)", "start": voff, "rate": True,
             "vigil": True},
            {"name": "vigil-outbound", "proto": "http/1.1", "what": "outbound, absolute-form by IP",
             "start": vout, "target": f"http://{up}/", "vigil": True},
            {"name": "vigil-outbound-name", "proto": "http/1.1",
             "what": "outbound, absolute-form by name (localhost)", "start": vout,
             "target": f"http://localhost:{self.up_h1}/", "vigil": True},
            {"name": "direct", "proto": "h2c", "what": "h2load -> nginx (h2c)",
             "start": self.start_direct},
            {"name": "haproxy", "proto": "h2c", "what": "haproxy h2c -> nginx h2c", "start": self.start_haproxy},
            {"name": "vigil-inbound", "proto": "h2c", "what": "inbound -> app h2c", "start": vin,
             "vigil": True},
            {"name": "vigil-outbound", "proto": "h2c", "what": "outbound, :authority by IP -> h2c",
             "start": vout, "authority": f"127.0.0.1:{self.up_h2}", "vigil": True},
        ]
        wanted = set(self.a.paths.split(",")) if self.a.paths else None
        return [p for p in all_paths if wanted is None or p["name"] in wanted]

    def profile(self, out_dir):
        """perf record of vigil-proxy inbound under wrk; returns the report's head."""
        if not shutil.which("perf"):
            raise HarnessError("--perf needs perf (Debian: apt-get install linux-perf)")
        proc, port = self.start_vigil(False, "inbound")
        data = os.path.join(self.work, "perf.data")
        secs = max(2, self.a.duration)
        perf = subprocess.Popen(["perf", "record", "-F", "999", "-g", "-o", data, "-p", str(proc.pid),
                                 "--", "sleep", str(secs)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        self.wrk(port, secs, self.a.connections)
        perf.wait(timeout=60)
        def perf_report(sort, limit):
            return subprocess.run(["perf", "report", "-i", data, "--no-children", "--sort", sort,
                                   "--stdio", "-g", "none", "--percent-limit", limit],
                                  capture_output=True, text=True).stdout
        report = perf_report("dso", "0.5") + perf_report("dso,symbol", "0.7")
        self.procs.stop(proc)
        # Without perf's comment lines and its empty IPC columns.
        lines = [re.sub(r"(\s+-)*\s*$", "", line) for line in report.splitlines()
                 if line.strip() and not line.startswith("#")]
        path = os.path.join(out_dir, "perf-inbound.txt")
        with open(path, "w") as f:
            f.write(f"perf record -F 999 -g -p <vigil-proxy> under wrk -t1 -c{self.a.connections} "
                    f"-d{secs}s; perf report --no-children --sort dso (the share of each object), then --sort dso,symbol\n")
            f.write("\n".join(lines) + "\n")
        return path

    def instructions(self, requests, out_dir):
        """Instructions per request of vigil-proxy inbound under callgrind, per thread.

        Thread 1 is the main thread, which runs the data path; thread 2 the
        control runtime (telemetry aggregation, reports, policy). Counted
        over `requests` HTTP/1.1 keep-alive requests on 4 connections at 200
        req/s (well under what the proxy manages under valgrind), after 40
        unmeasured ones; the counters are zeroed and dumped with
        callgrind_control. Returns the JSON entry; the inclusive profile of
        thread 1 goes to instructions-inbound.txt beside the table.
        """
        for tool in ("valgrind", "callgrind_control", "callgrind_annotate"):
            if not shutil.which(tool):
                raise HarnessError("--instructions needs valgrind (Debian: apt-get install valgrind)")
        out = os.path.join(self.work, "callgrind.out")
        wrap = ("valgrind", "--tool=callgrind", "--separate-threads=yes",
                f"--callgrind-out-file={out}")
        proc, port = self.start_vigil(False, "inbound", wrap=wrap, timeout=120)
        url = f"http://127.0.0.1:{port}/"
        h1 = ["h2load", "--h1", "-c", "4"]
        run([*h1, "-n", "40", url], self.a.load_cpu, 120, self.a.nice)
        subprocess.run(["callgrind_control", "-z", str(proc.pid)], capture_output=True, check=True,
                       timeout=60)
        log = os.path.join(self.work, "instructions.h2load.log")
        load = run([*h1, "-n", str(requests), "--rps", "50", "--log-file", log, url],
                   self.a.load_cpu, 60 + requests // 50, self.a.nice)
        done = parse_h2load(load, log)
        if done["requests"] != requests or done["errors"]:
            raise HarnessError(f"the counted run completed {done['requests']} of {requests} "
                               f"requests, {done['errors']} errors:\n{load}")
        subprocess.run(["callgrind_control", "-d", str(proc.pid)], capture_output=True, check=True,
                       timeout=60)
        self.procs.stop(proc)
        threads = []
        for dump in sorted(f for f in os.listdir(self.work) if re.fullmatch(r"callgrind\.out\.1-\d+", f)):
            with open(os.path.join(self.work, dump)) as f:
                total = next(int(line.split()[1]) for line in f if line.startswith("totals:"))
            threads.append({"thread": int(dump.rsplit("-", 1)[1]), "instructions": total,
                            "per_request": round(total / requests)})
        if not threads:
            raise HarnessError(f"callgrind wrote no dump:\n{self.procs.tail(proc)}")
        report = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--auto=no",
                                 os.path.join(self.work, "callgrind.out.1-01")],
                                capture_output=True, text=True).stdout
        path = os.path.join(out_dir, "instructions-inbound.txt")
        with open(path, "w") as f:
            f.write(f"callgrind of vigil-proxy inbound, thread 1 (the data path), over {requests} "
                    "HTTP/1.1 requests after a warm-up; callgrind_annotate --inclusive=yes\n")
            lines = report.splitlines()
            start = next((i for i, line in enumerate(lines) if "PROGRAM TOTALS" in line), 0)
            f.write("\n".join(lines[start:start + 100]) + "\n")
        return {"requests": requests, "threads": threads, "report": path}


def read_response(s):
    """Reads one HTTP/1.1 response with a Content-Length body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            raise HarnessError("a held connection was closed")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    m = re.search(rb"(?i)content-length:\s*(\d+)", head)
    if not head.startswith(b"HTTP/1.1 200") or not m:
        raise HarnessError(f"unexpected response on a held connection: {head[:200]!r}")
    need = int(m.group(1)) - len(body)
    while need > 0:
        chunk = s.recv(need)
        if not chunk:
            raise HarnessError("a held connection was closed mid-body")
        need -= len(chunk)


# ---------------------------------------------------------------- main

def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="a check that the harness works: 1 run of 1 s per path, 200 held connections")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--duration", type=int, default=10, help="seconds per saturation run")
    p.add_argument("--warmup", type=int, default=2, help="seconds of unmeasured load first")
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--h2-clients", type=int, default=4)
    p.add_argument("--h2-streams", type=int, default=8)
    p.add_argument("--rate", type=int, default=1000, help="req/s of the fixed-rate run")
    p.add_argument("--rate-client", choices=("paced", "h2load"), default="paced",
                   help="the fixed-rate runs' client: paced (benches/paced.py, one request every "
                   "1/rate s) or h2load (h2load --h1 --rps: its clients send together, in bursts of 10)")
    p.add_argument("--rate-duration", type=int, default=10,
                   help="seconds per fixed-rate run (0: no fixed-rate runs)")
    p.add_argument("--hold", type=int, default=1000, help="connections held open (0: skip)")
    p.add_argument("--paths", help="comma-separated path names to run (default: all)")
    p.add_argument("--sequential", action="store_true",
                   help="one path after the other, each proxy alone (default: all up, runs in rounds)")
    p.add_argument("--bin-dir", default=os.environ.get("VIGIL_BIN_DIR",
                                                       os.path.join(ROOT, "target", "release")))
    p.add_argument("--proxy-bin", help="the vigil-proxy to measure (default: the one in --bin-dir; "
                   "the shipped one: target/x86_64-unknown-linux-gnu/dist/vigil-proxy, from cargo dist-proxy)")
    p.add_argument("--nice", type=int, default=0,
                   help="niceness of every process started (e.g. -10 on a machine others use)")
    p.add_argument("--proxy-cpu", type=int, default=0)
    p.add_argument("--load-cpu", type=int, default=1)
    p.add_argument("--out-md", default=os.path.join(ROOT, "benches", "results", "latest.md"))
    p.add_argument("--out-json", default=os.path.join(ROOT, "benches", "results", "latest.json"))
    p.add_argument("--instructions", type=int, default=0, metavar="N",
                   help="also count vigil-proxy inbound's instructions per request under callgrind "
                   "over N requests (instructions-inbound.txt beside --out-md; needs valgrind)")
    p.add_argument("--perf", action="store_true",
                   help="also perf-record vigil-proxy inbound under wrk (perf-inbound.txt beside --out-md)")
    a = p.parse_args()
    if a.quick:
        a.reps, a.duration, a.warmup, a.rate_duration, a.hold = 1, 1, 0, 1, min(a.hold, 200)
    a.bin_dir = os.path.abspath(a.bin_dir)
    a.proxy_bin = os.path.abspath(a.proxy_bin or os.path.join(a.bin_dir, "vigil-proxy"))
    for path in (a.proxy_bin, os.path.join(a.bin_dir, "vigil-controller")):
        if not os.access(path, os.X_OK):
            sys.exit(f"{path} is missing: cargo build --release --workspace --bins "
                     "(or point VIGIL_BIN_DIR / --bin-dir at target/debug)")
    if os.cpu_count() < 2 and a.proxy_cpu == a.load_cpu:
        print("warning: one core: proxy and load generator share it", file=sys.stderr)

    work = tempfile.mkdtemp(prefix="vigil-bench-")
    bench = Bench(a, work)
    atexit.register(lambda: (bench.procs.stop_all(), shutil.rmtree(work, ignore_errors=True)))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    result = {"machine": machine(a, ROOT), "settings": {k: v for k, v in vars(a).items()}}
    try:
        bench.start_upstream()
        paths = bench.paths()
        if any(p.get("vigil") for p in paths) or a.hold or a.perf or a.instructions:
            bench.start_controller()
        rows = bench.measure(paths, lambda m: print(f"== {m}", file=sys.stderr, flush=True))
        hold = []
        if a.hold:
            for name, start in (("nginx", bench.start_nginx_proxy), ("haproxy", bench.start_haproxy),
                                ("vigil-inbound", lambda h2: bench.start_vigil(h2, "inbound"))):
                print(f"== holding {a.hold} connections: {name}", file=sys.stderr, flush=True)
                hold.append(bench.hold(name, start, a.hold))
        result["paths"], result["hold"] = rows, hold
        result["summary"] = add_ratios(rows)
        result["machine"]["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
        if a.perf:
            out_dir = os.path.dirname(os.path.abspath(a.out_md))
            os.makedirs(out_dir, exist_ok=True)
            result["perf_report"] = bench.profile(out_dir)
        if a.instructions:
            print(f"== instructions per request (callgrind, {a.instructions} requests)",
                  file=sys.stderr, flush=True)
            out_dir = os.path.dirname(os.path.abspath(a.out_md))
            os.makedirs(out_dir, exist_ok=True)
            result["instructions"] = bench.instructions(a.instructions, out_dir)
    except (HarnessError, subprocess.TimeoutExpired, OSError) as e:
        sys.exit(f"error: {e}")
    table = markdown(result)
    print(table)
    for path, text in ((a.out_md, table), (a.out_json, json.dumps(result, indent=2) + "\n")):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
    print(f"wrote {a.out_md} and {a.out_json}", file=sys.stderr)


if __name__ == "__main__":
    main()
