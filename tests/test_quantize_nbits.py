"""export.quantize's block-wise weights: which bits each MatMul gets per variant, and that the
quantized graph still computes the fp32 one."""
import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from export.quantize import NBITS_MIN_4BIT_ELEMENTS, quantize_graph

D_BIG = 1024    # a musicgen-small-sized weight: 1024 x 1024
D_SMALL = 256   # a default-model-sized one: 256 x 256


def _graph(path) -> None:
    """x [2, D_BIG] -> big MatMul -> slice to D_SMALL -> small MatMul -> head MatMul."""
    rng = np.random.default_rng(0)
    weights = {"w_big": rng.standard_normal((D_BIG, D_BIG), np.float32) / 32,
               "w_small": rng.standard_normal((D_SMALL, D_SMALL), np.float32) / 16,
               "w_head": rng.standard_normal((D_SMALL, 64), np.float32) / 16}
    assert weights["w_big"].size >= NBITS_MIN_4BIT_ELEMENTS > weights["w_small"].size
    nodes = [helper.make_node("MatMul", ["x", "w_big"], ["h"], name="/lm/layers.0/linear1/MatMul"),
             helper.make_node("Slice", ["h", "starts", "ends", "axes"], ["hs"], name="slice"),
             helper.make_node("MatMul", ["hs", "w_small"], ["g"],
                              name="/lm/layers.0/out_proj/MatMul"),
             helper.make_node("MatMul", ["g", "w_head"], ["y"], name="/lm/linears.0/MatMul")]
    inits = [numpy_helper.from_array(v, k) for k, v in weights.items()]
    inits += [numpy_helper.from_array(np.array([v], np.int64), k)
              for k, v in (("starts", 0), ("ends", D_SMALL), ("axes", 1))]
    graph = helper.make_graph(nodes, "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, D_BIG])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 64])],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8   # what the installed onnxruntime reads, whatever onnx writes by default
    onnx.save(model, str(path))


def _bits(path) -> dict[str, int | None]:
    """Bits per MatMul node (None: still an fp32 MatMul), by the node's original name part."""
    out = {}
    for n in onnx.load(str(path)).graph.node:
        key = next((k for k in ("linear1", "out_proj", "linears") if k in n.name), None)
        if key and n.op_type == "MatMulNBits":
            out[key] = next(a.i for a in n.attribute if a.name == "bits")
        elif key and n.op_type == "MatMul":
            out[key] = None
    return out


def _run(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def test_int4_gives_4_bits_to_large_weights_only_and_int8_keeps_fp32_heads(tmp_path):
    src = tmp_path / "lm_step.onnx"
    _graph(src)
    x = np.random.default_rng(1).standard_normal((2, D_BIG)).astype(np.float32)
    ref = _run(src, x)
    expected = {"int4": {"linear1": 4, "out_proj": 8, "linears": 8},
                "int8": {"linear1": 8, "out_proj": 8, "linears": None}}
    for variant, bits in expected.items():
        dst = tmp_path / f"{variant}.onnx"
        quantize_graph(src, dst, variant, "lm_step")
        assert _bits(dst) == bits, (variant, _bits(dst))
        rel = float(np.abs(_run(dst, x) - ref).max() / np.abs(ref).max())
        assert rel < (0.2 if variant == "int4" else 0.05), (variant, rel)
