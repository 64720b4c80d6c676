"""Live continuation timing (bridge/continuation.py): the lead rule and where the clip lands."""
from fractions import Fraction

import pytest
import torch

from bridge import continuation
from bridge.continuation import LEAD_BARS, MAX_BARS_SKIPPED, SAFETY
from engine.conditioners.text import TextCache

SR = 48000
FAST = 0.01   # wall seconds per audio second: generation takes next to no time


def lands_on(plan, beat_at_end, bpm, prompt_s=Fraction(4)):
    """The session beat at the clip's first frame in the generated audio (prompt included)."""
    start = continuation.clip_start_frame(prompt_s, plan.gap_s, SR)
    seconds_after_prompt = Fraction(start, SR) - prompt_s
    return Fraction(beat_at_end) + seconds_after_prompt * Fraction(bpm) / 60


@pytest.mark.parametrize("bpm", [120, 174])
@pytest.mark.parametrize("bar_left", [0.05, 0.3, 0.49])
def test_less_than_the_lead_left_starts_one_bar_later_on_a_bar_line(bpm, bar_left):
    beats_per_bar = 4
    beat_at_end = 16 - bar_left * beats_per_bar
    p = continuation.plan(beat_at_end, 0.0, Fraction(bpm), beats_per_bar, clip_s=2.0,
                          margin_s=0.25, seconds_per_second=FAST, now=0.0)
    assert p.start_beat == 20 and p.bars_skipped == 1 and p.skipped_bar
    # the clip's first frame is that bar line, to within one frame
    assert abs(lands_on(p, beat_at_end, bpm) - 20) <= Fraction(bpm, 60 * SR)


@pytest.mark.parametrize("bpm", [120, 174])
def test_more_than_the_lead_left_and_fast_enough_takes_the_next_bar_line(bpm):
    p = continuation.plan(12.5, 0.0, Fraction(bpm), 4, clip_s=2.0, margin_s=0.25,
                          seconds_per_second=FAST, now=0.0)
    assert p.start_beat == 16 and p.bars_skipped == 0
    assert abs(lands_on(p, 12.5, bpm) - 16) <= Fraction(bpm, 60 * SR)


@pytest.mark.parametrize("bpm", [120, 174])
@pytest.mark.parametrize("speed", [0.1, 0.3, 0.5])
@pytest.mark.parametrize("beat_at_end", [12.1, 13.9, 15.0, 15.9])
def test_the_estimated_reply_arrives_with_the_lead_left(bpm, speed, beat_at_end):
    """Generation taking exactly SAFETY x the estimate still leaves LEAD_BARS of the bar."""
    beats_per_bar, clip_s = 4, 4 * 60 / bpm
    elapsed = 0.05   # the capture was read this long before the plan
    p = continuation.plan(beat_at_end, 0.0, Fraction(bpm), beats_per_bar, clip_s, 0.25,
                          speed, now=elapsed)
    assert p.start_beat % beats_per_bar == 0 and p.start_beat > beat_at_end
    assert p.bars_skipped <= MAX_BARS_SKIPPED
    done_s = elapsed + SAFETY * speed * p.new_s   # after the end of the capture
    beat_at_done = beat_at_end + done_s * bpm / 60
    assert continuation.bar_fraction_left(p.start_beat, beat_at_done, beats_per_bar) \
        >= LEAD_BARS - 1e-9
    # and no earlier bar line would have done
    if p.bars_skipped:
        earlier = p.start_beat - beats_per_bar
        earlier_new_s = p.new_s - beats_per_bar * 60 / bpm
        earlier_done = beat_at_end + (elapsed + SAFETY * speed * earlier_new_s) * bpm / 60
        assert continuation.bar_fraction_left(earlier, earlier_done, beats_per_bar) < LEAD_BARS


def test_a_mode_too_slow_for_any_bar_line_takes_the_least_late_one():
    # slower than real time (with the margin): every later bar line is later still
    p = continuation.plan(13.0, 0.0, Fraction(120), 4, 2.0, 0.25, seconds_per_second=2.0, now=0.0)
    assert p.start_beat == 16 and p.bars_skipped == 0
    # faster than real time but short of the lead before any of them: the latest is least late
    p = continuation.plan(13.0, 0.0, Fraction(120), 4, 2.0, 0.25, seconds_per_second=0.75, now=0.0)
    assert p.bars_skipped == MAX_BARS_SKIPPED and p.start_beat == 16 + 4 * MAX_BARS_SKIPPED


class CountingEncoder:
    def __init__(self):
        self.calls = 0

    def encode(self, texts):
        self.calls += 1
        hidden = torch.stack([torch.full((2, 3), float(len(t))) for t in texts])
        return hidden, torch.ones(len(texts), 2, dtype=torch.int64)


def test_text_cache_encodes_a_repeated_prompt_once_and_keeps_the_last_eight():
    enc, cache = CountingEncoder(), TextCache(8)
    first, _ = cache.encode(enc, ["a groove", ""])
    first.zero_()                       # a caller changing its copy leaves the cache intact
    again, mask = cache.encode(enc, ["a groove", ""])
    assert enc.calls == 1 and again[0, 0, 0] == 8.0 and mask.dtype == torch.int64
    for i in range(8):
        cache.encode(enc, [f"prompt {i}"])
    assert enc.calls == 9
    cache.encode(enc, ["a groove", ""])      # pushed out by the eight newer prompts
    assert enc.calls == 10
    cache.encode(enc, ["prompt 7"])          # still held
    assert enc.calls == 10
    other = CountingEncoder()
    cache.encode(other, ["prompt 7"])   # another encoder is never served the first one's output
    assert other.calls == 1


def test_warm_up_runs_each_length_in_every_mode_and_estimates_from_the_last():
    from bridge.renderer import Renderer
    from engine.api import debug_magnet
    from engine.sample_generation import generate_samples
    model = debug_magnet()
    asked = []

    def recording(request, progress):
        asked.append((request.params["mode"], request.samples / request.sample_rate,
                      request.prompt.shape[0] / request.prompt_rate))
        return generate_samples(model, request, progress)

    renderer = Renderer(model, "debug-magnet", segment=None, store=None, generate=recording)
    renderer.warm_up((0.5, 1.0))
    prompt_s = continuation.PROMPT_SECONDS
    assert asked == [(mode, pytest.approx(prompt_s + s), pytest.approx(prompt_s))
                     for mode in model.supported_modes for s in (0.5, 1.0)]
    speeds = renderer.speed.snapshot()
    assert set(speeds) == set(model.supported_modes) and all(v > 0 for v in speeds.values())
