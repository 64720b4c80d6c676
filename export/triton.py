"""A Triton Inference Server model repository derived from a bundle's manifest.

Layout: ``<repo>/<graph>/config.pbtxt`` and ``<repo>/<graph>/1/model.onnx`` for every graph of
the bundle (external weight data, if any, goes beside model.onnx). Every graph declares its
batch axis explicitly, so ``max_batch_size: 0`` and the dims list the full shape with -1 for
dynamic axes. The KV cache is passed in and out by the client (the decode loop in
docs/ONNX.md), so no sequence batcher is needed.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

TRITON_DTYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "float64": "TYPE_FP64",
                 "int64": "TYPE_INT64", "int32": "TYPE_INT32", "bool": "TYPE_BOOL",
                 "object": "TYPE_STRING"}


def io_block(kind: str, ios: list[dict[str, Any]]) -> str:
    """A config.pbtxt ``input`` or ``output`` list: each io has ``name``, ``dtype`` (a key of
    TRITON_DTYPES), ``shape`` (a non-int entry is a dynamic axis) and maybe ``optional``."""
    entries = []
    for io in ios:
        dims = ", ".join(str(d) if isinstance(d, int) else "-1" for d in io["shape"])
        # Triton wants at least one dim: a scalar travels as [1] reshaped to []
        shape = f"    dims: [ {dims} ]\n" if dims else "    dims: [ 1 ]\n    reshape: { shape: [ ] }\n"
        optional = "    optional: true\n" if io.get("optional") else ""
        entries.append(f'  {{\n    name: "{io["name"]}"\n    data_type: {TRITON_DTYPES[io["dtype"]]}\n'
                       f"{shape}{optional}  }}")
    return f"{kind} [\n" + ",\n".join(entries) + "\n]\n"


def config_pbtxt(name: str, graph: dict[str, Any], kind: str = "KIND_AUTO") -> str:
    """The text of one model's config.pbtxt (onnxruntime backend, explicit batch axis)."""
    return (f'name: "{name}"\nbackend: "onnxruntime"\nmax_batch_size: 0\n'
            + io_block("input", graph["inputs"]) + io_block("output", graph["outputs"])
            + f"instance_group [\n  {{\n    count: 1\n    kind: {kind}\n  }}\n]\n")


def write_triton_repository(bundle_dir: Path, manifest: dict[str, Any], repo_dir: Path,
                            version: int = 1) -> list[Path]:
    """Write (or refresh) the repository for every graph; returns the config paths written."""
    bundle_dir, repo_dir = Path(bundle_dir), Path(repo_dir)
    written = []
    for name, graph in manifest["graphs"].items():
        model_dir = repo_dir / name
        version_dir = model_dir / str(version)
        version_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(bundle_dir / graph["file"], version_dir / "model.onnx")
        for data_file in graph.get("external_data", []):
            shutil.copyfile(bundle_dir / data_file, version_dir / Path(data_file).name)
        config = model_dir / "config.pbtxt"
        config.write_text(config_pbtxt(name, graph))
        written.append(config)
    return written
