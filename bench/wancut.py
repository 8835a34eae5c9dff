#!/usr/bin/env python3
"""A WAN cut during a fill, on wan-bench's shaped link: do waiting clients
see a stall and then every byte, and what does the fill resend?

The edge runs in wan-bench's branch namespace (reverse mode on the origin).
N clients (default 5) start a 64 MiB object; when the first has 30 % of it,
the WAN link goes down (`ip link set` on the router's branch side: packets
vanish, nothing is refused) for --cut-seconds, then comes back. Reported:
each client's body checked against the origin's, when the last finished,
and the origin's requests and body bytes for the object (from its log).

Prerequisite, from the project's root:
  cargo build --release && python3 ../shared/wan-bench/bench.py setup
Then: python3 bench/wancut.py [--cut-seconds 20] [--json out.json]
"""

import argparse
import hashlib
import json
import os
import shutil
import sys
import time

from crash import (ORIGIN_LOG, WORK, Edge, entries_for, log, log_offset, make_object, nsexec,
                   received, start_clients, wait_clients)

NS_WAN = "bh-wan"
ROUTER_TO_BRANCH = "bh-w-b"


def set_wan(up):
    nsexec(NS_WAN, ["ip", "link", "set", ROUTER_TO_BRANCH, "up" if up else "down"], check=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=64)
    ap.add_argument("--clients", type=int, default=5)
    ap.add_argument("--cut-at", type=float, default=0.3)
    ap.add_argument("--cut-seconds", type=float, default=20)
    ap.add_argument("--binary", default="./target/release/outpost")
    ap.add_argument("--json")
    args = ap.parse_args()
    if not os.path.exists(ORIGIN_LOG):
        sys.exit("wan-bench is not set up: python3 ../shared/wan-bench/bench.py setup")
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    size = args.mib << 20
    name = "cut-%d.bin" % int(time.time())
    body = make_object(name, args.mib, 13)
    sha = hashlib.sha256(body).hexdigest()
    edge = Edge(args.binary)
    res = {"object_bytes": size, "clients": args.clients, "cut_seconds": args.cut_seconds}
    try:
        edge.start()
        since = log_offset()
        t0 = time.time()
        procs = start_clients(name, args.clients, "cut")
        while max(os.path.getsize(o) if os.path.exists(o) else 0 for o, _ in procs) < args.cut_at * size:
            if time.time() - t0 > 600:
                raise RuntimeError("never reached the cut point")
            time.sleep(0.05)
        log("WAN down for %.0f s" % args.cut_seconds)
        res["cut_at_s"] = round(time.time() - t0, 2)
        set_wan(False)
        try:
            time.sleep(args.cut_seconds)
        finally:
            set_wan(True)
        log("WAN up; waiting for the clients")
        wait_clients(procs, 900)
        res["last_client_done_s"] = round(time.time() - t0, 2)
        res["correct"] = sum(1 for o, _ in procs if hashlib.sha256(received(o)).hexdigest() == sha)
        res["curl_exit_codes"] = [p.returncode for _, p in procs]
        entries = entries_for(since, "/obj/" + name, lambda es: sum(e[3] for e in es) >= size)
        res["origin_requests"] = [{"status": e[2], "body_bytes": e[3], "range": e[4]} for e in entries]
        res["origin_body_bytes_over_size"] = round(sum(e[3] for e in entries) / size, 4)
    finally:
        set_wan(True)
        edge.stop()
        try:
            os.remove(os.path.join("/tmp/bh-data/obj", name))
        except OSError:
            pass

    print("| measure | value |\n|---|---|")
    print("| WAN cut | %.0f s, from %.1f s |" % (args.cut_seconds, res["cut_at_s"]))
    print("| clients correct | %d/%d (curl exit codes %s) |" % (res["correct"], args.clients, res["curl_exit_codes"]))
    print("| last client done | %.1f s (ideal without the cut %.1f s) |" % (res["last_client_done_s"], size * 8 / 20e6))
    print("| origin requests | %s |" % "; ".join("%d, %d bytes%s" % (r["status"], r["body_bytes"], (", Range " + r["range"]) if r["range"] not in ("", "-") else "") for r in res["origin_requests"]))
    print("| origin body bytes / size | %.4f |" % res["origin_body_bytes_over_size"])
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
