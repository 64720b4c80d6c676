"""ONNX bundles of melody models: chroma and text go into lm_prefill, lm_step continues; greedy
codes equal PyTorch's through onnxruntime (AR with a melody, and continuation)."""
import math

import pytest
import torch

from engine.api import load_model
from export.bundle import export_bundle

SR = 32000


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    torch_model = load_model("debug-melody")
    out = tmp_path_factory.mktemp("melody") / "bundle"
    manifest = export_bundle(torch_model, out, log=lambda s: None)
    assert manifest["lms"]["ar"]["chroma_bins"] == 12 and manifest["lms"]["ar"]["graphs"]["cross"] is None
    return torch_model, load_model(str(out), provider="cpu")


def _melody(freqs, seconds):
    t = torch.arange(int(seconds * SR)) / SR
    return torch.stack([sum(torch.sin(2 * math.pi * f * t) for f in row) for row in freqs])[:, None]


def test_a_melody_bundle_is_a_melody_model(pair):
    torch_model, onnx_model = pair
    assert onnx_model.is_melody and onnx_model.lm is None and torch_model.is_melody


@pytest.mark.parametrize("seconds, cfg_coef", [(1.0, 3.0), (2.5, 1.0)])
def test_greedy_melody_codes_match_pytorch(pair, seconds, cfg_coef):
    melodies = _melody([(440.0,), (261.63, 329.63)], seconds)
    out = []
    for model in pair:
        model.set_generation_params(duration=1.0, use_sampling=False, cfg_coef=cfg_coef)
        out.append(model.generate_with_chroma(["lofi drums", ""], melodies, SR,
                                              return_tokens=True))
    (wav_t, codes_t), (wav_o, codes_o) = out
    assert codes_t.shape == (2, 4, 50)
    assert torch.equal(codes_t, codes_o)
    assert float((wav_o - wav_t).abs().max()) < 1e-4


def test_greedy_continuation_codes_match_pytorch(pair):
    prompt = _melody([(330.0,)], 0.5)
    out = []
    for model in pair:
        model.set_generation_params(duration=1.0, use_sampling=False)
        out.append(model.generate_continuation(prompt, SR, ["go on"], return_tokens=True)[1])
    assert torch.equal(out[0], out[1])
