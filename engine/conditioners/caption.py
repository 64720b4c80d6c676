"""Captions in the format MusicGen was trained on: a description plus metadata pairs.

Plain string work (no torch), so the CLI can check a prompt before any model loads.
"""
from __future__ import annotations

import re

from engine.tempo import BPM_RANGE


def describe(prompt: str, bpm: float | None = None, key: str | None = None) -> str:
    """A caption in audiocraft's training format (data/music_dataset.py,
    ``augment_music_info_description``): metadata pairs ``"bpm: 120.0"``, ``"key: c minor"``
    (bpm as a float, key lower-cased) joined to the description with ``". "``.
    """
    if not isinstance(prompt, str):
        raise ValueError(f"prompt must be a string, got {prompt!r}")
    pairs = []
    if bpm is not None:
        if isinstance(bpm, bool) or not isinstance(bpm, (int, float)) or not 0 < bpm < 1000:
            raise ValueError(f"bpm must be a number in (0, 1000), got {bpm!r}")
        pairs.append(f"bpm: {float(bpm)}")
    if key is not None:
        if not isinstance(key, str) or not key.strip() or "," in key:
            raise ValueError(f"key must be one key name such as 'C minor', got {key!r}")
        pairs.append(f"key: {key.strip().lower()}")
    text = prompt.strip().rstrip(".")
    if not pairs:
        return prompt.strip()
    return ". ".join(([text] if text else []) + [". ".join(pairs)])


_BPM_PAIR = re.compile(r"\bbpm:\s*([0-9]+(?:\.[0-9]*)?)", re.IGNORECASE)


def caption_bpm(caption: str | None) -> float | None:
    """The tempo a caption states in audiocraft's ``"bpm: 120.0"`` pair, or None (also when it
    lies outside ``engine.tempo.BPM_RANGE``: such text is a description, not a tempo)."""
    match = _BPM_PAIR.search(caption or "")
    bpm = float(match.group(1)) if match else None
    low, high = BPM_RANGE
    return bpm if bpm is not None and low <= bpm <= high else None
