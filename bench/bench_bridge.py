"""Bridge benchmarks: OSC ping round trip, slot read vs memcpy, continue -> done latency.

    PYTHONPATH=. python3 bench/bench_bridge.py [--models debug default] [--pings 10000]

Starts ``python -m bridge serve`` per model in a subprocess, plays the host over loopback
UDP and shared memory, and writes bench/RESULTS_bridge.md. Peak RSS is the server's VmHWM.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from plugin_host.shm import HostSegment  # noqa: E402


def msg(address, *args):
    b = OscMessageBuilder(address=address)
    for a in args:
        b.add_arg(a)
    return b.build().dgram


class Client:
    def __init__(self, port):
        self.addr = ("127.0.0.1", port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))

    def send(self, address, *args):
        self.sock.sendto(msg(address, *args), self.addr)

    def wait(self, pred, timeout=600.0):
        self.sock.settimeout(timeout)
        while True:
            m = OscMessage(self.sock.recv(65536))
            if pred(m.address, list(m.params)):
                return m.address, list(m.params)


def start(model, port, shm, render):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    log = open(render / f"server-{model}.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "bridge", "serve", "--model", model, "--port", str(port),
                             "--shm-name", shm, "--render-dir", str(render)], env=env, stderr=log)
    c = Client(port)
    for _ in range(600):
        c.send("/barforge/ping")
        try:
            c.wait(lambda a, p: a == "/barforge/pong", 1.0)
            return proc, c
        except socket.timeout:
            assert proc.poll() is None, (render / f"server-{model}.log").read_text()[-2000:]
    raise TimeoutError("server did not start")


def peak_rss_mib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def bench_ping(c, n):
    ping = msg("/barforge/ping")
    c.sock.settimeout(5)
    times = np.empty(n)
    for i in range(n):
        t0 = time.perf_counter()
        c.sock.sendto(ping, c.addr)
        c.sock.recv(65536)
        times[i] = time.perf_counter() - t0
    return np.percentile(times, 50) * 1e6, np.percentile(times, 99) * 1e6


def bench_slot_read(c, shm, reps=50):
    c.send("/barforge/transport", 120.0, 4, 48000)
    c.wait(lambda a, p: a == "/barforge/ack")
    c.send("/barforge/generate", "bench8", "x", 8, "channels", 2)
    _, p = c.wait(lambda a, p: a in ("/barforge/done", "/barforge/error") and p[0] == "bench8")
    assert len(p) == 7, p
    seg = HostSegment.attach(shm)
    clip = seg.read_slot(p[1])
    nbytes = clip.audio.nbytes
    t0 = time.perf_counter()
    for _ in range(reps):
        seg.read_slot(p[1])
    t_read = (time.perf_counter() - t0) / reps
    src, dst = np.random.rand(clip.audio.size).astype(np.float32), np.empty(clip.audio.size, np.float32)
    t0 = time.perf_counter()
    for _ in range(reps):
        np.copyto(dst, src)
    t_copy = (time.perf_counter() - t0) / reps
    seg.close()
    return nbytes, nbytes / t_read / 1e9, nbytes / t_copy / 1e9


def bench_continue(c, shm, runs=3):
    seg = HostSegment.attach(shm)
    out = []
    for r in range(runs):
        c.send("/barforge/transport", 120.0, 4, 48000)
        c.wait(lambda a, p: a == "/barforge/ack")
        c.send("/barforge/capture", 48000)
        c.wait(lambda a, p: a == "/barforge/ack")
        beat0 = 1.0 + 0.37 * r  # the transport stands somewhere inside a bar
        n = 4 * 48000
        t = np.arange(n) / 48000
        audio = (0.3 * np.sin(2 * np.pi * 220 * t) * (np.mod(t * 2, 1) < 0.1))[:, None].repeat(2, 1)
        beat_end = beat0 + n / 48000 * 2
        seg.write_capture(audio.astype(np.float32), beat_end)
        t_write = time.monotonic()
        job = f"cont{r}"
        t0 = time.monotonic()
        c.send("/barforge/continue", job, 1)
        _, p = c.wait(lambda a, p: a in ("/barforge/done", "/barforge/error") and p[0] == job)
        t_done = time.monotonic()
        assert len(p) == 7, p
        beat_now = beat_end + (t_done - t_write) * 2.0  # a rolling transport at 120 BPM
        out.append((t_done - t0, p[5], (p[5] - beat_now) / 4))
    seg.close()
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["debug", "default"])
    ap.add_argument("--pings", type=int, default=10000)
    a = ap.parse_args()
    render = Path("/tmp") / f"bench_bridge_{os.getpid()}"
    render.mkdir()
    lines = ["# Bridge benchmarks (bench/bench_bridge.py)", "",
             f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs (shared with "
             "other jobs), Python " + platform.python_version() + ", CPU only.", ""]
    for i, model in enumerate(a.models):
        port, shm = 30000 + os.getpid() % 10000 + i, f"bfbench{os.getpid()}{i}"
        try:
            proc, c = start(model, port, shm, render)
        except Exception as e:  # noqa: BLE001 - a model that does not load is reported, not fatal
            lines += [f"## model `{model}`", "", f"did not start: {e}", ""]
            continue
        try:
            lines += [f"## model `{model}`", ""]
            if i == 0:
                p50, p99 = bench_ping(c, a.pings)
                lines.append(f"- OSC ping round trip over {a.pings} requests on loopback: p50 {p50:.0f} us, "
                             f"p99 {p99:.0f} us")
                nbytes, read_gbs, copy_gbs = bench_slot_read(c, shm)
                lines.append(f"- slot read (seqlocked copy, {nbytes / 1e6:.1f} MB clip): {read_gbs:.2f} GB/s vs "
                             f"plain memcpy (np.copyto) {copy_gbs:.2f} GB/s: ratio {read_gbs / copy_gbs:.2f}")
            for dt, start_beat, left in bench_continue(c, shm):
                lines.append(f"- /barforge/continue -> done, 1 bar at 120 BPM 4/4: {dt * 1000:.0f} ms, "
                             f"start_beat {start_beat:g}, fraction of the bar left at done {left:.2f}")
        finally:
            rss = peak_rss_mib(proc.pid)
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        lines += [f"- server peak RSS: {rss:.0f} MiB", ""]
        log = (render / f"server-{model}.log").read_text()
        lines += ["Server log lines for the continuations:", "", "```"] + \
            [ln.split(" INFO ")[-1] for ln in log.splitlines() if "continue" in ln and "done" in ln] + ["```", ""]
    text = "\n".join(lines)
    (ROOT / "bench" / "RESULTS_bridge.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
