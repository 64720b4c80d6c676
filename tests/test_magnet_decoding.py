"""MAGNeT decoding on the real torch backend: passes, banded attention, prompts, hybrid, rescoring.

Tiny LMs are built here (non-causal for MAGNeT, causal for AR); the model-level tests use the
``debug`` MAGNeT, which ships both.
"""
import re
from dataclasses import replace

import pytest
import torch

from engine.backends.base import ConditionTensors
from engine.backends.torch_backend import TorchBackend
from engine.decoding.magnet import ARRescorer, generate_magnet, segment_frames
from engine.decoding.magnet_params import MagnetParams
from engine.decoding.masking import mask_probability, num_masked
from engine.models.lm import LMConfig, LMModel
from engine import MAGNeT
from engine.modules.transformer import MultiheadAttention
from engine.tempo import Tempo

K, CARD, COND = 4, 32, 8
STEPS = (4, 2, 2, 2)


def tiny_lm(causal: bool, layers: int = 2, seed: int = 0) -> LMModel:
    torch.manual_seed(seed)
    return LMModel(LMConfig(n_q=K, card=CARD, dim=16, num_heads=2, num_layers=layers,
                            cond_dim=COND, causal=causal)).eval()


def cond_rows(batch: int, cfg: bool = True, seed: int = 1) -> ConditionTensors:
    g = torch.Generator().manual_seed(seed)
    hidden, mask = torch.randn(batch, 5, COND, generator=g), torch.ones(batch, 5)
    if cfg:  # [cond; null]
        hidden, mask = torch.cat([hidden, torch.zeros_like(hidden)]), torch.cat([mask, 0 * mask])
    return ConditionTensors(cross=hidden, cross_mask=mask)


class PassRecorder:
    """Records every LM forward: the token input and the keyword arguments (band, codebook)."""

    def __init__(self, lm: LMModel) -> None:
        self.calls: list[tuple[torch.Tensor, dict]] = []
        self.handle = lm.register_forward_hook(self.hook, with_kwargs=True)

    def hook(self, module, args, kwargs, output) -> None:
        self.calls.append((args[0].clone(), dict(kwargs)))


@pytest.fixture(scope="module")
def debug_model() -> MAGNeT:
    return MAGNeT.get_pretrained("debug")


# ---------------------------------------------------------------- passes and work per step


def test_one_batched_forward_per_step_and_cross_kv_once(monkeypatch):
    lm = tiny_lm(causal=False)
    projections = []
    real = MultiheadAttention.project_kv
    monkeypatch.setattr(MultiheadAttention, "project_kv",
                        lambda self, src: projections.append(src.shape) or real(self, src))
    rec = PassRecorder(lm)
    B = 2
    params = MagnetParams(duration=1.0, decoding_steps=STEPS, seed=0)
    out = generate_magnet(TorchBackend(lm), cond_rows(B), params, batch=B, cfg=True, n_frames=30)
    assert out.shape == (B, K, 30)
    assert len(rec.calls) == sum(STEPS)
    assert all(tokens.shape[0] == 2 * B for tokens, _ in rec.calls)  # cond and null together
    stages = [kw["codebook"] for _, kw in rec.calls]
    assert stages == [0] * 4 + [1] * 2 + [2] * 2 + [3] * 2  # logits of one codebook per pass
    assert [kw["band"] for _, kw in rec.calls] == [None] * 4 + [5] * 6
    assert len(projections) == lm.cfg.num_layers  # cross K/V: once per layer per generation


def test_stage_inputs_hold_higher_codebooks_masked_and_lower_ones_fixed():
    lm = tiny_lm(causal=False)
    rec = PassRecorder(lm)
    params = MagnetParams(duration=1.0, decoding_steps=STEPS, seed=1)
    out = generate_magnet(TorchBackend(lm), cond_rows(1), params, batch=1, cfg=True, n_frames=30)
    mask_id = CARD
    for tokens, kw in rec.calls:
        k = kw["codebook"]
        assert bool((tokens[:, k + 1:] == mask_id).all())
        assert torch.equal(tokens[:1, :k], out[:, :k])
        assert torch.equal(tokens[:1], tokens[1:])  # the null rows read the same tokens


def test_only_masked_positions_change_and_the_mask_follows_the_schedule():
    lm = tiny_lm(causal=False)
    rec = PassRecorder(lm)
    T, span = 30, 3
    params = MagnetParams(duration=1.0, decoding_steps=(6, 3, 3, 3), seed=2)
    out = generate_magnet(TorchBackend(lm), cond_rows(1), params, batch=1, cfg=True, n_frames=T)
    rows = [(tokens[0, kw["codebook"]], kw["codebook"]) for tokens, kw in rec.calls]
    step = 0
    for n, (row, stage) in enumerate(rows):
        step = step + 1 if n and rows[n - 1][1] == stage else 0
        masked = row == CARD
        expected = num_masked(mask_probability(step, params.decoding_steps[stage]), T // span)
        assert int(masked.sum()) == span * expected
        same_stage_next = n + 1 < len(rows) and rows[n + 1][1] == stage
        after = rows[n + 1][0] if same_stage_next else out[0, stage]
        assert torch.equal(row[~masked], after[~masked])  # unmasked tokens are kept...
        if same_stage_next:
            assert bool(((after == CARD) <= masked).all())  # ...and never masked again


@pytest.mark.parametrize("arrangement", ["nonoverlap", "stride1"])
def test_prompt_frames_come_back_unchanged_and_the_segment_is_whole_spans(arrangement):
    lm = tiny_lm(causal=False)
    prompt = torch.randint(0, CARD, (2, K, 7))  # 7 frames: the third span is part prompt
    params = MagnetParams(duration=1.0, decoding_steps=STEPS, span_arrangement=arrangement, seed=3)
    out = generate_magnet(TorchBackend(lm), cond_rows(2), params, batch=2, cfg=True,
                          n_frames=50, prompt=prompt)
    assert out.shape == (2, K, segment_frames(50, 3)) == (2, K, 48)
    assert torch.equal(out[..., :7], prompt)
    assert bool(((out >= 0) & (out < CARD)).all())


def test_same_seed_same_codes_and_progress_counts_every_pass():
    lm = tiny_lm(causal=False)
    params = MagnetParams(duration=1.0, decoding_steps=STEPS, seed=11)
    seen = []
    a = generate_magnet(TorchBackend(lm), cond_rows(1), params, batch=1, cfg=True, n_frames=30,
                        progress_callback=lambda done, total: seen.append((done, total)))
    b = generate_magnet(TorchBackend(lm), cond_rows(1), params, batch=1, cfg=True, n_frames=30)
    assert torch.equal(a, b)
    assert seen == [(i, sum(STEPS)) for i in range(1, sum(STEPS) + 1)]


def test_a_raising_progress_callback_cancels_within_one_step():
    lm = tiny_lm(causal=False)
    rec = PassRecorder(lm)

    class Cancelled(Exception):
        pass

    def cancel(done, total):
        if done == 3:
            raise Cancelled()

    with pytest.raises(Cancelled):
        generate_magnet(TorchBackend(lm), cond_rows(1), MagnetParams(duration=1.0, decoding_steps=STEPS),
                        batch=1, cfg=True, n_frames=30, progress_callback=cancel)
    assert len(rec.calls) == 3


def test_bad_inputs_are_refused_by_name():
    backend = TorchBackend(tiny_lm(causal=False))
    with pytest.raises(ValueError, match="decoding_steps"):
        generate_magnet(backend, cond_rows(1), MagnetParams(duration=1.0, decoding_steps=(2, 2)),
                        batch=1, cfg=True, n_frames=30)
    with pytest.raises(ValueError, match="prompt"):
        generate_magnet(backend, cond_rows(1), MagnetParams(duration=1.0), batch=1, cfg=True,
                        n_frames=30, prompt=torch.zeros(1, K, 30, dtype=torch.long))
    with pytest.raises(ValueError, match="rows"):
        generate_magnet(backend, cond_rows(1, cfg=False), MagnetParams(duration=1.0), batch=1,
                        cfg=True, n_frames=30)
    with pytest.raises(ValueError, match="rescorer"):
        generate_magnet(backend, cond_rows(1), MagnetParams(duration=1.0, rescore_weight=0.5),
                        batch=1, cfg=True, n_frames=30)


# ---------------------------------------------------------------- restricted context


def _logits_after_changing(backend, ctx, band, frame, codebook=1, T=24):
    torch.manual_seed(5)
    tokens = torch.randint(0, CARD, (1, K, T))
    changed = tokens.clone()
    changed[:, :, frame] = (changed[:, :, frame] + 1) % CARD
    return (backend.full(tokens, ctx, band, codebook=codebook),
            backend.full(changed, ctx, band, codebook=codebook))


def test_banded_pass_ignores_frames_more_than_five_away_and_stage_zero_does_not():
    backend = TorchBackend(tiny_lm(causal=False, layers=1))
    ctx = backend.prepare(cond_rows(1, cfg=False))
    pos = 10
    before, after = _logits_after_changing(backend, ctx, 5, frame=pos + 6)
    assert torch.equal(before[:, pos], after[:, pos])  # 6 frames away: outside the band
    assert not torch.equal(before[:, pos + 1], after[:, pos + 1])  # 5 away: inside
    before, after = _logits_after_changing(backend, ctx, 5, frame=pos - 6)
    assert torch.equal(before[:, pos], after[:, pos])
    before, after = _logits_after_changing(backend, ctx, None, frame=pos + 6, codebook=0)
    assert not torch.equal(before[:, pos], after[:, pos])  # stage 0 attends everywhere


def test_band_applies_in_every_layer_so_the_reach_is_layers_times_band():
    backend = TorchBackend(tiny_lm(causal=False, layers=2))
    ctx = backend.prepare(cond_rows(1, cfg=False))
    before, after = _logits_after_changing(backend, ctx, 5, frame=21)
    assert torch.equal(before[:, 10], after[:, 10])  # 11 > 2 layers x 5
    assert not torch.equal(before[:, 11], after[:, 11])  # 10: reachable in two hops


# ---------------------------------------------------------------- rescoring


def test_rescorer_reads_the_ar_models_probability_of_each_token():
    ar = tiny_lm(causal=True, seed=4)
    backend = TorchBackend(ar)
    cond = cond_rows(1, cfg=False)
    rescorer = ARRescorer(backend, cond, batch=1, cfg=False)
    torch.manual_seed(6)
    codes = torch.randint(0, CARD, (1, K, 9))
    ctx = backend.prepare(cond)
    for k in (0, 2):
        got = rescorer.log_probs(codes, k)
        for t in (0, 4, 8):
            # codebook k of frame t is at step t + 1 + k of the delayed sequence [special, ...]
            seq = torch.full((1, K, t + k + 1), CARD)
            for j in range(K):
                frames = codes[:, j, :max(0, t + k - j)]
                seq[:, j, 1 + j:1 + j + frames.shape[-1]] = frames
            with torch.inference_mode():
                logits = ar(seq, ctx.cross_kv, causal=True)[:, k, -1]
            want = torch.log_softmax(logits, -1)[0, codes[0, k, t]]
            assert torch.allclose(got[0, t], want, atol=1e-5)


def test_rescoring_runs_the_ar_model_once_per_step_and_changes_the_choice():
    lm, ar = tiny_lm(causal=False), tiny_lm(causal=True, seed=4)
    rec = PassRecorder(ar)
    cond = cond_rows(1)
    base = MagnetParams(duration=1.0, decoding_steps=STEPS, seed=8)
    plain = generate_magnet(TorchBackend(lm), cond, base, batch=1, cfg=True, n_frames=30)
    rescorer = ARRescorer(TorchBackend(ar), cond, batch=1, cfg=True)
    rescored = generate_magnet(TorchBackend(lm), cond, replace(base, rescore_weight=0.9), batch=1,
                               cfg=True, n_frames=30, rescorer=rescorer)
    assert len(rec.calls) == sum(STEPS)
    assert not torch.equal(plain, rescored)


# ---------------------------------------------------------------- the MAGNeT model API


def test_debug_model_generates_the_segment_in_every_mode(debug_model):
    assert debug_model.supported_modes == ("magnet", "hybrid", "ar")
    for mode, extra in (("magnet", {}), ("hybrid", {"hybrid_prefix_s": 0.3})):
        debug_model.set_generation_params(duration=1.0, decoding_steps=STEPS, mode=mode, seed=0,
                                          **extra)
        wav, tokens = debug_model.generate(["lofi drums"], return_tokens=True)
        assert tokens.shape == (1, K, 48)  # 50 frames -> 16 spans of 3
        assert wav.shape[:2] == (1, 1) and wav.shape[-1] == 48 * 640


def test_hybrid_prefix_equals_pure_ar_decoding(debug_model):
    common = dict(seed=21, ar_temperature=0.9, ar_top_k=20)
    debug_model.set_generation_params(duration=1.0, mode="hybrid", hybrid_prefix_s=0.4,
                                      decoding_steps=STEPS, **common)
    seen = []
    _, hybrid = debug_model.generate(["jazz", "rock"], return_tokens=True,
                                     progress_callback=lambda d, t: seen.append((d, t)))
    prefix = debug_model.hybrid_prefix_frames(None)
    assert prefix == 20
    debug_model.set_generation_params(duration=0.4, mode="ar", **common)
    _, ar = debug_model.generate(["jazz", "rock"], return_tokens=True)
    assert ar.shape[-1] == prefix
    assert torch.equal(hybrid[..., :prefix], ar)
    ar_steps = prefix + K - 1  # the AR loop's passes: T + K delayed steps less the empty first
    assert seen[-1] == (ar_steps + sum(STEPS), ar_steps + sum(STEPS))


def test_hybrid_prefix_defaults_to_one_bar_of_the_meter_or_one_and_a_half_seconds(debug_model):
    debug_model.set_generation_params(mode="hybrid")
    assert debug_model.hybrid_prefix_frames(Tempo(120)) == 100  # 4 beats at 120 bpm: 2 s, 50 Hz
    assert debug_model.hybrid_prefix_frames(Tempo(120, 3)) == 75  # 3/4: 3 beats, 1.5 s
    assert debug_model.hybrid_prefix_frames(Tempo(90, 7)) == round(7 * 60 / 90 * 50)
    assert debug_model.hybrid_prefix_frames(None) == 75


def test_continuation_keeps_the_prompt_frames(debug_model):
    debug_model.set_generation_params(duration=1.0, decoding_steps=STEPS, seed=4)
    prompt_wav = torch.randn(1, 1, 16 * 640) * 0.1
    prompt_codes = debug_model.compression_model.encode(prompt_wav)
    _, tokens = debug_model.generate_continuation(prompt_wav, debug_model.sample_rate, ["more"],
                                                  return_tokens=True)
    assert tokens.shape == (1, K, 48)
    assert torch.equal(tokens[..., :16], prompt_codes)


def test_model_refuses_bad_generation_params(debug_model):
    with pytest.raises(ValueError, match="mode"):
        debug_model.set_generation_params(mode="diffusion")
    with pytest.raises(ValueError, match="decoding_steps"):
        debug_model.set_generation_params(decoding_steps=(10, 10))
    with pytest.raises(ValueError, match="span_arrangement"):
        debug_model.set_generation_params(span_arrangement="zigzag")


# ---------------------------------------------------------------- audiocraft checkpoints


def _audiocraft_codec_name(name: str) -> str:
    """Our codec parameter name -> audiocraft's (``.conv.conv.``, weight_g / weight_v, ``vq``)."""
    for ours, theirs in ((".parametrizations.weight.original0", ".weight_g"),
                         (".parametrizations.weight.original1", ".weight_v")):
        name = name.replace(ours, theirs)
    name = re.sub(r"\.(conv|convtr)\.(weight_g|weight_v|bias|weight)$", r".\1.\1.\2", name)
    return name.replace("quantizer.layers.", "quantizer.vq.layers.")


def _write_audiocraft_magnet(directory, t5_dim: int):
    """A magnet-small-10secs-shaped folder (tiny): state_dict.bin + compression_state_dict.bin."""
    import yaml

    from engine.models.encodec import EncodecModel, debug_codec_config

    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(12)
    codec_cfg = debug_codec_config()
    codec = EncodecModel(codec_cfg).eval()
    codec_xp = {
        "sample_rate": 32000, "channels": 1, "compression_model": "encodec",
        "encodec": {"autoencoder": "seanet", "quantizer": "rvq", "sample_rate": "${sample_rate}",
                    "channels": "${channels}", "causal": False, "renormalize": False},
        "seanet": {"dimension": codec_cfg.dimension, "channels": "${channels}", "causal": False,
                   "n_filters": codec_cfg.n_filters, "n_residual_layers": 1,
                   "ratios": [8, 5, 4, 4], "activation": "ELU", "activation_params": {"alpha": 1.0},
                   "norm": "weight_norm", "norm_params": {}, "kernel_size": 7,
                   "residual_kernel_size": 3, "last_kernel_size": 7, "dilation_base": 2,
                   "pad_mode": codec_cfg.pad_mode, "true_skip": True, "compress": 2,
                   "lstm": codec_cfg.lstm_layers, "disable_norm_outer_blocks": 0,
                   "decoder": {"trim_right_ratio": 1.0}, "encoder": {}},
        "rvq": {"n_q": codec_cfg.n_q, "q_dropout": False, "bins": codec_cfg.bins, "decay": 0.99,
                "kmeans_init": False, "kmeans_iters": 50, "threshold_ema_dead_code": 2}}
    torch.save({"best_state": {_audiocraft_codec_name(k): v.clone()
                               for k, v in codec.state_dict().items()},
                "xp.cfg": yaml.safe_dump(codec_xp), "version": "1.4.0a2", "exported": True},
               directory / "compression_state_dict.bin")
    lm = LMModel(LMConfig(n_q=codec_cfg.n_q, card=codec_cfg.bins, dim=16, num_heads=2,
                          num_layers=2, cond_dim=t5_dim, causal=False)).eval()
    proj = "condition_provider.conditioners.description.output_proj."
    state = {(proj + k[len("cond_proj."):] if k.startswith("cond_proj.") else k): v.clone()
             for k, v in lm.state_dict().items()}
    xp = {"lm_model": "transformer_lm_magnet", "solver": "magnet", "channels": 1,
          "sample_rate": 32000, "compression_model_checkpoint": "//pretrained/facebook/encodec_32khz",
          "codebooks_pattern": {"modeling": "parallel", "parallel": {"empty_initial": -1}},
          "transformer_lm": {"dim": 16, "num_heads": 2, "num_layers": 2, "hidden_scale": 4,
                             "n_q": codec_cfg.n_q, "card": codec_cfg.bins, "causal": False,
                             "subcodes_context": 5, "compression_model_framerate": 50,
                             "segment_duration": 0, "span_len": -1, "norm_first": True,
                             "bias_ff": False, "bias_attn": False, "bias_proj": False,
                             "positional_embedding": "sin", "norm": "layer_norm",
                             "activation": "gelu"},
          "masking": {"span_len": 3},
          "dataset": {"segment_duration": 10},
          "fuser": {"cross": ["description"], "prepend": [], "sum": []},
          "conditioners": {"description": {"model": "t5", "t5": {"name": "t5-base"}}},
          "classifier_free_guidance": {"inference_coef": 3.0, "training_dropout": 0.3},
          "generate": {"lm": {"use_sampling": True, "temp": 3.0, "top_k": 0, "top_p": 0.9,
                              "max_cfg_coef": 10.0, "min_cfg_coef": 1.0,
                              "decoding_steps": [20, 10, 10, 10], "span_scoring": "max",
                              "span_arrangement": "nonoverlap"}}}
    torch.save({"best_state": state, "xp.cfg": yaml.safe_dump(xp), "version": "1.4.0a2",
                "exported": True}, directory / "state_dict.bin")
    return lm


def _tiny_t5_dir(directory) -> int:
    """A tiny random T5 encoder with a sentencepiece tokenizer trained here (offline)."""
    import io

    transformers = pytest.importorskip("transformers")
    spm = pytest.importorskip("sentencepiece")
    directory.mkdir(parents=True, exist_ok=True)
    captions = ["lofi drums with vinyl crackle", "jazz piano trio", "ambient pads in the rain",
                "heavy guitar riff", "house beat at 124 bpm"] * 8
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(captions), model_writer=buf,
                                   vocab_size=40, model_type="unigram", pad_id=0, eos_id=1,
                                   unk_id=2, bos_id=-1, hard_vocab_limit=False, minloglevel=2)
    (directory / "spiece.model").write_bytes(buf.getvalue())
    transformers.T5Tokenizer(vocab_file=str(directory / "spiece.model"),
                             extra_ids=0).save_pretrained(directory)
    config = transformers.T5Config(vocab_size=64, d_model=12, d_kv=4, d_ff=24, num_layers=1,
                                   num_heads=3, feed_forward_proj="relu")
    torch.manual_seed(13)
    transformers.T5EncoderModel(config).save_pretrained(directory)
    return config.d_model


def test_audiocraft_magnet_checkpoint_loads_and_generates(tmp_path, monkeypatch):
    t5_dim = _tiny_t5_dir(tmp_path / "t5")
    monkeypatch.setenv("BARFORGE_T5_DIR", str(tmp_path / "t5"))
    lm = _write_audiocraft_magnet(tmp_path / "magnet-tiny-10secs", t5_dim)
    model = MAGNeT.get_pretrained(str(tmp_path / "magnet-tiny-10secs"))
    assert isinstance(model, MAGNeT) and model.max_duration == 10.0
    assert model.attn_band == 5 and model.supported_modes == ("magnet",)
    assert not model.lm.cfg.causal
    for name, tensor in lm.state_dict().items():
        assert torch.equal(model.lm.state_dict()[name], tensor), name
    model.set_generation_params(duration=1.0, decoding_steps=STEPS, seed=0)
    wav, tokens = model.generate(["jazz piano trio"], return_tokens=True)
    assert tokens.shape == (1, 4, 48) and wav.shape == (1, 1, 48 * 640)
    # an AR MusicGen given beside it enables the hybrid and AR modes
    hybrid = MAGNeT.get_pretrained(str(tmp_path / "magnet-tiny-10secs"),
                                   ar_model=_musicgen_beside(model))
    assert hybrid.supported_modes == ("magnet", "hybrid", "ar")
    hybrid.set_generation_params(duration=1.0, decoding_steps=STEPS, mode="hybrid", seed=0,
                                 hybrid_prefix_s=0.2)
    assert hybrid.generate(["jazz piano trio"], return_tokens=True)[1].shape == (1, 4, 48)


def _musicgen_beside(magnet: MAGNeT):
    """A MusicGen (causal LM) sharing ``magnet``'s codec and text encoder."""
    from engine import MusicGen

    torch.manual_seed(14)
    lm = LMModel(replace(magnet.lm.cfg, causal=True)).eval()
    return MusicGen("ar", magnet.compression_model, lm, magnet.text_encoder, max_duration=30.0)


def test_masked_modes_render_past_one_segment_in_overlapping_windows():
    from engine.api import debug_magnet
    model = debug_magnet()                         # 10-s segment = 500 frames, windows step 6 s
    seen = []
    model.set_generation_params(duration=12.0, mode="magnet", decoding_steps=(2, 1, 1, 1), seed=4)
    long = model.generate(["x"], return_tokens=True, progress_callback=lambda d, t: seen.append((d, t)))[1]
    assert long.shape == (1, 4, 600)
    assert seen[-1] == (10, 10) and [d for d, _ in seen] == list(range(1, 11))   # 2 windows x 5 passes
    model.set_generation_params(duration=10.0, mode="magnet", decoding_steps=(2, 1, 1, 1), seed=4)
    first = model.generate(["x"], return_tokens=True)[1]
    assert torch.equal(long[..., :498], first[..., :498])            # window 1 is the one segment
    model.set_generation_params(duration=12.0, mode="hybrid", decoding_steps=(2, 1, 1, 1), seed=4)
    assert model.generate(["x"], return_tokens=True)[1].shape == (1, 4, 600)
    prompt = torch.randn(1, 1, 32000 * 9)           # longer than the 4-s overlap: context is its tail
    model.set_generation_params(duration=15.0, mode="magnet", decoding_steps=(2, 1, 1, 1), seed=4)
    prompt_codes = model.compression_model.encode(prompt)
    cont = model.generate_continuation(prompt, 32000, ["x"], return_tokens=True)[1]
    assert cont.shape == (1, 4, 750) and torch.equal(cont[..., :450], prompt_codes)
    with pytest.raises(ValueError, match="one segment"):
        model.set_generation_params(duration=12.0, mode="magnet", rescore_weight=0.5)
    model.ar_max_duration = 4.0                     # an AR LM trained on short segments: windows
    model.set_generation_params(duration=9.0, mode="ar", seed=4)
    assert model.ar_stride_s == pytest.approx(2.4)
    assert model.generate(["x"], return_tokens=True)[1].shape == (1, 4, 450)


@pytest.mark.parametrize("seconds", [10.5, 12.0, 15.98, 16.0, 21.0])
def test_the_last_window_is_only_as_long_as_the_piece_needs(seconds):
    from engine.api import debug_magnet
    model = debug_magnet()                         # 500-frame segment, windows step 300 frames
    model.set_generation_params(duration=seconds, mode="magnet", decoding_steps=(1, 1, 1, 1),
                                seed=4)
    recorder = PassRecorder(model.lm)
    codes = model.generate(["x"], return_tokens=True)[1]
    span = model.generation_params.span_len
    T = segment_frames(round(seconds * 50), span)
    W = segment_frames(500, span)
    expected, end = [W], W                          # window w starts at 300 w, ends at a span
    while end < T:
        start = end - (W - 300)
        expected.append(min(W, -(-(T - start) // span) * span))
        end = start + expected[-1]
    lengths = [tokens.shape[-1] for tokens, _ in recorder.calls]
    assert codes.shape[-1] == T and len(expected) >= 2
    assert lengths == [n for n in expected for _ in range(4)]     # 4 passes a window


def test_hybrid_clip_shorter_than_the_default_prefix_takes_half_of_it_autoregressively():
    from engine.api import debug_magnet
    model = debug_magnet()
    model.set_generation_params(duration=1.0, mode="hybrid", seed=0)  # default prefix 1.5 s
    assert model.hybrid_prefix_frames(None) == 25  # 0.5 s at 50 Hz
    wav = model.generate(["x"])
    assert wav.shape[-1] > 0
    with pytest.raises(ValueError, match="hybrid_prefix_s"):
        model.set_generation_params(duration=1.0, mode="hybrid", hybrid_prefix_s=1.5)
