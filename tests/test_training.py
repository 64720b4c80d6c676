"""Training: each objective lowers its loss on a fixed batch, checkpoints resume bit-exactly,
and two torchrun processes train together on CPU (gloo)."""
import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from engine.conditioners.text import debug_text_encoder
from engine.models.encodec import CodecConfig, EncodecModel
from engine.models.lm import LMConfig
from engine.recipes.training.codec import CodecLossWeights, CodecTask, chroma_loss, load_trained_codec
from engine.recipes.training.common import Dist, LoopOptions, checkpoint_dir, run_training
from engine.recipes.training.dataset import AudioCrops, CodeSegments, encode_corpus
from engine.recipes.training.lm import LMTask
from engine.recipes.training.magnet import MagnetTask, span_coverage, span_mask

SR = 32000
CPU = Dist(rank=0, world=1, device=torch.device("cpu"))
TINY_CODEC = CodecConfig(n_filters=2, dimension=8, lstm_layers=0, n_q=2, bins=32, kmeans_init=True,
                         kmeans_iters=5)


def _tiny_lm(causal: bool) -> LMConfig:
    return LMConfig(n_q=2, card=32, dim=32, num_heads=2, num_layers=2, hidden_scale=2, cond_dim=32, causal=causal)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Three real 1-bar loops written as a synth corpus (tones + clicks at their tempo)."""
    root = tmp_path_factory.mktemp("corpus")
    rows = []
    for i, (bpm, f0) in enumerate([(120, 220.0), (150, 330.0), (100, 262.0)]):
        n = round(4 * 60 / bpm * SR)
        t = np.arange(n) / SR
        wav = 0.2 * np.sin(2 * np.pi * f0 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * t))
        beat = round(60 / bpm * SR)
        for b in range(4):
            wav[b * beat:b * beat + 200] += np.random.default_rng(i).standard_normal(200) * 0.3
        name = f"loop_{i:06d}"
        sf.write(root / f"{name}.wav", wav.astype(np.float32), SR, subtype="PCM_16")
        rows.append({"id": name, "audio": f"{name}.wav", "split": "train", "bars": 1, "bpm": bpm,
                     "beats_per_bar": 4, "key": "C minor", "description": f"test loop {i}",
                     "caption": f"test loop {i}, C minor. bpm: {bpm}. key: C minor.", "sample_rate": SR,
                     "parts": {"drums": {}}})
    (root / "index.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


@pytest.fixture(scope="module")
def codes(corpus, tmp_path_factory) -> Path:
    torch.manual_seed(0)
    codec = EncodecModel(TINY_CODEC)
    wav = torch.from_numpy(sf.read(corpus / "loop_000000.wav", dtype="float32")[0])[None, None]
    latent = codec.encoder(wav)
    codec.quantizer.ema_update(latent, codec.quantizer.encode(latent))    # k-means initialises the books
    path = tmp_path_factory.mktemp("codes") / "codes.pt"
    encode_corpus(corpus, codec, debug_text_encoder(dim=32), path, progress=False)
    return path


def test_encoded_loops_tile_into_segments_longer_than_the_loop(codes, corpus):
    data = CodeSegments(codes, 200)                       # > every loop's period (1 bar = 1.6-2.4 s)
    periods = [c.shape[-1] for c in data.codes]
    items = json.loads((corpus / "index.jsonl").read_text().splitlines()[0])
    assert max(periods) < 200 and periods[0] == round(items["bars"] * data.bar_frames[0])
    torch.manual_seed(0)
    seg = data.sample(3)[0]
    assert seg.shape == (3, 2, 200)
    for b in range(3):
        assert len(seg[b].unique()) > 2                                    # real codes, not a constant
        assert any(torch.equal(seg[b, :, p:], seg[b, :, :200 - p]) for p in periods)   # its loop's period


def _codec_task(corpus, steps=10, crop=3200, config=TINY_CODEC, **kw) -> CodecTask:
    data = AudioCrops(corpus, SR, crop)
    return CodecTask(config, data, CPU, batch_size=2, lr=3e-3, steps=steps, warmup=1, seed=0, **kw)


def test_codec_steps_lower_the_loss_on_a_fixed_batch(corpus):
    task = _codec_task(corpus, adv_start=0, disc_filters=4)
    torch.manual_seed(0)
    wav = task.data.sample(2)
    task.update(wav, 0)                   # first step: k-means sets the codebooks
    before = task.eval_loss(wav)
    for step in range(1, 8):
        terms = task.update(wav, step)
    assert {"l1", "mel", "stft", "commit", "adv", "feat", "disc"} <= set(terms)
    assert task.eval_loss(wav) < before


@pytest.mark.parametrize("decoder", ["seanet", "istft"])
def test_decoder_only_fine_tuning_keeps_the_codes_and_learns_pitch(corpus, decoder):
    trained = _codec_task(corpus, crop=6400)               # > half the chroma term's 8192 window
    torch.manual_seed(0)
    wav = trained.data.sample(2)
    trained.update(wav, 0)                                      # k-means sets the codebooks
    state = trained.model.state_dict()
    config = TINY_CODEC
    if decoder == "istft":                                      # a new kind of decoder on the same codes
        config = dataclasses.replace(TINY_CODEC, decoder="istft", istft_dim=16, istft_low_layers=1,
                                     istft_high_layers=1)
        state = {k: v for k, v in state.items() if not k.startswith("decoder.")}
    task = _codec_task(corpus, crop=6400, config=config, init_state=state, decoder_only=True,
                       weights=CodecLossWeights(pitch=1.0, chroma=1.0))
    enc = {k: v.clone() for k, v in task.model.state_dict().items() if not k.startswith("decoder.")}
    codes = task.model.encode(wav)
    before = task.eval_loss(wav)
    for step in range(6):
        terms = task.update(wav, step)
    assert {"pitch", "chroma"} <= set(terms) and task.eval_loss(wav) < before
    after = task.model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in enc.items())          # encoder + codebooks frozen
    assert torch.equal(task.model.encode(wav), codes)
    with pytest.raises(ValueError, match="init-from"):
        _codec_task(corpus, decoder_only=True)


def test_chroma_loss_hears_a_semitone_but_not_a_gain_change():
    t = torch.arange(SR) / SR
    chord = lambda *f0: sum(torch.sin(2 * torch.pi * f * t) for f in f0).view(1, 1, -1) * 0.1  # noqa: E731
    c_major = chord(261.63, 329.63, 392.0)
    assert chroma_loss(c_major, c_major, SR) == 0
    assert chroma_loss(c_major, 0.5 * c_major, SR) < 0.1
    assert chroma_loss(c_major, chord(277.18, 349.23, 415.3), SR) > 1.0      # C# major: all moved
    with pytest.raises(ValueError, match="crop"):
        chroma_loss(c_major[..., :4000], c_major[..., :4000], SR)


def test_dead_code_threshold_scales_with_batch_and_frames(corpus):
    task = _codec_task(corpus)
    thr = task.model.quantizer.layers[0]._codebook.threshold_ema_dead_code
    frames = -(-3200 // TINY_CODEC.hop_length)
    assert thr == pytest.approx(min(2.0, 0.2 * 2 * frames / TINY_CODEC.bins))


@pytest.mark.parametrize("cls", [LMTask, MagnetTask])
def test_lm_steps_lower_the_loss_on_a_fixed_batch(codes, cls):
    data = CodeSegments(codes, 40)
    task = cls(_tiny_lm(cls is LMTask), data, CPU, batch_size=4, lr=3e-3, steps=20, warmup=1, cond_dropout=0.0)
    torch.manual_seed(1)
    batch = data.sample(4)
    assert batch[0].shape == (4, 2, 40) and batch[1].shape[0] == 4

    def loss() -> float:
        torch.manual_seed(5)              # MAGNeT: same stage and masks every time
        return task.eval_loss(batch)
    before = loss()
    for _ in range(10):
        task.update(batch)
    assert loss() < before - 0.1


def test_segments_carry_their_loops_tempo_as_beats_per_frame(codes, corpus):
    data = CodeSegments(codes, 40)
    torch.manual_seed(0)
    beat = data.sample(16)[3]
    frame_rate = 32000 / TINY_CODEC.hop_length
    bpf = {round(bpm / 60 / frame_rate, 6) for bpm in (120, 150, 100)}
    assert beat.shape == (16, 3) and bool((beat[:, 1] == 4).all()) and bool((beat[:, 2] == 0).all())
    assert {round(float(b), 6) for b in beat[:, 0]} <= bpf


def test_beat_conditioned_lm_starts_from_a_plain_lms_weights(codes):
    plain = LMTask(_tiny_lm(True), CodeSegments(codes, 40), CPU, batch_size=2, lr=1e-3, steps=2)
    cfg = dataclasses.replace(_tiny_lm(True), beat_harmonics=2)
    task = LMTask(cfg, CodeSegments(codes, 40), CPU, batch_size=2, lr=3e-3, steps=20, warmup=1,
                  cond_dropout=0.0, init_state=plain.model.state_dict())
    torch.manual_seed(1)
    batch = task.data.sample(4)
    assert task.eval_loss(batch) == pytest.approx(plain.eval_loss(batch), abs=1e-6)   # zero beat_proj
    before = task.model.beat_proj.weight.detach().clone()
    task.update(batch)
    assert not torch.equal(task.model.beat_proj.weight, before)                          # it learns
    with pytest.raises(ValueError, match="do not fit"):
        LMTask(dataclasses.replace(cfg, dim=64), CodeSegments(codes, 40), CPU, batch_size=2,
               lr=1e-3, steps=2, init_state=plain.model.state_dict())


def test_span_mask_covers_about_the_asked_rate():
    torch.manual_seed(0)
    cover = span_coverage(100, 3)
    assert cover[0] == 0 and cover[-1] == 1 and bool((cover[1:] >= cover[:-1]).all())
    rates = torch.tensor([0.1, 0.5, 0.9] * 200)
    mask = span_mask(rates, 100, 3).float().mean(dim=1)
    for r in (0.1, 0.5, 0.9):
        assert float(mask[rates == r].mean()) == pytest.approx(r, abs=0.04)


@pytest.mark.parametrize("objective", ["codec", "ar"])
def test_checkpoint_resumes_bit_exactly(corpus, codes, tmp_path, objective):
    def make(steps):
        if objective == "codec":
            return _codec_task(corpus, steps=steps)
        return LMTask(_tiny_lm(True), CodeSegments(codes, 40), CPU, batch_size=2, lr=1e-3, steps=steps, warmup=2)
    straight = make(4)
    run_training(straight, LoopOptions(steps=4, out=tmp_path / "a", progress=False, checkpoint_every=2), CPU)
    first = make(4)
    run_training(first, LoopOptions(steps=2, out=tmp_path / "b", progress=False), CPU)
    resumed = make(4)
    run_training(resumed, LoopOptions(steps=4, out=tmp_path / "b", resume=True, progress=False), CPU)
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    fresh = make(4).model.state_dict()
    assert any(not torch.equal(a[k], fresh[k]) for k in a)          # training changed the weights
    # the shipped folder holds weights and JSON only; the optimizer state lives beside it
    assert {p.suffix for p in (tmp_path / "b").iterdir()} == {".safetensors", ".json"}
    assert (checkpoint_dir(tmp_path / "b") / "checkpoint.pt").is_file()


def test_weights_only_checkpoints_export_weights_and_refuse_resume(corpus, tmp_path):
    task = _codec_task(corpus, steps=4)
    run_training(task, LoopOptions(steps=4, out=tmp_path / "w", progress=False, checkpoint_every=2,
                                   training_state=False), CPU)
    assert json.loads((tmp_path / "w" / "codec.json").read_text())["steps"] == 4
    assert not checkpoint_dir(tmp_path / "w").exists()          # no optimizer state written
    with pytest.raises(ValueError, match="--init-from"):
        run_training(_codec_task(corpus, steps=4), LoopOptions(steps=4, out=tmp_path / "w", resume=True,
                                                               training_state=False), CPU)
    state = load_trained_codec(tmp_path / "w").state_dict()
    resumed = _codec_task(corpus, steps=2, init_state=state)     # --init-from: continue from the weights
    assert all(torch.equal(resumed.model.state_dict()[k], v) for k, v in state.items())


@pytest.mark.skipif(shutil.which("torchrun") is None and not hasattr(sys, "executable"), reason="no torchrun")
def test_two_torchrun_processes_train_together_on_cpu(corpus, tmp_path):
    task = _codec_task(corpus, steps=1)
    task.export(tmp_path / "codec", 1, {})
    assert load_trained_codec(tmp_path / "codec").num_codebooks == 2
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29571",
           "-m", "engine.recipes.training.command", "lm", "--data", str(corpus), "--codec", str(tmp_path / "codec"),
           "--out", str(tmp_path / "lm"), "--steps", "3", "--batch-size", "2", "--dim", "32", "--layers", "1",
           "--heads", "2", "--segment-s", "0.5", "--text-encoder", "debug", "--warmup", "1", "--quiet",
           "--threads", "1"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = json.loads((tmp_path / "lm" / "lm.json").read_text())
    assert meta["steps"] == 3 and meta["world"] == 2 and meta["objective"] == "ar"
    assert np.isfinite(meta["losses"]["ce"])


def test_codec_eval_reports_whether_the_key_survives(corpus, tmp_path):
    from engine.recipes.evaluation.suites import eval_codec

    codec = EncodecModel(TINY_CODEC).eval()                    # untrained: it keeps no pitch
    result = eval_codec(codec, str(corpus), tmp_path, items=3, seconds=1.0, split="train")
    mean = result["mean"]
    assert {"codec_key_kept", "mulaw4_key_kept", "lowpass8k_key_kept"} <= set(mean)
    assert mean["lowpass8k_key_kept"] == 1.0                   # the tones lie far below 8 kHz
    assert all(0.0 <= mean[k] <= 1.0 for k in mean if k.endswith("_key_kept"))
    # drums kept: the percussive share of each copy beside the originals' (clicks: above zero)
    assert {"original_percussive", "codec_percussive", "mulaw4_percussive"} <= set(result["median"])
    assert result["median"]["original_percussive"] > 0


def test_codec_eval_takes_a_model_name_or_a_trained_codec_folder(corpus, tmp_path):
    from engine.recipes.evaluation.command import _codec

    task = _codec_task(corpus, steps=1)
    task.export(tmp_path / "codec", 1, {})
    assert _codec(str(tmp_path / "codec")).config == TINY_CODEC
    assert isinstance(_codec("debug"), EncodecModel)           # a model: its codec (`--codec default`)
    with pytest.raises(ValueError, match="unknown model"):
        _codec(str(tmp_path / "nothing"))
