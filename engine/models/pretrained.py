"""``load_model(name_or_path)``: resolve a model name or a local checkpoint folder to a model.

- ``"debug"``: a tiny random model built in code with a fixed seed (debug codec, debug LM,
  debug text encoder); the whole public API runs on it in seconds. ``"debug-magnet"``: its
  MAGNeT sibling (every mode: ar, magnet, hybrid).
- ``"default"``: the embedded model in ``presets/default_model/`` (native format). Until one
  is shipped there, a small RANDOMLY INITIALISED model stands in, with a loud warning on every
  load (``model.is_placeholder`` is True).
- a folder: native (``barforge.json``), Hugging Face ``Musicgen(Melody)ForConditionalGeneration``
  (``config.json``), audiocraft (``state_dict.bin`` + ``compression_state_dict.bin``) or an ONNX
  bundle (``manifest.json``).

The checkpoint's family picks the class: ``MusicGen``, or ``MAGNeT`` (engine/models/magnet.py).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import torch

from engine.conditioners.text import MiniLMTextEncoder, T5TextEncoder, debug_text_encoder
from engine.models.encodec import (CodecConfig, EncodecModel, InterleavedStereoCodec,
                                   debug_codec_config)
from engine.models.lm import LMConfig, LMModel, debug_lm_config
from engine.models.musicgen import MusicGen
from engine.models.native_format import NativeCheckpoint, is_native_dir, load_native

DEFAULT_MODEL_DIR = Path(__file__).resolve().parents[2] / "presets" / "default_model"
DEBUG_SEED = 0
DEBUG_TEXT = {"kind": "debug", "seed": DEBUG_SEED, "dim": debug_lm_config().cond_dim}
EXPECTED = ("'debug', 'debug-magnet', 'default', or a directory holding barforge.json (barforge native), "
            "config.json (Hugging Face MusicGen), state_dict.bin + compression_state_dict.bin "
            "(audiocraft) or manifest.json (ONNX bundle)")
PLACEHOLDER_WARNING = (
    "WARNING: the 'default' model is not trained yet ({dir} holds no barforge.json):\n"
    "WARNING: loading a small RANDOMLY INITIALISED stand-in. Its output is noise, not music.")


def load_model(name_or_path: str | os.PathLike, provider: str | None = None) -> Any:
    """A ``MusicGen`` or ``MAGNeT`` (see the module docstring); ValueError for an unknown name
    or a folder of no known format, FileNotFoundError for missing files inside a checkpoint.

    ``provider``: the onnxruntime execution provider of an ONNX bundle (``cpu``, ``cuda`` or
    onnxruntime's names; default CUDA when it works, else CPU). ValueError when it is given for
    a model that is not a bundle (PyTorch models run on torch), or names an unknown or unusable
    provider.
    """
    name = os.fspath(name_or_path)
    if provider is not None and _is_torch_model(name):
        raise ValueError(f"provider {provider!r} applies only to ONNX bundles (a folder with "
                         f"manifest.json); {name!r} is a PyTorch model, which runs on torch")
    if name == "debug":
        return build_debug_model()
    if name == "debug-magnet":
        from engine.models.magnet import debug_magnet
        return debug_magnet()
    if name == "default":
        return load_default_model()
    path = Path(name).expanduser()
    if not path.exists():
        raise ValueError(f"unknown model {name!r}: no such file or directory; expected {EXPECTED}")
    if not path.is_dir():
        raise ValueError(f"model {name!r} is a file; expected {EXPECTED}")
    if is_native_dir(path):
        return model_from_native(load_native(path), name=str(path), base_dir=path)
    if (path / "manifest.json").is_file():
        return _load_onnx_bundle(path, provider)
    if (path / "config.json").is_file() or (path / "state_dict.bin").is_file():
        return _load_reference_checkpoint(path)
    raise ValueError(f"{path} is not a model folder; expected {EXPECTED}")


def build_debug_model() -> MusicGen:
    """The tiny random ``debug`` MusicGen (the same weights on every call)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(DEBUG_SEED)
        codec = EncodecModel(debug_codec_config()).eval()
        lm = LMModel(debug_lm_config()).eval()
    model = MusicGen("debug", codec, lm, build_text_encoder(DEBUG_TEXT), max_duration=30.0)
    model.text_encoder_spec = dict(DEBUG_TEXT)
    return model


def placeholder_default_model() -> MusicGen:
    """The stand-in for the untrained default model: random weights, MiniLM text encoder."""
    text_spec = {"kind": "minilm"}
    text = build_text_encoder(text_spec)
    codec_cfg = debug_codec_config()
    lm_cfg = LMConfig(n_q=codec_cfg.n_q, card=codec_cfg.bins, dim=64, num_heads=4, num_layers=2,
                      cond_dim=text.dim)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(DEBUG_SEED)
        codec = EncodecModel(codec_cfg).eval()
        lm = LMModel(lm_cfg).eval()
    model = MusicGen("default (random placeholder)", codec, lm, text, max_duration=30.0)
    model.text_encoder_spec = text_spec
    return model


def load_default_model() -> Any:
    """``presets/default_model`` when it holds a checkpoint, else the loud random stand-in."""
    if is_native_dir(DEFAULT_MODEL_DIR):
        model = model_from_native(load_native(DEFAULT_MODEL_DIR), name="default",
                                  base_dir=DEFAULT_MODEL_DIR)
        model.is_placeholder = False
        return model
    print(PLACEHOLDER_WARNING.format(dir=DEFAULT_MODEL_DIR), file=sys.stderr, flush=True)
    model = placeholder_default_model()
    model.is_placeholder = True
    return model


def build_text_encoder(spec: dict[str, Any], base_dir: Path | None = None) -> Any:
    """A text encoder from a native checkpoint's ``text_encoder`` entry."""
    kind = spec.get("kind")
    if kind == "debug":
        return debug_text_encoder(seed=int(spec.get("seed", DEBUG_SEED)), dim=int(spec["dim"]))
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


def _load_state(module: torch.nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{what}: weights do not fit the configured model ({e})") from e


def model_from_native(ckpt: NativeCheckpoint, name: str, base_dir: Path | None = None) -> Any:
    """Build the model a native checkpoint describes."""
    codec = EncodecModel(CodecConfig.from_dict(ckpt.codec_config))
    _load_state(codec, ckpt.codec_state, f"{name}: codec.safetensors")
    codec.eval()
    compression: Any = InterleavedStereoCodec(codec) if ckpt.audio_channels == 2 else codec
    lm = LMModel(LMConfig.from_dict(ckpt.lm_config))
    _load_state(lm, ckpt.lm_state, f"{name}: lm.safetensors")
    lm.eval()
    ar_lm = None
    if ckpt.ar_lm_config is not None:
        ar_lm = LMModel(LMConfig.from_dict(ckpt.ar_lm_config))
        _load_state(ar_lm, ckpt.ar_lm_state or {}, f"{name}: ar_lm.safetensors")
        ar_lm.eval()
    text = build_text_encoder(ckpt.text_encoder, base_dir)
    if ckpt.family == "musicgen":
        model = MusicGen(name, compression, lm, text, max_duration=ckpt.max_duration,
                         generation_defaults=ckpt.generation)
    else:
        model = magnet_class()(name, compression, lm, text, max_duration=ckpt.max_duration,
                               generation_defaults=ckpt.generation, ar_lm=ar_lm,
                               ar_max_duration=ckpt.ar_max_duration or ckpt.max_duration,
                               extra=ckpt.magnet)
    model.text_encoder_spec = dict(ckpt.text_encoder)
    return model


def magnet_class() -> type:
    """``engine.models.magnet.MAGNeT``, with a clear error while that module does not exist."""
    try:
        from engine.models.magnet import MAGNeT
    except ImportError as e:
        raise ValueError("this is a MAGNeT checkpoint, but MAGNeT support "
                         f"(engine/models/magnet.py) is not available: {e}") from e
    return MAGNeT


def _is_torch_model(name: str) -> bool:
    """Whether ``name`` names a PyTorch model: a built-in name or a folder that is not an ONNX
    bundle (a native checkpoint wins over a manifest, as in load_model)."""
    if name in ("debug", "default"):
        return True
    path = Path(name).expanduser()
    return path.is_dir() and (is_native_dir(path) or not (path / "manifest.json").is_file())


def _load_onnx_bundle(path: Path, provider: str | None = None) -> Any:
    """An exported bundle: the onnxruntime runtime builds the model (same API, its backend)."""
    try:
        from engine.backends.onnx_backend import load_bundle
    except ImportError as e:
        raise ValueError(f"{path} is an ONNX bundle (manifest.json), but this build cannot run "
                         f"bundles yet: engine.backends.onnx_backend.load_bundle is missing ({e})"
                         ) from e
    return load_bundle(path, provider=provider)


AR_PARAM_NAMES = ("temperature", "top_k", "top_p", "cfg_coef", "use_sampling", "extend_stride")


def _load_reference_checkpoint(path: Path) -> Any:
    """A Hugging Face or audiocraft checkpoint folder (engine/loaders/lm_checkpoint.py)."""
    from engine.loaders.lm_checkpoint import load_lm_checkpoint

    loaded = load_lm_checkpoint(path)
    codec = loaded.load_codec()
    # HF MusicGen checkpoints are all 30 s models; audiocraft's say so (segment_duration)
    hf = (path / "config.json").is_file()
    max_duration = 30.0 if hf else float(loaded.generation.get("duration", 30.0))
    if loaded.family in ("musicgen", "musicgen-melody"):
        defaults = {k: v for k, v in loaded.generation.items() if k in AR_PARAM_NAMES}
        return MusicGen(str(path), codec, loaded.lm, loaded.text_encoder,
                        max_duration=max_duration, generation_defaults=defaults)
    defaults = {k: v for k, v in loaded.generation.items() if k != "duration"}
    return magnet_class()(str(path), codec, loaded.lm, loaded.text_encoder,
                          max_duration=max_duration, generation_defaults=defaults, ar_lm=None,
                          extra=loaded.extra)
