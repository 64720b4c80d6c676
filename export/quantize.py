"""Bundle variants: int8 and int4 weights (onnxruntime's quantizers, for CPU) and fp16 (for CUDA).

int8 and int4: the graphs that run once per step or pass (``PER_STEP_GRAPHS``) get block-wise
weights in onnxruntime's ``MatMulNBits`` (``MatMulNBitsQuantizer``; blocks of ``NBITS_BLOCK``
along the input axis, one fp32 scale each), computed at accuracy level 4: the activations are
quantized to int8 per block and the dot products run on int8 units (VNNI / AMX on x86).
int8: 8-bit symmetric weights, fp32 output heads. int4: 4-bit weights with a zero point per
block (asymmetric agreed better with fp32 than symmetric on the default model, 0.809 vs 0.793),
8-bit heads, and 8-bit weights wherever a weight is too small for its bytes to bound the step
(fewer than ``NBITS_MIN_4BIT_ELEMENTS`` elements): every weight of musicgen-small and larger is
4-bit, every weight of the default model (d 256) 8-bit, where 4-bit cost too much agreement
with fp32 (0.82; block sizes, HQQ, GPTQ and accuracy levels did not reach 0.95 either:
bench/RESULTS_onnx.md). Block-wise 8-bit agreed better with fp32 than dynamic per-channel int8
on the default model (bench/RESULTS_onnx.md) at about the same speed. The graphs that run once per
generation (text encoder, cross-attention K/V) get onnxruntime's dynamic int8 quantization
(``quantize_int8``: per-channel int8 MatMul/Gather weights, activations quantized on the fly):
their time does not matter. Their weights use 7 of the 8 bits (``reduce_range``): on CPUs
without VNNI (AVX2 only) onnxruntime's u8 x s8 dot products add pairs in int16, which full-range
weights overflow (the debug model's cross-attention K/V were off by 0.37 on an AVX2 EPYC, within
0.15 with 7 bits); a bundle runs wherever it is copied, so it is 7 bits everywhere. The codec's
convolutions and LSTM stay fp32 (ConvInteger is slower than fp32 conv on CPU and the codec is a
small share of the time).

fp16: onnxruntime's own float16 converter (``onnxruntime.transformers.float16``, shipped in the
onnxruntime wheel: no extra package), with graph inputs/outputs kept fp32 so the runtime's I/O
does not change and LayerNorm / Softmax kept in fp32 where the converter's block list says so.
"""
from __future__ import annotations

import logging
import math
import shutil
import tempfile
from pathlib import Path

import onnx

# The LM's output heads (``linears.k``) write the logits every token is sampled from: int8
# there costs the most agreement for the least time (one MatMul per codebook per step).
FP32_NODES = ("/linears.",)

# Graphs run per step / per MAGNeT pass: the ones whose weight bytes bound the decode speed.
PER_STEP_GRAPHS = ("lm_prefill", "lm_step", "lm_full")
NBITS_BLOCK = 32
# MatMulNBits accuracy level 4: int8 activations, int8 dot products (VNNI / AMX on x86).
NBITS_ACCURACY_LEVEL = 4
# (weight bits, output-head bits or None for fp32) of the per-step graphs, per variant; the
# heads' precision was chosen with bench/bench_int8_agreement.py on the default model.
NBITS = {"int8": (8, None), "int4": (4, 8)}
QUANTIZE_VARIANTS = tuple(NBITS)
# Weights with fewer elements than this get 8 bits in the int4 variant: 4-bit pays off where a
# step's time is reading large weights (musicgen-small's smallest is 1024 x 1024: all 4-bit).
# The default model's are at most 256 x 1024: its 8-bit step took 1.66 ms against 1.53 ms all
# 4-bit (under load), and its greedy agreement with fp32 is 0.97 at 8 bits, 0.82 at 4.
NBITS_MIN_4BIT_ELEMENTS = 1024 * 1024


def variant_of_graph(variant: str, graph: str) -> str:
    """The weight format the bundle variant ``variant`` gives the graph named ``graph`` (its
    manifest name): ``variant`` for the per-step graphs, else dynamic int8 (``"int8"``)."""
    return variant if graph in PER_STEP_GRAPHS else "int8"


def quantize_graph(src: Path, dst: Path, variant: str, graph: str) -> None:
    """Write the ``variant`` (``QUANTIZE_VARIANTS``) of the graph named ``graph`` (its manifest
    name) from ``src`` to ``dst``."""
    if variant not in QUANTIZE_VARIANTS:
        raise ValueError(f"quantize variant must be one of {QUANTIZE_VARIANTS}, got {variant!r}")
    if graph in PER_STEP_GRAPHS:
        quantize_nbits(src, dst, *NBITS[variant], min_elements=NBITS_MIN_4BIT_ELEMENTS)
    else:
        quantize_int8(src, dst)


def quantize_nbits(src: Path, dst: Path, bits: int, head_bits: int | None,
                   heads: tuple[str, ...] = FP32_NODES, min_elements: int = 0) -> None:
    """Block-wise ``bits``-bit ``MatMulNBits`` weights (4: with zero points, 8: symmetric) for
    every MatMul with a constant weight of ``src``, into ``dst``; nodes whose name contains one
    of ``heads`` get ``head_bits`` bits instead, or stay fp32 when ``head_bits`` is None; other
    weights with fewer than ``min_elements`` elements get at least 8 bits."""
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    if bits not in (4, 8):
        raise ValueError(f"bits must be 4 or 8, got {bits!r}")
    if head_bits not in (None, 4, 8):
        raise ValueError(f"head_bits must be 4, 8 or None (fp32), got {head_bits!r}")
    # the quantizer logs one INFO line per node
    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.WARNING)
    model = onnx.load(str(src))
    plan = _bits_per_node(model, bits, head_bits, heads, min_elements)
    for n_bits in sorted({b for b in plan.values() if b is not None}):
        # one pass per bit width; every constant-weight MatMul of another width is left alone
        others = [name for name, b in plan.items() if b != n_bits]
        quantizer = MatMulNBitsQuantizer(model, bits=n_bits, block_size=NBITS_BLOCK,
                                         is_symmetric=n_bits == 8,
                                         accuracy_level=NBITS_ACCURACY_LEVEL,
                                         nodes_to_exclude=others)
        quantizer.process()
        model = quantizer.model.model
    onnx.save(model, str(dst))


def _bits_per_node(model: onnx.ModelProto, bits: int, head_bits: int | None,
                   heads: tuple[str, ...], min_elements: int) -> dict[str, int | None]:
    """The bits (None: fp32) of every MatMul of ``model`` with a constant weight, by node name."""
    sizes = {t.name: math.prod(t.dims) for t in model.graph.initializer}
    plan: dict[str, int | None] = {}
    for node in model.graph.node:
        if node.op_type != "MatMul" or node.input[1] not in sizes:
            continue
        if any(part in node.name for part in heads):
            plan[node.name] = head_bits
        else:
            plan[node.name] = bits if sizes[node.input[1]] >= min_elements else max(bits, 8)
    return plan


def quantize_int8(src: Path, dst: Path, keep_fp32: tuple[str, ...] = FP32_NODES) -> None:
    """Dynamic int8 quantization of ``src`` into ``dst`` (per-channel MatMul weights); nodes
    whose name contains one of ``keep_fp32`` stay fp32."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    logging.getLogger("root").setLevel(logging.ERROR)  # the quantizer warns per op otherwise
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        try:  # shape inference + constant folding make more MatMuls quantizable
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        except Exception:  # noqa: BLE001 - pre-processing is an optimisation, not required
            shutil.copyfile(src, pre)
        keep = [n.name for n in onnx.load(str(pre)).graph.node
                if any(part in n.name for part in keep_fp32)]
        quantize_dynamic(str(pre), str(dst), weight_type=QuantType.QInt8, per_channel=True,
                         reduce_range=True, op_types_to_quantize=["MatMul", "Gather"],
                         nodes_to_exclude=keep)


def convert_fp16(src: Path, dst: Path) -> None:
    """fp16 weights and compute; inputs/outputs stay in their exported (fp32/int64) types."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(src))
    model = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=False)
    _sort_topologically(model.graph)  # the converter appends its input Casts at the end
    onnx.save(model, str(dst))


def _sort_topologically(graph: onnx.GraphProto) -> None:
    """Reorder ``graph.node`` so every node comes after the producers of its inputs."""
    ready = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        rest = []
        for node in pending:
            if all(name in ready for name in node.input):
                ordered.append(node)
                ready.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            raise ValueError(f"graph {graph.name} has a cycle or a dangling input at node "
                             f"{rest[0].name}")
        pending = rest
    del graph.node[:]
    graph.node.extend(ordered)
