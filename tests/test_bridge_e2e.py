"""The bridge end to end: real UDP sockets, real shared memory, the debug model, a subprocess.

Each server runs as ``python -m bridge serve --model debug`` in its own process, as a host
would find it; the test plays the host with python-osc's UDP client and plugin_host's
HostSegment (seqlocked slot reads, capture ring writes).
"""
import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bridge.continuation import MAX_BARS_SKIPPED
from engine.tempo import frames_for_bars

pytest.importorskip("engine.api", reason="engine.load_model is not available")
from plugin_host.shm import HostSegment  # noqa: E402

from bridge_server import free_port, start_server, stop_server  # noqa: E402

@pytest.fixture(scope="module")
def served(tmp_path_factory):
    shm = f"bfe2e{os.getpid()}"
    render = tmp_path_factory.mktemp("renders")
    proc, host = start_server(shm, render, free_port(), "--queue-size", "2")
    try:
        seg = HostSegment.attach(shm)
        yield host, seg, render, proc
        seg.close()
    finally:
        stop_server(proc, shm)


def test_generate_publishes_slot_equal_to_wav(served):
    host, seg, render, _ = served
    host.send("/barforge/ping")
    assert host.one("/barforge/pong")[0] == 1
    host.send("/barforge/transport", 93.7, 4, 44100)
    assert host.one("/barforge/ack") == ["transport"]
    host.send("/barforge/generate", "g1", "dusty boom bap", 1, "seed", 5)
    replies = host.job_replies("g1")
    addresses = [a for a, _ in replies]
    assert addresses[0] == "/barforge/accepted" and "/barforge/progress" in addresses
    address, params = replies[-1]
    assert address == "/barforge/done", params
    job, slot, frames, sr, channels, start_beat, path = params
    assert frames == frames_for_bars(1, 93.7, 4, 44100) and sr == 44100 and start_beat == -1.0
    assert Path(path).is_absolute() and Path(path).parent == render.resolve()
    clip = seg.read_slot(slot)
    assert (clip.job_id, clip.frames, clip.sample_rate, clip.channels, clip.bars) == ("g1", frames, sr, channels, 1)
    assert clip.bpm == pytest.approx(93.7) and clip.start_beat == -1.0 and clip.flags & 1
    wav, wav_sr = sf.read(path, dtype="float32", always_2d=True)
    assert wav_sr == sr and np.array_equal(wav, clip.audio)
    assert np.abs(wav).max() > 1e-3
    sidecar = json.loads(Path(path).with_suffix(".json").read_text())
    assert (sidecar["seed"], sidecar["bars"], sidecar["frames"], sidecar["model"]) == (5, 1, frames, "debug")
    assert "bpm: 93.7" in sidecar["description"]
    assert not list(render.glob("*.part")) and not list(render.glob(".*"))


def test_status_reports_model(served):
    host = served[0]
    host.send("/barforge/status")
    queued, running, model, provider = host.one("/barforge/status")
    assert (queued, running, model) == (0, "", "debug") and provider


@pytest.mark.parametrize("args,code", [
    (("/barforge/generate", "b1", 5, 2), "bad_argument"),
    (("/barforge/generate", "b2", "x", 0), "bad_argument"),
    (("/barforge/generate", "b3", "x", 1000), "bad_argument"),
    (("/barforge/generate", "b4", "x", 2, "colour", "red"), "bad_argument"),
    (("/barforge/generate", "b5", "x" * 20000, 2), "bad_argument"),
    (("/barforge/transport", 0.0, 4, 48000), "bad_argument"),
    (("/barforge/transport", float("nan"), 4, 48000), "bad_argument"),
    (("/barforge/nope",), "unknown_address"),
    (("/barforge/cancel", "nojob"), "unknown_job"),
    (("/barforge/generate", "b6", "x", 64), "too_long"),
])
def test_bad_input_is_answered_and_server_keeps_serving(served, args, code):
    host = served[0]
    host.send("/barforge/transport", 120.0, 4, 48000)
    host.one("/barforge/ack")
    host.send(*args)
    job, got, message = host.one("/barforge/error")
    assert got == code and message
    host.send("/barforge/ping")
    assert host.one("/barforge/pong")[0] == 1


@pytest.mark.parametrize("data", [os.urandom(100).replace(b"/", b"_").replace(b"#", b"_"),
                                  b"/barforge/generate\0\0,ss\0j\0\0\0\xff\xfe\0\0",
                                  b"/barforge/generate\0\0,sis\0\0\0"])
def test_garbage_datagrams_get_bad_argument(served, data):
    host = served[0]
    host.send_raw(data)
    assert host.one("/barforge/error")[1] == "bad_argument"
    host.send("/barforge/ping")
    assert host.one("/barforge/pong")[0] == 1


def test_queue_flood_answers_busy_and_cancel_ends_every_job(served):
    host = served[0]
    host.send("/barforge/transport", 120.0, 4, 48000)
    host.one("/barforge/ack")
    jobs = [f"f{i}" for i in range(6)]
    # 32 s each: the worker is busy a while. The first job is running before the flood arrives,
    # so the queue (2) decides alone who is refused, however slow the worker thread is to start.
    host.send("/barforge/generate", jobs[0], "x", 16)
    first = host.replies(lambda a, p: a == "/barforge/progress" and p[0] == jobs[0], 30)
    for j in jobs[1:]:
        host.send("/barforge/generate", j, "x", 16)
    answered = {jobs[0]}

    def all_answered(address, params):
        if address in ("/barforge/accepted", "/barforge/error") and params[0] in jobs:
            answered.add(params[0])
        return len(answered) == len(jobs)

    seen = first + host.replies(all_answered, 30)
    finals = {p[0]: (a, p) for a, p in seen if a in ("/barforge/accepted", "/barforge/error")}
    busy = [j for j, (a, p) in finals.items() if a == "/barforge/error" and p[1] == "busy"]
    accepted = [j for j, (a, _) in finals.items() if a == "/barforge/accepted"]
    assert len(accepted) == 3 and len(busy) == 3  # one running + a queue of 2
    host.backlog.extend(x for x in seen if x[0] == "/barforge/progress")
    for j in accepted:
        host.send("/barforge/cancel", j)
    for i, j in enumerate(accepted):
        mine = host.job_replies(j, 60)
        assert ("/barforge/cancelled", [j]) in mine or ("/barforge/cancelled", [j]) in host.backlog
        assert mine[-1][0] == "/barforge/error" and mine[-1][1][1] == "cancelled"
        if i > 0:  # cancelled while queued: no progress before the final error
            assert "/barforge/progress" not in [a for a, _ in mine]
    host.backlog.clear()
    for _ in range(20):
        host.send("/barforge/status")
        status = host.one("/barforge/status")
        if status[:2] == [0, ""]:
            break
        time.sleep(0.1)
    assert status[:2] == [0, ""]


def test_cancel_running_job_stops_it(served):
    host = served[0]
    host.send("/barforge/transport", 120.0, 4, 48000)
    host.one("/barforge/ack")
    host.send("/barforge/generate", "long1", "x", 16)
    host.replies(lambda a, p: a == "/barforge/progress" and p[0] == "long1")
    t0 = time.monotonic()
    host.send("/barforge/cancel", "long1")
    mine = host.job_replies("long1", 30)
    assert ("/barforge/cancelled", ["long1"]) in mine
    assert mine[-1] == ("/barforge/error", mine[-1][1]) and mine[-1][1][:2] == ["long1", "cancelled"]
    assert "/barforge/done" not in [a for a, _ in mine]
    assert time.monotonic() - t0 < 30


def click_track(seconds, sr, bpm, first_beat):
    """Clicks on every beat; returns audio [N, 2] and the session beat after its last frame."""
    n = int(seconds * sr)
    audio = np.zeros((n, 2), np.float32)
    spb = 60.0 / bpm * sr
    beats = np.arange(np.ceil(first_beat), first_beat + n / spb)
    for b in beats:
        i = int(round((b - first_beat) * spb))
        audio[i:i + 200] = 0.8 * np.hanning(400)[200:, None]
    return audio, first_beat + n / spb


def test_continuation_starts_on_the_next_bar_line(served):
    host, seg = served[:2]
    host.send("/barforge/transport", 120.0, 4, 48000)
    host.one("/barforge/ack")
    host.send("/barforge/continue", "c0", 1)
    assert host.one("/barforge/error")[:2] == ["c0", "no_capture"]
    host.send("/barforge/capture", 48000)
    assert host.one("/barforge/ack") == ["capture"]
    audio, beat_end = click_track(3.0, 48000, 120.0, first_beat=13.3)
    pos = 0
    for block in np.array_split(audio, 30):
        pos += block.shape[0]
        seg.write_capture(block, 13.3 + pos / 48000 * 2.0)
    host.send("/barforge/continue", "c1", 1, "keep the groove", "seed", 9)
    mine = host.job_replies("c1")
    address, params = mine[-1]
    assert address == "/barforge/done", params
    job, slot, frames, sr, channels, start_beat, path = params
    # beat 19.3 leaves less than LEAD_BARS (half a bar) before 20: the lead rule starts at 24,
    # or later when the measured speed says the reply cannot reach 24 with half a bar left
    assert 24.0 <= start_beat <= 20.0 + 4 * MAX_BARS_SKIPPED
    assert start_beat > beat_end and start_beat % 4 == 0
    assert frames == frames_for_bars(1, 120, 4, 48000)
    clip = seg.read_slot(slot)
    assert clip.start_beat == start_beat and clip.job_id == "c1"
    side = json.loads(Path(path).with_suffix(".json").read_text())
    assert side["capture_beat_at_end"] == pytest.approx(beat_end)
    # the clip's first frame sits (start_beat - beat_end) beats after the end of the prompt
    want = round((side["prompt_frames"] / 48000 + (start_beat - beat_end) * 0.5) * 48000)
    assert abs(side["clip_start_in_generated"] - want) <= 1


def test_sigkill_mid_job_leaves_no_partial_wav_and_restart_serves(tmp_path):
    shm, port = f"bfkill{os.getpid()}", free_port()
    render = tmp_path / "r"
    proc, host = start_server(shm, render, port)
    try:
        host.send("/barforge/generate", "k0", "x", 1)
        assert host.one("/barforge/error")[:2] == ["k0", "no_transport"]
        host.send("/barforge/transport", 120.0, 4, 48000)
        host.one("/barforge/ack")
        host.send("/barforge/generate", "k1", "x", 16)
        host.replies(lambda a, p: a == "/barforge/progress" and p[0] == "k1")
        children = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()
                    and _parent_pid(int(p.name)) == proc.pid]
    finally:
        proc.kill()
        proc.wait(10)
        proc.log.close()
    end = time.monotonic() + 30  # the generator notices its server is gone and stops
    while any(Path(f"/proc/{c}").exists() for c in children) and time.monotonic() < end:
        time.sleep(0.1)
    assert children and not any(Path(f"/proc/{c}").exists() for c in children)
    assert not list(render.glob("*.wav"))
    assert os.path.exists(f"/dev/shm/{shm}")  # stale: nobody removed it
    proc, host = start_server(shm, render, port)
    try:
        host.send("/barforge/transport", 120.0, 4, 48000)
        host.one("/barforge/ack")
        host.send("/barforge/generate", "k2", "x", 1)
        address, params = host.job_replies("k2")[-1]
        assert address == "/barforge/done"
        seg = HostSegment.attach(shm)
        assert seg.read_slot(params[1]).job_id == "k2"
        seg.close()
        assert [p.name for p in render.iterdir() if p.suffix == ".wav"] == [Path(params[6]).name]
    finally:
        stop_server(proc, shm)


def _parent_pid(pid):
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def test_generation_runs_in_a_child_process_not_the_network_one(served):
    host, _, _, proc = served
    host.send("/barforge/transport", 120.0, 4, 48000)
    host.one("/barforge/ack")
    host.send("/barforge/generate", "pid1", "x", 1)
    address, params = host.job_replies("pid1")[-1]
    assert address == "/barforge/done", params
    writer = int(Path(params[6]).stem.split("-")[3])  # clip-<date>-<time>-<pid>-<n>
    assert writer != proc.pid
    assert _parent_pid(writer) == proc.pid  # the server's own generator, still running


def test_a_killed_generator_fails_its_job_and_the_next_job_gets_a_new_one(served):
    host, _, _, proc = served
    host.send("/barforge/transport", 120.0, 4, 48000)
    host.one("/barforge/ack")
    host.send("/barforge/generate", "dead1", "x", 16)
    host.replies(lambda a, p: a == "/barforge/progress" and p[0] == "dead1")
    children = [int(p.name) for p in Path("/proc").iterdir()
                if p.name.isdigit() and _parent_pid(int(p.name)) == proc.pid]
    for pid in children:
        os.kill(pid, signal.SIGKILL)
    address, params = host.job_replies("dead1", 60)[-1]
    assert (address, params[:2]) == ("/barforge/error", ["dead1", "internal"]) and "exited" in params[2]
    host.send("/barforge/ping")
    assert host.one("/barforge/pong")[0] == 1
    host.send("/barforge/generate", "dead2", "x", 1)
    address, params = host.job_replies("dead2")[-1]
    assert address == "/barforge/done", params


def test_a_melody_request_through_the_generator_process(tmp_path):
    """``serve --model debug-melody``: the melody options reach the child and its refusals
    come back with their codes; the clip has exactly the bars asked."""
    shm, port = f"bfm{os.getpid()}", free_port()
    proc, host = start_server(shm, tmp_path / "renders", port, "--model", "debug-melody")
    seg = HostSegment.attach(shm)
    try:
        host.send("/barforge/transport", 120.0, 4, 48000)
        host.one("/barforge/ack")
        host.send("/barforge/generate", "e1", "x", 1, "melody", "slot", "melody_slot", 0)
        assert host.job_replies("e1")[-1][1][:2] == ["e1", "bad_argument"]   # slot 0 is empty
        host.send("/barforge/capture", 48000)
        host.one("/barforge/ack")
        audio, beat_end = click_track(5.0, 48000, 120.0, first_beat=1.5)
        pos = 0
        for block in np.array_split(audio, 40):
            pos += block.shape[0]
            seg.write_capture(block, 1.5 + pos / 48000 * 2.0)
        host.send("/barforge/generate", "m1", "tune", 1, "melody", "capture", "seed", 4)
        address, params = host.job_replies("m1")[-1]
        assert address == "/barforge/done", params
        assert params[2] == frames_for_bars(1, 120, 4, 48000)
        side = json.loads(Path(params[6]).with_suffix(".json").read_text())
        # the bar before the last bar line (beat 8) of a capture that ends at beat 11.5
        assert side["melody"] == "capture" and side["melody_bars"] == 1
        assert side["melody_capture_end_frame"] == audio.shape[0] - round((beat_end - 8) * 0.5 * 48000)
    finally:
        seg.close()
        stop_server(proc, shm)
