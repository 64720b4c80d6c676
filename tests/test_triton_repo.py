"""The Triton model repository written beside a bundle: layout and each config vs the manifest."""
import re

import pytest

from engine.loaders.onnx_manifest import read_manifest, sha256_file
from engine.api import build_debug_model
from export.bundle import export_bundle
from engine import serving_schema
from export.triton import TRITON_DTYPES


@pytest.fixture(scope="module", params=["musicgen", "magnet"])
def repo(request, tmp_path_factory):
    from engine.api import debug_magnet
    root = tmp_path_factory.mktemp("t")
    model = build_debug_model() if request.param == "musicgen" else debug_magnet()
    export_bundle(model, root / "bundle", triton_dir=root / "triton", log=lambda s: None)
    return root / "bundle", root / "triton"


def _parse_config(text: str) -> dict:
    """name, backend, max_batch_size and the input/output entries of a config.pbtxt."""
    out = {"name": re.search(r'^name: "([^"]+)"', text, re.M).group(1),
           "backend": re.search(r'^backend: "([^"]+)"', text, re.M).group(1),
           "max_batch_size": int(re.search(r"^max_batch_size: (\d+)", text, re.M).group(1))}
    for kind in ("input", "output"):
        block = re.search(rf"^{kind} \[\n(.*?)\n\]", text, re.M | re.S).group(1)
        out[kind] = []
        for m in re.finditer(r'name: "([^"]+)"\s+data_type: (\w+)\s+dims: \[ ([^\]]*) \]'
                             r'(\s+reshape: \{ shape: \[ \] \})?', block):
            dims = [] if m.group(4) else [int(d) for d in m.group(3).split(",")]
            out[kind].append((m.group(1), m.group(2), dims))
    return out


def test_repository_has_one_versioned_model_per_graph_and_the_generation_model(repo):
    bundle, triton = repo
    manifest = read_manifest(bundle)
    assert sorted(p.name for p in triton.iterdir()) == sorted([*manifest["graphs"], "barforge"])
    for name, graph in manifest["graphs"].items():
        assert (triton / name / "config.pbtxt").is_file()
        model = triton / name / "1" / "model.onnx"
        assert sha256_file(model) == manifest["files"][graph["file"]]["sha256"]


def test_each_config_matches_the_manifest(repo):
    bundle, triton = repo
    manifest = read_manifest(bundle)
    for name, graph in manifest["graphs"].items():
        cfg = _parse_config((triton / name / "config.pbtxt").read_text())
        assert cfg["name"] == name and cfg["backend"] == "onnxruntime"
        assert cfg["max_batch_size"] == 0  # the batch axis is explicit in dims
        for kind, key in (("input", "inputs"), ("output", "outputs")):
            want = [(io["name"], TRITON_DTYPES[io["dtype"]],
                     [d if isinstance(d, int) else -1 for d in io["shape"]]) for io in graph[key]]
            assert cfg[kind] == want, (name, kind)
    step = _parse_config((triton / "lm_step" / "config.pbtxt").read_text())
    lm = manifest["lms"]["ar"]
    assert ("past_key_values.0.decoder.key", "TYPE_FP32",
            [-1, lm["num_heads"], -1, lm["head_dim"]]) in step["input"]


def test_generation_model_serves_the_schema_from_a_copy_of_the_bundle(repo):
    bundle, triton = repo
    model = triton / serving_schema.MODEL_NAME
    text = (model / "config.pbtxt").read_text()
    cfg = _parse_config(text)
    assert cfg["name"] == "barforge" and cfg["backend"] == "python"
    assert "decoupled: true" in text    # progress responses, then the clip
    assert cfg["max_batch_size"] == 8 and "max_queue_delay_microseconds: 10000" in text
    for kind, specs in (("input", serving_schema.INPUTS), ("output", serving_schema.OUTPUTS)):
        assert cfg[kind] == [(s.name, TRITON_DTYPES[s.dtype], [-1 if d is None else d
                                                               for d in s.shape]) for s in specs]
    assert text.count("optional: true") == sum(s.optional for s in serving_schema.INPUTS)
    version = model / "1"
    assert (version / "model.py").is_file() and (version / "engine" / "api.py").is_file()
    for name, entry in read_manifest(bundle)["files"].items():
        assert sha256_file(version / "bundle" / name) == entry["sha256"]


def test_generation_model_instances(tmp_path):
    from export.triton_model import config_pbtxt
    assert re.search(r"count: 3\s+kind: KIND_CPU", config_pbtxt(3, None))
    with pytest.raises(ValueError, match="instances 0"):
        config_pbtxt(0, None)


def test_generation_model_batching_off_keeps_the_batch_axis(tmp_path):
    from export.triton_model import config_pbtxt
    text = config_pbtxt(1, None, max_batch=1)
    assert "max_batch_size: 1\n" in text and "dynamic_batching" not in text
    assert "max_batch_size: 16\n" in config_pbtxt(1, None, max_batch=16)
    with pytest.raises(ValueError, match="max_batch 0: expected at least 1"):
        config_pbtxt(1, None, max_batch=0)
