"""onnxruntime sessions: which execution provider a bundle runs on, and the session factory.

Every graph of a bundle (engine/loaders/onnx_bundle.py) is opened through ``open_graph`` (``make_session``) on
the provider ``choose_provider`` settles: CUDA when asked for and usable (refused otherwise),
CPU when asked for, and without a request CUDA when it really works here, else CPU.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.backends.heap import weights_returned_on_free

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}

_CUDA_WORKS: bool | None = None


def cuda_provider_works() -> bool:
    """Whether onnxruntime can really create its CUDA provider here (probed once, silently).

    The onnxruntime-gpu wheel lists CUDAExecutionProvider even where no GPU or CUDA runtime
    exists and then logs an error and a warning at every session; probing once with the logger
    at FATAL keeps a GPU-less machine quiet.
    """
    global _CUDA_WORKS
    if _CUDA_WORKS is None:
        import onnx
        import onnxruntime as ort
        _CUDA_WORKS = False
        if PROVIDERS["cuda"] in ort.get_available_providers():
            x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
            y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])
            graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])],
                                           "probe", [x], [y])
            model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
            model.ir_version = 8
            opts = ort.SessionOptions()
            opts.log_severity_level = 4
            ort.set_default_logger_severity(4)
            try:
                sess = ort.InferenceSession(model.SerializeToString(), opts,
                                            providers=[PROVIDERS["cuda"], PROVIDERS["cpu"]])
                _CUDA_WORKS = PROVIDERS["cuda"] in sess.get_providers()
            except Exception:  # noqa: BLE001 - any failure means "no usable CUDA"
                _CUDA_WORKS = False
            finally:
                ort.set_default_logger_severity(3)
    return _CUDA_WORKS


def provider_names() -> list[str]:
    """Every accepted ``provider`` value: the short names and onnxruntime's full names."""
    return [*PROVIDERS, *PROVIDERS.values()]


def choose_provider(provider: str | None = None) -> str:
    """The device a bundle runs on: ``"cuda"`` or ``"cpu"``.

    ``None``: CUDA when onnxruntime can really create its provider here, else CPU (the silent
    fallback). An explicit ``provider`` (``"cpu"``, ``"cuda"``, ``"CPUExecutionProvider"``,
    ``"CUDAExecutionProvider"``; case-insensitive) is obeyed or refused: asking for CUDA where it
    does not work is a ValueError, never a silent fall back to CPU.
    """
    if provider is None:
        return "cuda" if cuda_provider_works() else "cpu"
    by_name = {k.lower(): short for short, full in PROVIDERS.items() for k in (short, full)}
    short = by_name.get(str(provider).strip().lower())
    if short is None:
        raise ValueError(f"unknown provider {provider!r}: expected one of "
                         f"{', '.join(provider_names())} (available here: "
                         f"{', '.join(available_providers())})")
    if short == "cuda" and not cuda_provider_works():
        raise ValueError(f"provider {provider!r} was asked for but onnxruntime cannot create its "
                         "CUDA execution provider here (no GPU, or the CUDA/cuDNN libraries or "
                         "the onnxruntime-gpu wheel are missing); available here: "
                         f"{', '.join(available_providers())}. Leave --provider out to fall "
                         "back to CPU automatically.")
    return short


def available_providers() -> list[str]:
    """The supported providers onnxruntime can really use on this machine (full names)."""
    return [PROVIDERS["cuda"]] * cuda_provider_works() + [PROVIDERS["cpu"]]


def make_session(path: Path, provider: str, threads: int | None = None,
                 quiet: bool = False) -> Any:
    """An InferenceSession with all graph optimisations and ``threads`` intra-op threads
    (``quiet``: not even errors logged, for probes whose failures are expected)."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = threads or torch.get_num_threads()
    opts.inter_op_num_threads = 1
    # no busy-wait between ops: spinning threads steal the cores a step needs on a loaded CPU
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 4 if quiet else 3
    providers = [PROVIDERS["cpu"]] if provider == "cpu" else [PROVIDERS["cuda"], PROVIDERS["cpu"]]
    # the originals of prepacked weights are freed during loading: give their pages back
    with weights_returned_on_free():
        return ort.InferenceSession(str(path), opts, providers=providers)


def open_graph(bundle_dir: Path, manifest: dict[str, Any], name: str, provider: str,
               threads: int | None = None) -> Any:
    """A session of the bundle's graph ``name``: on CPU its onnxruntime-optimized copy
    (``cpu_file``, export/optimize.py) where the bundle has one, else the graph as exported."""
    graph = manifest["graphs"][name]
    file = graph.get("cpu_file", graph["file"]) if provider == "cpu" else graph["file"]
    return make_session(Path(bundle_dir) / file, provider, threads)


def as_input(t: torch.Tensor, dtype: type) -> np.ndarray:
    """A contiguous CPU numpy view of ``t`` to feed a session (a copy only if dtype, layout or
    device differ)."""
    return np.ascontiguousarray(t.detach().cpu().numpy(), dtype=dtype)
