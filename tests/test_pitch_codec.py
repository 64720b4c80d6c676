"""The pitch codec: a fixed log-frequency front-end that resolves semitones feeds the encoder;
50 frames/s with the iSTFT decoder; its config round-trips and its ONNX graphs match PyTorch."""
import dataclasses

import numpy as np
import pytest
import torch

from engine.models.encodec import CodecConfig, EncodecModel
from engine.modules.pitch_encoder import LogFrequencyAnalysis, PitchEncoder, log_frequency_centres

SR = 32000
PITCH_CODEC = CodecConfig(n_filters=4, dimension=16, lstm_layers=0, n_q=2, bins=64, ratios=(8, 5, 4, 4),
                          kmeans_init=False, decoder="istft", istft_dim=16, istft_low_layers=1,
                          istft_high_layers=1, pitch_bins_per_octave=12)


def _peak_bins(analysis: LogFrequencyAnalysis, freqs: list[float]) -> list[int]:
    t = torch.arange(SR) / SR
    tones = torch.stack([torch.sin(2 * np.pi * f * t) for f in freqs])[:, None]
    return analysis(tones)[:, :, 10:-10].mean(dim=-1).argmax(dim=-1).tolist()   # inner frames: no edges


# 12 bins per octave: every semitone C1..B7 is its own bin; 24: from A1 (55 Hz) up, where the
# longest window (8192 samples, 3.9 Hz bins) is finer than half a semitone.
@pytest.mark.parametrize("bins_per_octave, lowest_note", [(12, 0), (24, 9)])
def test_a_semitone_up_moves_the_peak_by_a_semitones_worth_of_bins(bins_per_octave, lowest_note):
    analysis = LogFrequencyAnalysis(SR, 640, bins_per_octave)
    per_semitone = bins_per_octave // 12
    notes = range(lowest_note, 7 * 12 - 1)
    centres = log_frequency_centres(bins_per_octave)
    freqs = [float(centres[n * per_semitone]) for n in notes]
    on_note = _peak_bins(analysis, freqs)
    up = _peak_bins(analysis, [f * 2 ** (1 / 12) for f in freqs])
    assert on_note == [n * per_semitone for n in notes]
    assert up == [n * per_semitone + per_semitone for n in notes]    # adjacent bins at 12 per octave


def test_the_analysis_is_torch_stft_through_log_frequency_triangles():
    from engine.modules.pitch_encoder import _triangles, _window_for
    analysis = LogFrequencyAnalysis(SR, 640, 12)
    torch.manual_seed(0)
    wav = torch.randn(2, 1, 20000) * 0.2
    centres = log_frequency_centres(12)
    parts = []
    for n in analysis.windows:
        window = torch.hann_window(n, dtype=torch.float64)
        spec = torch.stft(wav[:, 0].double(), n, 640, window=window, center=True, pad_mode="constant",
                          return_complex=True).abs() / window.sum()
        fb = _triangles(centres[[_window_for(f, SR) == n for f in centres]], n, SR, 12)
        parts.append(torch.from_numpy(fb) @ spec)
    ref = torch.log1p(100 * torch.cat(parts, dim=1)).float()
    assert torch.allclose(analysis(wav), ref, atol=1e-4)


def test_bass_notes_take_long_windows_and_high_notes_short_ones():
    analysis = LogFrequencyAnalysis(SR, 640, 24)
    assert analysis.windows == [8192, 4096, 2048, 1024]
    assert analysis.bins == 7 * 24 and len(log_frequency_centres(24)) == 7 * 24


@pytest.mark.parametrize("bins_per_octave", [0, 7, 18])
def test_bins_per_octave_must_be_whole_bins_per_semitone(bins_per_octave):
    with pytest.raises(ValueError, match="multiple of 12"):
        LogFrequencyAnalysis(SR, 640, bins_per_octave)


def test_the_pitch_front_end_is_mono():
    with pytest.raises(ValueError, match="mono"):
        dataclasses.replace(PITCH_CODEC, decoder="seanet", channels=2)


def test_pitch_codec_runs_at_50_frames_per_second_and_decodes_whole_frames():
    torch.manual_seed(0)
    codec = EncodecModel(PITCH_CODEC).eval()
    assert codec.hop_length == 640 and codec.frame_rate == 50.0
    for n in (1, 639, 640, 641, 32000):
        wav = torch.randn(2, 1, n) * 0.1
        codes = codec.encode(wav)
        assert codes.shape == (2, 2, -(-n // 640))
        assert codec.decode(codes).shape == (2, 1, codes.shape[-1] * 640)
        assert codec(wav).audio.shape == wav.shape


def test_the_front_end_reaches_the_latent_and_trains():
    torch.manual_seed(0)
    codec = EncodecModel(PITCH_CODEC)
    wav = torch.randn(2, 1, 6400) * 0.1
    without_front_end = codec.encoder(wav)
    assert not torch.allclose(codec.latent(wav), without_front_end)
    codec(wav).audio.square().mean().backward()
    assert codec.pitch_encoder.inp.weight.grad.abs().sum() > 0
    assert not any("analysis" in k for k in codec.state_dict())      # fixed: rebuilt, not stored


def test_pitch_codec_config_and_weights_round_trip():
    assert CodecConfig.from_dict(PITCH_CODEC.to_dict()) == PITCH_CODEC
    assert CodecConfig.from_dict({k: v for k, v in PITCH_CODEC.to_dict().items()
                                  if k != "pitch_bins_per_octave"}).pitch_bins_per_octave == 0
    torch.manual_seed(0)
    codec = EncodecModel(PITCH_CODEC).eval()
    twin = EncodecModel(CodecConfig.from_dict(PITCH_CODEC.to_dict())).eval()
    twin.load_state_dict(codec.state_dict())
    wav = torch.randn(1, 1, 12800) * 0.1
    assert torch.equal(codec.encode(wav), twin.encode(wav))


def test_pitch_encoder_output_has_the_latents_frames():
    encoder = PitchEncoder(SR, 640, 12, dimension=8, width=16, layers=1)
    assert encoder(torch.zeros(1, 1, 6401), 11).shape == (1, 8, 11)    # ceil(6401 / 640) of 6401 // 640 + 1


def test_pitch_codec_exports_to_onnx_and_matches_pytorch(tmp_path):
    from engine.api import build_debug_model
    from engine.loaders.onnx_bundle import open_bundle
    from engine.models.musicgen import MusicGen
    from export.bundle import export_bundle
    debug = build_debug_model()
    torch.manual_seed(0)
    codec = EncodecModel(dataclasses.replace(PITCH_CODEC, n_q=debug.lm.cfg.n_q,
                                             bins=debug.lm.cfg.card)).eval()
    model = MusicGen("debug-pitch", codec, debug.lm, debug.text_encoder, max_duration=30.0)
    model.text_encoder_spec = debug.text_encoder_spec
    export_bundle(model, tmp_path / "b", log=lambda s: None)
    onnx_codec = open_bundle(tmp_path / "b", provider="cpu").codec
    for n in (640, 9000, 32000):
        t = torch.arange(n) / SR
        wav = (0.3 * torch.sin(2 * np.pi * 220 * t) + 0.05 * torch.randn(n))[None, None]
        with torch.no_grad():
            ref = codec.encode(wav)
        out = onnx_codec.encode(wav)
        assert out.shape == ref.shape
        assert float((out == ref).float().mean()) > 0.95     # a nearest code may flip on float noise
        with torch.no_grad():
            ref_wav = codec.decode(ref)
        assert float((onnx_codec.decode(ref) - ref_wav).abs().max()) < 1e-4 * max(1.0, float(ref_wav.abs().max()))
