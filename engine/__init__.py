"""Barforge engine: codec, LM, decoding loops, checkpoint loaders and the audiocraft-style API.

``MusicGen``, ``MAGNeT`` and ``load_model`` (engine/api.py) are imported on first use, so
``import engine`` (and the CLI's start-up) stays cheap.
"""
from __future__ import annotations

from typing import Any

__all__ = ["MusicGen", "MAGNeT", "load_model"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from engine import api
        return getattr(api, name)
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
