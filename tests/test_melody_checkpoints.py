"""audiocraft-layout MusicGen-Melody checkpoints load as the same model as the HF layout.

One tiny random ``MusicgenMelodyForConditionalGeneration`` (transformers) is saved twice: as a
Hugging Face folder, and as audiocraft saves a melody model (state_dict.bin with the chroma2music
conditioner config and the chroma STFT window; compression_state_dict.bin pointing at
facebook/encodec_32khz, resolved to a local folder; T5 from a local folder).
"""
import math

import pytest
import torch
import yaml
from hypothesis import given, settings, strategies as st

from engine.api import MusicGen
from engine.loaders.codec_checkpoint import ENV_ENCODEC_32KHZ
from engine.loaders.lm_checkpoint import ENV_T5_DIR, load_lm_checkpoint
from tests.audiocraft_layout import write_audiocraft_lm

transformers = pytest.importorskip("transformers")
from tests.test_lm_parity_hf import CARD, K, hf_melody_dir  # noqa: E402

SR = 32000


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    """(hf folder, audiocraft folder, env for the audiocraft folder's T5 and codec)."""
    root = tmp_path_factory.mktemp("melody")
    model = hf_melody_dir(root / "hf", seed=7)
    ac = root / "audiocraft"
    write_audiocraft_lm(ac, model, segment_duration=30.0)
    torch.save({"pretrained": "facebook/encodec_32khz"}, ac / "compression_state_dict.bin")
    model.audio_encoder.save_pretrained(root / "encodec_32khz")
    model.text_encoder.save_pretrained(root / "t5")
    transformers.AutoTokenizer.from_pretrained(root / "hf").save_pretrained(root / "t5")
    return root / "hf", ac, {ENV_T5_DIR: str(root / "t5"),
                             ENV_ENCODEC_32KHZ: str(root / "encodec_32khz")}


@pytest.fixture(scope="module")
def models(layouts):
    hf, ac, env = layouts
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        return MusicGen.get_pretrained(str(hf)), MusicGen.get_pretrained(str(ac))


def _tone(freqs, seconds=2.0):
    t = torch.arange(int(seconds * SR)) / SR
    return sum(torch.sin(2 * math.pi * f * t) for f in freqs)[None] / len(freqs)   # [1, N]


def test_audiocraft_melody_checkpoint_is_a_melody_model(models):
    hf, ac = models
    assert ac.is_melody and hf.is_melody
    assert ac.lm.cfg == hf.lm.cfg and ac.max_duration == hf.max_duration == 30.0
    for (name, a), b in zip(ac.lm.state_dict().items(), hf.lm.state_dict().values()):
        assert torch.equal(a, b), name


@settings(max_examples=5, deadline=None)
@given(st.lists(st.sampled_from(["jazz trio", "lofi piano chords", ""]), min_size=1, max_size=2),
       st.integers(0, 2**31 - 1), st.integers(1, 9))
def test_logits_match_on_the_same_text_and_chroma(models, texts, seed, steps):
    hf, ac = models
    g = torch.Generator().manual_seed(seed)
    chroma = torch.nn.functional.one_hot(torch.randint(0, 12, (len(texts), 20), generator=g),
                                         12).float()
    codes = torch.randint(0, CARD + 1, (len(texts), K, steps), generator=g)
    with torch.no_grad():
        logits = [m.lm(codes, None, prefix=m.lm.project_prefix(*m.text_encoder.encode(texts),
                                                                 chroma)) for m in (hf, ac)]
    torch.testing.assert_close(logits[1], logits[0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("freqs", [(440.0,), (261.63, 329.63, 392.0)])
def test_greedy_codes_are_identical(models, freqs):
    outs = []
    for model in models:
        model.set_generation_params(duration=0.4, use_sampling=False)
        outs.append(model.generate_with_chroma(["lofi piano chords"], _tone(freqs), SR,
                                               return_tokens=True))
    (hf_wav, hf_codes), (ac_wav, ac_codes) = outs
    assert ac_codes.shape == (1, K, 20)
    assert torch.equal(ac_codes, hf_codes)
    torch.testing.assert_close(ac_wav, hf_wav)


def _rewrite(file, edit):
    pkg = torch.load(file, weights_only=True)
    xp = yaml.safe_load(pkg["xp.cfg"])
    edit(xp, pkg["best_state"])
    pkg["xp.cfg"] = yaml.safe_dump(xp)
    torch.save(pkg, file)


@pytest.mark.parametrize("edit, message", [
    (lambda xp, s: xp["conditioners"]["self_wav"]["chroma_stem"].update(radix2_exp=12),
     r"chroma_stem.radix2_exp = 12 is not supported \(expected 14\)"),
    (lambda xp, s: xp["conditioners"]["self_wav"].update(model="chroma"),
     r"self_wav.model 'chroma' is not supported"),
    (lambda xp, s: xp["fuser"].update(prepend=["description", "self_wav"]),
     r"fuser.prepend \['description', 'self_wav'\]"),
    (lambda xp, s: s.pop("condition_provider.conditioners.self_wav.output_proj.weight"),
     r"missing tensor 'condition_provider.conditioners.self_wav.output_proj.weight'"),
])
def test_unsupported_melody_configs_are_refused_naming_the_field(layouts, tmp_path, edit, message):
    _, ac, _ = layouts
    file = tmp_path / "state_dict.bin"
    file.write_bytes((ac / "state_dict.bin").read_bytes())
    _rewrite(file, edit)
    with pytest.raises(ValueError, match=message):
        load_lm_checkpoint(file, load_text_encoder=False)
