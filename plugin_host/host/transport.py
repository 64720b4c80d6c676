"""The session clock: tempo, meter and sample rate, with exact rational bar positions."""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
import math


def round_half_away(x: Fraction) -> int:
    """Round to the nearest integer, ties away from zero (PROTOCOL.md's rounding)."""
    n = math.floor(abs(x) + Fraction(1, 2))
    return n if x >= 0 else -n


@dataclass(frozen=True)
class Transport:
    """bpm counts the meter's beats (as LV2's time:beatsPerMinute); the session beat counts
    them from frame 0. bpm is rounded to a thousandth, as the server rounds it."""

    bpm: Fraction
    beats_per_bar: int
    sample_rate: int

    @classmethod
    def create(cls, bpm: float, beats_per_bar: int, sample_rate: int) -> Transport:
        if not 20 <= bpm <= 400:
            raise ValueError(f"bpm {bpm}: expected 20..400")
        if not 1 <= beats_per_bar <= 32:
            raise ValueError(f"beats_per_bar {beats_per_bar}: expected 1..32")
        if not 8000 <= sample_rate <= 192000:
            raise ValueError(f"sample_rate {sample_rate}: expected 8000..192000")
        return cls(Fraction(round(bpm * 1000), 1000), beats_per_bar, sample_rate)

    @property
    def frames_per_beat(self) -> Fraction:
        return Fraction(60 * self.sample_rate) / self.bpm

    def frame_at_beat(self, beat: Fraction | float) -> int:
        """The frame on which session beat `beat` falls (nearest, ties away from zero)."""
        return round_half_away(Fraction(beat) * self.frames_per_beat)

    def bar_frame(self, bar: int) -> int:
        """First frame of bar `bar` (bar 0 starts at frame 0)."""
        return self.frame_at_beat(bar * self.beats_per_bar)

    def beat_at_frame(self, frame: int) -> Fraction:
        """Session beat at the start of `frame`."""
        return Fraction(frame) / self.frames_per_beat

    def bar_at_frame(self, frame: int) -> int:
        """The bar that `frame` lies in."""
        return math.floor(self.beat_at_frame(frame) / self.beats_per_bar)

    def clip_frames(self, bars: int) -> int:
        """Frames of a clip of `bars` bars, exactly as the server computes them."""
        return self.bar_frame(bars)
