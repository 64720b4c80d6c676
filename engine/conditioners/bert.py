"""A BERT encoder in plain PyTorch, read from a Hugging Face BERT folder, and its fast tokenizer.

Why not transformers' ``BertModel``: importing it pulls in transformers' whole modelling stack
(torch.distributed.tensor, dynamo: 1.5-3 s on 2 cores), twice the time the default model takes
to generate a 4-bar loop. This module computes the same function (tests/test_text_encoders.py
checks it against ``transformers.BertModel`` and its tokenizer), loads the same safetensors
weights by the same names, and tokenizes with Hugging Face ``tokenizers`` from the folder's
``tokenizer.json``.

Shape letters: B batch, L tokens, C width, H heads.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn
from torch.nn import functional as F

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


@dataclass(frozen=True)
class BertShape:
    """The hyperparameters of a BERT encoder (names as in a HF ``config.json``)."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0

    @classmethod
    def from_config_file(cls, path: Path) -> "BertShape":
        """From a HF BERT ``config.json``; only absolute positions and exact GELU are supported."""
        config = json.loads(path.read_text())
        if config.get("model_type") != "bert":
            raise ValueError(f"{path}: model_type must be 'bert', got {config.get('model_type')!r}")
        if config.get("hidden_act", "gelu") != "gelu" or \
                config.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"{path}: expected hidden_act 'gelu' and absolute position embeddings")
        return cls(**{k: config[k] for k in cls.__dataclass_fields__ if k in config})


class _Layer(nn.Module):
    """One post-norm encoder layer; parameter names follow transformers' ``BertLayer``."""

    def __init__(self, s: BertShape) -> None:
        super().__init__()
        c, self.heads, eps = s.hidden_size, s.num_attention_heads, s.layer_norm_eps
        self.attention = nn.Module()
        self.attention.self = nn.Module()
        self.attention.self.query = nn.Linear(c, c)
        self.attention.self.key = nn.Linear(c, c)
        self.attention.self.value = nn.Linear(c, c)
        self.attention.output = nn.Module()
        self.attention.output.dense = nn.Linear(c, c)
        self.attention.output.LayerNorm = nn.LayerNorm(c, eps=eps)
        self.intermediate = nn.Module()
        self.intermediate.dense = nn.Linear(c, s.intermediate_size)
        self.output = nn.Module()
        self.output.dense = nn.Linear(s.intermediate_size, c)
        self.output.LayerNorm = nn.LayerNorm(c, eps=eps)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        att = self.attention
        b, n, c = x.shape

        def heads(linear: nn.Linear) -> torch.Tensor:
            return linear(x).view(b, n, self.heads, c // self.heads).transpose(1, 2)  # [B, H, L, C/H]

        a = F.scaled_dot_product_attention(heads(att.self.query), heads(att.self.key),
                                           heads(att.self.value), attn_mask=keep)
        a = a.transpose(1, 2).reshape(b, n, c)                                     # [B, L, C]
        x = att.output.LayerNorm(x + att.output.dense(a))
        h = F.gelu(self.intermediate.dense(x))
        return self.output.LayerNorm(x + self.output.dense(h))


class BertEncoder(nn.Module):
    """BERT embeddings + encoder layers: ``model(input_ids=, attention_mask=).last_hidden_state``.

    The call matches ``transformers.BertModel`` (without its pooler), so the ONNX exporter and
    the text encoders treat both alike; ``config`` carries ``vocab_size`` for the exporter.
    """

    def __init__(self, shape: BertShape) -> None:
        super().__init__()
        self.config = shape
        c = shape.hidden_size
        self.embeddings = nn.Module()
        self.embeddings.word_embeddings = nn.Embedding(shape.vocab_size, c,
                                                       padding_idx=shape.pad_token_id)
        self.embeddings.position_embeddings = nn.Embedding(shape.max_position_embeddings, c)
        self.embeddings.token_type_embeddings = nn.Embedding(shape.type_vocab_size, c)
        self.embeddings.LayerNorm = nn.LayerNorm(c, eps=shape.layer_norm_eps)
        self.encoder = nn.Module()
        self.encoder.layer = nn.ModuleList(_Layer(shape) for _ in range(shape.num_hidden_layers))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> SimpleNamespace:
        e = self.embeddings
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = e.word_embeddings(input_ids) + e.position_embeddings(positions) \
            + e.token_type_embeddings.weight[0]                               # [B, L, C]
        x = e.LayerNorm(x)
        keep = attention_mask.bool()[:, None, None, :]                        # [B, 1, 1, L]
        for layer in self.encoder.layer:
            x = layer(x, keep)
        return SimpleNamespace(last_hidden_state=x)

    @classmethod
    def from_dir(cls, path: Path) -> "BertEncoder":
        """The encoder of a HF BERT folder (``config.json`` + ``model.safetensors``)."""
        from safetensors.torch import load_file

        from engine.modules.skip_init import skip_random_init

        with skip_random_init():   # every weight is loaded strictly below
            model = cls(BertShape.from_config_file(path / "config.json"))
        state = {k.removeprefix("bert."): v for k, v in load_file(path / "model.safetensors").items()
                 if not k.startswith(("pooler.", "cls."))}
        state.pop("embeddings.position_ids", None)
        state.pop("embeddings.token_type_ids", None)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as err:
            raise ValueError(f"{path}: weights do not fit its config.json ({err})") from err
        return model.eval()

    @classmethod
    def random(cls, shape: BertShape, seed: int) -> "BertEncoder":
        """Seeded BERT-style initialisation (normal 0.02, zero biases, unit norms)."""
        model = cls(shape)
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, (nn.Linear, nn.Embedding)):
                    module.weight.copy_(torch.randn(module.weight.shape, generator=gen) * 0.02)
                if isinstance(module, nn.Linear):
                    module.bias.zero_()
            model.embeddings.word_embeddings.weight[shape.pad_token_id] = 0
        return model.eval()


class BertTokenizer:
    """WordPiece tokenization from a folder's ``tokenizer.json`` (Hugging Face ``tokenizers``):
    right padding to the longest text, truncation to ``max_length`` tokens."""

    def __init__(self, path: Path, max_length: int) -> None:
        from tokenizers import Tokenizer

        if not (path / "tokenizer.json").is_file():
            raise ValueError(f"{path} has no tokenizer.json")
        self.path = path
        self.tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        pad_id = self.tokenizer.token_to_id("[PAD]")
        self.tokenizer.enable_padding(pad_id=0 if pad_id is None else pad_id, pad_token="[PAD]")
        self.tokenizer.enable_truncation(max_length)
        self.vocab_size = self.tokenizer.get_vocab_size()

    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """input_ids [B, L] and attention_mask [B, L], int64."""
        batch = self.tokenizer.encode_batch(texts)
        ids = torch.tensor([e.ids for e in batch], dtype=torch.int64)
        mask = torch.tensor([e.attention_mask for e in batch], dtype=torch.int64)
        return ids, mask

    def save_pretrained(self, out_dir: str) -> None:
        """Copy the tokenizer files (what transformers' ``AutoTokenizer`` reads back)."""
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        for name in TOKENIZER_FILES:
            if (self.path / name).is_file():
                shutil.copy2(self.path / name, Path(out_dir) / name)
