"""AR vs MAGNeT vs hybrid decoding on identical random weights, CPU, batch 1, CFG on.

Each mode runs in its own subprocess (same seed, so the same weights) so that the peak RSS
beside each time is that mode's own. MAGNeT's time is set against its arithmetic floor: the
FLOPs of its sum(decoding_steps) passes divided by a matmul rate measured here at the LM's
shapes. Full size (magnet-small / musicgen-small shapes: 24 layers, d 1024, 16 heads, 4 x 2048,
T5-base width 768), 10 s of audio::

    PYTHONPATH=. python3 bench/bench_magnet.py            # minutes; use an idle machine
    PYTHONPATH=. python3 bench/bench_magnet.py --small    # seconds: 4 layers, d 256, 2 s

Results are appended to bench/RESULTS_magnet.md (``--out``).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import append_results, cpu_line  # noqa: E402
from engine.backends.base import ConditionTensors  # noqa: E402
from engine.backends.torch_backend import TorchBackend  # noqa: E402
from engine.decoding.ar import generate_ar  # noqa: E402
from engine.decoding.hybrid import generate_hybrid  # noqa: E402
from engine.decoding.magnet import DEFAULT_ATTN_BAND, generate_magnet, segment_frames  # noqa: E402
from engine.decoding.magnet_params import MagnetParams  # noqa: E402
from engine.decoding.ar_params import ARParams  # noqa: E402
from engine.models.lm import LMConfig, LMModel  # noqa: E402

FRAME_RATE = 50
TEXT_TOKENS = 12
HYBRID_PREFIX_S = 1.5


@dataclass(frozen=True)
class Shape:
    layers: int
    dim: int
    heads: int
    n_q: int
    card: int
    cond_dim: int
    duration: float

    def lm_config(self, causal: bool) -> LMConfig:
        return LMConfig(n_q=self.n_q, card=self.card, dim=self.dim, num_heads=self.heads,
                        num_layers=self.layers, cond_dim=self.cond_dim, causal=causal)


FULL = Shape(layers=24, dim=1024, heads=16, n_q=4, card=2048, cond_dim=768, duration=10.0)
SMALL = Shape(layers=4, dim=256, heads=4, n_q=4, card=2048, cond_dim=768, duration=2.0)


def build(shape: Shape) -> tuple[LMModel, LMModel, ConditionTensors]:
    """The MAGNeT LM (non-causal) and an AR LM with the very same weights, and [cond; null]."""
    torch.manual_seed(0)
    magnet = LMModel(shape.lm_config(causal=False)).eval()
    ar = LMModel(shape.lm_config(causal=True)).eval()
    ar.load_state_dict(magnet.state_dict())
    hidden = torch.randn(1, TEXT_TOKENS, shape.cond_dim)
    cond = ConditionTensors(cross=torch.cat([hidden, torch.zeros_like(hidden)]),
                            cross_mask=torch.cat([torch.ones(1, TEXT_TOKENS),
                                                  torch.zeros(1, TEXT_TOKENS)]))
    return magnet, ar, cond


def run_mode(mode: str, shape: Shape, warm_up: bool = True) -> dict:
    """Time one generation of ``mode`` (after a short untimed one that warms up the kernels);
    returns seconds, forward passes and peak RSS."""
    if warm_up:
        run_mode(mode, Shape(**{**shape.__dict__, "duration": 1.8}), warm_up=False)
    magnet_lm, ar_lm, cond = build(shape)
    frames = int(shape.duration * FRAME_RATE)
    mp = MagnetParams(duration=shape.duration, seed=0)
    ap = ARParams(duration=shape.duration, seed=0)
    passes = []
    start = time.perf_counter()
    if mode == "ar":
        generate_ar(TorchBackend(ar_lm), lambda offset: cond, ap, batch=1, cfg=True,
                    total_frames=frames, window_frames=frames, stride_frames=frames // 2,
                    progress_callback=lambda d, t: passes.append(d))
    elif mode == "magnet":
        generate_magnet(TorchBackend(magnet_lm), cond, mp, batch=1, cfg=True, n_frames=frames,
                        attn_band=DEFAULT_ATTN_BAND, progress_callback=lambda d, t: passes.append(d))
    else:
        generate_hybrid(TorchBackend(ar_lm), TorchBackend(magnet_lm), cond, ap, mp, batch=1,
                        cfg=True, n_frames=frames,
                        prefix_frames=int(HYBRID_PREFIX_S * FRAME_RATE),
                        ar_window_frames=frames, ar_stride_frames=frames // 2,
                        attn_band=DEFAULT_ATTN_BAND, progress_callback=lambda d, t: passes.append(d))
    seconds = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"mode": mode, "seconds": seconds, "passes": len(passes), "peak_rss_mib": peak_kib / 1024}


def matmul_gflops(shape: Shape, rows: int) -> float:
    """Measured fp32 matmul rate at the FFN's shape: [rows, D] x [D, 4D]."""
    a, b = torch.randn(rows, shape.dim), torch.randn(shape.dim, 4 * shape.dim)
    for _ in range(3):
        a @ b
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < 2.0:
        a @ b
        reps += 1
    seconds = (time.perf_counter() - start) / reps
    return 2 * rows * shape.dim * 4 * shape.dim / seconds / 1e9


def magnet_flops(shape: Shape, band: int | None) -> float:
    """FLOPs of one generation's MAGNeT passes (2 rows each: CFG), band-limited attention for
    stages >= 1 when ``band`` is given, else full attention everywhere (what SDPA computes)."""
    T = segment_frames(int(shape.duration * FRAME_RATE), 3)
    d, rows = shape.dim, 2
    total = 0.0
    for stage, steps in enumerate(MagnetParams(duration=shape.duration).decoding_steps):
        keys = T if band is None or stage == 0 else min(T, 2 * band + 1)
        per_layer = 14 * d * d * T + 2 * T * keys * d + 2 * T * TEXT_TOKENS * d  # MACs
        per_pass = shape.layers * per_layer + T * d * shape.card  # + one codebook's head
        total += steps * 2 * rows * per_pass
    return total


def load_line() -> str:
    """``uptime``-style load averages (1, 5, 15 min) and the time."""
    one, five, fifteen = os.getloadavg()
    return f"{time.strftime('%H:%M:%S')} load {one:.2f}, {five:.2f}, {fifteen:.2f}"


def child(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    shape = SMALL if args.small else FULL
    print(json.dumps(run_mode(args.child, shape)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="tiny shapes (4 layers, d 256, 2 s)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="torch threads per run (default: torch's)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "RESULTS_magnet.md")
    parser.add_argument("--modes", default="ar,magnet,hybrid",
                        help="comma-separated subset of ar,magnet,hybrid (default: all three)")
    parser.add_argument("--note", default="", help="free text for the report (e.g. other load)")
    parser.add_argument("--child", choices=("ar", "magnet", "hybrid"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    torch.set_num_threads(args.threads)
    shape = SMALL if args.small else FULL
    modes = [m for m in ("ar", "magnet", "hybrid") if m in args.modes.split(",")]
    T = segment_frames(int(shape.duration * FRAME_RATE), 3)
    # the matmul rate is measured before and after the runs and the best is the floor's rate: a
    # rate measured once, while another job shares the cores, understates what the CPU can do
    # and puts the "floor" above the measured time
    rates = [matmul_gflops(shape, 2 * T)]
    load_before = load_line()
    results = {}
    for mode in modes:
        cmd = [sys.executable, __file__, "--child", mode, "--threads", str(args.threads)]
        cmd += ["--small"] if args.small else []
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        results[mode] = json.loads(out.strip().splitlines()[-1])
        results[mode]["load_after"] = load_line()
        print(f"{mode:7s} {results[mode]['seconds']:8.2f} s  {results[mode]['passes']:5d} passes  "
              f"peak RSS {results[mode]['peak_rss_mib']:.0f} MiB  {results[mode]['load_after']}",
              flush=True)
    rates.append(matmul_gflops(shape, 2 * T))
    rate = max(rates)
    floor_full = magnet_flops(shape, None) / (rate * 1e9)
    floor_band = magnet_flops(shape, DEFAULT_ATTN_BAND) / (rate * 1e9)
    ar_s = results["ar"]["seconds"] if "ar" in results else None
    mg_s = results["magnet"]["seconds"] if "magnet" in results else None
    lines = [
        f"\n## {'small' if args.small else 'full'} shapes, {time.strftime('%Y-%m-%d %H:%M')}\n",
        f"`OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')} PYTHONPATH=. "
        f"{' '.join(['python3', 'bench/bench_magnet.py', '--threads', str(args.threads)] + (['--small'] if args.small else []) + (['--modes', args.modes] if len(modes) < 3 else []))}`"
        f" on {cpu_line()}, torch {torch.__version__}, "
        f"{args.threads} thread(s); LM {shape.layers} layers, d {shape.dim}, {shape.heads} heads, "
        f"{shape.n_q} x {shape.card}; {shape.duration} s ({T} MAGNeT frames), batch 1, CFG on, "
        f"steps 20/10/10/10, hybrid prefix {HYBRID_PREFIX_S} s.\n",
        f"Load before: {load_before}." + (f" {args.note}" if args.note else ""),
        "",
        "| mode | wall s | forward passes | ratio to AR | peak RSS MiB | load after the mode |",
        "|---|---|---|---|---|---|",
    ]
    for mode in modes:
        r = results[mode]
        ratio = f"{r['seconds'] / ar_s:.2f}" if ar_s else "-"
        lines.append(f"| {mode} | {r['seconds']:.2f} | {r['passes']} | {ratio} | "
                     f"{r['peak_rss_mib']:.0f} | {r['load_after']} |")
    lines += [
        "",
        f"Matmul rate at [{2 * T}, {shape.dim}] x [{shape.dim}, {4 * shape.dim}]: "
        f"{rates[0]:.1f} GFLOP/s before the runs, {rates[1]:.1f} after; the floor uses the best, "
        f"{rate:.1f} GFLOP/s. "
        f"MAGNeT arithmetic floor: {floor_full:.2f} s with full attention in every pass "
        f"({magnet_flops(shape, None) / 1e9:.0f} GFLOP), {floor_band:.2f} s with band-limited "
        f"attention for stages >= 1 ({magnet_flops(shape, DEFAULT_ATTN_BAND) / 1e9:.0f} GFLOP)"
        + (f"; measured MAGNeT / floor(full) = {mg_s / floor_full:.2f}." if mg_s else "."),
    ]
    append_results(args.out, "MAGNeT vs AR vs hybrid decoding (bench/bench_magnet.py)",
                   "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
