"""Tempo lock: bars at a tempo -> an exact number of frames (PROTOCOL.md, "Tempo").

All arithmetic is rational (``fractions.Fraction``) so a clip of ``bars`` bars is the same
length on every machine and for every host that follows the protocol page.
"""
from __future__ import annotations

from fractions import Fraction
from numbers import Rational

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


def frames_for_bars(bars: int, bpm: float | Fraction, beats_per_bar: int, sample_rate: int) -> int:
    """Frames in ``bars`` bars: ``round(bars * beats_per_bar * 60 * sample_rate / bpm)``.

    ``bpm`` counts the meter's beats per minute and is rounded to a thousandth first (see
    ``quantize_bpm``); the division is exact and the rounding is half away from zero.
    """
    if bars < 0 or beats_per_bar < 1 or sample_rate < 1:
        raise ValueError(f"frames_for_bars: bars={bars}, beats_per_bar={beats_per_bar}, "
                         f"sample_rate={sample_rate}; expected bars >= 0 and positive meter and rate")
    q = quantize_bpm(bpm)
    if q <= 0:
        raise ValueError(f"frames_for_bars: bpm {bpm} rounds to {q}; expected a positive tempo")
    return round_half_away(Fraction(bars * beats_per_bar * 60 * sample_rate) / q)


def seconds_per_beat(bpm: float | Fraction) -> Fraction:
    """Exact length of one beat in seconds at the (quantized) tempo."""
    return Fraction(60) / quantize_bpm(bpm)


def next_bar_line(beat: float, beats_per_bar: int) -> int:
    """The first bar line (a session beat that is a multiple of ``beats_per_bar``) after ``beat``.

    A beat exactly on a bar line is "now", already under way, so the next one is returned.
    """
    bar_index = int(Fraction(beat) // beats_per_bar) + 1
    return bar_index * beats_per_bar
