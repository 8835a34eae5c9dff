#!/usr/bin/env python3
"""Cache-hit benchmark: Outpost beside nginx (proxy_cache), same objects, one run.

Measures, on loopback:
  * throughput serving a 1 GiB cached object to 1 and to 16 concurrent clients
    (curl to /dev/null);
  * 4 KiB cache hits per second (wrk, 64 connections, keep-alive);
  * each cache's peak RSS (sum over its processes, sampled every 50 ms).
Each figure is the median of --rounds rounds that alternate the caches'
order (this 2-core machine's speed drifts by tens of percent between
minutes). Prints a markdown table with outpost/nginx ratios.

Needs: nginx, curl, wrk (apt-get install -y nginx curl wrk) and a release build
(cargo build --release). Run from the project root: python3 bench/hit.py
"""
import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ORIGIN_PORT, NGINX_PORT, OUTPOST_PORT = 18480, 18481, 18482

ORIGIN_CONF = """
{user}
worker_processes 1;
daemon off;
pid {d}/origin.pid;
error_log {d}/origin-error.log;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  sendfile on;
  server {{
    listen 127.0.0.1:{port};
    root {d}/www;
    location / {{ add_header Cache-Control "public, max-age=86400"; }}
  }}
}}
"""

# nginx as a branch cache, tuned as in wan-bench's adapter: 2 workers, lock on.
NGINX_CONF = """
{user}
worker_processes 2;
daemon off;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  sendfile on;
  tcp_nopush on;
  proxy_cache_path {d}/nginx-cache levels=1:2 keys_zone=c:64m max_size=8g inactive=1d use_temp_path=off;
  upstream origin {{ server 127.0.0.1:{origin}; keepalive 16; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_cache c;
      proxy_cache_lock on;
      proxy_cache_valid 200 1d;
      add_header X-Cache-Status $upstream_cache_status;
    }}
  }}
}}
"""


def rss_kb(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def tree(pid):
    """pid and its children."""
    pids = [pid]
    try:
        out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
        pids += [int(p) for p in out.split()]
    except OSError:
        pass
    return pids


class Sampler(threading.Thread):
    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.peak, self.stop = pid, 0, False

    def run(self):
        while not self.stop:
            self.peak = max(self.peak, rss_kb(tree(self.pid)))
            time.sleep(0.05)


def wait_http(url, timeout=30):
    end = time.time() + timeout
    while time.time() < end:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except Exception:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not answer")


def fetch_all(url):
    subprocess.run(["curl", "-sf", "-o", "/dev/null", url], check=True)


def warm(port, path, header_check):
    url = f"http://127.0.0.1:{port}{path}"
    fetch_all(url)
    end = time.time() + 60
    while time.time() < end:
        out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-D", "-", url], capture_output=True, text=True).stdout.lower()
        if header_check in out:
            return
        time.sleep(0.2)
    raise SystemExit(f"{url} never became a hit")


def throughput(port, path, clients, size):
    url = f"http://127.0.0.1:{port}{path}"
    start = time.time()
    procs = [subprocess.Popen(["curl", "-sf", "-o", "/dev/null", url]) for _ in range(clients)]
    for p in procs:
        if p.wait() != 0:
            raise SystemExit(f"curl failed on {url}")
    elapsed = time.time() - start
    return clients * size / elapsed / 2**20


def small_hits(port, path, seconds):
    out = subprocess.run(["wrk", "-t2", "-c64", f"-d{seconds}s", f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        if line.startswith("Requests/sec:"):
            return float(line.split()[1])
    raise SystemExit(f"wrk output not understood:\n{out}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--outpost", default="./target/release/outpost")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    for tool in ("nginx", "curl", "wrk"):
        if not shutil.which(tool) and not os.path.exists(f"/usr/sbin/{tool}"):
            raise SystemExit(f"{tool} is needed: apt-get install -y nginx curl wrk")
    nginx_bin = shutil.which("nginx") or "/usr/sbin/nginx"
    size = args.size_mib * 2**20
    d = tempfile.mkdtemp(prefix="outpost-bench-")
    os.chmod(d, 0o755)
    # nginx workers run as nobody unless told otherwise; as root, keep root so
    # they can write the cache directory.
    user = "user root;" if os.geteuid() == 0 else ""
    procs = []
    try:
        os.makedirs(f"{d}/www")
        with open(f"{d}/www/big.bin", "wb") as f:
            block = os.urandom(2**20)
            for i in range(args.size_mib):
                f.write(block[i % 7:] + block[: i % 7])
        with open(f"{d}/www/small.bin", "wb") as f:
            f.write(os.urandom(4096))
        for name, conf, port in (("origin", ORIGIN_CONF, ORIGIN_PORT), ("nginx", NGINX_CONF, NGINX_PORT)):
            with open(f"{d}/{name}.conf", "w") as f:
                f.write(conf.format(d=d, port=port, origin=ORIGIN_PORT, user=user))
        origin = subprocess.Popen([nginx_bin, "-c", f"{d}/origin.conf", "-p", d], stderr=subprocess.DEVNULL)
        procs.append(origin)
        wait_http(f"http://127.0.0.1:{ORIGIN_PORT}/small.bin")
        nginx = subprocess.Popen([nginx_bin, "-c", f"{d}/nginx.conf", "-p", d], stderr=subprocess.DEVNULL)
        outpost = subprocess.Popen([args.outpost, "serve", "--listen", f"127.0.0.1:{OUTPOST_PORT}", "--cache-dir", f"{d}/outpost-cache",
                                    "--origin", f"http://127.0.0.1:{ORIGIN_PORT}"], stderr=open(f"{d}/outpost.log", "w"))
        procs += [nginx, outpost]
        caches = (("nginx", nginx, NGINX_PORT, "x-cache-status: hit"), ("outpost", outpost, OUTPOST_PORT, "x-cache: hit"))
        for name, proc, port, hit in caches:
            wait_http(f"http://127.0.0.1:{port}/small.bin")
            warm(port, "/big.bin", hit)
            warm(port, "/small.bin", hit)
        samples = {name: {} for name, *_ in caches}
        peaks = {}
        for rnd in range(args.rounds):
            # Alternate the order so drift in the machine's speed hits both.
            order = caches if rnd % 2 == 0 else caches[::-1]
            for name, proc, port, hit in order:
                sampler = Sampler(proc.pid)
                sampler.start()
                r = samples[name]
                r.setdefault("1 client, 1 GiB (MiB/s)", []).append(throughput(port, "/big.bin", 1, size))
                r.setdefault("16 clients, 1 GiB (MiB/s)", []).append(throughput(port, "/big.bin", 16, size))
                r.setdefault("4 KiB hits/s", []).append(small_hits(port, "/small.bin", args.seconds))
                sampler.stop = True
                sampler.join()
                peaks[name] = max(peaks.get(name, 0), sampler.peak / 1024)
        results = {name: {k: statistics.median(v) for k, v in r.items()} for name, r in samples.items()}
        for name in results:
            results[name]["peak RSS (MiB)"] = peaks[name]
        print(f"\nobject {args.size_mib} MiB, wrk {args.seconds}s x 64 connections, loopback, {os.cpu_count()} CPUs, median of {args.rounds} alternating rounds\n")
        print("| figure | nginx | outpost | outpost/nginx |")
        print("|---|---|---|---|")
        for key in results["nginx"]:
            a, b = results["nginx"][key], results["outpost"][key]
            print(f"| {key} | {a:.1f} | {b:.1f} | {b / a:.2f} |")
    finally:
        for p in procs:
            try:
                p.send_signal(signal.SIGTERM)
                p.wait(timeout=10)
            except Exception:
                p.kill()
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
