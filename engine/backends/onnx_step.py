"""``StepBackend`` over onnxruntime sessions of a bundle's LM graphs (see docs/ONNX.md).

The decoding loops (ar, magnet, hybrid) run unchanged on this backend: tensors at the boundary
are torch CPU tensors, converted with ``torch.from_numpy`` (no copy).

KV cache: per layer, self-attention keys and values live in one preallocated OrtValue each,
``[B, H, max_steps, Dh]`` on the session's device, bound by IOBinding as both the past input
``past_key_values.{i}.decoder.key`` and the present output ``present.{i}.decoder.key`` of every
call. The graph's self-attention is onnxruntime's ``GroupQueryAttention`` (export/shared_kv.py),
which then writes only the new steps into the buffer at ``past_sequence_length``: no concat, no
per-step allocation, the same memory from the first call to the last. The prompt runs through
the same ``lm_step`` graph from an empty cache. Cross-attention keys/values are computed once
per generation by ``lm_cross`` and stay bound as device OrtValues; a cache's binding is made
once, so a step rebinds only its tokens, its past length and its logits.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.backends.base import ConditionTensors
from engine.backends.onnx_runtime import as_input, open_graph


@dataclass
class OnnxContext:
    """Per-generation state: every layer's cross keys/values as device OrtValues, by input name,
    and the rows' tempo for beat-conditioned graphs (zeros: no tempo)."""

    cross: dict[str, Any]
    batch: int
    beat: np.ndarray | None = None


class OnnxKVCache:
    """The shared self-attention cache: one OrtValue ``[B, H, max_steps, Dh]`` per layer
    key/value (``values``, in ``names`` order), bound as past and present alike; ``length``
    steps are valid. ``binding``: the step graph's IOBinding, made by the first step."""

    def __init__(self, names: list[str], batch: int, heads: int, head_dim: int, max_steps: int,
                 device: str) -> None:
        import onnxruntime as ort
        shape = [batch, heads, max_steps, head_dim]
        self.names = names
        self.values = [ort.OrtValue.ortvalue_from_shape_and_type(shape, np.float32, device, 0)
                       for _ in names]
        self.batch, self.max_steps = batch, max_steps
        self.length = 0
        self.binding: Any = None


class OnnxBackend:
    """``StepBackend`` over one LM's graphs: lm_cross (+ lm_step for AR, and lm_prefill for a
    melody LM; lm_full for MAGNeT), as a bundle's manifest lists them."""

    def __init__(self, bundle_dir: Path, manifest: dict[str, Any], role: str,
                 provider: str = "cpu", threads: int | None = None) -> None:
        lm = manifest["lms"][role]
        self.role, self.device = role, provider
        self.n_q, self.card = int(manifest["num_codebooks"]), int(manifest["card"])
        self.special_token_id = int(manifest["special_token_id"])
        self.num_layers, self.num_heads = int(lm["num_layers"]), int(lm["num_heads"])
        self.head_dim = int(lm["head_dim"])

        def session(name: str | None) -> Any:
            return None if name is None else open_graph(bundle_dir, manifest, name, provider,
                                                        threads)
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
        """One preallocated buffer per layer key/value, for ``max_steps`` steps."""
        if not isinstance(max_steps, int) or max_steps < 1:
            raise ValueError(f"max_steps must be a positive integer, got {max_steps!r}")
        if self.step_session is None:
            raise ValueError(f"the bundle's {self.role} LM has no causal (AR) graphs")
        return OnnxKVCache(self.past_names, ctx.batch, self.num_heads, self.head_dim, max_steps,
                           self.device)

    def step(self, tokens: torch.Tensor, cache: OnnxKVCache,
             ctx: OnnxContext) -> tuple[torch.Tensor, OnnxKVCache]:
        """Logits [B, K, S, card]: lm_step over all S steps on an empty cache (the prompt), else
        once per step (onnxruntime's CPU attention takes several steps after a past only at
        batch 1)."""
        if tokens.dim() != 3 or tokens.shape[0] != cache.batch or tokens.shape[1] != self.n_q:
            raise ValueError(f"tokens must be [{cache.batch}, {self.n_q}, S], "
                             f"got {list(tokens.shape)}")
        S = tokens.shape[2]
        if cache.length + S > cache.max_steps:
            raise ValueError(f"KV cache overflow: {cache.length} cached + {S} new steps exceed "
                             f"max_steps {cache.max_steps}")
        ids = as_input(tokens, np.int64)
        if cache.length == 0:
            return torch.from_numpy(self._run_step(ids, cache, ctx)), cache
        logits = [self._run_step(ids[:, :, s:s + 1], cache, ctx) for s in range(S)]
        return torch.from_numpy(logits[0] if S == 1 else np.concatenate(logits, axis=2)), cache

    def bind_cache(self, binding: Any, cache: OnnxKVCache) -> None:
        """Bind every layer's buffer as both its past input and its present output."""
        for past, present, value in zip(self.past_names, self.present_names, cache.values):
            binding.bind_ortvalue_input(past, value)
            binding.bind_ortvalue_output(present, value)

    def run_causal(self, session: Any, binding: Any, ids: np.ndarray, cache: OnnxKVCache,
                   new_steps: int) -> np.ndarray:
        """Bind ``ids`` and a fresh logits array, run ``session`` on ``binding`` (the cache and
        every other input bound) and advance the cache by ``new_steps``; the logits."""
        B, K, S = ids.shape
        binding.bind_cpu_input("input_ids", np.ascontiguousarray(ids))
        logits = np.empty((B, K, S, self.card), dtype=np.float32)
        binding.bind_output("logits", "cpu", 0, np.float32, list(logits.shape),
                            logits.ctypes.data)
        session.run_with_iobinding(binding)
        cache.length += new_steps
        return logits

    def _run_step(self, ids: np.ndarray, cache: OnnxKVCache, ctx: OnnxContext) -> np.ndarray:
        if cache.binding is None:   # made once per cache: buffers, cross K/V and tempo
            cache.binding = self.step_session.io_binding()
            self.bind_cache(cache.binding, cache)
            for name, value in ctx.cross.items():
                cache.binding.bind_ortvalue_input(name, value)
            if ctx.beat is not None:
                cache.binding.bind_cpu_input("beat", ctx.beat)
        cache.binding.bind_cpu_input("past_sequence_length", np.array(cache.length, np.int64))
        return self.run_causal(self.step_session, cache.binding, ids, cache, ids.shape[2])

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
