"""Start-up and end-to-end wall time of the ``barforge`` command, a fresh process each run.

    python bench/bench_startup.py [--runs 5] [--baseline DIR] [--out bench/RESULTS_startup.md]

Times (median and max of ``--runs``), from process start to exit: ``barforge --help``; a bad
argument (``--bars 0``); README's first command, ``barforge generate ... --model default --bars 4
--bpm 90`` (to the WAV written), with each process's peak RSS. Every process is
``python -m engine.cli`` with ``PYTHONPATH`` set to the tree measured: this checkout, and with
``--baseline DIR`` another checkout (an older commit, ``git worktree add DIR REV``), run
alternately, case by case, so both see the same machine. Each tree runs with its own
pyproject's entry points (a distribution record written for it ahead on ``PYTHONPATH``), not
those of the installed checkout. Refuses to report when the machine is
busy (1-minute load average above ``--max-load``): other jobs on 2 cores make start-up times
meaningless.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import append_results  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CASES = {
    "barforge --help": ["--help"],
    "bad argument (--bars 0)": ["generate", "x", "--bars", "0", "--bpm", "90", "-o", "x.wav"],
    "generate, default model, 4 bars at 90 BPM (README)": [
        "generate", "dusty boom-bap drums, vinyl crackle", "--model", "default", "--bars", "4",
        "--bpm", "90", "-o", "loop.wav"],
    "generate, default model, 4 bars at 120 BPM": [
        "generate", "dusty boom-bap drums, vinyl crackle", "--model", "default", "--bars", "4",
        "--bpm", "120", "-o", "loop.wav"],
}


def entry_point_record(tree: Path, into: Path) -> Path:
    """A ``barforge`` distribution record holding ``tree``'s own entry points, in ``into``."""
    import tomllib
    project = tomllib.loads((tree / "pyproject.toml").read_text())["project"]
    record = into / "barforge-0.0.0.dist-info"
    record.mkdir(parents=True)
    (record / "METADATA").write_text("Metadata-Version: 2.1\nName: barforge\nVersion: 0.0.0\n")
    groups = project.get("entry-points", {})
    (record / "entry_points.txt").write_text("".join(
        f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in entries.items())
        for group, entries in groups.items()))
    return into


def run_once(tree: Path, meta: Path, argv: list[str], cwd: str) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one fresh ``barforge`` process from ``tree``."""
    env = dict(os.environ, PYTHONPATH=f"{tree}{os.pathsep}{meta}")
    # /usr/bin/time reports this one process's peak RSS (getrusage of children keeps the maximum)
    t0 = time.perf_counter()
    out = subprocess.run(["/usr/bin/time", "-f", "%M", sys.executable, "-m", "engine.cli", *argv],
                         cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         text=True)
    wall = time.perf_counter() - t0
    return wall, int(out.stderr.strip().splitlines()[-1]) / 1024


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--baseline", type=Path, default=None, help="another checkout to compare")
    ap.add_argument("--max-load", type=float, default=0.5)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "RESULTS_startup.md")
    args = ap.parse_args()
    load = os.getloadavg()[0]
    if load > args.max_load:
        print(f"refusing to measure: 1-minute load average {load:.2f} > {args.max_load}",
              file=sys.stderr)
        return 1
    trees = {"this checkout": ROOT}
    if args.baseline is not None:
        trees["baseline " + args.baseline.name] = args.baseline.resolve()
    rows = []
    with tempfile.TemporaryDirectory() as cwd:
        metas = {label: entry_point_record(tree, Path(cwd) / f"meta{i}")
                 for i, (label, tree) in enumerate(trees.items())}
        for name, argv in CASES.items():
            results: dict[str, list[tuple[float, float]]] = {t: [] for t in trees}
            for label, tree in trees.items():
                run_once(tree, metas[label], argv, cwd)   # page cache warm, as on a second use
            for _ in range(args.runs):
                for label, tree in trees.items():
                    results[label].append(run_once(tree, metas[label], argv, cwd))
            for label, runs in results.items():
                walls = [w for w, _ in runs]
                rows.append((name, label, statistics.median(walls), max(walls),
                             max(r for _, r in runs)))
    load_after = os.getloadavg()[0]
    text = (f"\n## {time.strftime('%Y-%m-%d %H:%M')}: {args.runs} fresh processes each, "
            f"load average {load:.2f} before / {load_after:.2f} after, {os.cpu_count()} cores\n\n"
            "| command | tree | median wall s | max wall s | peak RSS MiB |\n|---|---|---|---|---|\n"
            + "".join(f"| {n} | {t} | {m:.2f} | {x:.2f} | {r:.0f} |\n" for n, t, m, x, r in rows))
    append_results(args.out, "barforge start-up and end-to-end times", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
