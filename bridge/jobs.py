"""A bounded job queue with one worker thread, cancellation, status and shutdown.

The network thread only calls ``submit``, ``cancel`` and ``status`` (none of them blocks on
a generation); the worker thread runs one job at a time. A running job is cancelled through
its ``cancel`` event, which the job's progress callback checks at every decoding step, until
the job commits to its result (``Job.commit``): from then on it ends in ``done``, and a cancel
is answered after that ``done`` (``Job.after_final``). Every job gets exactly one final reply:
whoever sends it claims it first (``Job.claim_final``).
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


class JobRefused(Exception):
    """An accepted job that cannot be done with what the host provided (an empty slot named as
    the melody, say); it ends in ``/barforge/error`` with ``code``."""

    code = "bad_argument"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class NoCapture(JobRefused):
    """Continue (or a capture melody) with no or too little captured audio."""

    code = "no_capture"


class Finishing(Exception):
    """The job committed to its result (its clip is being published): too late to cancel."""

    def __init__(self, job: Job) -> None:
        super().__init__(job.id)
        self.job = job


class ShuttingDown(Exception):
    """The queue was stopped; it takes no new job (protocol code ``shutting_down``)."""


@dataclass
class Job:
    """One accepted generate / continue request and where its replies go."""

    id: str
    request: Any
    reply_to: tuple[Any, ...]  # the sender's socket address (IPv4 or IPv6)
    transport: Any
    settings: Any = None
    frames: int = 0          # the clip's exact length at the transport's rate, computed at accept
    accepted_at: float = field(default_factory=time.monotonic)
    cancel: threading.Event = field(default_factory=threading.Event)
    # the final error of a cancelled job: ("cancelled", ...) or ("shutting_down", ...)
    cancel_code: str = "cancelled"
    cancel_message: str = "cancelled by request"
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _committed: bool = False
    _final_claimed: bool = False
    _final_sent: bool = False
    _after_final: list[Callable[[], None]] = field(default_factory=list, repr=False)

    def check_cancel(self) -> None:
        """Raise ``Cancelled`` once the job has been cancelled."""
        if self.cancel.is_set():
            raise Cancelled(self.id)

    def request_cancel(self, code: str, message: str) -> bool:
        """Cancel unless the job committed already (then False); the first reason given wins."""
        with self._lock:
            if self._committed:
                return False
            if not self.cancel.is_set():
                self.cancel_code, self.cancel_message = code, message
                self.cancel.set()
            return True

    def commit(self) -> None:
        """The point of no return: raise ``Cancelled`` if cancelled, else refuse later cancels."""
        with self._lock:
            self.check_cancel()
            self._committed = True

    def claim_final(self) -> bool:
        """True once: for the one sender of the job's final reply."""
        with self._lock:
            claimed, self._final_claimed = self._final_claimed, True
            return not claimed

    def final_sent(self) -> None:
        """The final reply is out: run what waited for it (``after_final``)."""
        with self._lock:
            self._final_sent = True
            waiting, self._after_final = self._after_final, []
        for send in waiting:
            send()

    def after_final(self, send: Callable[[], None]) -> None:
        """Run ``send`` once the job's final reply is out (at once if it is)."""
        with self._lock:
            if not self._final_sent:
                self._after_final.append(send)
                return
        send()


class JobQueue:
    """FIFO of at most ``capacity`` waiting jobs plus the one running.

    ``run(job)`` executes a job on the worker thread and sends its own final reply;
    ``on_cancelled(job)`` sends the final error (``job.cancel_code``) of a job cancelled while
    queued, or left unfinished when ``stop`` gave up waiting for it. An exception escaping
    ``run`` is logged and handed to ``on_crash(job, exc)``.
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

    def stop(self, timeout: float = 10.0) -> bool:
        """Take no new job, end the queued ones (``shutting_down``), cancel the running one and
        wait (at most ``timeout`` s) for it to send its final reply; after that it is answered
        ``shutting_down`` here. True when the worker ended in time."""
        code, message = "shutting_down", "the server is shutting down"
        with self._cond:
            self._stopping = True
            queued, running = list(self._waiting), self._running
            self._waiting.clear()
            if running is not None:
                running.request_cancel(code, message)
            self._cond.notify_all()
        for job in queued:
            job.request_cancel(code, message)
            self._on_cancelled(job)
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self._thread.is_alive() and running is not None:
            running.cancel_code, running.cancel_message = code, message
            self._on_cancelled(running)
        return not self._thread.is_alive()

    def submit(self, job: Job, on_accept: Callable[[Job], None]) -> None:
        """Queue a job; raises ``ShuttingDown``, ``QueueFull`` or ``DuplicateJob``.

        ``on_accept(job)`` runs before the worker can see the job (so "accepted" is sent
        before any "progress").
        """
        with self._cond:
            if self._stopping:
                raise ShuttingDown(job.id)
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
        job stops at its next decoding step and its runner sends the final reply. Raises
        ``Finishing`` for a running job that committed to its result.
        """
        reason = ("cancelled", "cancelled by request")
        with self._cond:
            if self._running is not None and self._running.id == job_id:
                if not self._running.request_cancel(*reason):
                    raise Finishing(self._running)
                return self._running
            for job in self._waiting:
                if job.id == job_id:
                    self._waiting.remove(job)
                    job.request_cancel(*reason)
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
