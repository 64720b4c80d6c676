"""The shipped default model (presets/default_model): loads offline, generates real audio.

No network: sockets are refused for the whole test, HF_HUB_OFFLINE is set (conftest). The clip
must have the asked length, be audible (not silence) and be far from white noise: its spectral
flatness is measured next to white noise's in the same test.
"""
import json
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.recipes.evaluation.metrics import spectral_flatness
from engine.loaders.native_format import CONFIG_NAME, load_native

MODEL_DIR = Path(__file__).resolve().parents[1] / "presets" / "default_model"
MAX_BYTES = 80 * 1024 * 1024


def _refuse(*args, **kwargs):
    raise OSError("network access while loading or running the default model")


@pytest.fixture
def no_network(monkeypatch):
    monkeypatch.setattr(socket.socket, "connect", _refuse)
    monkeypatch.setattr(socket, "create_connection", _refuse)


@pytest.fixture(scope="module")
def model():
    from engine.api import load_model
    mp = pytest.MonkeyPatch()
    mp.setattr(socket.socket, "connect", _refuse)
    mp.setattr(socket, "create_connection", _refuse)
    try:
        m = load_model("default")
    finally:
        mp.undo()
    return m


def test_shipped_folder_is_complete_and_small():
    meta = json.loads((MODEL_DIR / CONFIG_NAME).read_text())
    assert meta["family"] == "magnet" and meta.get("ar_lm") is not None   # magnet, hybrid and ar
    assert meta["text_encoder"]["kind"] == "minilm"
    total = sum(p.stat().st_size for p in MODEL_DIR.iterdir() if p.is_file())
    assert total <= MAX_BYTES, f"presets/default_model is {total / 2**20:.1f} MiB > 80 MiB"
    assert not list(MODEL_DIR.glob("*.pt")), "no optimizer / training state may ship"
    ckpt = load_native(MODEL_DIR)       # checks every sha256
    assert ckpt.codec_state and ckpt.lm_state and ckpt.ar_lm_state


def test_default_model_is_the_trained_one(model):
    assert model.name == "default"
    assert set(model.supported_modes) >= {"magnet", "hybrid", "ar"}


@pytest.mark.parametrize("mode", ["magnet", "ar"])
def test_generates_music_not_silence_or_noise(model, no_network, mode):
    duration = 2.4          # 60 frames at 25 Hz: a whole number of MAGNeT spans (3 frames)
    model.set_generation_params(duration=duration, mode=mode, seed=1)  # + the packaged defaults
    with torch.inference_mode():
        wav = model.generate(["boom-bap drums with upright bass and rhodes. bpm: 90.0."])
    assert wav.shape[0] == 1 and wav.shape[1] == 1
    assert wav.shape[-1] == round(duration * model.sample_rate)
    x = wav[0, 0].numpy().astype(np.float64)
    assert np.isfinite(x).all()
    rms = float(np.sqrt(np.mean(x ** 2)))
    assert rms > 1e-3, f"silence (rms {rms:.2e})"
    noise = np.random.default_rng(0).standard_normal(len(x)) * rms
    flat_noise, flat = spectral_flatness(noise), spectral_flatness(x)
    assert flat_noise > 0.4                      # the yardstick itself
    assert flat < 0.35 * flat_noise, f"noise-like: flatness {flat:.3f} vs white noise {flat_noise:.3f}"
