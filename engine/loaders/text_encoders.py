"""A text encoder from a checkpoint's ``text_encoder`` entry (``{"kind": ..., "path": ...}``)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.conditioners.text import MiniLMTextEncoder, T5TextEncoder, debug_text_encoder

KINDS = ("minilm", "t5", "debug")


def build_text_encoder(spec: dict[str, Any], base_dir: Path | None = None) -> Any:
    """The encoder ``spec`` names; a relative ``path`` is read from ``base_dir`` (the
    checkpoint folder). ValueError for an unknown kind or a T5 entry without a path."""
    kind = spec.get("kind")
    if kind == "debug":
        return debug_text_encoder(seed=int(spec.get("seed", 0)), dim=int(spec["dim"]))
    if kind == "minilm":
        return MiniLMTextEncoder(_resolve(spec.get("path"), base_dir))
    if kind == "t5":
        path = _resolve(spec.get("path"), base_dir)
        if path is None:
            raise ValueError("a t5 text encoder entry needs a 'path' to a local T5 directory")
        return T5TextEncoder.from_dir(path)
    raise ValueError(f"text_encoder kind must be 'debug', 'minilm' or 't5', got {kind!r}")


def _resolve(path: str | None, base_dir: Path | None) -> Path | None:
    if path is None:
        return None
    p = Path(path)
    return p if p.is_absolute() or base_dir is None else base_dir / p
