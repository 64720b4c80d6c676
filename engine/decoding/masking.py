"""MAGNeT's schedules and span selection as pure functions (audiocraft models/lm_magnet.py).

At step i of n in a codebook stage: ``mask_p = cos(pi/2 * i/(n-1))`` (computed in float32 like
audiocraft, so the integer counts below match it exactly); ``num_masked = max(int(mask_p *
n_units), 1)`` spans (nonoverlap) or tokens (stride1); the CFG coefficient is annealed with the
masking rate, ``mask_p * max + (1 - mask_p) * min``; the temperature linearly,
``temp * steps_left / n`` with a floor of 0.01.

Scores say how much a span wants to be masked again (higher = less confident). A span or token
that was not masked in a step is frozen: its score becomes ``FROZEN_SCORE`` and it is never
chosen again while others remain. Shape letters: B batch, T frames, N spans.
"""
from __future__ import annotations

import math

import numpy as np
import torch

FROZEN_SCORE = -1e4
MIN_TEMPERATURE = 1e-2


def mask_probability(step: int, n_steps: int) -> float:
    """Fraction of the stage still masked at ``step`` (0-based) of ``n_steps``: cosine, 1 -> 0."""
    if not 0 <= step < n_steps:
        raise ValueError(f"step must be in [0, {n_steps}), got {step}")
    tau = torch.linspace(0, 1, n_steps)[step]  # float32, as audiocraft's schedule
    return float(torch.cos(tau * math.pi * 0.5))


def num_masked(mask_p: float, n_units: int) -> int:
    """Spans (or tokens) to mask: ``max(int(mask_p * n_units), 1)``, the product in float32."""
    return max(int(np.float32(mask_p) * np.float32(n_units)), 1)


def annealed_cfg_coef(mask_p: float, max_coef: float, min_coef: float) -> float:
    """Guidance strong while most is masked, weak at the end: ``mask_p*max + (1-mask_p)*min``."""
    return mask_p * max_coef + (1.0 - mask_p) * min_coef


def annealed_temperature(temperature: float, step: int, n_steps: int, anneal: bool = True) -> float:
    """``temperature * steps_left / n_steps`` (steps_left = n_steps - 1 - step), floor 0.01."""
    t = temperature * ((n_steps - 1 - step) / n_steps) if anneal else temperature
    return max(t, MIN_TEMPERATURE)


# ---------------------------------------------------------------- scores


def span_scores_max(probs: torch.Tensor, span_len: int) -> torch.Tensor:
    """[B, T] token probabilities -> [B, T // span_len]: 1 - the highest in each span."""
    B, T = probs.shape
    n = T // span_len
    spans = probs[:, :n * span_len].reshape(B, n, span_len)  # [B, N, span_len]
    return 1.0 - spans.max(dim=-1).values


def span_scores_prod(probs: torch.Tensor, span_len: int) -> torch.Tensor:
    """[B, T] token probabilities -> [B, T // span_len]: -log of the product of each span's."""
    B, T = probs.shape
    n = T // span_len
    spans = probs[:, :n * span_len].reshape(B, n, span_len)  # [B, N, span_len]
    return -spans.log().sum(dim=-1)


def freeze(scores: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
    """Scores with every entry outside ``active`` (bool, same shape) set to ``FROZEN_SCORE``."""
    return scores.masked_fill(~active, FROZEN_SCORE)


# ---------------------------------------------------------------- span choice


def choose_spans_nonoverlap(scores: torch.Tensor, count: int) -> torch.Tensor:
    """bool [B, N]: the ``count`` highest-scoring of N non-overlapping spans per row."""
    chosen = scores.topk(count, dim=-1).indices  # [B, count]
    return torch.zeros_like(scores, dtype=torch.bool).scatter_(-1, chosen, True)


def spans_to_token_mask(span_mask: torch.Tensor, span_len: int) -> torch.Tensor:
    """bool [B, N] over non-overlapping spans -> bool [B, N * span_len] over frames."""
    return span_mask.repeat_interleave(span_len, dim=-1)


def _union_of_spans(starts: torch.Tensor, n_frames: int, span_len: int) -> torch.Tensor:
    """bool [T]: frames covered by spans of ``span_len`` starting at ``starts`` (each <= T - L)."""
    mask = torch.zeros(n_frames, dtype=torch.bool, device=starts.device)
    for offset in range(span_len):
        mask[starts + offset] = True
    return mask


def choose_spans_stride1(token_scores: torch.Tensor, target: int, span_len: int) -> torch.Tensor:
    """bool [B, T]: a union of the highest-scoring overlapping spans covering about ``target`` frames.

    A span starting at frame s covers s..s+span_len-1 and scores the sum of its token scores.
    The number u of spans taken (in score order) is found by audiocraft's binary search between
    ``target // span_len`` (no overlap) and ``target - span_len + 1`` (full overlap), keeping the
    last union tried; ``target`` is raised to at least one span.
    """
    B, T = token_scores.shape
    if T < span_len:
        raise ValueError(f"{T} frames cannot hold a span of {span_len}")
    span_scores = token_scores.unfold(-1, span_len, 1).sum(dim=-1)  # [B, T - span_len + 1]
    target = max(target, span_len)
    rows = []
    for b in range(B):
        order = torch.argsort(span_scores[b], descending=True)
        low, high = target // span_len, target - span_len + 1
        mid = round(0.5 * (low + high))  # Python's round (half to even), as audiocraft
        mask = None
        while low < mid < high:
            mask = _union_of_spans(order[:mid], T, span_len)
            if int(mask.sum()) > target:
                high = mid
            else:
                low = mid
            mid = round(0.5 * (low + high))
        if mask is None:  # the first guess was already a bound
            mask = _union_of_spans(order[:mid], T, span_len)
        rows.append(mask)
    return torch.stack(rows)
