"""Generation parameters of the masked (MAGNeT) mode, validated once.

Defaults are audiocraft's ``MAGNeT.set_generation_params``: 20/10/10/10 decoding steps, spans of
3 frames arranged without overlap, CFG annealed 10 -> 1, temperature 3.0 annealed linearly to 0
(floor 0.01), nucleus sampling with top_p 0.9.
"""
from __future__ import annotations

from dataclasses import dataclass

from engine.config_dict import MAX_DURATION_S, Seed, check_bool, check_int, check_range, check_seed

SPAN_ARRANGEMENTS = ("nonoverlap", "stride1")
SPAN_SCORINGS = ("max", "prod")
MAX_DECODING_STEPS = 1000


@dataclass(frozen=True)
class MagnetParams:
    """How the masked loop decodes.

    ``duration``: seconds of audio in all (a continuation's prompt included); the frame count is
    trimmed down to a multiple of ``span_len``. ``decoding_steps``: iterations per codebook,
    one entry per codebook (0..K-1, checked against the model by the loop).
    ``span_arrangement``: ``"nonoverlap"`` (spans of ``span_len`` frames on a fixed grid) or
    ``"stride1"`` (overlapping spans starting at every frame). ``span_scoring``: how a span's
    tokens' confidences make its score: ``"max"`` (1 - the highest probability) or ``"prod"``
    (sum of -log probability); None picks ``"max"`` for nonoverlap and ``"prod"`` for stride1,
    which only supports ``"prod"``. CFG is annealed from ``max_cfg_coef`` to ``min_cfg_coef``
    with the masking rate; ``temperature`` is annealed linearly to 0 over a stage's steps when
    ``anneal_temperature``. ``top_p > 0`` overrides ``top_k``. ``rescore_weight`` w in [0, 1]:
    the weight of an external AR model's log-probability in a candidate's confidence,
    ``(1 - w) * log p_magnet + w * log p_ar`` (0 disables rescoring). ``seed``: None draws a
    fresh seed per generation; a tuple gives every batch row its own (``row_seeds``).
    """

    duration: float
    decoding_steps: tuple[int, ...] = (20, 10, 10, 10)
    span_len: int = 3
    span_arrangement: str = "nonoverlap"
    span_scoring: str | None = None
    max_cfg_coef: float = 10.0
    min_cfg_coef: float = 1.0
    temperature: float = 3.0
    anneal_temperature: bool = True
    top_p: float = 0.9
    top_k: int = 0
    use_sampling: bool = True
    rescore_weight: float = 0.0
    seed: Seed = None

    def __post_init__(self) -> None:
        check_range("duration", self.duration, 0.0, MAX_DURATION_S, low_open=True)
        steps = self.decoding_steps
        if isinstance(steps, (str, bytes)) or not hasattr(steps, "__iter__"):
            raise ValueError(f"decoding_steps must be a sequence of integers, got {steps!r}")
        steps = tuple(steps)
        if not steps or any(isinstance(s, bool) or not isinstance(s, int)
                            or not 1 <= s <= MAX_DECODING_STEPS for s in steps):
            raise ValueError(f"decoding_steps must be a non-empty sequence of integers in "
                             f"[1, {MAX_DECODING_STEPS}] (one per codebook), got {self.decoding_steps!r}")
        object.__setattr__(self, "decoding_steps", steps)
        check_int("span_len", self.span_len, 1, 100)
        if self.span_arrangement not in SPAN_ARRANGEMENTS:
            raise ValueError(f"span_arrangement must be one of {SPAN_ARRANGEMENTS}, "
                             f"got {self.span_arrangement!r}")
        if self.span_scoring is not None and self.span_scoring not in SPAN_SCORINGS:
            raise ValueError(f"span_scoring must be None or one of {SPAN_SCORINGS}, "
                             f"got {self.span_scoring!r}")
        if self.span_arrangement == "stride1" and self.span_scoring == "max":
            raise ValueError("span_scoring 'max' needs span_arrangement 'nonoverlap'; "
                             "stride1 spans are scored with 'prod'")
        check_range("max_cfg_coef", self.max_cfg_coef, 0.0, 100.0)
        check_range("min_cfg_coef", self.min_cfg_coef, 0.0, 100.0)
        check_range("temperature", self.temperature, 0.0, 100.0)
        for name in ("anneal_temperature", "use_sampling"):
            check_bool(name, getattr(self, name))
        check_range("top_p", self.top_p, 0.0, 1.0)
        check_int("top_k", self.top_k, 0, note=" (0 disables it)")
        check_range("rescore_weight", self.rescore_weight, 0.0, 1.0)
        check_seed(self.seed)

    @property
    def scoring(self) -> str:
        """The span scoring in effect (``span_scoring`` or the arrangement's default)."""
        if self.span_scoring is not None:
            return self.span_scoring
        return "max" if self.span_arrangement == "nonoverlap" else "prod"

    @property
    def total_steps(self) -> int:
        """Forward passes of one generation: the sum of ``decoding_steps``."""
        return sum(self.decoding_steps)
