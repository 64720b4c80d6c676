"""A real ``barforge serve`` in a subprocess, for the tests that talk to one over UDP and shm."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A UDP port on 127.0.0.1 nothing is bound to right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn_server(port: int, shm: str, render_dir: Path, log_path: Path, max_seconds: int,
                 *extra: str) -> subprocess.Popen:
    """``python -m bridge serve --model debug`` with its stderr appended to ``log_path`` (a pipe
    could fill up); the open log is ``proc.log``."""
    cmd = [sys.executable, "-m", "bridge", "serve", "--model", "debug", "--port", str(port),
           "--shm-name", shm, "--render-dir", str(render_dir), "--max-seconds", str(max_seconds),
           *extra]
    log = open(log_path, "a")
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stderr=log)
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
