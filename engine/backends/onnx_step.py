"""``StepBackend`` over onnxruntime sessions of a bundle's LM graphs (see docs/ONNX.md).

The decoding loops (ar, magnet, hybrid) run unchanged on this backend: tensors at the boundary
are torch CPU tensors, converted with ``torch.from_numpy`` (no copy).

KV cache: per layer, self-attention keys and values live in two preallocated device buffers
("ping" and "pong"), each big enough for ``[B, H, max_steps, Dh]``. A step binds the past input
``past_key_values.{i}.decoder.key`` to the current buffer with shape ``[B, H, n, Dh]`` and the
present output ``present.{i}.decoder.key`` to the other buffer with shape ``[B, H, n + S, Dh]``
(IOBinding with raw pointers), then the two swap roles. A contiguous ``[B, H, n + S, Dh]``
present is exactly the next step's contiguous past, so nothing is copied or allocated outside
the graph; the only cache traffic is the graph's own concat (past + new keys), which is what a
past-in/present-out step graph without an ``If`` node costs. Cross-attention keys/values are
computed once per generation by ``lm_cross`` and stay bound as device OrtValues.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.backends.base import ConditionTensors
from engine.backends.onnx_runtime import as_input, make_session


class _Buffer:
    """Flat preallocated memory on the session's device, bound by pointer with any shape."""

    def __init__(self, n_elements: int, dtype: np.dtype, device: str) -> None:
        import onnxruntime as ort
        self.dtype, self.device = np.dtype(dtype), device
        if device == "cpu":
            self.array = np.empty(n_elements, dtype=self.dtype)
            self.ptr = self.array.ctypes.data
        else:
            self.value = ort.OrtValue.ortvalue_from_shape_and_type([n_elements], self.dtype,
                                                                   device, 0)
            self.ptr = self.value.data_ptr()
        self.size = n_elements

    def bind_input(self, binding: Any, name: str, shape: list[int]) -> None:
        assert int(np.prod(shape)) <= self.size, (name, shape, self.size)
        binding.bind_input(name, self.device, 0, self.dtype, shape, self.ptr)

    def bind_output(self, binding: Any, name: str, shape: list[int]) -> None:
        assert int(np.prod(shape)) <= self.size, (name, shape, self.size)
        binding.bind_output(name, self.device, 0, self.dtype, shape, self.ptr)

    def view(self, shape: list[int]) -> np.ndarray:
        """CPU only: the first prod(shape) elements as an array of ``shape`` (no copy)."""
        return self.array[: int(np.prod(shape))].reshape(shape)



@dataclass
class OnnxContext:
    """Per-generation state: every layer's cross keys/values as device OrtValues, by input name,
    and the rows' tempo for beat-conditioned graphs (zeros: no tempo)."""

    cross: dict[str, Any]
    batch: int
    beat: np.ndarray | None = None


class OnnxKVCache:
    """Ping-pong self-attention cache: two preallocated buffers per past/present tensor.

    ``length`` steps are valid, laid out contiguously as ``[B, H, length, Dh]`` in
    ``buffers[current]``; a step writes ``[B, H, length + S, Dh]`` into the other buffer.
    """

    def __init__(self, names: list[str], batch: int, heads: int, head_dim: int, max_steps: int,
                 device: str) -> None:
        size = batch * heads * max_steps * head_dim
        self.names = names
        self.buffers = [[_Buffer(size, np.float32, device) for _ in names] for _ in range(2)]
        self.batch, self.heads, self.head_dim, self.max_steps = batch, heads, head_dim, max_steps
        self.length = 0
        self.current = 0

    def shape(self, steps: int) -> list[int]:
        return [self.batch, self.heads, steps, self.head_dim]


class OnnxBackend:
    """``StepBackend`` over one LM's graphs: lm_cross (+ lm_prefill, lm_step for AR; lm_full for
    MAGNeT), as a bundle's manifest lists them."""

    def __init__(self, bundle_dir: Path, manifest: dict[str, Any], role: str,
                 provider: str = "cpu", threads: int | None = None) -> None:
        lm = manifest["lms"][role]
        graphs = manifest["graphs"]
        self.role, self.device = role, provider
        self.n_q, self.card = int(manifest["num_codebooks"]), int(manifest["card"])
        self.special_token_id = int(manifest["special_token_id"])
        self.num_layers, self.num_heads = int(lm["num_layers"]), int(lm["num_heads"])
        self.head_dim = int(lm["head_dim"])

        def session(name: str | None) -> Any:
            return None if name is None else make_session(bundle_dir / graphs[name]["file"],
                                                          provider, threads)
        self.cross_session = session(lm["graphs"]["cross"])
        self.prefill_session = session(lm["graphs"].get("prefill"))
        self.step_session = session(lm["graphs"].get("step"))
        self.full_session = session(lm["graphs"].get("full"))
        main = self.step_session or self.full_session
        self.reads_beat = main is not None and "beat" in {i.name for i in main.get_inputs()}
        # a melody LM has no cross graph (engine/backends/onnx_melody.py)
        self.reads_key = self.cross_session is not None and \
            "key" in {i.name for i in self.cross_session.get_inputs()}
        # what the sessions really run on (onnxruntime's name), reported by /barforge/status
        self.provider: str = (self.cross_session or main).get_providers()[0]
        self.chroma_bins = 0
        L = self.num_layers
        self.past_names = [f"past_key_values.{i}.decoder.{kv}" for i in range(L)
                           for kv in ("key", "value")]
        self.present_names = [f"present.{i}.decoder.{kv}" for i in range(L)
                              for kv in ("key", "value")]
        self.cross_names = [f"past_key_values.{i}.encoder.{kv}" for i in range(L)
                            for kv in ("key", "value")]

    # ---- StepBackend

    def prepare(self, cond: ConditionTensors) -> OnnxContext:
        """Run lm_cross once: the cross keys/values stay on the device for every step."""
        if cond.prefix is not None:
            raise ValueError("ONNX bundles take no projected prefix (a melody bundle takes chroma)")
        if cond.cross is None or cond.cross_mask is None:
            raise ValueError("this LM cross-attends: the condition needs cross and cross_mask")
        binding = self.cross_session.io_binding()
        binding.bind_cpu_input("encoder_hidden_states", as_input(cond.cross, np.float32))
        binding.bind_cpu_input("encoder_attention_mask", as_input(cond.cross_mask, np.int64))
        if self.reads_key:    # no key is class 0, exactly as no key input in torch
            binding.bind_cpu_input("key", np.zeros(cond.batch, np.int64) if cond.key is None
                                   else np.ascontiguousarray(as_input(cond.key, np.int64)))
        outputs = [o.name for o in self.cross_session.get_outputs()]
        for name in outputs:
            binding.bind_output(name, self.device)
        self.cross_session.run_with_iobinding(binding)
        values = binding.get_outputs()
        cross = {n.replace("present.", "past_key_values.", 1): v for n, v in zip(outputs, values)}
        beat = None
        if self.reads_beat:   # a row without tempo is zeros, exactly as no beat input in torch
            beat = (np.zeros((cond.batch, 3), np.float32) if cond.beat is None
                    else np.ascontiguousarray(as_input(cond.beat, np.float32)))
        return OnnxContext(cross=cross, batch=cond.batch, beat=beat)

    def new_cache(self, ctx: OnnxContext, max_steps: int) -> OnnxKVCache:
        """Two preallocated buffers per layer key/value, each for ``max_steps`` steps."""
        if not isinstance(max_steps, int) or max_steps < 1:
            raise ValueError(f"max_steps must be a positive integer, got {max_steps!r}")
        if self.prefill_session is None:
            raise ValueError(f"the bundle's {self.role} LM has no causal (AR) graphs")
        return OnnxKVCache(self.past_names, ctx.batch, self.num_heads, self.head_dim, max_steps,
                           self.device)

    def step(self, tokens: torch.Tensor, cache: OnnxKVCache,
             ctx: OnnxContext) -> tuple[torch.Tensor, OnnxKVCache]:
        """Logits [B, K, S, card]: lm_prefill on an empty cache, else lm_step once per step."""
        if tokens.dim() != 3 or tokens.shape[0] != cache.batch or tokens.shape[1] != self.n_q:
            raise ValueError(f"tokens must be [{cache.batch}, {self.n_q}, S], "
                             f"got {list(tokens.shape)}")
        S = tokens.shape[2]
        if cache.length + S > cache.max_steps:
            raise ValueError(f"KV cache overflow: {cache.length} cached + {S} new steps exceed "
                             f"max_steps {cache.max_steps}")
        ids = as_input(tokens, np.int64)
        if cache.length == 0:
            return torch.from_numpy(self._run_causal(self.prefill_session, ids, cache, ctx)), cache
        logits = [self._run_causal(self.step_session, ids[:, :, s:s + 1], cache, ctx)
                  for s in range(S)]
        return torch.from_numpy(logits[0] if S == 1 else np.concatenate(logits, axis=2)), cache

    def _run_causal(self, session: Any, ids: np.ndarray, cache: OnnxKVCache,
                    ctx: OnnxContext) -> np.ndarray:
        B, K, S = ids.shape
        binding = session.io_binding()
        binding.bind_cpu_input("input_ids", np.ascontiguousarray(ids))
        if ctx.beat is not None:
            binding.bind_cpu_input("beat", ctx.beat)
        src, dst = cache.buffers[cache.current], cache.buffers[1 - cache.current]
        if session is self.step_session:
            for name, buf in zip(self.past_names, src):
                buf.bind_input(binding, name, cache.shape(cache.length))
        for name, value in ctx.cross.items():
            binding.bind_ortvalue_input(name, value)
        logits = np.empty((B, K, S, self.card), dtype=np.float32)
        binding.bind_output("logits", "cpu", 0, np.float32, list(logits.shape),
                            logits.ctypes.data)
        for name, buf in zip(self.present_names, dst):
            buf.bind_output(binding, name, cache.shape(cache.length + S))
        session.run_with_iobinding(binding)
        cache.current, cache.length = 1 - cache.current, cache.length + S
        return logits

    def full(self, tokens: torch.Tensor, ctx: OnnxContext, attn_band: int | None,
             codebook: int | None = None) -> torch.Tensor:
        """Non-causal logits: [B, T, card] for ``codebook``, else [B, K, T, card]."""
        if self.full_session is None:
            raise ValueError(f"the bundle's {self.role} LM has no non-causal (MAGNeT) graph")
        if attn_band is not None and (not isinstance(attn_band, int) or attn_band < 0):
            raise ValueError(f"attn_band must be None or an integer >= 0, got {attn_band!r}")
        if tokens.dim() != 3 or tokens.shape[1] != self.n_q:
            raise ValueError(f"tokens must be [B, {self.n_q}, T], got {list(tokens.shape)}")
        if codebook is None:
            return torch.stack([self.full(tokens, ctx, attn_band, k) for k in range(self.n_q)], 1)
        if not 0 <= codebook < self.n_q:
            raise ValueError(f"codebook must be in [0, {self.n_q}), got {codebook!r}")
        B, _, T = tokens.shape
        band = T if attn_band is None else min(attn_band, T)   # a band >= T attends everywhere
        binding = self.full_session.io_binding()
        binding.bind_cpu_input("input_ids", as_input(tokens, np.int64))
        binding.bind_cpu_input("attn_band", np.array(band, dtype=np.int64))
        binding.bind_cpu_input("codebook", np.array(codebook, dtype=np.int64))
        if ctx.beat is not None:
            binding.bind_cpu_input("beat", ctx.beat)
        for name, value in ctx.cross.items():
            binding.bind_ortvalue_input(name, value)
        logits = np.empty((B, T, self.card), dtype=np.float32)
        binding.bind_output("logits", "cpu", 0, np.float32, list(logits.shape), logits.ctypes.data)
        self.full_session.run_with_iobinding(binding)
        return torch.from_numpy(logits)
