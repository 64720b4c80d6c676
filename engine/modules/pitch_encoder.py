"""A pitch-resolving front-end for the codec encoder: a fixed log-frequency (CQT-like) analysis
feeding a small learned network whose output is added to the SEANet latent.

Why: a 16-filter SEANet encoder with a few strided convolutions cannot tell a semitone apart
at 55-500 Hz (the shipped codec keeps the key of 0.13 of held-out loops). This analysis hands
the encoder every semitone as its own bins. Each log-spaced bin (``bins_per_octave`` per octave
from ``FMIN_HZ``) is a triangular filter over the magnitude of the shortest of ``WINDOWS``
whose bin spacing is at most a semitone at that frequency (long windows for the bass, short
ones for the upper octaves: constant Q, as a CQT). All frames are centred on the codec's hop, so
frame ``t`` of the analysis lines up with latent frame ``t``.

Shape letters: B batch, N samples, P pitch bins, T frames, D latent dimension.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from engine.modules.istft_decoder import ConvNeXtBlock

FMIN_HZ = 32.703            # C1: the lowest bass note of the General MIDI corpora
OCTAVES = 7                 # C1 .. C8 (4186 Hz): fundamentals and the partials that name them
WINDOWS = (8192, 4096, 2048, 1024)   # longest first; each bin takes the shortest that resolves it
SEMITONE = 2 ** (1 / 12) - 1         # relative width of a semitone


def log_frequency_centres(bins_per_octave: int) -> np.ndarray:
    """Centre frequencies (Hz) of the analysis bins: ``FMIN_HZ * 2 ** (k / bins_per_octave)``."""
    return FMIN_HZ * 2.0 ** (np.arange(OCTAVES * bins_per_octave) / bins_per_octave)


def _window_for(freq: float, sample_rate: int) -> int:
    """The shortest analysis window whose bin spacing is at most a semitone at ``freq``."""
    fitting = [n for n in WINDOWS if sample_rate / n <= SEMITONE * freq]
    return min(fitting) if fitting else max(WINDOWS)


def _triangles(centres: np.ndarray, n_fft: int, sample_rate: int, bins_per_octave: int) -> np.ndarray:
    """[len(centres), n_fft // 2 + 1] triangular filters on the STFT bins, each summing to 1; a
    filter is at least one STFT bin wide on each side so no centre falls between bins."""
    freqs = np.arange(n_fft // 2 + 1) * sample_rate / n_fft
    half = np.maximum(centres * (2 ** (1 / bins_per_octave) - 1), sample_rate / n_fft)
    fb = np.maximum(0.0, 1.0 - np.abs(freqs[None] - centres[:, None]) / half[:, None])
    return fb / fb.sum(axis=1, keepdims=True)


class LogFrequencyAnalysis(nn.Module):
    """Waveform [B, 1, N] -> log-compressed log-frequency magnitudes [B, P, N // hop + 1] (fixed).

    Each window's STFT (Hann, centred, zero-padded, magnitudes / window sum) is computed only on
    the bins its filters touch, as a strided convolution with a DFT basis: the same numbers as
    ``torch.stft``, and it exports to ONNX (whose exporter takes no complex tensors)."""

    def __init__(self, sample_rate: int, hop_length: int, bins_per_octave: int):
        super().__init__()
        if bins_per_octave < 12 or bins_per_octave % 12:
            raise ValueError(f"pitch_bins_per_octave must be a positive multiple of 12 (whole bins "
                             f"per semitone), got {bins_per_octave}")
        self.hop_length = hop_length
        centres = log_frequency_centres(bins_per_octave)
        if centres[-1] >= sample_rate / 2:
            raise ValueError(f"the pitch analysis reaches {centres[-1]:.0f} Hz, above the Nyquist "
                             f"frequency of {sample_rate} Hz audio")
        self.windows = sorted({_window_for(f, sample_rate) for f in centres}, reverse=True)
        for i, n in enumerate(self.windows):      # centres are ascending and windows shrink with f
            sel = np.array([_window_for(f, sample_rate) == n for f in centres])
            fb = _triangles(centres[sel], n, sample_rate, bins_per_octave)
            used = np.flatnonzero(fb.any(axis=0))
            lo, hi = int(used[0]), int(used[-1]) + 1
            window = np.hanning(n + 1)[:-1]                     # periodic Hann, as torch.hann_window
            angle = 2 * np.pi * np.arange(lo, hi)[:, None] * np.arange(n)[None] / n
            basis = np.concatenate([np.cos(angle), -np.sin(angle)]) * window / window.sum()
            self.register_buffer(f"basis_{i}", torch.from_numpy(basis[:, None].astype(np.float32)),
                                 persistent=False)                # [2 * bins, 1, n]
            self.register_buffer(f"filters_{i}", torch.from_numpy(fb[:, lo:hi].astype(np.float32)),
                                 persistent=False)                # [P_i, bins]
        self.bins = len(centres)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        flat = wav.reshape(-1, 1, wav.shape[-1])
        parts = []
        for i, n in enumerate(self.windows):
            padded = F.pad(flat, (n // 2, n // 2))                              # centred frames
            re, im = F.conv1d(padded, getattr(self, f"basis_{i}"), stride=self.hop_length).chunk(2, dim=1)
            parts.append(getattr(self, f"filters_{i}") @ torch.sqrt(re.square() + im.square()))
        return torch.log1p(100.0 * torch.cat(parts, dim=1))                   # [B, P, T]


class PitchEncoder(nn.Module):
    """Waveform [B, 1, N] -> [B, dimension, frames]: the fixed analysis, a pointwise
    projection of its bins, ConvNeXt blocks over time and a projection to the codec latent."""

    def __init__(self, sample_rate: int, hop_length: int, bins_per_octave: int, dimension: int,
                 width: int = 256, layers: int = 2):
        super().__init__()
        self.analysis = LogFrequencyAnalysis(sample_rate, hop_length, bins_per_octave)
        self.inp = nn.Conv1d(self.analysis.bins, width, 3, padding=1)
        self.blocks = nn.Sequential(*[ConvNeXtBlock(width) for _ in range(layers)])
        self.out = nn.Conv1d(width, dimension, 1)

    def forward(self, wav: torch.Tensor, frames: int) -> torch.Tensor:
        """``frames``: the SEANet latent's length, ceil(N / hop) (the analysis has N // hop + 1;
        taken from that tensor's shape so an exported graph keeps it dynamic)."""
        features = self.analysis(wav)[..., :frames]
        return self.out(self.blocks(self.inp(features)))
