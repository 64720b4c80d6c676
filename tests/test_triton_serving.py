"""Generation on a real Triton Inference Server, driven through the bridge as a DAW drives it.

tritonserver (from the nvidia-pytriton wheel, in the venv of tests/triton_env.py) serves the
repository ``barforge export --triton`` writes for the debug model, on loopback ports; a real
``barforge serve --engine triton://`` runs beside it. The checks: the protocol conformance
check through that bridge, progress and cancel across the network, a continuation (captured
audio sent along), and a server killed mid-job (the job's error reply, then the next job served
once the server is back).
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("tritonclient.grpc", reason="the triton extra (tritonclient) is not installed")
import triton_env  # noqa: E402
from bridge_server import ROOT, free_port, start_server, stop_server  # noqa: E402
from engine.api import build_debug_model  # noqa: E402
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
