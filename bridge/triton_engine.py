"""Generation on a Triton Inference Server: ``barforge serve --engine triton://HOST:PORT``.

The bridge stays beside the DAW (same OSC protocol, same shared-memory segment, same plugin)
and sends each job's engine request to the repository's ``barforge`` model
(export/triton_model.py) over gRPC, streaming: progress responses come back as they happen,
then the audio, which the bridge cuts, normalises, publishes and writes as it does a local
model's (bridge/renderer.py). A continuation's captured audio and a melody travel in the
request. Cancelling a job cancels its request on the server. A server that dies mid-job ends
that job ``internal``; every job opens its own stream, so the next one reaches the server as
soon as it is back.
"""
from __future__ import annotations

import logging
import queue
import time
from typing import Any, Callable

import numpy as np

from bridge.command import ENGINE_SCHEME as SCHEME
from bridge.generator import RemoteModel
from bridge.jobs import Job, JobRefused
from bridge.renderer import Published, Renderer
from engine import serving_schema as schema
from engine.decoding.options import refuse_inapplicable
from engine.sample_generation import Progress, SampleRequest

log = logging.getLogger("bridge.triton")
POLL_S = 0.01   # how often a job's cancel is looked at while its stream is quiet
READY_POLL_S = 0.5


class EngineUnavailable(RuntimeError):
    """The Triton server could not be reached, or failed the request."""


class TritonClient:
    """The ``barforge`` model of the Triton server at ``address`` (HOST:PORT, gRPC), one
    stream per request. ``cancelled()`` is asked while a stream is quiet; raising from it (or
    from a progress callback) cancels the request on the server."""

    def __init__(self, address: str, cancelled: Callable[[], None] = lambda: None) -> None:
        self.address, self._cancelled = address, cancelled

    def describe(self, wait_s: float) -> schema.ModelInfo:
        """The served model's ``ModelInfo``, waiting up to ``wait_s`` for it to be ready."""
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import InferenceServerException

        end = time.monotonic() + wait_s
        with grpcclient.InferenceServerClient(self.address) as client:
            while True:
                try:
                    if client.is_model_ready(schema.MODEL_NAME):
                        break
                except InferenceServerException:
                    pass
                if time.monotonic() >= end:
                    raise ValueError(f"--engine {SCHEME}{self.address}: no ready "
                                     f"'{schema.MODEL_NAME}' model there within {wait_s:g} s")
                time.sleep(READY_POLL_S)
        return self._stream(schema.describe_request(), lambda result: schema.decode_info(
            {"INFO": result.as_numpy("INFO")}))

    def generate(self, request: SampleRequest, progress: Progress) -> np.ndarray:
        """``generate_samples`` on the server: audio [N, C] at the model's rate.
        ``JobRefused`` for values the model refuses, ``EngineUnavailable`` when the server
        fails or cannot be reached."""
        def on_response(result: Any) -> np.ndarray | None:
            tensors = {name: value for name in ("AUDIO", "PROGRESS")
                       if (value := result.as_numpy(name)) is not None}
            fraction = schema.decode_progress(tensors)
            if fraction is not None:
                progress(fraction)
            return schema.decode_audio(tensors)

        return self._stream(schema.encode_request(request), on_response)

    def _stream(self, tensors: dict[str, np.ndarray], on_response: Callable[[Any], Any]) -> Any:
        """Send one request on a stream of its own; ``on_response`` sees each response until it
        returns something, which is returned. Leaving early cancels the request on the server."""
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import np_to_triton_dtype

        inputs = []
        for name, value in tensors.items():
            tensor = grpcclient.InferInput(name, list(value.shape), np_to_triton_dtype(value.dtype))
            tensor.set_data_from_numpy(value)
            inputs.append(tensor)
        responses: queue.Queue[tuple[Any, Any]] = queue.Queue()
        client = grpcclient.InferenceServerClient(self.address)
        try:
            client.start_stream(callback=lambda result, error: responses.put((result, error)))
            client.async_stream_infer(schema.MODEL_NAME, inputs)
            while True:
                try:
                    result, error = responses.get(timeout=POLL_S)
                except queue.Empty:
                    self._cancelled()
                    continue
                if error is not None:
                    raise self._failure(error.message())
                answer = on_response(result)
                if answer is not None:
                    return answer
        finally:
            client.stop_stream(cancel_requests=True)
            client.close()

    def _failure(self, message: str) -> Exception:
        """The exception for an error response: a refusal, or the server failing."""
        if message.startswith(schema.REFUSED):
            return JobRefused(message[len(schema.REFUSED):])
        return EngineUnavailable(f"{SCHEME}{self.address}: {message}"[:300])


class TritonEngine:
    """What ``Bridge`` uses of a Renderer (``model``, ``model_name``, ``speed``, ``segment``,
    ``warm_up``, ``render``, ``stop``), with the model on a Triton server at ``address``
    (HOST:PORT). Waits up to ``wait_s`` for the server's model to be ready."""

    def __init__(self, address: str, segment: Any, store: Any, wait_s: float) -> None:
        self.segment = segment
        self.model_name = f"{SCHEME}{address}/{schema.MODEL_NAME}"
        self._job: Job | None = None
        self._client = TritonClient(address, self._check_cancel)
        self.model = RemoteModel(self._client.describe(wait_s), self._check)
        self._renderer = Renderer(self.model, self.model_name, segment, store,
                                  self._client.generate)
        self.speed = self._renderer.speed

    def warm_up(self) -> None:
        """Time every decoding mode on the server (``Renderer.warm_up``)."""
        self._renderer.warm_up()

    def render(self, job: Job, settings: Any, progress: Callable[[float], None]) -> Published:
        """``Renderer.render`` with the generation on the server; a cancel of ``job`` cancels
        its request there."""
        self._job = job
        try:
            return self._renderer.render(job, settings, progress)
        finally:
            self._job = None

    def stop(self) -> None:
        """Nothing to end here: each job's stream closes with the job."""

    def _check_cancel(self) -> None:
        if self._job is not None:
            self._job.check_cancel()

    def _check(self, params: dict[str, Any]) -> None:
        # what can be refused without asking: a keyword that does not apply to the mode; the
        # server refuses values out of range, and the job then ends bad_argument
        refuse_inapplicable(params.get("mode", "ar"), params)
