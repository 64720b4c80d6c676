"""Shared test set-up: tiny models, one thread (CI has 2 cores), no network."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

torch.set_num_threads(1)


import subprocess  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

# property tests keep no example database in the work tree; a failure prints its example
settings.register_profile("barforge", database=None)
settings.load_profile("barforge")

DPF_PLAYER_DIR = Path(__file__).resolve().parent.parent / "plugin_host" / "dpf"


@pytest.fixture(scope="session")
def default_model():
    """The embedded default model (PyTorch), loaded once for the session."""
    from engine.api import load_model
    return load_model("default")


@pytest.fixture(scope="session")
def default_bundle(default_model, tmp_path_factory):
    """An ONNX bundle of the default model, exported once for the session (CPU provider)."""
    from engine.api import load_model
    from export.bundle import export_bundle
    out = tmp_path_factory.mktemp("default_bundle") / "bundle"
    export_bundle(default_model, out, log=lambda s: None)
    return load_model(str(out), provider="cpu")


@pytest.fixture(scope="session")
def dpf_bundles(tmp_path_factory) -> Path:
    """The DPF Barforge Player built once per run: a folder with BarforgePlayer.lv2/, .vst3/
    and .clap (make -C plugin_host/dpf)."""
    if not Path("/usr/share/dpf/Makefile.plugins.mk").exists():
        pytest.skip("needs the DISTRHO Plugin Framework: apt-get install dpf-source")
    out = tmp_path_factory.mktemp("dpf")
    subprocess.run(["make", "-s", "-C", str(DPF_PLAYER_DIR), f"OUT={out}"], check=True,
                   stdout=subprocess.DEVNULL)
    return out
