"""Clip rendering: exact length after resampling, a click-free loop seam, loudness and true peak."""
import numpy as np
import pyloudnorm
import pytest
from scipy.signal import resample_poly

from bridge import clip_render
from engine.tempo import frames_for_bars


def music(seconds, sr, channels=2, seed=0):
    """A continuous test signal: a few drifting partials plus filtered noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    x = sum(a * np.sin(2 * np.pi * f * t + 3 * np.sin(2 * np.pi * 0.3 * t))
            for a, f in ((0.3, 110), (0.2, 220.5), (0.1, 441.3)))
    noise = np.convolve(rng.standard_normal(t.size), np.ones(8) / 8, mode="same") * 0.05
    mono = (x + noise).astype(np.float32)
    return np.stack([mono * (1 - 0.1 * c) for c in range(channels)], axis=1)  # [N, C]


def independent_true_peak_db(clip):
    looped = np.concatenate([clip, clip], axis=0)
    up = resample_poly(looped.astype(np.float64), 4, 1, axis=0)
    return 20 * np.log10(np.max(np.abs(up)))


@pytest.mark.parametrize("model_sr,host_sr,bpm", [(32000, 44100, 93.7), (32000, 48000, 128),
                                                  (24000, 96000, 120)])
def test_exact_length_after_resampling(model_sr, host_sr, bpm):
    frames = frames_for_bars(1, bpm, 4, host_sr)
    wav = music(frames / host_sr + clip_render.SEAM_MARGIN_S, model_sr)
    audio = clip_render.resample(wav, model_sr, host_sr)
    clip, flags = clip_render.cut_clip(audio, 0, frames, host_sr, "start")
    assert clip.shape == (frames, 2) and clip.dtype == np.float32
    assert flags == clip_render.FLAG_LOOP_SEAM


def max_step(x):
    return float(np.max(np.abs(np.diff(x, axis=0))))


@pytest.mark.parametrize("seam", ["start", "end"])
def test_loop_seam_wrap_step_no_larger_than_inside(seam):
    sr = 48000
    frames = frames_for_bars(1, 93.7, 4, sr)
    audio = music(frames / sr + 1.0, sr, seed=3)
    start = 7919  # an arbitrary offset: the raw cut wraps with a jump
    raw = audio[start:start + frames]
    assert np.max(np.abs(raw[0] - raw[-1])) > max_step(raw)  # the un-seamed loop clicks
    clip, flags = clip_render.cut_clip(audio, start, frames, sr, seam)
    assert flags == clip_render.FLAG_LOOP_SEAM
    wrap = float(np.max(np.abs(clip[0] - clip[-1])))
    assert wrap <= max_step(clip)
    if seam == "end":  # a continuation's first frames are left exactly as generated
        assert np.array_equal(clip[:frames // 2], raw[:frames // 2])


def test_no_seam_without_audio_past_the_end():
    sr = 48000
    audio = music(1.0, sr)
    clip, flags = clip_render.cut_clip(audio, 0, audio.shape[0], sr, "start")
    assert flags == 0 and np.array_equal(clip, audio)


@pytest.mark.parametrize("seconds,level", [(2.0, 0.05), (2.0, 0.9), (0.2, 0.05)])
def test_loudness_target_and_true_peak_ceiling(seconds, level):
    sr = 48000
    clip = music(seconds, sr, seed=1) * level
    out, result = clip_render.normalize_loudness(clip, sr, -14.0, -1.0)
    assert independent_true_peak_db(out) <= -1.0
    measured = out if seconds >= 0.4 else np.concatenate([out] * 4, axis=0)
    lufs = pyloudnorm.Meter(sr).integrated_loudness(measured.astype(np.float64))
    if result.gain_db == pytest.approx(-14.0 - result.measured_lufs):  # the ceiling did not bind
        assert abs(lufs - -14.0) <= 0.5
    else:
        assert lufs < -14.0 + 0.5 and result.true_peak_dbtp == pytest.approx(-1.05, abs=0.01)


def test_peaky_clip_is_held_under_the_ceiling():
    sr = 48000
    clip = np.zeros((sr, 1), dtype=np.float32)
    clip[::4800] = 0.9  # clicks: a high crest factor, the ceiling binds
    out, result = clip_render.normalize_loudness(clip, sr, -14.0, -1.0)
    assert independent_true_peak_db(out) <= -1.0
    assert result.gain_db < -14.0 - result.measured_lufs


def test_silence_is_left_alone():
    clip = np.zeros((4800, 2), dtype=np.float32)
    out, result = clip_render.normalize_loudness(clip, 48000)
    assert result.measured_lufs is None and np.array_equal(out, clip)


def test_match_channels():
    mono = np.ones((10, 1), np.float32)
    assert clip_render.match_channels(mono, 2).shape == (10, 2)
    stereo = np.stack([np.ones(10), -np.ones(10)], axis=1).astype(np.float32)
    assert np.allclose(clip_render.match_channels(stereo, 1), 0)
