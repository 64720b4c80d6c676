"""A Vocos-style codec decoder: ConvNeXt blocks predict an STFT, an inverse STFT makes the wave.

The SEANet decoder builds the waveform with a stack of transposed convolutions; at our 25 Hz
frame rate (1280 samples per frame) it learns the spectral envelope quickly but leaves a buzzy,
smeared tone. This decoder (Siuzdenko et al., "Vocos", 2023) upsamples the latent 4x with one
transposed convolution, runs ConvNeXt blocks at that rate and predicts log-magnitude and phase
of a Hann STFT (``n_fft`` = 4 x its hop, 75 % overlap); the inverse STFT is written out as a
DFT matrix product and an overlap-add of four shifted hops, so it exports to ONNX with
ordinary ops and matches ``torch.istft(center=True)``.

Shape letters: B batch, D latent dimension, T frames, F frequency bins, N samples.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class ConvNeXtBlock(nn.Module):
    """Depthwise conv(7), LayerNorm, pointwise MLP (x3, GELU), layer scale, residual."""

    def __init__(self, dim: int, layer_scale: float = 0.1):
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.pwconv1 = nn.Linear(dim, 3 * dim)
        self.pwconv2 = nn.Linear(3 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:      # [B, dim, T]
        y = self.dwconv(x).transpose(1, 2)
        y = self.pwconv2(F.gelu(self.pwconv1(self.norm(y)))) * self.gamma
        return x + y.transpose(1, 2)


class InverseSTFT(nn.Module):
    """``torch.istft(spec, n_fft, hop, hann, center=True, length=frames * hop)`` for
    ``n_fft == 4 * hop``, from matmuls, pads and sums (exportable to ONNX)."""

    OVERLAP = 4

    def __init__(self, hop: int):
        super().__init__()
        self.hop, self.n_fft = hop, self.OVERLAP * hop
        n, bins = self.n_fft, self.n_fft // 2 + 1
        k = torch.arange(bins, dtype=torch.float64)
        t = torch.arange(n, dtype=torch.float64)[:, None]
        weight = torch.full((bins,), 2.0, dtype=torch.float64)
        weight[0] = weight[-1] = 1.0                             # DC and Nyquist appear once
        angle = 2 * math.pi * t * k / n                          # [n, F]
        window = torch.hann_window(n, periodic=True, dtype=torch.float64)
        # window folded into the basis: frames come out already windowed for overlap-add
        self.register_buffer("cos_basis", (window[:, None] * torch.cos(angle) * weight / n).float(), persistent=False)
        self.register_buffer("sin_basis", (window[:, None] * -torch.sin(angle) * weight / n).float(), persistent=False)
        self.register_buffer("window_sq", (window ** 2).float()[:, None], persistent=False)

    def _overlap_add(self, frames: torch.Tensor) -> torch.Tensor:
        """[B, n_fft, T'] windowed frames -> [B, (T' + 3) * hop] summed at hop spacing."""
        b, _, frames_n = frames.shape
        parts = frames.reshape(b, self.OVERLAP, self.hop, frames_n)      # frame = 4 hops
        out = 0
        for j in range(self.OVERLAP):                           # hop j of frame t lands at t + j
            piece = parts[:, j].transpose(1, 2).reshape(b, frames_n * self.hop)
            out = out + F.pad(piece, (j * self.hop, (self.OVERLAP - 1 - j) * self.hop))
        return out

    def forward(self, real: torch.Tensor, imag: torch.Tensor) -> torch.Tensor:
        """Spectrum [B, F, T'] (real, imaginary) -> waveform [B, T' * hop]."""
        frames = self.cos_basis @ real + self.sin_basis @ imag            # [B, n_fft, T']
        wave = self._overlap_add(frames)
        envelope = self._overlap_add(self.window_sq.expand(1, -1, real.shape[-1]))
        half = self.n_fft // 2                                   # center=True: frame t centred at t * hop
        n = real.shape[-1] * self.hop
        return wave[:, half:half + n] / envelope[:, half:half + n].clamp_min(1e-8)


class ISTFTDecoder(nn.Module):
    """Latent [B, D, T] -> waveform [B, 1, T * hop_length] (mono)."""

    def __init__(self, dimension: int, hop_length: int, dim: int = 256, low_layers: int = 2,
                 high_layers: int = 4, upsample: int = 4):
        super().__init__()
        if hop_length % upsample:
            raise ValueError(f"the codec hop ({hop_length}) must be a multiple of istft_upsample ({upsample})")
        self.inp = nn.Conv1d(dimension, dim, 3, padding=1)
        self.low = nn.Sequential(*[ConvNeXtBlock(dim) for _ in range(low_layers)])
        self.up = nn.ConvTranspose1d(dim, dim, 2 * upsample, stride=upsample, padding=upsample // 2)
        self.high = nn.Sequential(*[ConvNeXtBlock(dim) for _ in range(high_layers)])
        self.norm = nn.LayerNorm(dim)
        self.istft = InverseSTFT(hop_length // upsample)
        self.head = nn.Linear(dim, 2 * (self.istft.n_fft // 2 + 1))
        self.upsample = upsample

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        x = self.up(self.low(self.inp(latent)))[..., :latent.shape[-1] * self.upsample]
        x = self.head(self.norm(self.high(x).transpose(1, 2))).transpose(1, 2)   # [B, 2F, T']
        log_mag, phase = x.chunk(2, dim=1)
        mag = torch.exp(log_mag.clamp(max=6.0))                  # clamp: no overflow early in training
        return self.istft(mag * torch.cos(phase), mag * torch.sin(phase)).unsqueeze(1)
