"""Torch wrappers, one per exported graph, and the I/O spec of each (names, types, axes).

Every wrapper takes its inputs positionally in the spec's order and returns its outputs in the
spec's order, so ``torch.onnx.export(wrapper, args, input_names=..., output_names=...,
dynamic_axes=spec.dynamic_axes())`` names everything as the manifest says. Cache tensors use
Optimum's names: ``past_key_values.{i}.decoder.{key,value}`` in, ``present.{i}.decoder.{key,value}``
out (one buffer ``[batch, heads, max_seq, head_dim]`` bound as both, export/shared_kv.py),
cross-attention ``past_key_values.{i}.encoder.{key,value}`` in (``present.{i}.encoder.*`` out
of ``lm_cross``) ``[batch, heads, cond_seq, head_dim]``.

Shape letters: B batch, C channels, N samples, K codebooks, T frames, S steps, L condition
length, P prefix length, D dim, H heads, Dh head dim.
"""
from __future__ import annotations

import torch
from torch import nn

from engine.models.lm import LMModel
from export.manifest import GraphSpec, IOSpec
from export.shared_kv import SharedBufferKVCache

F32, I64 = "float32", "int64"


# ---------------------------------------------------------------- specs


def _kv(prefix: str, layers: int, heads: int, seq: str, head_dim: int, part: str) -> list[IOSpec]:
    return [IOSpec(f"{prefix}.{i}.{part}.{kv}", F32, ("batch", heads, seq, head_dim))
            for i in range(layers) for kv in ("key", "value")]


def codec_specs(channels: int, n_q: int) -> list[GraphSpec]:
    """codec_encoder: wav [B, C, N] -> codes [B, K, T]; codec_decoder the reverse (N = T*hop)."""
    wav = IOSpec("wav", F32, ("batch", channels, "samples"))
    codes = IOSpec("codes", I64, ("batch", n_q, "frames"))
    return [GraphSpec("codec_encoder", [wav], [codes], role="codec"),
            GraphSpec("codec_decoder", [codes], [wav], role="codec")]


def lm_specs(lm: LMModel, magnet: bool, ar: bool) -> list[GraphSpec]:
    """The LM graphs: lm_cross (if it cross-attends), lm_step (AR: prompt and steps on the
    shared KV buffers), lm_full (MAGNeT). A melody LM's lm_prefill: export/melody.py."""
    cfg = lm.cfg
    L, H, Dh, K = cfg.num_layers, cfg.num_heads, cfg.head_dim, cfg.n_q
    has_cross = lm.cond_proj is not None
    cross_in = _kv("past_key_values", L, H, "cond_seq", Dh, "encoder") if has_cross else []
    ids = IOSpec("input_ids", I64, ("batch", K, "seq"))
    # beat-conditioned LMs: (beats per frame, beats per bar, beat of step 0) per row
    beat = [IOSpec("beat", F32, ("batch", 3))] if lm.beat_proj is not None else []
    # key-conditioned LMs: one key class per row, appended as cross token text_seq (+1)
    key = [IOSpec("key", I64, ("batch",))] if lm.key_emb is not None else []
    text_seq = "text_seq" if key else "cond_seq"
    specs = []
    if has_cross:
        specs.append(GraphSpec(
            "lm_cross", [IOSpec("encoder_hidden_states", F32, ("batch", text_seq, cfg.cond_dim)),
                         IOSpec("encoder_attention_mask", I64, ("batch", text_seq)), *key],
            _kv("present", L, H, "cond_seq", Dh, "encoder"), role="lm"))
    if ar:
        specs.append(lm_step_spec(lm, [ids, *beat], cross_in))
    if magnet:
        specs.append(GraphSpec(
            "lm_full", [ids, IOSpec("attn_band", I64, ()), IOSpec("codebook", I64, ()), *beat,
                        *cross_in],
            [IOSpec("logits", F32, ("batch", "seq", cfg.card))], role="magnet"))
    return specs


def lm_step_spec(lm: LMModel, first: list[IOSpec], cross_in: list[IOSpec],
                 name: str = "lm_step", past_length: bool = True) -> GraphSpec:
    """A causal graph on the shared KV buffers (export/shared_kv.py): ``first`` inputs, then
    ``past_sequence_length`` [] (int64, the valid steps before these; absent where the graph
    always starts from an empty cache), the buffers ``past_key_values.{i}.decoder.*``
    [B, H, max_seq, Dh] and ``cross_in`` -> logits [B, K, seq, card] and the same buffers with
    the new steps written as ``present.{i}.decoder.*`` (bind each to its past's buffer)."""
    cfg = lm.cfg
    L, H, Dh = cfg.num_layers, cfg.num_heads, cfg.head_dim
    past_len = [IOSpec("past_sequence_length", I64, ())] if past_length else []
    return GraphSpec(
        name, [*first, *past_len, *_kv("past_key_values", L, H, "max_seq", Dh, "decoder"),
               *cross_in],
        [IOSpec("logits", F32, ("batch", cfg.n_q, "seq", cfg.card)),
         *_kv("present", L, H, "max_seq", Dh, "decoder")], role="ar")


def takes_prefix(lm: LMModel) -> bool:
    """Whether the LM takes prepended condition embeddings (melody models: not exportable)."""
    return lm.prefix_text_proj is not None or lm.chroma_proj is not None


# ---------------------------------------------------------------- wrappers


class CodecEncoderGraph(nn.Module):
    def __init__(self, codec: nn.Module) -> None:
        super().__init__()
        self.codec = codec

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        return self.codec.encode(wav)  # [B, C, N] -> [B, K, T]


class CodecDecoderGraph(nn.Module):
    def __init__(self, codec: nn.Module) -> None:
        super().__init__()
        self.codec = codec

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        return self.codec.decode(codes)  # [B, K, T] -> [B, C, T * hop]


def _pairs(flat: tuple[torch.Tensor, ...]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]


def _flat(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> list[torch.Tensor]:
    return [t for kv in pairs for t in kv]


def _split_beat(lm: LMModel, rest: tuple[torch.Tensor, ...]
                ) -> tuple[torch.Tensor | None, tuple[torch.Tensor, ...]]:
    """(beat, the remaining inputs): a beat-conditioned LM's graphs take ``beat`` first."""
    return (rest[0], rest[1:]) if lm.beat_proj is not None else (None, rest)


class LMCrossGraph(nn.Module):
    """Text hidden states [B, L, C] + mask [B, L] -> every layer's cross keys/values [B, H, L, Dh]."""

    def __init__(self, lm: LMModel) -> None:
        super().__init__()
        self.lm = lm

    def forward(self, cross: torch.Tensor, cross_mask: torch.Tensor,
                key: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        return tuple(_flat(self.lm.cross_kv(self.lm.project_condition(cross, cross_mask, key))))


class LMStepGraph(nn.Module):
    """Causal steps on the shared KV buffers: tokens [B, K, S] at positions n .. n + S - 1
    (n = past_sequence_length) + every layer's buffers [B, H, M, Dh] -> logits [B, K, S, card]
    + the buffers with the S new keys/values written at n (``lm_step_spec``)."""

    def __init__(self, lm: LMModel) -> None:
        super().__init__()
        self.lm, self.n_past = lm, 2 * lm.cfg.num_layers

    def forward(self, tokens: torch.Tensor, *rest: torch.Tensor) -> tuple[torch.Tensor, ...]:
        beat, rest = _split_beat(self.lm, rest)
        past_length, rest = rest[0], rest[1:]
        cache = SharedBufferKVCache(_pairs(rest[:self.n_past]), past_length)
        cross = _pairs(rest[self.n_past:]) or None
        logits = self.lm(tokens, cross, cache=cache, causal=True, beat=beat)
        return (logits, *_flat(cache.presents))


class LMFullGraph(nn.Module):
    """Non-causal (MAGNeT) pass: tokens [B, K, T], band (|i - j| <= band; >= T - 1 attends
    everywhere) and codebook -> that codebook's logits [B, T, card]. Self-attention is
    computed only inside the band (key windows gathered per block of queries), so a stage >= 1
    pass does not pay for the T x T product."""

    def __init__(self, lm: LMModel) -> None:
        super().__init__()
        self.lm = lm

    def forward(self, tokens: torch.Tensor, band: torch.Tensor, codebook: torch.Tensor,
                *rest: torch.Tensor) -> torch.Tensor:
        beat, cross_flat = _split_beat(self.lm, rest)
        # tensors keep the band and the codebook inputs of the graph (Python ints would be
        # constants); a tensor band takes the gathered-window attention, whose cost grows
        # with the band (engine/modules/banded_attention.py)
        return self.lm(tokens, _pairs(cross_flat) or None, band=band, causal=False, beat=beat,
                       codebook=codebook)  # [B, T, card]


class TextEncoderGraph(nn.Module):
    """Token ids [B, L] + attention mask [B, L] -> last hidden states [B, L, C]."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
