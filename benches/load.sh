#!/usr/bin/env bash
# Load harness: vigil-proxy (inbound, outbound by IP and by name, HTTP/1.1
# and h2c, with and without its controller) against nginx and haproxy in the
# same position, direct nginx as the floor, all in one run with the proxy
# under test and its nginx upstream pinned to one core and the load generator
# to another. Prints a Markdown table and writes benches/results/latest.md and
# latest.json. See benches/RESULTS.md.
#
#   benches/load.sh [--install] [--quick] [--reps N] [--duration S] [--perf]
#                   [--instructions N] ...
#   benches/load.sh --help          # every option (benches/load.py)
#
# Needs nginx, haproxy, wrk and h2load (Debian: nginx-light haproxy wrk
# nghttp2-client), taskset and python3; --instructions also valgrind. With
# --install, or as root with CI set, missing ones are installed with
# apt-get; otherwise the apt-get line is printed and the harness exits 1.
# Binaries: target/release by default (cargo build --release --workspace
# --bins); VIGIL_BIN_DIR or --bin-dir points elsewhere (e.g. target/debug).
set -euo pipefail
cd "$(dirname "$0")/.."

install=no
instructions=no
args=()
for arg in "$@"; do
  case "$arg" in
    --install) install=yes ;;
    --instructions*) instructions=yes; args+=("$arg") ;;
    *) args+=("$arg") ;;
  esac
done
if [ "$(id -u)" = 0 ] && [ -n "${CI:-}" ]; then install=yes; fi

need=()
command -v nginx >/dev/null || need+=(nginx-light)
command -v haproxy >/dev/null || need+=(haproxy)
command -v wrk >/dev/null || need+=(wrk)
command -v h2load >/dev/null || need+=(nghttp2-client)
command -v taskset >/dev/null || need+=(util-linux)
command -v python3 >/dev/null || need+=(python3)
if [ "$instructions" = yes ]; then command -v valgrind >/dev/null || need+=(valgrind); fi
if [ ${#need[@]} -gt 0 ]; then
  if [ "$install" = no ]; then
    echo "missing tools; install them with:" >&2
    echo "  apt-get install -y --no-install-recommends ${need[*]}" >&2
    echo "(or run benches/load.sh --install)" >&2
    exit 1
  fi
  sudo=()
  [ "$(id -u)" = 0 ] || sudo=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

exec python3 benches/load.py ${args[@]+"${args[@]}"}
