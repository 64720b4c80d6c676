"""The melody (MusicGen-Melody) prefill graph: chroma and text prepended, then the first tokens.

A melody LM has no cross-attention: its condition is ``cat[chroma_proj(chroma),
prefix_text_proj(text) * mask]`` placed before the tokens (engine/models/lm.py
``project_prefix``). ``lm_prefill`` of a melody bundle therefore takes the raw one-hot chroma
and the text encoder's hidden states, projects them inside the graph and runs the transformer
over prefix + tokens, writing the P + S positions' keys/values into the shared KV buffers
(export/shared_kv.py), so the ordinary ``lm_step`` graph (export/graphs.py) continues after it
with ``past_sequence_length`` = P + S.

Shape letters: B batch, K codebooks, S steps, T_c chroma frames, L text length, C text width,
P = T_c + L prefix length.
"""
from __future__ import annotations

import torch
from torch import nn

from engine.models.lm import LMModel
from export import graphs as G
from export.manifest import GraphSpec, IOSpec
from export.shared_kv import SharedBufferKVCache

# example / validation sizes of the axes only this graph has
EXPORT_SIZES = {"chroma_seq": 7}
CHROMA_SEQ_SIZES = (1, 9, 17)


def melody_prefill_spec(lm: LMModel) -> GraphSpec:
    """lm_prefill of a melody LM: input_ids [B, K, S], chroma [B, T_c, bins], text hidden
    states [B, L, C] and mask [B, L], the empty KV buffers [B, H, max_seq, Dh] -> logits
    [B, K, S, card] + the buffers holding the P + S steps' keys/values (bind each present to
    its past's buffer, as for lm_step)."""
    cfg = lm.cfg
    return G.lm_step_spec(
        lm, [IOSpec("input_ids", G.I64, ("batch", cfg.n_q, "seq")),
             IOSpec("chroma", G.F32, ("batch", "chroma_seq", cfg.chroma_bins)),
             IOSpec("encoder_hidden_states", G.F32, ("batch", "text_seq", cfg.prefix_text_dim)),
             IOSpec("encoder_attention_mask", G.I64, ("batch", "text_seq"))],
        [], name="lm_prefill", past_length=False)


class MelodyPrefillGraph(nn.Module):
    """First causal call of a melody LM (see the module docstring)."""

    def __init__(self, lm: LMModel) -> None:
        super().__init__()
        self.lm = lm

    def forward(self, tokens: torch.Tensor, chroma: torch.Tensor, text: torch.Tensor,
                text_mask: torch.Tensor, *buffers: torch.Tensor) -> tuple[torch.Tensor, ...]:
        prefix = self.lm.project_prefix(text, text_mask, chroma)        # [B, P, D]
        cache = SharedBufferKVCache(G._pairs(buffers), torch.zeros((), dtype=torch.int64))
        logits = self.lm(tokens, None, cache=cache, prefix=prefix, causal=True)
        return (logits, *G._flat(cache.presents))


def check_melody_exportable(lm: LMModel) -> None:
    """A melody LM exports when it prepends both chroma and text (MusicGen-Melody's layout)."""
    if lm.chroma_proj is None or lm.prefix_text_proj is None or lm.cond_proj is not None:
        raise ValueError("cannot export this prefix LM: the melody bundle graphs need chroma and "
                         "text both prepended and no cross-attention (MusicGen-Melody)")
    if not lm.cfg.causal:
        raise ValueError("cannot export a non-causal melody LM: melody bundles are AR only")
