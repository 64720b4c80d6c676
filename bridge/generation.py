"""Driving the model: generation parameters, progress / cancellation, long clips in windows.

Audio leaves this module as numpy float32 [N, C] at the model's sample rate.
"""
from __future__ import annotations

import math
import secrets
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from bridge.melody import Melody
from bridge.osc_protocol import Options
from bridge.presets import Preset
from engine.decoding.options import api_params
from engine.tempo import Tempo, duration_for

EXTEND_STRIDE = 0.6   # a window past the model's max_duration adds this fraction of it
Progress = Callable[[float], None]


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


def _to_numpy(wav: torch.Tensor) -> np.ndarray:
    return wav[0].detach().to(torch.float32).cpu().numpy().T.copy()  # [C, N] -> [N, C]


def _prompt_tensor(audio: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(audio.T, dtype=np.float32))[None]  # [1, C, N]


def generate_audio(model: Any, settings: Settings, samples: int, sample_rate: int,
                   progress: Progress, tempo: Tempo, prompt: np.ndarray | None = None,
                   prompt_rate: int | None = None, melody: Melody | None = None) -> np.ndarray:
    """Audio [N, C] at the model's rate that holds, resampled to ``sample_rate``, at least
    ``samples`` samples from its start (the prompt's rendering first, when there is one).

    With a prompt ([P, C] at ``prompt_rate``) the result starts with the model's rendering of
    the prompt (as ``generate_continuation`` returns it). Past ``model.max_duration`` the model
    extends window by window (audiocraft's ``extend_stride``). ``progress(fraction)`` is called
    at every decoding step and may raise to cancel. ``tempo``: the request's, its
    ``start_beat`` that of the first frame (the prompt's, when continuing). ``melody``: the
    chroma source of a melody model's generation (its first frame at the clip's first).
    """
    params = settings.model_params()
    model.set_generation_params(**params)   # the mode's own frame multiple for the length
    prompt_frames = (0 if prompt is None
                     else math.ceil(prompt.shape[0] * model.frame_rate / prompt_rate))
    duration = duration_for(samples, sample_rate, model, min_frames=prompt_frames + 1)
    if duration > model.max_duration:
        params["extend_stride"] = EXTEND_STRIDE * model.max_duration

    def cb(done: int, total: int) -> None:
        progress(min(1.0, done / max(total, 1)))

    model.set_generation_params(duration=duration, **params)
    if melody is not None:
        return _to_numpy(model.generate_with_chroma([settings.description],
                                                    _prompt_tensor(melody.audio),
                                                    melody.sample_rate, progress_callback=cb,
                                                    tempo=tempo))
    if prompt is None:
        return _to_numpy(model.generate([settings.description], progress_callback=cb,
                                        tempo=tempo))
    return _to_numpy(model.generate_continuation(_prompt_tensor(prompt), prompt_rate,
                                                 [settings.description], progress_callback=cb,
                                                 tempo=tempo))
