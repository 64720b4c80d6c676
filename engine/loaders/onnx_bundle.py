"""An exported ONNX bundle (docs/ONNX.md) as ``ModelParts`` whose runtime is onnxruntime.

The manifest is verified first (every file's sha256, engine/loaders/onnx_manifest.py); then
each LM role's graphs become an ``OnnxBackend`` (engine/backends/onnx_step.py; a melody LM's an
``OnnxMelodyBackend``, engine/backends/onnx_melody.py) and the codec and
text encoder graphs their wrappers (engine/backends/onnx_parts.py), all on one provider.
"""
from __future__ import annotations

from pathlib import Path

from engine.backends.onnx_parts import OnnxCodec, load_text_encoder
from engine.backends.onnx_runtime import choose_provider
from engine.backends.onnx_melody import OnnxMelodyBackend
from engine.backends.onnx_step import OnnxBackend
from engine.loaders.onnx_manifest import read_manifest
from engine.loaders.parts import FAMILIES, ModelParts


def open_bundle(bundle_dir: str | Path, provider: str | None = None,
                threads: int | None = None) -> ModelParts:
    """Verify a bundle (files, sha256) and open its sessions on ``provider`` (see
    ``choose_provider``: default CUDA when it works, else CPU; a named one is obeyed or refused
    with a ValueError). ``threads``: intra-op threads. One ``OnnxBackend`` serves every LM role
    whose graphs are the same files."""
    bundle_dir = Path(bundle_dir)
    manifest = read_manifest(bundle_dir, verify=True)
    device = choose_provider(provider)
    backends: dict[str, OnnxBackend] = {}
    by_graphs: dict[tuple, OnnxBackend] = {}
    for role, lm in manifest["lms"].items():
        key = tuple(sorted((k, v) for k, v in lm["graphs"].items() if v))
        if key not in by_graphs:
            kind = OnnxMelodyBackend if lm.get("chroma_bins") else OnnxBackend
            by_graphs[key] = kind(bundle_dir, manifest, role, device, threads)
        backends[role] = by_graphs[key]
    family = manifest["family"]
    if family not in FAMILIES:
        raise ValueError(f"bundle {bundle_dir}: unknown model family {family!r}")
    codec = OnnxCodec(bundle_dir, manifest, device, threads)
    text_encoder = load_text_encoder(bundle_dir, manifest, device, threads)
    common = dict(name=bundle_dir.name, codec=codec, text_encoder=text_encoder,
                  max_duration=float(manifest["max_duration"]),
                  generation=dict(manifest.get("generation", {})))  # absent in older bundles
    if family == "musicgen":
        return ModelParts(family="musicgen", backend=backends["ar"], **common)
    extra = manifest["magnet"]
    ar = backends.get("ar")
    return ModelParts(family="magnet", backend=backends["magnet"], ar_backend=ar,
                      ar_max_duration=None if ar is None else float(extra["ar_max_duration"]),
                      magnet={"subcodes_context": extra["attn_band"],
                              "span_len": extra.get("span_len", 3)}, **common)
