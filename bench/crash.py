#!/usr/bin/env python3
"""kill -9 during a fill on a shaped WAN: what survives, what is resent.

Runs the Outpost edge in wan-bench's branch namespace (reverse mode on the
origin, as the wan-bench adapter does) and measures, from the origin's own
access log and the WAN link's counters:

  1. object A (default 64 MiB) is fetched once and becomes a hit;
  2. N clients (default 5) start object B; when the first has 40 % of it,
     the edge gets SIGKILL. Every byte each client received before the kill
     must be the origin's byte at that offset;
  3. the edge restarts on the same cache directory: N clients fetch A (it
     must cost no origin request and no WAN body bytes), then N clients
     fetch B (every body correct; origin body bytes for B over both lives
     of the edge, over B's size, is the price of the crash).

Prerequisite, from the project's root:
  cargo build --release && python3 ../shared/wan-bench/bench.py setup
Then: python3 bench/crash.py [--mib 64] [--clients 5] [--json out.json]
"""

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

# wan-bench's namespaces, addresses and the origin's log, as prepos.py reads them.
from prepos import (EDGE, NS_BRANCH, NS_CLIENTS, OBJ_DIR, ORIGIN, ORIGIN_LOG,
                    log_offset, nsexec, origin_entries, wan_tx_bytes)

WORK = "/tmp/bh-crash"


def log(msg):
    print("[crash %s] %s" % (time.strftime("%H:%M:%S"), msg), flush=True)


def entries_for(since, uri, enough=bool, timeout=10):
    """The origin's log lines for `uri` after offset `since`, once `enough`
    of them are there (nginx writes a line when its request ends)."""
    deadline = time.time() + timeout
    while True:
        entries = [e for e in origin_entries(since) if e[1] == uri]
        if enough(entries) or time.time() > deadline:
            return entries
        time.sleep(0.2)


def make_object(name, mib, seed):
    os.makedirs(OBJ_DIR, exist_ok=True)
    path = os.path.join(OBJ_DIR, name)
    rng = random.Random(seed)
    block = rng.randbytes(1 << 20)
    with open(path, "wb") as f:
        for i in range(mib):
            f.write(block[i % 251:] + block[:i % 251])
    with open(path, "rb") as f:
        return f.read()


class Edge:
    def __init__(self, binary):
        self.binary = binary
        self.proc = None

    def start(self):
        os.makedirs(WORK, exist_ok=True)
        logf = open(os.path.join(WORK, "edge.log"), "a")
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", NS_BRANCH, self.binary, "serve", "--listen", "%s:3128" % EDGE,
             "--cache-dir", os.path.join(WORK, "cache"), "--origin", "http://%s:80" % ORIGIN],
            stdout=logf, stderr=logf)
        deadline = time.time() + 20
        while time.time() < deadline:
            r = nsexec(NS_CLIENTS, ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                                    "http://%s:3128/bh-ping" % EDGE], capture_output=True, text=True)
            if r.stdout.strip() == "200":
                return
            time.sleep(0.2)
        raise RuntimeError("edge did not start; see %s/edge.log" % WORK)

    def kill9(self):
        # `ip netns exec` execs the binary, so the pid is the edge's.
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


def start_clients(name, n, tag):
    """n curl processes in the clients namespace, each writing its body to a file."""
    procs = []
    for i in range(n):
        out = os.path.join(WORK, "%s-%d.body" % (tag, i))
        if os.path.exists(out):
            os.remove(out)
        procs.append((out, subprocess.Popen(
            ["ip", "netns", "exec", NS_CLIENTS, "curl", "-s", "-o", out, "-D",
             out + ".head", "http://%s:3128/obj/%s" % (EDGE, name)])))
    return procs


def wait_clients(procs, timeout):
    deadline = time.time() + timeout
    for _, p in procs:
        p.wait(timeout=max(1, deadline - time.time()))


def received(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""


def x_cache(path):
    try:
        with open(path + ".head") as f:
            for line in f:
                if line.lower().startswith("x-cache:"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=64)
    ap.add_argument("--clients", type=int, default=5)
    ap.add_argument("--kill-at", type=float, default=0.4, help="fraction of B the first client has at the kill")
    ap.add_argument("--binary", default="./target/release/outpost")
    ap.add_argument("--json")
    args = ap.parse_args()
    if not os.path.exists(ORIGIN_LOG):
        sys.exit("wan-bench is not set up: python3 ../shared/wan-bench/bench.py setup")
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    size = args.mib << 20
    a = make_object("crash-a.bin", args.mib, 11)
    b = make_object("crash-b.bin", args.mib, 12)
    sha_b = hashlib.sha256(b).hexdigest()
    edge = Edge(args.binary)
    res = {"object_bytes": size, "clients": args.clients}
    try:
        edge.start()
        since = log_offset()
        log("phase 1: fill A (%d MiB) once" % args.mib)
        wait_clients(start_clients("crash-a.bin", 1, "a1"), 600)
        assert received(os.path.join(WORK, "a1-0.body")) == a, "A is wrong on its first fetch"
        deadline = time.time() + 30
        while True:
            wait_clients(start_clients("crash-a.bin", 1, "a-check"), 600)
            if x_cache(os.path.join(WORK, "a-check-0.body")) == "HIT":
                break
            if time.time() > deadline:
                raise RuntimeError("A never became a hit")
            time.sleep(0.2)

        log("phase 2: %d clients on B, SIGKILL at %.0f %%" % (args.clients, args.kill_at * 100))
        b_since = log_offset()
        procs = start_clients("crash-b.bin", args.clients, "b1")
        deadline = time.time() + 600
        while max(os.path.getsize(o) if os.path.exists(o) else 0 for o, _ in procs) < args.kill_at * size:
            if time.time() > deadline:
                raise RuntimeError("B never reached the kill point")
            time.sleep(0.05)
        edge.kill9()
        wait_clients(procs, 60)
        got = [received(o) for o, _ in procs]
        res["before_kill_bytes"] = [len(g) for g in got]
        res["before_kill_prefix_correct"] = sum(1 for g in got if g == b[:len(g)])
        # The origin logs B's first fetch once the edge's connection is gone.
        first_life = entries_for(b_since, "/obj/crash-b.bin")

        log("phase 3: restart; %d clients on A, then on B" % args.clients)
        edge.start()
        since = log_offset()
        tx0 = wan_tx_bytes()
        procs = start_clients("crash-a.bin", args.clients, "a2")
        wait_clients(procs, 600)
        res["a_after_restart_correct"] = sum(1 for o, _ in procs if received(o) == a)
        res["a_after_restart_hits"] = sum(1 for o, _ in procs if x_cache(o) == "HIT")
        time.sleep(1)  # let any origin request show in its log
        res["a_after_restart_origin_requests"] = len(
            [e for e in origin_entries(since) if e[1] == "/obj/crash-a.bin"])
        res["a_after_restart_wan_bytes"] = wan_tx_bytes() - tx0

        t0 = time.time()
        procs = start_clients("crash-b.bin", args.clients, "b2")
        wait_clients(procs, 600)
        res["b_after_restart_s"] = round(time.time() - t0, 2)
        res["b_after_restart_correct"] = sum(
            1 for o, _ in procs if hashlib.sha256(received(o)).hexdigest() == sha_b)
        second_life = entries_for(since, "/obj/crash-b.bin")
        res["b_origin_requests"] = [
            {"life": life, "status": e[2], "body_bytes": e[3], "range": e[4]}
            for life, entries in (("before kill", first_life), ("after restart", second_life))
            for e in entries]
        total_b = sum(e[3] for e in first_life + second_life)
        res["b_origin_body_bytes_over_size"] = round(total_b / size, 4)
    finally:
        edge.stop()

    log("results")
    rows = [
        ("bytes each client had at the kill", ", ".join("%.1f MiB" % (n / 2**20) for n in res["before_kill_bytes"])),
        ("clients whose bytes before the kill are all the origin's", "%d/%d" % (res["before_kill_prefix_correct"], args.clients)),
        ("A after restart: correct / HIT", "%d/%d, %d/%d" % (res["a_after_restart_correct"], args.clients, res["a_after_restart_hits"], args.clients)),
        ("A after restart: origin requests, WAN bytes", "%d, %d" % (res["a_after_restart_origin_requests"], res["a_after_restart_wan_bytes"])),
        ("B after restart: correct, time", "%d/%d, %.1f s" % (res["b_after_restart_correct"], args.clients, res["b_after_restart_s"])),
        ("B origin requests", "; ".join("%s: %d, %d bytes%s" % (r["life"], r["status"], r["body_bytes"], (", Range " + r["range"]) if r["range"] not in ("", "-") else "") for r in res["b_origin_requests"])),
        ("B origin body bytes over both lives / size", "%.4f" % res["b_origin_body_bytes_over_size"]),
    ]
    print("| measure | value |\n|---|---|")
    for k, v in rows:
        print("| %s | %s |" % (k, v))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
