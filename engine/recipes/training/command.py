"""``barforge train codec|lm|magnet|package``: train on a synth corpus, then assemble a model.

Examples (one process; add ``torchrun --nproc_per_node N -m engine.cli`` in front for DDP)::

    barforge train codec  --data corpus --out runs/codec --steps 20000 --batch-size 8
    barforge train lm     --data corpus --codec runs/codec --out runs/ar --steps 20000
    barforge train magnet --data corpus --codec runs/codec --out runs/magnet --steps 20000
    barforge train package --codec runs/codec --lm runs/magnet --ar-lm runs/ar --out model

Each ``--out`` folder receives only weights (safetensors) and JSON; the resumable state
(optimizer, scheduler) is kept in ``<out>.train/`` (``--resume`` continues from it).
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from engine.recipes.training.common import LoopOptions


def _common(p: argparse.ArgumentParser, lr: float, batch: int) -> None:
    p.add_argument("--data", required=True, help="synth corpus folder (barforge data synth --out)")
    p.add_argument("--out", required=True, help="folder for the trained weights")
    p.add_argument("--steps", type=int, default=10000, help="total optimisation steps")
    p.add_argument("--batch-size", type=int, default=batch, help=f"per-process batch (default {batch})")
    p.add_argument("--lr", type=float, default=lr, help=f"peak learning rate (default {lr})")
    p.add_argument("--warmup", type=int, default=500, help="linear warm-up steps")
    p.add_argument("--grad-clip", type=float, default=1.0, help="gradient norm clip (0: none)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from <out>.train/checkpoint.pt")
    p.add_argument("--checkpoint-every", type=int, default=500, help="steps between checkpoints")
    p.add_argument("--weights-only", action="store_true",
                   help="checkpoints write only the exported weights into --out, no optimizer "
                        "state (continue with --init-from, not --resume)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _lm_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--codec", required=True, help="a `train codec --out` folder (tokenizes the corpus)")
    p.add_argument("--segment-s", type=float, default=8.0, help="training segment length in seconds")
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--cond-dropout", type=float, default=0.1, help="null-condition rate (for CFG)")
    p.add_argument("--beat-harmonics", type=int, default=4,
                   help="beat conditioning: harmonics of the beat phase the LM reads (0: none)")
    p.add_argument("--key-conditioning", action=argparse.BooleanOptionalAction, default=True,
                   help="key conditioning: the LM reads the loop's key as a learned "
                        "cross-attention token (--no-key-conditioning: none)")
    p.add_argument("--init-from", default=None,
                   help="start from the weights of an earlier `train lm|magnet --out` folder")
    p.add_argument("--text-encoder", choices=("minilm", "debug"), default="minilm",
                   help="minilm: all-MiniLM-L6-v2 from its package; debug: tiny random (tests)")


def _setup(args: argparse.Namespace):
    import torch

    from engine.recipes.training.common import LoopOptions, setup_distributed

    if args.steps < 1 or args.batch_size < 1:
        raise ValueError(f"--steps and --batch-size must be >= 1, got {args.steps}, {args.batch_size}")
    if args.threads:
        torch.set_num_threads(args.threads)
    dist = setup_distributed(args.device)
    opts = LoopOptions(steps=args.steps, out=Path(args.out), seed=args.seed, resume=args.resume,
                       checkpoint_every=args.checkpoint_every, progress=not args.quiet,
                       training_state=not args.weights_only)
    return dist, opts


def _report(kind: str, result: dict, dist, opts: LoopOptions, audio_s_per_step: float) -> None:
    if not dist.main:
        return
    steps_done = opts.steps
    print(json.dumps({"objective": kind, "steps": steps_done, **{k: round(v, 4) for k, v in result.items()},
                      "audio_seconds_per_step": audio_s_per_step}))


def _run_codec(args: argparse.Namespace) -> int:
    from engine.models.encodec import CodecConfig
    from engine.recipes.training.codec import CodecLossWeights, CodecTask
    from engine.recipes.training.common import run_training
    from engine.recipes.training.dataset import AudioCrops

    dist, opts = _setup(args)
    init_state = None
    if args.init_from is not None:
        from engine.recipes.training.common import read_trained
        init_state, init_meta = read_trained(args.init_from, "codec", "train codec")
        config = CodecConfig.from_dict(init_meta["codec"])
        if args.decoder is not None and args.decoder != config.decoder:   # a fresh decoder of the new kind
            config = dataclasses.replace(config, decoder=args.decoder)
            init_state = {k: v for k, v in init_state.items() if not k.startswith("decoder.")}
    else:
        config = CodecConfig(n_filters=args.filters, dimension=args.dimension,
                             lstm_layers=args.lstm_layers, n_q=args.n_q, bins=args.bins,
                             ratios=tuple(args.ratios), decoder=args.decoder or "seanet",
                             pitch_bins_per_octave=args.pitch_bins_per_octave)
    data = AudioCrops(args.data, config.sample_rate, round(args.crop_s * config.sample_rate))
    weights = CodecLossWeights(l1=args.l1_weight, mel=args.mel_weight, stft=args.stft_weight,
                               adv=args.adv_weight, feat=args.feat_weight, pitch=args.pitch_weight,
                               chroma=args.chroma_weight)
    task = CodecTask(config, data, dist, batch_size=args.batch_size, lr=args.lr, steps=args.steps,
                     warmup=args.warmup, grad_clip=args.grad_clip, weights=weights,
                     adv_start=args.adv_start, disc_filters=args.disc_filters, seed=args.seed,
                     init_state=init_state, decoder_only=args.decoder_only)
    result = run_training(task, opts, dist)
    _report("codec", result, dist, opts, args.batch_size * dist.world * args.crop_s)
    return 0


CODE_CACHE_VERSION = b"codes-v2"   # v2: per-loop key classes


def _lm_data(args: argparse.Namespace, dist, segment: int):
    import torch

    from engine.recipes.training.codec import load_trained_codec
    from engine.recipes.training.common import checkpoint_dir
    from engine.recipes.training.dataset import CodeSegments, encode_corpus

    # Keyed by the cache layout, the codec's weights, the corpus index and the text encoder: a
    # retrained codec, a re-rendered corpus or a new field never reuses stale codes.
    key = hashlib.sha256(CODE_CACHE_VERSION + (Path(args.codec) / "codec.safetensors").read_bytes()
                         + (Path(args.data) / "index.jsonl").read_bytes()).hexdigest()[:16]
    cache = checkpoint_dir(args.out) / f"codes_train_{args.text_encoder}_{key}.pt"
    if dist.main and not cache.is_file():
        if args.text_encoder == "debug":
            from engine.conditioners.text import debug_text_encoder
            encoder = debug_text_encoder()
        else:
            from engine.conditioners.text import MiniLMTextEncoder
            encoder = MiniLMTextEncoder()
        encode_corpus(args.data, load_trained_codec(args.codec), encoder, cache,
                      device=dist.device, progress=not args.quiet)
    if dist.enabled:
        torch.distributed.barrier()
    return CodeSegments(cache, segment)


def _init_state(directory: str | None) -> dict[str, torch.Tensor] | None:
    if directory is None:
        return None
    from engine.recipes.training.common import read_trained
    return read_trained(directory, "lm", "train lm|magnet")[0]


def _run_lm(args: argparse.Namespace, kind: str) -> int:
    from engine.conditioners.key import KEY_CLASSES
    from engine.models.lm import LMConfig
    from engine.recipes.training.codec import load_trained_codec
    from engine.recipes.training.common import run_training

    dist, opts = _setup(args)
    codec = load_trained_codec(args.codec)
    segment = round(args.segment_s * codec.frame_rate)
    data = _lm_data(args, dist, segment)
    config = LMConfig(n_q=codec.num_codebooks, card=codec.cardinality, dim=args.dim,
                      num_heads=args.heads, num_layers=args.layers, cond_dim=data.cond_dim,
                      causal=kind == "ar", beat_harmonics=args.beat_harmonics,
                      key_classes=KEY_CLASSES if args.key_conditioning else 0)
    meta = {"segment_frames": segment, "text_encoder": {"kind": args.text_encoder},
            "codec_dir": str(args.codec)}
    common = dict(batch_size=args.batch_size, lr=args.lr, steps=args.steps, warmup=args.warmup,
                  grad_clip=args.grad_clip, cond_dropout=args.cond_dropout, seed=args.seed,
                  extra_meta=meta, init_state=_init_state(args.init_from))
    if kind == "ar":
        from engine.recipes.training.lm import LMTask
        task = LMTask(config, data, dist, **common)
    else:
        from engine.recipes.training.magnet import MagnetTask
        task = MagnetTask(config, data, dist, span_len=args.span_len,
                          attn_band=None if args.attn_band < 0 else args.attn_band, **common)
    result = run_training(task, opts, dist)
    _report(kind, result, dist, opts, args.batch_size * dist.world * args.segment_s)
    return 0


def _generation_defaults(text: str | None) -> dict:
    """``--generation`` (a JSON object of set_generation_params keywords) as a dict."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError as e:
        raise ValueError(f"--generation must be a JSON object, got {text!r} ({e})") from e
    if not isinstance(value, dict):
        raise ValueError(f"--generation must be a JSON object, got {text!r}")
    return value


def _run_package(args: argparse.Namespace) -> int:
    from engine.loaders.native_format import NativeCheckpoint, save_native
    from engine.recipes.training.codec import load_trained_codec
    from engine.recipes.training.lm import load_trained_lm

    codec = load_trained_codec(args.codec)
    lm, meta = load_trained_lm(args.lm)
    ar_lm, ar_meta = load_trained_lm(args.ar_lm) if args.ar_lm else (None, None)
    if ar_meta is not None and ar_meta["objective"] != "ar":
        raise ValueError(f"--ar-lm {args.ar_lm} holds a {ar_meta['objective']} LM, expected an AR one")
    family = "magnet" if meta["objective"] == "magnet" else "musicgen"
    frames = meta["segment_frames"]
    ckpt = NativeCheckpoint(
        family=family, codec_config=codec.config.to_dict(), lm_config=meta["lm"],
        text_encoder=meta["text_encoder"], sample_rate=codec.sample_rate,
        max_duration=frames / codec.frame_rate, codec_state=codec.state_dict(), lm_state=lm.state_dict(),
        ar_lm_config=ar_meta["lm"] if ar_meta else None, ar_lm_state=ar_lm.state_dict() if ar_lm else None,
        generation=_generation_defaults(args.generation),
        magnet={"span_len": meta["span_len"], "subcodes_context": meta.get("attn_band")} if family == "magnet" else {},
        ar_max_duration=ar_meta["segment_frames"] / codec.frame_rate if ar_meta else None)
    path = save_native(args.out, ckpt)
    print(f"wrote {path.parent}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``train`` with subcommands ``codec``, ``lm``, ``magnet`` and ``package``."""
    p = sub.add_parser("train", help="train the codec, AR LM or MAGNeT LM", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    tsub = p.add_subparsers(dest="train_command", required=True, metavar="OBJECTIVE")
    c = tsub.add_parser("codec", help="EnCodec objectives: L1, multi-scale mel, complex STFT, "
                        "commitment, MS-STFT discriminator")
    _common(c, lr=3e-4, batch=8)
    c.add_argument("--crop-s", type=float, default=1.0, help="training crop length in seconds")
    c.add_argument("--filters", type=int, default=16, help="SEANet base filters")
    c.add_argument("--dimension", type=int, default=64, help="latent dimension")
    c.add_argument("--lstm-layers", type=int, default=1)
    c.add_argument("--n-q", type=int, default=4, help="codebooks")
    c.add_argument("--bins", type=int, default=1024, help="codebook size")
    c.add_argument("--ratios", type=int, nargs="+", default=[8, 5, 4, 4], help="decoder strides (hop = product)")
    c.add_argument("--l1-weight", type=float, default=0.1)
    c.add_argument("--mel-weight", type=float, default=1.0)
    c.add_argument("--stft-weight", type=float, default=1.0, help="complex-STFT (phase-aware) term")
    c.add_argument("--adv-weight", type=float, default=1.0)
    c.add_argument("--feat-weight", type=float, default=1.0)
    c.add_argument("--adv-start", type=int, default=-1,
                   help="step at which the MS-STFT discriminator starts (-1: no discriminator)")
    c.add_argument("--disc-filters", type=int, default=16)
    c.add_argument("--pitch-weight", type=float, default=0.0,
                   help="log-STFT L1 at long windows below 4 kHz (keeps pitch; 0: off)")
    c.add_argument("--chroma-weight", type=float, default=0.0,
                   help="per-frame pitch-class profile L1, 55-1000 Hz (keeps harmony; 0: off)")
    c.add_argument("--pitch-bins-per-octave", type=int, default=0,
                   help="a fixed log-frequency (CQT-like) front-end with this many bins per octave "
                        "(a multiple of 12) feeding the encoder (0: none)")
    c.add_argument("--init-from", default=None,
                   help="start from an earlier `train codec --out` folder (its architecture: "
                        "--filters/--dimension/... are ignored)")
    c.add_argument("--decoder", choices=("seanet", "istft"), default=None,
                   help="seanet (EnCodec's, the default) or istft (Vocos-style: ConvNeXt + inverse "
                        "STFT); with --init-from of the other kind, the decoder starts fresh")
    c.add_argument("--decoder-only", action="store_true",
                   help="with --init-from: train the decoder alone (encoder and codebooks "
                        "frozen, so the codes, and LMs trained on them, stay valid)")
    c.set_defaults(func=_run_codec)
    for kind, helptext in (("lm", "AR LM: cross-entropy over the delay pattern"),
                           ("magnet", "MAGNeT LM: span masking, loss on masked tokens")):
        q = tsub.add_parser(kind, help=helptext)
        _common(q, lr=5e-4, batch=16)
        _lm_flags(q)
        if kind == "magnet":
            q.add_argument("--span-len", type=int, default=3)
            q.add_argument("--attn-band", type=int, default=5,
                           help="restricted context of codebooks >= 1 in frames (-1: none)")
        q.set_defaults(func=lambda a, kind=kind: _run_lm(a, "ar" if kind == "lm" else "magnet"))
    k = tsub.add_parser("package", help="assemble trained parts into a native model folder")
    k.add_argument("--codec", required=True, help="a `train codec --out` folder")
    k.add_argument("--lm", required=True, help="a `train magnet` (or `train lm`) --out folder")
    k.add_argument("--ar-lm", default=None, help="optional `train lm --out` folder (hybrid/AR modes)")
    k.add_argument("--out", required=True, help="the model folder to write")
    k.add_argument("--generation", default=None,
                   help='default generation parameters as JSON, e.g. \'{"decoding_steps": [6, 3, 3, 3]}\'')
    k.set_defaults(func=_run_package)


def main(argv: list[str] | None = None) -> int:
    """``python -m engine.recipes.training.command OBJECTIVE ...``: the ``train`` command on its own,
    for ``torchrun --nproc_per_node N -m engine.recipes.training.command lm ...``."""
    parser = argparse.ArgumentParser(prog="barforge")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["train", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
