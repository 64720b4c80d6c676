"""The OSC side of the bridge: a UDP server whose network thread validates, enqueues, answers.

``Bridge.call_handlers_for_packet(data, addr)`` (python-osc's dispatcher entry point) handles
one datagram without blocking: protocol parsing is in bridge/osc_protocol.py, generations run
on the job queue's worker (bridge/jobs.py), which hands them to the renderer: ``barforge serve``
gives it a GeneratorProcess (bridge/generator.py: the model in a child process, so the network
thread never waits for it) or, with ``--engine triton://``, a TritonEngine (bridge/
triton_engine.py: the model on a Triton server); tests may give it a Renderer in this process. Replies go to the
sender.
"""
from __future__ import annotations

import logging
import socket
import socketserver
import threading
import time
from typing import Any

from bridge import osc_protocol as proto
from bridge.clip_render import SEAM_MARGIN_S
from bridge.generation import resolve_settings
from bridge.jobs import (Cancelled, DuplicateJob, Finishing, Job, JobQueue, JobRefused, QueueFull,
                         ShuttingDown)
from bridge.presets import Preset
from bridge.generator import GeneratorProcess
from bridge.renderer import Renderer
from bridge.triton_engine import TritonEngine
from engine.tempo import Tempo

log = logging.getLogger("bridge")
SERVER_VERSION = "barforge-0.1.0"
PROGRESS_INTERVAL_S = 0.05
MAX_CHANNELS = 2
# A burst of 1,000 requests (~1 KiB of kernel memory each) waits here instead of being dropped;
# the Linux default (212,992 bytes) lost a third of such a burst.
RECEIVE_BUFFER_BYTES = 4 * 2**20
Address = tuple[Any, ...]  # (host, port) for IPv4, (host, port, flowinfo, scope_id) for IPv6


class Bridge:
    """Server state (transport, capture rate, job queue) and the handling of every request."""

    def __init__(self, renderer: Renderer | GeneratorProcess | TritonEngine, provider: str, presets: dict[str, Preset],
                 server_preset: Preset, queue_size: int, slot_capacity_frames: int,
                 warm_up: bool = True) -> None:
        self.renderer, self.provider = renderer, provider
        self.presets, self.server_preset = presets, server_preset
        self.slot_capacity_frames = slot_capacity_frames
        self.transport: proto.Transport | None = None
        self.capture_rate: int | None = None
        self.sock: socket.socket | None = None
        modes = tuple(renderer.model.supported_modes)
        self.default_mode = "ar" if "ar" in modes else modes[0]
        self.jobs = JobQueue(queue_size, self._run, self._send_cancelled_final, self._crashed,
                             setup=renderer.warm_up if warm_up else None)

    # -- network thread -------------------------------------------------------------------

    def send(self, addr: Address, datagram: bytes) -> None:
        """Send one reply; a vanished client never disturbs the server."""
        try:
            assert self.sock is not None
            self.sock.sendto(datagram, addr)
        except OSError as e:
            log.warning("reply to %s failed: %s", addr, e)

    def call_handlers_for_packet(self, data: bytes, addr: Address) -> list[Any]:
        """Handle one datagram (python-osc's dispatcher signature); replies are sent here."""
        for item in proto.parse_packet(data, self.presets.keys()):
            try:
                reply = item if isinstance(item, proto.ErrorReply) else self._handle(item, addr)
            except Exception as e:  # no datagram, however malformed, stops the server
                log.exception("request from %s failed", addr)
                reply = proto.ErrorReply(getattr(item, "job", ""), "internal", str(e)[:200])
            if isinstance(reply, proto.ErrorReply):
                self.send(addr, proto.error(reply))
            elif reply is not None:
                self.send(addr, reply)
        return []

    def _handle(self, req: proto.Request, addr: Address) -> bytes | proto.ErrorReply | None:
        P = proto.PREFIX
        if isinstance(req, proto.Ping):
            return proto.build(P + "pong", proto.PROTOCOL_VERSION, SERVER_VERSION)
        if isinstance(req, proto.Status):
            queued, running = self.jobs.status()
            return proto.build(P + "status", queued, running, self.renderer.model_name, self.provider)
        if isinstance(req, proto.Transport):
            self.transport = req
            return proto.build(P + "ack", "transport")
        if isinstance(req, proto.Capture):
            self.renderer.segment.reset_capture(req.sample_rate)
            self.capture_rate = req.sample_rate
            return proto.build(P + "ack", "capture")
        if isinstance(req, proto.Cancel):
            try:
                job = self.jobs.cancel(req.job)
            except Finishing as late:
                # the clip is being published: answer after the job's done, so no host ever
                # sees an error for this job before its final reply
                late.job.after_final(lambda: self.send(addr, proto.error(proto.ErrorReply(
                    req.job, "unknown_job", f"job {req.job!r} finished before the cancel arrived"))))
                return None
            if job is None:
                return proto.ErrorReply(req.job, "unknown_job", f"no queued or running job {req.job!r}")
            return proto.build(P + "cancelled", req.job)
        return self._accept(req, addr)

    def _accept(self, req: proto.Generate | proto.Continue, addr: Address) -> proto.ErrorReply | None:
        t = self.transport
        if t is None:
            return proto.ErrorReply(req.job, "no_transport", "send /barforge/transport before asking for clips")
        frames = Tempo(t.bpm, t.beats_per_bar).frames(req.bars, t.sample_rate)
        if frames > self.slot_capacity_frames:
            return proto.ErrorReply(req.job, "too_long", f"{req.bars} bars at {float(t.bpm)} bpm are {frames} "
                                    f"frames; a slot holds {self.slot_capacity_frames}")
        if isinstance(req, proto.Continue) and self.capture_rate is None:
            return proto.ErrorReply(req.job, "no_capture", "send /barforge/capture and write audio first")
        refused = self._refuse_melody(req.job, req.options)
        if refused is not None:
            return refused
        try:
            settings = resolve_settings(self.renderer.model, req.prompt or "",
                                        Tempo(t.bpm, t.beats_per_bar), req.options,
                                        self.server_preset, self.presets, self._mode_for(req),
                                        MAX_CHANNELS, frames / t.sample_rate + SEAM_MARGIN_S)
        except ValueError as e:
            return proto.ErrorReply(req.job, "bad_argument", str(e))
        job = Job(req.job, req, addr, t, settings=settings, frames=frames)
        try:
            self.jobs.submit(job, lambda j: self.send(addr, proto.build(proto.PREFIX + "accepted", j.id)))
        except ShuttingDown:
            return proto.ErrorReply(req.job, "shutting_down", "the server is shutting down")
        except QueueFull:
            return proto.ErrorReply(req.job, "busy", f"the queue holds {self.jobs.capacity} jobs already")
        except DuplicateJob:
            return proto.ErrorReply(req.job, "bad_argument", f"job {req.job!r} is already queued or running")
        return None

    def _refuse_melody(self, job: str, options: proto.Options) -> proto.ErrorReply | None:
        """The error for a melody option this model or session cannot serve, else None."""
        if options.melody is None:
            return None
        if not getattr(self.renderer.model, "is_melody", False):
            return proto.ErrorReply(job, "bad_argument", f"option melody: model "
                                    f"{self.renderer.model_name!r} takes no melody (no chroma "
                                    "input); serve a MusicGen-Melody model")
        if options.melody == "capture" and self.capture_rate is None:
            return proto.ErrorReply(job, "no_capture", "option melody capture: send "
                                    "/barforge/capture and write audio first")
        n_slots = self.renderer.segment.layout.n_slots
        if options.melody_slot is not None and options.melody_slot >= n_slots:
            return proto.ErrorReply(job, "bad_argument", f"option melody_slot must be in "
                                    f"0..{n_slots - 1}, got {options.melody_slot}")
        return None

    def _mode_for(self, req: proto.Generate | proto.Continue) -> str:
        """Generations default to AR; continuations to the mode measured fastest here."""
        if isinstance(req, proto.Continue):
            return self.renderer.speed.fastest(tuple(self.renderer.model.supported_modes))
        return self.default_mode

    # -- worker thread --------------------------------------------------------------------

    def _final(self, job: Job, datagram: bytes) -> None:
        """Send the job's one final reply (done or error); any later one is dropped."""
        if job.claim_final():
            self.send(job.reply_to, datagram)
            job.final_sent()

    def _send_cancelled_final(self, job: Job) -> None:
        self._final(job, proto.error(proto.ErrorReply(job.id, job.cancel_code, job.cancel_message)))
        log.info("job %s ended while queued: %s", job.id, job.cancel_code)

    def _crashed(self, job: Job, e: BaseException) -> None:
        self._final(job, proto.error(proto.ErrorReply(job.id, "internal", f"{type(e).__name__}: {e}"[:300])))

    def _run(self, job: Job) -> None:
        t0 = time.monotonic()
        last = [0.0]

        def progress(fraction: float) -> None:
            job.check_cancel()
            now = time.monotonic()
            if now - last[0] >= PROGRESS_INTERVAL_S:
                last[0] = now
                self.send(job.reply_to, proto.build(proto.PREFIX + "progress", job.id, float(fraction)))

        kind = "continue" if isinstance(job.request, proto.Continue) else "generate"
        s, t = job.settings, job.transport
        head = (f"job {job.id} {kind} bars={job.request.bars} bpm={float(t.bpm):g} meter={t.beats_per_bar} "
                f"sr={t.sample_rate} mode={s.mode} seed={s.seed} preset={s.preset}")
        try:
            progress(0.0)
            done = self.renderer.render(job, s, progress)
        except Cancelled:
            self._final(job, proto.error(proto.ErrorReply(job.id, job.cancel_code, job.cancel_message)))
            log.info("%s: %s after %.2f s", head, job.cancel_code, time.monotonic() - t0)
            return
        except JobRefused as e:
            self._final(job, proto.error(proto.ErrorReply(job.id, e.code, str(e))))
            log.info("%s: %s (%s)", head, e.code, e)
            return
        self.send(job.reply_to, proto.build(proto.PREFIX + "progress", job.id, 1.0))
        self._final(job, proto.build(proto.PREFIX + "done", job.id, done.slot, done.frames,
                                     done.sample_rate, done.channels, float(done.start_beat), done.path))
        left = "" if done.bar_fraction_left is None else \
            f" start_beat={done.start_beat:g} bar_left_at_publish={done.bar_fraction_left:.3f}"
        log.info("%s: done slot=%d frames=%d in %.2f s%s -> %s", head, done.slot, done.frames,
                 time.monotonic() - t0, left, done.path)


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.server.bridge.call_handlers_for_packet(self.request[0], self.client_address)  # type: ignore[attr-defined]


def resolve(host: str, port: int) -> tuple[socket.AddressFamily, tuple[Any, ...]]:
    """The address family and socket address a --host / --port pair binds (IPv4 or IPv6;
    '' means every interface). ValueError naming the host when it does not resolve."""
    try:
        family, _, _, _, sockaddr = socket.getaddrinfo(host or None, port, type=socket.SOCK_DGRAM,
                                                       flags=socket.AI_PASSIVE)[0]
    except (socket.gaierror, UnicodeError) as e:
        raise ValueError(f"--host {host!r}: {e}; expected an IP address or host name") from None
    return family, sockaddr


class OSCServer(socketserver.UDPServer):
    """A plain single-threaded UDP server: the handler never blocks, so one thread is enough.

    Unlike python-osc's server it answers datagrams that do not look like OSC too
    (``bad_argument``), reads datagrams up to the UDP maximum, binds IPv6 addresses as well
    as IPv4 ones, and asks for a receive buffer large enough that a burst of requests waits
    in the kernel instead of being dropped there.
    """

    max_packet_size = 65535
    allow_reuse_address = False
    bridge: Bridge

    def __init__(self, host: str, port: int) -> None:
        self.address_family, address = resolve(host, port)
        try:
            super().__init__(address, _Handler)
        except OSError as e:
            raise ValueError(f"cannot listen on {host or '*'} port {port}: {e.strerror}") from None
        self.receive_buffer_bytes = self.socket.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)

    def server_bind(self) -> None:
        _enlarge_receive_buffer(self.socket)
        super().server_bind()

    def serve_in_thread(self, bridge: Bridge) -> threading.Thread:
        """Answer datagrams with ``bridge`` on a daemon thread."""
        self.bridge = bridge
        bridge.sock = self.socket
        thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.2},
                                  name="bridge-osc", daemon=True)
        thread.start()
        return thread


def _enlarge_receive_buffer(sock: socket.socket) -> None:
    """Ask for RECEIVE_BUFFER_BYTES; the kernel caps SO_RCVBUF at net.core.rmem_max, which
    SO_RCVBUFFORCE may pass where the process is allowed to (CAP_NET_ADMIN)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES)
    force = getattr(socket, "SO_RCVBUFFORCE", None)
    if force is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, RECEIVE_BUFFER_BYTES)
        except OSError:
            pass  # not permitted: the capped size stands, and serve() reports it
