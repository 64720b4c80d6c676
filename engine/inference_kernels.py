"""Which CPU kernels PyTorch runs on in the bridge (`barforge serve`).

oneDNN (``torch.backends.mkldnn``) builds a kernel for every new input shape of a convolution
or an LSTM. The codec decodes a different number of frames for nearly every clip (a live
continuation's length depends on where in the bar the host stands), so with oneDNN a clip paid
0.1-1.3 s of kernel creation at unpredictable moments: the first live continuation after start-up
arrived late (bench/RESULTS_bridge.md). PyTorch's native kernels take the same time on every
call and were faster on average for our small convolutions (live-sized continuations, default
model, 2 threads: hybrid mean 0.47 s / max 0.53 s vs 0.66 / 1.34 s with oneDNN; AR 0.41 / 0.49 vs
0.55 / 1.04). Only the bridge switches it off: a one-shot `barforge generate` pays the first
decode once either way and was no faster without oneDNN (4 bars at 90 BPM end to end: 5.8-6.1 s
and 820 MB vs 5.6 s and 759 MB), and training keeps it.
"""
from __future__ import annotations

import torch


def use_native_cpu_kernels() -> None:
    """Turn oneDNN off for this process: every clip length then costs the same, first time or not."""
    torch.backends.mkldnn.enabled = False
