"""The Barforge Player LV2 plugin in real LV2 tools (lilv-utils: lv2ls, lv2info, lv2apply)."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from plugin_host.shm import ServerSegment

soundfile = pytest.importorskip("soundfile")

LV2_DIR = Path(__file__).resolve().parent.parent / "plugin_host" / "lv2"
URI = "http://barforge.dev/lv2/player"
TOOLS = ("lv2ls", "lv2info", "lv2apply")
pytestmark = pytest.mark.skipif(
    not all(shutil.which(t) for t in TOOLS) or not Path("/usr/include/lv2/core/lv2.h").exists(),
    reason="needs lilv-utils (lv2ls, lv2info, lv2apply) and lv2-dev: apt-get install lilv-utils lv2-dev")


@pytest.fixture(scope="module")
def lv2_path(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("lv2")
    subprocess.run(["make", "-s", "-C", str(LV2_DIR), f"OUT={out}"], check=True)
    return str(out)


@pytest.fixture
def segment():
    name = f"bflv2{os.getpid()}"
    seg = ServerSegment.create(name, 3, 40000, 2, 9000 * 4)
    yield seg
    seg.close()


def test_plugin_is_listed_and_described(lv2_path):
    env = dict(os.environ, LV2_PATH=lv2_path)
    listed = subprocess.run(["lv2ls"], env=env, capture_output=True, text=True, check=True)
    assert URI in listed.stdout.split()
    info = subprocess.run(["lv2info", URI], env=env, capture_output=True, text=True, check=True)
    assert "Barforge Player" in info.stdout
    for symbol in ("in_l", "out_r", "control", "bars", "generate", "continue", "slot", "capture"):
        assert f"Symbol:      {symbol}" in info.stdout


def _apply(lv2_path, seg, tmp_path, audio, sr, *controls):
    src, dst = tmp_path / "in.wav", tmp_path / "out.wav"
    soundfile.write(src, audio, sr, subtype="FLOAT")
    env = dict(os.environ, LV2_PATH=lv2_path, BARFORGE_SHM_NAME=seg.name)
    args = [a for sym, val in controls for a in ("-c", sym, str(val))]
    run = subprocess.run(["lv2apply", "-i", str(src), "-o", str(dst), *args, URI], env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    out, out_sr = soundfile.read(dst, dtype="float32", always_2d=True)
    assert out_sr == sr and out.shape == (len(audio), 2)
    return out


def test_lv2apply_plays_the_newest_clip_on_the_bar_grid_and_captures_its_input(
        lv2_path, segment, tmp_path):
    sr, bpm = 8000, 120.0  # one 4/4 bar = 16000 frames
    rng = np.random.default_rng(0)
    old = rng.uniform(-0.5, 0.5, (16000, 2)).astype(np.float32)
    clip = rng.uniform(-0.5, 0.5, (32000, 2)).astype(np.float32)  # 2 bars
    segment.publish(old, sample_rate=sr, bars=1, bpm=bpm, beats_per_bar=4, start_beat=-1,
                    flags=0, job_id="old")
    segment.publish(clip, sample_rate=sr, bars=2, bpm=bpm, beats_per_bar=4, start_beat=-1,
                    flags=1, job_id="new")
    segment.reset_capture(sr)
    n = 5 * 16000 + 123
    audio_in = (0.25 * np.sin(np.arange(n) * 0.05)).astype(np.float32)
    out = _apply(lv2_path, segment, tmp_path, audio_in, sr)
    # Free-running at the clip's tempo (no host transport): the 2-bar loop from frame 0, exactly.
    np.testing.assert_array_equal(out, np.tile(clip, (3, 1))[:n])
    # The input went into the capture ring, with the session beat at its end.
    win = segment.read_capture(n)
    assert win.end_frame == n and win.sample_rate == sr
    assert win.beat_at_end == pytest.approx(n * bpm / 60 / sr)
    keep = len(win.audio)
    np.testing.assert_array_equal(win.audio, np.repeat(audio_in[-keep:, None], 2, axis=1))


def test_slot_port_picks_an_older_clip_and_mono_clips_play_on_both_channels(
        lv2_path, segment, tmp_path):
    sr = 8000
    mono = np.linspace(-1, 1, 12000, dtype=np.float32)[:, None]  # 1 bar of 3/4 at 120 bpm
    segment.publish(mono, sample_rate=sr, bars=1, bpm=120.0, beats_per_bar=3, start_beat=-1,
                    flags=0, job_id="mono")
    segment.publish(np.ones((16000, 2), np.float32), sample_rate=sr, bars=1, bpm=120.0,
                    beats_per_bar=4, start_beat=-1, flags=0, job_id="other")
    out = _apply(lv2_path, segment, tmp_path, np.zeros(30000, np.float32), sr, ("slot", 0),
                 ("capture", 0))
    expect = np.tile(mono[:, 0], 3)[:30000]
    np.testing.assert_array_equal(out[:, 0], expect)
    np.testing.assert_array_equal(out[:, 1], expect)
    assert segment.read_capture(10) is None  # capture port off: nothing written


def test_without_a_segment_the_plugin_outputs_silence(lv2_path, tmp_path):
    class Missing:
        name = f"bfnone{os.getpid()}"

    out = _apply(lv2_path, Missing, tmp_path, np.ones(1000, np.float32), 8000)
    assert not out.any()
