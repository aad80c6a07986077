#!/usr/bin/env bash
# Load harness: requests per second and latency through vigil-proxy, as
# ratios to nginx served directly and to haproxy in the same position, all in
# one run on this machine. Needs nginx, haproxy and wrk (Debian packages) and
# release binaries (cargo build --release --workspace --bins).
#
#   benches/load.sh [seconds] [connections]
#
# Paths measured (the upstream is always nginx answering a 612-byte page):
#   direct     wrk -> nginx
#   haproxy    wrk -> haproxy (HTTP mode) -> nginx
#   inbound    wrk -> vigil-proxy inbound listener -> nginx (the app)
#   outbound   wrk -> vigil-proxy outbound listener, absolute-form -> nginx
#   out-dns    the same, naming the upstream `localhost` (system resolver)
# vigil-proxy runs with a controller (with its sidecar token), in learning
# mode, reporting normally.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
conns=${2:-32}
threads=1
bin=target/release
for tool in nginx haproxy wrk; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install nginx-light haproxy wrk)"; exit 1; }
done
[ -x "$bin/vigil-proxy" ] || { echo "build first: cargo build --release --workspace --bins"; exit 1; }

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
NGINX=$(port); HAP=$(port); IN=$(port); OUT=$(port); ADMIN=$(port); GRPC=$(port); API=$(port)

mkdir -p "$work/html"
head -c 612 /dev/zero | tr '\0' 'x' > "$work/html/index.html"
cat > "$work/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $work/nginx.pid;
error_log $work/nginx.err;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:$NGINX; root $work/html; }
}
CONF
nginx -c "$work/nginx.conf" & pids+=($!)

cat > "$work/haproxy.cfg" <<CONF
global
  nbthread 1
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend f
  bind 127.0.0.1:$HAP
  default_backend b
backend b
  http-reuse always
  server s1 127.0.0.1:$NGINX
CONF
haproxy -f "$work/haproxy.cfg" -q & pids+=($!)

"$bin/vigil-controller" --grpc-addr 127.0.0.1:$GRPC --http-addr 127.0.0.1:$API --data-dir "$work/data" --log warn & pids+=($!)
"$bin/vigil-proxy" --workload bench --controller http://127.0.0.1:$GRPC \
  --inbound-addr 127.0.0.1:$IN --outbound-addr 127.0.0.1:$OUT --admin-addr 127.0.0.1:$ADMIN \
  --app-addr 127.0.0.1:$NGINX --controller-token-file "$work/data/sidecar.token" --log warn & pids+=($!)

for url in "http://127.0.0.1:$NGINX/" "http://127.0.0.1:$HAP/" "http://127.0.0.1:$IN/" "http://127.0.0.1:$ADMIN/ready"; do
  for _ in $(seq 100); do curl -sf -o /dev/null "$url" && break; sleep 0.05; done
done
cat > "$work/absolute.lua" <<LUA
wrk.path = "http://127.0.0.1:$NGINX/"
LUA
cat > "$work/named.lua" <<LUA
wrk.path = "http://localhost:$NGINX/"
LUA

run() { # name url [script]
  local name=$1 url=$2 script=${3:-}
  local out
  out=$(wrk -t$threads -c$conns -d${secs}s --latency ${script:+-s "$script"} "$url")
  local rps p50 p99
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  echo "$name $rps $p50 $p99"
}
{
  run direct "http://127.0.0.1:$NGINX/"
  run haproxy "http://127.0.0.1:$HAP/"
  run inbound "http://127.0.0.1:$IN/"
  run outbound "http://127.0.0.1:$OUT/" "$work/absolute.lua"
  run out-dns "http://127.0.0.1:$OUT/" "$work/named.lua"
} > "$work/results"
rss=$(awk '/VmRSS/ {print $2" "$3}' /proc/"${pids[3]}"/status)
direct=$(awk '$1=="direct" {print $2}' "$work/results")
hap=$(awk '$1=="haproxy" {print $2}' "$work/results")
printf '%-9s %12s %10s %10s %10s %12s\n' path req/s p50 p99 vs-direct vs-haproxy
while read -r name rps p50 p99; do
  printf '%-9s %12s %10s %10s %10.2f %12.2f\n' "$name" "$rps" "$p50" "$p99" \
    "$(echo "$rps / $direct" | bc -l)" "$(echo "$rps / $hap" | bc -l)"
done < "$work/results"
echo "vigil-proxy RSS after the run: $rss; wrk -t$threads -c$conns -d${secs}s; $(nproc) cores"
