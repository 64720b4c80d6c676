"""The loop corpus's vocabulary: General MIDI instruments, styles, scales and progressions, the
``LoopSpec`` every item is (its JSON sidecar) and the caption made from it.

Shared by the procedural loops (synth.py) and the Bach chorale excerpts (music21_excerpts.py),
which both fill a ``LoopSpec`` and compose it to MIDI through synth.py.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

TICKS_PER_BEAT = 480
STEP = TICKS_PER_BEAT // 4  # one 16th note
SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}
ROMAN = ("I", "II", "III", "IV", "V", "VI", "VII")
PROGRESSIONS = {  # scale degrees (0 = tonic), four chords
    "major": ((0, 4, 5, 3), (0, 3, 4, 3), (1, 4, 0, 0), (0, 5, 3, 4), (0, 3, 0, 4), (5, 3, 0, 4)),
    "minor": ((0, 5, 2, 6), (0, 3, 4, 0), (0, 6, 5, 6), (0, 3, 6, 2), (0, 0, 3, 4), (0, 5, 3, 4)),
}
CHANNELS = {"drums": 9, "bass": 0, "comp": 1, "pad": 2, "lead": 3}

# caption words -> General MIDI program (0-based); drum kits are bank-128 presets
KITS = {"808 drums": 25, "electronic drums": 24, "acoustic drums": 0, "room drums": 8,
        "rock drums": 16, "jazz drums": 32, "brushed drums": 40}
BASSES = {"upright bass": 32, "electric bass": 33, "picked bass": 34, "fretless bass": 35,
          "slap bass": 36, "synth bass": 38, "analog bass": 39}
COMPS = {"piano": 0, "bright piano": 1, "rhodes": 4, "electric piano": 5, "clavinet": 7,
         "vibraphone": 11, "marimba": 12, "organ": 16, "rock organ": 18, "nylon guitar": 24,
         "acoustic guitar": 25, "jazz guitar": 26, "clean electric guitar": 27,
         "overdriven guitar": 29, "distorted guitar": 30, "pizzicato strings": 45, "harp": 46,
         "kalimba": 108, "steel drums": 114, "synth pluck": 84}
PADS = {"strings": 48, "slow strings": 49, "synth strings": 50, "choir": 52, "new age pad": 88,
        "warm pad": 89, "polysynth pad": 90, "choir pad": 91, "bowed pad": 92, "halo pad": 94,
        "sweep pad": 95}
LEADS = {"square lead": 80, "saw lead": 81, "flute": 73, "trumpet": 56, "saxophone": 65,
         "violin": 40, "whistle": 78, "synth lead": 87}


@dataclass(frozen=True)
class Style:
    """How one genre plays: tempo range, meters, patterns per role and instrument choices."""

    name: str
    bpm: tuple[int, int]
    meters: tuple[int, ...]        # beats per bar (quarter-note beats)
    drums: str | None              # drum pattern name (None: no drums)
    kits: tuple[str, ...]
    bass: str
    basses: tuple[str, ...]
    comp: str
    comps: tuple[str, ...]
    pads: tuple[str, ...]
    leads: tuple[str, ...]
    swing: float = 0.5             # position of the off-16th within a 16th pair (0.5 = straight)
    sevenths: bool = False
    p_roles: tuple[float, float, float, float, float] = (1.0, 0.9, 0.7, 0.4, 0.3)  # drums bass comp pad lead


STYLES = (
    Style("house", (118, 128), (4,), "house", ("electronic drums", "808 drums"), "offbeat",
          ("synth bass", "analog bass"), "stabs", ("organ", "electric piano", "piano"),
          ("warm pad", "polysynth pad", "strings"), ("saw lead", "synth lead"), sevenths=True),
    Style("techno", (125, 140), (4,), "techno", ("808 drums", "electronic drums"), "rumble",
          ("analog bass", "synth bass"), "arp", ("synth pluck", "square lead"),
          ("sweep pad", "halo pad"), ("saw lead",), p_roles=(1.0, 0.9, 0.6, 0.4, 0.2)),
    Style("boom-bap", (84, 98), (4,), "boombap", ("acoustic drums", "room drums"), "syncopated",
          ("upright bass", "electric bass"), "syncopated", ("rhodes", "piano", "vibraphone"),
          ("strings",), ("saxophone", "flute", "trumpet"), swing=0.58, sevenths=True),
    Style("trap", (130, 160), (4,), "trap", ("808 drums",), "follow_kick", ("synth bass",),
          "arp", ("kalimba", "synth pluck", "piano"), ("choir pad", "halo pad", "strings"),
          ("whistle", "synth lead"), p_roles=(1.0, 0.95, 0.6, 0.5, 0.3)),
    Style("lofi hip-hop", (70, 90), (4,), "boombap", ("jazz drums", "brushed drums"),
          "syncopated", ("upright bass", "fretless bass"), "sustain",
          ("rhodes", "electric piano", "jazz guitar"), ("warm pad",), ("flute", "vibraphone"),
          swing=0.6, sevenths=True),
    Style("bossa nova", (110, 140), (4,), "bossa", ("brushed drums", "jazz drums"),
          "root_fifth", ("upright bass",), "bossa", ("nylon guitar", "piano"), ("strings",),
          ("flute", "saxophone"), sevenths=True, p_roles=(0.9, 0.9, 1.0, 0.3, 0.4)),
    Style("rock", (100, 150), (4,), "rock", ("rock drums", "acoustic drums"), "eighths",
          ("picked bass", "electric bass"), "power", ("distorted guitar", "overdriven guitar"),
          ("rock organ",), ("violin", "saw lead"), p_roles=(1.0, 0.95, 0.95, 0.2, 0.2)),
    Style("ambient", (60, 90), (4, 3), None, (), "whole", ("fretless bass", "synth bass"),
          "arp", ("harp", "kalimba", "vibraphone", "piano"),
          ("warm pad", "halo pad", "new age pad", "bowed pad", "slow strings"), ("flute", "violin"),
          p_roles=(0.0, 0.5, 0.7, 1.0, 0.4)),
    Style("drum and bass", (165, 180), (4,), "dnb", ("electronic drums", "acoustic drums"),
          "whole", ("analog bass", "synth bass"), "sustain", ("electric piano", "rhodes"),
          ("warm pad", "strings"), ("saw lead",), p_roles=(1.0, 0.9, 0.4, 0.6, 0.2)),
    Style("funk", (95, 115), (4,), "funk", ("acoustic drums", "room drums"), "syncopated",
          ("slap bass", "electric bass"), "syncopated", ("clavinet", "clean electric guitar"),
          ("synth strings",), ("trumpet", "saxophone"), swing=0.54, sevenths=True),
    Style("reggae", (70, 90), (4,), "onedrop", ("acoustic drums", "room drums"), "syncopated",
          ("electric bass",), "skank", ("organ", "clean electric guitar"), ("strings",),
          ("trumpet", "flute"), swing=0.56),
    Style("jazz waltz", (100, 160), (3,), "waltz", ("jazz drums", "brushed drums"), "walking",
          ("upright bass",), "broken", ("piano", "vibraphone", "jazz guitar"), ("strings",),
          ("saxophone", "trumpet", "flute"), swing=0.62, sevenths=True),
)
STYLE_BY_NAME = {s.name: s for s in STYLES}


@dataclass
class LoopSpec:
    """Everything that defines one loop; serialised as the item's JSON sidecar."""

    index: int
    seed: int
    style: str
    bpm: int
    beats_per_bar: int
    bars: int
    tonic: str
    mode: str
    progression: list[str]
    chords: list[list[int]]         # pitch classes of each chord slot
    parts: dict[str, dict]          # role -> {"name": caption words, "program": GM program}
    density: float
    swing: float
    description: str = ""
    caption: str = ""
    split: str = "train"
    extra: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.tonic} {self.mode}"

    @property
    def duration_s(self) -> float:
        return self.bars * self.beats_per_bar * 60.0 / self.bpm

    def to_json(self) -> dict:
        d = asdict(self)
        d.update(key=self.key, duration_s=self.duration_s, meter=f"{self.beats_per_bar}/4")
        return d


def _join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def describe_parts(style: str, beats_per_bar: int, parts: dict[str, dict], density: float) -> str:
    """The text part of a caption, e.g. "boom-bap drums with upright bass and rhodes"."""
    head = style if beats_per_bar == 4 or style.endswith("waltz") else f"{style} in {beats_per_bar}/4"
    if density < 0.35:
        head = "minimal " + head
    elif density > 0.8:
        head = "busy " + head
    names = [parts[r]["name"] for r in ("bass", "comp", "pad", "lead") if r in parts]
    if "drums" in parts:
        drum_word = parts["drums"]["name"].replace(" drums", "")
        plain = drum_word in ("acoustic", "room") or drum_word in head
        lead = f"{head} drums" if plain else f"{head} {drum_word} drums"
        return f"{lead} with {_join(names)}" if names else f"{lead}, drums only"
    return f"{head} {_join(names)}"


def caption_for(description: str, bpm: int, key: str) -> str:
    """audiocraft's caption format: "<description>, <key>. bpm: <bpm>. key: <key>."."""
    return f"{description}, {key}. bpm: {bpm}. key: {key}."


def loop_bars(beats_per_bar: int, bpm: int) -> int:
    """Bars per loop: 4, or 2 where 4 would pass 20 s, or 8 where 4 would be under 4 s."""
    bar_s = beats_per_bar * 60.0 / bpm
    bars = 4 if 4 * bar_s <= 20.0 else 2
    return 8 if bars * bar_s < 4.0 else bars

Note = tuple[int, int, int, int]  # (start tick, duration ticks, pitch, velocity)
