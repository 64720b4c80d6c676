"""Load the LM (and its text encoder) from the checkpoint formats MusicGen and MAGNeT ship in.

Accepted (local files only, nothing is downloaded):

- a Hugging Face ``MusicgenForConditionalGeneration`` directory (config.json + model.safetensors,
  sharded with model.safetensors.index.json, or pytorch_model.bin);
- a Hugging Face ``MusicgenMelodyForConditionalGeneration`` directory (no cross-attention:
  chroma and text are projected and prepended);
- an audiocraft ``state_dict.bin`` ({'best_state', 'xp.cfg' YAML}), or a directory holding one
  (MusicGen, MusicGen-Melody and MAGNeT; mono and stereo). Its T5 comes from ``t5_dir`` or
  ``$BARFORGE_T5_DIR``. A melody checkpoint (``fuser.prepend: [self_wav, description]``, a
  ``chroma_stem`` conditioner) is the HF melody layout under audiocraft's names.

Key mapping HF -> ours (transformers' convert_musicgen_transformers.py, reversed):
``decoder.model.decoder.embed_tokens.k`` -> ``emb.k``; ``...layers.N.self_attn.{q,k,v}_proj``
-> ``transformer.layers.N.self_attn.in_proj_weight`` (rows q, k, v); ``encoder_attn`` ->
``cross_attention``; ``self_attn_layer_norm / encoder_attn_layer_norm / final_layer_norm`` ->
``norm1 / norm_cross / norm2``; ``fc1/fc2`` -> ``linear1/2``; ``layer_norm`` -> ``out_norm``;
``decoder.lm_heads.k`` -> ``linears.k``; ``enc_to_dec_proj`` -> ``cond_proj`` (melody:
``prefix_text_proj``), ``audio_enc_to_dec_proj`` -> ``chroma_proj``. audiocraft's names are
ours, but ``condition_provider.conditioners.description.output_proj`` -> ``cond_proj`` (melody:
``prefix_text_proj``) and ``...self_wav.output_proj`` -> ``chroma_proj``.
The codec weights are left to engine/loaders/codec_checkpoint.py (``LoadedLM.load_codec``).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
import yaml

from engine.conditioners.chroma import N_CHROMA
from engine.conditioners.text import T5TextEncoder, TextEncoder
from engine.config_dict import check_int
from engine.loaders.codec_checkpoint import load_codec
from engine.loaders.weights import load_strict, read_hf_weights, read_json, torch_load_checkpoint
from engine.models.lm import LMConfig, LMModel

ENV_T5_DIR = "BARFORGE_T5_DIR"
AUDIOCRAFT_FILE = "state_dict.bin"
_TOKENIZER_FILES = ("tokenizer.json", "spiece.model", "tokenizer_config.json")


@dataclass
class LoadedLM:
    """An LM checkpoint, loaded. ``codec_source`` is what ``load_codec`` of
    engine/loaders/codec_checkpoint.py takes (the checkpoint's directory); ``generation``: the
    checkpoint's own generation defaults (names of engine/decoding/ar_params.py where they exist);
    ``extra``: family-specific facts (MAGNeT span length / restricted context, melody chroma
    length, frame rate)."""

    lm: LMModel
    text_encoder: TextEncoder | None
    codec_source: Path
    audio_channels: int
    family: str  # "musicgen" | "musicgen-melody" | "magnet"
    generation: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def load_codec(self) -> Any:
        """The codec that goes with this LM (stereo-wrapped for 2-channel models)."""
        return load_codec(self.codec_source, stereo=self.audio_channels == 2)


def load_lm_checkpoint(path: str | os.PathLike, *, t5_dir: str | os.PathLike | None = None,
                       load_text_encoder: bool = True) -> LoadedLM:
    """Load an LM checkpoint (see the module docstring) in eval mode on CPU.

    ``t5_dir``: a local T5 directory for audiocraft checkpoints (default ``$BARFORGE_T5_DIR``).
    ``load_text_encoder=False`` loads the LM alone (``text_encoder`` None).
    Raises ValueError naming the file for a missing / unreadable file, an unsupported config,
    a missing or unexpected tensor, a wrong codebook count or any shape mismatch.
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"LM checkpoint not found: {path}")
    if path.is_dir():
        if (path / "config.json").is_file():
            return _load_hf(path, load_text_encoder)
        if (path / AUDIOCRAFT_FILE).is_file():
            return _load_audiocraft(path / AUDIOCRAFT_FILE, t5_dir, load_text_encoder)
        raise ValueError(f"{path} holds neither config.json (Hugging Face) nor {AUDIOCRAFT_FILE} "
                         "(audiocraft)")
    if path.suffix in (".json", ".safetensors"):
        return _load_hf(path.parent, load_text_encoder)
    return _load_audiocraft(path, t5_dir, load_text_encoder)


# ----------------------------------------------------------------------------- shared

def _empty_lm(cfg: LMConfig) -> LMModel:
    """An LMModel without storage (meta device): no time spent on random init of weights
    the checkpoint overwrites."""
    with torch.device("meta"):
        return LMModel(cfg).eval()


def _load_lm(lm: LMModel, mapped: Mapping[str, tuple[str, torch.Tensor]], source: str) -> None:
    """``load_strict`` into an LM built by ``_empty_lm`` (meta device: the tensors are assigned)."""
    load_strict(lm, mapped, source, missing_label="missing tensor for", assign=True,
                what=f"an LM with this config: n_q {lm.n_q}, {lm.cfg.num_layers} layers")


def _int(cfg: Mapping[str, Any], key: str, source: str) -> int:
    value = cfg.get(key)
    check_int(f"{source}: {key}", value)
    return value


# ----------------------------------------------------------------------------- Hugging Face

_HF_LAYER = re.compile(r"layers\.(\d+)\.(self_attn|encoder_attn)\.([qkv])_proj\.weight$")
_HF_RENAMES = (
    ("decoder.model.decoder.embed_tokens.", "emb."),
    ("decoder.model.decoder.layer_norm.", "out_norm."),
    ("decoder.model.decoder.layers.", "transformer.layers."),
    ("decoder.lm_heads.", "linears."),
    (".encoder_attn_layer_norm.", ".norm_cross."),
    (".self_attn_layer_norm.", ".norm1."),
    (".final_layer_norm.", ".norm2."),
    (".encoder_attn.", ".cross_attention."),
    (".fc1.", ".linear1."),
    (".fc2.", ".linear2."),
)


def _hf_lm_config(config: dict, source: str) -> LMConfig:
    melody = config.get("model_type") == "musicgen_melody"
    dec = config.get("decoder")
    text = config.get("text_encoder", {})
    if not isinstance(dec, dict):
        raise ValueError(f"{source}: no 'decoder' section")
    if dec.get("activation_function", "gelu") != "gelu":
        raise ValueError(f"{source}: decoder activation {dec.get('activation_function')!r} "
                         "is not supported (gelu only)")
    if dec.get("scale_embedding", False):
        raise ValueError(f"{source}: scale_embedding=True is not supported")
    if dec.get("cross_attention_hidden_size") not in (None, dec.get("hidden_size")):
        raise ValueError(f"{source}: cross_attention_hidden_size is not supported")
    dim, ffn = _int(dec, "hidden_size", source), _int(dec, "ffn_dim", source)
    if ffn % dim:
        raise ValueError(f"{source}: ffn_dim {ffn} is not a multiple of hidden_size {dim}")
    text_dim = text.get("d_model", text.get("hidden_size", 0))
    return LMConfig(
        n_q=_int(dec, "num_codebooks", source), card=_int(dec, "vocab_size", source), dim=dim,
        num_heads=_int(dec, "num_attention_heads", source),
        num_layers=_int(dec, "num_hidden_layers", source), hidden_scale=ffn // dim,
        cond_dim=0 if melody else text_dim, causal=True,
        prefix_text_dim=text_dim if melody else 0,
        chroma_bins=int(config.get("num_chroma", 12)) if melody else 0)


def _map_hf(state: dict[str, torch.Tensor], melody: bool, cfg: LMConfig,
            source: str) -> dict[str, tuple[str, torch.Tensor]]:
    """HF decoder names -> ours. q/k/v projections are taken out of ``state`` and packed as soon
    as a layer's three arrive, so the separate copies are freed (peak memory ~ the weights once)."""
    mapped: dict[str, tuple[str, torch.Tensor]] = {}
    qkv: dict[str, dict[str, tuple[str, torch.Tensor]]] = {}
    for name in list(state):
        tensor = state[name]
        if name.startswith(("text_encoder.", "audio_encoder.")):
            continue
        if name.startswith("enc_to_dec_proj."):
            target = ("prefix_text_proj." if melody else "cond_proj.") + name.split(".", 1)[1]
            mapped[target] = (name, tensor)
            continue
        if name.startswith("audio_enc_to_dec_proj."):
            mapped["chroma_proj." + name.split(".", 1)[1]] = (name, tensor)
            continue
        if name.endswith("embed_positions.weights"):
            continue  # sinusoidal table, recomputed
        m = _HF_LAYER.search(name)
        ours = name
        for old, new in _HF_RENAMES:
            ours = ours.replace(old, new)
        if m:
            packed = ours[:ours.rindex(".")].rsplit(".", 1)[0] + ".in_proj_weight"
            parts = qkv.setdefault(packed, {})
            parts[m.group(3)] = (name, state.pop(name))
            del tensor
            if len(parts) == 3:
                names = "+".join(parts[p][0] for p in "qkv")
                mapped[packed] = (names, torch.cat([parts.pop(p)[1] for p in "qkv"], dim=0))  # [3D, D]
                del qkv[packed]
            continue
        mapped[ours] = (name, tensor)
    for parts in qkv.values():  # only incomplete q/k/v triples are left
        missing = next(p for p in "qkv" if p not in parts)
        some, (name, _) = next(iter(parts.items()))
        absent = name.replace(f".{some}_proj.", f".{missing}_proj.")
        raise ValueError(f"{source}: missing tensor {absent!r}")
    # An LM whose text width equals its dim has no projection in HF: the identity.
    if cfg.cond_dim == cfg.dim and "cond_proj.weight" not in mapped:
        mapped["cond_proj.weight"] = ("(identity)", torch.eye(cfg.dim))
        mapped["cond_proj.bias"] = ("(identity)", torch.zeros(cfg.dim))
    if cfg.prefix_text_dim == cfg.dim and "prefix_text_proj.weight" not in mapped:
        mapped["prefix_text_proj.weight"] = ("(identity)", torch.eye(cfg.dim))
        mapped["prefix_text_proj.bias"] = ("(identity)", torch.zeros(cfg.dim))
    return mapped


def _hf_generation(directory: Path, frame_rate: float | None) -> dict[str, Any]:
    file = directory / "generation_config.json"
    if not file.is_file():
        return {}
    gen = read_json(file, kind="file")
    out: dict[str, Any] = {}
    for theirs, ours in (("guidance_scale", "cfg_coef"), ("top_k", "top_k"), ("top_p", "top_p"),
                         ("temperature", "temperature"), ("do_sample", "use_sampling")):
        if gen.get(theirs) is not None:
            out[ours] = gen[theirs]
    if gen.get("max_length") and frame_rate:
        out["duration"] = gen["max_length"] / frame_rate
    return out


def _load_hf(directory: Path, load_text_encoder: bool) -> LoadedLM:
    config_file = directory / "config.json"
    config = read_json(config_file)
    model_type = config.get("model_type")
    if model_type not in ("musicgen", "musicgen_melody"):
        raise ValueError(f"{config_file}: model_type {model_type!r} is not 'musicgen' or "
                         "'musicgen_melody'")
    melody = model_type == "musicgen_melody"
    cfg = _hf_lm_config(config, str(config_file))
    try:
        state, source = read_hf_weights(directory, "")
    except FileNotFoundError as e:
        raise ValueError(str(e)) from e
    mapped = _map_hf(state, melody, cfg, source)
    lm = _empty_lm(cfg)
    _load_lm(lm, mapped, source)

    dec = config["decoder"]
    audio = config.get("audio_encoder", {})
    channels = int(dec.get("audio_channels", 1))
    _check_codebooks(cfg.n_q, channels, audio, source)
    text_encoder = None
    if load_text_encoder:
        if not any((directory / f).is_file() for f in _TOKENIZER_FILES):
            raise ValueError(f"{directory}: no tokenizer files ({', '.join(_TOKENIZER_FILES)}) "
                             "for the text encoder; pass load_text_encoder=False to load the LM only")
        text_state = {k[len("text_encoder."):]: v for k, v in state.items()
                      if k.startswith("text_encoder.")}
        text_encoder = T5TextEncoder.from_state(config.get("text_encoder", {}), text_state,
                                                directory, source)
    ratios = audio.get("upsampling_ratios")
    frame_rate = (audio.get("sampling_rate", 32000) / _prod(ratios)) if ratios else None
    extra: dict[str, Any] = {"frame_rate": frame_rate, "sample_rate": audio.get("sampling_rate")}
    if melody:
        extra["chroma_length"] = config.get("chroma_length")
    return LoadedLM(lm=lm, text_encoder=text_encoder, codec_source=directory,
                    audio_channels=channels, family="musicgen-melody" if melody else "musicgen",
                    generation=_hf_generation(directory, frame_rate), extra=extra)


def _prod(values: list[int]) -> int:
    out = 1
    for v in values:
        out *= int(v)
    return out


def _check_codebooks(n_q: int, channels: int, audio: Mapping[str, Any], source: str) -> None:
    """The LM's codebooks must be the codec's per channel times the channels."""
    bands, bins = audio.get("target_bandwidths"), audio.get("codebook_size")
    ratios, sr = audio.get("upsampling_ratios"), audio.get("sampling_rate")
    if not (bands and bins and ratios and sr):
        return
    frame_rate = -(-sr // _prod(ratios))
    codec_n_q = int(1000 * bands[-1] // (frame_rate * (int(bins) - 1).bit_length()))
    if n_q != codec_n_q * channels:
        raise ValueError(f"{source}: the LM has {n_q} codebooks but the codec gives "
                         f"{codec_n_q} x {channels} channel(s) = {codec_n_q * channels}")


# ----------------------------------------------------------------------------- audiocraft

def _check_audiocraft_lm(tl: Mapping[str, Any], source: str) -> None:
    required = {"norm_first": True, "bias_ff": False, "bias_attn": False, "bias_proj": False,
                "positional_embedding": "sin", "norm": "layer_norm", "activation": "gelu",
                "qk_layer_norm": False, "qk_layer_norm_cross": False, "layer_scale": None,
                "kv_repeat": 1, "past_context": None}
    for key, want in required.items():
        if key in tl and tl[key] != want:
            raise ValueError(f"{source}: transformer_lm.{key} = {tl[key]!r} is not supported "
                             f"(expected {want!r})")


TEXT_PROJ = "condition_provider.conditioners.description.output_proj."
CHROMA_PROJ = "condition_provider.conditioners.self_wav.output_proj."
CHROMA_WINDOW = "condition_provider.conditioners.self_wav.chroma.spec.window"
# audiocraft's chroma2music conditioner, the one our ChromaExtractor computes
MELODY_PREPEND = ["self_wav", "description"]
CHROMA_STEM = {"n_chroma": N_CHROMA, "radix2_exp": 14, "argmax": True}


def _audiocraft_melody(xp: Mapping[str, Any], fuser: Mapping[str, Any], source: str) -> bool:
    """Whether xp.cfg describes a MusicGen-Melody (chroma then text prepended); ValueError for
    any other prepend/sum fusion or a chroma conditioner ours does not compute."""
    if fuser.get("sum") or fuser.get("input_interpolate"):
        raise ValueError(f"{source}: conditions fused by sum/input_interpolate are not supported")
    prepend = list(fuser.get("prepend") or [])
    if not prepend:
        return False
    if prepend != MELODY_PREPEND or fuser.get("cross"):
        raise ValueError(f"{source}: fuser.prepend {prepend} with cross {fuser.get('cross')} is "
                         f"not supported (melody models prepend {MELODY_PREPEND}, cross [])")
    wav = ((xp.get("conditioners") or {}).get("self_wav") or {})
    if wav.get("model") != "chroma_stem":
        raise ValueError(f"{source}: conditioners.self_wav.model {wav.get('model')!r} is not "
                         "supported (chroma_stem)")
    stem = wav.get("chroma_stem") or {}
    for key, want in CHROMA_STEM.items():
        if stem.get(key, want) != want:
            raise ValueError(f"{source}: conditioners.self_wav.chroma_stem.{key} = "
                             f"{stem[key]!r} is not supported (expected {want!r})")
    rate = stem.get("sample_rate", "${sample_rate}")
    if rate not in ("${sample_rate}", xp.get("sample_rate")):
        raise ValueError(f"{source}: conditioners.self_wav.chroma_stem.sample_rate {rate!r} "
                         f"differs from the model's sample_rate {xp.get('sample_rate')!r}")
    return True


def _proj_width(state: Mapping[str, torch.Tensor], prefix: str, source: str) -> int:
    """The input width of the conditioner projection ``prefix`` (weight [D, C] -> C)."""
    weight = state.get(prefix + "weight")
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        raise ValueError(f"{source}: missing tensor {prefix + 'weight'!r}")
    return int(weight.shape[1])


def _load_audiocraft(file: Path, t5_dir: str | os.PathLike | None,
                     load_text_encoder: bool) -> LoadedLM:
    pkg = torch_load_checkpoint(file)
    if not isinstance(pkg, Mapping) or "best_state" not in pkg or "xp.cfg" not in pkg:
        got = sorted(map(str, pkg)) if isinstance(pkg, Mapping) else type(pkg).__name__
        raise ValueError(f"{file}: expected a dict with 'best_state' and 'xp.cfg', got {got}")
    try:
        xp = pkg["xp.cfg"] if isinstance(pkg["xp.cfg"], Mapping) else yaml.safe_load(pkg["xp.cfg"])
    except yaml.YAMLError as e:
        raise ValueError(f"{file}: xp.cfg is not valid YAML ({e})") from e
    state = pkg["best_state"]
    if isinstance(state, Mapping) and "model" in state and isinstance(state["model"], Mapping):
        state = state["model"]  # a solver checkpoint rather than an exported one
    source = str(file)
    lm_model = xp.get("lm_model", "transformer_lm")
    if lm_model not in ("transformer_lm", "transformer_lm_magnet"):
        raise ValueError(f"{source}: lm_model {lm_model!r} is not supported")
    fuser = xp.get("fuser", {}) or {}
    melody = _audiocraft_melody(xp, fuser, source)
    tl = xp.get("transformer_lm")
    if not isinstance(tl, Mapping):
        raise ValueError(f"{source}: xp.cfg has no transformer_lm section")
    _check_audiocraft_lm(tl, source)
    cross = "description" in (fuser.get("cross") or [])
    text_dim = _proj_width(state, TEXT_PROJ, source) if cross or melody else 0
    cfg = LMConfig(n_q=_int(tl, "n_q", source), card=_int(tl, "card", source),
                   dim=_int(tl, "dim", source), num_heads=_int(tl, "num_heads", source),
                   num_layers=_int(tl, "num_layers", source),
                   hidden_scale=_int(tl, "hidden_scale", source) if "hidden_scale" in tl else 4,
                   cond_dim=text_dim if cross else 0, causal=bool(tl.get("causal", True)),
                   max_period=float(tl.get("max_period", 10000.0)),
                   prefix_text_dim=text_dim if melody else 0,
                   chroma_bins=_proj_width(state, CHROMA_PROJ, source) if melody else 0)
    channels = int(xp.get("channels", 1))
    renames = ((TEXT_PROJ, "prefix_text_proj." if melody else "cond_proj."),
               (CHROMA_PROJ, "chroma_proj."))
    mapped = {}
    for name, tensor in state.items():
        if name == CHROMA_WINDOW:
            continue  # the STFT window audiocraft's chroma extractor saves; ours computes it
        ours = name
        for theirs, new in renames:
            ours = ours.replace(theirs, new)
        mapped[ours] = (name, tensor)
    lm = _empty_lm(cfg)
    _load_lm(lm, mapped, source)

    text_encoder = None
    if load_text_encoder and text_dim:
        text_encoder = _audiocraft_t5(xp, t5_dir, text_dim, source)
    magnet = lm_model == "transformer_lm_magnet"
    extra: dict[str, Any] = {"sample_rate": xp.get("sample_rate"),
                             "compression_model_checkpoint": xp.get("compression_model_checkpoint")}
    if magnet:
        extra["span_len"] = (xp.get("masking") or {}).get("span_len", 3)
        extra["subcodes_context"] = tl.get("subcodes_context", 5)
        extra["frame_rate"] = tl.get("compression_model_framerate")
    family = "magnet" if magnet else "musicgen-melody" if melody else "musicgen"
    return LoadedLM(lm=lm, text_encoder=text_encoder, codec_source=file.parent,
                    audio_channels=channels, family=family,
                    generation=_audiocraft_generation(xp), extra=extra)


def _audiocraft_t5(xp: Mapping[str, Any], t5_dir: str | os.PathLike | None, cond_dim: int,
                   source: str) -> T5TextEncoder:
    desc = ((xp.get("conditioners") or {}).get("description") or {})
    if desc.get("model", "t5") != "t5":
        raise ValueError(f"{source}: text conditioner {desc.get('model')!r} is not supported (t5)")
    name = (desc.get("t5") or {}).get("name", "t5-base")
    where = t5_dir if t5_dir is not None else os.environ.get(ENV_T5_DIR)
    if where is None:
        raise ValueError(f"{source} needs the T5 text encoder {name!r}: download it into a local "
                         f"directory and pass t5_dir=... or set {ENV_T5_DIR} "
                         "(or pass load_text_encoder=False)")
    encoder = T5TextEncoder.from_dir(where)
    if encoder.dim != cond_dim:
        raise ValueError(f"{source}: the LM expects a {cond_dim}-wide text encoder ({name}), "
                         f"but {where} is {encoder.dim} wide")
    return encoder


def _audiocraft_generation(xp: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    coef = (xp.get("classifier_free_guidance") or {}).get("inference_coef")
    if coef is not None:
        out["cfg_coef"] = coef
    lm = ((xp.get("generate") or {}).get("lm") or {})
    for theirs, ours in (("use_sampling", "use_sampling"), ("temp", "temperature"),
                         ("top_k", "top_k"), ("top_p", "top_p"), ("max_cfg_coef", "max_cfg_coef"),
                         ("min_cfg_coef", "min_cfg_coef"), ("decoding_steps", "decoding_steps"),
                         ("span_scoring", "span_scoring"),
                         ("span_arrangement", "span_arrangement")):
        if lm.get(theirs) is not None:
            out[ours] = lm[theirs]
    duration = (xp.get("dataset") or {}).get("segment_duration")
    if isinstance(duration, (int, float)) and duration > 0:
        out["duration"] = float(duration)
    return out
