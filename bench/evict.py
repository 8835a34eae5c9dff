#!/usr/bin/env python3
"""Hit latency while the store evicts 100,000 small objects.

A synthetic store (crates/outpost-store/examples/synth_store.rs) holds
--objects complete 1 KiB objects; the edge starts over it with a cache size
far below what they take, so the first object a fill stores (one 64 KiB
file from a local origin) starts an eviction down to the low watermark:
nearly every object goes. Meanwhile wrk asks for 100 hot objects (hit
during a warm-up, so they are the most recently used and go last, if at
all). The same wrk run without eviction (the edge started with room for
everything) is the baseline. Each round rebuilds the store (eviction
deletes it). Prints p50/p99/max latency and hits/s for both, the eviction's
duration (polled from the index) and the objects left.

Needs wrk and a release build: cargo build --release -p outpost &&
cargo build --release -p outpost-store --example synth_store
Run from the project root: python3 bench/evict.py [--objects 100000]
"""
import argparse
import http.server
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request

EDGE_PORT, ORIGIN_PORT = 18491, 18492
ORIGIN = "http://127.0.0.1:%d/" % ORIGIN_PORT
HOT = 100
WRK_LUA = """
counter = 0
request = function()
  counter = counter + 1
  return wrk.format("GET", string.format("/pkgs/%07d.bin", counter % {hot}))
end
"""


class Origin(http.server.BaseHTTPRequestHandler):
    body = b"y" * 65536

    def do_GET(self):
        self.send_response(200)
        self.send_header("content-length", str(len(self.body)))
        self.send_header("cache-control", "max-age=3600")
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


def get(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        r.read()
        return r.headers.get("x-cache")


def wrk(seconds, lua):
    out = subprocess.run(["wrk", "-t2", "-c16", "-d%ds" % seconds, "--latency", "-s", lua,
                          "http://127.0.0.1:%d/" % EDGE_PORT],
                         capture_output=True, text=True, check=True).stdout
    pct = dict(re.findall(r"^\s+(\d+)%\s+([\d.]+\w+)", out, re.M))
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)
    mx = re.search(r"Latency\s+\S+\s+\S+\s+(\S+)", out).group(1)
    return pct.get("50"), pct.get("99"), mx, float(rate)


def count(dir):
    con = sqlite3.connect("file:%s?mode=ro" % os.path.join(dir, "index.sqlite"), uri=True,
                          timeout=10)
    try:
        return con.execute("SELECT COUNT(*) FROM objects").fetchone()[0]
    finally:
        con.close()


def one_round(work, objects, evict, seconds, lua):
    cache = os.path.join(work, "cache")
    shutil.rmtree(cache, ignore_errors=True)
    subprocess.run(["target/release/examples/synth_store", cache, str(objects), "1024",
                    ORIGIN + "pkgs/"], check=True, capture_output=True)
    size = "2MiB" if evict else "100GiB"
    env = dict(os.environ, RUST_LOG="info", NO_COLOR="1")
    log = open(os.path.join(work, "edge.log"), "w")
    edge = subprocess.Popen(["target/release/outpost", "serve", "--cache-dir", cache,
                             "--listen", "127.0.0.1:%d" % EDGE_PORT, "--admin", "127.0.0.1:0",
                             "--origin", ORIGIN, "--cache-size", size],
                            stderr=log, env=env)
    try:
        deadline = time.time() + 60
        while True:
            try:
                get("http://127.0.0.1:%d/pkgs/0000000.bin" % EDGE_PORT)
                break
            except OSError:
                if time.time() > deadline:
                    sys.exit("the edge did not start")
                time.sleep(0.05)
        for i in range(HOT):  # the hot set: loaded and touched
            for _ in range(3):
                assert get("http://127.0.0.1:%d/pkgs/%07d.bin" % (EDGE_PORT, i)) == "HIT"
        result = {}
        t = threading.Thread(target=lambda: result.update(w=wrk(seconds, lua)))
        t.start()
        took = None
        if evict:
            time.sleep(1)
            before = count(cache)
            start = time.monotonic()
            get("http://127.0.0.1:%d/trigger.bin" % EDGE_PORT)  # a fill: accounts bytes
            while time.monotonic() - start < seconds + 30:
                if count(cache) < before - objects * 0.9:
                    took = time.monotonic() - start
                    break
                time.sleep(0.05)
        t.join()
        left = count(cache)
    finally:
        edge.send_signal(signal.SIGTERM)
        edge.wait(timeout=60)
    return result["w"], took, left


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--objects", type=int, default=100_000)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--work", default="/tmp/outpost-bench-evict")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    lua = os.path.join(a.work, "hot.lua")
    with open(lua, "w") as f:
        f.write(WRK_LUA.format(hot=HOT))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", ORIGIN_PORT), Origin)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print("| round | eviction | p50 | p99 | max | hits/s | evicted in (s) | objects left |")
    print("|---|---|---|---|---|---|---|---|")
    for i in range(a.rounds):
        for evict in (False, True):
            (p50, p99, mx, rate), took, left = one_round(a.work, a.objects, evict, a.seconds, lua)
            print("| %d | %s | %s | %s | %s | %.0f | %s | %d |" % (
                i + 1, "yes" if evict else "no", p50, p99, mx, rate,
                "%.1f" % took if took is not None else "-", left), flush=True)


if __name__ == "__main__":
    main()
