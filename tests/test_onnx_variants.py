"""Bundle variants: block-wise int8 and int4 (run on CPU, accuracy measured) and fp16 (fp16
weights)."""
import numpy as np
import onnx
import pytest
import torch

from engine.api import build_debug_model, load_model
from engine.loaders.onnx_manifest import read_manifest
from export import quantize
from export.bundle import export_bundle

TEXTS = ["lofi drums", "bright synth arpeggio"]


@pytest.fixture(scope="module")
def musicgen():
    return build_debug_model()


def _matmul_nbits(path) -> tuple[list[dict[str, int]], list[dict[str, int]], list[str]]:
    """The attributes of a graph's MatMulNBits nodes (body, output heads) and its output heads
    still run as float MatMul."""
    nodes = onnx.load(str(path)).graph.node
    nbits = {n.name: {a.name: a.i for a in n.attribute} for n in nodes if n.op_type == "MatMulNBits"}
    body = [a for n, a in nbits.items() if "/linears." not in n]
    heads = [a for n, a in nbits.items() if "/linears." in n]
    float_heads = [n.name for n in nodes if n.op_type == "MatMul" and "/linears." in n.name]
    return body, heads, float_heads


def _assert_variant_graphs(musicgen, bundle, bits: int, head_bits: int | None) -> None:
    for name in ("lm_step",):
        body, heads, float_heads = _matmul_nbits(bundle / f"{name}.onnx")
        # q/k/v + out, cross q + out, two FFN linears per layer; one head per codebook
        assert len(body) == 6 * musicgen.lm.cfg.num_layers, body
        assert all(a["bits"] == bits and a["accuracy_level"] == 4 for a in body), body
        if head_bits is None:
            assert not heads and len(float_heads) == musicgen.lm.n_q, (heads, float_heads)
        else:
            assert not float_heads and len(heads) == musicgen.lm.n_q, float_heads
            assert all(a["bits"] == head_bits for a in heads), heads
    # the once-per-generation graphs get dynamic int8
    ops = {n.op_type for n in onnx.load(str(bundle / "lm_cross.onnx")).graph.node}
    assert "MatMulNBits" not in ops and ops & {"DynamicQuantizeLinear", "MatMulInteger",
                                               "DynamicQuantizeMatMul"}, ops


def test_int8_variant_runs_on_cpu_with_measured_accuracy(musicgen, tmp_path):
    fp32_dir, int8_dir = tmp_path / "fp32", tmp_path / "int8"
    export_bundle(musicgen, fp32_dir, log=lambda s: None)
    export_bundle(musicgen, int8_dir, quantize="int8", log=lambda s: None)
    assert read_manifest(int8_dir)["quantize"] == "int8"
    _assert_variant_graphs(musicgen, int8_dir, bits=8, head_bits=None)   # fp32 heads
    assert (int8_dir / "lm_step.onnx").stat().st_size < (fp32_dir / "lm_step.onnx").stat().st_size

    rel_err, agreement = _accuracy(fp32_dir, int8_dir)
    print(f"int8: step logit rel err {rel_err:.4f}, greedy token agreement {agreement:.3f}")
    assert rel_err < 0.15, rel_err
    assert agreement > 0.9, agreement


def _accuracy(fp32_dir, variant_dir) -> tuple[float, float]:
    """(max logit error of one 5-step prefill relative to the logits' scale, teacher-forced greedy
    token agreement over 200 random steps) of a variant bundle against the fp32 one."""
    from engine.backends.base import ConditionTensors
    fp32, variant = load_model(fp32_dir, provider="cpu"), load_model(variant_dir, provider="cpu")
    hidden, mask = fp32.text_encoder.encode(TEXTS)
    cond = ConditionTensors(hidden, mask.float())
    torch.manual_seed(0)
    # the argmax at every step of the same sequence (free-running generations part at the
    # first differing token and measure nothing after it)
    out = {}
    for steps in (5, 200):
        tokens = torch.randint(0, 65, (2, 4, steps))
        logits = []
        for model in (fp32, variant):
            ctx = model.backend.prepare(cond)
            logits.append(model.backend.step(tokens, model.backend.new_cache(ctx, steps), ctx)[0])
        out[steps] = logits
    ref, got = out[5]
    rel_err = float((ref - got).abs().max() / ref.abs().max())
    agreement = float((out[200][0].argmax(-1) == out[200][1].argmax(-1)).float().mean())
    return rel_err, agreement


def test_int4_variant_uses_matmulnbits_decodes_and_agrees(musicgen, tmp_path, monkeypatch):
    # every debug weight is below the size int4 gives 4 bits to (they would get 8: see
    # tests/test_quantize_nbits.py); with no floor, the whole 4-bit path runs end to end
    monkeypatch.setattr(quantize, "NBITS_MIN_4BIT_ELEMENTS", 0)
    fp32_dir, int4_dir = tmp_path / "fp32", tmp_path / "int4"
    export_bundle(musicgen, fp32_dir, log=lambda s: None)
    export_bundle(musicgen, int4_dir, quantize="int4", log=lambda s: None)
    assert read_manifest(int4_dir)["quantize"] == "int4"
    _assert_variant_graphs(musicgen, int4_dir, bits=4, head_bits=8)

    rel_err, agreement = _accuracy(fp32_dir, int4_dir)
    print(f"int4: step logit rel err {rel_err:.4f}, greedy token agreement {agreement:.3f}")
    assert rel_err < 0.25, rel_err
    assert agreement > 0.9, agreement

    # a whole generation decodes through the int4 graphs
    model = load_model(int4_dir, provider="cpu")
    model.set_generation_params(duration=0.5, use_sampling=False)
    wav, codes = model.generate(TEXTS[:1], return_tokens=True)
    assert codes.shape[:2] == (1, 4) and codes.shape[-1] > 0 and torch.isfinite(wav).all()


def test_fp16_variant_passes_checker_with_fp16_weights(musicgen, tmp_path):
    out = tmp_path / "fp16"
    export_bundle(musicgen, out, dtype="fp16", log=lambda s: None)
    m = read_manifest(out)
    assert m["dtype"] == "fp16"
    for name in ("lm_step", "codec_decoder"):
        path = out / m["graphs"][name]["file"]
        onnx.checker.check_model(str(path), full_check=True)
        model = onnx.load(str(path))
        types = {init.data_type for init in model.graph.initializer
                 if init.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)
                 and np.prod(init.dims) > 16}
        assert types == {onnx.TensorProto.FLOAT16}, (name, types)
        # graph I/O keeps its exported types, so the runtime binds the same buffers
        assert model.graph.input[0].type.tensor_type.elem_type in (
            onnx.TensorProto.INT64, onnx.TensorProto.FLOAT)


def test_variant_flags_are_checked(musicgen, tmp_path):
    with pytest.raises(ValueError, match="dtype"):
        export_bundle(musicgen, tmp_path / "x", dtype="bf16")
    with pytest.raises(ValueError, match="one variant"):
        export_bundle(musicgen, tmp_path / "x", dtype="fp16", quantize="int8")
    with pytest.raises(ValueError, match="quantize must be"):
        export_bundle(musicgen, tmp_path / "x", quantize="int2")
