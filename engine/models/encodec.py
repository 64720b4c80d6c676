"""The EnCodec-style neural audio codec MusicGen and MAGNeT tokenize audio with.

SEANet encoder -> residual vector quantizer -> SEANet decoder (audiocraft
``models/encodec.py``; transformers ``EncodecModel``). No renormalisation and no chunking: the
32 kHz MusicGen codec encodes and decodes the whole signal at once.

Shape letters: B batch, C audio channels, N samples, D latent dimension, K codebooks,
T frames (ceil(N / hop)).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import torch
from torch import nn

from engine.config_dict import dataclass_from_dict
from engine.modules.conv import PAD_MODES
from engine.modules.istft_decoder import ISTFTDecoder
from engine.modules.pitch_encoder import PitchEncoder
from engine.modules.quantization import ResidualVectorQuantizer
from engine.modules.seanet import SEANetDecoder, SEANetEncoder


@dataclass(frozen=True)
class CodecConfig:
    """Every hyperparameter of the codec (audiocraft ``seanet`` / ``rvq`` names).

    ``ratios`` are in decoder order; hop = prod(ratios). ``kmeans_init``: codebooks start
    empty and are set by k-means on the first ``ema_update`` (audiocraft's training default);
    False gives random codebooks usable at once (debug models). ``decoder``: "seanet"
    (EnCodec's, loads audiocraft checkpoints) or "istft" (engine/modules/istft_decoder.py, mono:
    ConvNeXt blocks at ``istft_upsample`` x the frame rate predicting an STFT).
    ``pitch_bins_per_octave``: 0, or the resolution of a fixed log-frequency analysis whose
    learned projection is added to the encoder's latent (engine/modules/pitch_encoder.py, mono).
    """

    sample_rate: int = 32000
    channels: int = 1
    n_filters: int = 64
    dimension: int = 128
    ratios: tuple[int, ...] = (8, 5, 4, 4)
    n_residual_layers: int = 1
    residual_kernel_size: int = 3
    dilation_base: int = 2
    compress: int = 2
    lstm_layers: int = 2
    kernel_size: int = 7
    last_kernel_size: int = 7
    pad_mode: str = "reflect"
    true_skip: bool = True
    causal: bool = False
    trim_right_ratio: float = 1.0
    n_q: int = 4
    bins: int = 2048
    decay: float = 0.99
    kmeans_init: bool = True
    kmeans_iters: int = 50
    threshold_ema_dead_code: float = 2.0
    commitment_weight: float = 1.0
    decoder: str = "seanet"
    istft_dim: int = 256
    istft_low_layers: int = 2
    istft_high_layers: int = 4
    istft_upsample: int = 4
    pitch_bins_per_octave: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "ratios", tuple(int(r) for r in self.ratios))
        if self.pad_mode not in PAD_MODES:
            raise ValueError(f"CodecConfig.pad_mode must be one of {PAD_MODES}, "
                             f"got {self.pad_mode!r}")
        positive = ("sample_rate", "channels", "n_filters", "dimension", "kernel_size",
                    "last_kernel_size", "residual_kernel_size", "dilation_base", "compress",
                    "n_q", "bins")
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise ValueError(f"CodecConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not self.ratios or min(self.ratios) < 1:
            raise ValueError(f"CodecConfig.ratios must be positive integers, got {self.ratios}")
        if self.decoder not in ("seanet", "istft"):
            raise ValueError(f"CodecConfig.decoder must be 'seanet' or 'istft', got {self.decoder!r}")
        if self.decoder == "istft" and self.channels != 1:
            raise ValueError(f"the istft decoder is mono: CodecConfig.channels must be 1, got {self.channels}")
        if self.pitch_bins_per_octave and self.channels != 1:
            raise ValueError(f"the pitch front-end is mono: CodecConfig.channels must be 1, got {self.channels}")
        if self.n_residual_layers < 0 or self.lstm_layers < 0:
            raise ValueError("CodecConfig.n_residual_layers and lstm_layers must be >= 0")

    @property
    def hop_length(self) -> int:
        return math.prod(self.ratios)

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ratios"] = list(self.ratios)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CodecConfig":
        """The config ``to_dict`` wrote; ValueError naming unknown keys."""
        return dataclass_from_dict(cls, d)


def encodec_32khz_config() -> CodecConfig:
    """facebook/encodec_32khz, the codec of every MusicGen / MAGNeT 32 kHz model."""
    return CodecConfig()


def debug_codec_config() -> CodecConfig:
    """A tiny codec (~166k parameters, mostly the LSTM) with the real hop: 32 kHz, 50 frames/s."""
    return CodecConfig(n_filters=4, dimension=16, lstm_layers=1, n_q=4, bins=64,
                       kmeans_init=False)


class CodecForwardOutput(NamedTuple):
    """What ``EncodecModel.forward`` returns for training."""

    audio: torch.Tensor        # [B, C, N] reconstruction, cut to the input length
    codes: torch.Tensor        # [B, K, T]
    latent: torch.Tensor       # [B, D, T] encoder output before quantization
    commit_loss: torch.Tensor  # [] commitment loss


def _exporting() -> bool:
    return (torch.jit.is_tracing() or torch.compiler.is_compiling()
            or torch.onnx.is_in_onnx_export())


class EncodecModel(nn.Module):
    """SEANet autoencoder with residual vector quantization.

    ``encode(wav[B, C, N]) -> codes[B, K, T]``; ``decode(codes[B, K, T]) -> wav[B, C, T*hop]``
    (the decoder always returns whole frames: cut to N yourself). For training:
    ``latent(wav)``, ``quantizer(latent) -> (quantized, codes, commit_loss)``,
    ``decoder(quantized) -> wav``, or ``forward(wav)`` for all three, then
    ``quantizer.ema_update(latent, codes)``.
    """

    def __init__(self, config: CodecConfig):
        super().__init__()
        self.config = config
        c = config
        seanet = dict(channels=c.channels, dimension=c.dimension, n_filters=c.n_filters,
                      n_residual_layers=c.n_residual_layers, ratios=c.ratios,
                      kernel_size=c.kernel_size, last_kernel_size=c.last_kernel_size,
                      residual_kernel_size=c.residual_kernel_size,
                      dilation_base=c.dilation_base, causal=c.causal, pad_mode=c.pad_mode,
                      true_skip=c.true_skip, compress=c.compress, lstm=c.lstm_layers)
        self.encoder = SEANetEncoder(**seanet)
        self.pitch_encoder = (PitchEncoder(c.sample_rate, c.hop_length, c.pitch_bins_per_octave, c.dimension)
                              if c.pitch_bins_per_octave else None)
        if c.decoder == "istft":
            self.decoder: nn.Module = ISTFTDecoder(c.dimension, c.hop_length, c.istft_dim, c.istft_low_layers,
                                                   c.istft_high_layers, c.istft_upsample)
        else:
            self.decoder = SEANetDecoder(**seanet, trim_right_ratio=c.trim_right_ratio)
        self.quantizer = ResidualVectorQuantizer(
            dimension=c.dimension, n_q=c.n_q, bins=c.bins, decay=c.decay,
            kmeans_init=c.kmeans_init, kmeans_iters=c.kmeans_iters,
            threshold_ema_dead_code=c.threshold_ema_dead_code,
            commitment_weight=c.commitment_weight)

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def frame_rate(self) -> float:
        return self.config.frame_rate

    @property
    def hop_length(self) -> int:
        return self.config.hop_length

    @property
    def channels(self) -> int:
        return self.config.channels

    @property
    def num_codebooks(self) -> int:
        return self.config.n_q

    @property
    def cardinality(self) -> int:
        return self.config.bins

    def _check_wav(self, wav: torch.Tensor) -> None:
        if wav.dim() != 3 or wav.shape[1] != self.channels or wav.shape[-1] < 1:
            raise ValueError(f"wav must be [B, {self.channels}, N] with N >= 1, "
                             f"got {tuple(wav.shape)}")
        if not wav.is_floating_point():
            raise ValueError(f"wav must be a float tensor, got {wav.dtype}")

    def encode(self, wav: torch.Tensor) -> torch.Tensor:
        """Waveform [B, C, N] -> codes [B, K, T] (int64), T = ceil(N / hop)."""
        self._check_wav(wav)
        return self.quantizer.encode(self.latent(wav))    # [B, D, T] -> [B, K, T]

    def latent(self, wav: torch.Tensor) -> torch.Tensor:
        """Waveform [B, C, N] -> encoder latent [B, D, T] before quantization (SEANet, plus the
        pitch front-end's projection when the config has one)."""
        latent = self.encoder(wav)
        if self.pitch_encoder is not None:
            latent = latent + self.pitch_encoder(wav, latent.shape[-1])
        return latent

    def decode_latent(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes [B, K, T] -> quantized latent [B, D, T]."""
        if codes.dim() != 3 or not 1 <= codes.shape[1] <= self.num_codebooks:
            raise ValueError(f"codes must be [B, K, T] with 1 <= K <= {self.num_codebooks}, "
                             f"got {tuple(codes.shape)}")
        if codes.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"codes must be int64 (or int32), got {codes.dtype}")
        if not _exporting() and codes.numel() and (int(codes.min()) < 0
                                                   or int(codes.max()) >= self.cardinality):
            raise ValueError(f"codes must lie in [0, {self.cardinality}), got values in "
                             f"[{int(codes.min())}, {int(codes.max())}]")
        return self.quantizer.decode(codes.long())

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes [B, K, T] -> waveform [B, C, T * hop]."""
        return self.decoder(self.decode_latent(codes))

    def forward(self, wav: torch.Tensor, n_q: int | None = None) -> CodecForwardOutput:
        """Training pass: encode, quantize (straight-through), decode, cut to the input length."""
        self._check_wav(wav)
        latent = self.latent(wav)                          # [B, D, T]
        quantized, codes, commit_loss = self.quantizer(latent, n_q)
        audio = self.decoder(quantized)[..., :wav.shape[-1]]   # [B, C, N]
        return CodecForwardOutput(audio, codes, latent, commit_loss)


class InterleavedStereoCodec(nn.Module):
    """Stereo on a mono codec: each channel coded apart, codebooks interleaved L0, R0, L1, R1...

    The layout of audiocraft's ``InterleaveStereoCompressionModel`` (per_timestep=False,
    ``'c b k t -> b (k c) t'``) and of transformers' MusicGen stereo (``codes[:, ::2]`` left,
    ``codes[:, 1::2]`` right).
    """

    def __init__(self, mono: EncodecModel):
        super().__init__()
        if mono.channels != 1:
            raise ValueError(f"InterleavedStereoCodec wraps a mono codec, got {mono.channels} "
                             "channels")
        self.mono = mono

    @property
    def sample_rate(self) -> int:
        return self.mono.sample_rate

    @property
    def frame_rate(self) -> float:
        return self.mono.frame_rate

    @property
    def hop_length(self) -> int:
        return self.mono.hop_length

    @property
    def channels(self) -> int:
        return 2

    @property
    def num_codebooks(self) -> int:
        return 2 * self.mono.num_codebooks

    @property
    def cardinality(self) -> int:
        return self.mono.cardinality

    @staticmethod
    def interleave(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        """Left and right codes [B, K, T] -> [B, 2K, T] ordered L0, R0, L1, R1, ..."""
        b, k, t = left.shape
        return torch.stack([left, right], dim=2).reshape(b, 2 * k, t)

    @staticmethod
    def split(codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Interleaved codes [B, 2K, T] -> (left [B, K, T], right [B, K, T])."""
        if codes.dim() != 3 or codes.shape[1] % 2:
            raise ValueError(f"stereo codes must be [B, 2K, T], got {tuple(codes.shape)}")
        return codes[:, 0::2], codes[:, 1::2]

    def encode(self, wav: torch.Tensor) -> torch.Tensor:
        """Stereo waveform [B, 2, N] -> codes [B, 2K, T]."""
        if wav.dim() != 3 or wav.shape[1] != 2:
            raise ValueError(f"wav must be [B, 2, N] stereo, got {tuple(wav.shape)}")
        return self.interleave(self.mono.encode(wav[:, :1]), self.mono.encode(wav[:, 1:]))

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes [B, 2K, T] -> stereo waveform [B, 2, T * hop]."""
        left, right = self.split(codes)
        return torch.cat([self.mono.decode(left), self.mono.decode(right)], dim=1)
