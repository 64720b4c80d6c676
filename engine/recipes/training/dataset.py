"""The synth corpus as training batches: WAV crops for the codec; pre-encoded codes with their
captions' text-encoder states for the LMs.

Sampling draws from torch's global RNG, which ``run_training`` reseeds every step, so a batch
is a function of (seed, step, rank). Loops are seamless (rendered as the second pass of two),
so crops and segments wrap around the loop end; LM segments start on a bar line.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from tqdm import tqdm

from engine.conditioners.key import key_index

SPLITS = ("train", "valid", "all")


def read_index(corpus: str | Path, split: str = "train") -> list[dict]:
    """The sidecars of ``split`` ("train", "valid" or "all") from ``index.jsonl``."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    index = Path(corpus) / "index.jsonl"
    if not index.is_file():
        raise FileNotFoundError(f"{corpus} is not a synth corpus: index.jsonl missing "
                                "(make one with `barforge data synth --out DIR`)")
    items = [json.loads(line) for line in index.read_text().splitlines() if line.strip()]
    items = [it for it in items if split == "all" or it["split"] == split]
    if not items:
        raise ValueError(f"{corpus}: no items in split {split!r}")
    return items


def load_wav(corpus: str | Path, item: dict, sample_rate: int) -> np.ndarray:
    """One item's mono float32 audio; its sample rate must be ``sample_rate``."""
    wav, sr = sf.read(Path(corpus) / item["audio"], dtype="float32", always_2d=True)
    if sr != sample_rate:
        raise ValueError(f"{item['audio']}: {sr} Hz, the codec runs at {sample_rate} Hz")
    return wav.mean(axis=1)


def tile(x: np.ndarray | torch.Tensor, start: int, length: int):
    """``length`` entries of the periodic extension of ``x`` (last axis) from ``start``."""
    n = x.shape[-1]
    idx = (np.arange(start, start + length) % n)
    return x[..., idx]


class AudioCrops:
    """Random ``crop`` -sample crops of the corpus audio (kept in memory as int16)."""

    def __init__(self, corpus: str | Path, sample_rate: int, crop: int, split: str = "train"):
        if crop < 1:
            raise ValueError(f"crop must be >= 1 sample, got {crop}")
        self.items = read_index(corpus, split)
        self.crop = crop
        self.audio = [np.round(np.clip(load_wav(corpus, it, sample_rate), -1, 1) * 32767).astype(np.int16)
                      for it in self.items]
        self.seconds = sum(len(a) for a in self.audio) / sample_rate

    def sample(self, batch: int) -> torch.Tensor:
        """A batch [B, 1, crop] of float32 crops (item and offset drawn from torch's RNG)."""
        which = torch.randint(len(self.audio), (batch,)).tolist()
        out = np.empty((batch, 1, self.crop), dtype=np.float32)
        for b, i in enumerate(which):
            start = int(torch.randint(len(self.audio[i]), ()).item())
            out[b, 0] = tile(self.audio[i], start, self.crop) / 32768.0
        return torch.from_numpy(out)


def text_variants(item: dict) -> list[str]:
    """The captions an item trains with: the full caption, the key also in the text, bpm only,
    and the bare description (so prompts without metadata still work)."""
    from engine.conditioners.caption import describe

    desc, bpm, key = item["description"], item["bpm"], item["key"]
    return [describe(desc, bpm, key), describe(f"{desc}, {key}", bpm, key),
            describe(desc, bpm), describe(desc)]


@torch.inference_mode()
def encode_corpus(corpus: str | Path, codec, text_encoder, out_path: str | Path, split: str = "train",
                  device: str | torch.device = "cpu", progress: bool = True, context_s: float = 1.0) -> Path:
    """Encode one period of every loop of ``split`` with ``codec`` and its caption variants
    with ``text_encoder``.

    Each loop is encoded once, with ``context_s`` of its own wrap-around on both sides so the
    codec's receptive field sees the loop as the seamless cycle it is; :class:`CodeSegments`
    tiles the period. Where a loop is not a whole number of frames the tiled seam is off by
    under one frame (the period is rounded to whole frames).
    """
    items = read_index(corpus, split)
    codec = codec.to(device).eval()
    hop, sr = codec.hop_length, codec.sample_rate
    context = max(1, round(context_s * sr / hop)) * hop
    codes, bar_frames, texts = [], [], []
    for item in tqdm(items, desc="encode", disable=not progress):
        wav = load_wav(corpus, item, sr)
        n = len(wav)
        x = torch.from_numpy(tile(wav, -context, n + 2 * context))[None, None].to(device)
        period = max(1, round(n / hop))
        c = codec.encode(x)[0]                                              # [K, T]
        codes.append(c[:, context // hop:context // hop + period].to(torch.int16).cpu())
        bar_frames.append(n / hop / item["bars"])
        texts.append(text_variants(item))
    hidden, masks = [], []
    for group in tqdm(texts, desc="text", disable=not progress):
        h, m = text_encoder.encode(group)                                   # [V, L, C], [V, L]
        hidden.append(h.half().cpu())
        masks.append(m.cpu())
    max_len = max(h.shape[1] for h in hidden)
    pad = lambda t: torch.nn.functional.pad(t, (0, 0, 0, max_len - t.shape[1]))  # noqa: E731
    payload = {"codes": codes, "bar_frames": torch.tensor(bar_frames, dtype=torch.float64),
               "bars": torch.tensor([it["bars"] for it in items]),
               "beats_per_bar": torch.tensor([it["beats_per_bar"] for it in items]),
               "keys": torch.tensor([key_index(*it["key"].split()) for it in items]),
               "text_hidden": torch.stack([pad(h) for h in hidden]),          # [N, V, L, C]
               "text_mask": torch.stack([torch.nn.functional.pad(m, (0, max_len - m.shape[1])) for m in masks]),
               "ids": [it["id"] for it in items], "card": codec.cardinality}
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, out_path)
    return out_path


class CodeSegments:
    """Bar-aligned segments of pre-encoded loop periods (tiled) with one random caption variant each."""

    def __init__(self, cache: str | Path, segment_frames: int):
        if segment_frames < 1:
            raise ValueError(f"segment_frames must be >= 1, got {segment_frames}")
        data = torch.load(cache, weights_only=True)
        self.codes = data["codes"]
        self.bar_frames = data["bar_frames"].tolist()
        self.bars = data["bars"].tolist()
        self.beats_per_bar = data["beats_per_bar"].tolist()
        self.keys = data["keys"]
        self.hidden = data["text_hidden"]
        self.mask = data["text_mask"]
        self.segment = segment_frames
        self.card = int(data["card"])

    def __len__(self) -> int:
        return len(self.codes)

    @property
    def cond_dim(self) -> int:
        return self.hidden.shape[-1]

    def sample(self, batch: int) -> tuple[torch.Tensor, ...]:
        """(codes [B, K, T] int64, text hidden [B, L, C] float32, text mask [B, L], beat [B, 3]
        (beats per frame, beats per bar, 0: every segment starts on a downbeat) float32, key [B]
        int64 (engine/conditioners/key.py))."""
        which = torch.randint(len(self.codes), (batch,)).tolist()
        variant = torch.randint(self.hidden.shape[1], (batch,)).tolist()
        codes = []
        for i in which:
            bar = int(torch.randint(self.bars[i], ()).item())
            start = round(bar * self.bar_frames[i])
            codes.append(tile(self.codes[i], start, self.segment).long())
        hidden = torch.stack([self.hidden[i, v] for i, v in zip(which, variant)]).float()
        mask = torch.stack([self.mask[i, v] for i, v in zip(which, variant)])
        beat = torch.tensor([[self.beats_per_bar[i] / self.bar_frames[i], self.beats_per_bar[i], 0.0]
                             for i in which], dtype=torch.float32)
        return torch.stack(codes), hidden, mask, beat, self.keys[which]
