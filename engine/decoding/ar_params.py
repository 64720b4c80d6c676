"""Generation parameters of the autoregressive (MusicGen) mode, validated once."""
from __future__ import annotations

from dataclasses import dataclass

from engine.config_dict import MAX_DURATION_S, Seed, check_bool, check_int, check_range, check_seed


@dataclass(frozen=True)
class ARParams:
    """How the AR loop samples.

    ``duration``: seconds of audio in all (a continuation's prompt included, as audiocraft).
    ``top_p > 0`` overrides ``top_k``; ``use_sampling=False`` or ``temperature == 0`` is greedy.
    ``extend_stride``: seconds each new window advances by when ``duration`` exceeds the model's
    window. ``seed``: None draws a fresh seed per generation; a tuple
    gives every batch row its own (engine/decoding/sampling.py ``row_seeds``).
    """

    duration: float
    temperature: float = 1.0
    top_k: int = 250
    top_p: float = 0.0
    cfg_coef: float = 3.0
    use_sampling: bool = True
    extend_stride: float = 18.0
    seed: Seed = None

    def __post_init__(self) -> None:
        check_range("duration", self.duration, 0.0, MAX_DURATION_S, low_open=True)
        check_range("temperature", self.temperature, 0.0, 100.0)
        check_int("top_k", self.top_k, 0, note=" (0 disables it)")
        check_range("top_p", self.top_p, 0.0, 1.0)
        check_range("cfg_coef", self.cfg_coef, 0.0, 100.0)
        check_bool("use_sampling", self.use_sampling)
        check_range("extend_stride", self.extend_stride, 0.0, MAX_DURATION_S, low_open=True)
        check_seed(self.seed)
