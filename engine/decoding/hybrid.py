"""Hybrid MAGNeT (paper section 3): an AR prefix, then masked decoding of the rest.

The first ``prefix_frames`` are decoded autoregressively by an AR LM with the AR loop
(engine/decoding/ar.py, unchanged: same seed and params give the same frames as a pure AR
generation of that length); MAGNeT then decodes the whole segment with those frames frozen as
its prompt. A caller's own prompt (continuation) is continued by the AR prefix; a prompt at
least as long as the prefix leaves nothing for the AR model to do.

Shape letters: B batch, K codebooks, T frames.
"""
from __future__ import annotations

import torch

from engine.backends.base import ConditionTensors, StepBackend
from engine.decoding.ar import generate_ar
from engine.decoding.delay_pattern import DelayPattern
from engine.decoding.magnet import ARRescorer, generate_magnet_windows, segment_frames
from engine.decoding.magnet_params import MagnetParams
from engine.decoding.ar_params import ARParams
from engine.decoding.progress import ProgressCallback
from engine.tempo import Tempo

DEFAULT_PREFIX_S = 1.5  # without a session tempo


def default_prefix_seconds(tempo: Tempo | None) -> float:
    """One bar of ``tempo`` (its own meter), or 1.5 s when no tempo is given."""
    return DEFAULT_PREFIX_S if tempo is None else float(tempo.bar_seconds)


def generate_hybrid(ar_backend: StepBackend, magnet_backend: StepBackend, cond: ConditionTensors,
                    ar_params: ARParams, magnet_params: MagnetParams, *, batch: int, cfg: bool,
                    n_frames: int, prefix_frames: int, ar_window_frames: int,
                    ar_stride_frames: int, attn_band: int | None,
                    prompt: torch.Tensor | None = None, rescorer: ARRescorer | None = None,
                    progress_callback: ProgressCallback | None = None,
                    pattern: DelayPattern | None = None, magnet_window_frames: int | None = None,
                    magnet_stride_frames: int = 0) -> torch.Tensor:
    """Codes [B, K, T] (T = ``n_frames`` trimmed to whole spans): AR prefix, MAGNeT rest.

    ``cond``: the [cond; null] rows (2B when ``cfg``) both LMs are conditioned on (each
    projects them itself). ``prefix_frames`` is cut to leave at least one span to MAGNeT.
    ``progress_callback(done, total)`` counts the AR steps then the MAGNeT steps as one run.
    ``pattern``: the AR LM's delays (default MusicGen mono). ``magnet_window_frames`` /
    ``magnet_stride_frames``: MAGNeT's segment and window stride past one segment (None: the
    whole piece is one segment).
    """
    if ar_backend.n_q != magnet_backend.n_q or ar_backend.card != magnet_backend.card:
        raise ValueError(f"the AR LM ({ar_backend.n_q} x {ar_backend.card}) and the MAGNeT LM "
                         f"({magnet_backend.n_q} x {magnet_backend.card}) must share the codec's "
                         "codebooks")
    if isinstance(prefix_frames, bool) or not isinstance(prefix_frames, int) or prefix_frames < 1:
        raise ValueError(f"prefix_frames must be a positive integer, got {prefix_frames!r}")
    T = segment_frames(n_frames, magnet_params.span_len)
    prefix_frames = min(prefix_frames, T - magnet_params.span_len)
    prompt_frames = 0 if prompt is None else prompt.shape[-1]
    ar_total = 0

    def ar_progress(done: int, total: int) -> None:
        nonlocal ar_total
        ar_total = total
        if progress_callback is not None:
            progress_callback(done, total + magnet_params.total_steps)

    def magnet_progress(done: int, total: int) -> None:
        if progress_callback is not None:
            progress_callback(ar_total + done, ar_total + total)

    if prefix_frames > prompt_frames:
        prompt = generate_ar(ar_backend, cond.at_frame, ar_params, batch=batch, cfg=cfg,
                             total_frames=prefix_frames, window_frames=ar_window_frames,
                             stride_frames=ar_stride_frames, prompt=prompt,
                             progress_callback=ar_progress, pattern=pattern)  # [B, K, P]
    return generate_magnet_windows(
        magnet_backend, cond, magnet_params, batch=batch, cfg=cfg, n_frames=T,
        window_frames=magnet_window_frames or T, stride_frames=magnet_stride_frames,
        attn_band=attn_band, prompt=prompt, rescorer=rescorer, progress_callback=magnet_progress)
