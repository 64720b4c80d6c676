"""Tempo: BPM range and quantisation, exact frames for bars, and the frames to ask a model for.

All arithmetic is rational (``fractions.Fraction``) so a clip of ``bars`` bars is the same
length on every machine and for every caller: the CLI, the Python API and the bridge use this
module alone (docs/PROTOCOL.md, "Tempo"). A request's tempo is one :class:`Tempo` value passed
with it, never state kept on a model.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from numbers import Rational
from typing import Any

BPM_RANGE = (20, 400)
BEATS_PER_BAR_RANGE = (1, 32)
SAMPLE_RATE_RANGE = (8000, 192000)
BARS_RANGE = (1, 64)


def quantize_bpm(received: float | int | Fraction) -> Fraction:
    """The bpm as the protocol uses it: the received value rounded to a thousandth.

    Exactly ``Fraction(round(received * 1000), 1000)`` as PROTOCOL.md writes it, so a float32
    60.2 (60.200000762...) is 60.2. A ``Fraction`` is taken as already exact.
    """
    if isinstance(received, Rational):
        return Fraction(received)
    return Fraction(round(received * 1000), 1000)


def round_half_away(x: Fraction) -> int:
    """Round a rational to the nearest integer, ties away from zero."""
    n = (abs(x.numerator) * 2 + x.denominator) // (2 * x.denominator)
    return n if x >= 0 else -n


def _is_number(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float, Rational))


def check_integer(name: str, value: object, bounds: tuple[int, int]) -> int:
    """``value`` as an int in ``bounds`` (inclusive); ValueError naming ``name`` otherwise."""
    low, high = bounds
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be an integer in [{low}, {high}], got {value!r}")
    return value


def check_bpm(value: object, name: str = "bpm") -> Fraction:
    """The quantised tempo of ``value`` when it lies in ``BPM_RANGE``; ValueError otherwise."""
    low, high = BPM_RANGE
    if not _is_number(value) or not math.isfinite(value):  # type: ignore[arg-type]
        raise ValueError(f"{name} must be a number in [{low}, {high}], got {value!r}")
    if not low - 1 <= value <= high + 1:  # type: ignore[operator]
        # bounded before rounding: a bpm of 1e306 has no thousandth to round to
        raise ValueError(f"{name} must be in [{low}, {high}], got {value!r}")
    bpm = quantize_bpm(value)  # type: ignore[arg-type]
    if not low <= bpm <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value!r}")
    return bpm


@dataclass(frozen=True)
class Tempo:
    """A request's tempo: ``bpm`` (quantised to a thousandth, counted in the meter's beats),
    ``beats_per_bar`` and ``start_beat``, the beat in the bar of the first frame the model
    reads (of the prompt, when continuing). ValueError names a field out of range."""

    bpm: Fraction
    beats_per_bar: int = 4
    start_beat: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "bpm", check_bpm(self.bpm))
        check_integer("beats_per_bar", self.beats_per_bar, BEATS_PER_BAR_RANGE)
        if not _is_number(self.start_beat) or not math.isfinite(self.start_beat):
            raise ValueError(f"start_beat must be a finite number of beats, "
                             f"got {self.start_beat!r}")
        # only the position in the bar matters; reducing it keeps float32 phases exact
        object.__setattr__(self, "start_beat", float(self.start_beat) % self.beats_per_bar)

    @property
    def seconds_per_beat(self) -> Fraction:
        """Exact length of one beat in seconds."""
        return Fraction(60) / self.bpm

    @property
    def bar_seconds(self) -> Fraction:
        """Exact length of one bar of this meter in seconds."""
        return self.beats_per_bar * self.seconds_per_beat

    def frames(self, bars: int, sample_rate: int) -> int:
        """Frames in ``bars`` bars: ``round(bars * beats_per_bar * 60 * sample_rate / bpm)``,
        ties away from zero. ``bars`` and ``sample_rate`` must lie in their ranges."""
        check_integer("bars", bars, BARS_RANGE)
        check_integer("sample_rate", sample_rate, SAMPLE_RATE_RANGE)
        return round_half_away(bars * self.bar_seconds * sample_rate)

    def beats_per_frame(self, frame_rate: float) -> float:
        """Beats that pass in one codec frame at ``frame_rate`` frames per second."""
        return float(self.bpm) / 60.0 / frame_rate

    @property
    def caption_bpm(self) -> int | float:
        """The bpm as the caption states it (``bpm: 140`` or ``bpm: 105.2``)."""
        return int(self.bpm) if self.bpm.denominator == 1 else float(self.bpm)


def frames_for_bars(bars: int, bpm: float | Fraction, beats_per_bar: int, sample_rate: int) -> int:
    """Frames in ``bars`` bars at ``bpm`` (see :meth:`Tempo.frames`)."""
    return Tempo(bpm, beats_per_bar).frames(bars, sample_rate)  # type: ignore[arg-type]


def next_bar_line(beat: float, beats_per_bar: int) -> int:
    """The first bar line (a session beat that is a multiple of ``beats_per_bar``) after ``beat``.

    A beat exactly on a bar line is "now", already under way, so the next one is returned.
    """
    bar_index = int(Fraction(beat) // beats_per_bar) + 1
    return bar_index * beats_per_bar


def codec_frames_for(samples: int, sample_rate: int, model_sample_rate: int, frame_rate: float,
                     multiple: int = 1) -> int:
    """Codec frames to ask a model for so that its audio, resampled (soxr) from
    ``model_sample_rate`` to ``sample_rate``, holds at least ``samples`` samples.

    soxr returns at least ``floor(n * sample_rate / model_sample_rate)`` samples for n in, so
    ``ceil(samples * model_rate / rate)`` model samples suffice; a codec frame is
    ``model_rate / frame_rate`` of them. ``multiple``: the model decodes whole groups of this
    many frames and drops a partial one (MAGNeT's spans), so the count is rounded up to it.
    """
    if samples < 0:
        raise ValueError(f"samples must be >= 0, got {samples}")
    model_samples = math.ceil(Fraction(samples * model_sample_rate, sample_rate))
    frames_per_sample = Fraction(frame_rate).limit_denominator(10_000) / model_sample_rate
    frames = max(1, math.ceil(model_samples * frames_per_sample))
    return -(-frames // multiple) * multiple


def seconds_for_frames(frames: int, frame_rate: float) -> float:
    """The ``duration`` that makes a model decode exactly ``frames`` codec frames: models take
    ``int(duration * frame_rate)``, so half a frame more keeps float rounding off the count."""
    return (frames + 0.5) / frame_rate


def duration_for(samples: int, sample_rate: int, model: Any, min_frames: int = 0) -> float:
    """The ``duration`` to give ``model.set_generation_params`` so that its audio, resampled to
    ``sample_rate``, holds at least ``samples`` samples (and at least ``min_frames`` codec
    frames: a continuation's prompt plus one). ``model``: anything with ``sample_rate``,
    ``frame_rate`` and ``frames_multiple`` (its current generation parameters')."""
    multiple = int(model.frames_multiple)
    frames = codec_frames_for(samples, sample_rate, int(model.sample_rate),
                              float(model.frame_rate), multiple)
    frames = max(frames, -(-min_frames // multiple) * multiple)
    return seconds_for_frames(frames, float(model.frame_rate))
