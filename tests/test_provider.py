"""``provider`` wherever a model is loaded: load_model, ``barforge generate/continue --provider``
and ``barforge serve --provider`` (whose /barforge/status reports the provider really in use)."""
import os
import time

import numpy as np
import pytest
import soundfile as sf
from pythonosc.osc_message import OscMessage
from pythonosc.udp_client import SimpleUDPClient

from engine.backends.onnx_runtime import cuda_provider_works
from engine.api import build_debug_model, load_model
from export.bundle import export_bundle

from bridge_server import free_port, spawn_server, terminate_server


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("p") / "musicgen"
    export_bundle(build_debug_model(), out, log=lambda s: None)
    return out


@pytest.mark.parametrize("name", ["CPUExecutionProvider", "cpu", "CPU"])
def test_load_model_runs_a_bundle_on_the_named_provider(bundle, name):
    model = load_model(bundle, provider=name)
    assert model.provider == "CPUExecutionProvider"
    assert model.backend.cross_session.get_providers() == ["CPUExecutionProvider"]
    model.set_generation_params(duration=0.1, use_sampling=False)
    assert model.generate(["lofi"]).shape[-1] > 0


def test_default_provider_is_the_real_one(bundle):
    model = load_model(bundle)
    want = "CUDAExecutionProvider" if cuda_provider_works() else "CPUExecutionProvider"
    assert model.provider == want == model.backend.step_session.get_providers()[0]


def test_unknown_provider_is_refused_listing_the_available_ones(bundle):
    with pytest.raises(ValueError, match="unknown provider 'TPUExecutionProvider'") as e:
        load_model(bundle, provider="TPUExecutionProvider")
    assert "CPUExecutionProvider" in str(e.value) and "available here" in str(e.value)


def test_provider_for_a_pytorch_model_is_refused(tmp_path):
    with pytest.raises(ValueError, match="only to ONNX bundles"):
        load_model("debug", provider="cpu")
    with pytest.raises(ValueError, match="no such file"):   # the usual error stays first
        load_model(tmp_path / "nothing", provider="cpu")


def test_cuda_is_used_or_refused_never_silently_replaced(bundle):
    if cuda_provider_works():
        assert load_model(bundle, provider="cuda").provider == "CUDAExecutionProvider"
    else:
        with pytest.raises(ValueError, match="cannot create its CUDA execution provider"):
            load_model(bundle, provider="CUDAExecutionProvider")


def _cli(argv):
    from engine.cli import build_parser, run
    return run(build_parser(), argv)


def test_generate_and_continue_take_provider(bundle, tmp_path, capsys):
    out = tmp_path / "g.wav"
    assert _cli(["generate", "lofi", "--duration", "0.2", "--model", str(bundle),
                 "--provider", "CPUExecutionProvider", "--seed", "1", "-o", str(out)]) == 0
    wav, rate = sf.read(out)
    assert rate == 32000 and len(wav) == 6400
    cont = tmp_path / "c.wav"
    assert _cli(["continue", str(out), "--duration", "0.1", "--prompt-seconds", "0.1",
                 "--model", str(bundle), "--provider", "cpu", "-o", str(cont)]) == 0
    assert sf.info(cont).frames == 6400
    assert _cli(["generate", "x", "--duration", "0.2", "--model", str(bundle),
                 "--provider", "bogus", "-o", str(tmp_path / "b.wav")]) == 2
    assert _cli(["generate", "x", "--duration", "0.2", "--model", "debug",
                 "--provider", "cpu", "-o", str(tmp_path / "d.wav")]) == 2
    err = capsys.readouterr().err
    assert "unknown provider 'bogus'" in err and "only to ONNX bundles" in err
    assert not (tmp_path / "b.wav").exists() and not (tmp_path / "d.wav").exists()


def _status(port, timeout=60.0):
    client = SimpleUDPClient("127.0.0.1", port)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        client.send_message("/barforge/status", [])
        data = client.receive(timeout=0.5)
        while data:
            m = OscMessage(data)
            if m.address == "/barforge/status":
                return list(m.params)
            data = client.receive(timeout=0.5)
    raise TimeoutError("no /barforge/status reply")


def test_serve_reports_the_bundle_provider_in_status(bundle, tmp_path):
    shm, port = f"bfprov{os.getpid()}", free_port()
    proc = spawn_server(port, shm, tmp_path / "renders", tmp_path / "serve.log", 5,
                        "--model", str(bundle), "--provider", "CPUExecutionProvider",
                        "--no-warm-up")
    try:
        queued, running, model, provider = _status(port)
        assert (queued, running, provider) == (0, "", "CPUExecutionProvider")
        assert model.endswith("musicgen")
    finally:
        terminate_server(proc)
    assert not os.path.exists(f"/dev/shm/{shm}")


def test_serve_refuses_an_unknown_provider(bundle, tmp_path):
    log = tmp_path / "serve.log"
    proc = spawn_server(free_port(), f"bfprov{os.getpid()}x", tmp_path / "r", log, 5,
                        "--model", str(bundle), "--provider", "bogus", "--no-warm-up")
    try:
        assert proc.wait(60) == 2
    finally:
        if proc.poll() is None:
            terminate_server(proc)
        proc.log.close()
    assert "unknown provider 'bogus'" in log.read_text()
    assert np.all([not p.startswith(f"bfprov{os.getpid()}x") for p in os.listdir("/dev/shm")])
