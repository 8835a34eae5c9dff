#!/usr/bin/env python3
"""Issue 14: a pre-positioned package is served from the site.

On wan-bench's network (20 Mbit/s, 40 ms RTT; namespaces from
`bench.py setup`), the edge runs in the branch namespace with a manifest
channel for one package of 64 MiB under the origin's /short/ folder, which
nginx serves with `Cache-Control: max-age=2`: 3 s after the sync the
origin's headers call the copy stale. Then 40 PCs (wan-bench's load
generator: every body SHA-256 checked) fetch it at once, and the same 40
fetch the same bytes under /obj/ (max-age=86400, warmed by one request):
a plain hit. The two alternate `--rounds` times each.

Reported, from the origin's access log and the WAN interface's counters:
  - WAN bytes and origin requests during the 40-PC phases of the
    pre-positioned package (target: 0 and 0);
  - LAN throughput of those phases against the plain hit's (target: within
    10 %), median over the rounds;
  - for contrast, the same with `revalidate = "origin"` (one round): what
    the origin sees then.

Prerequisite, from the project's root:
  cargo build --release -p outpost && python3 ../shared/wan-bench/bench.py setup
Then: python3 bench/prepos_served.py [--mib 64] [--clients 40] [--rounds 3] [--json out.json]
"""

import argparse
import hashlib
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

NS_BRANCH = "bh-branch"
ORIGIN = "10.199.1.1"
EDGE = "10.199.2.1"
DATA = "/tmp/bh-data"
WORK = "/tmp/bh-prepos-served"
ADMIN = "127.0.0.1:3180"


def log(msg):
    print("[prepos-served %s] %s" % (time.strftime("%H:%M:%S"), msg), flush=True)


def load_bench(path):
    spec = importlib.util.spec_from_file_location("wanbench", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def make_package(mib):
    """The package under /short/ (max-age=2), its manifest, and the same
    bytes under /obj/ (max-age=86400) for the plain hit."""
    for d in ("short", "obj"):
        os.makedirs(os.path.join(DATA, d), exist_ok=True)
    name = "prepos-served-%dm.bin" % mib
    pkg = os.path.join(DATA, "short", name)
    h = hashlib.sha256()
    with open(pkg, "wb") as f:
        for i in range(mib):
            block = hashlib.shake_256(b"prepos-served:%d" % i).digest(1 << 20)
            f.write(block)
            h.update(block)
    shutil.copyfile(pkg, os.path.join(DATA, "obj", name))
    with open(os.path.join(DATA, "short", "prepos-served.txt"), "w") as f:
        f.write(name + "\n")
    subprocess.run(["chmod", "-R", "a+rX", DATA], check=True)
    return "/short/" + name, "/obj/" + name, h.hexdigest()


class Edge:
    def __init__(self, binary, revalidate):
        self.binary = binary
        self.revalidate = revalidate
        self.proc = None

    def start(self):
        shutil.rmtree(WORK, ignore_errors=True)
        os.makedirs(WORK)
        self.cfg = os.path.join(WORK, "outpost.toml")
        with open(self.cfg, "w") as f:
            f.write("""[server]
listen = ["%s:3128"]
origin = "http://%s:80"
[cache]
dir = "%s/cache"
max_size = "4 GiB"
[admin]
listen = "%s"
[[channel]]
name = "pkgs"
source = "http://%s/short/prepos-served.txt"
revalidate = "%s"
""" % (EDGE, ORIGIN, WORK, ADMIN, ORIGIN, self.revalidate))
        logf = open(os.path.join(WORK, "edge.log"), "a")
        self.proc = subprocess.Popen(["ip", "netns", "exec", NS_BRANCH, self.binary, "serve", "-c", self.cfg],
                                     stdout=logf, stderr=logf)
        deadline = time.time() + 20
        while time.time() < deadline:
            if self.cli(["channels", "--json"], check=False).returncode == 0:
                return
            time.sleep(0.2)
        raise RuntimeError("edge did not start; see %s/edge.log" % WORK)

    def cli(self, args, check=True):
        return subprocess.run(["ip", "netns", "exec", NS_BRANCH, self.binary] + args
                              + ["--admin", ADMIN, "-c", self.cfg],
                              capture_output=True, text=True, check=check)

    def stop(self):
        if self.proc:
            self.proc.terminate()
            self.proc.wait(timeout=30)


def phase(bench, name, path, sha, n, deadline):
    """n clients GET path at once: WAN bytes, origin requests, throughput."""
    off = bench.origin_log_offset()
    a = bench.counters()
    res = bench.loadgen([{"id": i, "path": path, "expect": {"status": 200, "sha256": sha}}
                         for i in range(n)], deadline)
    b = bench.counters()
    time.sleep(0.3)  # nginx writes a line as its request ends
    origin = [r for r in bench.origin_log_since(off) if r["uri"] != "/bh-ping"]
    clients = res["clients"]
    done = [c for c in clients if c.get("t_done") is not None]
    span = max(c["t_done"] for c in done) - min(c["t_start"] for c in done) if done else None
    served = sum(c.get("body_bytes", 0) for c in done)
    d = bench.counter_delta(a, b)
    out = {"phase": name, "correct": sum(1 for c in clients if c.get("ok")), "clients": n,
           "wan_tx_bytes": d["wan_tx_bytes"], "origin_requests": len(origin),
           "origin_conditional": sum(1 for r in origin if r["if_none_match"] or r["if_modified_since"]),
           "origin_statuses": sorted(set(r.get("status") for r in origin)),
           "seconds": round(span, 3) if span else None,
           "throughput_MBps": round(served / (1 << 20) / span, 1) if span else None}
    log("%-7s %d/%d correct, %.2f s, %s MB/s, WAN %d B, origin requests %d (conditional %d)"
        % (name, out["correct"], n, span or 0, out["throughput_MBps"], out["wan_tx_bytes"],
           out["origin_requests"], out["origin_conditional"]))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.path.abspath("target/release/outpost"))
    ap.add_argument("--bench", default=os.path.abspath("../shared/wan-bench/bench.py"))
    ap.add_argument("--mib", type=int, default=64)
    ap.add_argument("--clients", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json")
    args = ap.parse_args()
    bench = load_bench(args.bench)
    if subprocess.run(["ip", "netns", "exec", NS_BRANCH, "true"]).returncode != 0:
        sys.exit("wan-bench namespaces missing: run python3 ../shared/wan-bench/bench.py setup")
    prepos, plain, sha = make_package(args.mib)
    deadline = 120.0
    results = {"mib": args.mib, "clients": args.clients, "rounds": args.rounds}

    edge = Edge(args.bin, "sync")
    edge.start()
    try:
        off = bench.origin_log_offset()
        a = bench.counters()
        sync = json.loads(edge.cli(["sync", "pkgs", "--json"]).stdout)
        b = bench.counters()
        results["sync"] = {"result": sync.get("result"), "wan_tx_bytes": bench.counter_delta(a, b)["wan_tx_bytes"],
                           "origin_requests": len(bench.origin_log_since(off))}
        log("sync: %s, WAN %d B" % (sync.get("result"), results["sync"]["wan_tx_bytes"]))
        warm = phase(bench, "warmup", plain, sha, 1, deadline)
        time.sleep(3.0)  # past the origin's max-age=2: stale by its headers
        rounds = []
        for _ in range(args.rounds):
            rounds.append(phase(bench, "prepos", prepos, sha, args.clients, deadline))
            rounds.append(phase(bench, "hit", plain, sha, args.clients, deadline))
        results["warmup"] = warm
        results["phases"] = rounds
    finally:
        edge.stop()

    pre = [p for p in results["phases"] if p["phase"] == "prepos"]
    hit = [p for p in results["phases"] if p["phase"] == "hit"]
    med = lambda ps: statistics.median(p["throughput_MBps"] for p in ps)
    results["summary"] = {
        "prepos_wan_tx_bytes": sum(p["wan_tx_bytes"] for p in pre),
        "prepos_origin_requests": sum(p["origin_requests"] for p in pre),
        "prepos_correct": "%d/%d" % (sum(p["correct"] for p in pre), sum(p["clients"] for p in pre)),
        "prepos_MBps_median": med(pre),
        "hit_MBps_median": med(hit),
        "prepos_vs_hit": round(med(pre) / med(hit), 3),
    }

    # For contrast: the origin's headers decide.
    edge = Edge(args.bin, "origin")
    edge.start()
    try:
        edge.cli(["sync", "pkgs", "--json"])
        time.sleep(3.0)
        results["origin_mode"] = phase(bench, "origin", prepos, sha, args.clients, deadline)
    finally:
        edge.stop()

    log("summary: %s" % json.dumps(results["summary"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
