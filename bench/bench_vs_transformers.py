"""Our AR decoding (onnxruntime bundles, optionally torch eager) vs transformers ``generate``,
side by side in one process, on the same weights and thread count (CPU).

The LM is a random musicgen-small-shaped ``MusicgenForCausalLM`` (24 layers, d 1024, 16 heads,
4 x 2048, cross-attention to T5-base width 768; ``--small``: 4 layers, d 256), seeded; our LM
gets the very same tensors through the HF checkpoint loader's name map, and is exported as an
fp32, int8 and int4 bundle. Batch 1 with CFG 3 (2 rows), greedy, ``--seconds`` of audio.

Phases:

1. Exports (in a child process; cached in ``--workdir``, keyed by shape, seed and a hash of the
   export and model code). ``--export-only`` stops here, so the timed run is a separate one.
2. Peak RSS: each variant loads and generates once in its own fresh (spawned) process.
3. Agreement: our fp32 bundle's greedy tokens against transformers' on the same weights,
   condition and a random token sequence, teacher-forced; below ``--min-agreement`` (0.9) of
   equal positions the two sides do not compute the same model and the benchmark refuses to
   report ratios.
4. Timing, in this process with every variant loaded: ``--rounds`` rounds, the variants in
   rotated order each round (transformers between ours), each timed from its per-step
   callbacks (ours: ``progress_callback``; transformers: a logits processor), so both exclude
   text encoding, the first (prefill) call and audio decoding. ms/step: the median over all of a
   variant's steps; steps/s: steps / time between the first and last step, best round.

The memory floor of a weight format is the bytes of the initializers its ``lm_step`` graph reads
per step (embedding tables excluded: a step reads one row each) over the measured bandwidth.

The machine must be otherwise idle: the benchmark refuses to start when the 1-minute load
average is above ``--max-load``, and refuses to report when other processes used more than
``--max-load`` cores during any timed run (bench/_load_monitor.py). ``--allow-load`` prints the
numbers anyway, labelled as taken under load (not valid)::

    PYTHONPATH=. python3 bench/bench_vs_transformers.py --out bench/RESULTS_onnx.md
    PYTHONPATH=. python3 bench/bench_vs_transformers.py --small --allow-load   # a minute
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import sys
import time
from dataclasses import replace
from pathlib import Path
from queue import Empty
from typing import Any, Callable

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import append_results, bandwidth_gbs, cpu_line, load_line  # noqa: E402
from bench._load_monitor import LoadMonitor, idle_refusal  # noqa: E402
from engine.models.lm import LMConfig, musicgen_small_config  # noqa: E402

SEED = 1234
CFG_COEF = 3.0
TEXT = ["dusty boom-bap drums, vinyl crackle"]
FORMATS = ("fp32", "int8", "int4")
HF = "transformers generate"
TORCH = "torch eager (ours)"


def lm_config(small: bool) -> LMConfig:
    cfg = musicgen_small_config()
    return replace(cfg, num_layers=4, dim=256, num_heads=4) if small else cfg


# ---------------------------------------------------------------- the same weights, both sides


def build_hf(cfg: LMConfig) -> Any:
    """transformers' MusicGen decoder of ``cfg``'s shape with seeded random weights."""
    from transformers import MusicgenDecoderConfig, MusicgenForCausalLM
    hf_cfg = MusicgenDecoderConfig(vocab_size=cfg.card, hidden_size=cfg.dim,
                                   num_hidden_layers=cfg.num_layers,
                                   num_attention_heads=cfg.num_heads,
                                   ffn_dim=cfg.hidden_scale * cfg.dim, num_codebooks=cfg.n_q,
                                   max_position_embeddings=4096, pad_token_id=cfg.card,
                                   bos_token_id=cfg.card, decoder_start_token_id=cfg.card)
    torch.manual_seed(SEED)
    return MusicgenForCausalLM(hf_cfg).eval()


def cond_projection(cfg: LMConfig) -> torch.nn.Linear:
    """The text-width projection (``cond_proj``, which the HF decoder alone does not have),
    seeded: the same in every process."""
    torch.manual_seed(SEED + 1)
    return torch.nn.Linear(cfg.cond_dim, cfg.dim).eval()


def text_encoder(cfg: LMConfig) -> Any:
    """The debug text encoder at the LM's text width (seeded; run once per generation, untimed)."""
    from engine.conditioners.text import debug_text_encoder
    return debug_text_encoder(dim=cfg.cond_dim)


def build_ours(cfg: LMConfig, hf: Any, seconds: float) -> Any:
    """Our MusicGen whose LM holds ``hf``'s tensors (mapped by the HF checkpoint loader) and
    ``cond_projection``, with the debug text encoder and the debug codec (neither is timed)."""
    from engine.loaders.lm_checkpoint import _empty_lm, _load_lm, _map_hf
    from engine.models.encodec import EncodecModel, debug_codec_config
    from engine.models.musicgen import MusicGen
    state = {f"decoder.{k}": v for k, v in hf.state_dict().items()}
    mapped = _map_hf(state, melody=False, cfg=cfg, source="bench")
    proj = cond_projection(cfg)
    mapped["cond_proj.weight"] = ("bench", proj.weight.detach())
    mapped["cond_proj.bias"] = ("bench", proj.bias.detach())
    lm = _empty_lm(cfg)
    _load_lm(lm, mapped, "bench")
    codec = EncodecModel(replace(debug_codec_config(), bins=cfg.card)).eval()
    return MusicGen("bench", codec, lm, text_encoder(cfg), max_duration=seconds)


def hf_condition(cfg: LMConfig) -> torch.Tensor:
    """The cross-attention input our LM computes for ``TEXT`` with CFG ([cond; null] rows,
    projected to the LM width and zeroed where the mask is 0, as ``project_condition`` does),
    handed to transformers as ``encoder_hidden_states``: both sides attend to the same states.

    Without a mask: transformers 5.25's ``generate`` fails on an encoder mask with a zero (a
    size mismatch between the 4-D cross mask and the keys); ours has none either (masked
    positions are zero states, attended to by every row on both sides)."""
    hidden, mask = text_encoder(cfg).encode(TEXT)
    rows, rows_mask = torch.cat([hidden, torch.zeros_like(hidden)]), torch.cat([mask, 0 * mask])
    with torch.inference_mode():
        return cond_projection(cfg)(rows) * rows_mask.to(rows.dtype)[..., None]


# ---------------------------------------------------------------- one timed run per variant


def run_ours(model: Any, seconds: float) -> list[float]:
    """Generate ``seconds`` greedily with CFG; the time of each decoding step's end."""
    stamps: list[float] = []
    model.set_generation_params(duration=seconds, use_sampling=False, cfg_coef=CFG_COEF)
    model.generate(TEXT, progress_callback=lambda done, total: stamps.append(time.perf_counter()))
    return stamps


def run_hf(hf: Any, cond: torch.Tensor, steps: int) -> list[float]:
    """transformers ``generate`` of ``steps`` tokens per codebook row, greedy, CFG; the time of
    each step (its logits processors run once per step).

    The cache is passed in, an ``EncoderDecoderCache`` of two ``DynamicCache``s (as ``cache``,
    the argument's name in transformers 5.25): left to itself, ``MusicgenForCausalLM.generate``
    in 5.25 hands its ``prepare_inputs_for_generation`` no cache, which then feeds the whole
    sequence again at every step (2.7x slower at --small; not transformers' own speed)."""
    from transformers import (DynamicCache, EncoderDecoderCache, LogitsProcessor,
                              LogitsProcessorList)
    stamps: list[float] = []

    class Stamp(LogitsProcessor):
        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            stamps.append(time.perf_counter())
            return scores

    n_q = hf.config.num_codebooks
    ids = torch.full((n_q, 1), hf.config.pad_token_id, dtype=torch.long)
    with torch.inference_mode():
        hf.generate(ids, encoder_hidden_states=cond,
                    cache=EncoderDecoderCache(DynamicCache(), DynamicCache()),
                    max_new_tokens=steps, min_new_tokens=steps, do_sample=False,
                    guidance_scale=CFG_COEF, num_beams=1, num_return_sequences=1,
                    logits_processor=LogitsProcessorList([Stamp()]))
    return stamps


def agreement(ours: Any, hf: Any, cond: torch.Tensor, steps: int) -> float:
    """The share of positions where our bundle's greedy token (argmax) equals transformers' on
    the same weights, condition rows and random token sequence, teacher-forced: the check that
    both sides compute the same model. (Free-running generations part at the first near-tie
    that float rounding flips and measure nothing after it: 0.899 at full size on the same
    model, where teacher-forced gives 1.000.)"""
    from engine.backends.base import ConditionTensors
    n_q = hf.config.num_codebooks
    torch.manual_seed(SEED)
    tokens = torch.randint(0, hf.config.vocab_size, (2, n_q, steps))
    hidden, mask = ours.text_encoder.encode(TEXT)
    rows = ConditionTensors(torch.cat([hidden, torch.zeros_like(hidden)]),
                            torch.cat([mask, 0 * mask]).float())
    ctx = ours.backend.prepare(rows)
    logits = ours.backend.step(tokens, ours.backend.new_cache(ctx, steps), ctx)[0]
    with torch.inference_mode():
        ref = hf(input_ids=tokens.reshape(2 * n_q, steps), encoder_hidden_states=cond).logits
    return float((logits.argmax(-1) == ref.reshape(logits.shape).argmax(-1)).float().mean())


def step_stats(stamps: list[float]) -> dict[str, float]:
    """ms/step (median interval) and steps/s (intervals over their span) of one run; the first
    step (prefill) is not an interval."""
    gaps = np.diff(stamps)
    return {"steps": len(stamps), "ms": 1000 * float(np.median(gaps)),
            "steps_per_s": len(gaps) / (stamps[-1] - stamps[0])}


# ---------------------------------------------------------------- phases


def export_all(small: bool, seconds: float, workdir: Path, formats: tuple[str, ...]) -> None:
    """Export the missing bundles of ``formats`` into ``workdir/<format>`` and write their floors."""
    from export.bundle import export_bundle
    cfg = lm_config(small)
    ours = build_ours(cfg, build_hf(cfg), seconds)
    for fmt in formats:
        out = workdir / fmt
        if (out / "manifest.json").is_file():
            continue
        t = time.perf_counter()
        export_bundle(ours, out, quantize=None if fmt == "fp32" else fmt, overwrite=True,
                      log=lambda s: None)
        (out / "bench_floor.json").write_text(json.dumps(
            {"step_bytes": step_read_bytes(out / "lm_step.onnx")}))
        print(f"exported {fmt} in {time.perf_counter() - t:.0f} s", flush=True)


def export_code_hash() -> str:
    """A short hash of export/ and the engine's model code: cached bundles are reused only when
    the code that wrote them is unchanged."""
    import hashlib
    h = hashlib.sha256()
    for f in sorted([*(ROOT / "export").glob("*.py"), *(ROOT / "engine" / "models").glob("*.py"),
                     *(ROOT / "engine" / "modules").glob("*.py")]):
        h.update(f.read_bytes())
    return h.hexdigest()[:10]


def step_read_bytes(path: Path) -> int:
    """Bytes of the initializers a step graph reads, except tables read by Gather (embeddings:
    one row per codebook per step)."""
    import onnx
    graph = onnx.load(str(path)).graph
    gathered = {n.input[0] for n in graph.node if n.op_type == "Gather"}
    return sum(int(np.prod(t.dims)) * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
               for t in graph.initializer if t.name not in gathered)


def load_variant(name: str, small: bool, seconds: float, workdir: Path, threads: int) -> Any:
    """The model behind a variant name: HF's decoder, our torch model, or a bundle (by format)."""
    cfg = lm_config(small)
    if name == HF:
        return build_hf(cfg)
    if name == TORCH:
        return build_ours(cfg, build_hf(cfg), seconds)
    from engine.api import MAGNeT, MusicGen
    from engine.loaders.onnx_bundle import open_bundle
    from engine.pretrained import assemble
    return assemble(open_bundle(workdir / name, provider="cpu", threads=threads), MusicGen, MAGNeT)


def measure_once(model: Any, name: str, seconds: float, cond: Any, steps: int) -> list[float]:
    return run_hf(model, cond, steps) if name == HF else run_ours(model, seconds)


def rss_child(name: str, small: bool, seconds: float, workdir: str, threads: int, steps: int,
              queue: Any) -> None:
    """In a fresh process: load one variant, generate once; report (MB before loading, peak MB,
    steps generated)."""
    torch.set_num_threads(threads)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # transformers' condition comes from the text encoder, as ours does inside the bundle
    cond = hf_condition(lm_config(small)) if name == HF else None
    model = load_variant(name, small, seconds, Path(workdir), threads)
    stamps = measure_once(model, name, seconds, cond, steps)
    queue.put((base, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, len(stamps)))


def peak_rss(name: str, small: bool, seconds: float, workdir: Path, threads: int, steps: int
             ) -> tuple[float, float, int]:
    """``rss_child`` in a spawned process (a fork would carry this process's pages)."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    p = ctx.Process(target=rss_child,
                    args=(name, small, seconds, str(workdir), threads, steps, queue))
    p.start()
    while True:
        try:
            out = queue.get(timeout=1.0)
            break
        except Empty:
            if not p.is_alive():
                raise RuntimeError(f"{name}: the peak-RSS process failed (exit code "
                                   f"{p.exitcode}; its traceback is above)") from None
    p.join()
    return out


# ---------------------------------------------------------------- report


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--small", action="store_true", help="4 layers, d 256 (a minute)")
    ap.add_argument("--seconds", type=float, default=5.0, help="audio seconds (default 5)")
    ap.add_argument("--rounds", type=int, default=2, help="timed runs per variant (default 2)")
    ap.add_argument("--formats", default=",".join(FORMATS),
                    help=f"bundle formats, comma-separated (default {','.join(FORMATS)})")
    ap.add_argument("--torch", action="store_true", help="also time our torch eager backend")
    ap.add_argument("--threads", type=int, default=os.cpu_count(),
                    help="threads for every runtime (default: all cores)")
    ap.add_argument("--max-load", type=float, default=0.5,
                    help="most cores other processes may use (default 0.5)")
    ap.add_argument("--allow-load", action="store_true",
                    help="report even under load, labelled as not valid")
    ap.add_argument("--workdir", default="/tmp/barforge-bench-vs-transformers",
                    help="where the bundles are exported and kept between runs")
    ap.add_argument("--out", default=None, help="also append the report to this markdown file")
    ap.add_argument("--min-agreement", type=float, default=0.9,
                    help="least share of equal teacher-forced greedy tokens, our fp32 vs "
                         "transformers, for the ratios to be reported (default 0.9)")
    ap.add_argument("--export-only", action="store_true",
                    help="export the bundles into --workdir (cached) and stop")
    args = ap.parse_args()
    formats = tuple(f for f in args.formats.split(",") if f)
    bad = [f for f in formats if f not in FORMATS]
    if bad or "fp32" not in formats:
        ap.error(f"--formats: got {formats}; expected a subset of {FORMATS} with fp32 (the "
                 "weights transformers reads: its floor)")

    refusal = idle_refusal(args.max_load)
    if refusal and not args.allow_load and not args.export_only:
        print(f"refusing to measure: {refusal} (pass --allow-load for numbers labelled as "
              "taken under load)", file=sys.stderr)
        return 2
    load_before = load_line()
    torch.set_num_threads(args.threads)
    cfg = lm_config(args.small)
    tag = f"L{cfg.num_layers}-d{cfg.dim}-s{args.seconds:g}-seed{SEED}-{export_code_hash()}"
    workdir = Path(args.workdir) / tag
    workdir.mkdir(parents=True, exist_ok=True)

    ctx = mp.get_context("fork")   # nothing heavy is loaded yet: the child starts light
    p = ctx.Process(target=export_all, args=(args.small, args.seconds, workdir, formats))
    p.start()
    p.join()
    if p.exitcode:
        print(f"export failed (exit code {p.exitcode})", file=sys.stderr)
        return 1
    if args.export_only:
        print(f"bundles in {workdir}")
        return 0

    variants = [formats[0], HF, *formats[1:]] + ([TORCH] if args.torch else [])
    rss, steps = {}, 0
    for name in variants:   # ours first: transformers generates as many steps as we did
        rss[name] = peak_rss(name, args.small, args.seconds, workdir, args.threads, steps)
        steps = steps or rss[name][2]
        print(f"peak RSS {name}: {rss[name][1]:.0f} MB", flush=True)

    models = {name: load_variant(name, args.small, args.seconds, workdir, args.threads)
              for name in variants}
    cond = hf_condition(cfg)
    agree = agreement(models["fp32"], models[HF], cond, steps)
    print(f"teacher-forced greedy agreement, our fp32 vs transformers: {agree:.3f}", flush=True)
    if agree < args.min_agreement:
        print(f"refusing to report: our fp32 greedy tokens agree with transformers' on only "
              f"{agree:.3f} of the positions (< --min-agreement {args.min_agreement}): the two "
              "sides do not compute the same model", file=sys.stderr)
        return 3
    for name, model in models.items():   # warm-up: allocations, kernels, first-call costs
        measure_once(model, name, 0.2, cond, 10)
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
    worst_load = 0.0
    for r in range(args.rounds):
        for name in variants[r % len(variants):] + variants[:r % len(variants)]:
            with LoadMonitor() as mon:
                stamps = measure_once(models[name], name, args.seconds, cond, steps)
            stats = step_stats(stamps)
            stats["other_cores"] = mon.sample.other_cores
            worst_load = max(worst_load, mon.sample.other_cores)
            runs[name].append(stats)
            print(f"round {r + 1} {name}: {stats['ms']:.1f} ms/step, "
                  f"{stats['steps_per_s']:.2f} steps/s ({stats['steps']} steps), other load "
                  f"{stats['other_cores']:.2f} cores", flush=True)
    loaded = worst_load > args.max_load
    if loaded and not args.allow_load:
        print(f"refusing to report: other processes used up to {worst_load:.2f} cores during a "
              f"timed run (> {args.max_load}); rerun on an idle machine", file=sys.stderr)
        return 2

    bw = bandwidth_gbs()
    floors = {f: json.loads((workdir / f / "bench_floor.json").read_text())["step_bytes"]
              for f in formats}
    fp32_bytes = floors["fp32"]
    hf_speed = max(s["steps_per_s"] for s in runs[HF])
    rows = []
    for name in variants:
        best = max(s["steps_per_s"] for s in runs[name])
        ms = float(np.median([s["ms"] for s in runs[name]]))
        step_bytes = floors.get(name, fp32_bytes)
        floor_ms = step_bytes / (bw * 1e9) * 1000
        label = HF if name == HF else TORCH if name == TORCH else f"onnxruntime {name}"
        weights = "fp32" if name in (HF, TORCH) else name
        rows.append(f"| {label} | {weights} | {ms:.1f} | {best:.2f} | {best / hf_speed:.2f}x | "
                    f"{step_bytes / 1e6:.0f} MB, {floor_ms:.1f} ms ({ms / floor_ms:.2f}x) | "
                    f"{rss[name][1]:.0f} MB |")
    status = ("UNDER LOAD, NOT VALID: other processes used up to "
              f"{worst_load:.2f} cores during a timed run" if loaded else
              f"idle: other processes used at most {worst_load:.2f} cores during any timed run")
    shape = f"{cfg.num_layers} layers, d {cfg.dim}, {cfg.num_heads} heads, {cfg.n_q}x{cfg.card}"
    import onnxruntime
    import transformers
    report = "\n".join([
        f"\n## bench_vs_transformers.py{' --small' if args.small else ''} "
        f"({time.strftime('%Y-%m-%d %H:%M')}): {status}",
        "",
        f"Command: `PYTHONPATH=. python3 {' '.join(['bench/bench_vs_transformers.py', *sys.argv[1:]])}`. "
        f"CPU {cpu_line()}, "
        f"{args.threads} threads for every runtime; onnxruntime {onnxruntime.__version__}, "
        f"transformers {transformers.__version__}, torch {torch.__version__}. LM: {shape}, the "
        f"same random weights on both sides; batch 1, CFG {CFG_COEF:g} (2 rows), greedy, "
        f"{args.seconds:g} s ({steps} steps); {args.rounds} rounds alternating in one process; "
        f"teacher-forced greedy tokens of our fp32 and transformers agree on {agree:.3f} of "
        "the positions. "
        f"Bandwidth {bw:.1f} GB/s. Load before: {load_before}; after: {load_line()}.",
        "",
        "| runtime | weights | ms/step (median) | steps/s (best round) | vs transformers | "
        "floor: bytes/step, ms (x floor) | peak RSS |",
        "|---|---|---|---|---|---|---|",
        *rows, "",
        "Peak RSS: each variant loaded and generating once in its own fresh process "
        f"(interpreter + imports: {min(r[0] for r in rss.values()):.0f}-"
        f"{max(r[0] for r in rss.values()):.0f} MB of it). Floor: the bytes of the initializers "
        "one lm_step reads (embedding tables excluded) over the bandwidth; transformers and "
        "torch read the fp32 weights.", ""])
    if args.out:
        append_results(Path(args.out), "ONNX export and onnxruntime", report)
    else:
        print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
