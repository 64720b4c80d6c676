"""The public Python API: ``MusicGen``, ``MAGNeT`` and ``load_model``, audiocraft-style.

``MusicGen`` and ``MAGNeT`` here are the runtime classes of engine/models/ plus the one thing
those must not know: how a checkpoint is found and loaded (``get_pretrained``). Models never
import loaders; this module sits above both and asks engine/pretrained.py to assemble a
loader's parts into these classes, so every model the API returns is one of them (and still an
instance of the runtime class it extends).
"""
from __future__ import annotations

import os
from typing import Any

import torch

from engine.loaders.debug_parts import DEBUG_SEED, debug_magnet_parts, debug_parts
from engine.models import magnet as magnet_runtime
from engine.models import musicgen as musicgen_runtime
from engine.pretrained import assemble, load_parts


class MusicGen(musicgen_runtime.MusicGen):
    """Text (and melody / audio prompt) to music with the AR delay-pattern decoder
    (engine/models/musicgen.py), loadable by name."""

    @staticmethod
    def get_pretrained(name_or_path: str, device: str | torch.device | None = None,
                       provider: str | None = None) -> "MusicGen":
        """``debug``, ``default``, or a local checkpoint / ONNX bundle directory
        (engine/pretrained.py), moved to ``device`` when given; ``provider`` picks the
        onnxruntime execution provider of a bundle."""
        model = load_model(name_or_path, provider=provider)
        if not isinstance(model, MusicGen):
            raise ValueError(f"{name_or_path} is a {type(model).__name__} checkpoint, not MusicGen")
        return model.to(device) if device is not None else model


class MAGNeT(magnet_runtime.MAGNeT, MusicGen):
    """Text to music with MAGNeT's masked decoding, plus hybrid and AR modes over an AR LM
    (engine/models/magnet.py), loadable by name."""

    @staticmethod
    def get_pretrained(name_or_path: str, ar_model: "str | musicgen_runtime.MusicGen | None" = None,
                       provider: str | None = None) -> "MAGNeT":
        """``debug`` (tiny random MAGNeT with an AR LM) or a local checkpoint directory
        (audiocraft ``state_dict.bin`` + xp.cfg, the native format, or an ONNX bundle).
        ``ar_model``: a MusicGen (or its name / path) whose LM serves the hybrid and AR modes.
        ``provider``: the onnxruntime execution provider when ``name_or_path`` is a bundle."""
        if name_or_path == "debug":
            model = debug_magnet()
        else:
            model = load_model(name_or_path, provider=provider)
            if not isinstance(model, MAGNeT):
                raise ValueError(f"{name_or_path} is a {type(model).__name__} checkpoint, "
                                 "not MAGNeT")
        if ar_model is not None:
            ar = MusicGen.get_pretrained(ar_model) if isinstance(ar_model, str) else ar_model
            if isinstance(ar, magnet_runtime.MAGNeT) or not isinstance(ar, musicgen_runtime.MusicGen):
                raise ValueError(f"ar_model must be a MusicGen model or its name/path, "
                                 f"got {type(ar).__name__}")
            if ar.is_melody:
                raise ValueError("ar_model must be a text-conditioned MusicGen, not a melody model")
            model._set_ar(ar.lm, ar.backend, ar.max_duration, model.compression_model, model.lm)
        return model


def load_model(name_or_path: str | os.PathLike, provider: str | None = None) -> Any:
    """A ``MusicGen`` or ``MAGNeT`` by the checkpoint's family (names and folders:
    engine/pretrained.py). ValueError for an unknown name or a folder of no known format,
    FileNotFoundError for missing files inside a checkpoint.

    ``provider``: the onnxruntime execution provider of an ONNX bundle (``cpu``, ``cuda`` or
    onnxruntime's names; default CUDA when it works, else CPU). ValueError when it is given for
    a model that is not a bundle (PyTorch models run on torch), or names an unknown or unusable
    provider.
    """
    return assemble(load_parts(name_or_path, provider), MusicGen, MAGNeT)


def build_debug_model() -> MusicGen:
    """The tiny random ``debug`` MusicGen (the same weights on every call)."""
    return assemble(debug_parts(), MusicGen, MAGNeT)


def debug_magnet(seed: int = DEBUG_SEED) -> MAGNeT:
    """A tiny random MAGNeT (non-causal LM, 10-s segment) shipping a tiny AR LM: every mode
    runs in seconds. Seeded, so two calls give the same weights."""
    model = assemble(debug_magnet_parts(seed), MusicGen, MAGNeT)
    assert isinstance(model, MAGNeT)   # the parts' family is magnet
    return model
