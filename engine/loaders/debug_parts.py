"""The built-in ``debug``, ``debug-magnet`` and ``debug-melody`` models' parts: tiny random
codec, LMs and text encoder built in code with a fixed seed (the same weights on every call),
so the whole public API runs on them in seconds."""
from __future__ import annotations

from dataclasses import replace

import torch

from engine.conditioners.chroma import N_CHROMA
from engine.loaders.parts import ModelParts
from engine.loaders.text_encoders import build_text_encoder
from engine.models.encodec import EncodecModel, debug_codec_config
from engine.models.lm import LMModel, debug_lm_config

DEBUG_SEED = 0
DEBUG_TEXT = {"kind": "debug", "seed": DEBUG_SEED, "dim": debug_lm_config().cond_dim}


def debug_parts() -> ModelParts:
    """The ``debug`` MusicGen: a causal LM with a 30-s window."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(DEBUG_SEED)
        codec = EncodecModel(debug_codec_config()).eval()
        lm = LMModel(debug_lm_config()).eval()
    return ModelParts(family="musicgen", name="debug", codec=codec,
                      text_encoder=build_text_encoder(DEBUG_TEXT), max_duration=30.0, lm=lm,
                      text_encoder_spec=dict(DEBUG_TEXT))


def debug_magnet_parts(seed: int = DEBUG_SEED) -> ModelParts:
    """The ``debug-magnet`` MAGNeT: a non-causal LM with a 10-s segment and a tiny AR LM, so
    every mode (magnet, hybrid, ar) runs."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        codec = EncodecModel(debug_codec_config()).eval()
        lm = LMModel(replace(debug_lm_config(), causal=False)).eval()
        ar_lm = LMModel(debug_lm_config()).eval()
    text = build_text_encoder({**DEBUG_TEXT, "seed": seed})
    return ModelParts(family="magnet", name="debug-magnet", codec=codec, text_encoder=text,
                      max_duration=10.0, lm=lm, ar_lm=ar_lm)


def debug_melody_parts() -> ModelParts:
    """The ``debug-melody`` MusicGen-Melody: chroma and text prepended (no cross-attention),
    a 10-s window (a 79-frame chroma prefix)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(DEBUG_SEED)
        codec = EncodecModel(debug_codec_config()).eval()
        cfg = debug_lm_config()
        lm = LMModel(replace(cfg, cond_dim=0, prefix_text_dim=cfg.cond_dim,
                             chroma_bins=N_CHROMA)).eval()
    return ModelParts(family="musicgen", name="debug-melody", codec=codec,
                      text_encoder=build_text_encoder(DEBUG_TEXT), max_duration=10.0, lm=lm,
                      text_encoder_spec=dict(DEBUG_TEXT))
