"""The shipped default model: 4 bars at 120 BPM (8 s) per mode, torch vs onnxruntime.

Each runtime runs in its own subprocess, so the peak RSS beside its times is its own. Per mode:
``set_generation_params(duration=8.0, mode=M, seed=r)`` (the model's packaged defaults fill
in the rest, e.g. its MAGNeT decoding steps) and ``generate([PROMPT], tempo=Tempo(120))``, ``--reps``
runs; the first includes warm-up, the best is reported. onnxruntime runs a bundle that
``barforge export`` writes first (into ``--bundle``, reused when present). torch runs on its
native CPU kernels as the bridge does (engine/inference_kernels.py), and once more with oneDNN
(the CLI's default) for comparison::

    PYTHONPATH=. python3 bench/bench_default_model.py              # ~1 minute on 2 cores
    PYTHONPATH=. python3 bench/bench_default_model.py --threads 1

Results are appended to bench/RESULTS_default_model.md (``--out``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import append_results  # noqa: E402
from engine.decoding.options import MODES  # noqa: E402

PROMPT = "boom-bap drums with upright bass and rhodes, C minor. bpm: 120.0. key: c minor"


def run_one(model: str, provider: str, threads: int, reps: int) -> dict:
    """Load ``model`` on ``provider`` ("torch", "torch-onednn" or an onnxruntime provider) and
    time every mode."""
    import torch
    torch.set_num_threads(threads)
    from engine.inference_kernels import use_native_cpu_kernels
    from engine.api import load_model
    from engine.tempo import Tempo

    if provider == "torch":
        use_native_cpu_kernels()
    t0 = time.perf_counter()
    m = load_model(model) if provider.startswith("torch") else load_model(model, provider=provider)
    result: dict = {"provider": provider, "load_s": round(time.perf_counter() - t0, 2)}
    for mode in MODES:
        times = []
        for rep in range(reps):
            m.set_generation_params(duration=8.0, mode=mode, seed=rep)
            t = time.perf_counter()
            wav = m.generate([PROMPT], tempo=Tempo(120))
            times.append(time.perf_counter() - t)
        result[mode] = {"best": round(min(times), 3), "all": [round(x, 3) for x in times],
                        "samples": int(wav.shape[-1])}
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--bundle", default="/tmp/barforge-default-bundle", help="ONNX bundle folder")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "bench" / "RESULTS_default_model.md"))
    ap.add_argument("--child", nargs=2, metavar=("MODEL", "PROVIDER"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(run_one(args.child[0], args.child[1], args.threads, args.reps)))
        return
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1",
           "OMP_NUM_THREADS": str(args.threads)}
    if not (Path(args.bundle) / "manifest.json").is_file():
        subprocess.run([sys.executable, "-m", "engine.cli", "export", "--model", args.model,
                        "--out", args.bundle], check=True, env=env, cwd=ROOT)
    rows = []
    for model, provider in ((args.model, "torch"), (args.model, "torch-onednn"), (args.bundle, "cpu")):
        out = subprocess.run([sys.executable, __file__, "--child", model, provider,
                              "--threads", str(args.threads), "--reps", str(args.reps)],
                             check=True, env=env, cwd=ROOT, capture_output=True, text=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    load = os.getloadavg()[0]
    text = [f"\n## {time.strftime('%Y-%m-%d %H:%M')} UTC, {platform.machine()}, {args.threads} threads, "
            f"load {load:.1f}\n\n8 s (4 bars at 120 BPM), batch 1, best of {args.reps} seconds "
            "(all runs in brackets; the first warms up):\n\n"
            "| mode | torch (native kernels) | torch (oneDNN) | onnxruntime (CPU, fp32 bundle) | "
            "oneDNN / native | onnxruntime / native |\n|---|---|---|---|---|---|\n"]
    for mode in MODES:
        t, d, o = (r[mode] for r in rows)
        cells = " | ".join(f"{x['best']} ({', '.join(map(str, x['all']))})" for x in (t, d, o))
        text.append(f"| {mode} | {cells} | {d['best'] / t['best']:.2f} | {o['best'] / t['best']:.2f} |\n")
    names = ("torch (native)", "torch (oneDNN)", "onnxruntime")
    text.append("\nPeak RSS: " + ", ".join(f"{n} {r['peak_rss_mb']} MB" for n, r in zip(names, rows))
                + ". Load: " + ", ".join(f"{n} {r['load_s']} s" for n, r in zip(names, rows)) + ".\n")
    append_results(Path(args.out), "The default model: generation time", "".join(text))


if __name__ == "__main__":
    main()
