#!/usr/bin/env bash
# Mode change -> policy in force at a sidecar: PUTs the mode 10 times,
# alternating learning and enforcement, and polls the sidecar's
# /config_dump until its policy's `enforce` flips. Prints each latency in
# milliseconds (it includes the controller's redb fsync and curl's polling).
#
#   benches/mode_latency.sh [debug|release]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/${1:-debug}
[ -x "$bin/vigil-proxy" ] || { echo "build first: cargo build --workspace --bins"; exit 1; }
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
GRPC=$(port); API=$(port); ADMIN=$(port)

"$bin/vigil-controller" --grpc-addr 127.0.0.1:$GRPC --http-addr 127.0.0.1:$API \
  --data-dir "$work/data" --log warn & pids+=($!)
for _ in $(seq 100); do [ -s "$work/data/sidecar.token" ] && break; sleep 0.05; done
"$bin/vigil-proxy" --workload latency --controller http://127.0.0.1:$GRPC \
  --controller-token-file "$work/data/sidecar.token" --outbound-addr 127.0.0.1:0 \
  --inbound-addr 127.0.0.1:0 --admin-addr 127.0.0.1:$ADMIN --log warn & pids+=($!)
token=$(cat "$work/data/admin.token")
dump() { curl -sf "http://127.0.0.1:$ADMIN/config_dump" | tr -d ' \n'; }
for _ in $(seq 100); do dump | grep -q '"version":[1-9]' && break; sleep 0.05; done

for i in $(seq 10); do
  if [ $((i % 2)) = 1 ]; then mode=enforcement; want=true; else mode=learning; want=false; fi
  t0=$(date +%s%N)
  curl -sf -X PUT -H "Authorization: Bearer $token" -H 'content-type: application/json' \
    -d "{\"mode\":\"$mode\"}" "http://127.0.0.1:$API/api/v1/mode" >/dev/null
  until dump | grep -q "\"enforce\":$want"; do :; done
  echo "$mode $(( ($(date +%s%N) - t0) / 1000000 )) ms"
done
