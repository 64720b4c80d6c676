"""The generation model of a Triton model repository: ``<repo>/barforge``.

Layout: ``config.pbtxt`` (Python backend, decoupled, the tensors of engine/serving_schema.py),
``1/model.py`` (export/triton_python_model.py), ``1/engine/`` (this engine's package, so the
server needs no Barforge install, only the engine's dependencies) and ``1/bundle/`` (the ONNX
bundle). The instances are ``KIND_CPU`` to Triton because the Python backend places nothing
itself: onnxruntime in each instance takes CUDA when it works (or the ``provider`` parameter).

Batching: ``max_batch_size`` is the most requests Triton hands one ``execute`` call, with
dynamic batching gathering those that arrive while an instance is busy (or within
``QUEUE_DELAY_US`` of each other); the model decodes the ones that can share a loop in one
(engine/sample_generation.py ``batch_key``). Every tensor therefore carries a leading batch
axis of one request (engine/serving_schema.py); ``max_batch`` 1 turns batching off without
changing that wire format.
"""
from __future__ import annotations

import shutil
from dataclasses import asdict
from pathlib import Path

import engine
from engine import serving_schema as schema
from export.triton import io_block

MODEL_FILE = Path(__file__).with_name("triton_python_model.py")
DEFAULT_MAX_BATCH = 8
QUEUE_DELAY_US = 10_000   # an idle instance waits this long for batch mates: ~1 % of a 4-bar clip
# left out of the engine copy: the training recipes are never imported by a server
_NOT_COPIED = shutil.ignore_patterns("__pycache__", "*.pyc", "recipes")


def config_pbtxt(instances: int, provider: str | None, max_batch: int = DEFAULT_MAX_BATCH) -> str:
    """The text of the generation model's config.pbtxt: ``max_batch`` requests per execute
    at most (1: no batching)."""
    if instances < 1:
        raise ValueError(f"instances {instances}: expected at least 1")
    if max_batch < 1:
        raise ValueError(f"max_batch {max_batch}: expected at least 1 (1: no batching)")
    ios = {kind: [{**asdict(spec), "shape": list(spec.shape)} for spec in specs]
           for kind, specs in (("input", schema.INPUTS), ("output", schema.OUTPUTS))}
    batching = ("" if max_batch == 1 else "dynamic_batching {\n  max_queue_delay_microseconds: "
                f"{QUEUE_DELAY_US}\n}}\n")
    return (f'name: "{schema.MODEL_NAME}"\nbackend: "python"\nmax_batch_size: {max_batch}\n'
            "model_transaction_policy {\n  decoupled: true\n}\n" + batching
            + io_block("input", ios["input"]) + io_block("output", ios["output"])
            + f"instance_group [\n  {{\n    count: {instances}\n    kind: KIND_CPU\n  }}\n]\n"
            + 'parameters {\n  key: "provider"\n  value: { string_value: "'
            + (provider or "") + '" }\n}\n')


def write_generation_model(bundle_dir: Path, repo_dir: Path, instances: int = 1,
                           provider: str | None = None, version: int = 1,
                           max_batch: int = DEFAULT_MAX_BATCH) -> Path:
    """Write (or replace) ``<repo_dir>/barforge`` for the bundle; returns its config path."""
    model_dir = Path(repo_dir) / schema.MODEL_NAME
    version_dir = model_dir / str(version)
    config = config_pbtxt(instances, provider, max_batch)
    if version_dir.exists():
        shutil.rmtree(version_dir)
    version_dir.mkdir(parents=True)
    shutil.copyfile(MODEL_FILE, version_dir / "model.py")
    shutil.copytree(Path(engine.__file__).parent, version_dir / "engine", ignore=_NOT_COPIED)
    shutil.copytree(bundle_dir, version_dir / "bundle")
    (model_dir / "config.pbtxt").write_text(config)
    return model_dir / "config.pbtxt"
