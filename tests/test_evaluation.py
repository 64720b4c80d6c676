"""Metrics against values computed by hand, and the baselines' order."""
import numpy as np
import pytest
import torch

from engine.recipes.evaluation import metrics as M

SR = 32000


def _sine(freq: float, seconds: float = 2.0, sr: int = SR) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _music(seconds: float = 4.0) -> np.ndarray:
    rng = np.random.default_rng(0)
    x = sum(_sine(f, seconds) for f in (110, 220, 330, 440, 1320, 3000)) / 4
    return (x + 0.01 * rng.standard_normal(len(x))).astype(np.float32)


def _clicks(bpm: float, seconds: float = 12.0, sr: int = SR) -> np.ndarray:
    x = np.zeros(int(seconds * sr), dtype=np.float32)
    rng = np.random.default_rng(1)
    period = 60.0 / bpm * sr
    for i in range(int(len(x) / period)):
        s = int(round(i * period))
        burst = rng.standard_normal(400) * np.exp(-np.arange(400) / 60)
        x[s:s + 400] += burst[:len(x) - s].astype(np.float32)
    return x


def test_si_snr_of_scaled_copy_is_very_high_and_of_noisy_copy_matches_hand_value():
    ref = torch.from_numpy(_music())
    assert float(M.si_snr(ref, 0.37 * ref)) > 80.0
    noise = torch.from_numpy(np.random.default_rng(2).standard_normal(len(ref)).astype(np.float32))
    noise = noise - noise.mean()
    noise *= (ref.pow(2).mean() / noise.pow(2).mean()).sqrt() / 10     # 20 dB below the signal
    assert float(M.si_snr(ref, ref + noise)) == pytest.approx(20.0, abs=0.3)
    assert float(M.si_snr(ref, -ref)) > 80.0                             # the sign is a scale too
    assert float(M.si_snr(ref, noise)) < -20.0                           # unrelated: all error


def test_mu_law_baseline_is_worse_than_identity_and_more_bits_are_better():
    wav = _music()
    ref = torch.from_numpy(wav)
    d = lambda x: float(M.multiscale_mel_distance(ref, torch.from_numpy(x), SR))  # noqa: E731
    assert d(wav) == 0.0
    four, eight = d(M.mu_law(wav, 4)), d(M.mu_law(wav, 8))
    assert four > eight > 0.0
    assert float(M.si_snr(ref, torch.from_numpy(M.mu_law(wav, 4)))) < 30.0


def test_lowpass_removes_only_content_above_cutoff():
    wav = _sine(1000) + _sine(12000)
    low = M.lowpass(wav, SR, 8000)
    assert len(low) == len(wav)
    spec = np.abs(np.fft.rfft(low[4000:-4000]))
    freqs = np.fft.rfftfreq(len(low) - 8000, 1 / SR)
    at = lambda f: spec[np.argmin(np.abs(freqs - f))]  # noqa: E731
    assert at(12000) < 1e-3 * at(1000)
    assert float(M.multiscale_mel_distance(torch.from_numpy(wav), torch.from_numpy(low), SR)) > 0.01


@pytest.mark.parametrize("bpm", [72, 90, 100, 128, 150, 174])
def test_tempo_of_a_click_track(bpm):
    found = M.estimate_tempo(_clicks(bpm), SR)
    assert M.octave_tolerant_tempo_error(found, bpm) < 0.01
    if 80 <= bpm <= 170:
        assert M.tempo_error(found, bpm) < 0.01


def test_key_of_a_cadence():
    def chord(notes, seconds=1.0):
        return sum(sum(_sine(440 * 2 ** ((n - 69) / 12) * h, seconds) / h for h in (1, 2, 3)) for n in notes)
    g_major = np.concatenate([chord(c) for c in ([43, 55, 59, 62], [48, 60, 64, 67], [50, 62, 66, 69], [43, 55, 59, 62])])
    assert M.estimate_key(g_major, SR) == "G major"
    a_minor = np.concatenate([chord(c) for c in ([45, 57, 60, 64], [50, 62, 65, 69], [52, 64, 68, 71], [45, 57, 60, 64])])
    assert M.estimate_key(a_minor, SR) == "A minor"
    assert M.key_score("E major", "A major") == 0.5 and M.key_score("C major", "A minor") == 0.3
    assert M.key_score("A major", "A minor") == 0.2 and M.key_score("C# major", "G minor") == 0.0


def test_drum_presence_and_spectral_flatness():
    pad = sum(_sine(f, 6.0) for f in (110, 220, 330, 440, 1320, 3000)) / 4     # sustained tones
    drums = pad + _clicks(120, 6.0)
    assert M.has_drums(drums, SR) and not M.has_drums(pad, SR)
    noise = np.random.default_rng(3).standard_normal(SR * 2).astype(np.float32)
    assert M.spectral_flatness(noise) > 0.4
    assert M.spectral_flatness(_sine(440)) < 0.05



def test_bar_chroma_change_is_zero_for_a_held_chord_and_large_for_changing_ones():
    def chord(midi_notes, seconds=1.0):
        return sum(_sine(440 * 2 ** ((n - 69) / 12), seconds) for n in midi_notes)
    c_major, f_sharp_major = chord([60, 64, 67]), chord([66, 70, 73])
    bar = len(c_major)
    held = np.concatenate([c_major] * 4)
    moving = np.concatenate([c_major, f_sharp_major] * 2)        # no pitch class in common
    assert M.bar_chroma_change(held, SR, bar) < 0.05
    assert M.bar_chroma_change(moving, SR, bar) > 1.0
    with pytest.raises(ValueError, match="two whole bars"):
        M.bar_chroma_change(held[:bar + bar // 2], SR, bar)
