"""The reference host: exact bar grid, timeline scheduling with the capture ring, an offline
session against a real server, and playback through a real PortAudio device (JACK dummy)."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from plugin_host.host.playback import BlockRenderer
from plugin_host.host.timeline import Timeline
from plugin_host.host.transport import Transport, round_half_away
from plugin_host.shm import HostSegment, ServerSegment

from bridge_server import free_port, spawn_server, terminate_server

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def segments():
    name = f"bfhost{os.getpid()}"
    srv = ServerSegment.create(name, 4, 60000, 2, 200000)
    host = HostSegment.attach(name)
    yield srv, host
    host.close()
    srv.close()


def test_bar_lines_fall_on_exact_rational_frames():
    t = Transport.create(121.7, 7, 44100)
    assert t.bpm == Fraction(121700, 1000)
    for bar in (1, 3, 64, 1000):
        exact = Fraction(bar * 7 * 60 * 44100) / Fraction(1217, 10)
        assert t.bar_frame(bar) == round_half_away(exact)
        assert abs(t.bar_frame(bar) - exact) <= Fraction(1, 2)  # no drift, however far
    assert t.bar_at_frame(t.bar_frame(5)) == 5 and t.bar_at_frame(t.bar_frame(5) - 1) == 4
    assert round_half_away(Fraction(5, 2)) == 3 and round_half_away(Fraction(-5, 2)) == -3
    with pytest.raises(ValueError, match="bpm"):
        Transport.create(10, 4, 48000)


def _publish(srv, frames, channels, seed, job, start_beat=-1.0, sr=8000, bars=1):
    audio = np.random.default_rng(seed).uniform(-1, 1, (frames, channels)).astype(np.float32)
    slot = srv.publish(audio, sample_rate=sr, bars=bars, bpm=97.0, beats_per_bar=3,
                       start_beat=start_beat, flags=0, job_id=job)
    return slot, audio


def test_timeline_loops_on_the_bar_grid_switches_at_start_beat_and_fills_the_capture_ring(segments):
    srv, host = segments
    t = Transport.create(97.0, 3, 8000)  # a bar is 14845.36... frames: not a whole number
    loop_frames = t.clip_frames(2)
    loop_slot, loop = _publish(srv, loop_frames, 2, 1, "loop", bars=2)
    cont_slot, cont = _publish(srv, t.clip_frames(1), 1, 2, "cont", start_beat=12.0)
    srv.reset_capture(8000)
    timeline = Timeline(t)
    timeline.place_at_bar(host.read_slot(loop_slot), 0)
    renderer = BlockRenderer(timeline, host)
    first = renderer.render_until(t.bar_frame(3), block=1000)
    timeline.place_at_beat(host.read_slot(cont_slot), 12.0)  # bar 4, after the render paused
    rest = renderer.render_until(t.bar_frame(6), block=777)
    out = np.concatenate([first, rest])
    switch = t.frame_at_beat(12)
    assert switch == t.bar_frame(4) == round_half_away(Fraction(12 * 60 * 8000, 97))
    np.testing.assert_array_equal(out[:switch], loop[np.arange(switch) % loop_frames])
    mono = cont[np.arange(len(out) - switch) % len(cont)]
    np.testing.assert_array_equal(out[switch:], np.repeat(mono, 2, axis=1))
    win = srv.read_capture(len(out))
    assert win.end_frame == len(out) == t.bar_frame(6)
    assert win.beat_at_end == pytest.approx(float(t.beat_at_frame(len(out))))
    np.testing.assert_array_equal(win.audio, out[-len(win.audio):])


def test_a_clip_at_another_sample_rate_is_refused(segments):
    srv, host = segments
    slot, _ = _publish(srv, 100, 1, 3, "x", sr=44100)
    with pytest.raises(ValueError, match="44100 Hz"):
        Timeline(Transport.create(120, 4, 48000)).place_at_bar(host.read_slot(slot), 0)


# ---- against a real server ----------------------------------------------------------------

def test_offline_session_against_a_running_server(tmp_path):
    pytest.importorskip("bridge.command", reason="bridge/ (barforge serve) is not available")
    pytest.importorskip("engine.api", reason="engine.load_model is not available")
    from plugin_host.host.osc_client import OscClient
    from plugin_host.host.session import SessionPlan, run_offline

    port, shm = free_port(), f"bfhs{os.getpid()}"
    proc = spawn_server(port, shm, tmp_path / "clips", tmp_path / "server.log", 20,
                        "--capture-seconds", "1", "--no-warm-up")
    client = OscClient(port)
    try:
        client.wait_pong(timeout=180)
        t = Transport.create(120.0, 4, 16000)
        # room after bar 2 for the lead rule (bridge/continuation.py) to start up to 4 bars late
        plan = SessionPlan("dusty boom-bap drums", loop_bars=1, total_bars=8, continue_at_bar=2,
                           continue_bars=1, options={"seed": 3}, timeout_s=300)
        with HostSegment.attach(shm) as segment:
            audio, timeline = run_offline(client, segment, t, plan)
        placed = timeline.placements
        assert len(audio) == t.bar_frame(8)
        assert placed[0].start_frame == 0 and placed[0].clip.frames == t.clip_frames(1)
        loop = placed[0].clip.audio
        np.testing.assert_array_equal(audio[: t.bar_frame(2)],
                                      loop[np.arange(t.bar_frame(2)) % len(loop)].repeat(
                                          2 // loop.shape[1], axis=1))
        assert abs(audio).max() > 1e-3
        # the continuation starts on a bar line, on an exact frame, after what was captured
        cont = placed[1]
        assert cont.start_frame % t.bar_frame(1) == 0
        assert t.bar_frame(2) <= cont.start_frame < t.bar_frame(8)
        k = cont.start_frame
        np.testing.assert_array_equal(audio[k: k + 100],
                                      cont.clip.audio[:100].repeat(2 // cont.clip.channels, axis=1))
    finally:
        client.close()
        terminate_server(proc)


# ---- a real PortAudio device ----------------------------------------------------------------

JACK_PLAYER = textwrap.dedent("""
    import sys, time
    import numpy as np
    from plugin_host.host.playback import BlockRenderer, SoundDevicePlayer
    from plugin_host.host.timeline import Timeline
    from plugin_host.host.transport import Transport
    from plugin_host.shm import HostSegment
    import sounddevice as sd
    jack = [i for i, a in enumerate(sd.query_hostapis()) if a["name"].startswith("JACK")]
    assert jack, sd.query_hostapis()
    device = sd.query_hostapis(jack[0])["default_output_device"]
    host = HostSegment.attach(sys.argv[1])
    t = Transport.create(120.0, 4, 48000)
    timeline = Timeline(t)
    timeline.place_at_bar(host.read_slot(0), 0)
    renderer = BlockRenderer(timeline, host)
    player = SoundDevicePlayer(renderer, device=device, blocksize=256)
    player.start()
    end = time.monotonic() + 10
    while renderer.position < 24000 and time.monotonic() < end:
        time.sleep(0.01)
    player.stop()
    print(player.blocks, renderer.position)
""")


@pytest.mark.skipif(not shutil.which("jackd"), reason="needs jackd (apt-get install jackd2 libportaudio2)")
def test_playback_through_a_real_portaudio_device_jack_dummy(tmp_path):
    server_name = f"bf{os.getpid()}"
    env = {**os.environ, "JACK_DEFAULT_SERVER": server_name, "JACK_NO_AUDIO_RESERVATION": "1",
           "PYTHONPATH": str(ROOT)}
    jackd = subprocess.Popen(["jackd", "--no-realtime", "-n", server_name, "-d", "dummy",
                              "-r", "48000", "-p", "256"], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    name = f"bfjack{os.getpid()}"
    srv = ServerSegment.create(name, 1, 48000, 2, 100000)
    try:
        clip = np.random.default_rng(0).uniform(-1, 1, (48000, 2)).astype(np.float32)
        srv.publish(clip, sample_rate=48000, bars=1, bpm=240.0, beats_per_bar=4,
                    start_beat=-1, flags=0, job_id="jack")
        srv.reset_capture(48000)
        time.sleep(1.0)  # let jackd come up
        run = subprocess.run([sys.executable, "-c", JACK_PLAYER, name], env=env, cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr[-3000:]
        blocks, position = map(int, run.stdout.split()[-2:])
        assert blocks > 0 and position >= 24000
        # what the device pulled is what the timeline holds, and it went into the capture ring
        win = srv.read_capture(position)
        assert win.end_frame == position
        expect = clip[np.arange(position - len(win.audio), position) % len(clip)]
        np.testing.assert_array_equal(win.audio, expect)
    finally:
        srv.close()
        jackd.send_signal(signal.SIGTERM)
        try:
            jackd.wait(10)
        except subprocess.TimeoutExpired:
            jackd.kill()
