"""Driving the model: generation parameters, progress / cancellation, long clips in windows.

Audio leaves this module as numpy float32 [N, C] at the model's sample rate.
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable

import numpy as np
import torch

from bridge.osc_protocol import Options
from bridge.presets import Preset

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
        """Keyword arguments for ``model.set_generation_params`` (duration added by the caller)."""
        params: dict[str, Any] = {"mode": self.mode, "seed": self.seed}
        for key, name in (("temperature", "temperature"), ("top_k", "top_k"), ("top_p", "top_p"),
                          ("cfg", "cfg_coef")):
            if getattr(self, key) is not None:
                params[name] = getattr(self, key)
        if self.steps is not None and self.mode in ("magnet", "hybrid"):
            params["decoding_steps"] = list(self.steps)
        return params


def describe(prompt: str, bpm: Fraction) -> str:
    """The text condition: the prompt with ``bpm: N`` in audiocraft's format."""
    from engine.conditioners.caption import describe as engine_describe
    value: float | int = int(bpm) if bpm.denominator == 1 else float(bpm)
    return engine_describe(prompt, bpm=value)


def resolve_settings(model: Any, prompt: str, bpm: Fraction, options: Options, server_preset: Preset,
                     presets: dict[str, Preset], default_mode: str, max_channels: int) -> Settings:
    """Request options over the request's preset over the server's ``--preset``.

    A mode named by a request must be one the model supports (``ValueError`` otherwise); a
    preset's mode the model lacks falls back to ``default_mode``.
    """
    preset = presets[options.preset] if options.preset else server_preset
    merged: dict[str, Any] = {**server_preset.params, **preset.params, **options.given()}
    supported = tuple(model.supported_modes)
    mode = merged.get("mode", default_mode)
    if options.mode is not None and options.mode not in supported:
        raise ValueError(f"mode {options.mode!r} is not supported by this model; it supports {', '.join(supported)}")
    if mode not in supported:
        mode = default_mode
    channels = int(merged.get("channels", min(model.audio_channels, max_channels)))
    if channels > max_channels:
        raise ValueError(f"channels {channels}: the segment holds at most {max_channels}")
    seed = merged.get("seed")
    return Settings(
        description=describe(preset.prompt(prompt), bpm), mode=mode,
        seed=int(seed) if seed is not None else secrets.randbelow(2**31),
        temperature=merged.get("temperature"), top_k=merged.get("top_k"), top_p=merged.get("top_p"),
        cfg=merged.get("cfg"), steps=tuple(merged["steps"]) if "steps" in merged else None,
        channels=channels, loudness=float(merged.get("loudness", -14.0)), preset=preset.name)


def _to_numpy(wav: torch.Tensor) -> np.ndarray:
    return wav[0].detach().to(torch.float32).cpu().numpy().T.copy()  # [C, N] -> [N, C]


def _prompt_tensor(audio: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(audio.T, dtype=np.float32))[None]  # [1, C, N]


def generate_audio(model: Any, settings: Settings, seconds: float, progress: Progress,
                   prompt: np.ndarray | None = None, prompt_rate: int | None = None,
                   tempo: tuple[float, int, float] | None = None) -> np.ndarray:
    """At least ``seconds`` of new audio [N, C] at the model's rate, after ``prompt`` if given.

    With a prompt ([P, C] at ``prompt_rate``) the result starts with the model's rendering of
    the prompt (as ``generate_continuation`` returns it). Past ``model.max_duration`` the model
    extends window by window (audiocraft's ``extend_stride``). ``progress(fraction)`` is called
    at every decoding step and may raise to cancel. ``tempo``: (bpm, beats per bar, session
    beat of the first frame -- the prompt's, when continuing) for beat-conditioned models.
    """
    prompt_s = 0.0 if prompt is None else prompt.shape[0] / prompt_rate
    # the model makes int(duration * frame_rate) codec frames: ask for two more frames
    frame_s = 1.0 / float(getattr(model, "frame_rate", 50.0))
    duration = prompt_s + seconds + 2 * frame_s
    params = settings.model_params()
    if tempo is not None:
        params.update(bpm=tempo[0], beats_per_bar=tempo[1], start_beat=tempo[2])
    if duration > model.max_duration:
        params["extend_stride"] = EXTEND_STRIDE * model.max_duration

    def cb(done: int, total: int) -> None:
        progress(min(1.0, done / max(total, 1)))

    model.set_generation_params(duration=duration, **params)
    if prompt is None:
        return _to_numpy(model.generate([settings.description], progress_callback=cb))
    return _to_numpy(model.generate_continuation(_prompt_tensor(prompt), prompt_rate,
                                                 [settings.description], progress_callback=cb))
