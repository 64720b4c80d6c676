"""onnxruntime vs torch eager, each in its own process (CPU): AR, MAGNeT, codec.

The comparison with transformers ``generate`` is bench/bench_vs_transformers.py (same weights,
alternating in one process, load-checked); this script's former "vs transformers" column
compared separate processes under whatever load there was and is gone (bench/RESULTS_onnx.md).

Same random musicgen-small-shaped LM (24 layers, d 1024, 16 heads, 4 x 2048, T5-width text)
for every runtime, batch 1 with CFG (2 rows), greedy:

- AR, ``--seconds`` of audio: onnxruntime fp32 and int8 bundles, our torch eager backend,
  steps/s and the ratio to torch eager;
  int8 greedy token agreement with fp32 (teacher-forced on fp32's sequence, every step).
- MAGNeT, ``--magnet-seconds`` segment: onnxruntime lm_full vs torch.
- Codec decoder real-time factor (decode seconds / audio seconds), torch and onnxruntime.
- The floor: weight bytes per step / measured memory bandwidth, and step time / floor.

Every measurement runs in its own forked process so the peak RSS beside it is its own.
``--small`` uses a small LM (4 layers, d 256) and the debug codec: runs in a minute or two.
Results are appended to bench/RESULTS_onnx.md.

    PYTHONPATH=. python3 bench/bench_onnx.py --small
    PYTHONPATH=. python3 bench/bench_onnx.py            # full size: minutes, several GB
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import bandwidth_gbs, cpu_line, load_line  # noqa: E402
from engine.models.lm import LMConfig, musicgen_small_config  # noqa: E402

SEED = 1234
TEXT = ["dusty boom-bap drums, vinyl crackle"]


def lm_config(small: bool) -> LMConfig:
    cfg = musicgen_small_config()
    return replace(cfg, num_layers=4, dim=256, num_heads=4) if small else cfg


def build_musicgen(small: bool, magnet: bool = False):
    from engine.conditioners.text import debug_text_encoder
    from engine.models.encodec import EncodecModel, debug_codec_config, encodec_32khz_config
    from engine.models.lm import LMModel
    from engine.models.musicgen import MusicGen
    cfg = lm_config(small)
    codec_cfg = debug_codec_config() if small else replace(encodec_32khz_config(),
                                                           kmeans_init=False)
    if small:
        codec_cfg = replace(codec_cfg, bins=cfg.card)
    torch.manual_seed(SEED)
    codec = EncodecModel(codec_cfg).eval()
    lm = LMModel(replace(cfg, causal=not magnet)).eval()
    text = debug_text_encoder(dim=cfg.cond_dim)
    if magnet:
        from engine.models.magnet import MAGNeT
        return MAGNeT("bench-magnet", codec, lm, text, max_duration=10.0)
    return MusicGen("bench", codec, lm, text, max_duration=30.0)


def in_child(fn, *args):
    """Run ``fn(*args)`` in a forked process; returns (its result, its peak RSS in MB)."""
    ctx = mp.get_context("fork")
    q = ctx.Queue()

    def target():
        try:
            out = fn(*args)
            q.put((out, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, None))
        except Exception as e:  # noqa: BLE001 - reported in the parent
            q.put((None, 0.0, f"{type(e).__name__}: {e}"))
    p = ctx.Process(target=target)
    p.start()
    out, rss, err = q.get()
    p.join()
    if err:
        raise RuntimeError(f"{fn.__name__}: {err}")
    return out, rss


# ---------------------------------------------------------------- measurements


def export(small: bool, out: str, quantize: str | None, magnet: bool = False) -> float:
    from export.bundle import export_bundle
    t = time.perf_counter()
    export_bundle(build_musicgen(small, magnet), out, quantize=quantize, overwrite=True,
                  log=lambda s: None)
    return time.perf_counter() - t


def _timed_generate(model, seconds: float, **params) -> dict:
    steps = []
    model.set_generation_params(duration=seconds, use_sampling=False, **params)
    model.generate(TEXT, progress_callback=lambda d, n: None)   # warm-up (allocations, kernels)
    t0 = time.perf_counter()
    _, codes = model.generate(TEXT, return_tokens=True,
                              progress_callback=lambda d, n: steps.append(time.perf_counter()))
    total = time.perf_counter() - t0
    step_times = np.diff([t0] + steps)
    return {"steps": len(steps), "seconds": total, "steps_per_s": len(steps) / total,
            "median_step_ms": 1000 * float(np.median(step_times[1:] if len(steps) > 1
                                                     else step_times)),
            "codes": codes.numpy()}


def torch_ar(small: bool, seconds: float) -> dict:
    return _timed_generate(build_musicgen(small), seconds)


def onnx_ar(bundle: str, seconds: float) -> dict:
    from engine.api import load_model
    return _timed_generate(load_model(bundle, provider="cpu"), seconds)


def int8_agreement(fp32: str, int8: str, codes: np.ndarray) -> float:
    """Teacher-forced greedy agreement: argmax of int8 vs fp32 at every step of fp32's sequence."""
    from engine.backends.base import ConditionTensors
    from engine.api import load_model
    from engine.decoding.delay_pattern import DelayPattern
    argmax = []
    for path in (fp32, int8):
        m = load_model(path, provider="cpu")
        hidden, mask = m.text_encoder.encode(TEXT)
        cond = ConditionTensors(torch.cat([hidden, 0 * hidden]), torch.cat([mask, 0 * mask]).float())
        seq = DelayPattern.for_codebooks(m.backend.n_q).build(torch.from_numpy(codes), m.backend.special_token_id)
        seq = seq.repeat(2, 1, 1)
        ctx = m.backend.prepare(cond)
        logits, _ = m.backend.step(seq, m.backend.new_cache(ctx, seq.shape[-1]), ctx)
        mixed = logits[1:] + (logits[:1] - logits[1:]) * 3.0
        argmax.append(mixed.argmax(-1))
    return float((argmax[0] == argmax[1]).float().mean())


def magnet_run(small: bool, bundle: str | None, seconds: float, steps: tuple) -> dict:
    if bundle is None:
        model = build_musicgen(small, magnet=True)
    else:
        from engine.api import load_model
        model = load_model(bundle, provider="cpu")
    passes = []
    model.set_generation_params(duration=seconds, use_sampling=False, decoding_steps=steps)
    t = time.perf_counter()
    model.generate(TEXT, progress_callback=lambda d, n: passes.append(d))
    total = time.perf_counter() - t
    return {"passes": len(passes), "seconds": total, "passes_per_s": len(passes) / total}


def codec_rtf(small: bool, bundle: str | None, seconds: float) -> dict:
    if bundle is None:
        codec = build_musicgen(small).compression_model
    else:
        from engine.loaders.onnx_bundle import open_bundle
        codec = open_bundle(bundle, provider="cpu").codec
    frames = int(seconds * codec.frame_rate)
    codes = torch.randint(0, codec.cardinality, (1, codec.num_codebooks, frames))
    with torch.inference_mode():
        codec.decode(codes)
        t = time.perf_counter()
        codec.decode(codes)
        total = time.perf_counter() - t
    return {"seconds": total, "rtf": total / seconds}


# ---------------------------------------------------------------- report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="small LM + debug codec (fast)")
    ap.add_argument("--seconds", type=float, default=5.0, help="AR audio seconds (default 5)")
    ap.add_argument("--magnet-seconds", type=float, default=10.0)
    ap.add_argument("--magnet-steps", default="20,10,10,10", help="decoding steps per codebook")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--out", default=str(ROOT / "bench" / "RESULTS_onnx.md"))
    ap.add_argument("--note", default="", help="free text for the report (e.g. other load)")
    args = ap.parse_args()
    load_before = load_line()
    torch.set_num_threads(args.threads)
    mg_steps = tuple(int(s) for s in args.magnet_steps.split(","))
    small = args.small
    tmp = tempfile.mkdtemp(prefix="bench_onnx_")
    fp32, int8, mag = f"{tmp}/fp32", f"{tmp}/int8", f"{tmp}/magnet"
    rows = []

    t_fp32, _ = in_child(export, small, fp32, None)
    t_int8, _ = in_child(export, small, int8, "int8")
    t_mag, _ = in_child(export, small, mag, None, True)
    print(f"exports: fp32 {t_fp32:.1f}s, int8 {t_int8:.1f}s, magnet {t_mag:.1f}s")

    res = {}
    for name, fn, a in (("onnxruntime fp32", onnx_ar, (fp32, args.seconds)),
                        ("onnxruntime int8", onnx_ar, (int8, args.seconds)),
                        ("torch eager (ours)", torch_ar, (small, args.seconds))):
        res[name] = in_child(fn, *a)
        print(name, f"{res[name][0]['steps_per_s']:.2f} steps/s, {res[name][1]:.0f} MB")
    agree, _ = in_child(int8_agreement, fp32, int8, res["onnxruntime fp32"][0]["codes"])
    free = float(np.mean(res["onnxruntime fp32"][0]["codes"] == res["onnxruntime int8"][0]["codes"]))

    cfg = lm_config(small)
    from engine.models.lm import LMModel
    n_params = sum(p.numel() for p in LMModel(cfg).parameters())
    # weights one KV-cached step reads: per layer self-attention q/k/v/out (4 d^2), cross-attention
    # q/out (2 d^2; its k/v projections run once per generation, in prepare), the FFN
    # (2 * hidden_scale * d^2); then the K output heads and one embedding row per codebook.
    # Norms and biases are negligible. Counting every parameter would add the cross-attention
    # k/v projections, cond_proj and whole embedding tables, which a step does not read.
    step_params = (cfg.num_layers * (6 + 2 * cfg.hidden_scale) * cfg.dim ** 2
                   + cfg.n_q * cfg.card * cfg.dim + cfg.n_q * cfg.dim)
    bw = bandwidth_gbs()
    base = res["torch eager (ours)"][0]["steps_per_s"]
    for name, (r, rss) in res.items():
        weight_bytes = step_params * (1 if "int8" in name else 4)
        floor_ms = weight_bytes / (bw * 1e9) * 1000
        rows.append(f"| AR {args.seconds:g} s | {name} | {r['steps_per_s']:.2f} steps/s | "
                    f"{r['median_step_ms']:.1f} ms | {r['steps_per_s'] / base:.2f}x | "
                    f"{floor_ms:.1f} ms ({r['median_step_ms'] / floor_ms:.1f}x) | {rss:.0f} MB |")

    for name, bundle in (("onnxruntime", mag), ("torch eager (ours)", None)):
        r, rss = in_child(magnet_run, small, bundle, args.magnet_seconds, mg_steps)
        rows.append(f"| MAGNeT {args.magnet_seconds:g} s | {name} | {r['passes_per_s']:.2f} "
                    f"passes/s ({r['seconds']:.1f} s) | - | - | - | {rss:.0f} MB |")
    for name, bundle in (("onnxruntime", fp32), ("torch eager (ours)", None)):
        r, rss = in_child(codec_rtf, small, bundle, args.seconds)
        rows.append(f"| codec decode {args.seconds:g} s | {name} | RTF {r['rtf']:.3f} | - | - | "
                    f"- | {rss:.0f} MB |")

    load_after = load_line()
    shape = (f"{cfg.num_layers} layers, d {cfg.dim}, {cfg.num_heads} heads, "
             f"{cfg.n_q}x{cfg.card}, {n_params / 1e6:.1f} M params")
    report = "\n".join([
        f"\n## bench_onnx.py{' --small' if small else ''} ({time.strftime('%Y-%m-%d %H:%M')})",
        "",
        f"Command: `OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')} PYTHONPATH=. "
        f"python3 bench/bench_onnx.py{' --small' if small else ''} --threads {args.threads}`. "
        f"CPU ({cpu_line()}, "
        f"{args.threads} threads; shared machine, numbers are indicative), batch 1 with CFG "
        f"(2 rows), greedy. LM: {shape}. Measured bandwidth {bw:.1f} GB/s.",
        "",
        f"Load before: {load_before}; after: {load_after}." + (f" {args.note}" if args.note else ""),
        "",
        "| run | runtime | speed | median step | vs torch eager | floor (x floor) | peak RSS |",
        "|---|---|---|---|---|---|---|",
        *rows, "",
        f"int8 greedy token agreement with fp32: {agree:.3f} teacher-forced (every step of "
        f"fp32's sequence), {free:.3f} free-running (diverges after the first difference).",
        f"The floor counts each step reading once every weight a KV-cached step uses "
        f"({step_params / 1e6:.1f} M: self-attention, cross-attention q/out, FFN, output heads, "
        f"one embedding row per codebook; not the cross-attention k/v projections, computed once "
        f"per generation), 4 bytes each (int8: 1 byte), at the measured bandwidth.", ""])
    print(report)
    with open(args.out, "a") as f:
        f.write(report)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
