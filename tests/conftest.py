"""Shared test set-up: tiny models, one thread (CI has 2 cores), no network."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

torch.set_num_threads(1)


import pytest  # noqa: E402


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
