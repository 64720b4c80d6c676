"""Load the codec from the checkpoint formats MusicGen ships in, with strict key/shape checks.

Accepted (local files only, nothing is downloaded):

- a Hugging Face ``EncodecModel`` directory (``config.json`` + ``model.safetensors``), or a
  composite ``Musicgen(Melody)ForConditionalGeneration`` directory (its ``audio_encoder``
  sub-config and ``audio_encoder.*`` weights, sharded or not);
- an audiocraft ``compression_state_dict.bin`` (``{'best_state', 'xp.cfg'}``), or a directory
  holding one; its pointer form ``{'pretrained': 'facebook/encodec_32khz'}`` resolves to a
  local HF directory given as ``pretrained_dir`` or by the environment variable
  ``BARFORGE_ENCODEC_32KHZ``.

Key mapping to this project's names (module indices are the same in all three layouts):
HF ``{encoder,decoder}.layers.i`` -> ``{encoder,decoder}.model.i`` (a decoder transposed conv's
``.conv`` -> ``.convtr``), ``quantizer.layers.k.codebook`` -> ``quantizer.layers.k._codebook``;
audiocraft ``.conv.conv`` -> ``.conv``, ``.convtr.convtr`` -> ``.convtr``, ``quantizer.vq.layers``
-> ``quantizer.layers``; legacy ``weight_g`` / ``weight_v`` ->
``parametrizations.weight.original0`` / ``original1``.
"""
from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any, Mapping

import torch
import yaml

from engine.loaders.weights import load_strict, read_hf_weights, read_json, torch_load_checkpoint
from engine.models.encodec import CodecConfig, EncodecModel, InterleavedStereoCodec
from engine.modules.conv import StreamableConvTranspose1d

ENV_ENCODEC_32KHZ = "BARFORGE_ENCODEC_32KHZ"
AUDIOCRAFT_FILE = "compression_state_dict.bin"

# transformers' EncodecConfig defaults, for config.json files written without them.
_HF_DEFAULTS: dict[str, Any] = {
    "target_bandwidths": [1.5, 3.0, 6.0, 12.0, 24.0], "sampling_rate": 24000,
    "audio_channels": 1, "normalize": False, "chunk_length_s": None, "hidden_size": 128,
    "num_filters": 32, "num_residual_layers": 1, "upsampling_ratios": [8, 5, 4, 2],
    "norm_type": "weight_norm", "kernel_size": 7, "last_kernel_size": 7,
    "residual_kernel_size": 3, "dilation_growth_rate": 2, "use_causal_conv": True,
    "pad_mode": "reflect", "compress": 2, "num_lstm_layers": 2, "trim_right_ratio": 1.0,
    "codebook_size": 1024, "codebook_dim": None, "use_conv_shortcut": True,
}
_MUSICGEN_TYPES = ("musicgen", "musicgen_melody")
_CODEC = "a codec with this config"


def load_codec(path: str | os.PathLike, *, stereo: bool = False,
               pretrained_dir: str | os.PathLike | None = None
               ) -> EncodecModel | InterleavedStereoCodec:
    """Load a codec checkpoint (see the module docstring) in eval mode on CPU.

    ``stereo``: wrap the mono codec in ``InterleavedStereoCodec`` (MusicGen stereo models say
    so in the LM's config; a composite HF MusicGen directory with ``decoder.audio_channels``
    2 is wrapped automatically). Raises FileNotFoundError for missing files and ValueError
    for unreadable files, unsupported configs, unknown / missing tensors and shape mismatches.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"codec checkpoint not found: {path}")
    if path.is_dir():
        if (path / "config.json").is_file():
            model, is_stereo = _load_hf_dir(path)
        elif (path / AUDIOCRAFT_FILE).is_file():
            model, is_stereo = _load_audiocraft_file(path / AUDIOCRAFT_FILE, pretrained_dir), False
        else:
            raise FileNotFoundError(f"{path} holds neither config.json (Hugging Face) nor "
                                    f"{AUDIOCRAFT_FILE} (audiocraft)")
    elif path.suffix in (".safetensors", ".json"):
        model, is_stereo = _load_hf_dir(path.parent)
    else:
        model, is_stereo = _load_audiocraft_file(path, pretrained_dir), False
    model.eval()
    return InterleavedStereoCodec(model) if (stereo or is_stereo) else model


# ----------------------------------------------------------------------------- Hugging Face

def codec_config_from_hf(config_dict: Mapping[str, Any], source: str = "config") -> CodecConfig:
    """A transformers ``EncodecConfig`` dict -> CodecConfig; ValueError for what we lack."""
    c = {**_HF_DEFAULTS, **config_dict}
    if c["norm_type"] != "weight_norm":
        raise ValueError(f"{source}: norm_type must be 'weight_norm', got {c['norm_type']!r}")
    if c["normalize"]:
        raise ValueError(f"{source}: normalize=True (renormalised codecs) is not supported")
    if c["chunk_length_s"] is not None:
        raise ValueError(f"{source}: chunked codecs (chunk_length_s={c['chunk_length_s']}) "
                         "are not supported")
    dim = c["hidden_size"]
    if c["codebook_dim"] not in (None, dim):
        raise ValueError(f"{source}: codebook_dim {c['codebook_dim']} != hidden_size {dim}")
    hop = math.prod(c["upsampling_ratios"])
    frame_rate = math.ceil(c["sampling_rate"] / hop)
    bits = math.ceil(math.log2(c["codebook_size"]))
    # transformers' EncodecConfig.num_quantizers: the number of layers it builds.
    n_q = int(1000 * c["target_bandwidths"][-1] // (frame_rate * bits))
    return CodecConfig(
        sample_rate=c["sampling_rate"], channels=c["audio_channels"],
        n_filters=c["num_filters"], dimension=dim, ratios=tuple(c["upsampling_ratios"]),
        n_residual_layers=c["num_residual_layers"],
        residual_kernel_size=c["residual_kernel_size"],
        dilation_base=c["dilation_growth_rate"], compress=c["compress"],
        lstm_layers=c["num_lstm_layers"], kernel_size=c["kernel_size"],
        last_kernel_size=c["last_kernel_size"], pad_mode=c["pad_mode"],
        true_skip=not c["use_conv_shortcut"], causal=c["use_causal_conv"],
        trim_right_ratio=c["trim_right_ratio"], n_q=n_q, bins=c["codebook_size"])


def codec_from_hf_state(config_dict: Mapping[str, Any], state_dict: Mapping[str, torch.Tensor],
                        source: str = "state dict") -> EncodecModel:
    """Build a codec from a transformers ``EncodecConfig`` dict and its weights.

    ``state_dict`` uses transformers' names without prefix (``encoder.layers.0.conv...``),
    e.g. the ``audio_encoder.*`` tensors of a MusicGen checkpoint with the prefix stripped.
    ``source`` names the file in error messages.
    """
    model = EncodecModel(codec_config_from_hf(config_dict, source))
    transposed = {i for i, m in enumerate(model.decoder.model)
                  if isinstance(m, StreamableConvTranspose1d)}
    mapped = {}
    for name, tensor in state_dict.items():
        mapped[_hf_to_ours(name, transposed)] = (name, tensor)
    load_strict(model, mapped, source, what=_CODEC)
    return model


def _hf_to_ours(name: str, transposed: set[int]) -> str:
    m = re.match(r"(encoder|decoder)\.layers\.(\d+)\.(.*)", name)
    if m:
        part, idx, rest = m.group(1), int(m.group(2)), m.group(3)
        if part == "decoder" and idx in transposed and rest.startswith("conv."):
            rest = "convtr." + rest[len("conv."):]
        name = f"{part}.model.{idx}.{rest}"
    name = re.sub(r"^quantizer\.layers\.(\d+)\.codebook\.", r"quantizer.layers.\1._codebook.",
                  name)
    return _legacy_weight_norm(name)


def _legacy_weight_norm(name: str) -> str:
    if name.endswith(".weight_g"):
        return name[:-len("weight_g")] + "parametrizations.weight.original0"
    if name.endswith(".weight_v"):
        return name[:-len("weight_v")] + "parametrizations.weight.original1"
    return name


def _load_hf_dir(directory: Path) -> tuple[EncodecModel, bool]:
    config_file = directory / "config.json"
    config = read_json(config_file)
    prefix, stereo = "", False
    if config.get("model_type") in _MUSICGEN_TYPES:
        prefix = "audio_encoder."
        stereo = config.get("decoder", {}).get("audio_channels", 1) == 2
        config = config.get("audio_encoder", {})
    if config.get("model_type", "encodec") != "encodec":
        raise ValueError(f"{config_file}: model_type {config.get('model_type')!r} is not an "
                         "EnCodec (or MusicGen) model")
    state, source = read_hf_weights(directory, prefix)
    return codec_from_hf_state(config, state, source), stereo


# ----------------------------------------------------------------------------- audiocraft

def codec_config_from_audiocraft(xp_cfg: Mapping[str, Any] | str,
                                 source: str = "xp.cfg") -> CodecConfig:
    """An audiocraft experiment config (dict or YAML string) -> CodecConfig."""
    cfg = yaml.safe_load(xp_cfg) if isinstance(xp_cfg, str) else xp_cfg
    if not isinstance(cfg, Mapping):
        raise ValueError(f"{source}: xp.cfg is not a mapping")
    cfg = _resolve_interpolations(cfg, cfg)
    if cfg.get("compression_model", "encodec") != "encodec":
        raise ValueError(f"{source}: compression_model {cfg.get('compression_model')!r} is "
                         "not 'encodec'")
    try:
        encodec, seanet, rvq = dict(cfg["encodec"]), dict(cfg["seanet"]), dict(cfg["rvq"])
    except KeyError as e:
        raise ValueError(f"{source}: xp.cfg lacks the section {e}") from e
    if encodec.get("autoencoder", "seanet") != "seanet" or encodec.get("quantizer") != "rvq":
        raise ValueError(f"{source}: only a seanet autoencoder with an rvq quantizer is "
                         f"supported, got {encodec.get('autoencoder')!r} / "
                         f"{encodec.get('quantizer')!r}")
    if encodec.get("renormalize", False) or encodec.get("renorm", False):
        raise ValueError(f"{source}: renormalize=True is not supported")
    encoder_over = dict(seanet.pop("encoder", None) or {})
    decoder_over = dict(seanet.pop("decoder", None) or {})
    trim_right_ratio = decoder_over.pop("trim_right_ratio", 1.0)
    for key in ("final_activation", "final_activation_params"):
        if decoder_over.pop(key, None):
            raise ValueError(f"{source}: seanet.decoder.{key} is not supported")
    for part, over in (("encoder", encoder_over), ("decoder", decoder_over)):
        for key, value in over.items():
            if seanet.get(key) != value:
                raise ValueError(f"{source}: seanet.{part}.{key}={value!r} differs from "
                                 f"seanet.{key}={seanet.get(key)!r}; not supported")
    unsupported = {"norm": "weight_norm", "activation": "ELU", "disable_norm_outer_blocks": 0}
    for key, wanted in unsupported.items():
        if seanet.get(key, wanted) != wanted:
            raise ValueError(f"{source}: seanet.{key} must be {wanted!r}, got {seanet[key]!r}")
    if dict(seanet.get("activation_params") or {"alpha": 1.0}) != {"alpha": 1.0}:
        raise ValueError(f"{source}: seanet.activation_params must be {{'alpha': 1.0}}")
    return CodecConfig(
        sample_rate=int(cfg.get("sample_rate", encodec.get("sample_rate"))),
        channels=int(cfg.get("channels", encodec.get("channels", 1))),
        n_filters=seanet["n_filters"], dimension=seanet["dimension"],
        ratios=tuple(seanet["ratios"]), n_residual_layers=seanet["n_residual_layers"],
        residual_kernel_size=seanet["residual_kernel_size"],
        dilation_base=seanet["dilation_base"], compress=seanet["compress"],
        lstm_layers=seanet["lstm"], kernel_size=seanet["kernel_size"],
        last_kernel_size=seanet["last_kernel_size"], pad_mode=seanet["pad_mode"],
        true_skip=seanet["true_skip"], causal=bool(seanet.get("causal", False)),
        trim_right_ratio=trim_right_ratio, n_q=rvq["n_q"], bins=rvq["bins"],
        decay=rvq.get("decay", 0.99), kmeans_init=rvq.get("kmeans_init", True),
        kmeans_iters=rvq.get("kmeans_iters", 50),
        threshold_ema_dead_code=rvq.get("threshold_ema_dead_code", 2.0))


def codec_from_audiocraft_state(xp_cfg: Mapping[str, Any] | str,
                                best_state: Mapping[str, torch.Tensor],
                                source: str = "state dict") -> EncodecModel:
    """Build a codec from an audiocraft ``xp.cfg`` and ``best_state`` (audiocraft names)."""
    model = EncodecModel(codec_config_from_audiocraft(xp_cfg, source))
    mapped = {_audiocraft_to_ours(name): (name, t) for name, t in best_state.items()}
    load_strict(model, mapped, source, what=_CODEC)
    return model


def _audiocraft_to_ours(name: str) -> str:
    name = name.replace(".conv.conv.", ".conv.").replace(".convtr.convtr.", ".convtr.")
    name = re.sub(r"^quantizer\.vq\.layers\.", "quantizer.layers.", name)
    return _legacy_weight_norm(name)


def _resolve_interpolations(node: Any, root: Mapping[str, Any]) -> Any:
    """Replace OmegaConf ``${a.b}`` references (left unresolved by ``OmegaConf.to_yaml``)."""
    if isinstance(node, Mapping):
        return {k: _resolve_interpolations(v, root) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve_interpolations(v, root) for v in node]
    if isinstance(node, str):
        m = re.fullmatch(r"\$\{([\w.]+)\}", node.strip())
        if m:
            value: Any = root
            for part in m.group(1).split("."):
                if not isinstance(value, Mapping) or part not in value:
                    return node
                value = value[part]
            return _resolve_interpolations(value, root)
    return node


def _load_audiocraft_file(file: Path, pretrained_dir: str | os.PathLike | None
                          ) -> EncodecModel:
    pkg = torch_load_checkpoint(file)
    if not isinstance(pkg, Mapping):
        raise ValueError(f"{file}: expected a dict with 'best_state' and 'xp.cfg', "
                         f"got {type(pkg).__name__}")
    if "pretrained" in pkg:
        model, _ = _load_hf_dir(_resolve_pretrained(file, str(pkg["pretrained"]),
                                                    pretrained_dir))
        return model
    if "best_state" not in pkg or "xp.cfg" not in pkg:
        raise ValueError(f"{file}: expected keys 'best_state' and 'xp.cfg', "
                         f"got {sorted(map(str, pkg))}")
    return codec_from_audiocraft_state(pkg["xp.cfg"], pkg["best_state"], str(file))


def _resolve_pretrained(file: Path, name: str, pretrained_dir: str | os.PathLike | None
                        ) -> Path:
    env = os.environ.get(ENV_ENCODEC_32KHZ) if name == "facebook/encodec_32khz" else None
    candidate = pretrained_dir if pretrained_dir is not None else env
    if candidate is not None and (Path(candidate) / "config.json").is_file():
        return Path(candidate)
    where = (f"pass pretrained_dir=... or set {ENV_ENCODEC_32KHZ}"
             if name == "facebook/encodec_32khz" else "pass pretrained_dir=...")
    tried = f" ({candidate} has no config.json)" if candidate is not None else ""
    raise FileNotFoundError(
        f"{file} points at the Hugging Face codec {name!r}, which is not available locally"
        f"{tried}. Download config.json and model.safetensors from "
        f"https://huggingface.co/{name} into a directory and {where} to that directory.")
