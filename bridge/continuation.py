"""Live continuation timing: which bar line a continuation can start on, and where it lies.

Time runs on two clocks: the capture ring's frames (with the session beat at its write
position) and the generated audio. ``plan`` ties them: the prompt is the newest captured
window, its end is the session beat ``beat_at_end``; the clip starts at a bar line
``start_beat`` which lies ``(start_beat - beat_at_end) * 60 / bpm`` seconds after the end of
the prompt in the generated audio.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from fractions import Fraction

from engine import tempo

PROMPT_SECONDS = 4.0   # the window of live audio the model continues from
SAFETY = 1.25          # margin on the generation-time estimate
# The reply must arrive with at least this much of the bar before the clip's first bar line
# still to play, so the host can schedule it without a scramble.
LEAD_BARS = 0.5
# The latest bar line a continuation may start on, counted after the next one: a later start
# means a longer wait for the player and more audio to generate.
MAX_BARS_SKIPPED = 4
INITIAL_SECONDS_PER_SECOND = 2.0


class SpeedEstimate:
    """Measured wall seconds per second of generated audio, per decoding mode (thread-safe)."""

    def __init__(self) -> None:
        self._rate: dict[str, float] = {}
        self._lock = threading.Lock()

    def record(self, mode: str, wall_s: float, audio_s: float) -> None:
        """Fold one measurement in (an exponential average; the first sets it)."""
        if audio_s <= 0:
            return
        r = wall_s / audio_s
        with self._lock:
            old = self._rate.get(mode)
            self._rate[mode] = r if old is None else 0.5 * old + 0.5 * r

    def seconds_per_second(self, mode: str) -> float:
        with self._lock:
            return self._rate.get(mode, INITIAL_SECONDS_PER_SECOND)

    def fastest(self, modes: tuple[str, ...]) -> str:
        """The supported mode measured fastest (the first of ``modes`` when none is measured)."""
        with self._lock:
            known = [m for m in modes if m in self._rate]
            return min(known, key=self._rate.__getitem__) if known else modes[0]

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            return dict(self._rate)

    def update(self, snapshot: dict[str, float]) -> None:
        """Take another estimate's values (the generator process measures; the server asks)."""
        with self._lock:
            self._rate.update(snapshot)


@dataclass(frozen=True)
class Plan:
    """Where a continuation starts and how much to generate.

    ``start_beat``: the bar line the clip starts on. ``gap_s``: seconds from the end of the
    prompt to ``start_beat``. ``new_s``: seconds of audio to generate after the prompt (gap,
    clip and seam margin). ``bars_skipped``: bar lines passed over because the reply could not
    arrive with ``LEAD_BARS`` of a bar left before them (0: the next bar line).
    """

    start_beat: int
    gap_s: Fraction
    new_s: float
    bars_skipped: int

    @property
    def skipped_bar(self) -> bool:
        """Whether the next bar line was too close to make."""
        return self.bars_skipped > 0


def prompt_frames(available: int, capture_rate: int, frame_rate: Fraction | None,
                  max_seconds: float = PROMPT_SECONDS) -> int:
    """Capture frames to use as the prompt: at most ``max_seconds``, a whole number of codec frames.

    Cutting at a codec frame boundary makes the prompt's end fall exactly where the model's
    continuation begins.
    """
    n = min(available, int(max_seconds * capture_rate))
    if frame_rate is None:
        return n
    codec_frames = int(Fraction(n, capture_rate) * frame_rate)
    return int(Fraction(codec_frames) / frame_rate * capture_rate)


def plan(beat_at_end: float, read_at: float, bpm: Fraction, beats_per_bar: int, clip_s: float,
         margin_s: float, seconds_per_second: float, now: float | None = None) -> Plan:
    """Choose the first bar line after ``beat_at_end`` that the reply can reach with
    ``LEAD_BARS`` of a bar to spare (the lead rule), at most ``MAX_BARS_SKIPPED`` bars later.

    ``read_at``: monotonic time the capture was read (the session beat was ``beat_at_end``
    then and moves on at ``bpm``). A bar line is reachable when the estimated generation time
    (``SAFETY`` times ``seconds_per_second`` times the audio to generate, which grows with the
    gap) plus the lead fits in the time left before it. In particular a request made with less
    than ``LEAD_BARS`` of the current bar left always starts at the bar line after next or later.
    When none up to ``MAX_BARS_SKIPPED`` is reachable, the one with the most estimated time to
    spare (the least late).
    """
    now = time.monotonic() if now is None else now
    meter = tempo.Tempo(bpm, beats_per_bar)
    spb = meter.seconds_per_beat
    lead_s = LEAD_BARS * float(meter.bar_seconds)
    elapsed = Fraction(now - read_at)
    first = tempo.next_bar_line(beat_at_end, beats_per_bar)

    def at(skipped: int) -> Plan:
        start = first + skipped * beats_per_bar
        gap_s = (start - Fraction(beat_at_end)) * spb
        return Plan(start, gap_s, float(gap_s) + clip_s + margin_s, skipped)

    def spare_s(p: Plan) -> float:
        """Estimated seconds between the reply and the bar line, beyond the lead."""
        return float(p.gap_s - elapsed) - SAFETY * seconds_per_second * p.new_s - lead_s

    plans = [at(skipped) for skipped in range(MAX_BARS_SKIPPED + 1)]
    reachable = [p for p in plans if spare_s(p) >= 0]
    return reachable[0] if reachable else max(plans, key=spare_s)


def clip_start_frame(prompt_end_s: Fraction, gap_s: Fraction, sample_rate: int) -> int:
    """First frame of the clip in the generated audio (prompt included) at ``sample_rate``."""
    return tempo.round_half_away((prompt_end_s + gap_s) * sample_rate)


def bar_fraction_left(start_beat: float, beat_now: float, beats_per_bar: int) -> float:
    """How much of the bar before ``start_beat`` was left at ``beat_now`` (negative: late)."""
    return (start_beat - beat_now) / beats_per_bar
