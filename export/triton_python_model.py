"""The Triton Python-backend model that generates: copied to ``<repo>/barforge/1/model.py``.

It runs inside tritonserver's Python-backend stub, beside a copy of the engine package
(``1/engine``) and the ONNX bundle (``1/bundle``) that export/triton_model.py writes there, and
needs only the engine's dependencies in the stub's Python environment. The model is decoupled:
every request (engine/serving_schema.py) is answered by a stream of progress responses and
then the clip, or by one error; a request the client cancels stops at the next decoding step.

Batching: Triton's dynamic batcher hands ``execute`` up to ``max_batch_size`` requests that
queued while the instance was busy. Those with the same ``batch_key`` (mode, options, length,
tempo, text length; engine/sample_generation.py) are decoded in one loop, one row each, and
each row gets the clip it gets alone; the others run one after another. Each request is
checked on its own first, so a bad one is refused without touching its batch mates. A member
cancelled mid-batch is answered "cancelled" at once; its row is computed to the end and
discarded (the loop's shape is fixed), and the loop stops when every member is cancelled. A
batch that fails is run again request by request, so each gets its own answer.
config.pbtxt's ``instance_group`` count sets how many instances run at once.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Hashable

import triton_python_backend_utils as pb_utils  # provided by the Python backend

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))   # the engine copy beside this file

from engine import load_model  # noqa: E402
from engine import serving_schema as schema  # noqa: E402
from engine.inference_kernels import use_native_cpu_kernels  # noqa: E402
from engine.sample_generation import SampleRequest, batch_key, generate_batch  # noqa: E402

PROGRESS_INTERVAL_S = 0.05  # at most this often per request: the bridge thins progress further


class _Cancelled(Exception):
    """Every request of the running loop was cancelled by its client."""


@dataclass
class _Member:
    """One generate request of an ``execute`` batch: its sender and decoded request."""

    request: Any
    sender: Any
    sample: SampleRequest
    answered: bool = False
    last_progress: float = 0.0

    def finish(self, response: Any) -> None:
        """Send ``response`` as this request's final one."""
        self.sender.send(response, flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        self.answered = True


class TritonPythonModel:
    """Loads the bundle once per instance; ``execute`` answers a batch of requests."""

    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        provider = config.get("parameters", {}).get("provider", {}).get("string_value") or None
        use_native_cpu_kernels()   # as the bridge's generator process: the same kernels, the same clips
        self.model = load_model(HERE / "bundle", provider=provider)
        self.info = schema.model_info(self.model)

    def execute(self, requests: list[Any]) -> None:
        groups: dict[Hashable, list[_Member]] = {}
        for index, request in enumerate(requests):
            member = self._accept(request)
            if member is None:
                continue
            try:
                key = batch_key(self.model, member.sample)
            except Exception:   # noqa: BLE001 - it runs alone and meets its error there
                key = None
            groups.setdefault(("alone", index) if key is None else key, []).append(member)
        for group in groups.values():
            self._generate(group)
        return None   # decoupled: every answer went through the request's response sender

    def _accept(self, request: Any) -> _Member | None:
        """The request as a batch member, or None once it is answered (describe, refused)."""
        sender = request.get_response_sender()
        final = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
        try:
            tensors = {spec.name: tensor.as_numpy() for spec in schema.INPUTS
                       if (tensor := pb_utils.get_input_tensor_by_name(request, spec.name))
                       is not None}
            if schema.request_kind(tensors) == schema.KIND_DESCRIBE:
                sender.send(_response(schema.encode_info(self.info)), flags=final)
                return None
            sample = schema.decode_request(tensors)
            self.model.check_generation_params(**sample.params)
        except Exception as e:   # noqa: BLE001 - answered here, so its batch mates go on
            sender.send(_error(_failure(e)), flags=final)
            return None
        return _Member(request, sender, sample)

    def _generate(self, group: list[_Member]) -> None:
        """Decode ``group`` (one ``batch_key``) in one loop and answer each member."""
        def progress(fraction: float) -> None:
            now = time.monotonic()
            for m in group:
                if m.answered:
                    continue
                if m.request.is_cancelled():
                    m.finish(_error(schema.CANCELLED + "cancelled by the client"))
                elif now - m.last_progress >= PROGRESS_INTERVAL_S:
                    m.last_progress = now
                    m.sender.send(_response(schema.progress_response(fraction)))
            if all(m.answered for m in group):
                raise _Cancelled()

        try:
            clips = generate_batch(self.model, [m.sample for m in group], progress)
        except _Cancelled:
            return
        except Exception as e:
            if len(group) > 1:   # one member's value may fail them all: each on its own
                for m in group:
                    if not m.answered:
                        self._generate([m])
                return
            group[0].finish(_error(_failure(e)))
            return
        for m, audio in zip(group, clips):
            if not m.answered:
                m.finish(_response(schema.audio_response(audio, self.info.sample_rate)))


def _response(tensors: dict[str, Any]) -> Any:
    return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(name, value)
                                                      for name, value in tensors.items()])


def _failure(error: Exception) -> str:
    """The error message for ``error``: a ValueError is a refusal of the request's values;
    anything else the client answers its job "internal" with."""
    if isinstance(error, ValueError):
        return schema.REFUSED + str(error)
    return f"{type(error).__name__}: {error}"[:300]


def _error(message: str) -> Any:
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message))
