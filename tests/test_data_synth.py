"""The loop corpus (procedural loops and music21 chorale excerpts): exact bars and tempo in the
MIDI, exact WAV length, captions."""
import json
import re
import shutil

import mido
import numpy as np
import pytest
import soundfile as sf

from engine.recipes.data.corpus import loop_samples, synth_corpus
from engine.recipes.data.styles import STYLES, TICKS_PER_BEAT, caption_for
from engine.recipes.data.synth import compose, midi_length_ticks, repeat_midi, sample_spec

needs_fluidsynth = pytest.mark.skipif(shutil.which("fluidsynth") is None,
                                      reason="fluidsynth not installed (.ci/apt-packages-data.txt)")


def _tempos(mid: mido.MidiFile) -> list[int]:
    return [m.tempo for tr in mid.tracks for m in tr if m.type == "set_tempo"]


@pytest.mark.parametrize("index, music21_share", [(i, 0.0) for i in range(40)] + [(i, 1.0) for i in range(10)])
def test_midi_has_exact_bar_count_tempo_and_meter(index, music21_share):
    spec = sample_spec(seed=3, index=index, music21_share=music21_share)
    assert (spec.extra.get("source") == "music21") == (music21_share == 1.0)
    mid = compose(spec)
    assert _tempos(mid) == [mido.bpm2tempo(spec.bpm)]
    sigs = [m for tr in mid.tracks for m in tr if m.type == "time_signature"]
    assert [(s.numerator, s.denominator) for s in sigs] == [(spec.beats_per_bar, 4)]
    bar_ticks = spec.beats_per_bar * TICKS_PER_BEAT
    for track in mid.tracks:           # every track ends exactly on the last bar line
        assert sum(m.time for m in track) == spec.bars * bar_ticks
    notes = sum(1 for tr in mid.tracks for m in tr if m.type == "note_on")
    assert notes > 0
    assert mid.length == pytest.approx(spec.duration_s, abs=1e-3)
    assert 60 <= spec.bpm <= 180


def test_every_note_on_has_its_note_off_inside_the_loop():
    for index in range(20):
        mid = compose(sample_spec(seed=5, index=index, music21_share=0.25))
        for track in mid.tracks:
            on: dict[tuple[int, int], int] = {}
            for m in track:
                if m.type == "note_on" and m.velocity > 0:
                    on[(m.channel, m.note)] = on.get((m.channel, m.note), 0) + 1
                elif m.type in ("note_off", "note_on"):
                    on[(m.channel, m.note)] -= 1
            assert all(v == 0 for v in on.values())


def test_repeated_midi_is_twice_as_long_with_same_notes():
    mid = compose(sample_spec(seed=1, index=2))
    twice = repeat_midi(mid, 2)
    assert midi_length_ticks(twice) == 2 * midi_length_ticks(mid)
    count = lambda f: sum(1 for tr in f.tracks for m in tr if m.type == "note_on")  # noqa: E731
    assert count(twice) == 2 * count(mid)


def test_specs_are_deterministic_from_seed_and_vary_across_items():
    a = [sample_spec(7, i).to_json() for i in range(30)]
    b = [sample_spec(7, i).to_json() for i in range(30)]
    assert a == b
    assert a != [sample_spec(8, i).to_json() for i in range(30)]
    assert len({s["style"] for s in a}) >= 5
    assert len({s["bpm"] for s in a}) >= 10
    assert {s["split"] for s in (sample_spec(7, i).to_json() for i in range(100))} == {"train", "valid"}


def test_styles_cover_the_range_and_meters():
    assert min(s.bpm[0] for s in STYLES) >= 60 and max(s.bpm[1] for s in STYLES) <= 180
    assert {3, 4} <= {m for s in STYLES for m in s.meters}
    assert any(s.drums is None for s in STYLES)


def test_caption_is_in_audiocraft_format():
    assert caption_for("boom-bap drums with upright bass and rhodes", 90, "C minor") == \
        "boom-bap drums with upright bass and rhodes, C minor. bpm: 90. key: C minor."
    pattern = re.compile(r"^[a-z0-9 ,/&'-]+, [A-G][b#]? (major|minor)\. bpm: (\d+)\. key: ([A-G][b#]? (major|minor))\.$")
    for i in range(50):
        spec = sample_spec(11, i, music21_share=0.1)
        m = pattern.match(spec.caption)
        assert m, spec.caption
        assert int(m.group(2)) == spec.bpm and m.group(3) == spec.key
        for part in spec.parts.values():
            assert part["name"].split()[-1] in spec.caption


@needs_fluidsynth
def test_rendered_corpus_has_exact_lengths_sidecars_and_sound(tmp_path):
    items = synth_corpus(tmp_path, hours=0.006, seed=4, jobs=2, progress=False, music21_share=0.5)
    assert {s["extra"].get("source") for s in items} == {None, "music21"}
    assert sum(s["duration_s"] for s in items) >= 0.004 * 3600
    index = [json.loads(line) for line in (tmp_path / "index.jsonl").read_text().splitlines()]
    assert index == items
    for side in items:
        wav, sr = sf.read(tmp_path / side["audio"], dtype="float32")
        assert sr == 32000 and wav.ndim == 1
        assert len(wav) == loop_samples(side["bars"], side["beats_per_bar"], side["bpm"], 32000)
        assert len(wav) == round(side["duration_s"] * 32000)
        assert np.sqrt(np.mean(wav ** 2)) > 0.01          # not silence
        mid = mido.MidiFile(tmp_path / side["midi"])
        assert _tempos(mid) == [mido.bpm2tempo(side["bpm"])]
        assert json.loads((tmp_path / f"{side['id']}.json").read_text()) == side
