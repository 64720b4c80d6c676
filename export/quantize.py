"""Bundle variants: dynamic int8 (onnxruntime's quantizer, for CPU) and fp16 (for CUDA).

int8: weights of MatMul/Gather become int8 with per-channel scales, activations are quantized
on the fly (``quantize_dynamic``); only the transformer graphs (LM, text encoder) are
quantized, and in them not the LM's output heads (``FP32_NODES``), the codec's convolutions and LSTM stay fp32 (ConvInteger is slower than fp32 conv on
CPU and the codec is a small share of the time). fp16: onnxruntime's own float16 converter
(``onnxruntime.transformers.float16``, shipped in the onnxruntime wheel: no extra package),
with graph inputs/outputs kept fp32 so the runtime's I/O does not change and LayerNorm /
Softmax kept in fp32 where the converter's block list says so.
"""
from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

import onnx

# The LM's output heads (``linears.k``) write the logits every token is sampled from: int8
# there costs the most agreement for the least time (one MatMul per codebook per step).
FP32_NODES = ("/linears.",)


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
                         op_types_to_quantize=["MatMul", "Gather"], nodes_to_exclude=keep)


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
