#!/usr/bin/env bash
# The site library's downloads against a plain cache hit (issue 14): one
# pre-positioned file (1 GiB by default) fetched, in one run, as
#   hit     GET through the proxy listener (absolute URL, a cache hit);
#   library GET of /CHANNEL/FILE on the library listener;
#   webdav  the same GET as the Windows WebClient sends it
#           (Microsoft-WebDAV-MiniRedir, translate: f) after its PROPFIND;
#   rclone  `rclone cat` of the file over an inline :webdav remote
#           (PROPFIND + GET), when rclone is installed.
# Each is run ROUNDS times, interleaved (the order rotates each round);
# the median rate of each and its ratio to the hit's are printed. Before
# that, each path's bytes are compared (SHA-256) with the hit's. Everything is on loopback and the
# file is in the page cache: this measures the serving paths, not a disk.
#
# The edge is crates/outpost-library/examples/library_bench.rs (the same
# proxy server and library the binary runs; its own origin and channel).
#
# Then it times listings of a folder of SMALL (default 5000) files: the
# WebClient's PROPFIND Depth 1 (allprop) and the JSON page.
#
#   bench/library.sh                 # 1 GiB, 5 rounds, 5000 small files
#   MIB=256 ROUNDS=3 SMALL=0 bench/library.sh
set -euo pipefail
cd "$(dirname "$0")/.."
MIB=${MIB:-1024}
ROUNDS=${ROUNDS:-5}
SMALL=${SMALL:-5000}
BIN=target/release/examples/library_bench
if [ ! -x "$BIN" ]; then
  CARGO_INCREMENTAL=0 cargo build --release -p outpost-library --example library_bench
fi
DIR=$(mktemp -d "${TMPDIR:-/var/tmp}/outpost-library-bench.XXXXXX")
trap 'rm -rf "$DIR"' EXIT
: > "$DIR/rclone.conf"

coproc EDGE { exec "$BIN" "$MIB" "$DIR" "$SMALL"; }
read -r line <&"${EDGE[0]}"
case "$line" in READY*) ;; *) echo "edge did not start: $line" >&2; exit 1 ;; esac
for kv in $line; do
  case "$kv" in
    proxy=*) PROXY=${kv#proxy=} ;;
    library=*) LIBRARY=${kv#library=} ;;
    url=*) URL=${kv#url=} ;;
    path=*) FPATH=${kv#path=} ;;
  esac
done
SIZE=$((MIB * 1024 * 1024))
MINIREDIR='Microsoft-WebDAV-MiniRedir/10.0.19045'

# One fetch: prints "bytes seconds".
fetch() {
  case "$1" in
    hit) curl -sS -o /dev/null -w '%{size_download} %{time_total}\n' -x "http://$PROXY" "$URL" ;;
    library) curl -sS -o /dev/null -w '%{size_download} %{time_total}\n' "http://$LIBRARY$FPATH" ;;
    webdav)
      curl -sS -o /dev/null -X PROPFIND -H 'Depth: 0' -H 'translate: f' -A "$MINIREDIR" "http://$LIBRARY$FPATH"
      curl -sS -o /dev/null -w '%{size_download} %{time_total}\n' -H 'translate: f' -A "$MINIREDIR" "http://$LIBRARY$FPATH" ;;
    rclone)
      local t0 t1 n
      t0=$(date +%s.%N)
      n=$(rclone --config "$DIR/rclone.conf" cat ":webdav,url='http://$LIBRARY/':${FPATH#/}" | wc -c)
      t1=$(date +%s.%N)
      echo "$n $(echo "$t1 - $t0" | bc -l)" ;;
  esac
}

digest() {
  case "$1" in
    hit) curl -sS -x "http://$PROXY" "$URL" | sha256sum ;;
    library) curl -sS "http://$LIBRARY$FPATH" | sha256sum ;;
    webdav) curl -sS -H 'translate: f' -A "$MINIREDIR" "http://$LIBRARY$FPATH" | sha256sum ;;
    rclone) rclone --config "$DIR/rclone.conf" cat ":webdav,url='http://$LIBRARY/':${FPATH#/}" | sha256sum ;;
  esac
}

MODES=(hit library webdav)
command -v rclone >/dev/null 2>&1 && MODES+=(rclone)
want=$(digest hit)
for m in "${MODES[@]}"; do
  got=$(digest "$m")
  [ "$got" = "$want" ] || { echo "$m: bytes differ from the hit's" >&2; exit 1; }
done
echo "bytes: every path gives the hit's SHA-256 (${want%% *})"

declare -A RATES
for r in $(seq 1 "$ROUNDS"); do
  # Each round starts with the next mode: none is always first or last.
  k=$(( (r - 1) % ${#MODES[@]} ))
  for m in "${MODES[@]:k}" "${MODES[@]:0:k}"; do
    read -r n s < <(fetch "$m")
    [ "$n" -eq "$SIZE" ] || { echo "$m: got $n bytes, not $SIZE" >&2; exit 1; }
    RATES[$m]+="$(echo "$n / $s / 1048576" | bc -l) "
  done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
HIT=$(echo "${RATES[hit]}" | median)
printf '%-8s %12s %8s   (%s MiB, %s rounds, median)\n' mode 'MiB/s' ratio "$MIB" "$ROUNDS"
for m in "${MODES[@]}"; do
  med=$(echo "${RATES[$m]}" | median)
  printf '%-8s %12.0f %8.3f\n' "$m" "$med" "$(echo "$med / $HIT" | bc -l)"
done

if [ "$SMALL" -gt 0 ]; then
  ALLPROP='<?xml version="1.0" encoding="utf-8" ?><D:propfind xmlns:D="DAV:"><D:allprop/></D:propfind>'
  for r in 1 2 3; do
    read -r code n s < <(curl -sS -o /dev/null -w '%{http_code} %{size_download} %{time_total}\n' -X PROPFIND \
      -H 'Depth: 1' -H 'translate: f' -A "$MINIREDIR" --data "$ALLPROP" "http://$LIBRARY/bench/many/")
    [ "$code" = 207 ] || { echo "PROPFIND: $code" >&2; exit 1; }
    printf 'PROPFIND Depth 1, %s files: %6.0f ms, %s bytes\n' "$SMALL" "$(echo "$s * 1000" | bc -l)" "$n"
    read -r code n s < <(curl -sS -o /dev/null -w '%{http_code} %{size_download} %{time_total}\n' \
      "http://$LIBRARY/bench/many/?format=json")
    [ "$code" = 200 ] || { echo "JSON page: $code" >&2; exit 1; }
    printf 'JSON page,        %s files: %6.0f ms, %s bytes\n' "$SMALL" "$(echo "$s * 1000" | bc -l)" "$n"
  done
fi

exec {EDGE[1]}>&-
wait "$EDGE_PID" 2>/dev/null || true
