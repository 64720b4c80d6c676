"""A request's generation settings (preset, options, checks) and the engine request they make.

The decoding itself (progress / cancellation, long clips in windows) is the engine's
``generate_samples`` (engine/sample_generation.py), wherever the model runs.
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import numpy as np

from bridge.melody import Melody
from bridge.osc_protocol import Options
from bridge.presets import Preset
from engine.decoding.options import api_params
from engine.sample_generation import SampleRequest
from engine.tempo import Tempo


@dataclass(frozen=True)
class Settings:
    """Everything one generation uses, as recorded in the sidecar."""

    description: str
    mode: str
    seed: int
    temperature: float | None
    top_k: int | None
    top_p: float | None
    cfg: float | None
    steps: tuple[int, ...] | None
    channels: int
    loudness: float
    preset: str

    def model_params(self) -> dict[str, Any]:
        """Keyword arguments for ``model.set_generation_params`` (duration added by the caller),
        through the engine's one mapping of option names (engine/decoding/options.py)."""
        return api_params({"mode": self.mode, "seed": self.seed, "temperature": self.temperature,
                           "top_k": self.top_k, "top_p": self.top_p, "cfg": self.cfg,
                           "steps": self.steps})


def describe(prompt: str, tempo: Tempo) -> str:
    """The text condition: the prompt with ``bpm: N`` in audiocraft's format."""
    from engine.conditioners.caption import describe as engine_describe
    return engine_describe(prompt, bpm=tempo.caption_bpm)


def resolve_settings(model: Any, prompt: str, tempo: Tempo, options: Options,
                     server_preset: Preset, presets: dict[str, Preset], default_mode: str,
                     max_channels: int, seconds: float) -> Settings:
    """Request options over the request's preset over the server's ``--preset``, checked as
    the worker will use them for ``seconds`` of audio: ``ValueError`` (``bad_argument`` at
    accept) for a mode the model lacks (named by the request or by a preset), or an option
    the model refuses in the mode (``model.check_generation_params``; nothing changes on the
    model, which the worker may be using).
    """
    preset = presets[options.preset] if options.preset else server_preset
    merged: dict[str, Any] = {**server_preset.params, **preset.params, **options.given()}
    supported = tuple(model.supported_modes)
    mode = merged.get("mode", default_mode)
    if mode not in supported:
        source = "this request" if options.mode is not None else f"preset {preset.name!r}"
        raise ValueError(f"mode {mode!r} (from {source}) is not supported by this model; it "
                         f"supports {', '.join(supported)}")
    channels = int(merged.get("channels", min(model.audio_channels, max_channels)))
    if channels > max_channels:
        raise ValueError(f"channels {channels}: the segment holds at most {max_channels}")
    seed = merged.get("seed")
    settings = Settings(
        description=describe(preset.prompt(prompt), tempo), mode=mode,
        seed=int(seed) if seed is not None else secrets.randbelow(2**31),
        temperature=merged.get("temperature"), top_k=merged.get("top_k"), top_p=merged.get("top_p"),
        cfg=merged.get("cfg"), steps=tuple(merged["steps"]) if "steps" in merged else None,
        channels=channels, loudness=float(merged.get("loudness", -14.0)), preset=preset.name)
    model.check_generation_params(duration=seconds, **settings.model_params())
    return settings


def sample_request(settings: Settings, samples: int, sample_rate: int, tempo: Tempo,
                   prompt: np.ndarray | None = None, prompt_rate: int | None = None,
                   melody: Melody | None = None) -> SampleRequest:
    """The engine's request for ``samples`` samples at ``sample_rate`` with ``settings``.

    ``prompt`` ([P, C] at ``prompt_rate``): audio to continue. ``tempo``: the request's, its
    ``start_beat`` that of the first frame (the prompt's, when continuing). ``melody``: the
    chroma source of a melody model's generation (its first frame at the clip's first).
    """
    return SampleRequest(settings.description, settings.model_params(), samples, sample_rate,
                         tempo, prompt, prompt_rate,
                         None if melody is None else melody.audio,
                         None if melody is None else melody.sample_rate)

