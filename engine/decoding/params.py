"""Generation parameters of the autoregressive (MusicGen) mode, validated once."""
from __future__ import annotations

import math
from dataclasses import dataclass

MAX_DURATION_S = 3600.0
MAX_SEED = 2**63 - 1


def _check_range(name: str, value: float, low: float, high: float,
                 low_open: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    below = value <= low if low_open else value < low
    if below or value > high:
        bracket = "(" if low_open else "["
        raise ValueError(f"{name} must be in {bracket}{low}, {high}], got {value!r}")


@dataclass(frozen=True)
class ARParams:
    """How the AR loop samples.

    ``duration``: seconds of audio in all (a continuation's prompt included, as audiocraft).
    ``top_p > 0`` overrides ``top_k``; ``use_sampling=False`` or ``temperature == 0`` is greedy.
    ``extend_stride``: seconds each new window advances by when ``duration`` exceeds the model's
    window. ``seed``: None draws a fresh seed per generation.
    """

    duration: float
    temperature: float = 1.0
    top_k: int = 250
    top_p: float = 0.0
    cfg_coef: float = 3.0
    use_sampling: bool = True
    extend_stride: float = 18.0
    seed: int | None = None

    def __post_init__(self) -> None:
        _check_range("duration", self.duration, 0.0, MAX_DURATION_S, low_open=True)
        _check_range("temperature", self.temperature, 0.0, 100.0)
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"top_k must be an integer >= 0 (0 disables it), got {self.top_k!r}")
        _check_range("top_p", self.top_p, 0.0, 1.0)
        _check_range("cfg_coef", self.cfg_coef, 0.0, 100.0)
        if not isinstance(self.use_sampling, bool):
            raise ValueError(f"use_sampling must be True or False, got {self.use_sampling!r}")
        _check_range("extend_stride", self.extend_stride, 0.0, MAX_DURATION_S, low_open=True)
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)
                                      or not 0 <= self.seed <= MAX_SEED):
            raise ValueError(f"seed must be None or an integer in [0, {MAX_SEED}], "
                             f"got {self.seed!r}")
