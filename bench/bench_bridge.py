"""Bridge benchmarks: OSC ping round trip, slot read vs memcpy, continue -> done latency.

    PYTHONPATH=. python3 bench/bench_bridge.py [--models debug default] [--pings 10000]
        [--bpms 120 174] [--modes ar magnet hybrid] [--runs 3] [--note "..."]

Starts ``python -m bridge serve`` per model in a subprocess, plays the host over loopback
UDP and shared memory, and writes bench/RESULTS_bridge.md. Peak RSS is the server's VmHWM.
Live continuation: per tempo and mode, ``--runs`` continues of one bar right after the server
started (its warm-up done, no other request before: the first is the first request in that
mode), the capture ending with a quarter, a half and most of a bar before the next bar line;
reported: the fraction of the bar before the clip's start_beat left when ``done`` arrived (the
target is >= 0.5 for every request).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench._common import append_results, cpu_line, load_line  # noqa: E402
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


def bench_continue(c, shm, bpm, mode, runs=3):
    """``runs`` continues of 1 bar at ``bpm`` 4/4 in ``mode``, the capture ending at different
    places in a bar (a quarter, half and most of the bar still to play, and so on); returns per
    run (ms to done, start_beat, fraction of the bar before start_beat left at done), or the
    error reply when the server refused the mode."""
    seg = HostSegment.attach(shm)
    beats_per_s = bpm / 60
    out = []
    try:
        for r in range(runs):
            c.send("/barforge/transport", float(bpm), 4, 48000)
            c.wait(lambda a, p: a == "/barforge/ack")
            c.send("/barforge/capture", 48000)
            c.wait(lambda a, p: a == "/barforge/ack")
            n = 4 * 48000
            t = np.arange(n) / 48000
            audio = (0.3 * np.sin(2 * np.pi * 220 * t) * (np.mod(t * beats_per_s, 1) < 0.1))
            audio = audio[:, None].repeat(2, 1)
            bar_left_at_request = (0.25, 0.55, 0.85)[r % 3]   # of the bar before the next line
            beat_end = 12 - 4 * bar_left_at_request
            seg.write_capture(audio.astype(np.float32), beat_end)
            t_write = time.monotonic()
            job = f"cont-{mode}-{bpm}-{r}"
            c.send("/barforge/continue", job, 1, "keep the groove", "mode", mode)
            _, p = c.wait(lambda a, p: a in ("/barforge/done", "/barforge/error") and p[0] == job)
            t_done = time.monotonic()
            if len(p) != 7:
                return p
            beat_now = beat_end + (t_done - t_write) * beats_per_s   # a rolling transport
            out.append((t_done - t_write, p[5], bar_left_at_request, (p[5] - beat_now) / 4))
    finally:
        seg.close()
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["debug", "default"])
    ap.add_argument("--pings", type=int, default=10000)
    ap.add_argument("--bpms", nargs="+", type=float, default=[120.0, 174.0])
    ap.add_argument("--modes", nargs="+", default=["ar", "magnet", "hybrid"],
                    help="continue in each (a mode the model lacks is reported as refused)")
    ap.add_argument("--runs", type=int, default=3, help="continues per mode and tempo")
    ap.add_argument("--note", default="", help="a line of conditions to record (load, what ran)")
    a = ap.parse_args()
    render = Path("/tmp") / f"bench_bridge_{os.getpid()}"
    render.mkdir()
    lines = ["", f"## Run of {time.strftime('%Y-%m-%d %H:%M')}: `bench/bench_bridge.py "
             f"--models {' '.join(a.models)} --bpms {' '.join(f'{b:g}' for b in a.bpms)} "
             f"--modes {' '.join(a.modes)} --runs {a.runs}`", "",
             f"Machine: {cpu_line()} (shared with "
             "other jobs), Python " + platform.python_version() + ", CPU only.",
             f"Load before: {load_line()}." + (f" {a.note}" if a.note else ""), ""]
    for i, model in enumerate(a.models):
        port, shm = 30000 + os.getpid() % 10000 + i, f"bfbench{os.getpid()}{i}"
        try:
            proc, c = start(model, port, shm, render)
        except Exception as e:  # noqa: BLE001 - a model that does not load is reported, not fatal
            lines += [f"### model `{model}`", "", f"did not start: {e}", ""]
            continue
        try:
            lines += [f"### model `{model}`", ""]
            if i == 0:
                p50, p99 = bench_ping(c, a.pings)
                lines.append(f"- OSC ping round trip over {a.pings} requests on loopback: p50 {p50:.0f} us, "
                             f"p99 {p99:.0f} us")
                nbytes, read_gbs, copy_gbs = bench_slot_read(c, shm)
                lines.append(f"- slot read (seqlocked copy, {nbytes / 1e6:.1f} MB clip): {read_gbs:.2f} GB/s vs "
                             f"plain memcpy (np.copyto) {copy_gbs:.2f} GB/s: ratio {read_gbs / copy_gbs:.2f}")
            summary = []
            for bpm in a.bpms:
                for mode in a.modes:
                    runs = bench_continue(c, shm, bpm, mode, a.runs)
                    if not isinstance(runs, list):
                        lines.append(f"- {mode} at {bpm:g} BPM: refused ({runs[1:]})")
                        continue
                    for r, (dt, start_beat, at_request, left) in enumerate(runs):
                        first = " (the server's first continue)" if not summary and r == 0 else \
                            " (the first in this mode and tempo)" if r == 0 else ""
                        lines.append(f"- {mode}, {bpm:g} BPM, request {r + 1}{first}: "
                                     f"{at_request:.2f} of the bar left at request -> done in "
                                     f"{dt * 1000:.0f} ms, start_beat {start_beat:g}, "
                                     f"fraction of the bar left at done {left:.2f}")
                    summary.append(f"| {mode} | {bpm:g} | {min(x[3] for x in runs):.2f} | "
                                   f"{statistics.median(x[3] for x in runs):.2f} | "
                                   f"{max(x[0] for x in runs) * 1000:.0f} |")
            lines += ["", "| mode | BPM | bar left at done, worst | median | slowest ms |",
                      "|---|---|---|---|---|", *summary, ""]
        finally:
            rss = peak_rss_mib(proc.pid)
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        lines += [f"- server peak RSS: {rss:.0f} MiB", ""]
        log = (render / f"server-{model}.log").read_text()
        lines += ["Server log lines for the continuations (speed estimates, phases, replies):", "",
                  "```"] + [ln.split(" INFO ")[-1] for ln in log.splitlines()
                            if "generation speed" in ln or "continue timing" in ln
                            or ("continue" in ln and "done" in ln)] + ["```", ""]
    lines.append(f"Load after: {load_line()}.")
    append_results(ROOT / "bench" / "RESULTS_bridge.md", "Bridge benchmarks (bench/bench_bridge.py)",
                   "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
