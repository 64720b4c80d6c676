"""Chorale excerpts from music21's corpus: the notes are the chorale's, moved by the stated
transposition, whole bars from a bar line; the key label moves with them; shares are exact."""
import mido
import pytest

from engine.recipes.data.corpus import synth_corpus
from engine.recipes.data.music21_excerpts import _excerpt, _key_and_chords, load_chorale
from engine.recipes.data.styles import CHANNELS, TICKS_PER_BEAT
from engine.recipes.data.synth import compose, sample_spec

music21 = pytest.importorskip("music21")


def _track_notes(mid: mido.MidiFile, channel: int) -> list[tuple[int, int]]:
    out, now = [], 0
    for track in mid.tracks[1:]:
        now = 0
        for m in track:
            now += m.time
            if m.type == "note_on" and m.velocity > 0 and m.channel == channel:
                out.append((now, m.note))
    return sorted(out)


@pytest.mark.parametrize("index", range(4))
def test_the_lead_plays_the_chorale_soprano_transposed(index):
    spec = sample_spec(seed=21, index=index, music21_share=1.0)
    start, shift = spec.extra["first_beat"], spec.extra["transpose"]
    end = start + spec.bars * spec.beats_per_bar
    score = music21.corpus.parse(spec.extra["piece"]).stripTies()
    soprano = next(p for p in score.parts if p.partName.strip().lower() == "soprano")
    want = sorted((round(max(n.offset - start, 0) * TICKS_PER_BEAT), n.pitch.midi + shift)
                  for n in soprano.flatten().notes if n.offset < end and n.offset + n.quarterLength > start)
    assert want and _track_notes(compose(spec), CHANNELS["lead"]) == want
    measure_starts = {float(m.offset) for m in soprano.getElementsByClass("Measure")}
    assert start in measure_starts                                   # cut on a bar line
    assert -5 <= shift <= 6


def test_the_key_label_moves_with_the_transposition():
    beats, full, voices = load_chorale("bach/bwv10.7")
    excerpt = _excerpt(voices, full[1], 4 * beats)
    tonic, mode, chords, names = _key_and_chords(excerpt, beats, 4, 0)
    tonic3, mode3, chords3, names3 = _key_and_chords(excerpt, beats, 4, 3)
    assert (tonic3, mode3, names3) == ((tonic + 3) % 12, mode, names)
    assert chords3 == [sorted((p + 3) % 12 for p in c) for c in chords]


def test_the_share_picks_items_without_changing_the_others():
    plain = [sample_spec(9, i) for i in range(60)]
    mixed = [sample_spec(9, i, music21_share=0.3) for i in range(60)]
    from_m21 = [m.extra.get("source") == "music21" for m in mixed]
    assert 8 <= sum(from_m21) <= 30
    assert all(m.to_json() == p.to_json() for m, p, f in zip(mixed, plain, from_m21) if not f)
    assert all(m.caption.endswith(f"key: {m.key}.") and "bach chorale" in m.caption
               for m, f in zip(mixed, from_m21) if f)


def test_a_share_outside_0_1_is_refused(tmp_path):
    with pytest.raises(ValueError, match="--music21"):
        synth_corpus(tmp_path, hours=0.01, seed=1, music21_share=1.5)
