"""``barforge eval codec|generate|corpus``: numbers (results.json) + a spectrogram PNG per sample.

- ``codec``: held-out corpus loops through the codec: SI-SNR, multi-scale log-mel distance and
  whether the key-finder hears the original's key in the copy (pitch kept), next to 4-bit
  mu-law and an 8 kHz low-pass of the same audio.
- ``generate``: held-out prompts (a corpus seed never trained on) through a model: the tempo the
  beat tracker finds vs the BPM asked, the key the chroma key-finder finds vs the key asked,
  drum presence vs drums asked or not, spectral flatness.
- ``corpus``: the same estimators on the corpus itself (ground truth known): how far the
  metrics themselves can be trusted.
- ``figures``: held-out corpus loops' captions through a model at each loop's own tempo and
  length; one PNG per loop, the generated loop's log-mel spectrogram above the real rendering's
  (engine/recipes/evaluation/figures.py; the model card's figures).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def _run(args: argparse.Namespace) -> int:
    from engine.recipes.evaluation import metrics, suites

    if args.eval_command == "figures":
        return _figures(args)
    if getattr(args, "drum_threshold", 0.0) is None:
        args.drum_threshold = metrics.DRUM_THRESHOLD
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.eval_command == "codec":
        result = suites.eval_codec(_codec(args.codec), args.data, out, args.items, args.seconds, args.split)
    elif args.eval_command == "corpus":
        result = suites.eval_corpus(args.data, out, args.items, args.drum_threshold)
    else:
        result = suites.eval_generate(args.model, out, args.prompts, args.seed, args.bars, args.mode, args.drum_threshold)
    (out / "results.json").write_text(json.dumps(result, indent=1))
    print(json.dumps({k: result[k] for k in ("kind", "items", "mean", "median") if k in result}, indent=1))
    return 0


def _figures(args: argparse.Namespace) -> int:
    from engine.recipes.evaluation.figures import held_out_figures

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for row in held_out_figures(args.model, args.data, out, args.items, args.mode, args.seed):
        print(f"{out / row['png']}: {row['caption']} ({row['mode']}, {row['seconds']:.2f} s; key found "
              f"{row['generated_key']} vs real {row['real_key']}; bar-to-bar chroma change "
              f"{row['generated_bar_chroma_change']:.2f} vs real {row['real_bar_chroma_change']:.2f})")
    return 0


def _codec(name: str):
    """The codec of a `train codec --out` folder (codec.json), else of a model ``load_model``
    accepts (e.g. ``default``, the shipped one)."""
    if (Path(name) / "codec.json").is_file():
        from engine.recipes.training.codec import load_trained_codec
        return load_trained_codec(name)
    from engine.pretrained import load_parts
    codec = load_parts(name).codec
    if not hasattr(codec, "quantizer"):
        raise ValueError(f"--codec {name}: expected a `train codec --out` folder or a PyTorch model, "
                         "got a model whose codec is not a mono PyTorch EncodecModel (an ONNX bundle or stereo)")
    return codec


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``eval`` with subcommands ``codec``, ``generate``, ``corpus`` and ``figures``."""
    p = sub.add_parser("eval", help="measure a codec or a model; write numbers and spectrograms",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    esub = p.add_subparsers(dest="eval_command", required=True, metavar="WHAT")
    c = esub.add_parser("codec", help="codec vs 4-bit mu-law and an 8 kHz low-pass on held-out loops")
    c.add_argument("--codec", required=True,
                   help="a `train codec --out` folder, or a model (e.g. default: the shipped codec)")
    c.add_argument("--data", required=True, help="synth corpus (its 'valid' split is used)")
    c.add_argument("--items", type=int, default=20)
    c.add_argument("--split", choices=("valid", "train", "all"), default="valid")
    c.add_argument("--seconds", type=float, default=8.0, help="seconds of each loop to code")
    g = esub.add_parser("generate", help="tempo / key / drums of generated loops vs the prompt")
    g.add_argument("--model", required=True, help="a model folder or name load_model accepts")
    g.add_argument("--prompts", type=int, default=50)
    g.add_argument("--seed", type=int, default=999_999, help="corpus seed of the held-out prompts")
    g.add_argument("--bars", type=int, default=4)
    g.add_argument("--mode", choices=("ar", "magnet", "hybrid"), default=None)
    k = esub.add_parser("corpus", help="the estimators on the corpus itself (their own accuracy)")
    k.add_argument("--data", required=True)
    k.add_argument("--items", type=int, default=100)
    f = esub.add_parser("figures", help="PNGs: a model's loop above the real one, held-out captions")
    f.add_argument("--model", required=True, help="a model folder or name load_model accepts")
    f.add_argument("--data", required=True, help="synth corpus (the first --items of its 'valid' split)")
    f.add_argument("--items", type=int, default=3)
    f.add_argument("--mode", choices=("ar", "magnet", "hybrid"), default=None,
                   help="decoding mode (default: the model's default mode, magnet for the default model)")
    f.add_argument("--seed", type=int, default=0, help="generation seed (the same for every loop)")
    for q in (c, g, k, f):
        q.add_argument("--out", required=True, help="output folder (results.json + PNGs)")
        q.set_defaults(func=_run)
    for q in (g, k):
        q.add_argument("--drum-threshold", type=float, default=None,
                       help="percussive energy share above which a clip has drums "
                            "(default: the estimator's own, metrics.DRUM_THRESHOLD)")
