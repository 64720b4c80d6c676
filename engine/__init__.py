"""Barforge engine: codec, LM, decoding loops, checkpoint loaders and the audiocraft-style API.

``MusicGen``, ``MAGNeT`` and ``load_model`` are imported on first use, so ``import engine`` (and
the CLI's start-up) stays cheap and MAGNeT can be absent without breaking MusicGen.
"""
from __future__ import annotations

from typing import Any

__all__ = ["MusicGen", "MAGNeT", "load_model"]


def __getattr__(name: str) -> Any:
    if name == "MusicGen":
        from engine.models.musicgen import MusicGen
        return MusicGen
    if name == "MAGNeT":
        from engine.models.pretrained import magnet_class
        return magnet_class()
    if name == "load_model":
        from engine.models.pretrained import load_model
        return load_model
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
