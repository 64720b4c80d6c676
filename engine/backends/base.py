"""The "model step" interface the decoding loops run on.

The AR, MAGNeT and hybrid loops in ``engine/decoding`` are written once against this protocol;
``engine/backends/torch_backend.py`` implements it over the PyTorch LM and
``engine/backends/onnx_step.py`` over onnxruntime sessions of an exported bundle. Tensors
crossing the interface are torch tensors on CPU (the onnxruntime backend converts at its edge,
zero-copy where it can), so sampling, CFG and masking logic exist exactly once.

Shape letters: B batch (cond and uncond rows stacked when CFG is on), K codebooks, S sequence
steps, T frames, L condition length, D model dim, card codebook size.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Protocol

import torch


@dataclass
class ConditionTensors:
    """What the LM is conditioned on, already encoded by the frozen conditioners.

    ``cross``: [B, L, C] text-encoder hidden states (before the LM's own projection) or None;
    a melody LM prepends them (projected) after the chroma instead of cross-attending.
    ``cross_mask``: [B, L] 1 for real tokens, 0 for padding / null condition.
    ``chroma``: [B, T_c, bins] one-hot melody chroma for melody LMs (the backend projects it
    and the text into the prefix), or None.
    ``prefix``: [B, P, D] embeddings prepended to the token sequence, already projected, or None.
    ``beat``: [B, 3] (beats per frame, beats per bar, beat position of step 0) for LMs with
    beat conditioning, or None (no tempo). Beats per frame 0 marks a row without tempo.
    ``key``: [B] int64 key classes (engine/conditioners/key.py, 0: none) for LMs with key
    conditioning, or None (no row has a key).
    Null (unconditional) rows for CFG have ``cross`` zeroed, ``cross_mask`` 0, no tempo, no key.
    """

    cross: torch.Tensor | None
    cross_mask: torch.Tensor | None
    prefix: torch.Tensor | None = None
    chroma: torch.Tensor | None = None
    beat: torch.Tensor | None = None
    key: torch.Tensor | None = None

    def at_frame(self, offset: int) -> "ConditionTensors":
        """The rows for a decoding window that starts ``offset`` frames into the piece: the
        same, with the beat position of its step 0 moved on by ``offset`` frames."""
        if self.beat is None or offset == 0:
            return self
        beat = self.beat.clone()
        beat[:, 2] += offset * beat[:, 0]
        return replace(self, beat=beat)

    @property
    def batch(self) -> int:
        t = next((t for t in (self.cross, self.chroma, self.prefix) if t is not None), None)
        assert t is not None, "a condition needs cross, chroma or prefix tensors"
        return t.shape[0]


class StepBackend(Protocol):
    """One LM, driven step by step (causal, KV-cached) or whole-sequence (non-causal)."""

    n_q: int           # K, number of codebooks
    card: int          # codebook size; token id ``card`` is the special / mask token
    special_token_id: int
    chroma_bins: int   # melody LMs: chroma bins of ``ConditionTensors.chroma``; 0 otherwise

    def prepare(self, cond: ConditionTensors) -> Any:
        """Per-generation context: cross-attention keys/values for every layer, computed once."""
        ...

    def new_cache(self, ctx: Any, max_steps: int) -> Any:
        """An empty self-attention KV cache for ``max_steps`` token steps; room for ``ctx``'s prefix
        (melody / prepended condition) is added by the backend."""
        ...

    def step(self, tokens: torch.Tensor, cache: Any, ctx: Any) -> tuple[torch.Tensor, Any]:
        """Causal forward of new tokens [B, K, S] after what ``cache`` holds.

        Returns logits [B, K, S, card] (float32) and the cache advanced by S steps. The prefix
        (if any) is consumed on the first call, whose logits cover only the S token positions.
        """
        ...

    def full(self, tokens: torch.Tensor, ctx: Any, attn_band: int | None,
             codebook: int | None = None) -> torch.Tensor:
        """Non-causal forward of a whole sequence [B, K, T] (MAGNeT).

        ``attn_band``: None attends everywhere; n restricts self-attention to |i - j| <= n.
        ``codebook``: when given, logits only for that codebook: [B, T, card]; else [B, K, T, card].
        """
        ...
