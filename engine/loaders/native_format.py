"""The project's own checkpoint folder: ``barforge.json`` beside safetensors weights.

::

    model_dir/
      barforge.json        {"format": "barforge", "version": 1, "family": "musicgen"|"magnet",
                            "codec": CodecConfig, "audio_channels": 1|2, "lm": LMConfig,
                            "ar_lm": LMConfig (optional), "ar_max_duration": s (with ar_lm),
                            "text_encoder": {"kind": ...}, "sample_rate", "max_duration",
                            "generation": {set_generation_params defaults},
                            "magnet": {"span_len", "subcodes_context"} (optional),
                            "files": {name: {"sha256": hex}}}
      codec.safetensors    the (mono) codec's state dict
      lm.safetensors       the LM's state dict
      ar_lm.safetensors    optional: the AR LM of a hybrid MAGNeT model

Every weight file's sha256 is recorded and checked at load, so a truncated or edited file is
refused with a clear error instead of producing noise.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from engine.loaders.onnx_manifest import sha256_file
from engine.loaders.parts import FAMILIES, ModelParts
from engine.loaders.text_encoders import KINDS as TEXT_ENCODER_KINDS
from engine.loaders.text_encoders import build_text_encoder
from engine.models.encodec import CodecConfig, EncodecModel, InterleavedStereoCodec
from engine.models.lm import LMConfig, LMModel
from engine.modules.skip_init import skip_random_init

FORMAT = "barforge"
VERSION = 1
CONFIG_NAME = "barforge.json"
WEIGHT_FILES = {"codec": "codec.safetensors", "lm": "lm.safetensors",
                "ar_lm": "ar_lm.safetensors"}


@dataclass
class NativeCheckpoint:
    """A native folder's contents: configs as dicts, weights as state dicts (CPU tensors)."""

    family: str
    codec_config: dict[str, Any]
    lm_config: dict[str, Any]
    text_encoder: dict[str, Any]
    sample_rate: int
    max_duration: float
    codec_state: dict[str, torch.Tensor]
    lm_state: dict[str, torch.Tensor]
    audio_channels: int = 1
    ar_lm_config: dict[str, Any] | None = None
    ar_lm_state: dict[str, torch.Tensor] | None = None
    generation: dict[str, Any] = field(default_factory=dict)
    magnet: dict[str, Any] = field(default_factory=dict)   # span_len, subcodes_context
    ar_max_duration: float | None = None                   # the AR LM's trained window (s)


def is_native_dir(path: str | Path) -> bool:
    """Whether ``path`` is a folder holding ``barforge.json``."""
    return (Path(path) / CONFIG_NAME).is_file()


def _contiguous(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses shared or strided storage: store plain CPU copies
    return {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}


def save_native(directory: str | Path, ckpt: NativeCheckpoint) -> Path:
    """Write ``ckpt`` as a native folder (created if needed); returns the barforge.json path."""
    if ckpt.family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {ckpt.family!r}")
    if ckpt.text_encoder.get("kind") not in TEXT_ENCODER_KINDS:
        raise ValueError(f"text_encoder kind must be one of {TEXT_ENCODER_KINDS}, "
                         f"got {ckpt.text_encoder.get('kind')!r}")
    if (ckpt.ar_lm_config is None) != (ckpt.ar_lm_state is None):
        raise ValueError("ar_lm_config and ar_lm_state must be given together")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    states = {"codec": ckpt.codec_state, "lm": ckpt.lm_state}
    if ckpt.ar_lm_state is not None:
        states["ar_lm"] = ckpt.ar_lm_state
    files = {}
    for key, state in states.items():
        path = directory / WEIGHT_FILES[key]
        save_file(_contiguous(state), str(path), metadata={"format": FORMAT})
        files[WEIGHT_FILES[key]] = {"sha256": sha256_file(path)}
    meta: dict[str, Any] = {
        "format": FORMAT, "version": VERSION, "family": ckpt.family,
        "codec": ckpt.codec_config, "audio_channels": ckpt.audio_channels,
        "lm": ckpt.lm_config, "text_encoder": ckpt.text_encoder,
        "sample_rate": ckpt.sample_rate, "max_duration": ckpt.max_duration,
        "generation": ckpt.generation, "files": files,
    }
    if ckpt.magnet:
        meta["magnet"] = ckpt.magnet
    if ckpt.ar_lm_config is not None:
        meta["ar_lm"] = ckpt.ar_lm_config
        meta["ar_max_duration"] = float(ckpt.ar_max_duration or ckpt.max_duration)
    config_path = directory / CONFIG_NAME
    tmp = config_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    tmp.replace(config_path)  # the folder is a checkpoint only once its JSON is complete
    return config_path


def read_native_meta(directory: str | Path) -> dict[str, Any]:
    """The parsed, validated ``barforge.json`` of a native folder (weights not read)."""
    config_path = Path(directory) / CONFIG_NAME
    if not config_path.is_file():
        raise FileNotFoundError(f"{directory} is not a barforge checkpoint: {CONFIG_NAME} missing")
    try:
        meta = json.loads(config_path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{config_path}: not readable JSON ({e})") from e
    if meta.get("format") != FORMAT:
        raise ValueError(f"{config_path}: format is {meta.get('format')!r}, expected {FORMAT!r}")
    if meta.get("version") != VERSION:
        raise ValueError(f"{config_path}: version {meta.get('version')!r} is not supported "
                         f"(this build reads version {VERSION})")
    if meta.get("family") not in FAMILIES:
        raise ValueError(f"{config_path}: family must be one of {FAMILIES}, "
                         f"got {meta.get('family')!r}")
    for key in ("codec", "lm", "text_encoder", "sample_rate", "max_duration", "files"):
        if key not in meta:
            raise ValueError(f"{config_path}: the {key!r} entry is missing")
    return meta


def _load_checked(directory: Path, meta: dict[str, Any], key: str) -> dict[str, torch.Tensor]:
    name = WEIGHT_FILES[key]
    path = directory / name
    expected = meta["files"].get(name, {}).get("sha256")
    if expected is None:
        raise ValueError(f"{directory / CONFIG_NAME}: no sha256 recorded for {name}")
    if not path.is_file():
        raise FileNotFoundError(f"{directory}: weight file {name} is missing")
    actual = sha256_file(path)
    if actual != expected:
        raise ValueError(f"{path}: sha256 {actual[:16]}... does not match barforge.json's "
                         f"{expected[:16]}... (the file is corrupt or was modified)")
    return load_file(str(path))


def load_native(directory: str | Path) -> NativeCheckpoint:
    """Read and verify a native folder (sha256 of every weight file checked)."""
    directory = Path(directory)
    meta = read_native_meta(directory)
    has_ar = meta.get("ar_lm") is not None
    return NativeCheckpoint(
        family=meta["family"], codec_config=meta["codec"], lm_config=meta["lm"],
        text_encoder=meta["text_encoder"], sample_rate=int(meta["sample_rate"]),
        max_duration=float(meta["max_duration"]),
        codec_state=_load_checked(directory, meta, "codec"),
        lm_state=_load_checked(directory, meta, "lm"),
        audio_channels=int(meta.get("audio_channels", 1)),
        ar_lm_config=meta["ar_lm"] if has_ar else None,
        ar_lm_state=_load_checked(directory, meta, "ar_lm") if has_ar else None,
        generation=dict(meta.get("generation", {})), magnet=dict(meta.get("magnet", {})),
        # folders written before ar_max_duration was recorded trained both LMs on one segment
        ar_max_duration=float(meta.get("ar_max_duration", meta["max_duration"])) if has_ar else None)


def checkpoint_from_modules(family: str, codec: Any, lm: torch.nn.Module,
                            text_encoder: dict[str, Any], max_duration: float,
                            generation: dict[str, Any] | None = None,
                            ar_lm: torch.nn.Module | None = None,
                            magnet: dict[str, Any] | None = None,
                            ar_max_duration: float | None = None) -> NativeCheckpoint:
    """A ``NativeCheckpoint`` of live modules: ``codec`` an ``EncodecModel`` or a stereo wrapper
    (its ``mono`` codec is stored, ``audio_channels`` 2), ``lm`` / ``ar_lm`` ``LMModel``s."""
    mono = getattr(codec, "mono", codec)
    return NativeCheckpoint(
        family=family, codec_config=mono.config.to_dict(), lm_config=lm.cfg.to_dict(),
        text_encoder=dict(text_encoder), sample_rate=int(codec.sample_rate),
        max_duration=float(max_duration), codec_state=mono.state_dict(),
        lm_state=lm.state_dict(), audio_channels=int(codec.channels),
        ar_lm_config=None if ar_lm is None else ar_lm.cfg.to_dict(),
        ar_lm_state=None if ar_lm is None else ar_lm.state_dict(),
        generation=dict(generation or {}), magnet=dict(magnet or {}),
        ar_max_duration=None if ar_lm is None else float(ar_max_duration or max_duration))


def native_parts(directory: str | Path, name: str) -> ModelParts:
    """The parts of the native checkpoint in ``directory`` (every sha256 checked)."""
    directory = Path(directory)
    ckpt = load_native(directory)
    with skip_random_init():   # every weight is loaded strictly below
        codec = EncodecModel(CodecConfig.from_dict(ckpt.codec_config))
    _load_state(codec, ckpt.codec_state, f"{name}: codec.safetensors")
    codec.eval()
    ar_lm = None
    if ckpt.ar_lm_config is not None:
        ar_lm = _lm(ckpt.ar_lm_config, ckpt.ar_lm_state or {}, f"{name}: ar_lm.safetensors")
    return ModelParts(
        family=ckpt.family, name=name,
        codec=InterleavedStereoCodec(codec) if ckpt.audio_channels == 2 else codec,
        text_encoder=build_text_encoder(ckpt.text_encoder, directory),
        max_duration=ckpt.max_duration,
        lm=_lm(ckpt.lm_config, ckpt.lm_state, f"{name}: lm.safetensors"),
        generation=ckpt.generation, ar_lm=ar_lm,
        ar_max_duration=ckpt.ar_max_duration or ckpt.max_duration, magnet=ckpt.magnet,
        text_encoder_spec=dict(ckpt.text_encoder))


def _lm(config: dict[str, Any], state: dict[str, torch.Tensor], what: str) -> LMModel:
    with skip_random_init():   # every weight is loaded strictly below
        lm = LMModel(LMConfig.from_dict(config))
    _load_state(lm, state, what)
    return lm.eval()


def _load_state(module: torch.nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{what}: weights do not fit the configured model ({e})") from e
