"""``barforge serve``: start the OSC bridge (see docs/PROTOCOL.md)."""
from __future__ import annotations

import argparse
import contextlib
import ipaddress
import logging
import math
import signal
import threading
from typing import Any

from bridge import osc_protocol

SLOT_RATE = 48000          # --max-seconds are counted at this rate (a 96 kHz clip gets half)
CAPTURE_RATE = 192000      # the capture ring holds --capture-seconds at the highest valid rate
HEARTBEAT_S = 0.5
DEFAULT_RENDER_DIR = "~/.local/share/barforge/clips"
LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"
ENGINE_SCHEME = "triton://"   # --engine triton://HOST:PORT (bridge/triton_engine.py)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``serve`` subcommand."""
    p = sub.add_parser("serve", help="run the OSC + shared-memory bridge for DAW hosts",
                       description="Serve clip generation over OSC/UDP; clips are published in a "
                                   "POSIX shared-memory segment and written as WAV files.")
    p.add_argument("--model", default=None,
                   help="'debug', 'debug-melody' (takes the melody option), 'default', a "
                        "HF/audiocraft model dir or an ONNX bundle dir (default: default); with "
                        "--engine triton:// the server's repository decides")
    p.add_argument("--engine", default="local", metavar="local|triton://HOST:PORT",
                   help="where generations run: 'local' (a child process of this server, the "
                        "default) or the 'barforge' model of a Triton Inference Server's gRPC "
                        "port (barforge export --triton writes its repository; docs/TRITON.md)")
    p.add_argument("--engine-wait", type=float, default=60.0, metavar="SECONDS",
                   help="with --engine triton://: how long to wait at start for the server's "
                        "model to be ready (default: 60)")
    p.add_argument("--provider", default=None,
                   help="onnxruntime execution provider for an ONNX bundle: cpu, cuda (or "
                        "CPUExecutionProvider, CUDAExecutionProvider); default: CUDA when it works, "
                        "else CPU. An error for PyTorch models. /barforge/status reports the one "
                        "in use.")
    p.add_argument("--preset", default=None, help="preset name (presets/*.json) or preset JSON file used "
                   "when a request names none")
    p.add_argument("--render-dir", default=DEFAULT_RENDER_DIR, help="where clips are written as WAV + JSON "
                   f"(default: {DEFAULT_RENDER_DIR})")
    p.add_argument("--shm-name", default="barforge", help="shared-memory segment name, at most 30 "
                   "characters (default: barforge, /dev/shm/barforge on Linux)")
    p.add_argument("--slots", type=int, default=8, help="clip slots in the segment (default: 8)")
    p.add_argument("--max-seconds", type=float, default=30.0,
                   help=f"slot capacity in seconds at {SLOT_RATE} Hz; the segment never grows "
                        "(default: 30)")
    p.add_argument("--capture-seconds", type=float, default=10.0,
                   help=f"capture ring length in seconds at {CAPTURE_RATE} Hz (default: 10)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind, IPv4 or IPv6 (e.g. ::1); "
                   "default: 127.0.0.1")
    p.add_argument("--port", type=int, default=9000, help="UDP port (default: 9000)")
    p.add_argument("--queue-size", type=int, default=8, help="jobs that may wait (default: 8); more "
                   "are answered 'busy'")
    p.add_argument("--no-warm-up", action="store_true",
                   help="skip timing each decoding mode at start (continuation then guesses its speed)")
    p.set_defaults(func=serve)


def _validate(args: argparse.Namespace) -> None:
    if not 1 <= args.slots <= 1024:
        raise ValueError(f"--slots {args.slots}: expected 1..1024")
    if not (math.isfinite(args.max_seconds) and 0 < args.max_seconds * SLOT_RATE < 2**32):
        raise ValueError(f"--max-seconds {args.max_seconds}: expected a positive number of seconds")
    if not (math.isfinite(args.capture_seconds) and 1 <= args.capture_seconds * CAPTURE_RATE < 2**32):
        raise ValueError(f"--capture-seconds {args.capture_seconds}: expected a positive number of seconds")
    if args.queue_size < 1:
        raise ValueError(f"--queue-size {args.queue_size}: expected at least 1")
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port {args.port}: expected 0..65535")
    if not (math.isfinite(args.engine_wait) and args.engine_wait >= 0):
        raise ValueError(f"--engine-wait {args.engine_wait}: expected a number of seconds")
    if args.engine != "local":
        parse_engine_url(args.engine)
        for flag, value in (("--model", args.model), ("--provider", args.provider)):
            if value is not None:
                raise ValueError(f"{flag} {value}: the Triton server's repository decides the "
                                 f"model with --engine {args.engine}; leave {flag} out")


def parse_engine_url(url: str) -> str:
    """``triton://HOST:PORT`` -> ``HOST:PORT`` (gRPC); ValueError naming the URL otherwise.
    Here, not beside the client, so that a mistaken flag is refused before anything heavy loads."""
    address = url[len(ENGINE_SCHEME):] if url.startswith(ENGINE_SCHEME) else ""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--engine {url!r}: expected 'local' or {ENGINE_SCHEME}HOST:PORT "
                         "(gRPC port)")
    return address


def serve(args: argparse.Namespace) -> int:
    """Run until SIGINT / SIGTERM; every accepted job is answered and the segment removed on
    the way out."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    log = logging.getLogger("bridge")
    _validate(args)
    from plugin_host.shm import SegmentInUse, ServerSegment

    from bridge.persistence import ClipStore
    from bridge.presets import load_presets, resolve_preset
    from bridge.server import MAX_CHANNELS, RECEIVE_BUFFER_BYTES, Bridge, OSCServer

    presets = load_presets()
    server_preset = resolve_preset(args.preset, presets)
    slot_frames = int(args.max_seconds * SLOT_RATE)
    # Callbacks run last first, so the way out is: answer every job while the socket is still
    # open, stop the network thread, end the generator process, stop the heartbeat, then
    # close the socket and remove the segment (nothing touches the mapping after that).
    with contextlib.ExitStack() as on_exit:
        # the port before the segment: a server that cannot listen never touches a segment
        server = OSCServer(args.host, args.port)
        on_exit.callback(server.server_close)
        store = ClipStore(args.render_dir)
        try:
            segment = ServerSegment.create(args.shm_name, args.slots, slot_frames, MAX_CHANNELS,
                                           int(args.capture_seconds * CAPTURE_RATE))
        except SegmentInUse as e:
            raise ValueError(f"--shm-name {args.shm_name}: {e}; stop that server or choose "
                             "another name") from None
        on_exit.callback(segment.close, unlink=True)
        stop = threading.Event()
        heartbeat = threading.Thread(target=_beat, args=(segment, stop), name="bridge-heartbeat",
                                     daemon=True)
        heartbeat.start()
        on_exit.callback(heartbeat.join)
        on_exit.callback(stop.set)
        generator = _engine(args, segment, store)
        on_exit.callback(generator.stop)
        provider = generator.model.provider   # a bundle's real onnxruntime provider
        bridge = Bridge(generator, provider, presets, server_preset, args.queue_size,
                        segment.layout.slot_capacity_frames, warm_up=not args.no_warm_up)
        if not ipaddress.ip_address(server.server_address[0]).is_loopback:
            log.warning("listening on %s: reachable from other machines, not only this one", args.host)
        if server.receive_buffer_bytes < RECEIVE_BUFFER_BYTES:
            log.warning("UDP receive buffer is %d bytes (asked for %d; raise net.core.rmem_max): "
                        "a burst of requests may lose some", server.receive_buffer_bytes,
                        RECEIVE_BUFFER_BYTES)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        bridge.jobs.start()
        server.serve_in_thread(bridge)
        on_exit.callback(server.shutdown)
        on_exit.callback(bridge.jobs.stop)
        log.info("serving protocol %d on %s port %d, model %s (%s), segment /%s: %d slots x %d "
                 "frames, render dir %s", osc_protocol.PROTOCOL_VERSION, server.server_address[0],
                 server.server_address[1], generator.model_name, provider, args.shm_name, args.slots,
                 slot_frames, store.dir)
        while not stop.wait(1.0):
            pass
        log.info("shutting down")
    return 0


def _engine(args: argparse.Namespace, segment: Any, store: Any) -> Any:
    """What runs the generations: the generator process, or a Triton server's model."""
    if args.engine == "local":
        from bridge.generator import GeneratorProcess, Spec
        return GeneratorProcess(Spec(args.model or "default", args.provider, args.shm_name,
                                     str(store.dir), LOG_FORMAT), segment)
    from bridge.triton_engine import TritonEngine
    return TritonEngine(parse_engine_url(args.engine), segment, store, args.engine_wait)


def _beat(segment: object, stop: threading.Event) -> None:
    while not stop.is_set():
        segment.beat_heartbeat()  # type: ignore[attr-defined]
        stop.wait(HEARTBEAT_S)
