"""The DPF Barforge Player in small C hosts, one per format (plugin_host/dpf/tests): the LV2
build with Ardour's kind of time:Position, the VST3 build through DPF's C ABI headers, the CLAP
build through its clap_entry (no CLAP host is packaged in Debian). Each drives a playing
transport rounded to whole 1/1920-beat ticks. The clip must land on the bar grid within 0.5
sample in every block, and the plugin's process call must not allocate, lock, log or make a
system call over 10,000 blocks with relocations, tempo changes and Generate presses."""
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
FORMATS = {  # host, plugin binary in the build folder
    "LV2": ("lv2_host", "BarforgePlayer.lv2/BarforgePlayer_dsp.so"),
    "VST3": ("vst3_host", "BarforgePlayer.vst3/Contents/x86_64-linux/BarforgePlayer.so"),
    "CLAP": ("clap_host", "BarforgePlayer.clap"),
}
pytestmark = pytest.mark.skipif(not Path("/usr/include/lv2/atom/forge.h").exists(),
                                reason="needs lv2-dev (the LV2 host): apt-get install lv2-dev")


@pytest.fixture(scope="module")
def hosts(dpf_bundles, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dpfhosts")
    subprocess.run(["make", "-s", "-C", str(HOST_DIR), f"OUT={out}"], check=True)
    return out


@pytest.fixture
def segment(request):
    name = re.sub(r"[^A-Za-z0-9]", "", f"bfd{os.getpid()}{request.node.name}")[:30]
    seg = ServerSegment.create(name, 4, 2 * 300000, 2, 9000 * 4)
    yield seg
    seg.close()


def run_host(hosts, bundles, kind, seg, bpm, bpb, blocks, out, *extra, osc_port=1) -> str:
    exe, plugin = FORMATS[kind]
    env = dict(os.environ, BARFORGE_SHM_NAME=seg.name, BARFORGE_OSC_PORT=str(osc_port))
    done = subprocess.run([str(hosts / exe), str(bundles / plugin), str(RATE), str(bpm),
                           str(bpb), str(blocks), str(out), *extra], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "assertion failure" not in done.stderr, done.stderr[-2000:]  # DPF's own checks
    return done.stdout.strip()


def publish(seg, bpm, bpb) -> np.ndarray:
    clip = ramp_clip(CLIP_BARS, bpm, bpb)
    seg.publish(clip, sample_rate=RATE, bars=CLIP_BARS, bpm=bpm, beats_per_bar=bpb,
                start_beat=-1, flags=1, job_id="ramp")
    return clip


def _with_fake_server(quiet_s: float, run):
    """``run(port)`` with a UDP socket on ``port`` standing in for the server: its result and
    the /barforge/generate datagrams that arrived until none came for ``quiet_s``."""
    osc = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    osc.bind(("127.0.0.1", 0))
    osc.settimeout(quiet_s)
    generate = []
    try:
        result = run(osc.getsockname()[1])
        try:
            while True:
                msg = osc.recv(2048)
                if msg.startswith(b"/barforge/generate"):
                    generate.append(msg)
        except socket.timeout:
            pass
    finally:
        osc.close()
    return result, generate


@pytest.mark.parametrize("kind", list(FORMATS))
@pytest.mark.parametrize("bpm,bpb", [(120.0, 4), (97.0, 4), (140.0, 3)])
def test_the_clip_lands_on_the_bar_grid(hosts, dpf_bundles, segment, tmp_path, kind, bpm, bpb):
    clip = publish(segment, bpm, bpb)
    blocks = int(np.ceil(loop_frames(BARS, bpm, bpb) / 1024))
    run_host(hosts, dpf_bundles, kind, segment, bpm, bpb, blocks, tmp_path / "out.f32")
    out = np.fromfile(tmp_path / "out.f32", dtype=np.float32).reshape(-1, 2)
    worst = block_offsets(out, len(clip), loop_frames(CLIP_BARS, bpm, bpb))
    assert not np.isnan(worst).any(), "a block without the clip"
    print(f"{kind} {bpm} BPM {bpb}/4: {len(worst)} blocks, max offset {worst.max():.4f} samples")
    assert worst.max() < 0.5, f"blocks off the grid: {np.flatnonzero(worst >= 0.5)[:10]}"


@pytest.mark.parametrize("kind", list(FORMATS))
def test_process_never_allocates_locks_logs_or_makes_system_calls(hosts, dpf_bundles, segment,
                                                                   kind):
    publish(segment, 120.0, 4)
    segment.reset_capture(RATE)
    stats, generate = _with_fake_server(2.0, lambda port: run_host(
        hosts, dpf_bundles, kind, segment, 120.0, 4, 10000, "-", "stress",
        "a prompt set without a UI", osc_port=port))
    counts = dict(re.findall(r"(\w+)=(\d+)", stats))
    assert int(counts.pop("probe")) > 0, "the interposition saw nothing: the check is blind"
    assert counts.pop("blocks") == "10000"
    if kind == "CLAP":
        # DPF's CLAP wrapper (not the player) try-locks the queue of its UI's parameter changes
        # once per process() (DistrhoPluginCLAP.cpp, MutexTryLocker): it never waits. Exactly
        # one per block, nothing else; the UI-less build made none at all.
        assert counts.pop("pthread_mutex_trylock", "0") in ("0", "10000")
    assert counts == {}, f"calls inside process(): {counts}"
    # 14 Generate presses, each one request sent off the audio thread (the host may quit
    # before the last ones leave)
    assert 10 <= len(generate) <= 14
    if kind == "LV2":  # the prompt came as a patch:Set, as a generic host sends it
        assert all(b"a prompt set without a UI" in m for m in generate)
    assert segment.capture_state().write_frames > 0  # the input went into the capture ring


def test_lv2_prompt_is_state_saved_and_restored_with_the_session(hosts, dpf_bundles, segment):
    """The prompt set in one instance (a patch:Set, as a generic host sends it), saved through
    the LV2 state interface and restored into a new instance, is the prompt that instance
    sends with Generate: what a DAW does when it saves a session and loads it again."""
    _, prompts = _with_fake_server(1.0, lambda port: run_host(
        hosts, dpf_bundles, "LV2", segment, 120.0, 4, 2000, "-", "stress",
        "saved with the session", "roundtrip", osc_port=port))
    assert prompts and all(b"\0saved with the session\0" in m for m in prompts)
