"""Bridge under load (issue 15, items 6 and 7): requests lost in a flood, ping latency while
a clip renders.

    PYTHONPATH=. python3 bench/bench_bridge_load.py [--root CHECKOUT] [--label after]

Starts ``python -m bridge serve`` from ``--root`` (default: this checkout; point it at an
older checkout for the "before" numbers), then

- flood: sends ``--flood`` generate requests (debug model, queue 8) as fast as one socket
  can and counts those that never got their first reply (accepted / error);
- pings while rendering: ``--clients`` processes each ping at ``--rate`` Hz for
  ``--seconds`` s while the ``--model`` server renders a long clip, and reports p50 / p99
  round trip and the pings never answered (a pong more than 1 s late counts as dropped).

Refuses to report on a busy machine (1-minute load average above ``--max-load``): the numbers
would measure the neighbours. Appends to bench/RESULTS_bridge.md.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import append_results  # noqa: E402

DROP_AFTER_S = 1.0


def msg(address: str, *args) -> bytes:
    b = OscMessageBuilder(address=address)
    for a in args:
        b.add_arg(a)
    return b.build().dgram


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(root: Path, model: str, port: int, render: Path) -> subprocess.Popen:
    """A server from ``root``, answering pings; its log is render/server.log."""
    log = open(render / f"server-{model}-{port}.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "bridge", "serve", "--model", model, "--port",
                             str(port), "--shm-name", f"bfload{port}", "--render-dir", str(render),
                             "--queue-size", "8", "--max-seconds", "60"],
                            cwd=root, env={**os.environ, "PYTHONPATH": str(root)}, stderr=log)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(1.0)
    for _ in range(600):
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {(render / log.name).read_text()[-2000:]}")
        s.sendto(msg("/barforge/ping"), ("127.0.0.1", port))
        try:
            if OscMessage(s.recv(65536)).address == "/barforge/pong":
                s.close()
                return proc
        except socket.timeout:
            pass
    raise TimeoutError("server did not start")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def flood(port: int, n: int) -> tuple[int, int]:
    """(requests sent, requests never answered)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 2**20)
    s.bind(("127.0.0.1", 0))
    s.settimeout(2.0)
    s.sendto(msg("/barforge/transport", 120.0, 4, 48000), ("127.0.0.1", port))
    OscMessage(s.recv(65536))
    for i in range(n):
        s.sendto(msg("/barforge/generate", f"fl{i}", "flood", 1), ("127.0.0.1", port))
    answered: set[str] = set()
    end = time.monotonic() + 30
    while len(answered) < n and time.monotonic() < end:
        try:
            m = OscMessage(s.recv(65536))
        except socket.timeout:
            break
        if m.address in ("/barforge/accepted", "/barforge/error") and m.params and \
                str(m.params[0]).startswith("fl"):
            answered.add(m.params[0])
    for i in range(n):  # leave the server idle for what follows
        s.sendto(msg("/barforge/cancel", f"fl{i}"), ("127.0.0.1", port))
    return n, n - len(answered)


def pinger(port: int, rate: float, seconds: float, out: mp.Queue) -> None:
    """Ping at ``rate`` Hz; pongs come back in order, so each matches the oldest ping out."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    ping, period = msg("/barforge/ping"), 1.0 / rate
    outstanding: list[float] = []
    rtts, dropped = [], 0
    t_next = time.monotonic()
    end = t_next + seconds
    while True:
        now = time.monotonic()
        if now < end and now >= t_next:
            s.sendto(ping, ("127.0.0.1", port))
            outstanding.append(now)
            t_next += period
        try:
            while True:
                s.recv(65536)
                got = time.monotonic()
                while outstanding and got - outstanding[0] > DROP_AFTER_S:
                    outstanding.pop(0)
                    dropped += 1
                if outstanding:
                    rtts.append(got - outstanding.pop(0))
        except BlockingIOError:
            pass
        if now >= end + DROP_AFTER_S:
            break
        # wake for a pong at once (a sleep would add its own granularity to every round trip)
        wake = t_next if now < end else end + DROP_AFTER_S
        select.select([s], [], [], max(0.0, wake - time.monotonic()))
    out.put((rtts, dropped + len(outstanding)))


def pings_while_rendering(port: int, clients: int, rate: float, seconds: float,
                          bars: int) -> tuple[np.ndarray, int, int]:
    """(round trips in s, pings dropped, pings sent) while one long clip renders."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(120)
    s.sendto(msg("/barforge/transport", 120.0, 4, 48000), ("127.0.0.1", port))
    s.sendto(msg("/barforge/generate", "render", "dusty boom bap drums", bars), ("127.0.0.1", port))
    while OscMessage(s.recv(65536)).address != "/barforge/progress":
        pass
    q: mp.Queue = mp.Queue()
    procs = [mp.Process(target=pinger, args=(port, rate, seconds, q)) for _ in range(clients)]
    for p in procs:
        p.start()
    results = [q.get() for _ in procs]
    for p in procs:
        p.join()
    still = False
    s.settimeout(0.2)
    try:
        while True:
            m = OscMessage(s.recv(65536))
            still = still or m.address == "/barforge/progress"
    except socket.timeout:
        pass
    s.sendto(msg("/barforge/cancel", "render"), ("127.0.0.1", port))
    rtts = np.array([r for rt, _ in results for r in rt])
    dropped = sum(d for _, d in results)
    if not still:
        print("warning: the render may have ended before the pings did; use more --bars")
    return rtts, dropped, len(rtts) + dropped


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, default=HERE.parent, help="checkout to serve from")
    ap.add_argument("--label", default="this checkout", help="what the results are called")
    ap.add_argument("--flood", type=int, default=1000)
    ap.add_argument("--model", default="default", help="model rendering while pings run")
    ap.add_argument("--bars", type=int, default=16, help="length of the clip rendered meanwhile")
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--rate", type=float, default=200.0)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--max-load", type=float, default=1.0)
    args = ap.parse_args()
    load = os.getloadavg()[0]
    if load > args.max_load:
        sys.exit(f"load average {load:.2f} > {args.max_load}: the machine is busy; these numbers "
                 "would measure the neighbours. Run it on an idle machine.")
    render = Path(f"/tmp/bench_bridge_load_{os.getpid()}")
    render.mkdir()
    port = free_port()
    proc = start(args.root, "debug", port, render)
    try:
        sent, lost = flood(port, args.flood)
    finally:
        stop(proc)
    port = free_port()
    proc = start(args.root, args.model, port, render)
    try:
        rtts, dropped, pings = pings_while_rendering(port, args.clients, args.rate, args.seconds,
                                                     args.bars)
    finally:
        stop(proc)
    ms = rtts * 1e3 if rtts.size else np.array([float("nan")])
    text = (f"\n## Load ({args.label}; {platform.machine()}, {os.cpu_count()} CPUs, load average "
            f"{load:.2f} at start)\n\n"
            f"- flood of {sent} generate requests (debug model, queue 8): {lost} never answered\n"
            f"- {args.clients} clients x {args.rate:g} Hz pings for {args.seconds:g} s while the "
            f"`{args.model}` model renders {args.bars} bars: p50 {np.percentile(ms, 50):.2f} ms, "
            f"p99 {np.percentile(ms, 99):.2f} ms, max {ms.max():.1f} ms, {dropped} of {pings} "
            f"dropped ({100 * dropped / max(1, pings):.2f} %)\n")
    append_results(HERE / "RESULTS_bridge.md", "Bridge benchmarks (bench/bench_bridge.py)", text)


if __name__ == "__main__":
    main()
