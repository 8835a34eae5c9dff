#!/usr/bin/env bash
# Fleet manager benchmark (issue 13): one `outpost manager serve` and
# bench/fleet-sim's simulated edges on this machine. Prints the figures
# next to issue 13's targets with PASS/FAIL; see docs/benchmarks.md
# ("Fleet manager").
#
#   cargo build --release -p outpost -p fleet-sim
#   sudo bench/fleet.sh                      # 10,000 edges over HTTPS
#   EDGES=1000 WINDOW=20 bench/fleet.sh      # a quick check
#
# Settings (environment):
#   EDGES=10000        simulated edges
#   HEARTBEAT=30s      the manager's --heartbeat
#   TRANSPORT=tls      tls (pinned self-signed certificate) or http
#                      (--insecure-http)
#   WINDOW=60          seconds of the steady-state window
#   SETTLE=            seconds between "all applied" and the window
#                      (default: one heartbeat interval)
#   PIN=0              1: taskset the manager to CPU 1, the simulator to
#                      CPU 0 (on 2 cores: each its own core)
#   PORT=              the manager's port (default: a free one)
#   WORK=/tmp/outpost-fleet-bench   state, logs, result.json
#   SIM_ARGS=          more fleet-sim flags (see fleet-sim --help)
#   WRAP=              a command the manager runs under, e.g. "heaptrack -o
#                      /tmp/m" to see where its memory goes (the CPU and
#                      memory figures are then the wrapper's, not to quote)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
outpost=$root/target/release/outpost
sim=$root/target/release/fleet-sim
edges=${EDGES:-10000}
heartbeat=${HEARTBEAT:-30s}
transport=${TRANSPORT:-tls}
window=${WINDOW:-60}
pin=${PIN:-0}
work=${WORK:-/tmp/outpost-fleet-bench}
for binary in "$outpost" "$sim"; do
  [ -x "$binary" ] || { echo "missing $binary: cargo build --release -p outpost -p fleet-sim" >&2; exit 2; }
done
# Each edge holds a long poll, and a heartbeat connection while it talks:
# up to 20,000 sockets in each process. Where the hard limit cannot be
# raised (no CAP_SYS_RESOURCE), take what there is and say so below.
ulimit -Hn 1048576 2>/dev/null || true
ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)"
heartbeat_seconds=$(python3 -c "import sys; s=sys.argv[1]; print(int(float(s[:-2])/1000) if s.endswith('ms') else int(float(s.rstrip('s'))))" "$heartbeat")
settle=${SETTLE:-$heartbeat_seconds}
port=${PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}

rm -rf "$work" && mkdir -p "$work"
"$outpost" manager init --data-dir "$work/data" --json >"$work/init.json"
field() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$work/init.json" "$1"; }
join_token=$(field join_token)
admin_token=$(field admin_token)
fingerprint=$(field fingerprint)

manager_pin=() sim_pin=()
if [ "$pin" = 1 ]; then manager_pin=(taskset -c 1) sim_pin=(taskset -c 0); fi
serve_flags=(--data-dir "$work/data" --listen "127.0.0.1:$port" --heartbeat "$heartbeat")
if [ "$transport" = http ]; then
  serve_flags+=(--insecure-http) url=http://127.0.0.1:$port
else
  url=https://127.0.0.1:$port
fi
"${manager_pin[@]}" ${WRAP:-} "$outpost" manager serve "${serve_flags[@]}" >"$work/manager.log" 2>&1 &
manager_pid=$!
cleanup() { kill -TERM "$manager_pid" 2>/dev/null || true; wait "$manager_pid" 2>/dev/null || true; }
trap cleanup EXIT
deadline=$((SECONDS + 30))
until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
  kill -0 "$manager_pid" 2>/dev/null || { echo "the manager exited:" >&2; cat "$work/manager.log" >&2; exit 1; }
  [ $SECONDS -lt $deadline ] || { echo "the manager is not listening on $port after 30 s" >&2; exit 1; }
  sleep 0.1
done

echo "# fleet benchmark: $(date -u '+%Y-%m-%d %H:%M UTC'), outpost $(git -C "$root" rev-parse --short HEAD)"
echo "# machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -r)"
echo "# open files limit per process: $(ulimit -n)"
echo "# load before: $(cut -d' ' -f1-3 /proc/loadavg); pinned: $([ "$pin" = 1 ] && echo 'manager CPU 1, simulator CPU 0' || echo no)"
echo "# $edges edges, heartbeat $heartbeat, transport $transport, window ${window}s, settle ${settle}s"
set +e
"${sim_pin[@]}" "$sim" --manager "$url" --fingerprint "$fingerprint" \
  --join-token "$join_token" --admin-token "$admin_token" \
  --edges "$edges" --window "$window" --settle "$settle" \
  --manager-pid "$manager_pid" --data-dir "$work/data" --json-out "$work/result.json" \
  ${SIM_ARGS:-} 2> >(tee "$work/sim.log" >&2)
status=$?
set -e
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg); manager log: $work/manager.log ($(grep -c ' WARN \| ERROR ' "$work/manager.log" || true) WARN/ERROR lines)"
exit $status
