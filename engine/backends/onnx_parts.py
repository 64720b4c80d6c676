"""A bundle's codec and text encoder as onnxruntime sessions behind the runtime's interfaces.

``OnnxCodec`` answers ``EncodecModel``'s ``encode`` / ``decode``; ``load_text_encoder`` puts the
``text_encoder`` graph behind the conditioners' tokenizer-side code, so tokenization and
null-text handling exist once.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.backends.onnx_runtime import as_input, open_graph


class OnnxCodec:
    """The codec_encoder / codec_decoder graphs behind ``EncodecModel``'s API."""

    def __init__(self, bundle_dir: Path, manifest: dict[str, Any], provider: str = "cpu",
                 threads: int | None = None) -> None:
        self.encoder = open_graph(bundle_dir, manifest, "codec_encoder", provider, threads)
        self.decoder = open_graph(bundle_dir, manifest, "codec_decoder", provider, threads)
        codec = manifest["codec"]
        self.sample_rate, self.frame_rate = int(manifest["sample_rate"]), float(manifest["frame_rate"])
        self.channels, self.hop_length = int(codec["channels"]), int(codec["hop_length"])
        self.num_codebooks, self.cardinality = int(manifest["num_codebooks"]), int(codec["card"])
        # bundles exported before conv padding was branch-free record the shortest input their
        # codec graphs run on; newer graphs run from one frame up and record none
        self.min_frames = int(codec.get("min_frames", 0))

    def encode(self, wav: torch.Tensor) -> torch.Tensor:
        """Waveform [B, C, N] -> codes [B, K, T] (int64)."""
        if wav.dim() != 3 or wav.shape[1] != self.channels:
            raise ValueError(f"wav must be [B, {self.channels}, N], got {list(wav.shape)}")
        if wav.shape[-1] < self.min_frames * self.hop_length:
            raise ValueError(f"the exported codec encoder needs at least "
                             f"{self.min_frames * self.hop_length} samples, got {wav.shape[-1]}")
        return torch.from_numpy(self.encoder.run(None, {"wav": as_input(wav, np.float32)})[0])

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes [B, K, T] -> waveform [B, C, T * hop]."""
        if codes.dim() != 3 or codes.shape[1] != self.num_codebooks:
            raise ValueError(f"codes must be [B, {self.num_codebooks}, T], got {list(codes.shape)}")
        if codes.shape[-1] < self.min_frames:
            raise ValueError(f"the exported codec decoder needs at least {self.min_frames} "
                             f"frames, got {codes.shape[-1]}")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.cardinality):
            raise ValueError(f"codes must lie in [0, {self.cardinality})")
        return torch.from_numpy(self.decoder.run(None, {"codes": as_input(codes, np.int64)})[0])


class _SessionAsEncoderModel(torch.nn.Module):
    """The text_encoder graph behind the ``model(input_ids=..., attention_mask=...)`` call the
    conditioners' tokenizer-side code makes (so tokenization and null-text handling exist once)."""

    def __init__(self, session: Any) -> None:
        super().__init__()
        self.session = session

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Any:
        from types import SimpleNamespace
        hidden = self.session.run(None, {"input_ids": as_input(input_ids, np.int64),
                                         "attention_mask": as_input(attention_mask, np.int64)})[0]
        return SimpleNamespace(last_hidden_state=torch.from_numpy(hidden))


def load_text_encoder(bundle_dir: Path, manifest: dict[str, Any], provider: str = "cpu",
                      threads: int | None = None) -> Any:
    """The bundle's text encoder: its tokenizer files + the text_encoder graph. A ``tokenizer.json``
    is read with Hugging Face ``tokenizers`` (fast to load); other tokenizer files (T5's
    SentencePiece model) with transformers' ``AutoTokenizer``."""
    from engine.conditioners.text import HFTokenizer, _HFTextEncoder

    info = manifest["text_encoder"]
    tok_dir = bundle_dir / info["tokenizer_dir"]
    max_length = info.get("max_length")
    if (tok_dir / "tokenizer.json").is_file() and _is_bert_tokenizer(tok_dir):
        from engine.conditioners.bert import BertTokenizer
        tokenizer: Any = BertTokenizer(tok_dir, max_length or 512)
    else:
        from transformers import AutoTokenizer
        tokenizer = HFTokenizer(AutoTokenizer.from_pretrained(str(tok_dir)), max_length)
    session = open_graph(bundle_dir, manifest, "text_encoder", provider, threads)
    return _HFTextEncoder(_SessionAsEncoderModel(session), tokenizer, dim=int(info["dim"]),
                          max_length=max_length)


def _is_bert_tokenizer(tok_dir: Path) -> bool:
    config = tok_dir / "tokenizer_config.json"
    return config.is_file() and "Bert" in str(json.loads(config.read_text()).get("tokenizer_class"))
