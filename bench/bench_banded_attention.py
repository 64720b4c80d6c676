"""One MAGNeT stage >= 1 pass (band 5): masked full attention vs attention only inside the band.

Both paths run in one process on the same weights and tokens, alternating, one thread; the
median of ``--reps`` runs each. Both paths are the transformer's own, chosen by forcing its
``banded_pays`` gate off (masked) or on (banded) for the run. Also timed: the self-attention op
alone at one layer's shape, for several block sizes of ``banded_attention``. Full size is the
musicgen-small / magnet-small shape (24 layers, d 1024, 16 heads, batch 2 = CFG rows,
T = 498 frames = 10 s)::

    PYTHONPATH=. python3 bench/bench_banded_attention.py            # ~1-2 min, idle machine
    PYTHONPATH=. python3 bench/bench_banded_attention.py --small    # seconds: 4 layers, d 256
    PYTHONPATH=. python3 bench/bench_banded_attention.py --small --seconds 2   # T 99: gate off

Results are appended to bench/RESULTS_banded_attention.md (``--out``).
"""
from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import engine.modules.transformer as transformer  # noqa: E402
from bench._common import append_results, cpu_line  # noqa: E402
from engine.backends.base import ConditionTensors  # noqa: E402
from engine.backends.torch_backend import TorchBackend  # noqa: E402
from engine.decoding.magnet import DEFAULT_ATTN_BAND, segment_frames  # noqa: E402
from engine.models.lm import LMConfig, LMModel  # noqa: E402
from engine.modules.banded_attention import DEFAULT_BLOCK, banded_attention  # noqa: E402

FRAME_RATE = 50
TEXT_TOKENS = 12
BLOCKS = (8, 16, 32, 64)


def median_ms(fn: Callable[[], object], reps: int) -> float:
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def attention_only(batch: int, heads: int, steps: int, head_dim: int, band: int,
                   reps: int) -> list[tuple[str, float]]:
    """Milliseconds of the self-attention op alone (q, k, v as the packed projection gives)."""
    qkv = torch.randn(batch, steps, 3, heads, head_dim)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, H, T, Dh]
    mask = transformer.self_attention_mask(steps, 0, False, band, q.device)
    rows = [("masked SDPA", lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask))]
    rows += [(f"banded, block {blk}", lambda blk=blk: banded_attention(q, k, v, band, blk))
             for blk in BLOCKS]
    for _, fn in rows:
        fn()  # warm up
    return [(name, median_ms(fn, reps)) for name, fn in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="4 layers, d 256, 4 heads")
    parser.add_argument("--seconds", type=float, default=10.0, help="audio length (50 frames/s)")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "RESULTS_banded_attention.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    cfg = LMConfig(dim=256, num_heads=4, num_layers=4) if args.small else LMConfig()
    cfg = LMConfig(**{**cfg.to_dict(), "causal": False})
    steps = segment_frames(int(args.seconds * FRAME_RATE), 3)
    band = DEFAULT_ATTN_BAND
    torch.manual_seed(0)
    lm = LMModel(cfg).eval()
    backend = TorchBackend(lm)
    hidden = torch.randn(1, TEXT_TOKENS, cfg.cond_dim)
    ctx = backend.prepare(ConditionTensors(
        cross=torch.cat([hidden, torch.zeros_like(hidden)]),
        cross_mask=torch.cat([torch.ones(1, TEXT_TOKENS), torch.zeros(1, TEXT_TOKENS)])))
    # A stage-1 input: codebook 0 fixed, the rest at the mask token, CFG rows.
    tokens = torch.full((2, cfg.n_q, steps), lm.special_token_id)
    tokens[:, 0] = torch.randint(0, cfg.card, (steps,))
    banded_gate = transformer.banded_pays

    def run(banded: bool) -> torch.Tensor:
        transformer.banded_pays = lambda s, b: banded  # forced either way, whatever T is
        try:
            return backend.full(tokens, ctx, band, codebook=1)  # [2, T, card]
        finally:
            transformer.banded_pays = banded_gate

    diff = (run(True) - run(False)).abs().max().item()  # also the warm-up
    times: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(args.reps):
        for banded in (False, True):
            times[banded].append(median_ms(lambda: run(banded), 1))
    masked_ms, banded_ms = statistics.median(times[False]), statistics.median(times[True])
    attn = attention_only(2, cfg.num_heads, steps, cfg.dim // cfg.num_heads, band, args.reps * 3)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    name = "small (4 layers, d 256, 4 heads)" if args.small else \
        "full (musicgen-small shape: 24 layers, d 1024, 16 heads)"
    lines = [
        f"\n## {name}, batch 2 (CFG), T = {steps}, band {band}, {args.threads} thread(s)\n",
        f"{cpu_line()}, torch {torch.__version__}; "
        f"`PYTHONPATH=. python3 bench/bench_banded_attention.py{' --small' if args.small else ''}"
        f" --seconds {args.seconds:g} --reps {args.reps}`; peak RSS of the process "
        f"{peak:.0f} MiB (both paths, one model)\n",
        "\n| one stage-1 pass | median ms | runs (ms) |\n|---|---|---|\n",
        f"| masked full attention | {masked_ms:.1f} | "
        f"{', '.join(f'{t:.0f}' for t in times[False])} |\n",
        f"| banded_attention (block {DEFAULT_BLOCK}) | "
        f"{banded_ms:.1f} | {', '.join(f'{t:.0f}' for t in times[True])} |\n",
        f"\npass speed-up {masked_ms / banded_ms:.2f}x; max |logit diff| {diff:.2e}; the "
        f"transformer's gate takes the banded path here: {banded_gate(steps, band)}\n",
        f"\n| self-attention op alone, one layer [2, {cfg.num_heads}, {steps}, "
        f"{cfg.dim // cfg.num_heads}] | median ms |\n|---|---|\n",
        *(f"| {label} | {ms:.2f} |\n" for label, ms in attn),
    ]
    append_results(args.out, "Banded attention: one MAGNeT stage >= 1 pass, CPU", "".join(lines))


if __name__ == "__main__":
    main()
