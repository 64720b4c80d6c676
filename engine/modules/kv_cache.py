"""Self-attention key/value caches, passed explicitly through the transformer.

A cache has ``length`` (steps held before the current call) and ``advance(S)``, which the
transformer calls once per forward after every layer has written.

- ``StaticKVCache``: one preallocated buffer per key/value for all layers, written in place;
  ``update(layer, k_new, v_new) -> (k_all, v_all)`` (each ``[B, H, S_past + S, Dh]``) returns
  views, so a decoding step copies only the new step's keys/values.
  The torch runtime uses it.
- ``AttendingKVCache``: a cache that runs the self-attention itself (``attend``), for a fused
  attention op that also writes the new keys/values in place (the exported step graph's
  onnxruntime ``GroupQueryAttention``, export/shared_kv.py); the transformer then builds no mask.

Shape letters: B batch, H heads, S steps, Dh head dim.
"""
from __future__ import annotations

import torch


class StaticKVCache:
    """Preallocated per-layer keys/values of ``max_len`` steps, filled in place.

    ``keys`` / ``values``: [num_layers, B, H, max_len, Dh]. ``length`` steps are valid.
    """

    def __init__(self, num_layers: int, batch: int, heads: int, max_len: int, head_dim: int,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> None:
        for name, value in (("num_layers", num_layers), ("batch", batch), ("heads", heads),
                            ("max_len", max_len), ("head_dim", head_dim)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"StaticKVCache {name} must be a positive integer, got {value!r}")
        shape = (num_layers, batch, heads, max_len, head_dim)
        self.keys = torch.zeros(shape, dtype=dtype, device=device)
        self.values = torch.zeros(shape, dtype=dtype, device=device)
        self.max_len = max_len
        self.length = 0

    @property
    def batch(self) -> int:
        return self.keys.shape[1]

    def update(self, layer: int, k_new: torch.Tensor,
               v_new: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write ``k_new``/``v_new`` [B, H, S, Dh] after the valid steps; return views up to them."""
        end = self.length + k_new.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache overflow: {self.length} cached + {k_new.shape[2]} new steps "
                             f"exceed max_len {self.max_len}")
        self.keys[layer, :, :, self.length:end].copy_(k_new)
        self.values[layer, :, :, self.length:end].copy_(v_new)
        return self.keys[layer, :, :, :end], self.values[layer, :, :, :end]

    def advance(self, steps: int) -> None:
        """Mark ``steps`` more steps valid (call once per forward, after all layers wrote)."""
        assert 0 <= self.length + steps <= self.max_len, "cache advanced past its size"
        self.length += steps

    def reset(self) -> None:
        """Forget every cached step (the buffers are reused)."""
        self.length = 0


class AttendingKVCache:
    """Base of caches that attend themselves: ``attend(layer, q, k_new, v_new)`` writes the new
    keys/values after the ``length`` cached steps and returns the causal attention output.

    ``length`` may be a 0-d tensor (a traced graph's input), so positions stay dynamic.
    """

    length: int | torch.Tensor

    def attend(self, layer: int, q: torch.Tensor, k_new: torch.Tensor,
               v_new: torch.Tensor) -> torch.Tensor:
        """q, k_new, v_new [B, H, S, Dh] -> attention output [B, S, H * Dh] (heads merged)."""
        raise NotImplementedError

    def advance(self, steps: int) -> None:
        """Nothing to do: the new length is the next call's input."""
