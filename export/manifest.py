"""The bundle's ``manifest.json``: graph I/O specs, model numbers, file checksums.

Writing lives here; the format's name, version, file name and checksum, and reading and
verifying (a missing file or a wrong sha256 is refused) live in ``engine.loaders.onnx_manifest``
because the runtime needs them and engine never imports export. This module only imports them,
so nothing about the format is defined twice; ``read_manifest`` is re-exported for export code.

A shape is a list whose entries are ints (static) or strings (named dynamic axes, the same
names the exporter was given), e.g. ``["batch", 16, "past_seq", 64]``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from engine.loaders.onnx_manifest import (  # noqa: F401  (read_manifest re-exported)
    FORMAT_NAME, FORMAT_VERSION, MANIFEST_NAME, check_header, read_manifest, sha256_file)

ONNX_DTYPES = {
    onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.FLOAT16: "float16",
    onnx.TensorProto.INT64: "int64", onnx.TensorProto.INT32: "int32",
    onnx.TensorProto.BOOL: "bool",
}


@dataclass(frozen=True)
class IOSpec:
    """One graph input or output: name, element type, shape (int = static, str = dynamic)."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


@dataclass
class GraphSpec:
    """One ONNX graph of the bundle and its I/O contract."""

    name: str
    inputs: list[IOSpec]
    outputs: list[IOSpec]
    file: str = ""
    role: str = ""        # "text", "codec", "ar" or "magnet"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.file = self.file or f"{self.name}.onnx"

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """The ``dynamic_axes`` argument of ``torch.onnx.export`` for this spec."""
        axes: dict[str, dict[int, str]] = {}
        for io in (*self.inputs, *self.outputs):
            named = {i: d for i, d in enumerate(io.shape) if isinstance(d, str)}
            if named:
                axes[io.name] = named
        return axes

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "role": self.role,
                "inputs": [io.to_json() for io in self.inputs],
                "outputs": [io.to_json() for io in self.outputs], **self.extra}


def set_output_shapes(path: Path, spec: GraphSpec) -> None:
    """Declare each output's shape exactly as the spec says (the exporter leaves axes it computes,
    e.g. a step graph's single step, as anonymous symbols)."""
    model = onnx.load(str(path))
    by_name = {io.name: io for io in spec.outputs}
    for out in model.graph.output:
        io = by_name.get(out.name)
        if io is None:
            continue
        dims = out.type.tensor_type.shape.dim
        if len(dims) != len(io.shape):
            raise ValueError(f"{Path(path).name}: output {io.name} has rank {len(dims)}, "
                             f"spec says {len(io.shape)}")
        for d, want in zip(dims, io.shape):
            if isinstance(want, int):
                d.dim_value = want
            else:
                d.dim_param = want
    onnx.save(model, str(path))


def check_graph_matches_spec(path: Path, spec: GraphSpec) -> None:
    """Refuse an exported file whose I/O names, element types or axes differ from ``spec``.

    This is what catches an exporter that froze a dynamic axis to its example size.
    """
    path = Path(path)
    graph = onnx.load(str(path), load_external_data=False).graph
    for kind, actual, wanted in (("input", graph.input, spec.inputs),
                                 ("output", graph.output, spec.outputs)):
        names = [v.name for v in actual]
        if names != [io.name for io in wanted]:
            raise ValueError(f"{path.name}: {kind} names {names} differ from the spec "
                             f"{[io.name for io in wanted]}")
        for v, io in zip(actual, wanted):
            t = v.type.tensor_type
            dtype = ONNX_DTYPES.get(t.elem_type, str(t.elem_type))
            if dtype != io.dtype:
                raise ValueError(f"{path.name}: {kind} {io.name} has type {dtype}, spec says {io.dtype}")
            dims = [d.dim_param if d.HasField("dim_param") else
                    (d.dim_value if d.HasField("dim_value") else "?") for d in t.shape.dim]
            if len(dims) != len(io.shape):
                raise ValueError(f"{path.name}: {kind} {io.name} has rank {len(dims)}, "
                                 f"spec says {len(io.shape)}")
            for axis, (got, want) in enumerate(zip(dims, io.shape)):
                if isinstance(want, str) and not isinstance(got, str):
                    raise ValueError(f"{path.name}: {kind} {io.name} axis {axis} ({want}) was "
                                     f"frozen to {got} by the exporter")
                if isinstance(want, int) and got != want:
                    raise ValueError(f"{path.name}: {kind} {io.name} axis {axis} is {got}, "
                                     f"spec says {want}")


def write_manifest(out_dir: Path, header: dict[str, Any], graphs: list[GraphSpec],
                   extra_files: list[str]) -> dict[str, Any]:
    """Write ``manifest.json`` with every graph's spec and the sha256 of every file.

    ``extra_files``: other files of the bundle (tokenizer, external weight data), relative paths.
    """
    files = sorted({g.file for g in graphs} | set(extra_files))
    manifest = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        **header,
        "graphs": {g.name: g.to_json() for g in graphs},
        "files": {f: {"sha256": sha256_file(out_dir / f), "bytes": (out_dir / f).stat().st_size}
                  for f in files},
    }
    check_header(manifest, f"{out_dir / MANIFEST_NAME} (being written)")  # the reader's rules
    (out_dir / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
