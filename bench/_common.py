"""Helpers the benchmark scripts share."""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np


def append_results(out: Path, title: str, text: str) -> None:
    """Print ``text`` and append it to the results file ``out`` (created with the heading
    ``# title`` if it does not exist yet)."""
    print(text)
    if not out.exists():
        out.write_text(f"# {title}\n")
    with out.open("a") as f:
        f.write(text)


def load_line() -> str:
    """``uptime``-style load averages (1, 5, 15 min) and the time, for the results file."""
    one, five, fifteen = os.getloadavg()
    return f"{time.strftime('%H:%M:%S')} load {one:.2f}, {five:.2f}, {fifteen:.2f}"


# the instruction sets onnxruntime's and torch's CPU kernels pick between (int8: VNNI / AMX, else
# AVX2's int16 pair sums): a figure from one CPU says little of another without them
CPU_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8")


def cpu_line() -> str:
    """The CPU's model name, its kernel-relevant instruction sets and the cores visible, e.g.
    ``AMD EPYC (avx2), 2 cores``."""
    import platform

    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
    except OSError:  # not Linux: the model name platform gives
        pass
    features = ", ".join(f for f in CPU_FEATURES if f in flags) or "no AVX2"
    return f"{model} ({features}), {os.cpu_count()} cores"


def bandwidth_gbs() -> float:
    """Memory read+write bandwidth from a large numpy copy (best of 5)."""
    a = np.ones(256 * 2**20 // 8)
    b = np.empty_like(a)
    best = min(_time(lambda: np.copyto(b, a)) for _ in range(5))
    return 2 * a.nbytes / best / 1e9


def _time(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t
