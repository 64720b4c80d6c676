"""``barforge eval figures``: a model's loop beside the real one, as log-mel spectrograms.

For each of the first N loops of a synth corpus's held-out (``valid``) split, the model renders
the loop's own caption at its own tempo, meter and length (4 bars at 126 BPM: 7.62 s), exactly
as the bridge asks (engine/sample_generation.py); one PNG per loop shows the generated loop's
log-mel spectrogram above the real rendering's, on the same dB scale and time axis, with the
bar lines marked and the caption as the title. The model card's figures are made this way.
"""
from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import numpy as np
import torch

from engine.recipes.evaluation.metrics import bar_chroma_change, estimate_key
from engine.recipes.training.spectra import mel_filterbank, mel_spectrogram

FIGURE_PX = (1000, 560)       # width, height of every PNG
DPI = 100
N_FFT, HOP, N_MELS = 2048, 512, 128   # 64 ms windows: partials of notes above ~60 Hz resolve
DB_RANGE = 80.0               # the colour scale spans this far below the louder clip's peak
COLOURS = 20                  # 4-dB steps: the PNG half the size of a smooth colour map's (< 200 KB)
FREQ_TICKS_HZ = (100, 250, 500, 1000, 2000, 4000, 8000, 16000)


def log_mel_db(wav: np.ndarray, sample_rate: int) -> np.ndarray:
    """Log-mel power in dB [N_MELS, frames], low frequencies first."""
    mel = mel_spectrogram(torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32)), sample_rate,
                          N_FFT, N_MELS, HOP)
    return 10.0 * np.log10(mel.numpy() + 1e-10)


def comparison_png(path: str | Path, title: str, panels: list[tuple[str, np.ndarray]], sample_rate: int,
                   bar_seconds: float | None = None) -> None:
    """Write ``panels`` (label, mono audio of one length) as log-mel spectrograms stacked top to
    bottom, one colour scale for all, a dashed line at every bar (none when ``bar_seconds`` is
    None); the PNG is ``FIGURE_PX``."""
    import matplotlib
    matplotlib.use("Agg")            # files only: no display, whatever MPLBACKEND says
    import matplotlib.pyplot as plt

    dbs = [log_mel_db(wav, sample_rate) for _, wav in panels]
    top = max(float(db.max()) for db in dbs)
    seconds = len(panels[0][1]) / sample_rate
    # the y axis in Hz: the centre of each mel band, read off the filterbank the spectrogram used
    centres = mel_filterbank(sample_rate, N_FFT, N_MELS).numpy().argmax(axis=1) * sample_rate / N_FFT
    ticks = [f for f in FREQ_TICKS_HZ if f < sample_rate / 2]
    fig, axes = plt.subplots(len(panels), 1, sharex=True, squeeze=False,
                             figsize=(FIGURE_PX[0] / DPI, FIGURE_PX[1] / DPI), dpi=DPI)
    for ax, (label, _), db in zip(axes[:, 0], panels, dbs):
        image = ax.imshow(db, origin="lower", aspect="auto", interpolation="nearest",
                          cmap=plt.get_cmap("magma", COLOURS), vmin=top - DB_RANGE, vmax=top,
                          extent=(0.0, seconds, 0, N_MELS))
        for t in np.arange(0.0, seconds + 1e-6, bar_seconds) if bar_seconds else ():
            ax.axvline(t, color="white", linestyle="--", linewidth=0.8)
        ax.set_yticks([np.searchsorted(centres, f) for f in ticks])
        ax.set_yticklabels([f"{f / 1000:g}k" if f >= 1000 else str(f) for f in ticks])
        ax.set_ylabel("Hz (mel scale)")
        ax.set_title(label, fontsize=9, loc="left")
    axes[-1, 0].set_xlabel("seconds (dashed: bar lines)" if bar_seconds else "seconds")
    fig.subplots_adjust(top=0.86, bottom=0.09, left=0.08)
    fig.suptitle("\n".join(textwrap.wrap(title, 140)), fontsize=10)
    fig.colorbar(image, ax=axes[:, 0].tolist(), label="dB", pad=0.01)
    tmp = Path(f"{path}.tmp")
    fig.savefig(tmp, dpi=DPI, format="png")
    plt.close(fig)
    os.replace(tmp, path)            # never a half-written PNG under the final name


def held_out_figures(model_path: str, corpus: str, out: Path, items: int, mode: str | None,
                     seed: int) -> list[dict]:
    """One PNG per held-out loop (``<id>.png`` in ``out``, the generated loop beside it as
    ``<id>.wav`` to listen to) and the rows describing them."""
    import soundfile as sf
    import soxr

    from engine.api import load_model
    from engine.recipes.training.dataset import load_wav, read_index
    from engine.sample_generation import SampleRequest, generate_samples
    from engine.tempo import Tempo

    if items < 1:
        raise ValueError(f"--items must be >= 1, got {items}")
    loops = read_index(corpus, "valid")[:items]
    model = load_model(model_path)
    params: dict = {"seed": seed} if mode is None else {"seed": seed, "mode": mode}
    # a mode the model lacks fails before any work; without --mode, the model's default mode
    used = model.check_generation_params(**params).get("mode", model.supported_modes[0])
    rows = []
    for item in loops:
        sr = item["sample_rate"]
        real = load_wav(corpus, item, sr)
        tempo = Tempo(item["bpm"], item["beats_per_bar"])
        request = SampleRequest(item["caption"], params, len(real), sr, tempo)
        audio = generate_samples(model, request, lambda fraction: None).mean(axis=1)
        if model.sample_rate != sr:
            audio = soxr.resample(audio, model.sample_rate, sr)
        generated = audio[:len(real)]
        sf.write(out / f"{item['id']}.wav", generated, sr)
        comparison_png(out / f"{item['id']}.png", item["caption"],
                       [(f"generated: {model_path}, mode {used}, seed {seed}", generated),
                        (f"real rendering: {Path(corpus).name}/{item['audio']}", real)],
                       sr, float(tempo.bar_seconds))
        bar = tempo.frames(1, sr)
        rows.append({"id": item["id"], "caption": item["caption"], "bpm": item["bpm"],
                     "beats_per_bar": item["beats_per_bar"], "bars": item["bars"],
                     "seconds": len(real) / sr, "mode": used, "seed": seed, "png": f"{item['id']}.png",
                     # what the spectrograms show, in numbers: do the pitches move at all
                     **{f"{name}_{k}": v for name, wav in (("generated", generated), ("real", real))
                        for k, v in (("key", estimate_key(wav, sr)),
                                     ("bar_chroma_change", bar_chroma_change(wav, sr, bar)))}})
    (out / "figures.json").write_text(json.dumps(rows, indent=1))
    return rows
