"""A real ``barforge serve`` in a subprocess, and a host that talks to it over UDP, for the
tests that talk to one over UDP and shm."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from pythonosc.osc_message import OscMessage
from pythonosc.udp_client import SimpleUDPClient

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A UDP port on 127.0.0.1 nothing is bound to right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn_server(port: int, shm: str, render_dir: Path, log_path: Path, max_seconds: int,
                 *extra: str, model: str | None = "debug") -> subprocess.Popen:
    """``python -m bridge serve --model debug`` (no --model when ``model`` is None) with its
    stderr appended to ``log_path`` (a pipe could fill up); the open log is ``proc.log``."""
    cmd = [sys.executable, "-m", "bridge", "serve", *(["--model", model] if model else []),
           "--port", str(port), "--shm-name", shm, "--render-dir", str(render_dir),
           "--max-seconds", str(max_seconds), *extra]
    log = open(log_path, "a")
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": path}, stderr=log)
    proc.log = log
    return proc


def terminate_server(proc: subprocess.Popen) -> None:
    """SIGTERM, 30 s for a clean exit, then kill; the log is closed either way."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.log.close()


TIMEOUT = 120.0


class Host:
    """A python-osc client that also reads the replies sent back to its port."""

    def __init__(self, port):
        self.client = SimpleUDPClient("127.0.0.1", port)
        self.port = port
        self.backlog = []

    def send(self, address, *args):
        self.client.send_message(address, list(args))

    def send_raw(self, data):
        self.client._sock.sendto(data, ("127.0.0.1", self.port))

    def replies(self, until, timeout=TIMEOUT):
        """Replies (address, params) up to and including the first for which until() holds."""
        seen, end = [], time.monotonic() + timeout
        while time.monotonic() < end:
            if self.backlog:
                item = self.backlog.pop(0)
            else:
                data = self.client.receive(timeout=0.5)  # b"" on timeout
                if not data:
                    continue
                m = OscMessage(data)
                item = (m.address, list(m.params))
            seen.append(item)
            if until(*item):
                return seen
        raise TimeoutError(f"no reply matched; saw {seen[-5:]}")

    def job_replies(self, job, timeout=TIMEOUT):
        """Every reply about ``job`` until its final done / error; other replies are kept."""
        mine, others = [], []
        for item in self.replies(lambda a, p: a in ("/barforge/done", "/barforge/error") and p[:1] == [job],
                                 timeout):
            (mine if item[1][:1] == [job] else others).append(item)
        self.backlog.extend(others)
        return mine

    def one(self, address, timeout=10.0):
        return self.replies(lambda a, p: a == address, timeout)[-1][1]


def start_server(shm, render_dir, port, *extra, model="debug", max_seconds=40, timeout=TIMEOUT):
    """``spawn_server`` and a ``Host`` on its port, once it answers ping."""
    proc = spawn_server(port, shm, render_dir, Path(render_dir).parent / f"server-{shm}-{port}.log",
                        max_seconds, *extra, model=model)
    host = Host(port)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert proc.poll() is None, f"server exited: {Path(proc.log.name).read_text()[-2000:]}"
        host.send("/barforge/ping")
        try:
            host.one("/barforge/pong", 1.0)
            return proc, host
        except TimeoutError:
            pass
    proc.kill()
    raise TimeoutError("server never answered ping")


def stop_server(proc, shm):
    """SIGTERM; the segment must be gone after it."""
    terminate_server(proc)
    assert not os.path.exists(f"/dev/shm/{shm}"), "segment left behind after SIGTERM"
