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
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx
import torch
from torch import nn

from engine.backends.onnx_runtime import choose_provider
from engine.models.lm import LMModel
from export import DEFAULT_OPSET
from export import graphs as G
from export.manifest import (GraphSpec, check_graph_matches_spec, set_output_shapes,
                             write_manifest)
from export.fused_attention import fused_attention
from export.optimize import write_cpu_copy
from export.melody import (EXPORT_SIZES as MELODY_EXPORT_SIZES, CHROMA_SEQ_SIZES,
                           MelodyPrefillGraph, check_melody_exportable, melody_prefill_spec)
from export.quantize import (PER_STEP_GRAPHS, QUANTIZE_VARIANTS, convert_fp16, quantize_graph,
                             variant_of_graph)
from export.validate import validate_graph


@dataclass
class ExportedGraph:
    spec: GraphSpec
    module: nn.Module
    sizes: list[dict[str, int]]          # axis sizes to validate at
    extra: dict[str, Any] = field(default_factory=dict)


def export_graph(module: nn.Module, spec: GraphSpec, example: dict[str, np.ndarray],
                 path: Path, opset: int, fused_heads: int | None = None) -> None:
    """Trace ``module`` on ``example`` and write ``path``; refuse a result that froze an axis.
    ``fused_heads``: attention as onnxruntime's ``MultiHeadAttention`` with that many heads
    (export/fused_attention.py)."""
    args = tuple(torch.from_numpy(example[io.name]) for io in spec.inputs)
    with warnings.catch_warnings(), torch.no_grad(), \
            (fused_attention(opset, fused_heads) if fused_heads else nullcontext()):
        warnings.simplefilter("ignore")  # TracerWarnings on shape checks, the legacy-exporter note
        torch.onnx.export(module, args, str(path), dynamo=False, opset_version=opset,
                          input_names=[io.name for io in spec.inputs],
                          output_names=[io.name for io in spec.outputs],
                          dynamic_axes=spec.dynamic_axes(), do_constant_folding=True)
    set_output_shapes(path, spec)
    check_graph_matches_spec(path, spec)


def op_types(path: Path) -> set[str]:
    """Every operator type in a graph's top level."""
    return {n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node}


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


def validation_sizes(spec: GraphSpec, window: int) -> list[dict[str, int]]:
    """Sizes of every dynamic axis at which a graph is validated (several per axis).

    The codec graphs run from a single frame up (conv padding is branch-free in the length).
    """
    if spec.name in ("codec_encoder", "codec_decoder"):
        return [{"batch": b, "frames": t} for b, t in ((1, 1), (2, 2), (1, 3), (3, 13))]
    if spec.name in ("lm_cross", "lm_full_cross"):
        # a key-conditioned cross graph reads text_seq tokens and gives text_seq + 1
        return [{"batch": b, "cond_seq": L, "text_seq": L} for b, L in ((1, 1), (2, 5), (3, 12))]
    base = [(1, 1), (2, 5), (3, 12)]   # (batch, cond_seq)
    # the KV buffers are validated exactly full (max_seq = past + seq): where a buffer is
    # longer, the op leaves its tail unwritten, which only the runtime's shared buffer defines
    if spec.name == "lm_prefill":   # text_seq / chroma_seq: a melody LM's prepended condition
        return [{"batch": b, "cond_seq": L, "text_seq": L, "chroma_seq": c, "seq": s,
                 "max_seq": c + L + s} for (b, L), c, s in zip(base, CHROMA_SEQ_SIZES, (1, 4, 9))]
    if spec.name == "lm_step":
        # (batch, seq, past) from an empty cache to a full window: a prompt, single steps, and
        # several steps after a past (onnxruntime's CPU kernel takes those at batch 1 only)
        cases = [(1, 1, 0), (2, 6, 0), (3, 1, 1), (1, 3, window // 2), (2, 1, window - 1)]
        return [{"batch": b, "cond_seq": base[i % 3][1], "seq": s, "past_sequence_length": p,
                 "max_seq": p + s} for i, (b, s, p) in enumerate(cases)]
    assert spec.name == "lm_full", spec.name
    # lengths past one block of queries (banded_attention's 32 rows), with bands below and
    # past the length (stage 0)
    return [{"batch": b, "cond_seq": L, "seq": t, "attn_band": band, "codebook": k}
            for (b, L), t, band, k in zip(base + [(1, 3)], (1, 6, 15, 70), (5, 2, 100, 5),
                                          (0, 1, 2, 1))]


# ---------------------------------------------------------------- orchestration


def _codec_graphs(codec: nn.Module) -> list[ExportedGraph]:
    enc, dec = G.codec_specs(codec.channels, codec.num_codebooks)
    return [ExportedGraph(enc, G.CodecEncoderGraph(codec).eval(), []),
            ExportedGraph(dec, G.CodecDecoderGraph(codec).eval(), [])]


def _lm_graphs(lm: LMModel, role: str, ar: bool, magnet: bool,
               cross_name: str | None) -> list[ExportedGraph]:
    wrappers = {"lm_cross": G.LMCrossGraph, "lm_step": G.LMStepGraph, "lm_full": G.LMFullGraph}
    out = []
    if ar and G.takes_prefix(lm):   # melody: chroma + text prepended by its own first call
        out.append(ExportedGraph(melody_prefill_spec(lm), MelodyPrefillGraph(lm).eval(), []))
    for spec in G.lm_specs(lm, magnet=magnet, ar=ar):
        module = wrappers[spec.name](lm).eval()
        if spec.name in ("lm_cross", "lm_full_cross"):
            spec.name, spec.file = cross_name, f"{cross_name}.onnx"
        spec.role = role if spec.name != cross_name else "lm"
        out.append(ExportedGraph(spec, module, []))
    return out


def _text_graph(text_encoder: Any, out_dir: Path) -> tuple[ExportedGraph, dict[str, Any]]:
    model, tokenizer = getattr(text_encoder, "model", None), getattr(text_encoder, "tokenizer", None)
    if not isinstance(model, nn.Module) or tokenizer is None:
        raise ValueError(f"cannot export the text encoder {type(text_encoder).__name__}: "
                         "expected a transformers encoder with a tokenizer")
    tok_dir = out_dir / "tokenizer"
    tokenizer.save_pretrained(str(tok_dir))
    spec = GraphSpec("text_encoder", [G.IOSpec("input_ids", "int64", ("batch", "text_seq")),
                                      G.IOSpec("attention_mask", "int64", ("batch", "text_seq"))],
                     [G.IOSpec("last_hidden_state", "float32",
                               ("batch", "text_seq", int(text_encoder.dim)))], role="text")
    info = {"dim": int(text_encoder.dim), "max_length": text_encoder.max_length,
            "tokenizer_dir": "tokenizer", "vocab_size": int(model.config.vocab_size)}
    return ExportedGraph(spec, G.TextEncoderGraph(model).eval(), []), info


def _lm_header(lm: LMModel, graphs: dict[str, str | None]) -> dict[str, Any]:
    c = lm.cfg
    melody = {"chroma_bins": c.chroma_bins, "prefix_text_dim": c.prefix_text_dim} \
        if c.chroma_bins else {}
    return {"num_layers": c.num_layers, "num_heads": c.num_heads, "dim": c.dim,
            "head_dim": c.head_dim, "cond_dim": c.cond_dim, "hidden_dim": c.hidden_scale * c.dim,
            "n_q": c.n_q, "card": c.card, **melody, "graphs": graphs}


def _validate_all(out_dir: Path, graphs: list[ExportedGraph], variant: str,
                  int_high: dict[str, dict[str, int]], log: Callable[[str], None]) -> None:
    for g in graphs:
        for i, sizes in enumerate(g.sizes):
            inputs = random_inputs(g.spec, sizes, int_high.get(g.spec.name, {}), seed=i)
            validate_graph(out_dir / g.spec.file, reference_of(g.module, g.spec), inputs,
                           variant, log=log)


def export_bundle(model: Any, out_dir: str | Path, *, dtype: str = "fp32",
                  quantize: str | None = None, triton_dir: str | Path | None = None,
                  triton_instances: int = 1, triton_max_batch: int | None = None,
                  opset: int = DEFAULT_OPSET, overwrite: bool = False,
                  log: Callable[[str], None] = print) -> dict[str, Any]:
    """Export a MusicGen or MAGNeT model (PyTorch) as a bundle in ``out_dir``; returns the manifest.

    The bundle is written into ``<out_dir>.partial`` and renamed when every graph validated, so
    a failed export leaves nothing half-written. ``triton_dir``: also write a Triton model
    repository there: one model per graph (export/triton.py) and the generation model
    ``barforge`` with ``triton_instances`` instances, each taking up to ``triton_max_batch``
    requests at once (None: export/triton_model.py's default; 1: no batching).
    """
    if dtype not in ("fp32", "fp16"):
        raise ValueError(f"dtype must be 'fp32' or 'fp16', got {dtype!r}")
    if quantize not in (None, *QUANTIZE_VARIANTS):
        raise ValueError(f"quantize must be None or one of {QUANTIZE_VARIANTS}, got {quantize!r}")
    if dtype == "fp16" and quantize:
        raise ValueError(f"choose one variant: --dtype fp16 (CUDA) or --quantize {quantize} (CPU)")
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise ValueError(f"{out_dir} exists and is not empty (pass overwrite / --force)")
    family, roles = _roles_of(model)
    codec, text_encoder = model.compression_model, model.text_encoder
    check_exportable(None, codec)
    for lm, _, _ in roles.values():
        check_exportable(lm, codec)

    work = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        manifest = _export_into(work, model, family, roles, codec, text_encoder, dtype, quantize,
                                opset, log)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        work.rename(out_dir)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    if triton_dir is not None:
        from export.triton import write_triton_repository
        from export.triton_model import DEFAULT_MAX_BATCH, write_generation_model
        write_triton_repository(out_dir, manifest, Path(triton_dir))
        write_generation_model(out_dir, Path(triton_dir), triton_instances,
                               max_batch=triton_max_batch or DEFAULT_MAX_BATCH)
        log(f"Triton repository written to {triton_dir}")
    return manifest


def _roles_of(model: Any) -> tuple[str, dict[str, tuple[LMModel, bool, bool]]]:
    """family and {role: (lm, ar graphs?, magnet graphs?)} of a MusicGen / MAGNeT object."""
    lm = getattr(model, "lm", None)
    if not isinstance(lm, LMModel):
        raise ValueError(f"cannot export {type(model).__name__}: it has no PyTorch LM (a model "
                         "loaded from a bundle is exported already)")
    if G.takes_prefix(lm):
        check_melody_exportable(lm)
    elif lm.cond_proj is None:
        raise ValueError("cannot export an LM without cross-attention to a text condition")
    if "magnet" not in getattr(model, "supported_modes", ("ar",)):
        return "musicgen", {"ar": (lm, True, False)}
    roles = {"magnet": (lm, False, True)}
    ar_lm = getattr(model, "ar_lm", None)
    if getattr(model, "ar_backend", None) is not None:
        if not isinstance(ar_lm, LMModel):
            raise ValueError("cannot export this MAGNeT: its AR model has no PyTorch LM")
        roles["ar"] = (ar_lm, True, False)
    return "magnet", roles


EXPORT_SIZES = {"batch": 2, "cond_seq": 5, "seq": 6, "past_sequence_length": 2, "max_seq": 20,
                "text_seq": 5,
                "attn_band": 2, "codebook": 1, "frames": 8, **MELODY_EXPORT_SIZES}


def _export_into(work: Path, model: Any, family: str,
                 roles: dict[str, tuple[LMModel, bool, bool]], codec: nn.Module,
                 text_encoder: Any, dtype: str, quantize: str | None, opset: int,
                 log: Callable[[str], None]) -> dict[str, Any]:
    text_graph, text_info = _text_graph(text_encoder, work)
    graphs = [text_graph, *_codec_graphs(codec)]
    lm_info: dict[str, Any] = {}
    cross_of: dict[int, str] = {}
    frame_rate = float(codec.frame_rate)
    windows = {"ar": int(getattr(model, "ar_max_duration", model.max_duration) * frame_rate)
               if family == "magnet" else int(model.max_duration * frame_rate),
               "magnet": int(model.max_duration * frame_rate)}
    for role, (lm, ar, magnet) in roles.items():
        text_dim = lm.cfg.cond_dim or lm.cfg.prefix_text_dim
        if text_dim != text_info["dim"]:
            raise ValueError(f"the {role} LM reads text of width {text_dim}, the text "
                             f"encoder gives {text_info['dim']}")
        # a melody LM prepends its text in lm_prefill: no cross graph
        cross = None if G.takes_prefix(lm) else \
            cross_of.setdefault(id(lm), "lm_cross" if not cross_of else "lm_full_cross")
        lm_graphs = _lm_graphs(lm, role, ar, magnet, cross)
        if any(g.spec.name == cross for g in graphs):   # one LM serving both roles
            lm_graphs = [g for g in lm_graphs if g.spec.name != cross]
        graphs += lm_graphs
        max_steps = windows[role] + lm.cfg.n_q if ar else windows[role]
        lm_info[role] = {**_lm_header(lm, {"cross": cross,
                                           "prefill": "lm_prefill" if ar and G.takes_prefix(lm)
                                           else None,
                                           "step": "lm_step" if ar else None,
                                           "full": "lm_full" if magnet else None}),
                         "max_steps": max_steps}
    int_high = {"text_encoder": {"input_ids": text_info["vocab_size"]},
                "codec_decoder": {"codes": codec.cardinality}}
    for role, (lm, _, _) in roles.items():
        for name in ("lm_prefill", "lm_step", "lm_full"):
            int_high[name] = {"input_ids": lm.card + 1}
        if id(lm) in cross_of:
            int_high[cross_of[id(lm)]] = {"key": lm.cfg.key_classes + 1}

    log(f"exporting {len(graphs)} graphs to {work.name} (opset {opset})")
    for g in graphs:
        sizes = dict(EXPORT_SIZES, samples=EXPORT_SIZES["frames"] * codec.hop_length)
        example = random_inputs(g.spec, sizes, int_high.get(g.spec.name, {}))
        export_graph(g.module, g.spec, example, work / g.spec.file, opset,
                     fused_heads=g.module.lm.cfg.num_heads if g.spec.name in PER_STEP_GRAPHS
                     else None)
        if g.spec.name == "lm_step" and "If" in op_types(work / g.spec.file):
            raise ValueError("lm_step.onnx has an If node: the step graph must be branch-free")
    for g in graphs:
        g.sizes = _sizes_for(g.spec, lm_info, codec.hop_length)
    log("validating against PyTorch (fp32):")
    _validate_all(work, graphs, "fp32", int_high, log)

    variant = quantize or dtype
    if variant != "fp32":
        log(f"converting to {variant}:")
        for g in graphs:
            path = work / g.spec.file
            tmp = path.with_suffix(".tmp.onnx")
            if quantize and g.spec.role != "codec":
                quantize_graph(path, tmp, quantize, g.spec.name)
            elif variant == "fp16":
                convert_fp16(path, tmp)
            else:
                continue
            tmp.replace(path)
        _validate_variant(work, graphs, variant, int_high, log)
    cpu_files = [] if variant == "fp16" else _write_cpu_copies(work, graphs, variant, int_high, log)

    header = {
        "family": family, "modes": list(getattr(model, "supported_modes", ("ar",))),
        "sample_rate": int(codec.sample_rate), "frame_rate": frame_rate,
        "channels": int(codec.channels), "num_codebooks": int(codec.num_codebooks),
        "card": int(codec.cardinality), "special_token_id": int(codec.cardinality),
        "max_duration": float(model.max_duration), "opset": opset, "dtype": dtype,
        "quantize": quantize,
        "codec": {"channels": int(codec.channels), "hop_length": int(codec.hop_length),
                  "card": int(codec.cardinality)},
        "text_encoder": text_info, "lms": lm_info,
    }
    if family == "magnet":
        header["magnet"] = {"attn_band": getattr(model, "attn_band", None),
                            "span_len": int(model.span_len),
                            "ar_max_duration": float(getattr(model, "ar_max_duration", 0.0))}
    header["generation"] = dict(model.generation_defaults)   # the checkpoint's sampling defaults
    tokenizer_files = [str(p.relative_to(work)) for p in sorted((work / "tokenizer").rglob("*"))
                       if p.is_file()]
    return write_manifest(work, header, [g.spec for g in graphs], tokenizer_files + cpu_files)


def _sizes_for(spec: GraphSpec, lm_info: dict[str, Any], hop: int) -> list[dict[str, int]]:
    if spec.name == "text_encoder":
        return [{"batch": 1, "text_seq": 1}, {"batch": 3, "text_seq": 9}]
    window = max(info["max_steps"] for info in lm_info.values())
    sizes = validation_sizes(spec, window)
    for s in sizes:
        if "frames" in s:
            s["samples"] = s["frames"] * hop
    return sizes


def _validate_variant(work: Path, graphs: list[ExportedGraph], variant: str,
                      int_high: dict[str, dict[str, int]], log: Callable[[str], None]) -> None:
    """int8 / int4 are validated on CPU; fp16 runs where onnxruntime has fp16 kernels for every
    node (CUDA), and is otherwise checked by onnx.checker only, which is said in the log."""
    from export.validate import check_model
    for g in graphs:
        graph_variant = _graph_variant(g.spec, variant)
        provider = choose_provider() if variant == "fp16" else "cpu"
        try:
            for i, sizes in enumerate(g.sizes[:2]):
                inputs = random_inputs(g.spec, sizes, int_high.get(g.spec.name, {}), seed=i)
                validate_graph(work / g.spec.file, reference_of(g.module, g.spec), inputs,
                               graph_variant, provider=provider, log=log)
        except ValueError:
            raise
        except Exception as e:  # noqa: BLE001 - e.g. no CPU kernel for an fp16 node
            if variant != "fp16":
                raise
            check_model(work / g.spec.file)
            log(f"  {g.spec.file} [fp16]: onnx.checker passed; not run here "
                f"({type(e).__name__}: {str(e).splitlines()[0][:100]})")


def _graph_variant(spec: GraphSpec, variant: str) -> str:
    """The weight format of the graph ``spec`` in a ``variant`` bundle (the codec stays fp32
    in the CPU variants)."""
    if variant == "fp32" or (spec.role == "codec" and variant != "fp16"):
        return "fp32"
    return variant_of_graph(variant, spec.name)


def _write_cpu_copies(work: Path, graphs: list[ExportedGraph], variant: str,
                      int_high: dict[str, dict[str, int]], log: Callable[[str], None]
                      ) -> list[str]:
    """Every graph's onnxruntime-optimized CPU copy (export/optimize.py), validated against
    PyTorch at the graph's first size and recorded as its ``cpu_file``; the files written."""
    log("saving onnxruntime's CPU optimizations:")
    files = []
    for g in graphs:
        path = write_cpu_copy(work / g.spec.file)
        inputs = random_inputs(g.spec, g.sizes[0], int_high.get(g.spec.name, {}))
        validate_graph(path, reference_of(g.module, g.spec), inputs,
                       _graph_variant(g.spec, variant), log=log)
        g.spec.extra["cpu_file"] = path.name
        files.append(path.name)
    return files
