#!/usr/bin/env python3
"""Start-up with a large index: time from exec to listening and to the first
hit, and the edge's RSS, over a synthetic store of N complete objects.

The store is built once (cached in --dir) by the store's own example
`synth_store`: one object through the store API, the rest copies of its
index row with their own keys, ids and body files (see
crates/outpost-store/examples/synth_store.rs). Then, --rounds times:
  * optionally drop the page cache (--cold, root): a reboot's start-up;
  * exec `outpost serve --cache-dir DIR --origin http://127.0.0.1:9/`
    (the origin is unreachable: every answer must come from the store);
  * time to the log line saying it listens, and to the first 200 with
    X-Cache: HIT for an object in the middle of the index (requests
    are retried every 5 ms from exec on);
  * RSS (VmRSS and VmHWM) once the first hit is served, then SIGTERM.

Needs a release build: cargo build --release -p outpost &&
cargo build --release -p outpost-store --example synth_store
Run from the project root: python3 bench/startup.py [--objects 1000000]
"""
import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.request

ORIGIN = "http://127.0.0.1:9/"
PORT = 18490


def status_kb(pid, field):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def build_store(dir, objects, body):
    if os.path.exists(os.path.join(dir, "index.sqlite")):
        return
    os.makedirs(dir, exist_ok=True)
    t = time.time()
    subprocess.run(["target/release/examples/synth_store", dir, str(objects),
                    str(body), ORIGIN + "pkgs/"], check=True)
    print("built %d objects in %.0f s" % (objects, time.time() - t), flush=True)


def hit(url):
    req = urllib.request.Request(url)
    with urllib.request.urlopen(req, timeout=2) as r:
        r.read()
        return r.status, r.headers.get("x-cache")


def one_round(dir, objects, cold):
    if cold:
        subprocess.run(["sync"])
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    log = open(os.path.join(dir, "..", "startup-edge.log"), "w")
    env = dict(os.environ, RUST_LOG="info", NO_COLOR="1")
    url = "http://127.0.0.1:%d/pkgs/%07d.bin" % (PORT, objects // 2)
    t0 = time.monotonic()
    edge = subprocess.Popen(["target/release/outpost", "serve", "--cache-dir", dir,
                             "--listen", "127.0.0.1:%d" % PORT, "--admin", "127.0.0.1:0",
                             "--origin", ORIGIN, "--cache-size", "1000GiB"],
                            stderr=log, env=env)
    listening = first_hit = None
    try:
        while first_hit is None:
            if edge.poll() is not None:
                sys.exit("outpost exited: see startup-edge.log")
            if listening is None:
                with open(log.name) as f:
                    if "listening (" in f.read():
                        listening = time.monotonic() - t0
            try:
                status, cache = hit(url)
                if status == 200 and cache == "HIT":
                    first_hit = time.monotonic() - t0
                    if listening is None:
                        listening = first_hit
                else:
                    sys.exit("first answer %s %s, not a HIT" % (status, cache))
            except (ConnectionError, OSError):
                time.sleep(0.005)
        rss = status_kb(edge.pid, "VmRSS") / 1024
        hwm = status_kb(edge.pid, "VmHWM") / 1024
    finally:
        edge.send_signal(signal.SIGTERM)
        edge.wait(timeout=60)
    return listening, first_hit, rss, hwm


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--objects", type=int, default=1_000_000)
    ap.add_argument("--body", type=int, default=1024)
    ap.add_argument("--dir", default="/tmp/outpost-bench-startup/cache")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cold", action="store_true", help="drop the page cache first (root)")
    a = ap.parse_args()
    build_store(a.dir, a.objects, a.body)
    print("| round | listening (s) | first hit (s) | RSS (MB) | peak RSS (MB) |")
    print("|---|---|---|---|---|")
    for i in range(a.rounds):
        l, h, rss, hwm = one_round(a.dir, a.objects, a.cold)
        print("| %d | %.2f | %.2f | %.0f | %.0f |" % (i + 1, l, h, rss, hwm), flush=True)


if __name__ == "__main__":
    main()
