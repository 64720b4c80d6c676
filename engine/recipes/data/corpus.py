"""Render the procedural loop corpus (``barforge data synth``) to MIDI + 32 kHz mono WAV + JSON,
with FluidSynth and a General MIDI soundfont; engine/recipes/data/command.py documents the layout.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf

from engine.recipes.data.synth import compose, repeat_midi, sample_spec

SAMPLE_RATE = 32000
SOUNDFONTS = ("/usr/share/sounds/sf2/FluidR3_GM.sf2", "/usr/share/sounds/sf2/default-GM.sf2",
              "/usr/share/soundfonts/FluidR3_GM.sf2", "/usr/share/soundfonts/default.sf2")


def find_soundfont(path: str | None = None) -> str:
    """``path`` if given, else the first General MIDI soundfont installed in a standard place."""
    for p in ([path] if path else list(SOUNDFONTS)):
        if p and os.path.isfile(p):
            return p
    raise FileNotFoundError(f"no General MIDI soundfont at {path or SOUNDFONTS}; install "
                            "fluid-soundfont-gm (apt-get install fluidsynth fluid-soundfont-gm) or pass --soundfont")


def loop_samples(bars: int, beats_per_bar: int, bpm: float, sample_rate: int) -> int:
    """Length in samples of ``bars`` bars at ``bpm``: what every rendered loop is cut to."""
    return round(bars * beats_per_bar * 60.0 * sample_rate / bpm)


def render_loop(mid, n_samples: int, soundfont: str, sample_rate: int = SAMPLE_RATE,
                target_rms_db: float = -20.0) -> np.ndarray:
    """Render a loop to mono float32 of exactly ``n_samples``.

    The loop is played twice and the second pass kept, so the release and reverb tails of the
    end sound under the start, as when the loop repeats in a DAW.
    """
    if shutil.which("fluidsynth") is None:
        raise FileNotFoundError("fluidsynth not found on PATH; install it (apt-get install fluidsynth)")
    with tempfile.TemporaryDirectory(prefix="barforge-render-") as tmp:
        mid_path, wav_path = os.path.join(tmp, "loop.mid"), os.path.join(tmp, "loop.wav")
        repeat_midi(mid, 2).save(mid_path)
        subprocess.run(["fluidsynth", "-ni", "-q", "-g", "0.5", "-r", str(sample_rate), "-O", "s16",
                        "-T", "wav", "-F", wav_path, soundfont, mid_path],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        audio, sr = sf.read(wav_path, dtype="float32", always_2d=True)
    assert sr == sample_rate, f"fluidsynth wrote {sr} Hz, asked {sample_rate}"
    mono = audio.mean(axis=1)
    second = mono[n_samples:2 * n_samples]
    out = np.zeros(n_samples, dtype=np.float32)
    out[:len(second)] = second
    rms = float(np.sqrt(np.mean(out ** 2)))
    if rms > 1e-6:
        out *= 10 ** (target_rms_db / 20) / rms
        peak = float(np.abs(out).max())
        if peak > 0.98:
            out *= 0.98 / peak
    return out


def write_item(out_dir: Path, seed: int, index: int, soundfont: str, sample_rate: int = SAMPLE_RATE,
               music21_share: float = 0.0) -> dict:
    """Compose, render and write item ``index``: .mid, .wav and .json. Returns the sidecar."""
    spec = sample_spec(seed, index, music21_share=music21_share)
    mid = compose(spec)
    name = f"loop_{index:06d}"
    mid.save(str(out_dir / f"{name}.mid"))
    n = loop_samples(spec.bars, spec.beats_per_bar, spec.bpm, sample_rate)
    wav = render_loop(mid, n, soundfont, sample_rate)
    sf.write(str(out_dir / f"{name}.wav"), wav, sample_rate, subtype="PCM_16")
    side = spec.to_json()
    side.update(id=name, audio=f"{name}.wav", midi=f"{name}.mid", sample_rate=sample_rate, num_samples=n)
    (out_dir / f"{name}.json").write_text(json.dumps(side, indent=1))
    return side


def synth_corpus(out_dir: str | Path, hours: float, seed: int, soundfont: str | None = None,
                 jobs: int = 1, progress: bool = True, music21_share: float = 0.0) -> list[dict]:
    """Write items ``0, 1, ...`` until they total ``hours`` of audio; returns the sidecars.
    ``music21_share`` of the items (by draw) are Bach chorale excerpts."""
    if hours <= 0:
        raise ValueError(f"--hours must be > 0, got {hours}")
    if not 0.0 <= music21_share <= 1.0:
        raise ValueError(f"--music21 must be a share in [0, 1], got {music21_share}")
    if jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {jobs}")
    sf2 = find_soundfont(soundfont)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    target = hours * 3600.0
    indices, total = [], 0.0
    while total < target:          # the specs are cheap: decide the item count up front
        total += sample_spec(seed, len(indices), music21_share=music21_share).duration_s
        indices.append(len(indices))
    from tqdm import tqdm
    bar = tqdm(total=round(total), unit="s", desc="synth", disable=not progress)
    sidecars: list[dict] = []
    with ThreadPoolExecutor(max_workers=jobs) as pool:  # fluidsynth runs as a subprocess
        for side in pool.map(lambda i: write_item(out, seed, i, sf2, music21_share=music21_share), indices):
            sidecars.append(side)
            bar.update(round(side["duration_s"]))
    bar.close()
    with open(out / "index.jsonl", "w") as f:
        for side in sidecars:
            f.write(json.dumps(side) + "\n")
    (out / "corpus.json").write_text(json.dumps({
        "generator": "barforge data synth", "seed": seed, "hours_asked": hours,
        "items": len(sidecars), "seconds": total, "sample_rate": SAMPLE_RATE,
        "music21_share": music21_share,
        "music21_items": sum(s["extra"].get("source") == "music21" for s in sidecars),
        "soundfont": os.path.basename(sf2),
        "valid_items": sum(s["split"] == "valid" for s in sidecars)}, indent=1))
    return sidecars
