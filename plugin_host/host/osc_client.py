"""An OSC client for every request of the bridge protocol (python-osc over one UDP socket)."""
from __future__ import annotations

import socket
import time
from dataclasses import dataclass

from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder

PREFIX = "/barforge/"


class RequestError(RuntimeError):
    """The server answered /barforge/error."""

    def __init__(self, job: str, code: str, message: str) -> None:
        super().__init__(f"job {job!r}: {code}: {message}")
        self.job, self.code, self.message = job, code, message


@dataclass(frozen=True)
class Done:
    """/barforge/done's arguments."""

    job: str
    slot: int
    frames: int
    sample_rate: int
    channels: int
    start_beat: float
    path: str


class OscClient:
    """Sends requests to the server and reads the replies that come back to this socket.

    Replies that arrive while waiting for another one are kept (`backlog`), so requests may be
    interleaved. Options are keyword arguments: ``generate("j", "drums", 4, seed=1, cfg=3.0)``.
    """

    def __init__(self, port: int = 9000, host: str = "127.0.0.1") -> None:
        self.server = (host, port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1" if host in ("127.0.0.1", "localhost") else "0.0.0.0", 0))
        self.backlog: list[tuple[str, list]] = []

    def send(self, address: str, *args) -> None:
        builder = OscMessageBuilder(address=address)
        for a in args:
            builder.add_arg(a)
        self.sock.sendto(builder.build().dgram, self.server)

    @staticmethod
    def _options(options: dict) -> list:
        return [x for key, value in options.items() for x in (key, value)]

    def ping(self) -> None:
        self.send(PREFIX + "ping")

    def transport(self, bpm: float, beats_per_bar: int, sample_rate: int) -> None:
        self.send(PREFIX + "transport", float(bpm), int(beats_per_bar), int(sample_rate))

    def capture(self, sample_rate: int) -> None:
        self.send(PREFIX + "capture", int(sample_rate))

    def generate(self, job: str, prompt: str, bars: int, **options) -> None:
        self.send(PREFIX + "generate", job, prompt, int(bars), *self._options(options))

    def continue_(self, job: str, bars: int, prompt: str | None = None, **options) -> None:
        head = [job, int(bars)] + ([prompt] if prompt else [])
        self.send(PREFIX + "continue", *head, *self._options(options))

    def cancel(self, job: str) -> None:
        self.send(PREFIX + "cancel", job)

    def status(self) -> None:
        self.send(PREFIX + "status")

    def wait_for(self, match, timeout: float) -> tuple[str, list]:
        """The first reply (address, args) for which match(address, args) holds."""
        for i, (address, args) in enumerate(self.backlog):
            if match(address, args):
                return self.backlog.pop(i)
        end = time.monotonic() + timeout
        while (left := end - time.monotonic()) > 0:
            self.sock.settimeout(min(left, 0.5))
            try:
                data, _ = self.sock.recvfrom(65536)
            except socket.timeout:
                continue
            msg = OscMessage(data)
            reply = (msg.address, list(msg.params))
            if match(*reply):
                return reply
            self.backlog.append(reply)
        raise TimeoutError(f"no reply from {self.server[0]}:{self.server[1]} within {timeout} s")

    def wait_pong(self, timeout: float = 30.0) -> tuple[int, str]:
        """Ping until the server answers; (protocol_version, server_version). TimeoutError
        naming the address and the whole wait when no server answers within ``timeout`` s."""
        end = time.monotonic() + timeout
        while True:
            self.ping()
            try:
                _, args = self.wait_for(lambda a, _: a == PREFIX + "pong",
                                        min(1.0, max(0.01, end - time.monotonic())))
                return int(args[0]), str(args[1])
            except (TimeoutError, ConnectionRefusedError):
                if time.monotonic() >= end:
                    host, port = self.server[:2]
                    raise TimeoutError(f"no barforge server answered a ping at {host}:{port} "
                                       f"within {timeout:g} s (is `barforge serve --port {port}` "
                                       "running?)") from None

    def wait_ack(self, what: str, timeout: float = 10.0) -> None:
        address, args = self.wait_for(
            lambda a, p: (a == PREFIX + "ack" and p[:1] == [what]) or
                         (a == PREFIX + "error" and p[:1] == [""]), timeout)
        if address.endswith("error"):
            raise RequestError(*[str(x) for x in args[:3]])

    def wait_done(self, job: str, timeout: float = 600.0, progress=None) -> Done:
        """Wait for the job's final reply; progress(fraction) is called on each progress."""
        while True:
            address, args = self.wait_for(lambda a, p: p[:1] == [job] and a in (
                PREFIX + "done", PREFIX + "error", PREFIX + "progress"), timeout)
            if address == PREFIX + "progress":
                if progress is not None:
                    progress(float(args[1]))
                continue
            if address == PREFIX + "error":
                raise RequestError(*[str(x) for x in args[:3]])
            return Done(str(args[0]), int(args[1]), int(args[2]), int(args[3]), int(args[4]),
                        float(args[5]), str(args[6]))

    def close(self) -> None:
        self.sock.close()
