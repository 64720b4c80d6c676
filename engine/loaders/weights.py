"""Reading checkpoint files and loading their tensors strictly: shared by the codec and LM loaders.

Hugging Face directories keep their weights in ``model.safetensors``, a sharded
``model.safetensors.index.json`` or a legacy ``pytorch_model.bin``; audiocraft files are torch
pickles read with ``weights_only``. ``load_strict`` then loads a mapped state dict, refusing any
tensor that is unknown, misshapen or missing, with the file and tensor named.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn


def read_json(file: Path, kind: str = "config") -> Any:
    """The parsed JSON ``file``; ValueError naming it when it cannot be read or parsed."""
    try:
        return json.loads(file.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{file}: not a readable JSON {kind} ({e})") from e


def torch_load_checkpoint(file: Path) -> Any:
    """A torch checkpoint on CPU, tensors and plain containers only (``weights_only``)."""
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle / zip errors of many types for corrupt or foreign files
        raise ValueError(f"{file}: not a readable torch checkpoint ({type(e).__name__}: {e})") \
            from e


def read_hf_weights(directory: Path, prefix: str) -> tuple[dict[str, torch.Tensor], str]:
    """Tensors whose name starts with ``prefix`` (prefix stripped) and the file(s) they came
    from, from model.safetensors, its sharded index, or pytorch_model.bin.

    FileNotFoundError when the directory holds none of them or an index names a missing shard.
    """
    single = directory / "model.safetensors"
    index = directory / "model.safetensors.index.json"
    if single.is_file():
        return _read_safetensors(single, prefix), str(single)
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (OSError, ValueError, KeyError) as e:
            raise ValueError(f"{index}: not a readable safetensors index ({e})") from e
        shards = sorted({f for k, f in weight_map.items() if k.startswith(prefix)})
        state: dict[str, torch.Tensor] = {}
        for shard in shards:
            shard_path = directory / shard
            if not shard_path.is_file():
                raise FileNotFoundError(f"{index} names shard {shard_path}, which is missing")
            state.update(_read_safetensors(shard_path, prefix))
        return state, str(index)
    legacy = directory / "pytorch_model.bin"
    if legacy.is_file():
        raw = torch_load_checkpoint(legacy)
        return {k[len(prefix):]: v for k, v in raw.items() if k.startswith(prefix)}, str(legacy)
    raise FileNotFoundError(f"{directory}: no model.safetensors, model.safetensors.index.json "
                            "or pytorch_model.bin beside config.json")


def _read_safetensors(file: Path, prefix: str) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    try:
        with safe_open(str(file), framework="pt") as f:
            return {k[len(prefix):]: f.get_tensor(k) for k in f.keys() if k.startswith(prefix)}
    except Exception as e:  # safetensors raises its own error type for truncated/corrupt files
        raise ValueError(f"{file}: not a readable safetensors file ({type(e).__name__}: {e})") \
            from e


def load_strict(module: nn.Module, mapped: Mapping[str, tuple[str, torch.Tensor]], source: str,
                *, what: str, missing_label: str = "missing tensor", assign: bool = False) -> None:
    """Load ``{our name: (checkpoint name, tensor)}`` into ``module``: every tensor must exist in
    it with the right shape, and every tensor of the module must be given.

    ``source`` (the file) starts every error message; ``what`` says what lacks an unexpected
    tensor (e.g. "a codec with this config"); ``missing_label`` opens the missing-tensor
    message. ``assign``: take the checkpoint's tensors (cast to the module's dtypes) instead of
    copying into existing storage, as a module built on the meta device needs.
    """
    expected = module.state_dict()
    for ours, (theirs, tensor) in mapped.items():
        if ours not in expected:
            raise ValueError(f"{source}: unexpected tensor {theirs!r} (no {ours!r} in {what})")
        if tuple(tensor.shape) != tuple(expected[ours].shape):
            raise ValueError(f"{source}: tensor {theirs!r} has shape {tuple(tensor.shape)}, "
                             f"expected {tuple(expected[ours].shape)}")
    missing = [k for k in expected if k not in mapped]
    if missing:
        raise ValueError(f"{source}: {missing_label} {missing[0]!r} "
                         f"({len(missing)} of {len(expected)} missing)")
    if assign:
        state = {ours: t.to(expected[ours].dtype).contiguous() for ours, (_, t) in mapped.items()}
    else:
        state = {ours: t for ours, (_, t) in mapped.items()}
    module.load_state_dict(state, strict=True, assign=assign)
