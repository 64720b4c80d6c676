"""``StepBackend`` over a melody bundle (MusicGen-Melody): chroma and text go into
``lm_prefill``, which projects and prepends them; ``lm_step`` continues unchanged.

A melody LM has no cross-attention, so there is no ``lm_cross`` graph: ``prepare`` only keeps
the condition rows as arrays, and the cache is made longer by the prefix (chroma frames + text
tokens), whose keys/values the prefill writes into the shared buffers before the tokens'
(export/melody.py). After the prefill every step is ``OnnxBackend``'s.

Shape letters: B batch, K codebooks, S steps, T_c chroma frames, L text length, P prefix length.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.backends.base import ConditionTensors
from engine.backends.onnx_runtime import as_input
from engine.backends.onnx_step import OnnxBackend, OnnxContext, OnnxKVCache


@dataclass
class MelodyContext(OnnxContext):
    """Per-generation state: the prefill's condition inputs by name and the prefix length P."""

    prefix_inputs: dict[str, np.ndarray] = field(default_factory=dict)
    prefix_len: int = 0


class OnnxMelodyBackend(OnnxBackend):
    """``OnnxBackend`` for a melody LM (its manifest entry has ``chroma_bins``)."""

    def __init__(self, bundle_dir: Path, manifest: dict[str, Any], role: str,
                 provider: str = "cpu", threads: int | None = None) -> None:
        super().__init__(bundle_dir, manifest, role, provider, threads)
        self.chroma_bins = int(manifest["lms"][role]["chroma_bins"])

    def prepare(self, cond: ConditionTensors) -> MelodyContext:
        """Keep the chroma [B, T_c, bins] and text [B, L, C] rows for the prefill."""
        if cond.chroma is None or cond.cross is None or cond.cross_mask is None:
            raise ValueError("a melody LM needs chroma, cross and cross_mask condition rows")
        if cond.chroma.dim() != 3 or cond.chroma.shape[-1] != self.chroma_bins:
            raise ValueError(f"chroma must be [B, T_c, {self.chroma_bins}], "
                             f"got {list(cond.chroma.shape)}")
        inputs = {"chroma": as_input(cond.chroma, np.float32),
                  "encoder_hidden_states": as_input(cond.cross, np.float32),
                  "encoder_attention_mask": as_input(cond.cross_mask, np.int64)}
        return MelodyContext(cross={}, batch=cond.batch, prefix_inputs=inputs,
                             prefix_len=cond.chroma.shape[1] + cond.cross.shape[1])

    def new_cache(self, ctx: OnnxContext, max_steps: int) -> OnnxKVCache:
        """The shared cache with room for the prefix before ``max_steps`` token steps."""
        assert isinstance(ctx, MelodyContext)
        return super().new_cache(ctx, max_steps + ctx.prefix_len)

    def step(self, tokens: torch.Tensor, cache: OnnxKVCache,
             ctx: OnnxContext) -> tuple[torch.Tensor, OnnxKVCache]:
        """The first call runs the prefill over prefix + tokens; later ones are lm_step's."""
        if cache.length:
            return super().step(tokens, cache, ctx)
        assert isinstance(ctx, MelodyContext)
        if tokens.dim() != 3 or tokens.shape[0] != cache.batch or tokens.shape[1] != self.n_q:
            raise ValueError(f"tokens must be [{cache.batch}, {self.n_q}, S], "
                             f"got {list(tokens.shape)}")
        total = ctx.prefix_len + tokens.shape[2]
        if total > cache.max_steps:
            raise ValueError(f"KV cache overflow: a {ctx.prefix_len}-step prefix + "
                             f"{tokens.shape[2]} steps exceed {cache.max_steps}")
        binding = self.prefill_session.io_binding()
        for name, array in ctx.prefix_inputs.items():
            binding.bind_cpu_input(name, array)
        self.bind_cache(binding, cache)
        logits = self.run_causal(self.prefill_session, binding, as_input(tokens, np.int64),
                                 cache, total)
        return torch.from_numpy(logits), cache
