"""Loading a graph keeps its weights resident once: the originals that onnxruntime frees after
prepacking them go back to the OS (engine/backends/heap.py), measured in a fresh process."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from engine.backends.heap import _MALLOPT

D, LAYERS = 1024, 64   # 64 fp32 weights of 4 MB: 256 MB, each prepacked by MLAS

PROBE = """
import sys
import onnxruntime  # its libraries are not the weights
from engine.backends.onnx_runtime import make_session
def mb(key):
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(key)) / 1024
before = mb("VmRSS")
session = make_session(sys.argv[1], "cpu", threads=1)
print(mb("VmHWM") - before)
"""


def _chain(path: Path) -> int:
    """A chain of LAYERS MatMuls with random [D, D] weights; the weights' bytes."""
    rng = np.random.default_rng(0)
    nodes, inits, x = [], [], "x"
    for i in range(LAYERS):
        inits.append(numpy_helper.from_array(rng.standard_normal((D, D), np.float32), f"w{i}"))
        nodes.append(helper.make_node("MatMul", [x, f"w{i}"], [f"h{i}"]))
        x = f"h{i}"
    graph = helper.make_graph(nodes, "chain",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, D])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, [2, D])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return LAYERS * D * D * 4


@pytest.mark.skipif(_MALLOPT is None or not Path("/proc/self/status").is_file(),
                    reason="glibc's mallopt and /proc are what this measures")
def test_session_peak_memory_is_the_weights_once(tmp_path):
    weights_mb = _chain(tmp_path / "chain.onnx") / 2**20
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path / "chain.onnx")], cwd=root,
                         capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})
    growth_mb = float(out.stdout.split()[-1])
    # before the fix: 1.19-1.5x (freed originals kept resident beside their packed copies)
    assert growth_mb < 1.1 * weights_mb, (growth_mb, weights_mb)
