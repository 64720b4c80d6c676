"""The Barforge Player in a test host (plugin_host/lv2/tests/lv2_harness.c) that gives it what
lv2apply cannot: urid:map, time:Position and patch:Set events on its control port, and a
worker. Clips are ramps published with ServerSegment, so every output sample says which clip
position was played; the worker's OSC requests land on a UDP socket of the test."""
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
from pathlib import Path

import numpy as np
import pytest

from plugin_host.shm import ServerSegment

pythonosc = pytest.importorskip("pythonosc.osc_message")

LV2_DIR = Path(__file__).resolve().parent.parent / "plugin_host" / "lv2"
pytestmark = pytest.mark.skipif(
    not shutil.which("make") or not Path("/usr/include/lv2/atom/forge.h").exists(),
    reason="needs make, a C compiler and lv2-dev: apt-get install build-essential lv2-dev")

RATE, BLOCK, XFADE = 48000, 128, 240  # XFADE: the plugin's 5 ms crossfade at 48 kHz
BAR = 96000                           # one 4/4 bar at 120 bpm
PORT = {"bars": 5, "generate": 6, "continue": 7, "slot": 8, "capture": 11}
JOB_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")  # PROTOCOL.md's job id
NOT_CALLS = ("probe", "blocks", "median_ns", "p999_ns", "max_ns")  # the other stats fields


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("lv2h")
    subprocess.run(["make", "-s", "-C", str(LV2_DIR), f"OUT={out}"], check=True)
    subprocess.run(["make", "-s", "-C", str(LV2_DIR / "tests"), f"OUT={out}"], check=True)
    return out / "barforge_player.lv2" / "barforge_player.so", out / "lv2_harness"


@pytest.fixture
def osc():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.5)
    yield sock
    sock.close()


@pytest.fixture
def name(request):
    n = f"bfh{os.getpid()}{request.node.name[-12:]}"
    n = re.sub(r"[^A-Za-z0-9]", "", n)[:30]
    yield n
    if os.path.exists(f"/dev/shm/{n}"):
        os.unlink(f"/dev/shm/{n}")


def new_segment(name: str) -> ServerSegment:
    return ServerSegment.create(name, 4, 2 * BAR, 2, 9000 * 4)


def ramp(frames: int, offset: float) -> np.ndarray:
    """A clip whose sample says its frame: left offset + i/frames, right the negative."""
    left = offset + np.arange(frames, dtype=np.float64) / frames
    return np.stack([left, -left], axis=1).astype(np.float32)


def publish(seg: ServerSegment, clip: np.ndarray, bars: int, job: str,
            start_beat: float = -1.0) -> int:
    return seg.publish(clip, sample_rate=RATE, bars=bars, bpm=120.0, beats_per_bar=4,
                       start_beat=start_beat, flags=1, job_id=job)


def at(clip: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """The clip linearly interpolated at fractional frame positions (as the plugin reads it)."""
    i = np.floor(pos).astype(np.int64) % len(clip)
    j = (i + 1) % len(clip)
    t = (pos - np.floor(pos))[:, None]
    return clip[i] + (clip[j] - clip[i]) * t


class Harness:
    """The C test host as a subprocess: one command per line, one answer per command."""

    def __init__(self, built, tmp_path: Path, shm_name: str, osc_port: int,
                 instances: int = 1) -> None:
        plugin, exe = built
        self.out_path = tmp_path / f"out{id(self)}.f32"
        env = dict(os.environ, BARFORGE_SHM_NAME=shm_name, BARFORGE_OSC_PORT=str(osc_port))
        self.proc = subprocess.Popen([str(exe), str(plugin), str(RATE), str(self.out_path),
                                      str(instances)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     env=env)
        self.frames = 0

    def cmd(self, line: str) -> str:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline().strip()
        assert answer.startswith("ok"), f"{line!r} -> {answer!r}"
        return answer

    def run(self, blocks: int) -> int:
        """Run blocks of 128 frames; returns the 'playing' port (-1: nothing)."""
        _, frames, playing = self.cmd(f"run {blocks}").split()
        self.frames = int(frames)
        return int(float(playing))

    def pos(self, frame: int, **keys: float) -> None:
        self.cmd(f"pos {frame} " + " ".join(f"{k}={v!r}" for k, v in keys.items()))

    def prompt(self, frame: int, text: str) -> None:
        self.cmd(f"prompt {frame} {text}")

    def port(self, symbol: str, value: float) -> None:
        self.cmd(f"port {PORT[symbol]} {value}")

    def stats(self) -> dict[str, int]:
        return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", self.cmd("stats"))}

    def close(self) -> np.ndarray:
        """Quit; returns everything the plugin played, [frames, 2]."""
        self.proc.stdin.write("quit\n")
        self.proc.stdin.close()
        assert self.proc.wait(timeout=30) == 0
        return np.fromfile(self.out_path, dtype=np.float32).reshape(-1, 2)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def harness(built, tmp_path, osc, name):
    made: list[Harness] = []

    def make(instances: int = 1) -> Harness:
        made.append(Harness(built, tmp_path, name, osc.getsockname()[1], instances))
        return made[-1]

    yield make
    for h in made:
        h.kill()


def received(sock: socket.socket) -> list[tuple[str, list]]:
    """Every OSC message waiting on the socket, in arrival order."""
    msgs = []
    sock.settimeout(0.2)
    while True:
        try:
            data = sock.recv(65536)
        except socket.timeout:
            return msgs
        m = pythonosc.OscMessage(data)
        msgs.append((m.address, list(m.params)))


# ---- transport ---------------------------------------------------------------------------

@pytest.mark.parametrize("bpm,keys,clip_pos", [
    (120.0, dict(bar=3, barbeat=0.5), 4.5 * 24000),  # beat 12.5 in a 2-bar (8-beat) loop
    (93.5, dict(bar=6, barbeat=0.5), 0.5 * 24000),   # beat 24.5: 0.5 beats in, slower host
    (140.0, dict(beat=9.25), 1.25 * 24000),          # time:beat instead of bar + barBeat
])
def test_position_mid_block_lands_on_its_exact_frame(harness, name, bpm, keys, clip_pos):
    seg = new_segment(name)
    clip = ramp(2 * BAR, 0.0)
    publish(seg, clip, 2, "two-bars")
    h = harness()
    h.run(10)  # no transport yet: free-running at the clip's tempo from frame 0
    h.pos(77, bpm=bpm, bpb=4.0, speed=1.0, **keys)
    h.run(20)
    out = h.close()
    seg.close()
    t = 10 * BLOCK + 77
    np.testing.assert_array_equal(out[:t], clip[:t])
    # From frame t on: the clip at the position of the host's beat, moving at host/clip tempo.
    pos = clip_pos + np.arange(len(out) - t) * bpm / 120.0
    np.testing.assert_allclose(out[t:], at(clip, pos), rtol=0, atol=2e-6)
    assert abs(out[t, 0] - clip_pos / len(clip)) < 1e-6


def test_stopped_transport_is_silent_and_resumes_where_it_stopped(harness, name):
    seg = new_segment(name)
    clip = ramp(2 * BAR, 0.0)
    publish(seg, clip, 2, "two-bars")
    seg.reset_capture(RATE)
    h = harness()
    h.pos(0, bpm=120.0, bpb=4.0, bar=0, barbeat=0.0, speed=1.0)
    h.run(10)
    h.pos(40, speed=0.0)                      # stop at frame 1320
    h.run(10)
    stopped = seg.capture_state()
    h.run(10)
    assert seg.capture_state() == stopped     # no capture, no beat advance while stopped
    h.pos(90, speed=1.0)                      # roll again at frame 3930
    h.run(10)
    rolled = seg.capture_state()
    h.pos(0, speed=0.0, bar=1, barbeat=2.0)   # stop and relocate to beat 6 ...
    h.run(5)
    h.pos(10, speed=1.0)                      # ... and roll from there
    h.run(5)
    out = h.close()
    seg.close()
    stop, roll = 10 * BLOCK + 40, 30 * BLOCK + 90
    np.testing.assert_array_equal(out[:stop], clip[:stop])
    assert not out[stop:roll].any()
    resumed = clip[stop:stop + 40 * BLOCK - roll]
    np.testing.assert_array_equal(out[roll:40 * BLOCK], resumed)
    stop2, roll2 = 40 * BLOCK, 45 * BLOCK + 10
    assert not out[stop2:roll2].any()
    np.testing.assert_array_equal(out[roll2:], clip[6 * 24000:6 * 24000 + len(out) - roll2])
    assert stopped.write_frames == 10 * BLOCK  # the block that stopped was not captured
    assert stopped.beat_at_write == pytest.approx(10 * BLOCK * 120 / 60 / RATE)
    assert rolled.write_frames == 20 * BLOCK


def test_reverse_play_wraps_and_nonsense_positions_are_ignored(harness, name):
    seg = new_segment(name)
    clip = ramp(2 * BAR, 0.0)
    publish(seg, clip, 2, "two-bars")
    h = harness()
    h.pos(0, bpm=120.0, bpb=4.0, bar=0, barbeat=1.0, speed=-1.0)   # a host playing backwards
    h.run(200)                                                     # past the clip's start
    h.pos(0, bpm=float("inf"), bpb=float("nan"), beat=float("nan"), speed=float("nan"))
    h.run(10)
    out = h.close()
    seg.close()
    k = np.arange(XFADE + 2, len(out))  # (after the fade-in of a start from silence mid-bar)
    np.testing.assert_allclose(out[k], at(clip, 24000.0 - k), rtol=0, atol=2e-6)


# ---- clip changes ------------------------------------------------------------------------

def test_new_clip_mid_bar_starts_on_the_next_bar_line_with_a_crossfade(harness, name):
    seg = new_segment(name)
    a, b = ramp(BAR, 0.0), ramp(BAR, 2.0)
    slot_a = publish(seg, a, 1, "a")
    h = harness()
    h.pos(0, bpm=120.0, bpb=4.0, bar=0, barbeat=0.5, speed=1.0)  # bar 1 at frame 84000
    assert h.run(300) == slot_a        # 38400 frames: mid-bar
    slot_b = publish(seg, b, 1, "b")
    assert h.run(356) == slot_a        # up to frame 83968, still before the bar line
    assert h.run(300) == slot_b
    out = h.close()
    seg.close()
    line, skip = 84000, 12000          # the bar line (mid-block); where a starts at frame 0
    g = np.arange(XFADE, dtype=np.float64)[:, None] / XFADE
    # Started from silence mid-bar: a fades in; then a alone, b not before the bar line.
    np.testing.assert_allclose(out[:XFADE], g * a[skip:skip + XFADE], rtol=0, atol=1e-5)
    np.testing.assert_array_equal(out[XFADE + 2:line], a[skip + XFADE + 2:])
    np.testing.assert_allclose(out[line:line + XFADE], (1 - g) * a[:XFADE] + g * b[:XFADE],
                               rtol=0, atol=1e-5)
    np.testing.assert_array_equal(out[line + XFADE + 2:], b[XFADE + 2:len(out) - line])


def test_continuation_waits_for_its_start_beat(harness, name):
    seg = new_segment(name)
    a, b = ramp(BAR, 0.0), ramp(BAR, 2.0)
    publish(seg, a, 1, "a")
    h = harness()
    h.pos(0, bpm=120.0, bpb=4.0, bar=0, barbeat=0.0, speed=1.0)
    h.run(100)
    publish(seg, b, 1, "cont", start_beat=8.0)  # starts on bar 2, not on bar 1
    h.run(1600)
    out = h.close()
    seg.close()
    np.testing.assert_array_equal(out[:2 * BAR], np.tile(a, (2, 1)))
    np.testing.assert_array_equal(out[2 * BAR + XFADE + 2:], b[XFADE + 2:len(out) - 2 * BAR])


# ---- the worker: OSC requests and re-attach ----------------------------------------------

def test_trigger_edges_send_one_request_each_from_the_worker(harness, name, osc):
    seg = new_segment(name)
    h = harness()
    h.prompt(3, "dusty boom-bap drums, vinyl crackle")
    h.pos(5, bpm=97.5, bpb=3.0, bar=0, barbeat=0.0, speed=1.0)
    h.port("bars", 8)
    h.run(2)
    h.port("generate", 1)
    h.run(5)                           # held high: one request
    h.port("generate", 0)
    h.run(1)
    h.port("generate", 1)
    h.run(1)
    h.port("generate", 0)
    h.port("continue", 1)
    h.run(3)
    h.port("continue", 0)
    h.prompt(0, "glassy arpeggio")     # a new prompt, tempo and a trigger in the same block
    h.pos(64, bpm=101.0)
    h.port("generate", 1)
    h.run(2)
    rt = h.stats()
    h.close()
    seg.close()
    msgs = received(osc)
    assert msgs[0] == ("/barforge/capture", [RATE])  # the plugin writes the capture ring
    requests = [m for m in msgs if m[0] in ("/barforge/generate", "/barforge/continue")]
    assert [m[0] for m in requests] == ["/barforge/generate", "/barforge/generate",
                                        "/barforge/continue", "/barforge/generate"]
    jobs = [m[1][0] for m in requests]
    assert len(set(jobs)) == 4 and all(JOB_RE.match(j) for j in jobs)
    assert requests[0][1][1:] == ["dusty boom-bap drums, vinyl crackle", 8]
    assert requests[1][1][1:] == ["dusty boom-bap drums, vinyl crackle", 8]
    assert requests[2][1][1:] == [8, "dusty boom-bap drums, vinyl crackle"]
    assert requests[3][1][1:] == ["glassy arpeggio", 8]
    # Each request comes right after a /barforge/transport with the host's tempo.
    for req, bpm in zip(requests, (97.5, 97.5, 97.5, 101.0)):
        k = msgs.index(req)
        assert msgs[k - 1] == ("/barforge/transport", [bpm, 3, RATE])
    assert len(msgs) == 1 + 2 * len(requests)
    # No sendto (nor anything else) from run() or work_response(): only the worker sent them.
    assert {k: v for k, v in rt.items() if k not in NOT_CALLS} == {}


def test_instances_in_one_process_use_distinct_job_ids(harness, name, osc):
    seg = new_segment(name)
    h = harness(instances=2)          # two tracks of one DAW
    h.prompt(0, "two tracks")
    h.run(1)
    h.port("generate", 1)
    h.run(1)
    h.close()
    seg.close()
    jobs = [m[1][0] for m in received(osc) if m[0] == "/barforge/generate"]
    assert len(jobs) == 2 and len(set(jobs)) == 2, jobs   # the server refuses a job id in use


@pytest.mark.parametrize("sync_worker", [False, True])
def test_replaced_segment_is_reattached_and_its_clip_played(harness, name, osc, sync_worker):
    # sync_worker: work() and work_response() run inside schedule_work(), as in Ardour while it
    # exports; a check flagged in flight only after schedule_work() returned stayed in flight
    seg = new_segment(name)
    a, b = ramp(BAR, 0.0), ramp(BAR, 2.0)
    publish(seg, a, 1, "a")
    h = harness()
    if sync_worker:
        h.cmd("sync 1")
    h.pos(0, bpm=120.0, bpb=4.0, bar=0, barbeat=0.0, speed=1.0)
    assert h.run(200) == 0
    seg.close()                                # the server exits ...
    seg = new_segment(name)                    # ... and a new one starts under the same name
    publish(seg, b, 1, "b")
    publish(seg, b, 1, "b2")                   # slot 1: tells the new segment's clip apart
    playing = [h.run(1) for _ in range(400)]   # the worker looks every 0.5 s (188 blocks)
    out = h.close()
    seg.close()
    assert playing[-1] == 1
    switched = BLOCK * (200 + playing.index(1))
    assert switched <= BLOCK * (200 + 200)
    np.testing.assert_array_equal(out[:switched], np.tile(a, (2, 1))[:switched])
    tail = np.arange(switched + XFADE + 2, len(out))
    np.testing.assert_array_equal(out[tail], b[tail % BAR])   # on the session's grid
    caps = [m for m in received(osc) if m[0] == "/barforge/capture"]
    assert caps == [("/barforge/capture", [RATE])] * 2        # once per segment


# ---- real-time safety ----------------------------------------------------------------------

def test_run_never_allocates_locks_logs_or_makes_system_calls(harness, name):
    seg = new_segment(name)
    seg.reset_capture(RATE)
    publish(seg, ramp(BAR, 0.0), 1, "a")
    h = harness()
    h.prompt(0, "a prompt")
    blocks = 0
    for k in range(10):
        h.pos(k * 11, bpm=90.0 + 7 * k, bpb=3.0 + k % 2, bar=k, barbeat=0.25 * k,
              speed=0.0 if k == 4 else 1.0)
        h.port("generate", k % 2)
        h.port("continue", (k // 2) % 2)
        h.run(500)
        blocks += 500
        if k == 3:
            publish(seg, ramp(2 * BAR, 1.0), 2, "b")       # a clip change
        if k == 6:
            seg.close()                                    # a re-attach (worker + response)
            seg = new_segment(name)
            publish(seg, ramp(BAR, 2.0), 1, "c")
            seg.reset_capture(RATE)
    assert h.run(10000 - blocks) >= 0
    rt = h.stats()
    out = h.close()
    seg.close()
    assert rt["blocks"] == 10000 and len(out) == 10000 * BLOCK
    assert rt["probe"] >= 2          # the shim does see the plugin's calls (instantiate)
    calls = {k: v for k, v in rt.items() if k not in NOT_CALLS}
    assert calls == {}, f"calls from the audio thread: {calls}"
    assert np.abs(out[-BLOCK:]).max() >= 2.0   # the last clip ("c", 2 + ramp) is playing
