"""``ModelParts``: what every loader hands over, and the one place a model is assembled from.

A loader (native folder, Hugging Face / audiocraft folder, ONNX bundle, the built-in debug
models) reads its format into these parts; ``engine/pretrained.py`` turns them into a
``MusicGen`` or ``MAGNeT``. So the models never import a loader, and a loader never builds a
model class.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

FAMILIES = ("musicgen", "magnet")


@dataclass
class ModelParts:
    """The pieces of one model.

    ``family``: ``"musicgen"`` or ``"magnet"``. ``codec``: an ``EncodecModel`` (or its stereo
    wrapper, or a bundle's ``OnnxCodec``). ``lm`` / ``ar_lm``: PyTorch LMs, or None when
    ``backend`` / ``ar_backend`` (a ``StepBackend`` of another runtime) decode instead.
    ``generation``: the checkpoint's ``set_generation_params`` defaults. ``magnet``: MAGNeT's
    checkpoint facts (``subcodes_context``, ``span_len``). ``ar_max_duration``: the AR LM's
    window in seconds, None for the model's default. ``text_encoder_spec``: the native
    ``text_encoder`` entry that rebuilds the text encoder (saving a model needs it), when known.
    """

    family: str
    name: str
    codec: Any
    text_encoder: Any
    max_duration: float
    lm: torch.nn.Module | None = None
    backend: Any = None
    generation: dict[str, Any] = field(default_factory=dict)
    ar_lm: torch.nn.Module | None = None
    ar_backend: Any = None
    ar_max_duration: float | None = None
    magnet: dict[str, Any] = field(default_factory=dict)
    text_encoder_spec: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"{self.name}: unknown model family {self.family!r}; expected one "
                             f"of {', '.join(FAMILIES)}")
