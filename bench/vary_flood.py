#!/usr/bin/env python3
"""Vary flood: one URL answered with `Vary: User-Agent`, requested with N
distinct, long User-Agent values; the edge's RSS and the number of objects
it stores, sampled as the flood goes on. Issue 11 item 4: before the
per-URL variant cap, every value added an in-memory entry and a stored
copy; the RSS should stay flat now.

    cargo build --release
    python3 bench/vary_flood.py --outpost target/release/outpost --requests 10000

Runs on loopback: a Python origin, the edge in reverse mode, one client
process with keep-alive connections.
"""
import argparse
import http.client
import http.server
import os
import random
import shutil
import socketserver
import string
import subprocess
import tempfile
import threading
import time

ORIGIN_PORT = 18181
EDGE_PORT = 18128
ADMIN_PORT = 18180
BODY = b"x" * 2048


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(BODY)))
        self.send_header("Cache-Control", "public, max-age=3600")
        self.send_header("Vary", "User-Agent")
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, *args):
        pass


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def wait_port(port, deadline=20):
    end = time.time() + deadline
    while time.time() < end:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            c.request("GET", "/healthz")
            c.getresponse().read()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("port %d did not answer" % port)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--outpost", default="./target/release/outpost")
    ap.add_argument("--requests", type=int, default=10000)
    ap.add_argument("--ua-bytes", type=int, default=60000)
    ap.add_argument("--connections", type=int, default=8)
    args = ap.parse_args()

    origin = Server(("127.0.0.1", ORIGIN_PORT), Handler)
    threading.Thread(target=origin.serve_forever, daemon=True).start()
    work = tempfile.mkdtemp(prefix="vary-flood-")
    edge = subprocess.Popen(
        [args.outpost, "serve", "--listen", "127.0.0.1:%d" % EDGE_PORT,
         "--cache-dir", os.path.join(work, "cache"), "--admin", "127.0.0.1:%d" % ADMIN_PORT,
         "--origin", "http://127.0.0.1:%d" % ORIGIN_PORT],
        stderr=open(os.path.join(work, "edge.log"), "w"))
    try:
        wait_port(ADMIN_PORT)
        padding = "".join(random.choice(string.ascii_letters) for _ in range(args.ua_bytes))
        samples = [(0, rss_kib(edge.pid))]
        lock = threading.Lock()
        done = [0]
        errors = [0]

        def client(worker):
            conn = http.client.HTTPConnection("127.0.0.1", EDGE_PORT, timeout=30)
            while True:
                with lock:
                    i = done[0]
                    if i >= args.requests:
                        return
                    done[0] += 1
                ua = "agent-%d-%s" % (i, padding)
                try:
                    conn.request("GET", "/pkg.bin", headers={"User-Agent": ua})
                    r = conn.getresponse()
                    r.read()
                    if r.status != 200:
                        errors[0] += 1
                except (OSError, http.client.HTTPException):
                    errors[0] += 1
                    conn = http.client.HTTPConnection("127.0.0.1", EDGE_PORT, timeout=30)

        threads = [threading.Thread(target=client, args=(w,)) for w in range(args.connections)]
        started = time.time()
        for t in threads:
            t.start()
        step = max(1, args.requests // 4)
        next_sample = step
        while any(t.is_alive() for t in threads):
            time.sleep(0.05)
            if done[0] >= next_sample:
                samples.append((done[0], rss_kib(edge.pid)))
                next_sample += step
        for t in threads:
            t.join()
        elapsed = time.time() - started
        samples.append((done[0], rss_kib(edge.pid)))
        objects = 0
        for root, _, files in os.walk(os.path.join(work, "cache", "objects")):
            objects += len(files)
        print("binary %s: %d requests, User-Agent %d bytes, %.1f s, %d errors"
              % (args.outpost, args.requests, args.ua_bytes, elapsed, errors[0]))
        print("| requests sent | edge RSS (MiB) |")
        print("|---|---|")
        for n, kib in samples:
            print("| %d | %.1f |" % (n, kib / 1024))
        print("object files stored: %d" % objects)
    finally:
        edge.terminate()
        edge.wait(timeout=30)
        origin.shutdown()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
