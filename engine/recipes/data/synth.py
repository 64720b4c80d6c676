"""Procedural loop corpus: composed multi-bar loops as MIDI, rendered to 32 kHz mono WAV.

Every item is a loop of whole bars at an integer BPM with exact metadata (style, meter, key,
chord progression, General MIDI instruments, density), a caption in audiocraft's format
("boom-bap drums with upright bass and rhodes, C minor. bpm: 90. key: C minor.") and a JSON
sidecar. Everything follows from the seed: item ``i`` of seed ``s`` is always the same loop.
Rendering needs FluidSynth and a General MIDI soundfont (Debian: ``apt-get install fluidsynth
fluid-soundfont-gm``).
"""
from __future__ import annotations

import random

import mido

from engine.conditioners.key import KEY_NAMES
from engine.recipes.data.styles import (BASSES, CHANNELS, COMPS, KITS, LEADS, PADS, PROGRESSIONS,
                                        ROMAN, SCALES, STEP, STYLE_BY_NAME, STYLES,
                                        TICKS_PER_BEAT, LoopSpec, Note, caption_for,
                                        describe_parts, loop_bars)


def sample_spec(seed: int, index: int, heldout_every: int = 50, music21_share: float = 0.0) -> LoopSpec:
    """The spec of item ``index`` for corpus seed ``seed`` (pure function of the arguments).

    ``music21_share`` of the items (drawn per index from their own stream, so the other items
    are the same at any share) are Bach chorale excerpts (engine/recipes/data/music21_excerpts.py)."""
    split = "valid" if index % heldout_every == heldout_every - 1 else "train"
    if music21_share > 0 and random.Random(f"barforge-source:{seed}:{index}").random() < music21_share:
        from engine.recipes.data.music21_excerpts import sample_excerpt_spec
        return sample_excerpt_spec(seed, index, split)
    rng = random.Random(f"barforge-synth:{seed}:{index}")
    style = rng.choice(STYLES)
    bpm = rng.randint(*style.bpm)
    bpb = rng.choice(style.meters)
    bars = loop_bars(bpb, bpm)
    mode = rng.choice(("major", "minor", "minor"))
    tonic = rng.randrange(12)
    degrees = list(rng.choice(PROGRESSIONS[mode]))
    scale = SCALES[mode]
    chords, names = [], []
    for d in degrees:
        n_tones = 4 if style.sevenths and rng.random() < 0.7 else 3
        chords.append([(tonic + scale[(d + 2 * i) % 7]) % 12 for i in range(n_tones)])
        third = (scale[(d + 2) % 7] - scale[d]) % 12
        name = ROMAN[d] if third == 4 else ROMAN[d].lower()
        seventh = (scale[(d + 6) % 7] - scale[d]) % 12
        names.append(name + ("" if n_tones == 3 else "maj7" if seventh == 11 else "7"))
    parts: dict[str, dict] = {}
    pools = {"drums": style.kits, "bass": style.basses, "comp": style.comps,
             "pad": style.pads, "lead": style.leads}
    pitched = {**BASSES, **COMPS, **PADS, **LEADS}
    for role, p in zip(("drums", "bass", "comp", "pad", "lead"), style.p_roles):
        if pools[role] and rng.random() < p:
            name = rng.choice(pools[role])
            parts[role] = {"name": name, "program": KITS[name] if role == "drums" else pitched[name]}
    if not parts or set(parts) == {"lead"}:
        name = style.pads[0]
        parts["pad"] = {"name": name, "program": PADS[name]}
    density = round(rng.uniform(0.2, 1.0), 2)
    spec = LoopSpec(index=index, seed=seed, style=style.name, bpm=bpm, beats_per_bar=bpb,
                    bars=bars, tonic=KEY_NAMES[tonic], mode=mode, progression=names, chords=chords,
                    parts=parts, density=density, swing=style.swing, split=split)
    spec.description = describe_parts(style.name, bpb, parts, density)
    spec.caption = caption_for(spec.description, bpm, spec.key)
    return spec


# ---------------------------------------------------------------- composition

# General MIDI drum notes
KICK, STICK, SNARE, CLAP, CHAT, PHAT, OHAT, TOM_L, TOM_M, TOM_H, CRASH, RIDE, SHAKER = (
    36, 37, 38, 39, 42, 44, 46, 45, 47, 50, 49, 51, 70)


def _tick(step: int, swing: float) -> int:
    """16th-grid step -> tick, with the off-16th of each pair moved to ``swing``."""
    pair, odd = divmod(step, 2)
    return pair * 2 * STEP + (round(swing * 2 * STEP) if odd else 0)


def _drum_bar(name: str, steps: int, density: float, rng: random.Random, bar: int,
              last: bool) -> list[tuple[int, int, int]]:
    """One bar of a drum pattern as (16th step, drum note, velocity)."""
    hits: list[tuple[int, int, int]] = []
    beats = range(0, steps, 4)
    offs = range(2, steps, 4)

    def maybe(p: float, step: int, note: int, vel: int) -> None:
        if rng.random() < p:
            hits.append((step, note, vel))

    if name == "house":
        hits += [(s, KICK, 112) for s in beats] + [(s, CLAP, 100) for s in (4, 12)]
        hits += [(s, OHAT if density > 0.5 else CHAT, 90) for s in offs]
        for s in range(1, steps, 2):
            maybe(density * 0.8, s, CHAT, 55)
    elif name == "techno":
        hits += [(s, KICK, 118) for s in beats] + [(s, CHAT, 95 if s % 4 == 2 else 60) for s in range(steps)]
        if density > 0.4:
            hits += [(s, CLAP, 95) for s in (4, 12)]
        for s in offs:
            maybe(density * 0.5, s, RIDE, 70)
    elif name in ("boombap", "dnb", "funk", "rock"):
        kicks = {"boombap": (0, 7, 10), "dnb": (0, 10), "funk": (0, 3, 10), "rock": (0, 8)}[name]
        hits += [(s, KICK, 110) for s in kicks] + [(s, SNARE, 108) for s in (4, 12)]
        hat_steps = range(steps) if name == "funk" or density > 0.75 else range(0, steps, 2)
        hits += [(s, CHAT, 80 if s % 4 == 0 else 62) for s in hat_steps]
        for s in (2, 6, 9, 14, 15):
            maybe(density * 0.35, s, SNARE, 40)     # ghost notes
        maybe(density * 0.6, 14 if name != "dnb" else 6, KICK, 95)
        if name == "rock" and bar == 0:
            hits.append((0, CRASH, 100))
    elif name == "trap":
        hits += [(0, KICK, 120), (8, CLAP, 110), (8, SNARE, 90)]
        for s in (3, 6, 10, 11, 14):
            maybe(0.25 + density * 0.3, s, KICK, 105)
        for s in range(0, steps, 2 if density < 0.4 else 1):
            hits.append((s, CHAT, 85 if s % 4 == 0 else 60))
        if rng.random() < density:                   # a hat roll: 32nds over one beat
            start = rng.choice((12, 14))
            hits += [(start + i / 2, CHAT, 50 + 8 * i) for i in range(4)]  # type: ignore[misc]
        maybe(0.5, 14, OHAT, 80)
    elif name == "bossa":
        hits += [(s, KICK, 90) for s in (0, 6, 8, 14)]
        hits += [(s, STICK, 85) for s in ((0, 6, 12) if bar % 2 == 0 else (4, 10))]
        hits += [(s, CHAT if density < 0.6 else SHAKER, 70 if s % 2 == 0 else 50) for s in range(steps)]
    elif name == "onedrop":
        hits += [(8, KICK, 110), (8, STICK, 100)]
        hits += [(s, CHAT, 75) for s in range(0, steps, 2)]
        maybe(density, 14, OHAT, 70)
    elif name == "waltz":
        hits += [(0, KICK, 70), (4, PHAT, 70), (8, PHAT, 70)]
        hits += [(s, RIDE, 85) for s in (0, 4, 8)] + [(s, RIDE, 65) for s in (7, 11)]
        maybe(density * 0.5, 10, SNARE, 45)
    if last and density > 0.55 and name not in ("waltz", "house", "techno"):
        fill = [s for s in range(steps - 4, steps)]
        hits = [h for h in hits if h[0] < steps - 4 or h[1] in (CHAT, RIDE)]
        hits += [(s, (TOM_H, TOM_M, TOM_L, SNARE)[i % 4], 95) for i, s in enumerate(fill)]
    return hits


def _voicing(pcs: list[int], center: int) -> list[int]:
    """Close voicing of pitch classes: the inversion whose mean pitch is nearest ``center``."""
    best: list[int] = []
    for inv in range(len(pcs)):
        order = pcs[inv:] + pcs[:inv]
        notes = [order[0] + 12 * ((center - 6 - order[0]) // 12 + 1)]
        for pc in order[1:]:
            notes.append(notes[-1] + (pc - notes[-1]) % 12)
        if not best or abs(sum(notes) / len(notes) - center) < abs(sum(best) / len(best) - center):
            best = notes
    return best


def _root(pc: int, low: int) -> int:
    return low + (pc - low) % 12


def _compose_part(role: str, spec: LoopSpec, rng: random.Random, kick_steps: list[list[int]]) -> list[Note]:
    """All notes of one pitched part over the whole loop."""
    style = STYLE_BY_NAME[spec.style]
    steps = spec.beats_per_bar * 4
    bar_t = steps * STEP
    per_bar = max(1, len(spec.chords) // spec.bars)          # chord slots per bar
    slot = steps // per_bar
    density = spec.density
    notes: list[Note] = []
    motif = sorted(rng.sample(range(steps), k=max(2, round(steps * (0.15 + 0.3 * density)))))
    if 0 not in motif:
        motif[0] = 0
    scale = [(KEY_NAMES.index(spec.tonic) + s) % 12 for s in SCALES[spec.mode]]
    lead_pitch = _root(scale[0], 67)
    for bar in range(spec.bars):
        for k in range(per_bar):
            chord = spec.chords[(bar * per_bar + k) % len(spec.chords)]
            t0 = bar * bar_t + k * slot * STEP
            at = lambda s: t0 + _tick(s, spec.swing)  # noqa: E731
            in_slot = lambda ss: [s for s in ss if s < slot]  # noqa: E731
            if role == "pad":
                notes += [(t0, slot * STEP, p, 62) for p in _voicing(chord, 62)]
            elif role == "bass":
                r = _root(chord[0], 33)
                fifth = _root(chord[min(2, len(chord) - 1)], r)
                kind = style.bass
                if kind == "whole":
                    notes.append((t0, slot * STEP, r, 100))
                elif kind == "offbeat":
                    notes += [(at(s), STEP * 2 - 20, r, 105) for s in in_slot(range(2, steps, 4))]
                elif kind in ("eighths", "rumble"):
                    grid = range(0, slot, 2) if kind == "eighths" else [s for s in range(slot) if s % 4]
                    notes += [(at(s), STEP - 10 if kind == "rumble" else 2 * STEP - 20,
                               r + (12 if kind == "rumble" and s % 8 == 6 else 0), 100) for s in grid]
                elif kind == "root_fifth":
                    notes += [(at(0), 5 * STEP, r, 100), (at(6), 2 * STEP, fifth, 90)]
                    if slot > 8:
                        notes += [(at(8), 5 * STEP, fifth, 95), (at(14), 2 * STEP, r, 90)]
                elif kind == "walking":
                    tones = [r, _root(chord[1], r), fifth, fifth + 2 if fifth + 2 < r + 12 else r + 10]
                    notes += [(at(s), 4 * STEP - 30, tones[i % 4], 95) for i, s in enumerate(range(0, slot, 4))]
                elif kind == "follow_kick":
                    ks = [s for s in kick_steps[bar % len(kick_steps)] if s < slot] or [0]
                    ends = ks[1:] + [slot]
                    notes += [(at(s), (e - s) * STEP - 10, r, 110) for s, e in zip(ks, ends)]
                else:  # syncopated motif
                    for i, s in enumerate(in_slot(motif)):
                        nxt = ([m for m in motif if m > s] + [slot])[0]
                        notes.append((at(s), max(1, min(nxt, slot) - s) * STEP - 15,
                                      (r, r + 12, fifth, r)[i % 4], 100))
            elif role == "comp":
                voic = _voicing(chord, 64 if "guitar" not in spec.parts[role]["name"] else 57)
                kind = style.comp
                if kind == "sustain":
                    notes += [(t0, slot * STEP, p, 80) for p in voic]
                elif kind in ("stabs", "skank"):
                    for s in in_slot(range(2, steps, 4)):
                        notes += [(at(s), STEP, p, 90) for p in voic]
                elif kind == "power":
                    r = _root(chord[0], 40)
                    for s in range(0, slot, 2):
                        notes += [(at(s), 2 * STEP - 15, p, 100) for p in (r, r + 7, r + 12)]
                elif kind == "arp":
                    rate = 1 if density > 0.7 else 2
                    seq = voic + [voic[0] + 12] if rng.random() < 0.5 or bar == 0 else voic[::-1]
                    for i, s in enumerate(range(0, slot, rate)):
                        notes.append((at(s), rate * STEP, seq[i % len(seq)], 85))
                elif kind == "bossa":
                    notes.append((at(0), 4 * STEP, _root(chord[0], 40), 85))
                    for s in in_slot((3, 6, 10, 13)):
                        notes += [(at(s), 2 * STEP, p, 75) for p in voic]
                elif kind == "broken":
                    notes.append((at(0), 4 * STEP, _root(chord[0], 45), 90))
                    for s in in_slot((4, 8)):
                        notes += [(at(s), 3 * STEP, p, 70) for p in voic]
                else:  # syncopated chord hits on the motif
                    for s in in_slot(motif):
                        notes += [(at(s), 2 * STEP, p, 85) for p in voic]
            elif role == "lead":
                for s in in_slot(motif):
                    if s % 8 == 0:     # strong position: nearest chord tone
                        lead_pitch = min((_root(pc, lead_pitch - 6) for pc in chord), key=lambda p: abs(p - lead_pitch))
                    else:              # stepwise walk in the scale
                        cands = [p for p in range(lead_pitch - 4, lead_pitch + 5) if p % 12 in scale and p != lead_pitch]
                        lead_pitch = rng.choice(cands)
                    lead_pitch = min(max(lead_pitch, 62), 86)
                    nxt = ([m for m in motif if m > s] + [slot])[0]
                    notes.append((at(s), max(1, min(nxt, slot) - s) * STEP - 20, lead_pitch, 95))
    return notes


def _drum_track(spec: LoopSpec, rng: random.Random) -> tuple[list[Note], list[list[int]]]:
    """The drum part's notes and each bar's kick steps (``[[0]]`` and no notes without drums)."""
    style = STYLE_BY_NAME[spec.style]
    if "drums" not in spec.parts or not style.drums:
        return [], [[0]]
    steps = spec.beats_per_bar * 4
    notes: list[Note] = []
    kick_steps: list[list[int]] = []
    for bar in range(spec.bars):
        hits = _drum_bar(style.drums, steps, spec.density, rng, bar, bar == spec.bars - 1)
        kick_steps.append(sorted({int(s) for s, n, _ in hits if n == KICK}))
        for s, n, v in hits:
            t = bar * steps * STEP + (round(s * STEP) if s != int(s) else _tick(int(s), spec.swing))
            notes.append((t, STEP // 2, n, v))
    return notes, kick_steps


def compose(spec: LoopSpec) -> mido.MidiFile:
    """The loop as a type-1 MIDI file: exactly ``spec.bars`` bars at ``spec.bpm``. Items taken
    from music21's corpus (``spec.extra["piece"]``) play the excerpt's voices over the style's
    drums; the others compose every part from the spec's chords."""
    rng = random.Random(f"barforge-compose:{spec.seed}:{spec.index}")
    drums, kick_steps = _drum_track(spec, rng)
    tracks = {"drums": drums} if drums else {}
    if "piece" in spec.extra:
        from engine.recipes.data.music21_excerpts import excerpt_parts
        tracks.update(excerpt_parts(spec))
    else:
        for role in ("bass", "comp", "pad", "lead"):
            if role in spec.parts:
                tracks[role] = _compose_part(role, spec, rng, kick_steps)
    return midi_from_parts(spec, tracks, rng)


def midi_from_parts(spec: LoopSpec, tracks: dict[str, list[Note]], rng: random.Random) -> mido.MidiFile:
    """A type-1 MIDI file of ``spec.bars`` bars at ``spec.bpm``: a tempo/meter/key track, then one
    track per role (its GM program, notes cut at the loop's end, velocities humanised)."""
    end = spec.bars * spec.beats_per_bar * TICKS_PER_BEAT
    meta = mido.MidiTrack([
        mido.MetaMessage("track_name", name=spec.caption, time=0),
        mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(spec.bpm), time=0),
        mido.MetaMessage("time_signature", numerator=spec.beats_per_bar, denominator=4, time=0),
        mido.MetaMessage("key_signature", key=spec.tonic + ("m" if spec.mode == "minor" else ""), time=0),
    ])
    mid = mido.MidiFile(type=1, ticks_per_beat=TICKS_PER_BEAT)
    meta.append(mido.MetaMessage("end_of_track", time=end))
    mid.tracks.append(meta)
    for role, notes in tracks.items():
        ch = CHANNELS[role]
        events: list[tuple[int, int, mido.Message]] = []
        for t, dur, pitch, vel in notes:
            if t >= end:
                continue
            vel = max(1, min(127, vel + rng.randint(-8, 8)))
            events.append((t, 1, mido.Message("note_on", channel=ch, note=pitch, velocity=vel)))
            events.append((min(t + max(dur, 10), end), 0, mido.Message("note_off", channel=ch, note=pitch, velocity=0)))
        events.sort(key=lambda e: (e[0], e[1]))   # note-offs before note-ons at the same tick
        track = mido.MidiTrack([mido.MetaMessage("track_name", name=role, time=0),
                                mido.Message("program_change", channel=ch, program=spec.parts[role]["program"], time=0)])
        now = 0
        for t, _, msg in events:
            track.append(msg.copy(time=t - now))
            now = t
        track.append(mido.MetaMessage("end_of_track", time=end - now))
        mid.tracks.append(track)
    return mid


def midi_length_ticks(mid: mido.MidiFile) -> int:
    """The tick of the last end-of-track over all tracks."""
    return max(sum(m.time for m in tr) for tr in mid.tracks)


def repeat_midi(mid: mido.MidiFile, times: int) -> mido.MidiFile:
    """The same loop played ``times`` times in a row (for rendering with tails that wrap)."""
    length = midi_length_ticks(mid)
    out = mido.MidiFile(type=1, ticks_per_beat=mid.ticks_per_beat)
    for tr in mid.tracks:
        head = [m for m in tr if m.is_meta and m.type != "end_of_track" or m.type == "program_change"]
        body = [m for m in tr if not (m.is_meta or m.type == "program_change")]
        new = mido.MidiTrack([m.copy(time=0) for m in head])
        now = 0
        for r in range(times):
            t = r * length
            for m in body:
                t += m.time
                new.append(m.copy(time=t - now))
                now = t
        new.append(mido.MetaMessage("end_of_track", time=times * length - now))
        out.tracks.append(new)
    return out
