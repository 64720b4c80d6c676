"""Shared test set-up: tiny models, one thread (CI has 2 cores), no network."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

torch.set_num_threads(1)


import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _restore_onednn():
    """Generating commands switch oneDNN off process-wide (engine/inference_kernels.py); undo it
    after each test so no test depends on which ran before it."""
    enabled = torch.backends.mkldnn.enabled
    yield
    torch.backends.mkldnn.enabled = enabled
