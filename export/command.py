"""``barforge export``: write an ONNX bundle (and optionally a Triton model repository)."""
from __future__ import annotations

import argparse

from export import DEFAULT_OPSET


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``export`` subcommand."""
    p = sub.add_parser("export", help="export a model as an ONNX bundle (see docs/ONNX.md)",
                       description="Export a MusicGen / MAGNeT model as an ONNX bundle: "
                                   "text encoder, codec encoder/decoder and LM graphs with "
                                   "KV-cache I/O, each validated against PyTorch.")
    p.add_argument("--model", required=True,
                   help="'debug', 'debug-melody', 'default', or a checkpoint directory (HF, "
                        "audiocraft, native)")
    p.add_argument("--out", required=True, help="bundle directory to write")
    p.add_argument("--dtype", choices=("fp32", "fp16"), default="fp32",
                   help="weights and compute type; fp16 is for the CUDA provider (default fp32)")
    # the variants are checked by export_bundle (export/quantize.py), which imports onnx
    p.add_argument("--quantize", default=None, metavar="int8|int4",
                   help="for CPU: int8 = block-wise 8-bit MatMulNBits weights in the per-step "
                        "LM graphs (fp32 output heads); int4 = 4-bit (8-bit heads), int8 compute; "
                        "dynamic int8 in the text and cross-attention graphs")
    p.add_argument("--triton", metavar="DIR", default=None,
                   help="also write a Triton Inference Server model repository to DIR: the "
                        "generation model 'barforge' (Python backend; barforge serve --engine "
                        "triton://HOST:PORT) and one model per ONNX graph")
    p.add_argument("--triton-instances", type=int, default=1, metavar="N",
                   help="instances of the 'barforge' model: generations Triton runs at once "
                        "(default 1)")
    p.add_argument("--triton-max-batch", type=int, default=None, metavar="N",
                   help="requests one 'barforge' instance takes at once; those that can share a "
                        "decoding loop (same options, length, tempo and prompt length) are "
                        "decoded together (default 8; 1 turns batching off)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                   help=f"ONNX opset (default {DEFAULT_OPSET})")
    p.add_argument("--force", action="store_true", help="replace a non-empty --out directory")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.triton_instances < 1:
        raise ValueError(f"--triton-instances {args.triton_instances}: expected at least 1")
    if args.triton_max_batch is not None and args.triton_max_batch < 1:
        raise ValueError(f"--triton-max-batch {args.triton_max_batch}: expected at least 1 "
                         "(1 turns batching off)")
    from engine.api import load_model
    from export.bundle import export_bundle

    model = load_model(args.model)
    manifest = export_bundle(model, args.out, dtype=args.dtype, quantize=args.quantize,
                             triton_dir=args.triton, triton_instances=args.triton_instances,
                             triton_max_batch=args.triton_max_batch,
                             opset=args.opset, overwrite=args.force)
    size = sum(f["bytes"] for f in manifest["files"].values())
    print(f"bundle written to {args.out}: {len(manifest['graphs'])} graphs, "
          f"{size / 1e6:.1f} MB")
    return 0
