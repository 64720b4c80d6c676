"""Generation on a real Triton Inference Server, driven through the bridge as a DAW drives it.

tritonserver (from the nvidia-pytriton wheel, in the venv of tests/triton_env.py) serves the
repository ``barforge export --triton`` writes for the debug model, on loopback ports; a real
``barforge serve --engine triton://`` runs beside it. The checks: the protocol conformance
check through that bridge, progress and cancel across the network, a continuation (captured
audio sent along), and a server killed mid-job (the job's error reply, then the next job served
once the server is back). Batching: requests that queue while the model is busy reach one
``execute`` together; those that can share a decoding loop get the clips they get alone, the
others are all answered, a bad one is refused alone, and a cancelled one leaves its batch mates'
clips intact.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("tritonclient.grpc", reason="the triton extra (tritonclient) is not installed")
import triton_env  # noqa: E402
from bridge_server import ROOT, free_port, start_server, stop_server  # noqa: E402
from bridge.jobs import JobRefused  # noqa: E402
from bridge.triton_engine import TritonClient  # noqa: E402
from engine.api import build_debug_model  # noqa: E402
from engine.sample_generation import SampleRequest  # noqa: E402
from engine.tempo import Tempo  # noqa: E402
from export.bundle import export_bundle  # noqa: E402
from plugin_host.shm import HostSegment  # noqa: E402

PROTOCOL_CHECK = ROOT.parent / "shared" / "tools" / "protocol_check.py"


@pytest.fixture(scope="module")
def triton(tmp_path_factory):
    env = triton_env.ensure()
    if isinstance(env, str):
        pytest.skip(env)
    root = tmp_path_factory.mktemp("triton")
    export_bundle(build_debug_model(), root / "bundle", triton_dir=root / "repo",
                  log=lambda s: None)
    server = triton_env.TritonServer(env, root / "repo", root / "tritonserver.log")
    server.start()
    yield server
    server.kill()


@pytest.fixture(scope="module")
def bridge(triton, tmp_path_factory):
    shm = f"bftriton{os.getpid()}"
    render = tmp_path_factory.mktemp("renders")
    proc, host = start_server(shm, render, free_port(), "--engine", triton.url,
                              model=None, max_seconds=300)
    try:
        segment = HostSegment.attach(shm)
        yield host, segment
        segment.close()
    finally:
        stop_server(proc, shm)


def test_protocol_check_holds_through_the_bridge(triton, tmp_path):
    start = (f"{sys.executable} -m bridge serve --engine {triton.url} --port {{port}} "
             f"--shm-name {{shm}} --render-dir {tmp_path}")
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    run = subprocess.run([sys.executable, str(PROTOCOL_CHECK), "--start", start, "--timeout", "180"],
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": path}, capture_output=True,
                         text=True, timeout=400)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "all checks hold" in run.stdout


def test_status_names_the_triton_model(bridge, triton):
    host = bridge[0]
    host.send("/barforge/status")
    queued, running, model, provider = host.one("/barforge/status")
    assert model == f"{triton.url}/barforge" and provider == "CPUExecutionProvider"


def _long_job(host, job):
    """A 64-bar clip at 60 bpm (256 s of audio: many seconds of decoding even for the debug
    model); returns once a progress between 0 and 1 came back from the server."""
    host.send("/barforge/transport", 60.0, 4, 48000)
    host.one("/barforge/ack")
    host.send("/barforge/generate", job, "x", 64)
    host.replies(lambda a, p: a == "/barforge/progress" and p[0] == job and 0 < p[1] < 1, 120)


def test_progress_and_cancel_cross_the_network(bridge):
    host = bridge[0]
    _long_job(host, "long1")
    host.send("/barforge/cancel", "long1")
    mine = host.job_replies("long1", 60)
    assert ("/barforge/cancelled", ["long1"]) in mine
    assert mine[-1][0] == "/barforge/error" and mine[-1][1][:2] == ["long1", "cancelled"]
    # the server stopped decoding it: its one instance takes the next job at once, where the
    # cancelled one would have held it for the rest of 256 s of audio
    host.send("/barforge/transport", 120.0, 4, 48000)
    host.one("/barforge/ack")
    t0 = time.monotonic()
    host.send("/barforge/generate", "after1", "x", 1)
    assert host.job_replies("after1", 60)[-1][0] == "/barforge/done"
    assert time.monotonic() - t0 < 10


def test_the_same_request_gives_the_same_clip_through_triton_and_locally(bridge, triton,
                                                                         tmp_path):
    """Both engines decode with engine.sample_generation.generate_samples on the same bundle."""
    def clip(host):
        host.send("/barforge/transport", 120.0, 4, 48000)
        host.one("/barforge/ack")
        host.send("/barforge/generate", "same1", "deep house", 1, "seed", 11)
        address, params = host.job_replies("same1")[-1]
        assert address == "/barforge/done", params
        return sf.read(params[6], dtype="float32")[0]

    remote = clip(bridge[0])
    shm = f"bflocal{os.getpid()}"
    proc, host = start_server(shm, tmp_path / "r", free_port(), "--no-warm-up", "--model",
                              str(triton.repository.parent / "bundle"), model=None)
    try:
        np.testing.assert_array_equal(clip(host), remote)
    finally:
        stop_server(proc, shm)


def test_continuation_sends_the_captured_audio(bridge):
    host, segment = bridge
    host.send("/barforge/transport", 120.0, 4, 48000)
    host.one("/barforge/ack")
    host.send("/barforge/capture", 48000)
    host.one("/barforge/ack")
    audio = 0.3 * np.sin(np.arange(3 * 48000) * 2 * np.pi * 220 / 48000).astype(np.float32)
    segment.write_capture(np.stack([audio, audio], axis=1), 6.0)
    host.send("/barforge/continue", "cont1", 1, "keep going", "seed", 3)
    address, params = host.job_replies("cont1")[-1]
    assert address == "/barforge/done", params
    assert params[5] > 6.0 and params[5] % 4 == 0   # starts on a bar line after the capture


def _request(description: str, seed: int, bars: int = 1, **params) -> SampleRequest:
    tempo = Tempo(120)
    return SampleRequest(description, {"mode": "ar", "seed": seed, **params},
                         tempo.frames(bars, 48000), 48000, tempo)


def _batch_counts(address: str) -> dict[int, int]:
    """Executions of the barforge model so far, by the number of requests handed to one."""
    import tritonclient.grpc as grpcclient
    with grpcclient.InferenceServerClient(address) as client:
        stats = client.get_inference_statistics("barforge", as_json=True)["model_stats"][0]
    return {int(b["batch_size"]): int(b["compute_infer"]["count"])
            for b in stats.get("batch_stats", [])}


def _while_busy(address: str, requests: list[SampleRequest], progress=None) -> list:
    """Each request's clip (or the exception it raised), all sent at once while the model's one
    instance decodes a long request: they queue, and Triton hands them to one execute."""
    started = threading.Event()

    def blocker_progress(fraction: float) -> None:
        started.set()

    blocker = threading.Thread(target=TritonClient(address).generate,
                               args=(_request("x", 1, bars=32), blocker_progress))
    blocker.start()
    assert started.wait(60)
    results: list = [None] * len(requests)

    def ask(i: int) -> None:
        try:
            results[i] = TritonClient(address).generate(
                requests[i], (progress or {}).get(i, lambda fraction: None))
        except Exception as e:  # noqa: BLE001 - compared by the test
            results[i] = e

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(requests))]
    for t in threads:
        t.start()
    for t in threads + [blocker]:
        t.join(300)
    return results


def test_concurrent_requests_are_batched_and_each_gets_its_clip_alone(triton):
    address = triton.url.removeprefix("triton://")
    same = [_request("drums", 3), _request("bass", 11), _request("piano", 7)]
    others = [_request("drums", 5, bars=2),       # another length: its own loop
              _request("drums loud", 9)]          # another text length: its own loop
    bad = _request("drums", 4, temperature=-1.0)
    before = _batch_counts(address)
    results = _while_busy(address, same + others + [bad])
    after = _batch_counts(address)
    batched = {size: after[size] - before.get(size, 0) for size in after}
    assert any(size > 1 and count for size, count in batched.items()), batched
    assert isinstance(results[-1], JobRefused) and "temperature" in str(results[-1])
    for request, clip in zip(same + others, results):
        assert isinstance(clip, np.ndarray), clip
        alone = TritonClient(address).generate(request, lambda fraction: None)
        np.testing.assert_array_equal(clip, alone)   # bit for bit: per-row seeds and text


def test_a_cancelled_batch_member_leaves_the_others_clips_intact(triton):
    address = triton.url.removeprefix("triton://")
    requests = [_request("drums", 3, bars=8), _request("bass", 11, bars=8),
                _request("piano", 7, bars=8)]

    def cancel(fraction: float) -> None:   # a host's cancel: the client ends the stream
        raise RuntimeError("cancel")

    before = _batch_counts(address)
    results = _while_busy(address, requests, {1: cancel})
    after = _batch_counts(address)
    assert any(size > 1 and after[size] > before.get(size, 0) for size in after), after
    assert isinstance(results[1], RuntimeError) and str(results[1]) == "cancel"
    for i in (0, 2):
        alone = TritonClient(address).generate(requests[i], lambda fraction: None)
        np.testing.assert_array_equal(results[i], alone)


def test_a_killed_server_fails_the_job_and_the_bridge_reconnects(bridge, triton):
    host = bridge[0]
    _long_job(host, "long2")
    triton.kill()
    address, params = host.job_replies("long2", 60)[-1]
    assert address == "/barforge/error" and params[:2] == ["long2", "internal"], params
    assert triton.url.removeprefix("triton://") in params[2]
    triton.start()
    host.send("/barforge/transport", 120.0, 4, 48000)
    host.one("/barforge/ack")
    host.send("/barforge/generate", "back1", "x", 1)
    assert host.job_replies("back1", 120)[-1][0] == "/barforge/done"


@pytest.mark.parametrize("args, message", [
    (["--engine", "triton://gpu-box"], "--engine 'triton://gpu-box': expected 'local' or "
                                       "triton://HOST:PORT"),
    (["--engine", "http://gpu-box:8001"], "expected 'local' or triton://HOST:PORT"),
    (["--engine", "triton://127.0.0.1:9", "--model", "debug"], "--model debug: the Triton "
                                                                "server's repository decides"),
    (["--engine", "triton://127.0.0.1:9", "--engine-wait", "0"], "no ready 'barforge' model "
                                                                  "there within 0 s"),
])
def test_engine_mistakes_are_one_line_naming_the_flag(args, message, tmp_path):
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    run = subprocess.run([sys.executable, "-m", "bridge", "serve", "--port", str(free_port()),
                          "--shm-name", f"bfengine{os.getpid()}", "--render-dir", str(tmp_path),
                          *args], cwd=ROOT, env={**os.environ, "PYTHONPATH": path},
                         capture_output=True, text=True, timeout=120)
    assert run.returncode != 0
    assert message in run.stderr, run.stderr[-2000:]
    assert "Traceback" not in run.stderr
