"""The generation service's wire form: request and response tensors, defined once.

The Triton Python-backend model (export/triton_python_model.py) and its client (the bridge's
``--engine triton://``, bridge/triton_engine.py) both encode and decode through this module, and
export/triton_model.py writes the model's config.pbtxt from ``INPUTS`` and ``OUTPUTS``. Only
numpy and the engine's own types appear here: neither side's transport library.

A request is either ``KIND`` "describe" (the answer: one response with ``INFO``, the model's
``ModelInfo`` as JSON) or "generate": a ``SampleRequest`` whose answer is a stream of responses
with ``PROGRESS`` (a fraction of the decoding steps), then one with ``AUDIO`` [N, C] at
``AUDIO_RATE`` (the model's rate). A refusal of the request's values is an error whose message
starts with ``REFUSED``; a cancelled request ends with an error that starts with ``CANCELLED``.

On the wire every tensor has a leading batch axis of length 1 (one request) before the
``shape`` given here: the model's config has ``max_batch_size`` > 0 so that Triton may hand it
several requests at once. The encoders add that axis and the decoders take it off.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Any, Mapping

import numpy as np

from engine.sample_generation import SampleRequest
from engine.tempo import Tempo

MODEL_NAME = "barforge"
KIND_DESCRIBE, KIND_GENERATE = "describe", "generate"
REFUSED = "refused: "
CANCELLED = "cancelled: "


@dataclass(frozen=True)
class TensorSpec:
    """One tensor: ``dtype`` a numpy dtype name ("object" for UTF-8 strings), ``shape`` (one
    request's, without the batch axis) with None for a dynamic axis; ``optional`` inputs may
    be left out."""

    name: str
    dtype: str
    shape: tuple[int | None, ...]
    optional: bool = False


_ONE = (1,)
_AUDIO = (None, None)   # [frames, channels]
INPUTS = (
    TensorSpec("KIND", "object", _ONE),
    TensorSpec("DESCRIPTION", "object", _ONE, optional=True),
    TensorSpec("PARAMS", "object", _ONE, optional=True),      # set_generation_params as JSON
    TensorSpec("SAMPLES", "int64", _ONE, optional=True),
    TensorSpec("SAMPLE_RATE", "int64", _ONE, optional=True),
    TensorSpec("BPM", "object", _ONE, optional=True),          # exact: "120" or "241/2"
    TensorSpec("BEATS_PER_BAR", "int64", _ONE, optional=True),
    TensorSpec("START_BEAT", "float64", _ONE, optional=True),
    TensorSpec("PROMPT", "float32", _AUDIO, optional=True),
    TensorSpec("PROMPT_RATE", "int64", _ONE, optional=True),
    TensorSpec("MELODY", "float32", _AUDIO, optional=True),
    TensorSpec("MELODY_RATE", "int64", _ONE, optional=True),
)
OUTPUTS = (
    TensorSpec("INFO", "object", _ONE),
    TensorSpec("PROGRESS", "float32", _ONE),
    TensorSpec("AUDIO", "float32", _AUDIO),
    TensorSpec("AUDIO_RATE", "int64", _ONE),
)


@dataclass(frozen=True)
class ModelInfo:
    """What a client needs to know of the served model to accept requests and cut clips."""

    supported_modes: tuple[str, ...]
    audio_channels: int
    sample_rate: int
    frame_rate: float
    provider: str
    is_melody: bool


def model_info(model: Any) -> ModelInfo:
    """The ``ModelInfo`` of a loaded model."""
    return ModelInfo(tuple(model.supported_modes), int(model.audio_channels),
                     int(model.sample_rate), float(model.frame_rate),
                     str(getattr(model, "provider", "torch")),
                     bool(getattr(model, "is_melody", False)))


def _one_request(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``tensors`` with the wire's leading batch axis (one request)."""
    return {name: value[None] for name, value in tensors.items()}


def _text(value: str) -> np.ndarray:
    return np.array([value.encode()], dtype=object)


def _read_text(tensors: Mapping[str, np.ndarray], name: str) -> str:
    value = tensors[name].reshape(-1)[0]
    return value.decode() if isinstance(value, bytes) else str(value)


def _scalar(tensors: Mapping[str, np.ndarray], name: str) -> Any:
    return tensors[name].reshape(-1)[0].item()


def describe_request() -> dict[str, np.ndarray]:
    """The input tensors of a "describe" request."""
    return _one_request({"KIND": _text(KIND_DESCRIBE)})


def encode_info(info: ModelInfo) -> dict[str, np.ndarray]:
    """The output tensors answering "describe"."""
    return _one_request({"INFO": _text(json.dumps(asdict(info)))})


def decode_info(tensors: Mapping[str, np.ndarray]) -> ModelInfo:
    """``ModelInfo`` from the answer to "describe"."""
    fields = json.loads(_read_text(tensors, "INFO"))
    return ModelInfo(**{**fields, "supported_modes": tuple(fields["supported_modes"])})


def request_kind(tensors: Mapping[str, np.ndarray]) -> str:
    """"describe" or "generate"; ValueError for anything else."""
    kind = _read_text(tensors, "KIND")
    if kind not in (KIND_DESCRIBE, KIND_GENERATE):
        raise ValueError(f"KIND {kind!r}: expected {KIND_DESCRIBE!r} or {KIND_GENERATE!r}")
    return kind


def encode_request(request: SampleRequest) -> dict[str, np.ndarray]:
    """The input tensors of a "generate" request."""
    tempo = request.tempo
    tensors = {"KIND": _text(KIND_GENERATE), "DESCRIPTION": _text(request.description),
               "PARAMS": _text(json.dumps(request.params)),
               "SAMPLES": np.array([request.samples], dtype=np.int64),
               "SAMPLE_RATE": np.array([request.sample_rate], dtype=np.int64),
               "BPM": _text(str(tempo.bpm)),
               "BEATS_PER_BAR": np.array([tempo.beats_per_bar], dtype=np.int64),
               "START_BEAT": np.array([tempo.start_beat], dtype=np.float64)}
    for audio, rate, name in ((request.prompt, request.prompt_rate, "PROMPT"),
                              (request.melody, request.melody_rate, "MELODY")):
        if audio is not None:
            tensors[name] = np.ascontiguousarray(audio, dtype=np.float32)
            tensors[f"{name}_RATE"] = np.array([rate], dtype=np.int64)
    return _one_request(tensors)


def decode_request(tensors: Mapping[str, np.ndarray]) -> SampleRequest:
    """The ``SampleRequest`` of a "generate" request's tensors; ValueError for a missing or
    malformed one (the model's own checks come later, in ``generate_samples``)."""
    missing = [s.name for s in INPUTS if s.name not in tensors and s.name != "KIND"
               and not s.name.startswith(("PROMPT", "MELODY"))]
    if missing:
        raise ValueError(f"a generate request needs {', '.join(missing)}")
    params = json.loads(_read_text(tensors, "PARAMS"))
    if "decoding_steps" in params:   # JSON has no tuples
        params["decoding_steps"] = tuple(params["decoding_steps"])
    tempo = Tempo(Fraction(_read_text(tensors, "BPM")), int(_scalar(tensors, "BEATS_PER_BAR")),
                  float(_scalar(tensors, "START_BEAT")))
    audio: dict[str, Any] = {}
    for name in ("PROMPT", "MELODY"):
        if name in tensors:
            if f"{name}_RATE" not in tensors:
                raise ValueError(f"{name} needs {name}_RATE")
            audio[name.lower()] = np.asarray(tensors[name], dtype=np.float32)[0]
            audio[f"{name.lower()}_rate"] = int(_scalar(tensors, f"{name}_RATE"))
    return SampleRequest(_read_text(tensors, "DESCRIPTION"), params,
                         int(_scalar(tensors, "SAMPLES")), int(_scalar(tensors, "SAMPLE_RATE")),
                         tempo, **audio)


def progress_response(fraction: float) -> dict[str, np.ndarray]:
    """The output tensors of a progress response."""
    return _one_request({"PROGRESS": np.array([fraction], dtype=np.float32)})


def audio_response(audio: np.ndarray, sample_rate: int) -> dict[str, np.ndarray]:
    """The output tensors of the final response: the audio [N, C] at ``sample_rate``."""
    return _one_request({"AUDIO": np.ascontiguousarray(audio, dtype=np.float32),
                         "AUDIO_RATE": np.array([sample_rate], dtype=np.int64)})


def decode_progress(tensors: Mapping[str, np.ndarray]) -> float | None:
    """The fraction a progress response carries; None for another response."""
    value = tensors.get("PROGRESS")
    return None if value is None else float(value.reshape(-1)[0])


def decode_audio(tensors: Mapping[str, np.ndarray]) -> np.ndarray | None:
    """The audio [N, C] of the final response; None for another response."""
    value = tensors.get("AUDIO")
    return None if value is None else value[0]
