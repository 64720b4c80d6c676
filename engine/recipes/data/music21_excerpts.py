"""Bach chorale excerpts from music21's bundled corpus, arranged as loops for the synth corpus.

The procedural loops' melodies are random walks over four-chord progressions; the chorales add
real voice leading, cadences and modulations. An item takes whole bars of one chorale (pickup
and short final measures are never used), transposes them to a random key, and plays the four
voices with a style's instruments (bass voice on its bass, alto and tenor on its comping
instrument, soprano on its lead), over that style's drums when it has them. The key in the
caption is music21's analysis of the transposed excerpt, not the chorale's key signature, so
an excerpt that modulates is labelled with what it plays.

Needs ``music21`` (the ``recipes`` extra; its wheel carries the corpus, no download).
"""
from __future__ import annotations

import random
from functools import lru_cache

from engine.conditioners.key import KEY_NAMES
from engine.recipes.data.styles import (BASSES, COMPS, KITS, LEADS, PADS, STYLES, TICKS_PER_BEAT,
                                        LoopSpec, Note, caption_for, describe_parts, loop_bars)

VOICES = ("soprano", "alto", "tenor", "bass")
ROLE_OF_VOICE = {"soprano": "lead", "alto": "comp", "tenor": "comp", "bass": "bass"}
PieceNotes = tuple[tuple[float, float, int, str], ...]  # (offset, length in quarters, MIDI, spelling)


def _music21():
    try:
        import music21
    except ImportError as e:
        raise ImportError("music21 excerpts need the music21 package: pip install -e '.[recipes]' "
                          "(or set --music21 0)") from e
    return music21


@lru_cache(maxsize=1)
def chorale_names() -> tuple[str, ...]:
    """Corpus names ("bach/bwv10.7") of the bundled Bach chorales in MusicXML, sorted."""
    m21 = _music21()
    paths = m21.corpus.getComposer("bach")
    return tuple(sorted(f"bach/{p.stem}" for p in paths if p.suffix == ".mxl"))


@lru_cache(maxsize=None)
def load_chorale(name: str) -> tuple[int, tuple[float, ...], dict[str, PieceNotes]] | None:
    """(beats per bar, offsets of its full bars, notes per voice) of chorale ``name``; None when
    it is not a four-voice chorale in 3/4 or 4/4 (some carry only instrumental parts)."""
    m21 = _music21()
    score = m21.corpus.parse(name).stripTies()
    voices: dict[str, PieceNotes] = {}
    for part in score.parts:
        voice = (part.partName or "").strip().lower()
        if voice in VOICES and voice not in voices:
            flat = part.flatten()
            voices[voice] = tuple((float(n.offset), float(n.quarterLength), int(n.pitch.midi),
                                   n.pitch.nameWithOctave) for n in flat.notes if n.isNote)
    ts = score.recurse().getElementsByClass("TimeSignature").first()
    if len(voices) < 4 or ts is None or ts.denominator != 4 or ts.numerator not in (3, 4):
        return None
    measures = score.parts[0].getElementsByClass("Measure")
    full = tuple(float(m.offset) for m in measures if float(m.duration.quarterLength) == ts.numerator)
    return ts.numerator, full, voices


def _runs(starts: tuple[float, ...], beats: int, bars: int) -> list[float]:
    """Offsets where ``bars`` consecutive full bars begin."""
    ok = set(starts)
    return [s for s in starts if all(s + i * beats in ok for i in range(bars))]


def _excerpt(voices: dict[str, PieceNotes], start: float, length: float) -> dict[str, PieceNotes]:
    """Each voice's notes sounding in [start, start + length), moved to 0 and cut to the window."""
    out = {}
    for voice, notes in voices.items():
        kept = []
        for off, dur, pitch, name in notes:
            a, b = max(off, start), min(off + dur, start + length)
            if b > a:
                kept.append((a - start, b - a, pitch, name))
        out[voice] = tuple(kept)
    return out


def _key_and_chords(excerpt: dict[str, PieceNotes], beats: int, bars: int, transpose: int
                    ) -> tuple[int, str, list[list[int]], list[str]]:
    """(tonic pitch class, mode, pitch classes sounding on each downbeat, their roman numerals)
    after ``transpose`` semitones. The analysis runs on the score's own spelling (roman numerals
    need it) and is moved with the tonic: neither depends on the transposition."""
    m21 = _music21()
    stream = m21.stream.Stream()
    for notes in excerpt.values():
        for off, dur, _, name in notes:
            stream.insert(off, m21.note.Note(name, quarterLength=dur))
    key = stream.analyze("key")
    chords, names = [], []
    for bar in range(bars):
        t = bar * beats
        sounding = {(p, name) for notes in excerpt.values() for off, dur, p, name in notes if off <= t < off + dur}
        chords.append(sorted({(p + transpose) % 12 for p, _ in sounding}))
        names.append(m21.roman.romanNumeralFromChord(m21.chord.Chord(sorted(n for _, n in sounding)), key).figure
                     if sounding else "-")
    return (key.tonic.pitchClass + transpose) % 12, key.mode, chords, names


def sample_excerpt_spec(seed: int, index: int, split: str) -> LoopSpec:
    """The spec of music21 item ``index`` of corpus ``seed`` (a pure function of both)."""
    rng = random.Random(f"barforge-music21:{seed}:{index}")
    names = chorale_names()
    while True:       # a few corpus entries are not usable chorales, a few excerpts have no key
        name = rng.choice(names)
        piece = load_chorale(name)
        if piece is None:
            continue
        beats, full, voices = piece
        style = rng.choice([s for s in STYLES if beats in s.meters])
        bpm = rng.randint(*style.bpm)
        bars = loop_bars(beats, bpm)
        starts = _runs(full, beats, bars)
        if not starts:
            continue
        start = rng.choice(starts)
        transpose = rng.randint(-5, 6)
        try:
            tonic, mode, chords, progression = _key_and_chords(
                _excerpt(voices, start, bars * beats), beats, bars, transpose)
            break
        except _music21().analysis.discrete.DiscreteAnalysisException:
            continue
    parts: dict[str, dict] = {}
    if style.drums and style.kits and rng.random() < style.p_roles[0]:
        kit = rng.choice(style.kits)
        parts["drums"] = {"name": kit, "program": KITS[kit]}
    programs = {**BASSES, **COMPS, **PADS, **LEADS}
    for role, pool in (("bass", style.basses), ("comp", style.comps), ("lead", style.leads or style.comps)):
        instrument = rng.choice(pool)
        parts[role] = {"name": instrument, "program": programs[instrument]}
    density = round(rng.uniform(0.2, 1.0), 2)
    spec = LoopSpec(index=index, seed=seed, style=style.name, bpm=bpm, beats_per_bar=beats,
                    bars=bars, tonic=KEY_NAMES[tonic], mode=mode, progression=progression,
                    chords=chords, parts=parts, density=density, swing=0.5, split=split,
                    extra={"source": "music21", "piece": name, "first_beat": start,
                           "transpose": transpose})
    spec.description = describe_parts(style.name, beats, parts, density) + ", a bach chorale"
    spec.caption = caption_for(spec.description, bpm, spec.key)
    return spec


def excerpt_parts(spec: LoopSpec) -> dict[str, list[Note]]:
    """The excerpt named by ``spec.extra`` as notes per role (ticks at ``TICKS_PER_BEAT``)."""
    piece = load_chorale(spec.extra["piece"])
    if piece is None:
        raise ValueError(f"{spec.extra['piece']!r} is not a four-voice chorale in 3/4 or 4/4")
    beats, _, voices = piece
    excerpt = _excerpt(voices, spec.extra["first_beat"], spec.bars * beats)
    shift = spec.extra["transpose"]
    tracks: dict[str, list[Note]] = {}
    for voice in VOICES:
        role = ROLE_OF_VOICE[voice]
        velocity = 100 if role == "lead" else 85
        tracks.setdefault(role, []).extend(
            (round(off * TICKS_PER_BEAT), round(dur * TICKS_PER_BEAT) - 10, pitch + shift, velocity)
            for off, dur, pitch, _ in excerpt[voice])
    return tracks
