"""Weight-normed 1-d convolutions with EnCodec's padding rules.

EnCodec (audiocraft ``modules/conv.py``, transformers ``EncodecConv1d``) pads every convolution
so that a signal of N samples through a stack of strided convolutions gives exactly
ceil(N / hop) frames, and the matching transposed convolutions give back T * hop samples:

- total padding = effective kernel - stride; non-causal: right = total // 2, left = the rest
  (so the extra sample of an odd total goes left); causal: all of it on the left;
- extra right padding so the last window is full (the length becomes a multiple of the stride);
- reflect padding of an input shorter than the pad inserts zeros on the right first, because
  ``F.pad(mode="reflect")`` needs the input longer than the pad.

Weights use ``torch.nn.utils.parametrizations.weight_norm`` (dim 0), so the state-dict keys are
``<conv>.parametrizations.weight.original0`` (g) / ``original1`` (v) / ``<conv>.bias``, the
names transformers' EnCodec checkpoints use.

Shape letters: B batch, C channels, N samples (or frames, for inner layers).
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.parametrizations import weight_norm

PAD_MODES = ("reflect", "constant")


def _n_windows(length: int, kernel_size: int, stride: int, padding_total: int) -> int:
    """Output frames of a strided convolution once its last window is padded full.

    ceil((length - kernel + padding_total) / stride) with a numerator kept >= 0 (length >= 1
    and padding_total >= kernel - stride), so floor and truncating division agree: traced
    export turns this into a dynamic shape computation whichever one it emits.
    """
    span = length - kernel_size + padding_total
    return (span + stride - 1) // stride


def extra_padding_for_conv1d(length: int, kernel_size: int, stride: int,
                             padding_total: int) -> int:
    """Right padding that makes the last window of a strided convolution full.

    ``kernel_size`` is the effective (dilated) kernel.
    """
    ideal_length = (_n_windows(length, kernel_size, stride, padding_total) * stride
                    + kernel_size - padding_total)
    return ideal_length - length


def pad1d(x: torch.Tensor, paddings: tuple[int, int], mode: str) -> torch.Tensor:
    """``F.pad`` on the last axis; reflect padding also works when x is shorter than the pad.

    Reflect follows audiocraft's rule: an input of N <= max(left, right) samples is first
    zero-extended to max(left, right) + 1, reflected, and the zeros' share cut off the end. It is
    computed branch-free, as one gather from x: output sample p reads x at q = |p - left|,
    reflected at the end of the zero-extended length E = max(N, max(left, right) + 1)
    (q -> 2 (E - 1) - q when q >= E), and is 0 where q >= N. Nothing depends on N by a Python
    branch, so a traced export runs on every length, and ``right`` may be a traced (dynamic)
    size.
    """
    padding_left, padding_right = paddings
    if mode != "reflect":
        return F.pad(x, paddings, mode)
    length = x.shape[-1]
    pos = torch.arange(length, device=x.device)
    n = pos[-1:] + 1                                                   # [1]: N
    q = torch.arange(-padding_left, length + padding_right, device=x.device)
    right = q[-1:] - pos[-1:]                                          # [1]: right padding
    extended = torch.maximum(n, torch.clamp(right, min=padding_left) + 1)   # [1]: E
    q = q.abs()                                                        # reflect at the start
    q = torch.where(q >= extended, 2 * (extended - 1) - q, q)          # reflect at E - 1
    inside = q < n                                                     # beyond N: the zeros
    gathered = x.index_select(-1, torch.where(inside, q, torch.zeros_like(q)))
    return torch.where(inside, gathered, torch.zeros((), dtype=x.dtype, device=x.device))


def pad_for_strided_conv1d(x: torch.Tensor, padding_left: int, padding_right: int,
                           kernel_size: int, stride: int, mode: str) -> torch.Tensor:
    """Pad x [B, C, N] by (left, right + extra), extra from ``extra_padding_for_conv1d``.

    Branch-free in N, so a traced export keeps the length dynamic down to one sample: reflect
    padding goes through ``pad1d`` with the traced right padding; constant padding pads by the
    static maximum (right + stride - 1) and cuts to the needed length (the same values; F.pad
    would freeze a traced pad amount).
    """
    length = x.shape[-1]
    padding_total = padding_left + padding_right
    if stride == 1:                                        # no extra padding ever needed
        return pad1d(x, (padding_left, padding_right), mode)
    if mode == "reflect":
        extra = extra_padding_for_conv1d(length, kernel_size, stride, padding_total)
        return pad1d(x, (padding_left, padding_right + extra), mode)
    padded = F.pad(x, (padding_left, padding_right + stride - 1), mode)
    target = _n_windows(length, kernel_size, stride, padding_total) * stride + kernel_size
    return padded[..., :target]                            # [B, C, N + total + extra]


def _check_pad_mode(pad_mode: str) -> None:
    if pad_mode not in PAD_MODES:
        raise ValueError(f"pad_mode must be one of {PAD_MODES}, got {pad_mode!r}")


class StreamableConv1d(nn.Module):
    """Conv1d with weight norm and EnCodec's asymmetric (or causal) padding.

    ``forward(x[B, C_in, N]) -> [B, C_out, ceil(N / stride)]``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 dilation: int = 1, causal: bool = False, pad_mode: str = "reflect"):
        super().__init__()
        _check_pad_mode(pad_mode)
        self.conv = weight_norm(nn.Conv1d(in_channels, out_channels, kernel_size, stride,
                                          dilation=dilation))
        self.causal = causal
        self.pad_mode = pad_mode

    @property
    def effective_kernel_size(self) -> int:
        return (self.conv.kernel_size[0] - 1) * self.conv.dilation[0] + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernel_size = self.effective_kernel_size
        stride = self.conv.stride[0]
        padding_total = kernel_size - stride
        padding_right = 0 if self.causal else padding_total // 2
        x = pad_for_strided_conv1d(x, padding_total - padding_right, padding_right,
                                   kernel_size, stride, self.pad_mode)
        return self.conv(x)                                # [B, C_out, ceil(N / stride)]


class StreamableConvTranspose1d(nn.Module):
    """ConvTranspose1d with weight norm that trims EnCodec's fixed padding.

    ``forward(x[B, C_in, T]) -> [B, C_out, T * stride]``. The encoder's extra right padding
    is not removed here; the caller cuts the final signal to the length it wants.
    ``trim_right_ratio`` (causal only): the share of the padding trimmed on the right.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 causal: bool = False, trim_right_ratio: float = 1.0):
        super().__init__()
        if not 0.0 <= trim_right_ratio <= 1.0:
            raise ValueError(f"trim_right_ratio must be in [0, 1], got {trim_right_ratio}")
        if not causal and trim_right_ratio != 1.0:
            raise ValueError("trim_right_ratio != 1.0 only makes sense for causal convolutions")
        self.convtr = weight_norm(nn.ConvTranspose1d(in_channels, out_channels, kernel_size,
                                                     stride))
        self.causal = causal
        self.trim_right_ratio = trim_right_ratio

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padding_total = self.convtr.kernel_size[0] - self.convtr.stride[0]
        y = self.convtr(x)                                 # [B, C_out, (T - 1) * stride + k]
        if self.causal:
            padding_right = math.ceil(padding_total * self.trim_right_ratio)
        else:
            padding_right = padding_total // 2
        padding_left = padding_total - padding_right
        return y[..., padding_left:y.shape[-1] - padding_right]   # [B, C_out, T * stride]
