"""From a model name or folder to a model: resolve it to a loader's ``ModelParts``, then
assemble the parts into the classes the caller names.

- ``"debug"``: a tiny random model built in code with a fixed seed; ``"debug-magnet"``: its
  MAGNeT sibling (every mode: ar, magnet, hybrid); ``"debug-melody"``: its MusicGen-Melody
  sibling (chroma conditioning). engine/loaders/debug_parts.py.
- ``"default"``: the shipped model in ``presets/default_model/`` (native format); an error when
  its files are missing.
- a folder: native (``barforge.json``), Hugging Face ``Musicgen(Melody)ForConditionalGeneration``
  (``config.json``), audiocraft (``state_dict.bin`` + ``compression_state_dict.bin``) or an ONNX
  bundle (``manifest.json``).

This module sits above engine/models/ and engine/loaders/ and is the only one importing both;
engine/api.py gives it the public classes to build (the API's ``MusicGen`` and ``MAGNeT``).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

from engine.loaders.debug_parts import debug_magnet_parts, debug_melody_parts, debug_parts
from engine.loaders.native_format import is_native_dir, native_parts
from engine.loaders.parts import ModelParts
from engine.models.magnet import MAGNeT
from engine.models.musicgen import MusicGen

AnyMusicGen = TypeVar("AnyMusicGen", bound=MusicGen)
AnyMAGNeT = TypeVar("AnyMAGNeT", bound=MAGNeT)

DEFAULT_MODEL_DIR = Path(__file__).resolve().parents[1] / "presets" / "default_model"
EXPECTED = ("'debug', 'debug-magnet', 'default', 'debug-melody', or a directory holding "
            "barforge.json (barforge native), "
            "config.json (Hugging Face MusicGen), state_dict.bin + compression_state_dict.bin "
            "(audiocraft) or manifest.json (ONNX bundle)")


def load_parts(name_or_path: str | os.PathLike, provider: str | None = None) -> ModelParts:
    """The parts ``name_or_path`` names (see the module docstring). ValueError for an unknown
    name, a folder of no known format, or a ``provider`` given for a PyTorch model;
    FileNotFoundError for missing files inside a checkpoint (or a missing default model).

    ``provider``: the onnxruntime execution provider of an ONNX bundle (``cpu``, ``cuda`` or
    onnxruntime's names; default CUDA when it works, else CPU).
    """
    name = os.fspath(name_or_path)
    if provider is not None and _is_torch_model(name):
        raise ValueError(f"provider {provider!r} applies only to ONNX bundles (a folder with "
                         f"manifest.json); {name!r} is a PyTorch model, which runs on torch")
    if name == "debug":
        return debug_parts()
    if name == "debug-magnet":
        return debug_magnet_parts()
    if name == "debug-melody":
        return debug_melody_parts()
    if name == "default":
        if not is_native_dir(DEFAULT_MODEL_DIR):
            raise FileNotFoundError(f"the default model is missing: {DEFAULT_MODEL_DIR} holds no "
                                    "barforge.json (reinstall barforge, or name a model)")
        return native_parts(DEFAULT_MODEL_DIR, name="default")
    path = Path(name).expanduser()
    if not path.exists():
        raise ValueError(f"unknown model {name!r}: no such file or directory; expected {EXPECTED}")
    if not path.is_dir():
        raise ValueError(f"model {name!r} is a file; expected {EXPECTED}")
    if is_native_dir(path):
        return native_parts(path, name=str(path))
    if (path / "manifest.json").is_file():
        from engine.loaders.onnx_bundle import open_bundle   # onnxruntime loads only for bundles
        return open_bundle(path, provider)
    if (path / "config.json").is_file() or (path / "state_dict.bin").is_file():
        from engine.loaders.reference_parts import reference_parts
        return reference_parts(path)
    raise ValueError(f"{path} is not a model folder; expected {EXPECTED}")


def assemble(parts: ModelParts, musicgen: type[AnyMusicGen],
             magnet: type[AnyMAGNeT]) -> AnyMusicGen | AnyMAGNeT:
    """The model of ``parts``: an instance of ``musicgen`` or ``magnet`` by the parts' family."""
    model: AnyMusicGen | AnyMAGNeT
    if parts.family == "musicgen":
        model = musicgen(parts.name, parts.codec, parts.lm, parts.text_encoder,
                         max_duration=parts.max_duration, backend=parts.backend,
                         generation_defaults=parts.generation)
    else:
        window: dict[str, Any] = ({} if parts.ar_max_duration is None
                                  else {"ar_max_duration": parts.ar_max_duration})
        model = magnet(parts.name, parts.codec, parts.lm, parts.text_encoder,
                       max_duration=parts.max_duration, backend=parts.backend,
                       generation_defaults=parts.generation, ar_lm=parts.ar_lm,
                       ar_backend=parts.ar_backend, extra=parts.magnet, **window)
    if parts.text_encoder_spec is not None:
        model.text_encoder_spec = dict(parts.text_encoder_spec)
    return model


def _is_torch_model(name: str) -> bool:
    """Whether ``name`` names a PyTorch model: a built-in name or a folder that is not an ONNX
    bundle (a native checkpoint wins over a manifest, as in load_parts)."""
    if name in ("debug", "debug-melody", "default"):
        return True
    path = Path(name).expanduser()
    return path.is_dir() and (is_native_dir(path) or not (path / "manifest.json").is_file())
