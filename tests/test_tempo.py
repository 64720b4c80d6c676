"""frames_for_bars: exact rational bars -> frames, as PROTOCOL.md defines it."""
from fractions import Fraction
import math

import numpy as np
import pytest

from engine.tempo import frames_for_bars, next_bar_line, quantize_bpm, round_half_away

BPMS = [60, 72.5, 90, 93.7, 100, 120, 128, 133.333, 140, 174, 199.999, 200]


def reference(bars, bpm, bpb, sr):
    """Independent: decimal string of the bpm -> Fraction, floor(x + 1/2) for positive x."""
    q = Fraction(str(round(bpm, 3)))
    x = Fraction(bars * bpb * 60 * sr) / q
    return math.floor(x + Fraction(1, 2))


@pytest.mark.parametrize("sr", [44100, 48000])
@pytest.mark.parametrize("bpm", BPMS)
def test_grid_matches_fraction_reference(sr, bpm):
    for bars in range(1, 17):
        for bpb in (3, 4, 7):
            assert frames_for_bars(bars, bpm, bpb, sr) == reference(bars, bpm, bpb, sr)


def test_hand_computed_values():
    assert frames_for_bars(1, 120, 4, 48000) == 96000
    assert frames_for_bars(1, 128, 4, 44100) == 82688  # 82687.5 rounds away from zero
    assert frames_for_bars(1, 93.7, 4, 48000) == 122946  # 11520000 / 93.7 = 122945.57...
    assert frames_for_bars(16, 60, 4, 44100) == 16 * 4 * 44100
    assert frames_for_bars(3, 90, 3, 48000) == 288000


def test_float32_bpm_rounds_to_a_thousandth():
    received = float(np.float32(60.2))
    assert received != 60.2
    assert quantize_bpm(received) == Fraction(602, 10)
    assert frames_for_bars(1, received, 4, 48000) == frames_for_bars(1, Fraction(602, 10), 4, 48000)


def test_ties_round_away_from_zero():
    assert round_half_away(Fraction(5, 2)) == 3
    assert round_half_away(Fraction(-5, 2)) == -3
    assert round_half_away(Fraction(7, 3)) == 2


def test_length_is_additive_to_within_one_frame():
    for bpm in BPMS:
        one = frames_for_bars(1, bpm, 4, 44100)
        assert abs(frames_for_bars(8, bpm, 4, 44100) - 8 * one) <= 4


def test_bad_tempo_is_refused():
    with pytest.raises(ValueError, match="bpm"):
        frames_for_bars(1, 0.0001, 4, 48000)


def test_next_bar_line_is_strictly_after():
    assert next_bar_line(7.9, 4) == 8
    assert next_bar_line(8.0, 4) == 12
    assert next_bar_line(0.0, 3) == 3
