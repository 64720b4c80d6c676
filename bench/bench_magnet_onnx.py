"""MAGNeT on onnxruntime vs PyTorch: one LM, the same weights, the same thread count.

    PYTHONPATH=. python3 bench/bench_magnet_onnx.py [--small] [--threads 2] [--reps 3]
        [--duration 4] [--workdir /tmp/bench_magnet_onnx] [--note "..."]

Builds bench_magnet.py's MAGNeT LM (musicgen-small shape: 24 layers, d 1024, 16 heads,
4 x 2048; ``--small``: 4 layers, d 256) with random weights, exports its ``lm_cross`` and
``lm_full`` graphs as a bundle does (cached in ``--workdir`` per shape), then times, alternating
the two runtimes: single non-causal passes over a 10 s segment (batch 2 = CFG's [cond; null],
logits of one codebook) for stage 0 (full attention) and stage >= 1 (band 5), and one whole
MAGNeT generation of ``--duration`` seconds (steps 20/10/10/10, CFG on, seeded). Appends the
table to bench/RESULTS_magnet.md with the load average before and after: a run beside other
jobs is indicative only.
"""
from __future__ import annotations

import argparse
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench._common import append_results, load_line  # noqa: E402
from bench.bench_magnet import FRAME_RATE, FULL, SMALL, Shape, build  # noqa: E402
from engine.backends.onnx_step import OnnxBackend  # noqa: E402
from engine.backends.torch_backend import TorchBackend  # noqa: E402
from engine.decoding.magnet import DEFAULT_ATTN_BAND, generate_magnet  # noqa: E402
from engine.decoding.magnet_params import MagnetParams  # noqa: E402
from engine.modules.banded_attention import banded_attention_traced  # noqa: E402
from engine.modules.transformer import self_attention_mask  # noqa: E402
from engine.backends.onnx_runtime import make_session  # noqa: E402
from export import graphs as G  # noqa: E402
from export.bundle import EXPORT_SIZES, export_graph, random_inputs  # noqa: E402
from export.fused_attention import fused_attention  # noqa: E402

OPSET = 17
SEGMENT_S = 10.0


def export_lm(lm, shape: Shape, workdir: Path) -> Path:
    """lm_cross.onnx + lm_full.onnx of ``lm`` in a folder named after the shape (reused)."""
    out = workdir / f"l{shape.layers}_d{shape.dim}_h{shape.heads}"
    if (out / "lm_full.onnx").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    wrappers = {"lm_cross": G.LMCrossGraph, "lm_full": G.LMFullGraph}
    for spec in G.lm_specs(lm, magnet=True, ar=False):
        example = random_inputs(spec, EXPORT_SIZES, {"input_ids": lm.card + 1})
        export_graph(wrappers[spec.name](lm).eval(), spec, example, out / spec.file, OPSET,
                     fused_heads=shape.heads if spec.name == "lm_full" else None)
    return out


def onnx_backend(lm, shape: Shape, folder: Path, threads: int) -> OnnxBackend:
    """The bundle runtime's backend over the two graphs (the manifest fields it reads)."""
    manifest = {"num_codebooks": shape.n_q, "card": shape.card, "special_token_id": shape.card,
                "graphs": {"lm_cross": {"file": "lm_cross.onnx"},
                           "lm_full": {"file": "lm_full.onnx"}},
                "lms": {"magnet": {"num_layers": shape.layers, "num_heads": shape.heads,
                                   "head_dim": shape.dim // shape.heads,
                                   "graphs": {"cross": "lm_cross", "full": "lm_full"}}}}
    return OnnxBackend(folder, manifest, "magnet", provider="cpu", threads=threads)


class MaskedAttention(torch.nn.Module):
    """Self-attention over all T x T pairs with the band as a mask (lm_full before issue 19)."""

    def forward(self, q, k, v, band):
        mask = self_attention_mask(q.shape[2], 0, False, band, q.device)
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)


class GatheredAttention(torch.nn.Module):
    """Self-attention inside the band only, key windows gathered (lm_full since issue 19)."""

    def forward(self, q, k, v, band):
        return banded_attention_traced(q, k, v, band)


def attention_op_ms(shape: Shape, frames: int, threads: int, workdir: Path,
                    reps: int) -> dict[tuple[str, str], float]:
    """Median ms of one layer's self-attention [2, H, T, Dh] in onnxruntime, both forms, both
    bands (as exported: one MultiHeadAttention, the band an input). Here q, k, v arrive as
    contiguous [2, H, T, Dh], so the gathered form pays a transpose of each, which in the lm_full
    graph meets the projection's own permute (onnxruntime's transpose optimizer merges them)."""
    h, dh = shape.heads, shape.dim // shape.heads
    g = torch.Generator().manual_seed(1)
    q, k, v = torch.randn(3, 2, h, frames, dh, generator=g).unbind(0)
    out = {}
    for name, module in (("masked T x T", MaskedAttention()), ("gathered windows",
                                                                 GatheredAttention())):
        path = workdir / f"attention_{name.split()[0]}_h{h}.onnx"
        with torch.no_grad(), fused_attention(OPSET, h):
            torch.onnx.export(module, (q, k, v, torch.tensor(5)), str(path), dynamo=False,
                              opset_version=OPSET, input_names=["q", "k", "v", "band"],
                              output_names=["out"],
                              dynamic_axes={n: {2: "seq"} for n in ("q", "k", "v", "out")})
        sess = make_session(path, "cpu", threads)
        for band_name, band in (("stage 0", frames), (f"band {DEFAULT_ATTN_BAND}",
                                                      DEFAULT_ATTN_BAND)):
            feeds = {"q": q.numpy(), "k": k.numpy(), "v": v.numpy(),
                     "band": np.array(band, np.int64)}
            sess.run(None, feeds)
            times = []
            for _ in range(reps):
                t0 = time.perf_counter()
                sess.run(None, feeds)
                times.append(time.perf_counter() - t0)
            out[(name, band_name)] = 1000 * statistics.median(times)
    return out


def time_pass(backend, ctx, tokens: torch.Tensor, band: int | None) -> float:
    t0 = time.perf_counter()
    with torch.inference_mode():
        backend.full(tokens, ctx, band, codebook=1)
    return time.perf_counter() - t0


def time_generation(backend, cond, shape: Shape, duration: float) -> tuple[float, torch.Tensor]:
    params = MagnetParams(duration=duration, seed=0)
    t0 = time.perf_counter()
    with torch.inference_mode():
        codes = generate_magnet(backend, cond, params, batch=1, cfg=True,
                                n_frames=int(duration * FRAME_RATE), attn_band=DEFAULT_ATTN_BAND)
    return time.perf_counter() - t0, codes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="4 layers, d 256 (about a minute)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3, help="timed passes per runtime and stage")
    ap.add_argument("--duration", type=float, default=4.0,
                    help="seconds of the timed whole generation (0: none)")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/bench_magnet_onnx"))
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "RESULTS_magnet.md")
    ap.add_argument("--note", default="", help="a line of conditions to record with the table")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    shape = SMALL if a.small else FULL
    load_before = load_line()
    lm, _, cond = build(shape)
    t0 = time.perf_counter()
    folder = export_lm(lm, shape, a.workdir)
    export_s = time.perf_counter() - t0
    runtimes = {"torch": TorchBackend(lm), "onnxruntime": onnx_backend(lm, shape, folder,
                                                                       a.threads)}
    ctxs = {name: b.prepare(cond) for name, b in runtimes.items()}
    frames = int(SEGMENT_S * FRAME_RATE)
    tokens = torch.randint(0, shape.card + 1, (2, shape.n_q, frames),
                           generator=torch.Generator().manual_seed(0))
    passes: dict[tuple[str, str], list[float]] = {}
    stages = {"stage 0 (full attention)": None, f"stage >= 1 (band {DEFAULT_ATTN_BAND})":
              DEFAULT_ATTN_BAND}
    for name, b in runtimes.items():   # untimed: one-off set-up of each runtime and stage
        for band in stages.values():
            time_pass(b, ctxs[name], tokens, band)
    for _ in range(a.reps):
        for stage, band in stages.items():
            for name, b in runtimes.items():
                passes.setdefault((stage, name), []).append(time_pass(b, ctxs[name], tokens, band))
    ops = attention_op_ms(shape, frames, a.threads, folder, reps=20)
    gen: dict[str, float] = {}
    codes: dict[str, torch.Tensor] = {}
    if a.duration > 0:
        for name, b in runtimes.items():
            gen[name], codes[name] = time_generation(b, cond, shape, a.duration)
    load_after = load_line()
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    rows = []
    for stage in stages:
        t, o = (statistics.median(passes[(stage, n)]) for n in ("torch", "onnxruntime"))
        runs = ", ".join(f"{1000 * x:.0f}" for n in ("torch", "onnxruntime")
                         for x in passes[(stage, n)])
        rows.append(f"| one pass, {stage} | {1000 * t:.0f} | {1000 * o:.0f} | {t / o:.2f} | "
                    f"{runs} |")
    if gen:
        # sampled: float-level logit differences may flip a draw, which then propagates
        differ = int((codes["torch"] != codes["onnxruntime"]).sum())
        rows.append(f"| whole MAGNeT generation, {a.duration:g} s (50 passes) | "
                    f"{1000 * gen['torch']:.0f} | {1000 * gen['onnxruntime']:.0f} | "
                    f"{gen['torch'] / gen['onnxruntime']:.2f} | tokens that differ: {differ} of "
                    f"{codes['torch'].numel()} |")
    text = "\n".join([
        "", f"## onnxruntime vs torch MAGNeT, {'small' if a.small else 'full'} shape "
        f"({shape.layers} layers, d {shape.dim}, {shape.heads} heads), {time.strftime('%Y-%m-%d %H:%M')}",
        "", f"`PYTHONPATH=. python3 bench/bench_magnet_onnx.py{' --small' if a.small else ''} "
        f"--threads {a.threads} --reps {a.reps} --duration {a.duration:g}` on "
        f"{platform.machine()}, torch {torch.__version__}, onnxruntime "
        f"{__import__('onnxruntime').__version__}; passes over {SEGMENT_S:g} s ({frames} frames), "
        f"batch 2 (CFG), one codebook's logits; export (or cache) {export_s:.0f} s; peak RSS of "
        f"the process (both runtimes) {peak_mib:.0f} MiB.",
        f"Load before: {load_before}; after: {load_after}." + (f" {a.note}" if a.note else ""),
        "", "| what | torch ms | onnxruntime ms | torch / onnxruntime | runs (torch..., ort...) |",
        "|---|---|---|---|---|", *rows, "",
        f"| one layer's self-attention in onnxruntime, [2, {shape.heads}, {frames}, "
        f"{shape.dim // shape.heads}] | stage 0 ms | band {DEFAULT_ATTN_BAND} ms |",
        "|---|---|---|",
        *[f"| {name} | {ops[(name, 'stage 0')]:.2f} | "
          f"{ops[(name, f'band {DEFAULT_ATTN_BAND}')]:.2f} |"
          for name in ("masked T x T", "gathered windows")], ""])
    append_results(a.out, "MAGNeT vs AR vs hybrid decoding (bench/bench_magnet.py)", text)


if __name__ == "__main__":
    main()
