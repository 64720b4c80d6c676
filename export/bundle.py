"""Writing a bundle: export every graph, check it, validate it against PyTorch, write the manifest.

Every graph is exported with the TorchScript-based exporter (``dynamo=False``): in torch 2.13 it
keeps the codec's LSTM and every sequence axis dynamic, where the dynamo exporter froze the
sequence length of a conv+LSTM decoder and any example dimension of size 1. Each graph is then
checked against its spec (no axis frozen), run by ``onnx.checker`` and compared with its torch
module at several sizes of every dynamic axis (batch 1..3, sequence lengths from the smallest
the graph supports, past lengths from 0 to the model's window).
"""
from __future__ import annotations

import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx
import torch
from torch import nn

from engine.models.lm import LMModel
from export import graphs as G
from export.manifest import (GraphSpec, check_graph_matches_spec, set_output_shapes,
                             write_manifest)
from export.quantize import QUANTIZED_ROLES, convert_fp16, quantize_int8
from export.validate import validate_graph

DEFAULT_OPSET = 17


@dataclass
class ExportedGraph:
    spec: GraphSpec
    module: nn.Module
    sizes: list[dict[str, int]]          # axis sizes to validate at
    extra: dict[str, Any] = field(default_factory=dict)


def _register_symbolics(opset: int) -> None:
    """The TorchScript exporter has no rule for in-place ``&=`` on bool masks: map it to And."""
    torch.onnx.register_custom_op_symbolic(
        "aten::__iand_", lambda g, a, b: g.op("And", a, b), opset)


def export_graph(module: nn.Module, spec: GraphSpec, example: dict[str, np.ndarray],
                 path: Path, opset: int) -> None:
    """Trace ``module`` on ``example`` and write ``path``; refuse a result that froze an axis."""
    args = tuple(torch.from_numpy(example[io.name]) for io in spec.inputs)
    _register_symbolics(opset)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TracerWarnings on shape checks, the legacy-exporter note
        torch.onnx.export(module, args, str(path), dynamo=False, opset_version=opset,
                          input_names=[io.name for io in spec.inputs],
                          output_names=[io.name for io in spec.outputs],
                          dynamic_axes=spec.dynamic_axes(), do_constant_folding=True)
    set_output_shapes(path, spec)
    check_graph_matches_spec(path, spec)


def random_inputs(spec: GraphSpec, sizes: dict[str, int], int_high: dict[str, int],
                  seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs for ``spec`` with dynamic axes set from ``sizes``.

    ``int_high``: exclusive upper bound per int64 input (token ids, codes); masks are 1 with the
    last position of the first row 0; scalar inputs come from ``sizes`` by name.
    """
    rng = np.random.default_rng(seed)
    out = {}
    for io in spec.inputs:
        if not io.shape:
            out[io.name] = np.array(sizes[io.name], dtype=np.int64)
            continue
        shape = [sizes[d] if isinstance(d, str) else d for d in io.shape]
        if io.name.endswith("attention_mask"):
            a = np.ones(shape, dtype=np.int64)
            if a.size:
                a[0, -1] = 0
        elif io.dtype == "int64":
            a = rng.integers(0, int_high[io.name], size=shape, dtype=np.int64)
        else:
            a = rng.standard_normal(shape).astype(np.float32)
        out[io.name] = a
    return out


def reference_of(module: nn.Module, spec: GraphSpec) -> Callable[..., list[torch.Tensor]]:
    """The torch outputs of ``module`` as a list in the spec's output order."""
    names = [io.name for io in spec.inputs]

    def run(**kw: torch.Tensor) -> list[torch.Tensor]:
        out = module(*[kw[n] for n in names])
        return list(out) if isinstance(out, (tuple, list)) else [out]
    return run


def check_exportable(lm: LMModel | None, codec: nn.Module) -> None:
    """Refuse, with a message, what the bundle format cannot represent."""
    for name, m in (("lm", lm), ("codec", codec)):
        if m is None:
            continue
        dtypes = {p.dtype for p in m.parameters()}
        if dtypes - {torch.float32}:
            raise ValueError(f"cannot export the {name}: its weights are {sorted(map(str, dtypes))}; "
                             "export traces float32 (use --dtype fp16 to get a half-precision "
                             "bundle from a float32 model)")
        if any(p.device.type != "cpu" for p in m.parameters()):
            raise ValueError(f"cannot export the {name}: move it to the CPU first")
    if lm is not None:
        if lm.cond_proj is None and G.prefix_dim(lm) == 0:
            raise ValueError("cannot export an LM with neither cross-attention nor a prefix "
                             "condition: the bundle's decode loop has no condition to feed it")
        if lm.cond_proj is not None and G.prefix_dim(lm) > 0:
            raise ValueError("cannot export an LM that both cross-attends and takes a prefix: "
                             "the bundle format has one condition path per LM")


def validation_sizes(spec: GraphSpec, window: int, min_frames: int) -> list[dict[str, int]]:
    """Sizes of every dynamic axis at which a graph is validated (several per axis)."""
    if spec.name in ("codec_encoder", "codec_decoder"):
        return [{"batch": b, "frames": t} for b, t in ((1, min_frames), (2, min_frames + 3),
                                                      (3, 4 * min_frames + 1))]
    if spec.name == "lm_cross":
        return [{"batch": b, "cond_seq": L} for b, L in ((1, 1), (2, 5), (3, 12))]
    base = [(1, 1, 3), (2, 5, 1), (3, 12, 7)]   # (batch, cond_seq, prefix_seq)
    if spec.name == "lm_prefill":
        return [{"batch": b, "cond_seq": L, "prefix_seq": P, "seq": s}
                for (b, L, P), s in zip(base, (1, 4, 9))]
    if spec.name == "lm_step":
        pasts = sorted({0, 1, window // 2, window - 1})   # from empty to a full window
        return [{"batch": base[i % 3][0], "cond_seq": base[i % 3][1], "past_seq": p}
                for i, p in enumerate(pasts)]
    assert spec.name == "lm_full", spec.name
    return [{"batch": b, "cond_seq": L, "prefix_seq": P, "seq": t, "attn_band": band,
             "codebook": k} for (b, L, P), t, band, k in zip(base, (1, 6, 15), (5, 2, 100),
                                                           (0, 1, 2))]
