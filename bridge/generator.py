"""Generation in a child process: the network thread never waits for the model's interpreter.

``GeneratorProcess`` offers what ``Bridge`` uses of a ``Renderer`` (``model``, ``model_name``,
``speed``, ``segment``, ``warm_up``, ``render``) and runs a real ``Renderer`` in a spawned
process that loads the model, maps the segment (to publish clips and read the capture ring)
and writes the render dir. The server process keeps the socket, the job queue, the heartbeat
and the capture resets. A job's cancel and commit stay decided in the server process
(``Job``); the child asks before it publishes, so a job still ends with exactly one reply.
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Callable

from bridge.continuation import SpeedEstimate
from bridge.jobs import Cancelled, Job, JobRefused
from bridge.renderer import Published
from engine.serving_schema import ModelInfo, model_info

log = logging.getLogger("bridge.generator")
POLL_S = 0.01            # how often the server side looks at a job's cancel while waiting
CHILD_PROGRESS_S = 0.02  # the child reports progress at most this often (the server thins more)
STOP_TIMEOUT_S = 10.0
CHECK_TIMEOUT_S = 2.0    # an accept waits at most this long for the child's parameter check


@dataclass(frozen=True)
class Spec:
    """How the child builds its Renderer."""

    model: str
    provider: str | None
    segment_name: str
    render_dir: str
    log_format: str


class RemoteModel:
    """A model held elsewhere (the generator process, a Triton server) as the server process
    sees it: its ``ModelInfo`` plus the parameter check (``check_generation_params``), which
    ``check`` answers (a ValueError for a refusal)."""

    def __init__(self, info: ModelInfo, check: Callable[[dict[str, Any]], None]) -> None:
        self.info, self._check = info, check

    @property
    def supported_modes(self) -> tuple[str, ...]:
        return self.info.supported_modes

    @property
    def audio_channels(self) -> int:
        return self.info.audio_channels

    @property
    def sample_rate(self) -> int:
        return self.info.sample_rate

    @property
    def frame_rate(self) -> float:
        return self.info.frame_rate

    @property
    def provider(self) -> str:
        return self.info.provider

    @property
    def is_melody(self) -> bool:
        return self.info.is_melody

    def check_generation_params(self, **params: Any) -> None:
        """ValueError for what the model's ``set_generation_params`` would refuse."""
        self._check(params)


class GeneratorFailed(RuntimeError):
    """The child could not start, or died (its exit code is in the message)."""


class GeneratorProcess:
    """The server side's handle on the child; ``render`` blocks the calling (worker) thread."""

    def __init__(self, spec: Spec, segment: Any) -> None:
        self.spec, self.segment, self.model_name = spec, segment, spec.model
        self.speed = SpeedEstimate()
        self._ctx = mp.get_context("spawn")  # no fork of a process with threads and torch
        self._check_lock = threading.Lock()
        self._check_serial = 0
        self._start()

    def _start(self) -> None:
        self._conn, child_conn = self._ctx.Pipe()
        self._check_conn, child_check_conn = self._ctx.Pipe()
        self._cancel = self._ctx.Value("b", 0, lock=False)
        self._proc = self._ctx.Process(target=_child_main,
                                       args=(child_conn, child_check_conn, self._cancel, self.spec),
                                       name="bridge-generator", daemon=True)
        self._proc.start()
        child_conn.close()
        child_check_conn.close()
        kind, value = self._receive(None)
        if kind == "ready":
            self.model = RemoteModel(value, self.check_params)
            return
        user_mistake, message = value
        self._proc.join(STOP_TIMEOUT_S)
        raise (ValueError if user_mistake else GeneratorFailed)(message)

    def _receive(self, job: Job | None) -> tuple[str, Any]:
        """The child's next message; a cancel of ``job`` is passed on while waiting."""
        while not self._conn.poll(POLL_S):
            if job is not None and job.cancel.is_set():
                self._cancel.value = 1
            if not self._proc.is_alive():
                raise GeneratorFailed(f"the generator process exited ({self._proc.exitcode})")
        try:
            return self._conn.recv()
        except EOFError:
            self._proc.join(1.0)
            raise GeneratorFailed(f"the generator process exited ({self._proc.exitcode})") from None

    def check_params(self, params: dict[str, Any]) -> None:
        """The child's ``model.check_generation_params(**params)``: ValueError for a refusal.

        Answered by a thread of the child while it renders (the check reads the model, never
        changes it). With the child dead or not answering within CHECK_TIMEOUT_S the check is
        skipped: the worker restarts the child, whose configuring refuses the same values.
        """
        with self._check_lock:
            if not self._proc.is_alive():
                return
            self._check_serial += 1
            serial = self._check_serial
            try:
                self._check_conn.send((serial, params))
                end = time.monotonic() + CHECK_TIMEOUT_S
                while self._check_conn.poll(max(0.0, end - time.monotonic())):
                    answer_serial, refusal = self._check_conn.recv()
                    if answer_serial == serial:     # an earlier, timed-out answer is dropped
                        if refusal is not None:
                            raise ValueError(refusal)
                        return
            except (EOFError, OSError):
                return
            log.warning("the generator did not check the parameters within %.0f s; accepting",
                        CHECK_TIMEOUT_S)

    def warm_up(self) -> None:
        """Time every decoding mode in the child (``Renderer.warm_up``)."""
        self._conn.send(("warm_up",))
        _, speed = self._receive(None)
        self.speed.update(speed)

    def render(self, job: Job, settings: Any, progress: Callable[[float], None]) -> Published:
        """``Renderer.render`` in the child: progress relayed, cancel passed on, commit decided here."""
        if not self._proc.is_alive():  # died with an earlier job: a fresh one serves this
            log.warning("restarting the generator process (it exited with %s)", self._proc.exitcode)
            self._start()
        self._cancel.value = 1 if job.cancel.is_set() else 0
        self._conn.send(("render", job.id, job.request, job.transport, job.frames, settings))
        while True:
            kind, value = self._receive(job)
            if kind == "progress":
                try:
                    progress(value)
                except Cancelled:
                    self._cancel.value = 1  # the child stops at its next step and says so
            elif kind == "commit":
                try:
                    job.commit()
                    self._conn.send(True)
                except Cancelled:
                    self._conn.send(False)
            elif kind == "done":
                published, speed = value
                self.speed.update(speed)
                return published
            elif kind == "cancelled":
                raise Cancelled(job.id)
            elif kind == "refused":
                raise JobRefused(*value)
            else:
                raise RuntimeError(value)

    def stop(self) -> None:
        """Ask the child to exit; terminate it if it does not within STOP_TIMEOUT_S."""
        if self._proc.is_alive():
            try:
                self._conn.send(("stop",))
            except OSError:
                pass
            self._proc.join(STOP_TIMEOUT_S)
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(STOP_TIMEOUT_S)


class _ChildJob:
    """What the Renderer uses of a Job, in the child: cancel read from the shared flag (or a
    server process that is gone), commit asked of the server process."""

    def __init__(self, job_id: str, request: Any, transport: Any, frames: int, conn: Connection,
                 cancel: Any, server_pid: int) -> None:
        self.id, self.request, self.transport, self.frames = job_id, request, transport, frames
        self._conn, self._cancel, self._server_pid = conn, cancel, server_pid

    def check_cancel(self) -> None:
        # a killed server leaves this process to its init: stop rather than write clips
        if self._cancel.value or os.getppid() != self._server_pid:
            raise Cancelled(self.id)

    def commit(self) -> None:
        try:
            self._conn.send(("commit", None))
            committed = self._conn.recv()
        except (EOFError, OSError):  # the server process is gone: nobody will publish this
            committed = False
        if not committed:
            raise Cancelled(self.id)


def _answer_checks(conn: Connection, model: Any) -> None:
    """The child's check thread: (serial, params) -> (serial, None or the refusal's text)."""
    while True:
        try:
            serial, params = conn.recv()
        except (EOFError, OSError):
            return
        try:
            model.check_generation_params(**params)
            refusal = None
        except ValueError as e:
            refusal = str(e)
        try:
            conn.send((serial, refusal))
        except OSError:
            return


def _child_main(conn: Connection, check_conn: Connection, cancel: Any, spec: Spec) -> None:
    """The child: build the Renderer, then serve warm-up and render requests until "stop"."""
    # a Ctrl-C (or a service manager's SIGTERM) reaches the whole process group: the server
    # process decides how the jobs end, then tells this one to stop
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    server_pid = os.getppid()
    logging.basicConfig(level=logging.INFO, format=spec.log_format)
    from engine import load_model
    from engine.inference_kernels import use_native_cpu_kernels
    from plugin_host.shm import ServerSegment

    from bridge.persistence import ClipStore
    from bridge.renderer import Renderer

    try:
        use_native_cpu_kernels()
        model = load_model(spec.model, provider=spec.provider)
        segment = ServerSegment.open(spec.segment_name)
        renderer = Renderer(model, spec.model, segment, ClipStore(spec.render_dir))
    except Exception as e:  # told to the server process, which exits with it
        user_mistake = isinstance(e, (ValueError, FileNotFoundError))  # a bad --model, say
        conn.send(("failed", (user_mistake, str(e) if user_mistake else f"{type(e).__name__}: {e}")))
        return
    threading.Thread(target=_answer_checks, args=(check_conn, model), name="bridge-checks",
                     daemon=True).start()
    conn.send(("ready", model_info(model)))
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            break
        if msg[0] == "stop":
            break
        try:
            if msg[0] == "warm_up":
                try:
                    renderer.warm_up()
                except Exception:
                    log.exception("warm-up failed; serving without it")
                conn.send(("speed", renderer.speed.snapshot()))
                continue
            _, job_id, request, transport, frames, settings = msg
            job = _ChildJob(job_id, request, transport, frames, conn, cancel, server_pid)
            conn.send(_render(renderer, job, settings, conn))
        except OSError:  # the server process is gone
            break
    segment.close(unlink=False)


def _render(renderer: Any, job: _ChildJob, settings: Any, conn: Connection) -> tuple[str, Any]:
    """One job in the child; the message that ends it."""
    last = [0.0]

    def progress(fraction: float) -> None:
        job.check_cancel()
        now = time.monotonic()
        if now - last[0] >= CHILD_PROGRESS_S or fraction >= 1.0:
            last[0] = now
            conn.send(("progress", fraction))

    try:
        published = renderer.render(job, settings, progress)
    except Cancelled:
        return "cancelled", None
    except JobRefused as e:
        return "refused", (str(e), e.code)
    except Exception as e:  # the server process answers the job "internal"
        log.exception("job %s failed", job.id)
        return "error", f"{type(e).__name__}: {e}"[:300]
    return "done", (published, renderer.speed.snapshot())
