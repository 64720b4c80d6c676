"""Melody chroma, as audiocraft's ``ChromaExtractor`` computes it for MusicGen-Melody.

Power spectrogram (n_fft = window = 2**14, hop 4096 at 32 kHz, periodic Hann, centred with
reflect padding, normalised by the window's energy as torchaudio's ``normalized=True``), a
12-bin chroma filterbank (librosa's ``filters.chroma`` with tuning 0, rebuilt here in numpy so
librosa is not needed), inf-norm over bins, then argmax to one-hot. audiocraft does not
interpolate chroma to the codec's frame grid: MusicGen-Melody prepends the chroma at its own
rate (~7.8 Hz), repeated or truncated to the length that the training duration gives
(``match_len_on_eval``); ``match_length`` does that. The full mix is used (no stem separation).
"""
from __future__ import annotations

import math

import numpy as np
import soxr
import torch

N_CHROMA = 12


def chroma_filterbank(sample_rate: int, n_fft: int, n_chroma: int = N_CHROMA) -> np.ndarray:
    """Chroma weights [n_chroma, n_fft // 2 + 1], C first (librosa ``filters.chroma`` defaults:
    tuning 0, centre octave 5, octave width 2, L2-normalised columns)."""
    frequencies = np.linspace(0, sample_rate, n_fft, endpoint=False)[1:]
    # fractional chroma bin of every FFT bin, relative to A440 / 16
    bins = n_chroma * np.log2(frequencies / (440.0 / 16))
    # the DC bin: 1.5 octaves below bin 1, so it spreads broadly
    bins = np.concatenate(([bins[0] - 1.5 * n_chroma], bins))
    widths = np.concatenate((np.maximum(bins[1:] - bins[:-1], 1.0), [1.0]))
    dist = np.subtract.outer(bins, np.arange(n_chroma, dtype=np.float64)).T  # [n_chroma, n_fft]
    half = np.round(n_chroma / 2)
    dist = np.remainder(dist + half + 10 * n_chroma, n_chroma) - half
    weights = np.exp(-0.5 * (2 * dist / widths[None, :]) ** 2)
    norms = np.linalg.norm(weights, axis=0, keepdims=True)
    weights = weights / np.where(norms > np.finfo(np.float64).tiny, norms, 1.0)
    centre_octave, octave_width = 5.0, 2.0
    weights *= np.exp(-0.5 * ((bins / n_chroma - centre_octave) / octave_width) ** 2)[None, :]
    weights = np.roll(weights, -3 * (n_chroma // 12), axis=0)  # start at C, not A
    return np.ascontiguousarray(weights[:, :n_fft // 2 + 1], dtype=np.float32)


class ChromaExtractor:
    """wav [B, N] or [B, C, N] at ``sample_rate`` -> one-hot chroma [B, T_chroma, 12]."""

    def __init__(self, sample_rate: int = 32000, n_fft: int = 2**14, hop: int | None = None,
                 argmax: bool = True) -> None:
        self.sample_rate = sample_rate
        self.n_fft = n_fft
        self.hop = hop or n_fft // 4
        self.argmax = argmax
        self.filterbank = torch.from_numpy(chroma_filterbank(sample_rate, n_fft))  # [12, F]
        self.window = torch.hann_window(n_fft, dtype=torch.float32)

    def frames_for(self, n_samples: int) -> int:
        """Chroma frames of a centred STFT over ``n_samples`` (at least one window)."""
        return max(n_samples, self.n_fft) // self.hop + 1

    @torch.no_grad()
    def __call__(self, wav: torch.Tensor) -> torch.Tensor:
        if wav.dim() == 3:
            wav = wav.mean(dim=1)  # [B, N]: the melody is taken from the mono mix
        if wav.dim() != 2:
            raise ValueError(f"wav must be [B, N] or [B, C, N], got {list(wav.shape)}")
        wav = wav.float().cpu()
        if wav.shape[-1] < self.n_fft:  # as audiocraft: centre-pad short input to one window
            pad = self.n_fft - wav.shape[-1]
            wav = torch.nn.functional.pad(wav, (pad // 2, pad - pad // 2))
        spec = torch.stft(wav, self.n_fft, hop_length=self.hop, window=self.window,
                          center=True, pad_mode="reflect", return_complex=True)  # [B, F, T]
        power = spec.abs().pow(2) / self.window.pow(2).sum()  # torchaudio normalized=True, power 2
        chroma = torch.einsum("cf,bft->btc", self.filterbank, power)  # [B, T, 12]
        chroma = torch.nn.functional.normalize(chroma, p=math.inf, dim=-1, eps=1e-6)
        if self.argmax:
            chroma = torch.nn.functional.one_hot(chroma.argmax(-1), N_CHROMA).float()
        return chroma


def match_length(chroma: torch.Tensor, n_frames: int) -> torch.Tensor:
    """Repeat or truncate chroma [B, T, 12] to [B, n_frames, 12] (audiocraft's eval rule)."""
    T = chroma.shape[1]
    if T < n_frames:
        chroma = chroma.repeat(1, math.ceil(n_frames / T), 1)
    return chroma[:, :n_frames]


def null_chroma(batch: int, n_frames: int) -> torch.Tensor:
    """The chroma of silence, [B, n_frames, 12]: argmax of all-zero bins is bin 0 everywhere."""
    out = torch.zeros(batch, n_frames, N_CHROMA)
    out[..., 0] = 1.0
    return out


def melody_chroma(wavs: list[torch.Tensor | None], sample_rate: int, target_rate: int,
                  n_frames: int, extractor: ChromaExtractor | None = None) -> torch.Tensor:
    """One-hot chroma [B, n_frames, 12] of each melody [C, N] (None: the null chroma),
    resampled to ``target_rate`` with soxr first."""
    extractor = extractor or ChromaExtractor(target_rate)
    rows = []
    for wav in wavs:
        if wav is None:
            rows.append(null_chroma(1, n_frames))
            continue
        if wav.dim() != 2:
            raise ValueError(f"each melody must be [C, N], got {list(wav.shape)}")
        mono = wav.float().mean(dim=0).cpu().numpy()
        if sample_rate != target_rate:
            mono = soxr.resample(mono, sample_rate, target_rate)
        rows.append(match_length(extractor(torch.from_numpy(np.ascontiguousarray(mono))[None]),
                                 n_frames))
    return torch.cat(rows, dim=0)
