"""``barforge eval figures``: one PNG per held-out loop, generated above real, one colour scale."""
import json
import struct

import numpy as np
import pytest
import soundfile as sf

from engine.cli import main
from engine.recipes.evaluation.figures import FIGURE_PX, comparison_png

SR = 32000


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A synth corpus of two held-out 2-bar loops (and one training loop the command must skip)."""
    root = tmp_path_factory.mktemp("corpus")
    rows = []
    for i, (bpm, split) in enumerate([(120, "train"), (120, "valid"), (150, "valid")]):
        n = round(2 * 4 * 60 / bpm * SR)
        wav = 0.2 * np.sin(2 * np.pi * 220.0 * np.arange(n) / SR)
        name = f"loop_{i:06d}"
        sf.write(root / f"{name}.wav", wav.astype(np.float32), SR, subtype="PCM_16")
        rows.append({"id": name, "audio": f"{name}.wav", "split": split, "bars": 2, "bpm": bpm,
                     "beats_per_bar": 4, "sample_rate": SR,
                     "caption": f"test loop {i}, A minor. bpm: {bpm}. key: A minor."})
    (root / "index.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_figures_writes_one_png_per_held_out_loop_at_its_length(corpus, tmp_path, capsys):
    assert main(["eval", "figures", "--model", "debug", "--data", str(corpus), "--items", "5",
                 "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "figures.json").read_text())
    assert [r["id"] for r in rows] == ["loop_000001", "loop_000002"]     # the valid split only
    assert [r["seconds"] for r in rows] == [4.0, 3.2]                    # each loop's own 2 bars
    assert {r["mode"] for r in rows} == {"ar"}                           # the debug model's default
    assert all(r["real_bar_chroma_change"] < 0.05 for r in rows)          # a held sine: no change
    assert all(r["real_key"] and r["generated_key"] for r in rows)
    for r in rows:
        png = tmp_path / r["png"]
        assert _png_size(png) == FIGURE_PX
        assert 10_000 < png.stat().st_size < 200_000
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "figures.json", "loop_000001.png", "loop_000001.wav", "loop_000002.png", "loop_000002.wav"]
    assert len(capsys.readouterr().out.splitlines()) == 2


@pytest.mark.parametrize("args, says", [
    (["--items", "0"], "--items must be >= 1"),
    (["--mode", "hybrid"], "mode 'hybrid' is not supported"),
    (["--data", "/nonexistent/corpus"], "index.jsonl missing"),
])
def test_bad_input_is_one_line(corpus, tmp_path, capsys, args, says):
    argv = ["eval", "figures", "--model", "debug", "--data", str(corpus), "--out", str(tmp_path), *args]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and says in err
    assert not list(tmp_path.glob("*.png"))


def test_panels_share_one_colour_scale(tmp_path):
    """Noise and the same noise 40 dB down: on one scale the quiet panel is darker (on a scale
    of its own each panel would look the same)."""
    import matplotlib.image

    noise = np.random.default_rng(0).standard_normal(SR * 2).astype(np.float32) * 0.1
    path = tmp_path / "scale.png"
    comparison_png(path, "noise", [("loud", noise), ("quiet", noise * 0.01)], SR, 1.0)
    rgb = matplotlib.image.imread(path)[..., :3].mean(axis=-1)          # [H, W] in [0, 1]
    h, w = rgb.shape
    inner = slice(int(0.2 * w), int(0.6 * w))
    top, bottom = rgb[int(0.2 * h):int(0.4 * h), inner], rgb[int(0.65 * h):int(0.85 * h), inner]
    assert top.mean() > bottom.mean() + 0.2


def test_one_panel_without_bar_lines(tmp_path):
    """The eval suites' single spectrograms (corpus loops, codec copies without a tempo) are the
    same figure: one panel, no bar lines, still FIGURE_PX."""
    path = tmp_path / "one.png"
    comparison_png(path, "a sine", [("sine", 0.1 * np.sin(np.arange(SR) * 0.1).astype(np.float32))], SR)
    assert _png_size(path) == FIGURE_PX
