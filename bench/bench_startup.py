"""Start-up and end-to-end wall time of the ``barforge`` command, a fresh process each run.

    python bench/bench_startup.py [--runs 5] [--out bench/RESULTS_startup.md]

Times (median and max of ``--runs``), from process start to exit: ``barforge --help``; a bad
argument (``--bars 0``); README's first command, ``barforge generate ... --model default --bars 4
--bpm 90`` (to the WAV written); with the peak RSS of the generating process. Refuses to report
when the machine is busy (1-minute load average above ``--max-load``): other jobs on 2 cores
make start-up times meaningless.
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import append_results  # noqa: E402

CASES = {
    "barforge --help": ["--help"],
    "bad argument (--bars 0)": ["generate", "x", "--bars", "0", "--bpm", "90", "-o", "x.wav"],
    "generate, default model, 4 bars at 90 BPM": [
        "generate", "dusty boom-bap drums, vinyl crackle", "--model", "default", "--bars", "4",
        "--bpm", "90", "-o", "loop.wav"],
}


def run_once(argv: list[str], cwd: str) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one fresh ``barforge`` process."""
    exe = shutil.which("barforge") or sys.exit("barforge is not on PATH: pip install -e .")
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    subprocess.run([exe, *argv], cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return wall, max(peak, before) / 1024


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--max-load", type=float, default=0.5)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "RESULTS_startup.md")
    args = ap.parse_args()
    load = os.getloadavg()[0]
    if load > args.max_load:
        print(f"refusing to measure: 1-minute load average {load:.2f} > {args.max_load}",
              file=sys.stderr)
        return 1
    rows = []
    with tempfile.TemporaryDirectory() as cwd:
        for name, argv in CASES.items():
            run_once(argv, cwd)                     # page cache warm, as on a second use
            times = []
            for _ in range(args.runs):
                wall, _ = run_once(argv, cwd)
                times.append(wall)
            rows.append((name, statistics.median(times), max(times)))
    # ru_maxrss of children is the largest child so far: the generating process
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    load_after = os.getloadavg()[0]
    text = (f"\n## {time.strftime('%Y-%m-%d %H:%M')} — {args.runs} fresh processes each, "
            f"load average {load:.2f} before / {load_after:.2f} after, {os.cpu_count()} cores\n\n"
            "| command | median wall s | max wall s |\n|---|---|---|\n"
            + "".join(f"| {n} | {m:.2f} | {x:.2f} |\n" for n, m, x in rows)
            + f"\nPeak RSS of the largest process (generate): {peak:.0f} MiB\n")
    append_results(args.out, "barforge start-up and end-to-end times", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
