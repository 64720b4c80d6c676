"""A Hugging Face or audiocraft checkpoint folder as ``ModelParts`` (engine/loaders/lm_checkpoint.py
reads the LM, text encoder and codec; this module picks the family's generation defaults)."""
from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from engine.decoding.ar_params import ARParams
from engine.loaders.lm_checkpoint import load_lm_checkpoint
from engine.loaders.parts import ModelParts

# the AR sampling defaults a reference checkpoint may carry (its duration is the window instead)
AR_DEFAULTS = tuple(f.name for f in fields(ARParams) if f.name not in ("duration", "seed"))


def reference_parts(path: Path) -> ModelParts:
    """The parts of a Hugging Face ``Musicgen(Melody)ForConditionalGeneration`` folder
    (``config.json``) or an audiocraft one (``state_dict.bin``)."""
    loaded = load_lm_checkpoint(path)
    codec = loaded.load_codec()
    # HF MusicGen checkpoints are all 30 s models; audiocraft's say so (segment_duration)
    hf = (path / "config.json").is_file()
    max_duration = 30.0 if hf else float(loaded.generation.get("duration", 30.0))
    if loaded.family in ("musicgen", "musicgen-melody"):
        return ModelParts(family="musicgen", name=str(path), codec=codec,
                          text_encoder=loaded.text_encoder, max_duration=max_duration,
                          lm=loaded.lm, generation={k: v for k, v in loaded.generation.items()
                                                    if k in AR_DEFAULTS})
    return ModelParts(family="magnet", name=str(path), codec=codec,
                      text_encoder=loaded.text_encoder, max_duration=max_duration, lm=loaded.lm,
                      generation={k: v for k, v in loaded.generation.items() if k != "duration"},
                      magnet=loaded.extra)
