"""Every user-facing generation option is honoured in every mode of every model, or refused
up front naming it and the mode (engine/decoding/options.py); every preset renders."""
import numpy as np
import pytest
import soxr
import torch

from bridge.generation import resolve_settings, sample_request
from bridge.osc_protocol import Options
from bridge.presets import Preset, load_presets
from engine.api import build_debug_model, debug_magnet
from engine.sample_generation import generate_samples
from engine.decoding.options import MODES, api_params, magnet_keywords
from engine.tempo import Tempo


@pytest.fixture(scope="module")
def magnet_debug():
    return debug_magnet()


def test_user_names_become_api_keywords_and_unknown_ones_are_refused():
    assert api_params({"cfg": 3.0, "steps": [4, 2, 2, 2], "top_k": None, "seed": 1}) == \
        {"cfg_coef": 3.0, "decoding_steps": (4, 2, 2, 2), "seed": 1}
    with pytest.raises(ValueError, match="unknown generation option.*temp;"):
        api_params({"temp": 1.0})


def test_each_mode_sets_its_own_parameters_from_the_shared_names(magnet_debug):
    m = magnet_debug
    shared = dict(temperature=4.0, top_k=7, top_p=0.3, cfg_coef=2.0)
    m.set_generation_params(mode="ar", **shared)
    a = m.ar_params
    assert (a.temperature, a.top_k, a.top_p, a.cfg_coef) == (4.0, 7, 0.3, 2.0)
    assert m.generation_params is a and m.magnet_params.temperature == 3.0
    m.set_generation_params(mode="magnet", **shared)
    g = m.magnet_params
    assert (g.temperature, g.top_k, g.top_p, g.max_cfg_coef, g.min_cfg_coef) == (4.0, 7, 0.3, 2.0, 1.0)
    assert m.ar_params.temperature == 1.0
    m.set_generation_params(mode="hybrid", **shared)
    assert (m.magnet_params.temperature, m.ar_params.temperature) == (4.0, 4.0)
    assert (m.magnet_params.max_cfg_coef, m.ar_params.cfg_coef) == (2.0, 2.0)
    m.set_generation_params(mode="magnet", top_k=5)   # alone, top_k is not overridden by top_p
    assert (m.magnet_params.top_k, m.magnet_params.top_p) == (5, 0.0)
    assert magnet_keywords("hybrid", {"top_k": 5}) == {"top_k": 5, "ar_top_k": 5, "top_p": 0.0,
                                                       "ar_top_p": 0.0}


def test_inapplicable_options_are_refused_naming_them_and_the_mode_and_change_nothing(magnet_debug):
    m = magnet_debug
    m.set_generation_params(mode="magnet", seed=9)
    before = (m.mode, m.magnet_params, m.ar_params)
    for params, match in (({"mode": "ar", "decoding_steps": (1, 1, 1, 1)},
                           r"decoding_steps \(steps\) does not apply to mode 'ar'"),
                          ({"mode": "magnet", "hybrid_prefix_s": 0.5},
                           "hybrid_prefix_s does not apply to mode 'magnet'"),
                          ({"mode": "magnet", "ar_temperature": 2.0},
                           "ar_temperature does not apply to mode 'magnet'"),
                          ({"mode": "ar", "temperature": 2.0, "ar_temperature": 1.0},
                           "temperature or ar_temperature, not both"),
                          ({"mode": "diffusion"}, "mode 'diffusion' is not supported")):
        with pytest.raises(ValueError, match=match):
            m.set_generation_params(**params)
        assert (m.mode, m.magnet_params, m.ar_params) == before
    musicgen = build_debug_model()
    musicgen.set_generation_params(cfg_coef=5.0)
    assert musicgen.generation_params.cfg_coef == 5.0
    with pytest.raises(ValueError, match=r"decoding_steps \(steps\) does not apply to mode 'ar'"):
        musicgen.set_generation_params(decoding_steps=(1, 1, 1, 1))


def _tokens(model, mode, **params):
    model.set_generation_params(duration=0.4, mode=mode, **params)
    return model.generate(["boom bap drums"], return_tokens=True)[1]


@pytest.mark.parametrize("mode", MODES)
def test_every_documented_option_changes_the_default_models_output(default_model, mode):
    base = dict(temperature=1.0, top_k=50, cfg_coef=3.0, seed=1)
    reference = _tokens(default_model, mode, **base)
    assert torch.equal(reference, _tokens(default_model, mode, **base))   # seeded: repeatable
    for name, value in (("temperature", 5.0), ("top_k", 2), ("cfg_coef", 8.0), ("seed", 2)):
        assert not torch.equal(reference, _tokens(default_model, mode, **{**base, name: value})), name
    narrow = _tokens(default_model, mode, **{**base, "top_p": 0.2})
    assert not torch.equal(narrow, _tokens(default_model, mode, **{**base, "top_p": 0.99})), "top_p"


@pytest.mark.parametrize("which", ["default_model", "default_bundle", "magnet_debug"])
def test_every_preset_renders_through_the_bridge_path(request, which):
    model = request.getfixturevalue(which)
    presets = load_presets()
    assert set(presets) >= {"ambient", "boom-bap", "fast", "house"}
    tempo, rate = Tempo(240), 48000
    samples = tempo.frames(1, rate)
    for name in sorted(presets):
        settings = resolve_settings(model, "loop", tempo, Options(preset=name), Preset("none"),
                                    presets, "ar", 2, samples / rate)
        wav = generate_samples(model, sample_request(settings, samples, rate, tempo), lambda f: None)
        out = soxr.resample(np.ascontiguousarray(wav), model.sample_rate, rate, quality="VHQ")
        assert out.shape[0] >= samples and np.isfinite(out).all(), name


def test_the_bridge_refuses_at_accept_what_the_model_would_refuse(magnet_debug):
    presets = load_presets()
    tempo = Tempo(120)

    def accept(**options):
        return resolve_settings(magnet_debug, "x", tempo, Options(**options), Preset("none"),
                                presets, "ar", 2, 2.0)

    with pytest.raises(ValueError, match=r"decoding_steps \(steps\) does not apply to mode 'ar'"):
        accept(steps=(4, 2, 2, 2))
    with pytest.raises(ValueError, match=r"decoding_steps \(steps\) does not apply to mode 'ar'"):
        accept(preset="fast", mode="ar")
    with pytest.raises(ValueError, match="decoding_steps needs 4 entries"):
        accept(mode="magnet", steps=(4, 2))
    assert accept(preset="fast").mode == "magnet"
    musicgen = build_debug_model()
    with pytest.raises(ValueError, match="mode 'magnet' .from preset 'fast'. is not supported"):
        resolve_settings(musicgen, "x", tempo, Options(preset="fast"), Preset("none"), presets,
                         "ar", 2, 2.0)


def test_the_cli_refuses_an_inapplicable_flag_in_one_line_and_writes_nothing(tmp_path, capsys):
    from engine.cli import main
    out = tmp_path / "x.wav"
    assert main(["generate", "x", "--model", "debug", "--bars", "1", "--bpm", "120",
                 "--steps", "4,2,2,2", "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == ("barforge generate: error: decoding_steps (steps) does not apply to mode "
                       "'ar' (only to magnet and hybrid)")
    assert not out.exists()
