"""Pre-norm transformer of the MusicGen / MAGNeT LM, with the KV cache passed explicitly.

Structure and parameter names follow audiocraft's ``StreamingTransformer`` so its checkpoints
load key for key: per layer ``self_attn`` (packed ``in_proj_weight`` [3D, D], ``out_proj``),
``norm1``, ``cross_attention`` (same packing), ``norm_cross``, ``norm2``, ``linear1``,
``linear2``; no biases in attention or FFN, exact GELU, LayerNorm.

Self-attention is causal (after whatever the cache holds) or non-causal with an optional band
``|i - j| <= band`` (MAGNeT's restricted context), expressed as a boolean mask so it holds on
plain ``scaled_dot_product_attention`` on CPU. Cross-attention keys/values depend only on the
condition, so ``cross_kv`` computes them once per generation and every step reuses them.

Shape letters: B batch, S steps, D dim, H heads, Dh head dim, L condition length.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from engine.modules.banded_attention import (banded_attention, banded_attention_traced,
                                             banded_pays)
from engine.modules.kv_cache import AttendingKVCache, StaticKVCache

KVCache = StaticKVCache | AttendingKVCache
CrossKV = list[tuple[torch.Tensor, torch.Tensor]]


def create_sin_embedding(positions: torch.Tensor, dim: int, max_period: float = 10000.0,
                         dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Sinusoidal embedding ``cat[cos, sin]`` of ``positions`` [S] -> [S, D] (audiocraft / HF)."""
    assert dim % 2 == 0, "sinusoidal embedding needs an even dim"
    half = dim // 2
    scale = math.log(max_period) / (half - 1)
    freqs = torch.exp(torch.arange(half, dtype=torch.float32, device=positions.device) * -scale)
    phase = positions.to(torch.float32)[:, None] * freqs[None, :]  # [S, D/2]
    return torch.cat([torch.cos(phase), torch.sin(phase)], dim=-1).to(dtype)  # [S, D]


def self_attention_mask(steps: int, past: int, causal: bool, band: int | None,
                        device: torch.device) -> torch.Tensor | None:
    """Boolean mask [S, past + S] (True = attend) for queries at positions past..past+S-1.

    None when every query sees every key (non-causal, no band) or when a single new step
    attends to the whole causal past (no mask needed).
    """
    if not causal and band is None:
        return None
    if causal and band is None and steps == 1:
        return None
    q_pos = torch.arange(past, past + steps, device=device)[:, None]
    k_pos = torch.arange(past + steps, device=device)[None, :]
    allowed = torch.ones(steps, past + steps, dtype=torch.bool, device=device)
    if causal:
        allowed = allowed & (k_pos <= q_pos)
    if band is not None:
        allowed = allowed & ((q_pos - k_pos).abs() <= band)
    return allowed


class MultiheadAttention(nn.Module):
    """Multi-head attention with audiocraft's packed projection: rows [0:D] q, [D:2D] k, [2D:3D] v."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} must be divisible by num_heads {num_heads}")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.out_proj = nn.Linear(dim, dim, bias=False)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        return x.view(b, s, self.num_heads, self.head_dim).transpose(1, 2)  # [B, H, S, Dh]

    def _merge(self, out: torch.Tensor) -> torch.Tensor:
        b, _, s, _ = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, s, self.dim))  # [B, S, D]

    def forward_self(self, x: torch.Tensor, layer: int, cache: KVCache | None,
                     mask: torch.Tensor | None, is_causal: bool,
                     band: int | torch.Tensor | None = None) -> torch.Tensor:
        """Self-attention of ``x`` [B, S, D]; new keys/values go into ``cache`` (if any).

        ``band``: computed only inside ``|i - j| <= band`` instead of through ``mask`` (a tensor
        band: the traceable form, for exported graphs).
        """
        b, s, _ = x.shape
        qkv = F.linear(x, self.in_proj_weight)  # [B, S, 3D]
        qkv = qkv.view(b, s, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each [B, H, S, Dh]
        if isinstance(cache, AttendingKVCache):
            return self.out_proj(cache.attend(layer, q, k, v))
        if cache is not None:
            k, v = cache.update(layer, k, v)  # [B, H, S_past + S, Dh]
        if isinstance(band, torch.Tensor):
            out = banded_attention_traced(q, k, v, band)
        elif band is not None:
            out = banded_attention(q, k, v, band)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal)
        return self._merge(out)

    def project_kv(self, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values [B, H, L, Dh] of a condition ``src`` [B, L, D]."""
        d = self.dim
        k = self._heads(F.linear(src, self.in_proj_weight[d:2 * d]))
        v = self._heads(F.linear(src, self.in_proj_weight[2 * d:]))
        return k, v

    def forward_cross(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Cross-attention of ``x`` [B, S, D] to precomputed keys/values [B, H, L, Dh]."""
        q = self._heads(F.linear(x, self.in_proj_weight[:self.dim]))  # [B, H, S, Dh]
        return self._merge(F.scaled_dot_product_attention(q, k, v))


class TransformerLayer(nn.Module):
    """Pre-norm block: self-attention -> cross-attention (optional) -> GELU FFN."""

    def __init__(self, dim: int, num_heads: int, hidden: int, cross_attention: bool,
                 eps: float = 1e-5) -> None:
        super().__init__()
        self.self_attn = MultiheadAttention(dim, num_heads)
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        if cross_attention:
            self.cross_attention = MultiheadAttention(dim, num_heads)
            self.norm_cross = nn.LayerNorm(dim, eps=eps)
        else:
            self.cross_attention = None
            self.norm_cross = None
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.linear1 = nn.Linear(dim, hidden, bias=False)
        self.linear2 = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor, layer: int, cache: KVCache | None,
                cross: tuple[torch.Tensor, torch.Tensor] | None,
                mask: torch.Tensor | None, is_causal: bool,
                band: int | torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.self_attn.forward_self(self.norm1(x), layer, cache, mask, is_causal, band)
        if self.cross_attention is not None:
            assert cross is not None, "a cross-attention layer needs its condition keys/values"
            x = x + self.cross_attention.forward_cross(self.norm_cross(x), *cross)
        return x + self.linear2(F.gelu(self.linear1(self.norm2(x))))


class StreamingTransformer(nn.Module):
    """The layer stack; adds sinusoidal positions offset by the cache length."""

    def __init__(self, dim: int, num_heads: int, num_layers: int, hidden: int,
                 cross_attention: bool, max_period: float = 10000.0, eps: float = 1e-5) -> None:
        super().__init__()
        self.dim = dim
        self.max_period = max_period
        self.layers = nn.ModuleList(
            TransformerLayer(dim, num_heads, hidden, cross_attention, eps) for _ in range(num_layers))

    def cross_kv(self, cond: torch.Tensor) -> CrossKV:
        """Every layer's cross-attention keys/values of ``cond`` [B, L, D]; empty without cross."""
        return [layer.cross_attention.project_kv(cond) for layer in self.layers
                if layer.cross_attention is not None]

    def forward(self, x: torch.Tensor, cross_kv: CrossKV | None = None,
                cache: KVCache | None = None, causal: bool = True,
                band: int | torch.Tensor | None = None) -> torch.Tensor:
        """Run ``x`` [B, S, D] (positions after ``cache.length``) through every layer.

        The cache (if any) is advanced by S once all layers have written.
        """
        b, s, _ = x.shape
        past = cache.length if cache is not None else 0
        if cache is not None and not causal:
            raise ValueError("a KV cache needs causal attention (non-causal runs use no cache)")
        # past may be a 0-d tensor (an attending cache's traced input): positions stay dynamic
        positions = past + torch.arange(s, device=x.device)
        x = x + create_sin_embedding(positions, self.dim, self.max_period, x.dtype)
        attending = isinstance(cache, AttendingKVCache)   # it masks causally itself
        mask = None if attending else self_attention_mask(s, past, causal, band, x.device)
        # SDPA's own causal path is aligned top-left, right only without a past.
        is_causal = not attending and causal and band is None and past == 0 and s > 1
        if is_causal:
            mask = None
        # MAGNeT's restricted context: attention computed only inside the band. On the torch
        # runtime when it pays at this length; in a traced graph (a tensor band, the lm_full
        # export) always, in its branch-free form, which is full attention when the band
        # reaches every key.
        if causal or past or band is None:
            inner_band = None
        elif isinstance(band, torch.Tensor):
            inner_band = band
        else:   # a Python band would freeze its blocks into a trace: traces keep the mask
            tracing = torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()
            inner_band = band if not tracing and banded_pays(s, band) else None
        if inner_band is not None:
            mask = None
        has_cross = self.layers[0].cross_attention is not None if len(self.layers) else False
        if has_cross and (cross_kv is None or len(cross_kv) != len(self.layers)):
            raise ValueError(f"cross_kv must hold keys/values for all {len(self.layers)} layers "
                             f"(from cross_kv()), got {None if cross_kv is None else len(cross_kv)}")
        for i, layer in enumerate(self.layers):
            x = layer(x, i, cache, cross_kv[i] if has_cross else None, mask, is_causal,
                      inner_band)
        if cache is not None:
            cache.advance(s)
        return x
