"""The step graph's self-attention as onnxruntime's ``GroupQueryAttention`` on a shared KV buffer.

``com.microsoft.GroupQueryAttention`` (kv heads = heads: plain multi-head attention) takes the
step's query, new keys and new values ``[B, S, H * Dh]``, the cache buffers
``past_key`` / ``past_value`` ``[B, H, M, Dh]`` (M: the buffer's length, every step's), and
``seqlens_k`` ``[B]`` (int32, total length - 1 per row) and ``total_sequence_length`` ``[]``
(int32); it writes the new keys/values at positions ``total - S .. total - 1`` and attends
causally over the first ``total`` positions. When the caller binds ``present_key`` to the very
buffer bound as ``past_key`` (IOBinding), onnxruntime writes only the new step into it: no
concat, no per-step allocation (engine/backends/onnx_step.py). onnxruntime's CPU kernel takes
S > 1 after a non-empty past only at batch 1, so the runtime feeds a multi-step prompt after a
past one step at a time.

In torch (the reference every export is validated against) the same function computes the
op's result eagerly: the buffer copied, the new steps written in, SDPA with the causal mask.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from engine.modules.kv_cache import AttendingKVCache

DOMAIN = "com.microsoft"


class GroupQueryAttention(torch.autograd.Function):
    """Eager: the op's semantics in torch; exported: one ``GroupQueryAttention`` node."""

    @staticmethod
    def forward(ctx: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                past_key: torch.Tensor, past_value: torch.Tensor, seqlens_k: torch.Tensor,
                total: torch.Tensor, num_heads: int) -> tuple[torch.Tensor, ...]:
        B, S, _ = query.shape
        Dh = past_key.shape[-1]
        end = int(total)
        start = end - S
        if start < 0 or end > past_key.shape[2]:
            raise ValueError(f"total_sequence_length {end} must lie in [{S}, "
                             f"{past_key.shape[2]}] (the buffer's length) for {S} new steps")
        heads = [t.reshape(B, S, num_heads, Dh).transpose(1, 2) for t in (query, key, value)]
        present_k, present_v = past_key.clone(), past_value.clone()
        present_k[:, :, start:end] = heads[1]
        present_v[:, :, start:end] = heads[2]
        allowed = torch.arange(end)[None, :] <= (start + torch.arange(S))[:, None]   # [S, end]
        out = F.scaled_dot_product_attention(heads[0], present_k[:, :, :end],
                                             present_v[:, :, :end], attn_mask=allowed)
        return out.transpose(1, 2).reshape(B, S, num_heads * Dh), present_k, present_v

    @staticmethod
    def symbolic(g: Any, query: Any, key: Any, value: Any, past_key: Any, past_value: Any,
                 seqlens_k: Any, total: Any, num_heads: int) -> tuple[Any, ...]:
        out, present_k, present_v = g.op(
            f"{DOMAIN}::GroupQueryAttention", query, key, value, past_key, past_value,
            seqlens_k, total, num_heads_i=num_heads, kv_num_heads_i=num_heads, outputs=3)
        # a custom op's types are unknown to the exporter; the axes are dynamic
        out.setType(query.type().with_sizes([None] * 3))
        present_k.setType(past_key.type().with_sizes([None] * 4))
        present_v.setType(past_value.type().with_sizes([None] * 4))
        return out, present_k, present_v


class SharedBufferKVCache(AttendingKVCache):
    """Every layer's cache buffers ``[(key, value)]`` ``[B, H, M, Dh]`` holding ``past_length``
    (0-d int64) valid steps; ``presents`` collects the buffers as the op returns them."""

    def __init__(self, buffers: list[tuple[torch.Tensor, torch.Tensor]],
                 past_length: torch.Tensor) -> None:
        self.buffers = buffers
        self.length = past_length
        self.presents: list[tuple[torch.Tensor, torch.Tensor]] = []

    def attend(self, layer: int, q: torch.Tensor, k_new: torch.Tensor,
               v_new: torch.Tensor) -> torch.Tensor:
        """q, k_new, v_new [B, H, S, Dh] -> [B, S, H * Dh]; the layer's buffers get the steps."""
        assert layer == len(self.presents), "layers must attend in order"
        B, H, S, Dh = q.shape
        total = (self.length + S).to(torch.int32)
        seqlens_k = (total - 1).expand(B)                    # every row holds the same steps

        def flat(t: torch.Tensor) -> torch.Tensor:
            return t.transpose(1, 2).reshape(B, S, H * Dh)
        out, k_all, v_all = GroupQueryAttention.apply(flat(q), flat(k_new), flat(v_new),
                                                      *self.buffers[layer], seqlens_k, total, int(H))
        self.presents.append((k_all, v_all))
        return out
