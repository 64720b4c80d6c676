"""SEANet encoder / decoder, the convolutional autoencoder of EnCodec.

Module structure follows audiocraft's ``modules/seanet.py``: each network is one
``nn.Sequential`` named ``model``, so a module's index is its index in audiocraft's (and in
transformers' ``layers``) state dict. With one residual block per stage the encoder is

    0 conv(k) | per stage: resblock, ELU, strided conv (k = 2*ratio) | LSTM | ELU | conv(last k)

(indices 0, 1, 3, 4, 6, 7, 9, 10, 12, 13 = LSTM, 15 for four stages) and the decoder mirrors it
with transposed convolutions: 0 conv | 1 LSTM | per stage: ELU, transposed conv, resblock |
ELU | conv.

Shape letters: B batch, C audio channels, N samples, D latent dimension, T frames.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from engine.modules.conv import StreamableConv1d, StreamableConvTranspose1d


class SEANetResnetBlock(nn.Module):
    """ELU, conv(k, dilation), ELU, conv(1) on ``dim // compress`` hidden channels, plus a skip.

    ``true_skip``: identity skip; otherwise a 1x1 convolution (transformers'
    ``use_conv_shortcut``).
    """

    def __init__(self, dim: int, kernel_size: int = 3, dilation: int = 1, compress: int = 2,
                 causal: bool = False, pad_mode: str = "reflect", true_skip: bool = True):
        super().__init__()
        hidden = dim // compress
        self.block = nn.Sequential(
            nn.ELU(),
            StreamableConv1d(dim, hidden, kernel_size, dilation=dilation, causal=causal,
                             pad_mode=pad_mode),
            nn.ELU(),
            StreamableConv1d(hidden, dim, 1, causal=causal, pad_mode=pad_mode),
        )
        self.shortcut: nn.Module = (nn.Identity() if true_skip else
                                    StreamableConv1d(dim, dim, 1, causal=causal,
                                                     pad_mode=pad_mode))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.block(x)


class StreamableLSTM(nn.Module):
    """Unidirectional LSTM over the time axis of a [B, D, T] tensor, with a residual skip."""

    def __init__(self, dimension: int, num_layers: int = 2, skip: bool = True):
        super().__init__()
        self.skip = skip
        self.lstm = nn.LSTM(dimension, dimension, num_layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(2, 0, 1)                             # [T, B, D]
        y, _ = self.lstm(x)
        if self.skip:
            y = y + x
        return y.permute(1, 2, 0)                          # [B, D, T]


class SEANetEncoder(nn.Module):
    """Waveform [B, C, N] -> latents [B, dimension, ceil(N / hop)].

    ``ratios`` are given in decoder order (as in audiocraft and transformers'
    ``upsampling_ratios``); the encoder downsamples with them reversed.
    """

    def __init__(self, channels: int = 1, dimension: int = 128, n_filters: int = 64,
                 n_residual_layers: int = 1, ratios: Sequence[int] = (8, 5, 4, 4),
                 kernel_size: int = 7, last_kernel_size: int = 7, residual_kernel_size: int = 3,
                 dilation_base: int = 2, causal: bool = False, pad_mode: str = "reflect",
                 true_skip: bool = True, compress: int = 2, lstm: int = 2):
        super().__init__()
        self.channels = channels
        self.dimension = dimension
        self.ratios = list(reversed(ratios))
        self.hop_length = math.prod(self.ratios)
        mult = 1
        model: list[nn.Module] = [StreamableConv1d(channels, n_filters, kernel_size,
                                                   causal=causal, pad_mode=pad_mode)]
        for ratio in self.ratios:
            width = mult * n_filters
            model += [SEANetResnetBlock(width, residual_kernel_size, dilation_base ** j,
                                        compress, causal, pad_mode, true_skip)
                      for j in range(n_residual_layers)]
            model += [nn.ELU(),
                      StreamableConv1d(width, width * 2, ratio * 2, stride=ratio,
                                       causal=causal, pad_mode=pad_mode)]
            mult *= 2
        if lstm:
            model.append(StreamableLSTM(mult * n_filters, num_layers=lstm))
        model += [nn.ELU(),
                  StreamableConv1d(mult * n_filters, dimension, last_kernel_size,
                                   causal=causal, pad_mode=pad_mode)]
        self.model = nn.Sequential(*model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)                               # [B, C, N] -> [B, D, T]


class SEANetDecoder(nn.Module):
    """Latents [B, dimension, T] -> waveform [B, C, T * hop]."""

    def __init__(self, channels: int = 1, dimension: int = 128, n_filters: int = 64,
                 n_residual_layers: int = 1, ratios: Sequence[int] = (8, 5, 4, 4),
                 kernel_size: int = 7, last_kernel_size: int = 7, residual_kernel_size: int = 3,
                 dilation_base: int = 2, causal: bool = False, pad_mode: str = "reflect",
                 true_skip: bool = True, compress: int = 2, lstm: int = 2,
                 trim_right_ratio: float = 1.0):
        super().__init__()
        self.channels = channels
        self.dimension = dimension
        self.ratios = list(ratios)
        self.hop_length = math.prod(self.ratios)
        mult = 2 ** len(self.ratios)
        model: list[nn.Module] = [StreamableConv1d(dimension, mult * n_filters, kernel_size,
                                                   causal=causal, pad_mode=pad_mode)]
        if lstm:
            model.append(StreamableLSTM(mult * n_filters, num_layers=lstm))
        for ratio in self.ratios:
            width = mult * n_filters
            model += [nn.ELU(),
                      StreamableConvTranspose1d(width, width // 2, ratio * 2, stride=ratio,
                                                causal=causal,
                                                trim_right_ratio=trim_right_ratio)]
            model += [SEANetResnetBlock(width // 2, residual_kernel_size, dilation_base ** j,
                                        compress, causal, pad_mode, true_skip)
                      for j in range(n_residual_layers)]
            mult //= 2
        model += [nn.ELU(),
                  StreamableConv1d(n_filters, channels, last_kernel_size, causal=causal,
                                   pad_mode=pad_mode)]
        self.model = nn.Sequential(*model)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.model(z)                               # [B, D, T] -> [B, C, T * hop]

