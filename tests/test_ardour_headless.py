"""The DPF Barforge Player (LV2 and VST3 builds) inside a real DAW: Ardour 7 headless
(ardour7-lua, Dummy backend). A published ramp clip must come out of Ardour's export on the
host's bar grid, within 0.5 sample in every 1024-frame block over 8 bars, at integer and
fractional tempos and in 3/4; after an export the player must still re-attach to a restarted
server's segment."""
from __future__ import annotations

import os
import re
import time
from pathlib import Path

import numpy as np
import pytest

from plugin_host.shm import ServerSegment
from tests.ardour_session import ArdourRun, attempts, available
from tests.bar_grid import RATE, block_offsets, loop_frames, ramp_clip

soundfile = pytest.importorskip("soundfile")

pytestmark = pytest.mark.skipif(not available(), reason="needs Ardour 7: apt-get install ardour")

PLUGINS = {"LV2": "http://barforge.dev/plugins/player", "VST3": "Barforge Player"}
CLIP_BARS, EXPORT_BARS = 2, 8


@pytest.fixture(scope="module")
def bundles(dpf_bundles) -> Path:
    return dpf_bundles


@pytest.fixture
def shm_name(request):
    name = re.sub(r"[^A-Za-z0-9]", "", f"bfa{os.getpid()}{request.node.name}")[:30]
    yield name
    if os.path.exists(f"/dev/shm/{name}"):
        os.unlink(f"/dev/shm/{name}")


def start(tmp_path, bundles, shm_name, kind, bpm, bpb, exports) -> ArdourRun:
    frames = int(np.ceil(loop_frames(EXPORT_BARS, bpm, bpb)))
    return ArdourRun(tmp_path, plugin=PLUGINS[kind], kind=kind, bpm=bpm, beats_per_bar=bpb,
                     frames=frames, exports=exports,
                     env={"LV2_PATH": str(bundles), "BARFORGE_SHM_NAME": shm_name,
                          "BARFORGE_OSC_PORT": "1"},  # (nothing is requested here)
                     vst3_dir=bundles if kind == "VST3" else None)


def publish(seg: ServerSegment, bpm: float, bpb: int, offset: float) -> np.ndarray:
    clip = ramp_clip(CLIP_BARS, bpm, bpb, offset)
    seg.publish(clip, sample_rate=RATE, bars=CLIP_BARS, bpm=bpm, beats_per_bar=bpb,
                start_beat=-1, flags=1, job_id=f"ramp{offset:g}")
    return clip


def assert_on_grid(wav: Path, clip: np.ndarray, bpm: float, bpb: int, offset: float) -> float:
    out, sr = soundfile.read(wav, dtype="float32", always_2d=True)
    assert sr == RATE and len(out) == int(np.ceil(loop_frames(EXPORT_BARS, bpm, bpb)))
    worst = block_offsets(out, len(clip), loop_frames(CLIP_BARS, bpm, bpb), offset)
    assert not np.isnan(worst).any(), "a block without the clip"
    print(f"{wav.name}: {len(worst)} blocks, max offset {worst.max():.4f} samples")
    assert worst.max() < 0.5, f"blocks off the grid: {np.flatnonzero(worst >= 0.5)[:10]}"
    return float(worst.max())


@pytest.mark.parametrize("kind", ["LV2", "VST3"])
@pytest.mark.parametrize("bpm,bpb", [(120.0, 4), (97.0, 4), (140.0, 3)])
def test_export_plays_the_clip_on_the_bar_grid(tmp_path, bundles, shm_name, kind, bpm, bpb):
    seg = ServerSegment.create(shm_name, 4, 2 * 300000, 2, 9000 * 4)
    try:
        clip = publish(seg, bpm, bpb, 0.0)
        for k, attempt in enumerate(attempts()):
            with attempt:
                run = start(tmp_path / f"try{k}", bundles, shm_name, kind, bpm, bpb, exports=1)
                try:
                    wav = run.export(1)
                finally:
                    run.close()
        assert_on_grid(wav, clip, bpm, bpb, 0.0)
    finally:
        seg.close()


@pytest.mark.parametrize("kind", ["LV2", "VST3"])
def test_after_an_export_the_player_reattaches_to_a_restarted_server(tmp_path, bundles,
                                                                     shm_name, kind):
    bpm, bpb = 120.0, 4
    for k, attempt in enumerate(attempts()):
        with attempt:
            seg = ServerSegment.create(shm_name, 4, 2 * 300000, 2, 9000 * 4)
            run = None
            try:
                first = publish(seg, bpm, bpb, 0.0)
                run = start(tmp_path / f"try{k}", bundles, shm_name, kind, bpm, bpb, exports=2)
                assert_on_grid(run.export(1), first, bpm, bpb, 0.0)
                seg.close()  # the server goes away (its name with it) and a new one starts
                seg = ServerSegment.create(shm_name, 4, 2 * 300000, 2, 9000 * 4)
                second = publish(seg, bpm, bpb, 2.0)
                time.sleep(2.0)  # the player looks every 0.5 s of audio (real time here)
                assert_on_grid(run.export(2), second, bpm, bpb, 2.0)
            finally:
                if run is not None:
                    run.close()
                seg.close()
