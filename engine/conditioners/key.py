"""The musical key as a class index, for LMs with key conditioning (our extension).

Index 0 is "no key" (free, unknown, or CFG's null condition); the 24 major and minor keys are
``1 + pitch_class + 12 * minor`` with pitch class 0 = C. Enharmonic spellings share an index.
A caption states its key in audiocraft's ``"key: c minor"`` pair; a prompt a person typed
("dark pads in F# minor") is read too.
"""
from __future__ import annotations

import re

KEY_CLASSES = 24     # 12 tonics x (major, minor); index 0 (no key) comes on top
KEY_MODES = ("major", "minor")
# the spelling of each pitch class (0 = C) in captions, sidecars and the recipes' key estimates
KEY_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")

_PITCH = {"c": 0, "d": 2, "e": 4, "f": 5, "g": 7, "a": 9, "b": 11}
_ACCIDENTAL = {"": 0, "#": 1, "♯": 1, "b": -1, "♭": -1}
_KEY_PAIR = re.compile(r"\bkey:\s*([a-g])([#♯b♭]?)\s*(major|minor)\b", re.IGNORECASE)
_KEY_WORDS = re.compile(r"(?<![\w#])([a-g])([#♯b♭]?)\s+(major|minor)\b", re.IGNORECASE)


def key_index(tonic: str, mode: str) -> int:
    """1..24 for ``tonic`` (a note name: "C", "F#", "Bb") in ``mode`` ("major" or "minor")."""
    if not isinstance(tonic, str) or not tonic or tonic[0].lower() not in _PITCH \
            or tonic[1:] not in _ACCIDENTAL:
        raise ValueError(f"tonic must be a note name such as 'C', 'F#' or 'Bb', got {tonic!r}")
    if not isinstance(mode, str) or mode.lower() not in KEY_MODES:
        raise ValueError(f"mode must be one of {KEY_MODES}, got {mode!r}")
    pitch = (_PITCH[tonic[0].lower()] + _ACCIDENTAL[tonic[1:]]) % 12
    return 1 + pitch + 12 * KEY_MODES.index(mode.lower())


def caption_key(caption: str | None) -> int:
    """The key a caption states (its ``"key: c minor"`` pair first, else words such as
    "in F# minor"), as :func:`key_index`; 0 when it states none."""
    text = caption or ""
    match = _KEY_PAIR.search(text) or _KEY_WORDS.search(text)
    if match is None:
        return 0
    # the accidental is lower-cased: "Bb" and "BB" are both B flat
    return key_index(match.group(1) + match.group(2).lower(), match.group(3))
