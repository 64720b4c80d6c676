"""Self-attention key/value caches, passed explicitly through the transformer.

Both caches answer the same two calls, so the transformer code is written once:
``update(layer, k_new, v_new) -> (k_all, v_all)`` (each ``[B, H, S_past + S, Dh]``) and
``length`` (steps held before the current call). The caller advances the cache once per forward,
after every layer has written, with ``advance(S)``.

- ``StaticKVCache``: one preallocated buffer per key/value for all layers, written in place;
  ``update`` returns views, so a decoding step copies only the new step's keys/values.
  The torch runtime uses it.
- ``ConcatKVCache``: past tensors in, ``presents`` (past concatenated with new) out: the pure
  dataflow form an ONNX exporter traces (Optimum names ``past_key_values.{i}.decoder.key`` in,
  ``present.{i}.decoder.key`` out).

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


class ConcatKVCache:
    """Functional cache: ``past`` [(k, v)] per layer in, ``presents`` [(k, v)] out.

    ``past`` may be empty (no history: every layer starts from nothing). Tensors are
    [B, H, S_past, Dh] in and [B, H, S_past + S, Dh] out.
    """

    def __init__(self, past: list[tuple[torch.Tensor, torch.Tensor]] | None = None) -> None:
        self.past = list(past) if past else []
        self.presents: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.length = self.past[0][0].shape[2] if self.past else 0

    def update(self, layer: int, k_new: torch.Tensor,
               v_new: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Concatenate the layer's past with the new keys/values and record them as present."""
        assert layer == len(self.presents), "layers must update in order"
        if self.past:
            k_past, v_past = self.past[layer]
            k_all = torch.cat([k_past, k_new], dim=2)  # [B, H, S_past + S, Dh]
            v_all = torch.cat([v_past, v_new], dim=2)
        else:
            k_all, v_all = k_new, v_new
        self.presents.append((k_all, v_all))
        return k_all, v_all

    def advance(self, steps: int) -> None:
        """Kept for the common interface: the new length is that of ``presents``."""
        self.length += steps
