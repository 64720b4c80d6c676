"""The melody a ``/barforge/generate`` asks for (option ``melody``): audio to take chroma from.

``capture``: the capture ring's newest ``melody_bars`` whole bars, cut on the session's bar
lines (the ring's ``beat_at_write`` and the transport's tempo say where they lie), so bar 1 of
the melody lines up with bar 1 of the clip generated at the same tempo. ``slot``: the clip in a
shared-memory slot, as it is (a Barforge clip starts on a bar line). The model takes the
chroma of the whole mix: there is no stem separation (docs/PROTOCOL.md, appendix).
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from bridge.jobs import JobRefused, NoCapture
from bridge.osc_protocol import Options
from engine.tempo import Tempo, next_bar_line, round_half_away

# the host writes in blocks: read this much more than the bars need, in case it wrote meanwhile
READ_MARGIN_S = Fraction(1)


@dataclass(frozen=True)
class Melody:
    """Melody audio [N, C] float32 at ``sample_rate``; ``source`` for the clip's sidecar."""

    audio: np.ndarray
    sample_rate: int
    source: dict[str, Any]


def captured_bars(window_audio: np.ndarray, beat_at_end: float, sample_rate: int,
                  tempo: Tempo, bars: int) -> tuple[int, int] | None:
    """(first, end) frame indices into ``window_audio`` of the ``bars`` whole bars that end on
    the last bar line at or before ``beat_at_end`` (the session beat after the window's last
    frame); None when the window does not reach back that far."""
    last_bar = next_bar_line(beat_at_end, tempo.beats_per_bar) - tempo.beats_per_bar
    after = round_half_away((Fraction(beat_at_end) - last_bar) * tempo.seconds_per_beat
                            * sample_rate)
    end = window_audio.shape[0] - after
    first = end - tempo.frames(bars, sample_rate)
    return (first, end) if first >= 0 else None


def read_melody(segment: Any, options: Options, tempo: Tempo, default_bars: int) -> Melody:
    """The melody ``options`` name, read from ``segment``; ``JobRefused`` when it is not there."""
    if options.melody == "slot":
        assert options.melody_slot is not None
        clip = segment.read_slot(options.melody_slot)
        if clip is None:
            raise JobRefused(f"option melody_slot {options.melody_slot}: the slot holds no clip")
        return Melody(clip.audio, clip.sample_rate,
                      {"melody": "slot", "melody_slot": clip.slot, "melody_job": clip.job_id})
    bars = options.melody_bars or default_bars
    probe = segment.read_capture(1)
    if probe is None:
        raise NoCapture("option melody capture: no audio has been captured since /barforge/capture")
    rate = probe.sample_rate
    want = tempo.frames(bars, rate) + round_half_away((tempo.bar_seconds + READ_MARGIN_S) * rate)
    window = segment.read_capture(want)
    cut = captured_bars(window.audio, window.beat_at_end, rate, tempo, bars)
    if cut is None:
        raise NoCapture(f"option melody capture: the capture ring holds {window.audio.shape[0]} "
                        f"frames; {bars} whole bars before beat {window.beat_at_end:g} need more")
    first, end = cut
    return Melody(np.ascontiguousarray(window.audio[first:end], dtype=np.float32), rate,
                  {"melody": "capture", "melody_bars": bars,
                   "melody_capture_end_frame": int(window.end_frame - (window.audio.shape[0] - end)),
                   "melody_capture_sample_rate": rate})
