"""Beat conditioning: the LM reads each step's metrical position at the asked tempo.

The LM here has key conditioning too (tests/test_key_conditioning.py), so the ONNX bundle test
covers both inputs in one export.
"""
import dataclasses

import pytest
import torch

from engine.backends.base import ConditionTensors
from engine.backends.torch_backend import TorchBackend
from engine.conditioners.key import KEY_CLASSES
from engine.conditioners.caption import caption_bpm
from engine.conditioners.text import debug_text_encoder
from engine.models.encodec import EncodecModel, debug_codec_config
from engine.models.lm import LMConfig, LMModel, debug_lm_config
from engine.models.musicgen import MusicGen
from engine.tempo import Tempo

CFG = dataclasses.replace(debug_lm_config(), beat_harmonics=3, key_classes=KEY_CLASSES)


def _lm(causal: bool = True) -> LMModel:
    torch.manual_seed(0)
    lm = LMModel(dataclasses.replace(CFG, causal=causal)).eval()
    torch.nn.init.normal_(lm.beat_proj.weight, std=0.5)   # a trained-looking, non-zero projection
    return lm


def _cond(lm: LMModel, beat: torch.Tensor) -> ConditionTensors:
    b = beat.shape[0]
    return ConditionTensors(cross=torch.randn(b, 3, lm.cfg.cond_dim), cross_mask=torch.ones(b, 3), beat=beat)


def test_beat_embedding_repeats_every_bar_and_is_zero_without_tempo():
    lm = _lm()
    beat = torch.tensor([[0.1, 4.0, 0.0], [0.0, 4.0, 0.0]])     # one bar = 40 frames; no tempo
    emb = lm.beat_embedding(beat, 0, 100)
    assert torch.allclose(emb[0, :60], emb[0, 40:100], atol=1e-4)
    assert not torch.allclose(emb[0, :20], emb[0, 20:40], atol=1e-3)   # half bars differ (bar phase)
    assert float(emb[1].abs().max()) == 0.0


def test_a_window_starting_later_reads_the_beat_where_the_piece_is():
    lm = _lm()
    cond = _cond(lm, torch.tensor([[0.07, 3.0, 0.0]]))
    whole = lm.beat_embedding(cond.beat, 0, 50)
    later = lm.beat_embedding(cond.at_frame(17).beat, 0, 33)
    assert torch.allclose(whole[:, 17:], later, atol=1e-4)
    assert cond.at_frame(0) is cond


@torch.inference_mode()
def test_cached_steps_read_the_same_beats_as_one_forward():
    lm = _lm()
    backend = TorchBackend(lm)
    cond = _cond(lm, torch.tensor([[0.08, 4.0, 0.0], [0.05, 3.0, 1.5]]))
    ctx = backend.prepare(cond)
    tokens = torch.randint(lm.card, (2, lm.n_q, 12))
    whole = lm(tokens, ctx.cross_kv, beat=cond.beat)
    cache = backend.new_cache(ctx, 12)
    first, cache = backend.step(tokens[..., :5], cache, ctx)
    steps = [first] + [backend.step(tokens[..., t:t + 1], cache, ctx)[0] for t in range(5, 12)]
    assert torch.allclose(torch.cat(steps, dim=2), whole, atol=1e-4)
    assert not torch.allclose(whole, lm(tokens, ctx.cross_kv), atol=1e-3)   # the beat matters


def test_tempo_comes_from_the_request_else_the_caption_and_null_rows_have_none():
    torch.manual_seed(0)
    model = MusicGen("beat", EncodecModel(debug_codec_config()).eval(), _lm(),
                     debug_text_encoder(dim=CFG.cond_dim))
    assert caption_bpm("dusty drums. bpm: 92.5. key: c minor") == 92.5 and caption_bpm("no tempo") is None
    assert caption_bpm("bpm: 900") is None   # out of range: text, not a tempo
    beat = model._beat(["loop. bpm: 90.0", "free"], None)
    assert torch.allclose(beat, torch.tensor([[90 / 60 / model.frame_rate, 4.0, 0.0], [0.0, 0.0, 0.0]]))
    three = Tempo(120, 3)
    assert torch.allclose(model._beat(["loop. bpm: 90.0"], three),
                          torch.tensor([[120 / 60 / model.frame_rate, 3.0, 0.0]]))
    rows = model._condition_rows(model._text(["a", "b"]), None, True, model._beat(["a", "b"], three))
    assert rows.beat.shape == (4, 3) and float(rows.beat[2:].abs().max()) == 0.0
    model.set_generation_params(duration=0.4, seed=3)
    fast = model.generate(["loop"], return_tokens=True, tempo=three)[1]
    assert not torch.equal(fast, model.generate(["loop"], return_tokens=True, tempo=Tempo(60, 3))[1])
    assert torch.equal(fast, model.generate(["loop"], return_tokens=True, tempo=three)[1])
    with pytest.raises(ValueError, match="beats_per_bar"):
        Tempo(120, 0)


def test_melody_lms_cannot_take_beat_conditioning():
    with pytest.raises(ValueError, match="beat_harmonics"):
        LMConfig(n_q=4, card=64, dim=32, num_heads=2, num_layers=2, cond_dim=0, chroma_bins=12,
                 prefix_text_dim=32, beat_harmonics=2)


@pytest.mark.parametrize("mode", ["magnet", "hybrid"])
def test_onnx_bundle_of_a_beat_and_key_conditioned_model_matches_torch(mode, beat_bundle):
    torch_model, onnx_model = beat_bundle
    assert onnx_model.backend.reads_beat and onnx_model.ar_backend.reads_beat
    assert onnx_model.backend.reads_key and onnx_model.ar_backend.reads_key
    out = []
    for m in (torch_model, onnx_model):
        m.set_generation_params(duration=2.0, mode=mode, use_sampling=False,
                                decoding_steps=(3, 2, 2, 2), seed=0)
        out.append(m.generate(["a loop in F# minor", "another. bpm: 140"], return_tokens=True,
                              tempo=Tempo(97))[1])
    assert torch.equal(out[0], out[1])
    torch_model.set_generation_params(duration=2.0, mode=mode, use_sampling=False,
                                      decoding_steps=(3, 2, 2, 2), seed=0)
    other_key = torch_model.generate(["a loop in C major", "another. bpm: 140"], return_tokens=True,
                                     tempo=Tempo(97))[1]
    assert not torch.equal(other_key[0], out[0][0]) and torch.equal(other_key[1], out[0][1])


@pytest.fixture(scope="module")
def beat_bundle(tmp_path_factory):
    from engine.api import load_model
    from engine.models.magnet import MAGNeT
    from export.bundle import export_bundle

    torch.manual_seed(0)
    codec = EncodecModel(debug_codec_config()).eval()
    model = MAGNeT("beat", codec, _lm(causal=False), debug_text_encoder(dim=CFG.cond_dim),
                   max_duration=4.0, ar_lm=_lm())
    out = tmp_path_factory.mktemp("beat") / "bundle"
    export_bundle(model, out, log=lambda s: None)
    return model, load_model(out, provider="cpu")


def test_the_bridge_gives_the_model_the_session_tempo_and_the_prompts_beat():
    import numpy as np

    from bridge.generation import Settings, sample_request
    from engine.sample_generation import generate_samples
    torch.manual_seed(0)
    model = MusicGen("beat", EncodecModel(debug_codec_config()).eval(), _lm(),
                     debug_text_encoder(dim=CFG.cond_dim))
    settings = Settings(description="loop. bpm: 90", mode="ar", seed=1, temperature=None, top_k=None,
                        top_p=None, cfg=None, steps=None, channels=1, loudness=-14.0, preset="default")
    prompt = np.zeros((16000, 1), np.float32)
    seen = []
    real_beat = model._beat                     # a spy: the real rows still reach the LM
    model._beat = lambda descriptions, tempo: (seen.append(tempo), real_beat(descriptions, tempo))[1]
    generate_samples(model, sample_request(settings, 22400, 32000, Tempo(120, 3, 13.5), prompt,
                                           32000), lambda f: None)
    assert seen == [Tempo(120, 3, 1.5)] and not hasattr(model, "bpm")
