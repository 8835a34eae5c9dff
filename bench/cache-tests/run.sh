#!/usr/bin/env bash
# Runs the public HTTP caching test suite (http-cache-tests on npm, the
# suite behind cache-tests.fyi) against Outpost as a reverse proxy, and
# prints its score beside the peers' results that ship with the suite.
#
#   cargo build --release && bench/cache-tests/run.sh [WORKDIR]
#
# Needs node and npm. The suite is unpacked into WORKDIR (default
# /tmp/outpost-cache-tests), never into the repository.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
work=${1:-/tmp/outpost-cache-tests}
version=${CACHE_TESTS_VERSION:-0.4.5}
origin_port=${ORIGIN_PORT:-8000}
edge_port=${EDGE_PORT:-8080}
mkdir -p "$work"
if [ ! -f "$work/package/package.json" ]; then
  (cd "$work" && npm pack --silent "http-cache-tests@$version" >/dev/null && tar xzf "http-cache-tests-$version.tgz")
  (cd "$work/package" && npm install --silent --no-audit --no-fund >/dev/null)
fi
cp "$here/runall.mjs" "$here/compare.mjs" "$work/package/"
cleanup() { kill "${edge_pid:-}" "${origin_pid:-}" 2>/dev/null || true; }
trap cleanup EXIT
(cd "$work/package" && npm_config_port=$origin_port npm_config_protocol=http npm_config_pidfile="$work/server.pid" \
  exec node server/server.mjs) >"$work/origin.log" 2>&1 &
origin_pid=$!
rm -rf "$work/cache" "$work/results" && mkdir -p "$work/results"
"$root/target/release/outpost" serve --listen "127.0.0.1:$edge_port" --cache-dir "$work/cache" \
  --origin "http://127.0.0.1:$origin_port" >"$work/outpost.log" 2>&1 &
edge_pid=$!
for _ in $(seq 100); do
  curl -s -o /dev/null "http://127.0.0.1:$edge_port/" && break
  sleep 0.1
done
# One process per suite, run one after the other: the suite's 3-second
# pauses decide freshness, so a loaded machine must not stretch them.
cd "$work/package"
for suite in $(sed -n "s/^  id: '\(.*\)',\$/\1/p" tests/*.mjs); do
  BASE="http://127.0.0.1:$edge_port" SUITE=$suite timeout 300 node --no-warnings runall.mjs \
    >"$work/results/$suite.json" 2>>"$work/runner.log" || true
done
node --no-warnings compare.mjs "$work"/results/*.json
