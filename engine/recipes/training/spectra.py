"""Spectral helpers the codec's training losses and the evaluation metrics share: the mel
filterbank and spectrogram (``MEL_SCALES``: the STFT windows of the multi-scale mel loss and
distance) and the pitch class of a frequency. Written in numpy / torch (no librosa)."""
from __future__ import annotations

import functools

import numpy as np
import torch

MEL_SCALES = (64, 128, 256, 512, 1024, 2048)   # STFT windows of the multi-scale mel distance


@functools.lru_cache(maxsize=32)
def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int) -> torch.Tensor:
    """Triangular HTK-mel filters [n_mels, n_fft // 2 + 1], each normalised to unit area."""
    def hz_to_mel(f):
        return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)

    def mel_to_hz(m):
        return 700.0 * (10 ** (np.asarray(m) / 2595.0) - 1.0)

    freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(sample_rate / 2), n_mels + 2))
    lower, center, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs[None] - lower) / np.maximum(center - lower, 1e-9)
    down = (upper - freqs[None]) / np.maximum(upper - center, 1e-9)
    fb = np.maximum(0.0, np.minimum(up, down))
    fb /= np.maximum(fb.sum(axis=1, keepdims=True), 1e-9)
    return torch.from_numpy(fb.astype(np.float32))


def mel_spectrogram(wav: torch.Tensor, sample_rate: int, n_fft: int, n_mels: int | None = None,
                    hop: int | None = None) -> torch.Tensor:
    """Power mel spectrogram of ``wav`` [..., N] -> [..., M, F] (hop n_fft // 4 unless given, Hann,
    STFT normalised by sqrt(n_fft) so every window size sees the same power scale)."""
    n_mels = n_mels or min(64, n_fft // 4)
    flat = wav.reshape(-1, wav.shape[-1])
    spec = torch.stft(flat, n_fft, hop_length=hop or n_fft // 4, window=torch.hann_window(n_fft, device=wav.device),
                      normalized=True, center=True, pad_mode="reflect", return_complex=True).abs().pow(2)  # [B, n_fft/2+1, F]
    mel = mel_filterbank(sample_rate, n_fft, n_mels).to(wav.device) @ spec                 # [B, M, F]
    return mel.reshape(*wav.shape[:-1], n_mels, mel.shape[-1])


def pitch_classes(freqs: np.ndarray) -> np.ndarray:
    """Pitch class (0 = C) of the nearest equal-tempered note (A4 = 440 Hz) of each frequency."""
    return np.round(12 * np.log2(np.asarray(freqs, dtype=np.float64) / 440.0) + 69).astype(np.int64) % 12
