"""Reading and verifying an ONNX bundle's ``manifest.json`` (the format: docs/ONNX.md).

The runtime side of the manifest: the format's name and version, the file checksum, and
``read_manifest``, which refuses a manifest of another format or version, a missing file and a
file whose sha256 differs. The writer (``export.manifest``) imports these names from here, so
the format's constants and the checksum exist once; engine never imports export.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

FORMAT_NAME = "barforge-onnx-bundle"
# 2: lm_step attends on shared KV buffers (GroupQueryAttention, past_sequence_length) and is
# also the prompt's graph; version 1's lm_step concatenated the cache and had an lm_prefill
FORMAT_VERSION = 2
MANIFEST_NAME = "manifest.json"
REQUIRED_KEYS = ("family", "sample_rate", "frame_rate", "num_codebooks", "card", "graphs",
                 "files")


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def is_bundle(path: str | Path) -> bool:
    """Whether ``path`` is a directory holding a bundle manifest."""
    return (Path(path) / MANIFEST_NAME).is_file()


def read_manifest(bundle_dir: str | Path, verify: bool = True) -> dict[str, Any]:
    """Read a bundle's manifest.json; with ``verify``, check every listed file and its sha256.

    Raises FileNotFoundError for a missing manifest or file, ValueError for a manifest of another
    format/version, one missing a required entry, or a file whose sha256 differs (a corrupt or
    edited bundle).
    """
    bundle_dir = Path(bundle_dir)
    path = bundle_dir / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{bundle_dir} is not an ONNX bundle: {MANIFEST_NAME} is missing")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e
    check_header(manifest, str(path))
    if verify:
        verify_files(bundle_dir, manifest)
    return manifest


def check_header(manifest: dict[str, Any], where: str) -> None:
    """Refuse a manifest of another format or version, or one missing a required entry."""
    if manifest.get("format") != FORMAT_NAME:
        raise ValueError(f"{where}: format is {manifest.get('format')!r}, expected {FORMAT_NAME!r}")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(f"{where}: bundle format_version {version!r} is not supported (this "
                         f"runtime reads version {FORMAT_VERSION}); export the model again with "
                         "`barforge export`")
    for key in REQUIRED_KEYS:
        if key not in manifest:
            raise ValueError(f"{where}: the manifest has no {key!r} entry")
    for graph in manifest["graphs"].values():
        for file in (graph["file"], graph.get("cpu_file", graph["file"])):
            if file not in manifest["files"]:
                raise ValueError(f"{where}: graph file {file} has no sha256 entry")


def verify_files(bundle_dir: Path, manifest: dict[str, Any]) -> None:
    """Every file the manifest lists exists and has its recorded sha256."""
    for name, info in manifest["files"].items():
        file = bundle_dir / name
        if not file.is_file():
            raise FileNotFoundError(f"bundle {bundle_dir}: file {name} listed in the manifest "
                                    f"is missing")
        digest = sha256_file(file)
        if digest != info["sha256"]:
            raise ValueError(f"bundle {bundle_dir}: {name} has sha256 {digest[:16]}..., the "
                             f"manifest says {info['sha256'][:16]}... (corrupt or modified)")
