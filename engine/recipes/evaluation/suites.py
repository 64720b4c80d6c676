"""The evaluation suites behind ``barforge eval``: numbers (results.json) + a spectrogram PNG per
sample (engine/recipes/evaluation/command.py describes each suite).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from engine.recipes.evaluation import metrics as M
from engine.recipes.evaluation.figures import comparison_png


def _summary(rows: list[dict], keys: list[str]) -> dict:
    return {k: float(np.mean([r[k] for r in rows])) for k in keys}


def eval_codec(codec, corpus: str, out: Path, items: int, seconds: float, split: str = "valid") -> dict:
    from engine.recipes.training.dataset import load_wav, read_index

    sr = codec.sample_rate
    rows = []
    for item in read_index(corpus, split)[:items]:
        wav = load_wav(corpus, item, sr)[:round(seconds * sr)]
        x = torch.from_numpy(wav)[None, None]
        with torch.inference_mode():
            recon = codec.decode(codec.encode(x))[0, 0, :len(wav)].numpy()
        ref = torch.from_numpy(wav)
        row = {"id": item["id"], "caption": item["caption"]}
        key = M.estimate_key(wav, sr)
        row["original_percussive"] = M.percussive_ratio(wav, sr)
        for name, est in (("codec", recon), ("mulaw4", M.mu_law(wav, 4)), ("lowpass8k", M.lowpass(wav, sr, 8000))):
            e = torch.from_numpy(np.ascontiguousarray(est, dtype=np.float32))
            row[f"{name}_mel"] = float(M.multiscale_mel_distance(ref, e, sr))
            row[f"{name}_sisnr_db"] = float(M.si_snr(ref, e))
            # pitch kept: the key-finder hears the same key in the copy as in the original
            row[f"{name}_key_kept"] = float(M.estimate_key(np.asarray(est, dtype=np.float32), sr) == key)
            # drums kept: the high-band percussive share of the copy next to the original's
            row[f"{name}_percussive"] = M.percussive_ratio(np.asarray(est, dtype=np.float32), sr)
        rows.append(row)
        comparison_png(out / f"{item['id']}.png", item["caption"], [("original", wav), ("through the codec", recon)], sr)
    keys = [k for k in rows[0] if k.endswith(("_mel", "_db", "_key_kept", "_percussive"))]
    percussive = [k for k in keys if k.endswith("_percussive")]
    return {"kind": "codec", "items": len(rows), "mean": _summary(rows, keys),
            "median": {k: float(np.median([r[k] for r in rows])) for k in percussive}, "per_item": rows}


def loop_metrics(wav: np.ndarray, sr: int, bpm: float, key: str, drums: bool, drum_threshold: float) -> dict:
    """The generated-loop metrics of one clip against what was asked."""
    tempo = M.estimate_tempo(wav, sr)
    found_key = M.estimate_key(wav, sr)
    ratio = M.percussive_ratio(wav, sr)
    return {"bpm_asked": bpm, "bpm_found": tempo, "tempo_ok": M.tempo_error(tempo, bpm) <= 0.02,
            "tempo_ok_octave": M.octave_tolerant_tempo_error(tempo, bpm) <= 0.02,
            "key_asked": key, "key_found": found_key, "key_ok": found_key == key,
            "key_score": M.key_score(found_key, key), "drums_asked": drums, "percussive_ratio": ratio,
            "drums_ok": (ratio > drum_threshold) == drums, "flatness": M.spectral_flatness(wav),
            "rms": float(np.sqrt(np.mean(wav ** 2)))}


LOOP_KEYS = ["tempo_ok", "tempo_ok_octave", "key_ok", "key_score", "drums_ok", "flatness"]


def eval_corpus(corpus: str, out: Path, items: int, drum_threshold: float) -> dict:
    from engine.recipes.training.dataset import load_wav, read_index

    rows = []
    for item in read_index(corpus, "all")[:items]:
        wav = load_wav(corpus, item, item["sample_rate"])
        row = {"id": item["id"], "caption": item["caption"],
               **loop_metrics(wav, item["sample_rate"], item["bpm"], item["key"], "drums" in item["parts"], drum_threshold)}
        rows.append(row)
        comparison_png(out / f"{item['id']}.png", item["caption"], [(item["audio"], wav)], item["sample_rate"],
                       60.0 * item["beats_per_bar"] / item["bpm"])
    return {"kind": "corpus", "items": len(rows), "mean": _summary(rows, LOOP_KEYS), "per_item": rows}


def eval_generate(model_path: str, out: Path, prompts: int, seed: int, bars: int, mode: str | None,
                  drum_threshold: float) -> dict:
    import soundfile as sf

    from engine.conditioners.caption import describe
    from engine.recipes.data.synth import sample_spec
    from engine.api import load_model
    from engine.tempo import Tempo

    model = load_model(model_path)
    sr = model.sample_rate
    rows = []
    for i in range(prompts):
        spec = sample_spec(seed, i)
        text = describe(spec.description, spec.bpm, spec.key)
        n_bars = bars
        duration = n_bars * spec.beats_per_bar * 60.0 / spec.bpm   # past a segment: in windows
        params: dict = {"duration": duration, "seed": seed + i}
        if mode:
            params["mode"] = mode
        model.set_generation_params(**params)
        # the session tempo, as the bridge and `generate --bars` give it
        tempo = Tempo(spec.bpm, spec.beats_per_bar)
        wav = model.generate([text], tempo=tempo)[0].mean(dim=0).cpu().numpy()
        sf.write(out / f"prompt_{i:03d}.wav", wav, sr)
        row = {"prompt": text, "bars": n_bars, "seconds": duration, **loop_metrics(wav, sr, spec.bpm, spec.key, "drums" in spec.parts, drum_threshold)}
        rows.append(row)
        comparison_png(out / f"prompt_{i:03d}.png", text, [(f"generated: {model_path}, seed {seed + i}", wav)], sr,
                       float(tempo.bar_seconds))
    return {"kind": "generate", "model": model_path, "mode": mode, "items": len(rows),
            "mean": _summary(rows, LOOP_KEYS), "per_item": rows}
