"""The MusicGen / MAGNeT language model over codec tokens (audiocraft ``LMModel`` layout).

Input: K parallel token streams [B, K, S]; each codebook has its own embedding table of
``card + 1`` rows (row ``card`` is the special / mask token) and the embeddings are summed.
A pre-norm transformer (engine/modules/transformer.py) with sinusoidal positions runs over the
sum, cross-attending to the projected text condition; ``out_norm`` then K heads ``linears``
give per-codebook logits. Melody models have no cross-attention: their condition (projected
chroma then projected text) is prepended as ``prefix`` embeddings.

Beat conditioning (``beat_harmonics`` > 0, our extension; audiocraft's and HF's LMs have none):
each step's metrical position at a given tempo -- sin/cos of the beat phase at ``beat_harmonics``
harmonics and of the bar phase at two -- is projected and added to the token embeddings. The
tempo is then an input the model reads at every frame instead of a number it must parse from
the caption. Training segments start on a downbeat (beat position 0 at step 0).

Key conditioning (``key_classes`` > 0, our extension): a learned embedding of the asked key
(engine/conditioners/key.py) is appended to the projected text as one more cross-attention
token; key 0 (none, or CFG's null row) is the zero vector, exactly as a masked text token.

Shape letters: B batch, K codebooks, S steps, D dim, L condition length, P prefix length,
C condition width.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from engine.config_dict import check_int, dataclass_from_dict
from engine.modules.transformer import CrossKV, KVCache, StreamingTransformer

BAR_HARMONICS = 2  # bar phase features: the bar and the half bar


@dataclass(frozen=True)
class LMConfig:
    """LM hyperparameters. ``cond_dim`` is the text encoder's width (0: no cross-attention).

    ``prefix_text_dim`` / ``chroma_bins`` are non-zero only for melody models, whose text
    hidden states and chroma are projected and prepended instead of cross-attended.
    """

    n_q: int = 4
    card: int = 2048
    dim: int = 1024
    num_heads: int = 16
    num_layers: int = 24
    hidden_scale: int = 4
    cond_dim: int = 768
    causal: bool = True
    max_period: float = 10000.0
    norm_eps: float = 1e-5
    prefix_text_dim: int = 0
    chroma_bins: int = 0
    beat_harmonics: int = 0
    key_classes: int = 0

    def __post_init__(self) -> None:
        for name in ("n_q", "card", "dim", "num_heads", "num_layers", "hidden_scale"):
            check_int(f"LMConfig.{name}", getattr(self, name), 1)
        for name in ("cond_dim", "prefix_text_dim", "chroma_bins", "beat_harmonics", "key_classes"):
            check_int(f"LMConfig.{name}", getattr(self, name), 0)
        if self.beat_harmonics and (self.prefix_text_dim or self.chroma_bins):
            raise ValueError("LMConfig.beat_harmonics needs a cross-attention LM: positions of a "
                             "prefixed (melody) LM do not start on the downbeat")
        if self.key_classes and not self.cond_dim:
            raise ValueError("LMConfig.key_classes needs a cross-attention LM (cond_dim > 0): "
                             "the key is one more cross-attention token")
        if self.dim % self.num_heads or (self.dim // self.num_heads) % 2:
            raise ValueError(f"LMConfig.dim {self.dim} must split into {self.num_heads} heads "
                             "of an even size")

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "LMConfig":
        """The config ``to_dict`` wrote; ValueError naming unknown keys."""
        return dataclass_from_dict(cls, data)


def debug_lm_config() -> LMConfig:
    """A tiny LM (~0.1 M parameters) for tests and the ``debug`` model."""
    return LMConfig(n_q=4, card=64, dim=32, num_heads=2, num_layers=2, cond_dim=32)


def musicgen_small_config() -> LMConfig:
    """facebook/musicgen-small: 1024 x 24 layers x 16 heads, T5-base text (768)."""
    return LMConfig()


class LMModel(nn.Module):
    """Transformer LM over K codebooks (audiocraft names: ``emb``, ``transformer``, ``out_norm``,
    ``linears``; ``cond_proj`` is audiocraft's ``output_proj`` / HF's ``enc_to_dec_proj``)."""

    def __init__(self, cfg: LMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.n_q = cfg.n_q
        self.card = cfg.card
        self.special_token_id = cfg.card
        self.emb = nn.ModuleList(nn.Embedding(cfg.card + 1, cfg.dim) for _ in range(cfg.n_q))
        self.transformer = StreamingTransformer(
            cfg.dim, cfg.num_heads, cfg.num_layers, cfg.hidden_scale * cfg.dim,
            cross_attention=cfg.cond_dim > 0, max_period=cfg.max_period, eps=cfg.norm_eps)
        self.out_norm = nn.LayerNorm(cfg.dim, eps=cfg.norm_eps)
        self.linears = nn.ModuleList(nn.Linear(cfg.dim, cfg.card, bias=False)
                                     for _ in range(cfg.n_q))
        self.cond_proj = nn.Linear(cfg.cond_dim, cfg.dim) if cfg.cond_dim else None
        self.prefix_text_proj = nn.Linear(cfg.prefix_text_dim, cfg.dim) if cfg.prefix_text_dim else None
        self.chroma_proj = nn.Linear(cfg.chroma_bins, cfg.dim) if cfg.chroma_bins else None
        self.beat_proj = (nn.Linear(2 * (cfg.beat_harmonics + BAR_HARMONICS), cfg.dim, bias=False)
                          if cfg.beat_harmonics else None)
        # row 0 (no key) stays the zero vector: it is never trained (padding_idx)
        self.key_emb = (nn.Embedding(cfg.key_classes + 1, cfg.dim, padding_idx=0)
                        if cfg.key_classes else None)
        # harmonic numbers, made once (not per decoding step); not part of the checkpoint
        self.register_buffer("beat_h", torch.arange(1.0, cfg.beat_harmonics + 1), persistent=False)
        self.register_buffer("bar_h", torch.arange(1.0, BAR_HARMONICS + 1), persistent=False)

    @property
    def dtype(self) -> torch.dtype:
        return self.out_norm.weight.dtype

    def project_condition(self, cross: torch.Tensor, cross_mask: torch.Tensor,
                          key: torch.Tensor | None = None) -> torch.Tensor:
        """Text hidden states [B, L, C] -> [B, L, D], zeroed where ``cross_mask`` [B, L] is 0.

        A key-conditioned LM appends the embedding of ``key`` [B] (int, 0: none; None: no row
        has one) as token L: [B, L + 1, D]. Other LMs ignore ``key``.
        """
        if self.cond_proj is None:
            raise ValueError("this LM has no cross-attention (cond_dim 0): its condition is a prefix")
        if cross.dim() != 3 or cross.shape[-1] != self.cfg.cond_dim:
            raise ValueError(f"cross must be [B, L, {self.cfg.cond_dim}], got {tuple(cross.shape)}")
        if cross_mask.shape != cross.shape[:2]:
            raise ValueError(f"cross_mask must be {tuple(cross.shape[:2])}, got {tuple(cross_mask.shape)}")
        emb = self.cond_proj(cross.to(self.dtype))  # [B, L, D]
        emb = emb * cross_mask.to(emb.dtype)[..., None]
        if self.key_emb is None:
            return emb
        if key is None:
            key = torch.zeros(cross.shape[0], dtype=torch.long, device=cross.device)
        if key.shape != cross.shape[:1]:
            raise ValueError(f"key must be [{cross.shape[0]}] (one key class per row), "
                             f"got {tuple(key.shape)}")
        # (a value check would freeze into a traced ONNX graph: checked in eager mode only)
        if not torch.jit.is_tracing() and key.numel() \
                and not 0 <= int(key.min()) <= int(key.max()) <= self.cfg.key_classes:
            raise ValueError(f"key classes must lie in [0, {self.cfg.key_classes}], got {key.tolist()}")
        return torch.cat([emb, self.key_emb(key.long())[:, None].to(emb.dtype)], dim=1)

    def project_prefix(self, text: torch.Tensor | None, text_mask: torch.Tensor | None,
                       chroma: torch.Tensor | None) -> torch.Tensor:
        """Melody models' prefix [B, P, D] = cat[chroma_proj(chroma), prefix_text_proj(text) * mask].

        ``chroma`` [B, T_c, chroma_bins] (already padded / cut by the chroma conditioner),
        ``text`` [B, L, C] with ``text_mask`` [B, L]. Either may be None.
        """
        parts = []
        if chroma is not None:
            if self.chroma_proj is None:
                raise ValueError("this LM takes no chroma (chroma_bins 0)")
            parts.append(self.chroma_proj(chroma.to(self.dtype)))  # [B, T_c, D]
        if text is not None:
            if self.prefix_text_proj is None:
                raise ValueError("this LM takes no prepended text (prefix_text_dim 0)")
            emb = self.prefix_text_proj(text.to(self.dtype))  # [B, L, D]
            if text_mask is not None:
                emb = emb * text_mask.to(emb.dtype)[..., None]
            parts.append(emb)
        if not parts:
            raise ValueError("project_prefix needs text or chroma")
        return torch.cat(parts, dim=1)  # [B, P, D]

    def cross_kv(self, cond_emb: torch.Tensor) -> CrossKV:
        """Cross-attention keys/values of every layer for a projected condition [B, L, D]."""
        return self.transformer.cross_kv(cond_emb.to(self.dtype))

    def beat_embedding(self, beat: torch.Tensor, start: int | torch.Tensor, steps: int) -> torch.Tensor:
        """[B, S, D] embedding of the metrical position of steps ``start`` .. ``start + S - 1``.

        ``beat`` [B, 3]: (beats per frame, beats per bar, beat position of step 0) per row; a
        row with 0 beats per frame has no tempo (free time, or CFG's null condition): zeros.
        """
        if self.beat_proj is None:
            raise ValueError("this LM has no beat conditioning (beat_harmonics 0)")
        if beat.dim() != 2 or beat.shape[1] != 3:
            raise ValueError("beat must be [B, 3] (beats per frame, beats per bar, beat of step 0), "
                             f"got {tuple(beat.shape)}")
        beat = beat.float()
        pos = torch.arange(steps, device=beat.device, dtype=torch.float32) + start   # [S]
        beats = beat[:, 2:] + pos[None, :] * beat[:, :1]                              # [B, S]
        bars = beats / beat[:, 1:2].clamp(min=1.0)
        # fractional phases first: sin(2 pi h x) only needs x mod 1, and float32 keeps it exact
        angles = 2 * math.pi * torch.cat([(beats - beats.floor())[..., None] * self.beat_h.float(),
                                          (bars - bars.floor())[..., None] * self.bar_h.float()], dim=-1)
        feats = torch.cat([angles.sin(), angles.cos()], dim=-1)                       # [B, S, F]
        feats = feats * (beat[:, :1] > 0).to(feats.dtype)[..., None]
        return self.beat_proj(feats.to(self.dtype))

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """Sum of the K codebook embeddings: tokens [B, K, S] -> [B, S, D]."""
        if tokens.dim() != 3 or tokens.shape[1] != self.n_q:
            raise ValueError(f"tokens must be [B, {self.n_q}, S], got {tuple(tokens.shape)}")
        x = self.emb[0](tokens[:, 0])
        for k in range(1, self.n_q):
            x = x + self.emb[k](tokens[:, k])
        return x

    def forward(self, tokens: torch.Tensor, cross_kv: CrossKV | None = None,
                cache: KVCache | None = None, prefix: torch.Tensor | None = None,
                band: int | torch.Tensor | None = None, causal: bool | None = None,
                codebook: int | torch.Tensor | None = None,
                beat: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (float32) for ``tokens`` [B, K, S]: [B, K, S, card], or [B, S, card] for one
        ``codebook``.

        ``cache``: causal decoding after what it holds (advanced by P + S). ``prefix`` [B, P, D]:
        embeddings placed before the tokens (positions 0..P-1); their logits are dropped.
        ``band``: self-attention limited to |i - j| <= band. ``causal``: None = the config's.
        ``beat`` [B, 3]: the tempo of each row (see :meth:`beat_embedding`); None, or an LM
        without beat conditioning, means no tempo.
        """
        causal = self.cfg.causal if causal is None else causal
        x = self.embed(tokens)  # [B, S, D]
        steps = x.shape[1]
        if beat is not None and self.beat_proj is not None:
            x = x + self.beat_embedding(beat, cache.length if cache is not None else 0, steps)
        if prefix is not None:
            if prefix.dim() != 3 or prefix.shape[0] != x.shape[0] or prefix.shape[2] != x.shape[2]:
                raise ValueError(f"prefix must be [{x.shape[0]}, P, {x.shape[2]}], "
                                 f"got {tuple(prefix.shape)}")
            x = torch.cat([prefix.to(x.dtype), x], dim=1)  # [B, P + S, D]
        x = self.transformer(x, cross_kv, cache, causal=causal, band=band)
        x = self.out_norm(x[:, x.shape[1] - steps:])  # [B, S, D]
        if isinstance(codebook, torch.Tensor):   # a graph input (lm_full): gather that head only
            weight = torch.stack([head.weight for head in self.linears])  # [K, card, D]
            return F.linear(x, weight.index_select(0, codebook.reshape(1))[0]).float()
        if codebook is not None:
            if not 0 <= codebook < self.n_q:
                raise ValueError(f"codebook must be in [0, {self.n_q}), got {codebook!r}")
            return self.linears[codebook](x).float()  # [B, S, card]
        return torch.stack([head(x) for head in self.linears], dim=1).float()  # [B, K, S, card]
