"""The Triton Python-backend model that generates: copied to ``<repo>/barforge/1/model.py``.

It runs inside tritonserver's Python-backend stub, beside a copy of the engine package
(``1/engine``) and the ONNX bundle (``1/bundle``) that export/triton_model.py writes there, and
needs only the engine's dependencies in the stub's Python environment. The model is decoupled:
every request (engine/serving_schema.py) is answered by a stream of progress responses and
then the clip, or by one error; a request the client cancels stops at the next decoding step.
One instance generates one request at a time; config.pbtxt's ``instance_group`` count sets
how many run at once.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import triton_python_backend_utils as pb_utils  # provided by the Python backend

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))   # the engine copy beside this file

from engine import load_model  # noqa: E402
from engine import serving_schema as schema  # noqa: E402
from engine.inference_kernels import use_native_cpu_kernels  # noqa: E402
from engine.sample_generation import generate_samples  # noqa: E402

PROGRESS_INTERVAL_S = 0.05  # at most this often per request: the bridge thins progress further


class _Cancelled(Exception):
    """The client cancelled the request."""


class TritonPythonModel:
    """Loads the bundle once per instance; ``execute`` answers requests one after another."""

    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        provider = config.get("parameters", {}).get("provider", {}).get("string_value") or None
        use_native_cpu_kernels()   # as the bridge's generator process: the same kernels, the same clips
        self.model = load_model(HERE / "bundle", provider=provider)
        self.info = schema.model_info(self.model)

    def execute(self, requests: list[Any]) -> None:
        for request in requests:
            self._answer(request)
        return None   # decoupled: every answer went through the request's response sender

    def _answer(self, request: Any) -> None:
        sender = request.get_response_sender()
        final = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
        try:
            tensors = {spec.name: tensor.as_numpy() for spec in schema.INPUTS
                       if (tensor := pb_utils.get_input_tensor_by_name(request, spec.name))
                       is not None}
            if schema.request_kind(tensors) == schema.KIND_DESCRIBE:
                sender.send(_response(schema.encode_info(self.info)), flags=final)
                return
            sample_request = schema.decode_request(tensors)
            self.model.check_generation_params(**sample_request.params)
        except ValueError as e:
            sender.send(_error(schema.REFUSED + str(e)), flags=final)
            return
        last = [0.0]

        def progress(fraction: float) -> None:
            if request.is_cancelled():
                raise _Cancelled()
            now = time.monotonic()
            if now - last[0] >= PROGRESS_INTERVAL_S:
                last[0] = now
                sender.send(_response(schema.progress_response(fraction)))

        try:
            audio = generate_samples(self.model, sample_request, progress)
        except _Cancelled:
            sender.send(_error(schema.CANCELLED + "cancelled by the client"), flags=final)
            return
        except ValueError as e:   # a value the model refuses only once it is configured
            sender.send(_error(schema.REFUSED + str(e)), flags=final)
            return
        except Exception as e:  # the client answers its job "internal" with this
            sender.send(_error(f"{type(e).__name__}: {e}"[:300]), flags=final)
            return
        sender.send(_response(schema.audio_response(audio, self.info.sample_rate)), flags=final)


def _response(tensors: dict[str, Any]) -> Any:
    return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(name, value)
                                                      for name, value in tensors.items()])


def _error(message: str) -> Any:
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message))
