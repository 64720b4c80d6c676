"""A bounded job queue with one worker thread, cancellation and status.

The network thread only calls ``submit``, ``cancel`` and ``status`` (none of them blocks on
a generation); the worker thread runs one job at a time. A running job is cancelled through
its ``cancel`` event, which the job's progress callback checks at every decoding step.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

log = logging.getLogger("bridge.jobs")


class QueueFull(Exception):
    """The queue holds ``capacity`` jobs already (protocol code ``busy``)."""


class DuplicateJob(Exception):
    """A job with this id is queued or running."""


class Cancelled(Exception):
    """Raised from a progress callback to stop a running job within one decoding step."""


@dataclass
class Job:
    """One accepted generate / continue request and where its replies go."""

    id: str
    request: Any
    reply_to: tuple[str, int]
    transport: Any
    settings: Any = None
    frames: int = 0          # the clip's exact length at the transport's rate, computed at accept
    accepted_at: float = field(default_factory=time.monotonic)
    cancel: threading.Event = field(default_factory=threading.Event)

    def check_cancel(self) -> None:
        """Raise ``Cancelled`` once the job has been cancelled."""
        if self.cancel.is_set():
            raise Cancelled(self.id)


class JobQueue:
    """FIFO of at most ``capacity`` waiting jobs plus the one running.

    ``run(job)`` executes a job on the worker thread and sends its own final reply;
    ``on_cancelled(job)`` sends the final "cancelled" error of a job cancelled while queued.
    An exception escaping ``run`` is logged and handed to ``on_crash(job, exc)``.
    """

    def __init__(self, capacity: int, run: Callable[[Job], None],
                 on_cancelled: Callable[[Job], None],
                 on_crash: Callable[[Job, BaseException], None],
                 setup: Callable[[], None] | None = None) -> None:
        if capacity < 1:
            raise ValueError(f"queue capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._run, self._on_cancelled, self._on_crash = run, on_cancelled, on_crash
        self._setup = setup
        self._waiting: deque[Job] = deque()
        self._running: Job | None = None
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._work, name="bridge-worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Cancel everything and wait (at most ``timeout`` s) for the worker to finish."""
        with self._cond:
            self._stopping = True
            if self._running is not None:
                self._running.cancel.set()
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def submit(self, job: Job, on_accept: Callable[[Job], None]) -> None:
        """Queue a job; raises ``QueueFull`` or ``DuplicateJob``.

        ``on_accept(job)`` runs before the worker can see the job (so "accepted" is sent
        before any "progress").
        """
        with self._cond:
            if (self._running is not None and self._running.id == job.id) or \
                    any(j.id == job.id for j in self._waiting):
                raise DuplicateJob(job.id)
            if len(self._waiting) >= self.capacity:
                raise QueueFull(job.id)
            on_accept(job)
            self._waiting.append(job)
            self._cond.notify()

    def cancel(self, job_id: str) -> Job | None:
        """Cancel a queued or running job; returns it, or None when no such job is live.

        A queued job is removed at once and ``on_cancelled`` sends its final reply; a running
        job stops at its next decoding step and its runner sends the final reply.
        """
        with self._cond:
            if self._running is not None and self._running.id == job_id:
                self._running.cancel.set()
                return self._running
            for job in self._waiting:
                if job.id == job_id:
                    self._waiting.remove(job)
                    job.cancel.set()
                    break
            else:
                return None
        self._on_cancelled(job)
        return job

    def status(self) -> tuple[int, str]:
        """(number of queued jobs, id of the running job or "")."""
        with self._cond:
            return len(self._waiting), self._running.id if self._running is not None else ""

    def _work(self) -> None:
        if self._setup is not None:
            try:
                self._setup()
            except Exception:
                log.exception("worker set-up failed; serving without it")
        while True:
            with self._cond:
                while not self._waiting and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                job = self._running = self._waiting.popleft()
            try:
                self._run(job)
            except BaseException as e:  # the worker must outlive any job
                log.exception("job %s crashed", job.id)
                self._on_crash(job, e)
            finally:
                with self._cond:
                    self._running = None
