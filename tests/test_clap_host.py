"""The DPF Barforge Player's CLAP build in a small C host (plugin_host/dpf/tests/clap_host.c):
loaded through its clap_entry, process() driven with a playing transport rounded to whole
ticks. The clip must land on the bar grid within 0.5 sample in every block, and process() must
not allocate, lock, log or make a system call over 10,000 blocks."""
from __future__ import annotations

import os
import re
import socket
import subprocess
from pathlib import Path

import numpy as np
import pytest

from plugin_host.shm import ServerSegment
from tests.bar_grid import RATE, block_offsets, loop_frames, ramp_clip

HOST_DIR = Path(__file__).resolve().parent.parent / "plugin_host" / "dpf" / "tests"
CLIP_BARS, BARS = 2, 8


@pytest.fixture(scope="module")
def host(dpf_bundles, tmp_path_factory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("claphost")
    subprocess.run(["make", "-s", "-C", str(HOST_DIR), f"OUT={out}"], check=True)
    return out / "clap_host", dpf_bundles / "BarforgePlayer.clap"


@pytest.fixture
def segment(request):
    name = re.sub(r"[^A-Za-z0-9]", "", f"bfc{os.getpid()}{request.node.name}")[:30]
    seg = ServerSegment.create(name, 4, 2 * 300000, 2, 9000 * 4)
    yield seg
    seg.close()


def run_host(host, seg, bpm, bpb, blocks, out, *extra, osc_port=1) -> str:
    exe, clap = host
    env = dict(os.environ, BARFORGE_SHM_NAME=seg.name, BARFORGE_OSC_PORT=str(osc_port))
    done = subprocess.run([str(exe), str(clap), str(RATE), str(bpm), str(bpb), str(blocks),
                           str(out), *extra], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.parametrize("bpm,bpb", [(120.0, 4), (97.0, 4), (140.0, 3)])
def test_clap_plays_the_clip_on_the_bar_grid(host, segment, tmp_path, bpm, bpb):
    clip = ramp_clip(CLIP_BARS, bpm, bpb)
    segment.publish(clip, sample_rate=RATE, bars=CLIP_BARS, bpm=bpm, beats_per_bar=bpb,
                    start_beat=-1, flags=1, job_id="ramp")
    blocks = int(np.ceil(loop_frames(BARS, bpm, bpb) / 1024))
    run_host(host, segment, bpm, bpb, blocks, tmp_path / "out.f32")
    out = np.fromfile(tmp_path / "out.f32", dtype=np.float32).reshape(-1, 2)
    worst = block_offsets(out, len(clip), loop_frames(CLIP_BARS, bpm, bpb))
    assert not np.isnan(worst).any(), "a block without the clip"
    print(f"CLAP {bpm} BPM {bpb}/4: {len(worst)} blocks, max offset {worst.max():.4f} samples")
    assert worst.max() < 0.5, f"blocks off the grid: {np.flatnonzero(worst >= 0.5)[:10]}"


def test_clap_process_never_allocates_locks_logs_or_makes_system_calls(host, segment):
    segment.publish(ramp_clip(CLIP_BARS, 120.0, 4), sample_rate=RATE, bars=CLIP_BARS,
                    bpm=120.0, beats_per_bar=4, start_beat=-1, flags=1, job_id="ramp")
    segment.reset_capture(RATE)
    osc = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    osc.bind(("127.0.0.1", 0))
    osc.settimeout(2.0)
    try:
        stats = run_host(host, segment, 120.0, 4, 10000, "-", "stress",
                         osc_port=osc.getsockname()[1])
        generate = []
        try:
            while True:
                msg = osc.recv(2048)
                if msg.startswith(b"/barforge/generate"):
                    generate.append(msg)
        except socket.timeout:
            pass
    finally:
        osc.close()
    counts = dict(re.findall(r"(\w+)=(\d+)", stats))
    assert int(counts.pop("probe")) > 0, "the interposition saw nothing: the check is blind"
    assert counts.pop("blocks") == "10000"
    assert counts == {}, f"calls inside process(): {counts}"
    # The stress run pressed Generate 14 times; each became one request, sent off the audio
    # thread (the host may quit before the last ones are sent).
    assert 10 <= len(generate) <= 14
    # and the capture ring got the input while the clip played
    assert segment.capture_state().write_frames > 0
