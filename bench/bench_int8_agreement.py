"""int8 / int4 vs fp32 greedy agreement of a trained AR LM on real token sequences, through
onnxruntime.

The fp32 ``lm_step`` graph of an exported bundle (run from an empty cache over the whole
sequence, as it runs a prompt) is quantized with onnxruntime's quantizers
(export/quantize.py): dynamic per-channel int8 (every MatMul/Gather, and all but the output
heads: the int8 format before block-wise weights); block-wise MatMulNBits 8-bit with fp32 heads
(the shipped int8) and 4-bit with 4-bit, 8-bit and fp32 heads; and the shipped int4
(``quantize_graph``: 4-bit only for weights of >= ``NBITS_MIN_4BIT_ELEMENTS``, else 8-bit).
Sequences: the torch model's own AR generations for ``--prompts`` held-out captions (delay
pattern, as the LM reads them). Agreement = the share of positions where the int8 graph's argmax
equals fp32's, teacher-forced on the same sequence (a free-running run parts at the first
differing token and measures nothing after it)::

    PYTHONPATH=. python3 bench/bench_int8_agreement.py --model default

Results are appended to bench/RESULTS_onnx.md (``--out``).
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import append_results  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--bundle", default="/tmp/barforge-default-bundle",
                    help="fp32 bundle of --model (exported there when missing)")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--out", default=str(ROOT / "bench" / "RESULTS_onnx.md"))
    args = ap.parse_args()
    import onnxruntime as ort
    import torch

    from engine.loaders.onnx_manifest import read_manifest
    from engine.recipes.data.synth import sample_spec
    from engine.conditioners.caption import describe
    from engine.api import load_model
    from export.quantize import quantize_graph, quantize_int8, quantize_nbits

    if not (Path(args.bundle) / "manifest.json").is_file():
        subprocess.run([sys.executable, "-m", "engine.cli", "export", "--model", args.model,
                        "--out", args.bundle], check=True, cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    model = load_model(args.model)
    manifest = read_manifest(Path(args.bundle))
    ar = "ar" if "ar" in manifest["lms"] else "magnet"
    graphs = manifest["lms"][ar]["graphs"]
    step = Path(args.bundle) / manifest["graphs"][graphs["step"]]["file"]
    cross = Path(args.bundle) / manifest["graphs"][graphs["cross"]]["file"]
    captions = [describe(s.description, s.bpm, s.key) for s in (sample_spec(999_999, i) for i in range(args.prompts))]
    model.set_generation_params(duration=args.seconds, mode="ar", seed=0, use_sampling=True)
    codes = model.generate(captions, return_tokens=True)[1]                       # [B, K, T]
    special = model.ar_backend.special_token_id if hasattr(model, "ar_backend") else model.backend.special_token_id
    full = model.pattern.build(codes, special).numpy()                             # [B, K, T + K]
    seq, real = full[..., :-1], full[..., 1:] != special   # inputs; positions predicting real tokens
    hidden, mask = model.text_encoder.encode(captions)
    beat = model._beat(captions, None)   # each caption's own "bpm: N"
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    x = ort.InferenceSession(str(cross), opts, providers=["CPUExecutionProvider"])
    kv = x.run(None, {"encoder_hidden_states": hidden.float().numpy(),
                      "encoder_attention_mask": mask.long().numpy()})
    feeds = {o.name.replace("present.", "past_key_values.", 1): v for o, v in zip(x.get_outputs(), kv)}
    feeds["input_ids"] = seq.astype(np.int64)
    # the prompt form of lm_step: an empty cache whose buffers hold exactly the sequence
    lm = manifest["lms"][ar]
    feeds["past_sequence_length"] = np.array(0, dtype=np.int64)
    for i in range(lm["num_layers"]):
        for part in ("key", "value"):
            feeds[f"past_key_values.{i}.decoder.{part}"] = np.zeros(
                (seq.shape[0], lm["num_heads"], seq.shape[2], lm["head_dim"]), np.float32)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        variants = {"fp32": step}
        for name, quantize in (
                ("dynamic int8 (all MatMul)", lambda d: quantize_int8(step, d, keep_fp32=())),
                ("dynamic int8, fp32 heads", lambda d: quantize_int8(step, d)),
                ("block int8, fp32 heads (shipped int8)", lambda d: quantize_nbits(step, d, 8, None)),
                ("block int4 (all MatMul)", lambda d: quantize_nbits(step, d, 4, 4)),
                ("block int4, 8-bit heads (int4 before the size rule)",
                 lambda d: quantize_nbits(step, d, 4, 8)),
                ("block int4, fp32 heads", lambda d: quantize_nbits(step, d, 4, None)),
                ("shipped int4 (4-bit where >= 1M elements, else 8-bit)",
                 lambda d: quantize_graph(step, d, "int4", "lm_step"))):
            dst = Path(tmp) / f"{len(variants)}.onnx"
            quantize(dst)
            variants[name] = dst
        for name, path in variants.items():
            s = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            inputs = {i.name for i in s.get_inputs()}
            run = {k: v for k, v in feeds.items() if k in inputs}
            if "beat" in inputs:
                run["beat"] = (beat if beat is not None else torch.zeros(len(captions), 3)).numpy()
            t = time.perf_counter()
            logits = s.run(["logits"], run)[0]
            results[name] = (logits.argmax(-1), time.perf_counter() - t, path.stat().st_size)
    ref = results["fp32"][0]
    lines = [f"\n## bench_int8_agreement.py ({time.strftime('%Y-%m-%d %H:%M')}), model `{args.model}`\n\n"
             f"{args.prompts} held-out captions x {args.seconds} s, the torch model's AR generations "
             f"({int(real.sum())} real-token positions), teacher-forced through `lm_step`:\n\n"
             "| graph | greedy agreement with fp32 | prompt time (s) | size (MB) |\n|---|---|---|---|\n"]
    for name, (argmax, secs, size) in results.items():
        agree = float((argmax == ref)[real].mean())
        lines.append(f"| {name} | {agree:.3f} | {secs:.2f} | {size / 1e6:.1f} |\n")
    lines.append(f"\nPeak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB.\n")
    append_results(Path(args.out), "ONNX export and onnxruntime", "".join(lines))


if __name__ == "__main__":
    main()
