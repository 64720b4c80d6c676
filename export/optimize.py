"""onnxruntime-optimized CPU copies of a bundle's graphs, saved so loading does not redo them.

For every graph ``<name>.onnx`` the export writes ``<name>.cpu.onnx``: the graph as
onnxruntime's CPU provider leaves it after its graph optimizations (constant folding, node
fusions such as LayerNorm / Gelu / MatMul+Add), and records it as the graph's ``cpu_file`` in the
manifest; the runtime opens that file when the provider is CPU
(``engine.backends.onnx_runtime.open_graph``). The copy is saved at the *extended* level, which
onnxruntime documents as hardware-independent; the layout level (NCHWc blocking, sized to the
CPU's vector width) is left to the machine that loads it.
"""
from __future__ import annotations

from pathlib import Path


def cpu_file_of(file: str) -> str:
    """``<name>.onnx`` -> ``<name>.cpu.onnx``."""
    return file[: -len(".onnx")] + ".cpu.onnx"


def write_cpu_copy(path: Path) -> Path:
    """Save onnxruntime's CPU-optimized form of the graph at ``path`` beside it; its path."""
    import onnxruntime as ort
    out = path.with_name(cpu_file_of(path.name))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    opts.optimized_model_filepath = str(out)
    opts.log_severity_level = 3
    ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return out
