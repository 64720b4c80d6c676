"""Training the MAGNeT LM: masked span prediction, one codebook stage per batch.

A stage k is drawn per batch; codebooks below k stay visible, codebooks above k are all mask
tokens, and in codebook k spans of ``span_len`` frames are masked at a rate drawn from the
cosine schedule (rate = cos(pi/2 * u), u ~ U(0, 1), per row). The number of spans per row is the
one whose expected coverage, 1 - C(T - L, n) / C(T, n), is closest to the rate (audiocraft's
MagnetSolver). The LM is non-causal; stages >= 1 see only ``attn_band`` frames either side
(MAGNeT's restricted context, as in decoding). Loss: cross-entropy on the masked tokens only.
"""
from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from engine.recipes.training.lm import LMTask


def span_coverage(n_frames: int, span_len: int) -> torch.Tensor:
    """Expected masked fraction for n = 0..n_frames random span starts: [n_frames + 1]."""
    lg = torch.lgamma
    n = torch.arange(n_frames + 1, dtype=torch.float64)
    free = float(n_frames - span_len)
    f64 = lambda v: torch.tensor(float(v), dtype=torch.float64)  # noqa: E731
    log_ratio = (lg(f64(free + 1)) - lg(n + 1) - lg((free - n).clamp(min=0) + 1)
                 - (lg(f64(n_frames + 1)) - lg(n + 1) - lg(n_frames - n + 1)))
    cover = (1 - log_ratio.exp()).clamp(0.0, 1.0)
    return torch.where(n > free, torch.ones_like(cover), cover)


def span_mask(rates: torch.Tensor, n_frames: int, span_len: int) -> torch.Tensor:
    """bool [B, T]: per row, spans of ``span_len`` at random starts covering about ``rates[b]``
    of the frames (at least one span)."""
    cover = span_coverage(n_frames, span_len)                             # [T + 1]
    counts = torch.searchsorted(cover, rates.double().cpu().contiguous()).clamp(1, n_frames)  # [B]
    starts_order = torch.rand(len(rates), n_frames).argsort(dim=-1)       # random start order
    mask = torch.zeros(len(rates), n_frames, dtype=torch.bool)
    for b, n in enumerate(counts.tolist()):
        starts = starts_order[b, :n]
        for offset in range(span_len):
            mask[b, (starts + offset).clamp(max=n_frames - 1)] = True
    return mask.to(rates.device)


def cosine_rates(batch: int, device: torch.device) -> torch.Tensor:
    """Masking rates cos(pi/2 * u), u ~ U(0, 1): [B]."""
    return torch.cos(0.5 * math.pi * torch.rand(batch)).to(device)


class MagnetTask(LMTask):
    """The MAGNeT objective for ``run_training``."""

    kind = "magnet"
    causal = False
    find_unused = True      # only the drawn stage's output head is used in a step

    def __init__(self, *args, span_len: int = 3, attn_band: int | None = 5, **kwargs):
        super().__init__(*args, **kwargs)
        if span_len < 1:
            raise ValueError(f"span_len must be >= 1, got {span_len}")
        self.span_len, self.attn_band = span_len, attn_band
        self.extra_meta.update(span_len=span_len, attn_band=attn_band)

    def compute_loss(self, codes: torch.Tensor, *cond: torch.Tensor) -> torch.Tensor:
        """Cross-entropy on the masked tokens of one random stage of ``codes`` [B, K, T] under
        ``cond`` (hidden, mask, beat, key)."""
        B, K, T = codes.shape
        special = self.model.special_token_id
        stage = int(torch.randint(K, ()).item())
        masked = span_mask(cosine_rates(B, codes.device), T, self.span_len)   # [B, T]
        tokens = codes.clone()
        tokens[:, stage] = codes[:, stage].masked_fill(masked, special)
        tokens[:, stage + 1:] = special
        band = None if stage == 0 else self.attn_band
        logits = self.ddp(tokens, *cond, causal=False, band=band,
                          codebook=stage)                                   # [B, T, card]
        return F.cross_entropy(logits[masked], codes[:, stage][masked])
