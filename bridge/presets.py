"""Named generation presets: a prompt template and generation parameters (presets/*.json).

A preset file looks like::

    {"name": "house", "prompt_template": "{prompt}, four-on-the-floor house, warm sub bass",
     "params": {"mode": "ar", "temperature": 1.0, "top_k": 250, "cfg": 3.0}}

``params`` keys are the protocol's option keys (``mode``, ``temperature``, ``top_k``,
``top_p``, ``cfg``, ``seed``, ``steps`` as a list, ``channels``, ``loudness``). A request's own
options override its preset's, which override the server's ``--preset``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge.osc_protocol import MODES, PRESET_NAME

PRESET_DIR = Path(__file__).resolve().parent.parent / "presets"
PARAM_TYPES: dict[str, type | tuple[type, ...]] = {
    "mode": str, "temperature": (int, float), "top_k": int, "top_p": (int, float),
    "cfg": (int, float), "seed": int, "steps": list, "channels": int, "loudness": (int, float)}


@dataclass(frozen=True)
class Preset:
    """A prompt template (``{prompt}`` marks the request's prompt) and option defaults."""

    name: str
    prompt_template: str = "{prompt}"
    params: dict[str, Any] = field(default_factory=dict)

    def prompt(self, user_prompt: str) -> str:
        """The template filled with the request's prompt (plain replace: prompts are not formats)."""
        text = self.prompt_template.replace("{prompt}", user_prompt.strip())
        return ", ".join(p.strip() for p in text.split(",") if p.strip())


def parse_preset(data: dict[str, Any], source: str) -> Preset:
    """Validate one preset's JSON object; ``source`` names it in error messages."""
    name = data.get("name")
    if not isinstance(name, str) or not PRESET_NAME.fullmatch(name):
        raise ValueError(f"{source}: preset name must match [A-Za-z0-9._-]{{1,64}}, got {name!r}")
    template = data.get("prompt_template", "{prompt}")
    if not isinstance(template, str):
        raise ValueError(f"{source}: prompt_template must be a string")
    params = data.get("params", {})
    if not isinstance(params, dict):
        raise ValueError(f"{source}: params must be an object")
    for key, value in params.items():
        if key not in PARAM_TYPES:
            raise ValueError(f"{source}: unknown param {key!r}; known: {', '.join(PARAM_TYPES)}")
        if isinstance(value, bool) or not isinstance(value, PARAM_TYPES[key]):
            raise ValueError(f"{source}: param {key} has the wrong type ({type(value).__name__})")
    if "mode" in params and params["mode"] not in MODES:
        raise ValueError(f"{source}: mode must be one of {MODES}, got {params['mode']!r}")
    if "steps" in params:
        steps = params["steps"]
        if not steps or not all(isinstance(s, int) and s > 0 for s in steps):
            raise ValueError(f"{source}: steps must be a list of positive integers")
        params = {**params, "steps": tuple(steps)}
    return Preset(name, template, dict(params))


def load_presets(directory: Path = PRESET_DIR) -> dict[str, Preset]:
    """Every ``*.json`` preset in ``directory`` by name (an empty dict when it does not exist)."""
    presets: dict[str, Preset] = {}
    if not directory.is_dir():
        return presets
    for path in sorted(directory.glob("*.json")):
        preset = parse_preset(json.loads(path.read_text(encoding="utf-8")), str(path))
        if preset.name in presets:
            raise ValueError(f"{path}: preset {preset.name!r} is defined twice")
        presets[preset.name] = preset
    return presets


def resolve_preset(name_or_path: str | None, presets: dict[str, Preset]) -> Preset:
    """``--preset``: a known name, a path to a preset JSON file, or None (an empty preset)."""
    if name_or_path is None:
        return Preset("none")
    if name_or_path in presets:
        return presets[name_or_path]
    path = Path(name_or_path)
    if path.is_file():
        return parse_preset(json.loads(path.read_text(encoding="utf-8")), str(path))
    raise ValueError(f"--preset {name_or_path!r}: not a known preset ({', '.join(sorted(presets)) or 'none'}) "
                     "nor a preset JSON file")
