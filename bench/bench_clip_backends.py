"""One bridge-sized clip (4 bars at 120 BPM for a 48 kHz host, AR, as ``barforge serve`` asks
by default) through ``generate_samples`` on torch (native kernels, as the bridge's generator
process runs it, at 1 and 2 threads) and on an onnxruntime bundle of the same model: wall and
CPU seconds per clip, steady state (one clip first pays the one-off set-up). Each backend runs
in its own subprocess, in turn, twice, so a change in the machine's load shows in both::

    PYTHONPATH=. python3 bench/bench_clip_backends.py --bundle /tmp/barforge-default-bundle

The bundle is exported first when the folder is missing (``barforge export --model MODEL``).
Prints a Markdown table; the findings are in bench/RESULTS_triton.md (2026-12-06 21:10).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench._common import load_line  # noqa: E402

BARS, BPM, RATE, MARGIN_S = 4, 120, 48000, 0.25   # the bridge's clip plus its loop-seam margin


def run_child(model: str, backend: str, clips: int) -> dict:
    """``clips`` timed clips on ``backend`` ("torch1", "torch2" or "onnx"): wall and CPU s."""
    import torch
    from engine.api import load_model
    from engine.inference_kernels import use_native_cpu_kernels
    from engine.sample_generation import SampleRequest, generate_samples
    from engine.tempo import Tempo

    if backend == "onnx":
        m = load_model(model, provider="cpu")
    else:
        use_native_cpu_kernels()
        torch.set_num_threads(int(backend.removeprefix("torch")))
        m = load_model(model)
    tempo = Tempo(BPM, 4)
    samples = tempo.frames(BARS, RATE) + round(MARGIN_S * RATE)
    walls, cpus = [], []
    for k in range(clips + 1):
        request = SampleRequest("four-on-the-floor house beat", {"mode": "ar", "seed": k},
                                samples, RATE, tempo)
        c0, t0 = sum(os.times()[:2]), time.perf_counter()
        generate_samples(m, request, lambda fraction: None)
        if k:                                      # clip 0 pays the one-off set-up
            walls.append(time.perf_counter() - t0)
            cpus.append(sum(os.times()[:2]) - c0)
    return {"wall": walls, "cpu": cpus}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--bundle", default="/tmp/barforge-default-bundle", help="ONNX bundle folder")
    ap.add_argument("--clips", type=int, default=4)
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(run_child(args.child[0], args.child[1], args.clips)))
        return
    if not Path(args.bundle).exists():
        subprocess.run([sys.executable, "-m", "engine.cli", "export", "--model", args.model, "--out",
                        args.bundle], cwd=ROOT, check=True)
    print(f"load before: {load_line()}\n\n"
          "| round | backend | wall s per clip (median, all) | CPU s per clip (median) |\n|---|---|---|---|")
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}   # as engine/cli.py sets it for the bridge
    for rnd in (1, 2):
        for backend in ("torch2", "torch1", "onnx"):
            model = args.bundle if backend == "onnx" else args.model
            out = subprocess.run([sys.executable, __file__, "--child", model, backend, "--clips",
                                  str(args.clips)], cwd=ROOT, env=env, check=True,
                                 capture_output=True, text=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            print(f"| {rnd} | {backend} | {statistics.median(r['wall']):.2f} "
                  f"({', '.join(f'{w:.2f}' for w in r['wall'])}) | {statistics.median(r['cpu']):.2f} |",
                  flush=True)
    print(f"\nload after: {load_line()}  ({time.strftime('%Y-%m-%d %H:%M')})")


if __name__ == "__main__":
    main()
