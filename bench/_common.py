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
