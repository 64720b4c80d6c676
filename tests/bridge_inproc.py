"""A real ``Bridge`` in this process (a debug model, real segment, real render dir, real UDP
sockets) for tests that drive ``call_handlers_for_packet`` datagram by datagram."""
from __future__ import annotations

import itertools
import os
import socket
import time
from pathlib import Path

from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder


def dgram(address: str, *args) -> bytes:
    """One OSC message; a (value, tag) tuple gives an explicit type tag."""
    b = OscMessageBuilder(address=address)
    for a in args:
        if isinstance(a, tuple):
            b.add_arg(*a)
        else:
            b.add_arg(a)
    return b.build().dgram


_SEGMENTS = itertools.count()  # two InProcess bridges alive at once get two segments


class InProcess:
    """The bridge, its segment and store, and a client socket its replies go to."""

    def __init__(self, render_dir: Path, queue_size: int = 2, model: str = "debug",
                 capture_frames: int = 20000) -> None:
        from engine import load_model
        from plugin_host.shm import ServerSegment

        from bridge.persistence import ClipStore
        from bridge.presets import load_presets, resolve_preset
        from bridge.renderer import Renderer
        from bridge.server import MAX_CHANNELS, Bridge

        presets = load_presets()
        self.store = ClipStore(render_dir)
        self.segment = ServerSegment.create(f"bfin{os.getpid()}-{next(_SEGMENTS)}", 4, 48000 * 40,
                                            MAX_CHANNELS, capture_frames)
        self.renderer = Renderer(load_model(model), model, self.segment, self.store)
        self.bridge = Bridge(self.renderer, "torch", presets, resolve_preset(None, presets),
                             queue_size, self.segment.layout.slot_capacity_frames, warm_up=False)
        self.server_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.server_sock.bind(("127.0.0.1", 0))
        self.bridge.sock = self.server_sock
        self.client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 2**20)
        self.client.bind(("127.0.0.1", 0))
        self.addr = self.client.getsockname()

    def handle(self, data: bytes) -> None:
        """One datagram from the client, handled synchronously (its replies are queued on
        the client socket when this returns: loopback delivery is immediate)."""
        self.bridge.call_handlers_for_packet(data, self.addr)

    def drain(self) -> list[tuple[str, list]]:
        """The replies waiting on the client socket."""
        out = []
        while True:
            try:
                data = self.client.recv(65536, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return out
            m = OscMessage(data)
            out.append((m.address, list(m.params)))

    def until_final(self, job: str, timeout: float = 120.0) -> list[tuple[str, list]]:
        """Replies until ``job``'s final done / error (and a moment after, to catch a second)."""
        seen, end, final_at = [], time.monotonic() + timeout, None
        while time.monotonic() < end and (final_at is None or time.monotonic() < final_at + 1.0):
            got = self.drain()
            seen += got
            if final_at is None and any(a in ("/barforge/done", "/barforge/error") and p[:1] == [job]
                                        for a, p in got):
                final_at = time.monotonic()
            time.sleep(0.01)
        return seen

    def close(self) -> None:
        self.bridge.jobs.stop()
        self.server_sock.close()
        self.client.close()
        self.segment.close()
