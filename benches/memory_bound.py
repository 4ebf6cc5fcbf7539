#!/usr/bin/env python3
"""Peak RSS of the release binary in the two memory scenarios of
RELIABILITY.md ("Memory under large uploads and slow readers"):

  uploads  100 concurrent 32 MiB uploads with a valid API key
  readers  10 clients reading distinct 115 MB WAVs (600 s clips converted at
           rate=48000&channels=2) at 1 KB/s

Each scenario starts `opusgate serve` with its default settings (only the
port, the cache directory and, for uploads, one API key are set), samples
VmRSS from /proc every 50 ms, and reports the baseline, the peak (VmHWM),
the server's `memory` stats and the bound
    cache.memory_bytes + upstream.cache_memory_bytes
    + limits.max_inflight_upload_bytes + limits.max_inflight_answer_bytes
    + 100 MB.
`--env NAME=VALUE` adds a setting (e.g. a huge budget, to see what the
scenario costs without it). Python 3 standard library only; Linux (/proc).

    cargo build --release
    python3 benches/memory_bound.py uploads
    python3 benches/memory_bound.py readers --hold-seconds 60
"""

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

MIB = 1024 * 1024
# The defaults this bound is computed from (config.toml).
DEFAULTS = {
    "cache.memory_bytes": 268435456,
    "upstream.cache_memory_bytes": 33554432,
    "limits.max_inflight_upload_bytes": 268435456,
    "limits.max_inflight_answer_bytes": 268435456,
}
BOUND = sum(DEFAULTS.values()) + 100_000_000
API_KEY = "memory-bench-key"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


class Server:
    """`opusgate serve` on a free port, with its RSS sampled."""

    def __init__(self, binary, cache_dir, env, log_path):
        self.port = free_port()
        full_env = dict(os.environ, RUST_LOG="warn", **env)
        self.log = open(log_path, "ab")
        self.proc = subprocess.Popen(
            [binary, "serve", "--host", "127.0.0.1", "--port", str(self.port),
             "--cache-dir", cache_dir],
            env=full_env, stdout=self.log, stderr=self.log)
        deadline = time.time() + 60
        while True:
            try:
                if self.get("/readyz")[0] == 200:
                    break
            except OSError:
                pass
            if time.time() > deadline or self.proc.poll() is not None:
                raise SystemExit(f"the server did not start; see {log_path}")
            time.sleep(0.1)
        self.peak_sampled_kib = 0
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def _sample(self):
        while not self._stop.is_set():
            try:
                rss = proc_kib(self.proc.pid, "VmRSS")
            except OSError:
                return
            self.peak_sampled_kib = max(self.peak_sampled_kib, rss)
            time.sleep(0.05)

    def rss_kib(self):
        return proc_kib(self.proc.pid, "VmRSS")

    def hwm_kib(self):
        return proc_kib(self.proc.pid, "VmHWM")

    def get(self, path, headers=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        conn.request("GET", path, headers=headers or {})
        r = conn.getresponse()
        body = r.read()
        conn.close()
        return r.status, body

    def stats(self, headers=None):
        status, body = self.get("/api/v1/stats", headers)
        return json.loads(body) if status == 200 else {}

    def stop(self):
        self._stop.set()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def report(name, server, baseline_kib, extra, headers=None):
    stats = server.stats(headers)
    hwm = server.hwm_kib()
    result = {
        "scenario": name,
        "baseline_rss_mb": round(baseline_kib * 1024 / 1e6, 1),
        "peak_rss_mb": round(hwm * 1024 / 1e6, 1),
        "peak_rss_sampled_mb": round(server.peak_sampled_kib * 1024 / 1e6, 1),
        "bound_mb": round(BOUND / 1e6, 1),
        "within_bound": hwm * 1024 <= BOUND,
        "memory_stats": stats.get("memory"),
        **extra,
    }
    print(json.dumps(result, indent=2))
    return result


def uploads(args, env):
    """100 concurrent uploads of 32 MiB each, with a valid key, at full speed."""
    work = tempfile.mkdtemp(prefix="opusgate-mem-")
    env = dict(env, OPUSGATE_AUTH__API_KEYS=API_KEY)
    server = Server(args.binary, os.path.join(work, "data"), env,
                    os.path.join(work, "server.log"))
    key_header = {"X-API-Key": API_KEY}
    try:
        time.sleep(1)
        baseline = server.rss_kib()
        body = os.urandom(32 * MIB)
        statuses = {}
        lock = threading.Lock()

        def one():
            status = "no answer"
            try:
                s = socket.create_connection(("127.0.0.1", server.port), timeout=120)
                head = (f"POST /api/v1/convert HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                        f"X-API-Key: {API_KEY}\r\nContent-Type: audio/ogg\r\n"
                        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
                s.sendall(head.encode())
                try:
                    s.sendall(body)
                except OSError:
                    pass  # refused early: the answer is already there
                got = b""
                while b"\r\n" not in got:
                    piece = s.recv(4096)
                    if not piece:
                        break
                    got += piece
                if got.startswith(b"HTTP/1.1 "):
                    status = got.split(b" ")[1].decode()
                s.close()
            except OSError as e:
                status = type(e).__name__
            with lock:
                statuses[status] = statuses.get(status, 0) + 1

        started = time.time()
        threads = [threading.Thread(target=one) for _ in range(args.uploads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        took = time.time() - started
        time.sleep(0.5)
        return report("uploads", server, baseline,
                      {"uploads": args.uploads, "upload_bytes": len(body),
                       "statuses": statuses, "seconds": round(took, 1)}, key_header)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


def post_file(port, path, file_path):
    """POSTs a file, reads the answer to its end: (status, ETag, body bytes)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    with open(file_path, "rb") as f:
        data = f.read()
    conn.request("POST", path, body=data, headers={"Content-Type": "audio/ogg"})
    r = conn.getresponse()
    n = 0
    while True:
        piece = r.read(1 << 20)
        if not piece:
            break
        n += len(piece)
    conn.close()
    return r.status, (r.getheader("ETag") or "").strip('"'), n


def readers(args, env):
    """10 slow readers (1 KB/s) of distinct 115 MB WAVs, on a fresh server."""
    work = args.workdir or tempfile.mkdtemp(prefix="opusgate-mem-")
    os.makedirs(work, exist_ok=True)
    data = os.path.join(work, "data")
    keys_path = os.path.join(work, "keys.json")
    if os.path.exists(keys_path):
        keys = json.load(open(keys_path))
    else:
        # Clips from the project's sample encoder, stored by a first server.
        clips = []
        for i in range(args.readers):
            clip = os.path.join(work, f"clip{i}.opus")
            subprocess.run([args.binary, "sample", "--seconds", str(args.clip_seconds),
                            "--rate", "48000", "--channels", "2", "--bitrate", "64000",
                            "--seed", str(100 + i), "-o", clip], check=True,
                           stdout=subprocess.DEVNULL)
            clips.append(clip)
        server = Server(args.binary, data, env, os.path.join(work, "store.log"))
        keys = []
        try:
            for clip in clips:
                status, key, n = post_file(server.port,
                                           "/api/v1/convert?rate=48000&channels=2", clip)
                if status != 200:
                    raise SystemExit(f"storing {clip}: {status}")
                keys.append(key)
                print(f"stored {clip}: {n} bytes of WAV, key {key[:12]}", file=sys.stderr)
        finally:
            server.stop()
        json.dump(keys, open(keys_path, "w"))
    server = Server(args.binary, data, env, os.path.join(work, "server.log"))
    try:
        time.sleep(1)
        baseline = server.rss_kib()
        stop = threading.Event()
        got = [0] * len(keys)

        def read_slowly(i, key):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect(("127.0.0.1", server.port))
            s.sendall(f"GET /api/v1/audio/{key} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      f"Connection: close\r\n\r\n".encode())
            while not stop.is_set():
                piece = s.recv(1024)
                if not piece:
                    break
                got[i] += len(piece)
                stop.wait(1.0)
            s.close()

        threads = [threading.Thread(target=read_slowly, args=(i, k)) for i, k in enumerate(keys)]
        for t in threads:
            t.start()
        time.sleep(args.hold_seconds)
        during = server.stats()
        rss_during = server.rss_kib()
        stop.set()
        for t in threads:
            t.join()
        return report("readers", server, baseline,
                      {"readers": len(keys), "hold_seconds": args.hold_seconds,
                       "rss_at_end_of_hold_mb": round(rss_during * 1024 / 1e6, 1),
                       "memory_stats_during_hold": during.get("memory"),
                       "bytes_read_by_clients": sum(got)})
    finally:
        server.stop()
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scenario", choices=["uploads", "readers"])
    p.add_argument("--binary", default="target/release/opusgate")
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                   help="an extra setting for the server, e.g. "
                        "OPUSGATE_LIMITS__MAX_INFLIGHT_ANSWER_BYTES=17179869184")
    p.add_argument("--uploads", type=int, default=100)
    p.add_argument("--readers", type=int, default=10)
    p.add_argument("--clip-seconds", type=float, default=600.0)
    p.add_argument("--hold-seconds", type=float, default=30.0)
    p.add_argument("--workdir", help="keep the clips and the store here (reused by a "
                                     "later run: the clips are made and stored once)")
    args = p.parse_args()
    env = dict(e.split("=", 1) for e in args.env)
    {"uploads": uploads, "readers": readers}[args.scenario](args, env)


if __name__ == "__main__":
    main()
