"""Our PyTorch AR decode vs transformers' ``MusicgenForConditionalGeneration.generate``.

One set of random weights shaped like musicgen-small's LM (24 layers, d 1024, 16 heads, FFN
4096, 4 x 2048 codebooks) with a tiny random T5 and a tiny random EnCodec is built as a
transformers model and saved with ``save_pretrained`` into a temporary directory. Both stacks
load that directory: transformers with ``from_pretrained``, ours with
``MusicGen.get_pretrained`` (engine/loaders/lm_checkpoint.py -> ``LMModel`` -> ``TorchBackend``
-> engine/decoding/ar.py). Before timing, the first-step logits of both are compared (same
weights, same computation).

Then, in one process, runs alternate ours / HF / HF / ours ... (ABBA order, so drift in machine
load falls on both equally), each generating ``--seconds`` of audio (T frames at 50 Hz: T + 3
sampled steps of 2 rows, CFG coefficient 3, top-k 250 sampling, batch 1). Timed: text encoding
+ the AR loop. The codec decode that both ``generate`` calls end with is timed separately by a
wrapper around each codec's ``decode`` and subtracted (tiny random codec: milliseconds anyway).

Memory: (1) per-run peak RSS in this process, by resetting the kernel's high-water mark before
each run (``/proc/self/clear_refs`` ``5``) and reading ``VmHWM`` after it, reported as the rise
above the RSS before the run (both models stay resident in this process, so their weights are
in the baseline); (2) unless ``--no-isolated``, one subprocess per stack that loads only that
stack from the same directory and runs one generation: its peak RSS (``VmHWM``; a child's
``ru_maxrss`` would start at this process's RSS, Linux carries it over fork + exec) is the whole
footprint of that stack alone (weights + decode), which ``ru_maxrss`` of this process (both
models, plus building and saving the checkpoint) cannot give.

    PYTHONPATH=. python3 bench/bench_ar.py --small            # seconds (4 layers, d 256, 1 s)
    PYTHONPATH=. python3 bench/bench_ar.py --repeats 3        # musicgen-small shapes: minutes

On a machine whose cores other processes also use, prefix ``OMP_WAIT_POLICY=PASSIVE``: with
libgomp's default (spinning) waits, two threads on two busy cores lose most of their time at
the barriers that end every parallel op, for both stacks alike (see bench/RESULTS_ar.md).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import append_results, cpu_line  # noqa: E402
from engine.backends.base import ConditionTensors  # noqa: E402
from engine import MusicGen  # noqa: E402

FRAME_RATE = 50  # 32 kHz / (8 * 5 * 4 * 4)
CFG_COEF = 3.0
TOP_K = 250
DESCRIPTION = "lofi drums calm piano"
# libgomp reads these when torch loads: set them in the environment of the command
OMP_ENV = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")
WORDS = ["<pad>", "</s>", "<unk>", "lofi", "drums", "jazz", "piano", "calm"]


@dataclass(frozen=True)
class Shape:
    layers: int
    dim: int
    heads: int
    ffn: int
    n_q: int
    card: int


FULL = Shape(layers=24, dim=1024, heads=16, ffn=4096, n_q=4, card=2048)  # musicgen-small's LM
SMALL = Shape(layers=4, dim=256, heads=4, ffn=1024, n_q=4, card=2048)


# ----------------------------------------------------------------------------- checkpoint

def save_checkpoint(shape: Shape, directory: Path, seed: int = 0) -> None:
    """A random HF ``MusicgenForConditionalGeneration`` (tiny T5 and EnCodec) + tokenizer."""
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>",
                                                       special_tokens=[("</s>", 1)])
    transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                                         unk_token="<unk>").save_pretrained(directory)
    text = transformers.T5Config(vocab_size=len(WORDS), d_model=64, d_kv=16, d_ff=128,
                                 num_layers=1, num_heads=4)
    bits = (shape.card - 1).bit_length()
    audio = transformers.EncodecConfig(
        sampling_rate=32000, audio_channels=1, num_filters=4, hidden_size=16,
        upsampling_ratios=[8, 5, 4, 4], codebook_size=shape.card,
        target_bandwidths=[shape.n_q * FRAME_RATE * bits / 1000], num_lstm_layers=1,
        use_causal_conv=False, normalize=False, pad_mode="reflect")
    decoder = transformers.MusicgenDecoderConfig(
        vocab_size=shape.card, max_position_embeddings=2048, num_hidden_layers=shape.layers,
        ffn_dim=shape.ffn, num_attention_heads=shape.heads, hidden_size=shape.dim,
        num_codebooks=shape.n_q, pad_token_id=shape.card, bos_token_id=shape.card,
        audio_channels=1)
    config = transformers.MusicgenConfig(text_encoder=text.to_dict(), audio_encoder=audio.to_dict(),
                                         decoder=decoder.to_dict())
    torch.manual_seed(seed)
    model = transformers.MusicgenForConditionalGeneration(config).eval()
    for name in ("decoder_start_token_id", "pad_token_id", "bos_token_id"):
        setattr(model.generation_config, name, shape.card)
    model.save_pretrained(directory)


class TimedCall:
    """Wraps ``obj.name`` to add up the seconds spent in it (the codec decode to subtract)."""

    def __init__(self, obj: Any, name: str) -> None:
        self.inner: Callable[..., Any] = getattr(obj, name)
        self.seconds = 0.0
        setattr(obj, name, self)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return self.inner(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start


# ----------------------------------------------------------------------------- the two stacks

class Ours:
    """``MusicGen.get_pretrained(dir)`` -> ``generate`` (TorchBackend + engine/decoding/ar.py)."""

    name = "ours"

    def __init__(self, directory: Path) -> None:
        self.model = MusicGen.get_pretrained(str(directory))
        self.codec_decode = TimedCall(self.model.compression_model, "decode")

    def generate(self, frames: int, seed: int, sampling: bool = True) -> tuple[torch.Tensor, int]:
        """Codes [1, K, frames] and the forward passes taken."""
        self.model.set_generation_params(duration=frames / FRAME_RATE, use_sampling=sampling,
                                         top_k=TOP_K, cfg_coef=CFG_COEF, seed=seed)
        passes = [0]
        self.stamps: list[float] = []

        def count(done: int, total: int) -> None:
            passes[0] = done
            self.stamps.append(time.perf_counter())

        _, codes = self.model.generate([DESCRIPTION], progress_callback=count, return_tokens=True)
        return codes, passes[0]

    @torch.inference_mode()
    def first_logits(self) -> torch.Tensor:
        """Conditional row's logits [K, card] of the first step (only special tokens in)."""
        hidden, mask = self.model.text_encoder.encode([DESCRIPTION])
        backend = self.model.backend
        ctx = backend.prepare(ConditionTensors(cross=hidden.float(), cross_mask=mask.float()))
        cache = backend.new_cache(ctx, 1)
        tokens = torch.full((1, backend.n_q, 1), backend.special_token_id, dtype=torch.long)
        logits, _ = backend.step(tokens, cache, ctx)
        return logits[0, :, -1]


class HF:
    """transformers ``MusicgenForConditionalGeneration.from_pretrained(dir).generate``."""

    name = "hf"

    def __init__(self, directory: Path) -> None:
        import transformers

        self.model = transformers.MusicgenForConditionalGeneration.from_pretrained(directory).eval()
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
        self.codec_decode = TimedCall(self.model.audio_encoder, "decode")
        self.passes = 0
        self.stamps: list[float] = []
        self.model.decoder.register_forward_pre_hook(self._count)
        self.n_q = self.model.decoder.num_codebooks
        self.card = self.model.config.decoder.vocab_size

    def _count(self, module: Any, args: Any) -> None:
        self.passes += 1
        self.stamps.append(time.perf_counter())

    @torch.inference_mode()
    def generate(self, frames: int, seed: int, sampling: bool = True) -> tuple[torch.Tensor, int]:
        torch.manual_seed(seed)
        self.passes = 0
        self.stamps = []
        inputs = self.tokenizer([DESCRIPTION], return_tensors="pt")
        captured: list[torch.Tensor] = []
        inner = self.codec_decode.inner

        def capture(audio_codes: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            captured.append(audio_codes[0])  # [B, K, T]
            return inner(audio_codes, *args, **kwargs)

        self.codec_decode.inner = capture
        try:
            self.model.generate(**inputs, do_sample=sampling, top_k=TOP_K,
                                guidance_scale=CFG_COEF, max_new_tokens=frames + self.n_q - 1)
        finally:
            self.codec_decode.inner = inner
        return captured[0], self.passes

    @torch.inference_mode()
    def first_logits(self) -> torch.Tensor:
        inputs = self.tokenizer([DESCRIPTION], return_tensors="pt")
        start = torch.full((self.n_q, 1), self.card, dtype=torch.long)  # [B * K, 1]
        logits = self.model(**inputs, decoder_input_ids=start).logits
        return logits.reshape(self.n_q, -1, self.card)[:, -1]


# ----------------------------------------------------------------------------- memory

def rss_kib() -> tuple[int, int]:
    """(VmRSS, VmHWM) of this process in KiB."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields["VmRSS"], fields["VmHWM"]


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS; False where not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def timed_run(stack: Any, frames: int, seed: int) -> dict:
    """One generation: seconds of text + LM decoding (codec decode subtracted), passes, RSS."""
    before, _ = rss_kib()
    can_reset = reset_peak_rss()
    decode_before = stack.codec_decode.seconds
    start = time.perf_counter()
    codes, passes = stack.generate(frames, seed)
    wall = time.perf_counter() - start
    decode = stack.codec_decode.seconds - decode_before
    _, peak = rss_kib()
    if codes.shape[-2:] != (stack_n_q(stack), frames):
        raise RuntimeError(f"{stack.name} returned codes {tuple(codes.shape)}, expected "
                           f"[1, K, {frames}]")
    seconds = wall - decode
    steps = frames + stack_n_q(stack) - 1  # tokens sampled per row: frames + the delays
    return {"stack": stack.name, "seconds": seconds, "codec_decode_s": decode, "passes": passes,
            "steps": steps, "steps_per_s": steps / seconds,
            "median_step_ms": 1000 * statistics.median(b - a for a, b in
                                                       zip(stack.stamps, stack.stamps[1:])),
            "peak_rise_mib": (peak - before) / 1024 if can_reset else float("nan")}


def stack_n_q(stack: Any) -> int:
    return stack.n_q if isinstance(stack, HF) else stack.model.backend.n_q


# ----------------------------------------------------------------------------- driver

def child(args: argparse.Namespace) -> None:
    """One stack alone in this process: load it, warm up, one timed generation, peak RSS."""
    torch.set_num_threads(args.threads)
    stack = (Ours if args.child == "ours" else HF)(args.dir)
    stack.generate(min(10, args.frames), seed=0)
    result = timed_run(stack, args.frames, seed=0)
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork + exec, so a child's would start
    # at the parent's RSS (both models); VmHWM belongs to this process's own address space.
    result["peak_rss_mib"] = rss_kib()[1] / 1024
    print(json.dumps(result))


def isolated(name: str, directory: Path, frames: int, threads: int) -> dict:
    cmd = [sys.executable, __file__, "--child", name, "--dir", str(directory),
           "--frames", str(frames), "--threads", str(threads)]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ,
                          "PYTHONPATH": str(ROOT)})
    if done.returncode:
        raise RuntimeError(f"isolated {name} run failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=None,
                        help="override the layer count (4 at full width: 1/6 the time)")
    parser.add_argument("--small", action="store_true",
                        help="4 layers, d 256 (seconds), instead of musicgen-small's LM")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per stack (median)")
    parser.add_argument("--seconds", type=float, default=None,
                        help="audio seconds per generation (default 5, 1 with --small)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--no-isolated", action="store_true",
                        help="skip the one-stack-per-subprocess peak-RSS runs")
    parser.add_argument("--out", type=Path, default=None,
                        help="append the results table to this markdown file")
    parser.add_argument("--child", choices=("ours", "hf"), help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--frames", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    seconds = args.seconds if args.seconds is not None else (1.0 if args.small else 5.0)
    frames = int(seconds * FRAME_RATE)
    if frames < 1:
        parser.error("--seconds must give at least one frame (0.02 s)")
    torch.set_num_threads(args.threads)
    shape = SMALL if args.small else FULL
    if args.layers is not None:
        if args.layers < 1:
            parser.error("--layers must be >= 1")
        shape = Shape(**{**shape.__dict__, "layers": args.layers})
    load_start = load_average()
    print(f"load average at start: {load_start}", flush=True)

    with tempfile.TemporaryDirectory(prefix="bench_ar_") as tmp:
        directory = Path(tmp)
        save_checkpoint(shape, directory)
        hf, ours = HF(directory), Ours(directory)
        diff = (hf.first_logits() - ours.first_logits()).abs().max().item()
        print(f"first-step logits, max |HF - ours| = {diff:.2e}", flush=True)
        if diff > 1e-3:
            raise RuntimeError(f"the two stacks disagree on the same weights (max diff {diff})")
        for stack in (ours, hf):  # warm-up (kernels, allocator), untimed
            stack.generate(min(10, frames), seed=0)
        runs: dict[str, list[dict]] = {"ours": [], "hf": []}
        for rep in range(args.repeats):
            order = (ours, hf) if rep % 2 == 0 else (hf, ours)
            for stack in order:
                r = timed_run(stack, frames, seed=rep)
                runs[stack.name].append(r)
                print(f"rep {rep} {stack.name:4s} {r['seconds']:7.2f} s  {r['passes']} passes  "
                      f"{r['steps_per_s']:6.2f} steps/s  median step {r['median_step_ms']:.1f} ms  "
                      f"codec {r['codec_decode_s']:.3f} s  "
                      f"peak +{r['peak_rise_mib']:.0f} MiB  load {load_average()}", flush=True)
        hf_info = (f"dtype {hf.model.dtype}, attention "
                   f"{hf.model.decoder.config._attn_implementation}")
        process_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        del hf, ours
        alone = {} if args.no_isolated else {
            name: isolated(name, directory, frames, args.threads) for name in ("ours", "hf")}
    load_end = load_average()

    med = {name: statistics.median(r["steps_per_s"] for r in rs) for name, rs in runs.items()}
    med_s = {name: statistics.median(r["seconds"] for r in rs) for name, rs in runs.items()}
    rise = {name: statistics.median(r["peak_rise_mib"] for r in rs) for name, rs in runs.items()}
    step_ms = {name: statistics.median(r["median_step_ms"] for r in rs)
               for name, rs in runs.items()}
    steps = runs["ours"][0]["steps"]
    passes = {name: rs[0]["passes"] for name, rs in runs.items()}
    omp_env = " ".join(f"{k}={os.environ[k]}" for k in OMP_ENV if k in os.environ)
    cmd = " ".join(([omp_env] if omp_env else []) + ["python3", "bench/bench_ar.py"] + sys.argv[1:])
    lines = [
        f"\n## {'small' if args.small else 'musicgen-small'} shapes"
        f"{f', {shape.layers} layers' if args.layers else ''}, {time.strftime('%Y-%m-%d %H:%M')}\n",
        f"`{cmd}` on {cpu_line()} visible, torch "
        f"{torch.__version__}, transformers {__import__('transformers').__version__}, "
        f"torch.set_num_threads({args.threads}), OpenMP wait policy "
        f"{os.environ.get('OMP_WAIT_POLICY', 'default (active spin)')}. "
        f"LM {shape.layers} layers, d {shape.dim}, "
        f"{shape.heads} heads, FFN {shape.ffn}, {shape.n_q} x {shape.card}; tiny T5 (d 64) and "
        f"EnCodec. transformers: {hf_info}. {seconds} s = {frames} frames = {steps} sampled "
        f"steps (frames + delays) of 2 "
        f"rows (CFG {CFG_COEF}), top-k {TOP_K} sampling, batch 1; decoder forward passes: ours "
        f"{passes['ours']}, HF {passes['hf']}. steps/s = {steps} / s per generation. "
        f"{args.repeats} runs per stack, ABBA order, "
        f"median. Timed: text encoding + AR loop; codec decode subtracted. Median step interval: "
        f"the median time between consecutive forward passes (ours: progress callback, HF: "
        f"decoder pre-hook; sampling included), less sensitive to other jobs' bursts than the "
        f"total. First-step logits "
        f"max |HF - ours| = {diff:.1e}. Load average (1/5/15 min) at start {load_start}, "
        f"at end {load_end}.\n",
        "| stack | steps/s (median) | s per generation | ms/step | ratio ours / HF (speed) "
        "| median step interval ms | ratio HF / ours (median step) "
        "| peak RSS rise in-process MiB | peak RSS alone MiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, label in (("ours", "ours (TorchBackend + ar.py)"), ("hf", "transformers generate")):
        alone_rss = f"{alone[name]['peak_rss_mib']:.0f}" if alone else "-"
        lines.append(f"| {label} | {med[name]:.2f} | {med_s[name]:.2f} | "
                     f"{1000 / med[name]:.1f} | {med[name] / med['hf']:.2f} | "
                     f"{step_ms[name]:.1f} | {step_ms['hf'] / step_ms[name]:.2f} | "
                     f"{rise[name]:.0f} | "
                     f"{alone_rss} |")
    per_run = ", ".join(f"{r['stack']} {r['steps_per_s']:.2f}"
                        for pair in zip(runs["ours"], runs["hf"]) for r in pair)
    lines += ["", f"Per run (steps/s): {per_run}. Whole-process ru_maxrss (both models loaded, "
              f"checkpoint built and saved in it): {process_peak:.0f} MiB."]
    if alone:
        speeds = ", ".join(f"{n} {a['steps_per_s']:.2f} steps/s" for n, a in alone.items())
        lines.append(f"Alone (one subprocess per stack, one warm-up then one timed run): {speeds}.")
    text = "\n".join(lines) + "\n"
    if args.out is None:
        print(text)
    else:
        append_results(args.out, "AR decoding: ours vs transformers (bench/bench_ar.py)", text)


if __name__ == "__main__":
    main()
