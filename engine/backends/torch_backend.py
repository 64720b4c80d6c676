"""``StepBackend`` over the PyTorch ``LMModel``: cross K/V once, a static in-place KV cache.

Shape letters: B batch, K codebooks, S steps, T frames, P prefix length, card codebook size.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.backends.base import ConditionTensors
from engine.models.lm import LMModel
from engine.modules.kv_cache import StaticKVCache
from engine.modules.transformer import CrossKV


@dataclass
class TorchContext:
    """Per-generation state: every layer's cross-attention K/V, the prefix embeddings and the
    rows' tempo."""

    cross_kv: CrossKV | None
    prefix: torch.Tensor | None
    batch: int
    beat: torch.Tensor | None = None


class TorchBackend:
    """Drives ``lm`` step by step (causal, cached) or whole-sequence (non-causal)."""

    def __init__(self, lm: LMModel) -> None:
        self.lm = lm.eval()
        self.n_q = lm.n_q
        self.card = lm.card
        self.special_token_id = lm.special_token_id
        self.chroma_bins = lm.cfg.chroma_bins

    @torch.inference_mode()
    def prepare(self, cond: ConditionTensors) -> TorchContext:
        """Project the condition and compute the cross-attention K/V of every layer, once."""
        cross_kv = None
        if self.lm.cond_proj is not None:
            if cond.cross is None or cond.cross_mask is None:
                raise ValueError("this LM cross-attends: the condition needs cross and cross_mask")
            key = cond.key.to(cond.cross.device) if cond.key is not None else None
            cross_kv = self.lm.cross_kv(self.lm.project_condition(cond.cross, cond.cross_mask, key))
        prefix = cond.prefix.to(self.lm.dtype) if cond.prefix is not None else None
        if prefix is None and self.chroma_bins:   # a melody LM: chroma then text, prepended
            dev = self.lm.out_norm.weight.device
            prefix = self.lm.project_prefix(*(None if t is None else t.to(dev)
                                              for t in (cond.cross, cond.cross_mask, cond.chroma)))
        beat = cond.beat.to(self.lm.out_norm.weight.device) if cond.beat is not None else None
        return TorchContext(cross_kv=cross_kv, prefix=prefix, batch=cond.batch, beat=beat)

    def new_cache(self, ctx: TorchContext, max_steps: int) -> StaticKVCache:
        """An empty cache for the prefix plus ``max_steps`` token steps."""
        if not isinstance(max_steps, int) or max_steps < 1:
            raise ValueError(f"max_steps must be a positive integer, got {max_steps!r}")
        cfg = self.lm.cfg
        prefix_len = ctx.prefix.shape[1] if ctx.prefix is not None else 0
        with torch.inference_mode():
            return StaticKVCache(cfg.num_layers, ctx.batch, cfg.num_heads, prefix_len + max_steps,
                                 cfg.head_dim, dtype=self.lm.dtype,
                                 device=self.lm.out_norm.weight.device)

    @torch.inference_mode()
    def step(self, tokens: torch.Tensor, cache: StaticKVCache,
             ctx: TorchContext) -> tuple[torch.Tensor, StaticKVCache]:
        """Logits [B, K, S, card] for new tokens [B, K, S]; the prefix goes in on the first call."""
        if tokens.shape[0] != cache.batch:
            raise ValueError(f"tokens batch {tokens.shape[0]} != cache batch {cache.batch}")
        prefix = ctx.prefix if cache.length == 0 else None
        logits = self.lm(tokens, ctx.cross_kv, cache=cache, prefix=prefix, causal=True,
                         beat=ctx.beat)
        return logits, cache

    @torch.inference_mode()
    def full(self, tokens: torch.Tensor, ctx: TorchContext, attn_band: int | None,
             codebook: int | None = None) -> torch.Tensor:
        """Non-causal logits for a whole sequence [B, K, T]: [B, K, T, card] or [B, T, card]."""
        if attn_band is not None and (not isinstance(attn_band, int) or attn_band < 0):
            raise ValueError(f"attn_band must be None or an integer >= 0, got {attn_band!r}")
        return self.lm(tokens, ctx.cross_kv, prefix=ctx.prefix, band=attn_band, causal=False,
                       codebook=codebook, beat=ctx.beat)
