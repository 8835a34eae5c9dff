#!/usr/bin/env python3
"""Pre-positioning on a shaped WAN: byte ratios, crash resume, rate limits.

Runs the Outpost edge in wan-bench's branch namespace against its origin's
/lib/ folder (nginx autoindex, no cache headers) and reports what issue 5
asks for, from the origin's own access log and the WAN link's counters:

  1. cold sync of a library (default 200 files, 256 MiB): origin body bytes
     / library bytes;
  2. a second sync with nothing changed: body bytes / library bytes;
  3. one file changed and one deleted: refetched and unpinned?
  4. SIGKILL mid-sync, restart: origin body bytes over both lives / library;
  5. a manifest channel (sha256sum format) with one wrong digest: is the
     file quarantined, listed, and refused to a PC?
  6. the channel limited to 2 Mbit/s: measured WAN rate with no PC traffic,
     then a PC's cold download through the edge against the remaining
     capacity.

Prerequisite, from the project's root:
  cargo build --release && python3 ../shared/wan-bench/bench.py setup
Then: python3 bench/prepos.py [--files 200] [--mib 256] [--json out.json]
"""

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

NS_BRANCH, NS_ORIGIN, NS_CLIENTS = "bh-branch", "bh-origin", "bh-clients"
ORIGIN = "10.199.1.1"
EDGE = "10.199.2.1"
LIB_DIR = "/tmp/bh-data/lib"
OBJ_DIR = "/tmp/bh-data/obj"
ORIGIN_LOG = "/tmp/bh-origin/access.log"
WORK = "/tmp/bh-prepos"
ADMIN = "127.0.0.1:3180"
WAN_DEV = "bh-o-wan"  # origin side of the WAN: its tx is every byte sent to the branch
LINK_MBIT = 20.0


def log(msg):
    print("[prepos %s] %s" % (time.strftime("%H:%M:%S"), msg), flush=True)


def nsexec(ns, cmd, **kw):
    return subprocess.run(["ip", "netns", "exec", ns] + cmd, **kw)


def wan_tx_bytes():
    out = nsexec(NS_ORIGIN, ["cat", "/sys/class/net/%s/statistics/tx_bytes" % WAN_DEV],
                 capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


def log_offset():
    return os.path.getsize(ORIGIN_LOG) if os.path.exists(ORIGIN_LOG) else 0


def origin_entries(since):
    """Origin log lines after byte offset `since`: (method, uri, status, body_bytes, range)."""
    time.sleep(0.3)  # nginx writes the line as the request ends
    out = []
    with open(ORIGIN_LOG, "rb") as f:
        f.seek(since)
        for raw in f.read().decode(errors="replace").splitlines():
            p = raw.split("\t")
            if len(p) < 7:
                continue
            out.append((p[1], p[2], int(p[3]), int(p[5]), p[6]))
    return out


def lib_body_bytes(entries):
    """Body bytes of library files (not listing pages)."""
    return sum(b for (_, uri, _, b, _) in entries if uri.startswith("/lib/") and not uri.endswith("/"))


def make_library(files, mib, seed=1):
    shutil.rmtree(LIB_DIR, ignore_errors=True)
    rng = random.Random(seed)
    total = mib << 20
    weights = [rng.uniform(0.2, 3.0) for _ in range(files)]
    scale = total / sum(weights)
    sizes = [max(1, int(w * scale)) for w in weights]
    sizes[-1] += total - sum(sizes)
    paths = []
    for i, size in enumerate(sizes):
        folder = os.path.join(LIB_DIR, "dept%02d" % (i % 10), "apps" if i % 3 else "patches")
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, "pkg%03d.msi" % i)
        with open(path, "wb") as f:
            f.write(rng.randbytes(size))
        paths.append(path)
    subprocess.run(["chmod", "-R", "a+rX", "/tmp/bh-data"], check=True)
    return paths, total


class Edge:
    def __init__(self, binary, rate):
        self.binary = binary
        self.rate = rate
        self.proc = None

    def config(self):
        os.makedirs(WORK, exist_ok=True)
        path = os.path.join(WORK, "outpost.toml")
        with open(path, "w") as f:
            f.write("""[server]
listen = ["%s:3128"]
origin = "http://%s:80"
[cache]
dir = "%s/cache"
max_size = "4 GiB"
[admin]
listen = "%s"
[[channel]]
name = "lib"
source = "http://%s/lib/"
rate = "%s"
concurrency = 2
[[channel]]
name = "sums"
source = "http://%s/lib/SHA256SUMS"
""" % (EDGE, ORIGIN, WORK, ADMIN, ORIGIN, self.rate, ORIGIN))
        return path

    def start(self):
        cfg = self.config()
        logf = open(os.path.join(WORK, "edge.log"), "a")
        self.proc = subprocess.Popen(["ip", "netns", "exec", NS_BRANCH, self.binary, "serve", "-c", cfg],
                                     stdout=logf, stderr=logf)
        deadline = time.time() + 20
        while time.time() < deadline:
            if self.cli(["channels", "--json"], check=False).returncode == 0:
                return
            time.sleep(0.2)
        raise RuntimeError("edge did not start; see %s/edge.log" % WORK)

    def cli(self, args, check=True):
        # The CLI finds the admin token through the config's cache dir.
        return nsexec(NS_BRANCH, [self.binary] + args + ["--admin", ADMIN, "-c", os.path.join(WORK, "outpost.toml")],
                      capture_output=True, text=True, check=check)

    def token(self):
        with open(os.path.join(WORK, "cache", "admin.token")) as f:
            return f.read().strip()

    def channel(self, name="lib"):
        return [c for c in json.loads(self.cli(["channels", "--json"]).stdout) if c["name"] == name][0]

    def sync(self):
        r = self.cli(["sync", "lib", "--json"], check=False)
        if r.returncode not in (0, 1):
            raise RuntimeError("sync failed: %s %s" % (r.stdout, r.stderr))
        return json.loads(r.stdout)

    def kill(self, sig):
        # `ip netns exec` execs the binary, so the pid is the edge's.
        os.kill(self.proc.pid, sig)
        self.proc.wait(timeout=30)

    def wipe(self):
        shutil.rmtree(os.path.join(WORK, "cache"), ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.path.abspath("target/release/outpost"))
    ap.add_argument("--files", type=int, default=200)
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--rate", default="2 Mbit/s", help="channel limit for phase 5")
    ap.add_argument("--rate-window", type=float, default=60.0, help="seconds measured in phase 5")
    ap.add_argument("--pc-mib", type=int, default=64, help="size of the PC's cold download")
    ap.add_argument("--json")
    args = ap.parse_args()
    if nsexec(NS_BRANCH, ["true"], check=False).returncode != 0:
        sys.exit("wan-bench namespaces missing: run python3 ../shared/wan-bench/bench.py setup")
    shutil.rmtree(WORK, ignore_errors=True)
    results = {"files": args.files, "library_mib": args.mib}
    log("making a library of %d files, %d MiB" % (args.files, args.mib))
    paths, library = make_library(args.files, args.mib)

    # 1-3: cold, unchanged, changed + deleted.
    edge = Edge(args.bin, "unlimited")
    edge.start()
    try:
        off = log_offset()
        t0 = time.time()
        s = edge.sync()
        cold = lib_body_bytes(origin_entries(off))
        results["cold"] = {"seconds": round(time.time() - t0, 1), "summary": s,
                           "body_ratio": round(cold / library, 4)}
        log("cold sync: %.1f s, origin body bytes %.4fx the library, result %s"
            % (time.time() - t0, cold / library, s.get("result")))

        off = log_offset()
        s = edge.sync()
        entries = origin_entries(off)
        again = lib_body_bytes(entries)
        conditional = sum(1 for e in entries if not e[1].endswith("/") and e[2] == 304)
        results["unchanged"] = {"summary": s, "body_ratio": round(again / library, 5),
                                "not_modified_responses": conditional}
        log("unchanged resync: body bytes %.5fx the library (%d x 304)" % (again / library, conditional))

        changed, deleted = paths[5], paths[7]
        with open(changed, "wb") as f:
            f.write(random.Random(99).randbytes(os.path.getsize(changed)))
        os.utime(changed, (time.time() + 5, time.time() + 5))
        os.remove(deleted)
        off = log_offset()
        s = edge.sync()
        entries = origin_entries(off)
        fetched = [e[1] for e in entries if e[0] == "GET" and e[2] == 200 and not e[1].endswith("/")]
        deleted_url = "http://%s%s" % (ORIGIN, deleted[len("/tmp/bh-data"):])
        listing = json.loads(edge.cli(["cache", "ls", "--json"]).stdout)["objects"]
        deleted_entry = [o for o in listing if o["url"] == deleted_url]
        results["changed"] = {"summary": s, "refetched": fetched,
                              "deleted_still_pinned": bool(deleted_entry and deleted_entry[0]["pinned"])}
        log("changed + deleted: refetched %s; deleted file pinned: %s; summary fetched=%s removed=%s"
            % (fetched, results["changed"]["deleted_still_pinned"], s.get("fetched"), s.get("removed")))
        # 5: a manifest with one wrong digest.
        import hashlib
        sums = []
        for i, p in enumerate(paths[10:13]):
            with open(p, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
            if i == 1:
                digest = "0" * 64
            sums.append("%s  %s" % (digest, os.path.relpath(p, LIB_DIR)))
        with open(os.path.join(LIB_DIR, "SHA256SUMS"), "w") as f:
            f.write("\n".join(sums) + "\n")
        os.chmod(os.path.join(LIB_DIR, "SHA256SUMS"), 0o644)
        bad_path = paths[11][len("/tmp/bh-data"):]
        edge.cli(["purge", "http://%s%s" % (ORIGIN, bad_path)])
        r = edge.cli(["sync", "sums", "--json"], check=False)
        sums_ch = [c for c in json.loads(edge.cli(["channels", "--json"]).stdout) if c["name"] == "sums"][0]
        pc = nsexec(NS_CLIENTS, ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                                 "-H", "Host: origin.bh.test", "http://%s:3128%s" % (EDGE, bad_path)],
                    capture_output=True, text=True)
        results["digest"] = {"sync_exit": r.returncode, "quarantined": [q["url"] for q in sums_ch["quarantined"]],
                             "pc_status": pc.stdout.strip()}
        log("manifest with a wrong digest: sync exit %d, quarantined %s, PC gets HTTP %s"
            % (r.returncode, results["digest"]["quarantined"], pc.stdout.strip()))
        os.remove(os.path.join(LIB_DIR, "SHA256SUMS"))
    finally:
        edge.kill(signal.SIGTERM)

    # 4: SIGKILL mid-sync.
    paths, library = make_library(args.files, args.mib, seed=2)
    edge.wipe()
    edge.start()
    off = log_offset()
    t0 = time.time()
    edge.cli(["channels"])
    nsexec(NS_BRANCH, ["curl", "-s", "-X", "POST", "-H", "Authorization: Bearer " + edge.token(),
                       "http://%s/channels/sync?name=lib" % ADMIN],
           capture_output=True, check=True)
    while True:
        run = edge.channel().get("running") or {}
        if run.get("bytes_done", 0) >= library * 0.4:
            break
        time.sleep(0.5)
    edge.kill(signal.SIGKILL)
    log("SIGKILL at %.0f %% of the library, %.1f s in" % (100.0 * run["bytes_done"] / library, time.time() - t0))
    edge.start()
    while True:
        last = edge.channel().get("last_run") or {}
        if last.get("result") in ("ok", "errors", "failed") and not edge.channel().get("running"):
            break
        time.sleep(1)
    total = lib_body_bytes(origin_entries(off))
    results["kill"] = {"seconds": round(time.time() - t0, 1), "summary": last,
                       "body_ratio": round(total / library, 4)}
    log("after SIGKILL and restart: result %s, origin body bytes %.4fx the library"
        % (last.get("result"), total / library))
    edge.kill(signal.SIGTERM)

    # 6: the channel at 2 Mbit/s; alone, then beside a PC's cold download.
    make_library(args.files, args.mib, seed=3)
    edge.wipe()
    edge.rate = args.rate
    edge.start()
    nsexec(NS_BRANCH, ["curl", "-s", "-X", "POST", "-H", "Authorization: Bearer " + edge.token(),
                       "http://%s/channels/sync?name=lib" % ADMIN],
           capture_output=True, check=True)
    time.sleep(5)
    b0, t0 = wan_tx_bytes(), time.time()
    time.sleep(args.rate_window)
    b1, t1 = wan_tx_bytes(), time.time()
    wire = (b1 - b0) * 8 / (t1 - t0) / 1e6
    # TCP/IP over Ethernet: 1448 payload bytes per 1514-byte frame.
    payload = wire * 1448 / 1514
    limit = float(args.rate.split()[0])
    results["rate_alone"] = {"wire_mbit": round(wire, 3), "payload_mbit": round(payload, 3),
                             "limit_mbit": limit, "payload_error": round(payload / limit - 1, 4)}
    log("channel alone: %.3f Mbit/s on the wire, %.3f Mbit/s payload (limit %s, %+.1f %%)"
        % (wire, payload, args.rate, 100 * (payload / limit - 1)))
    os.makedirs(OBJ_DIR, exist_ok=True)
    pc_path = os.path.join(OBJ_DIR, "prepos-pc.bin")
    with open(pc_path, "wb") as f:
        f.write(random.Random(5).randbytes(args.pc_mib << 20))
    os.chmod(pc_path, 0o644)
    t0 = time.time()
    r = nsexec(NS_CLIENTS, ["curl", "-s", "-o", "/dev/null", "-w", "%{size_download} %{time_total}",
                            "-H", "Host: origin.bh.test", "http://%s:3128/obj/prepos-pc.bin" % EDGE],
               capture_output=True, text=True, check=True)
    size, secs = r.stdout.split()
    pc = int(size) * 8 / float(secs) / 1e6
    remaining = LINK_MBIT - limit
    results["pc_beside_sync"] = {"pc_mbit": round(pc, 3), "remaining_mbit": remaining,
                                 "share": round(pc / remaining, 4), "bytes": int(size)}
    log("PC cold download beside the sync: %.2f Mbit/s = %.1f %% of the remaining %.0f Mbit/s"
        % (pc, 100 * pc / remaining, remaining))
    # The same download with no sync running, for scale.
    edge.kill(signal.SIGTERM)
    edge.wipe()
    edge.rate = "unlimited"
    results_edge = Edge(args.bin, "unlimited")
    results_edge.start()
    r = nsexec(NS_CLIENTS, ["curl", "-s", "-o", "/dev/null", "-w", "%{size_download} %{time_total}",
                            "-H", "Host: origin.bh.test", "http://%s:3128/obj/prepos-pc.bin" % EDGE],
               capture_output=True, text=True, check=True)
    size, secs = r.stdout.split()
    alone = int(size) * 8 / float(secs) / 1e6
    results["pc_alone_mbit"] = round(alone, 3)
    log("the same PC download with no sync: %.2f Mbit/s" % alone)
    results_edge.kill(signal.SIGTERM)
    os.remove(pc_path)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    print(json.dumps({k: v for k, v in results.items() if k not in ("files", "library_mib")}, indent=1))


if __name__ == "__main__":
    main()
