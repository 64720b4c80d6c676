"""Clips persisted as WAV + JSON sidecar, each written to a temporary name and renamed.

File names are made here (a timestamp, the server's pid and a counter); nothing from a
request becomes part of a path. Temporary files are created exclusively (never through a
link planted at their name). The WAV is renamed into place before its sidecar, so a sidecar
always describes a complete WAV; a crash leaves at most ``*.part`` files and a WAV without its
sidecar, which the next server start removes (only those of servers no longer running).
"""
from __future__ import annotations

import itertools
import json
import os
import re
import secrets
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

PART_SUFFIX = ".part"
# clip-<date>-<time>-<pid>-<n>.{wav,json}, and .<that name>.<random>.part while being written
CLIP_NAME = re.compile(r"\.?clip-\d{8}-\d{6}-(?P<pid>\d+)-\d+\.(wav|json)((\.[0-9a-f]+)?\.part)?")
_CREATE_TRIES = 16
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _create_exclusive(path: Path) -> tuple[Path, int]:
    """A new temporary file beside ``path``: (its path, an fd open for writing).

    O_EXCL with O_NOFOLLOW: a file or link already at the name is never opened, written or
    followed; another random name is tried instead.
    """
    for _ in range(_CREATE_TRIES):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}{PART_SUFFIX}")
        try:
            return tmp, os.open(tmp, _CREATE_FLAGS, 0o644)
        except FileExistsError:
            continue
    raise FileExistsError(f"{_CREATE_TRIES} temporary names beside {path} were all taken")


def _write_atomically(path: Path, write: Any) -> None:
    tmp, fd = _create_exclusive(path)
    try:
        with open(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _pid_running(pid: int) -> bool:
    """Whether another process with this pid runs (this process is not writing clips yet)."""
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_leftovers(render_dir: Path) -> list[Path]:
    """Remove what dead servers left half-done: temporary files and clips missing their
    WAV or their sidecar. Files of running servers and other files are left alone."""
    removed = []
    for entry in render_dir.iterdir():
        m = CLIP_NAME.fullmatch(entry.name)
        if m is None or _pid_running(int(m["pid"])):
            continue
        partner = entry.with_suffix(".json" if entry.suffix == ".wav" else ".wav")
        if entry.name.endswith(PART_SUFFIX) or not partner.exists():
            entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


class ClipStore:
    """The render dir: ``save(audio, sample_rate, metadata) -> absolute WAV path``."""

    def __init__(self, render_dir: str | Path) -> None:
        self.dir = Path(render_dir).expanduser().resolve()
        self.dir.mkdir(parents=True, exist_ok=True)
        remove_leftovers(self.dir)
        self._counter = itertools.count(1)
        self._lock = threading.Lock()

    def _new_name(self) -> str:
        with self._lock:
            n = next(self._counter)
        return f"clip-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{n:05d}"

    def save(self, audio: np.ndarray, sample_rate: int, metadata: dict[str, Any]) -> Path:
        """Write [N, C] float32 audio as a 32-bit float WAV and its sidecar; both complete on return.

        The WAV is renamed into place first: a sidecar never exists without its complete WAV.
        """
        stem = self._new_name()
        wav_path, json_path = self.dir / f"{stem}.wav", self.dir / f"{stem}.json"
        sidecar = {**metadata, "wav": wav_path.name, "sample_rate": sample_rate,
                   "frames": int(audio.shape[0]), "channels": int(audio.shape[1])}
        _write_atomically(wav_path, lambda f: sf.write(f, audio, sample_rate, format="WAV",
                                                     subtype="FLOAT"))
        try:
            _write_atomically(json_path, lambda f: f.write(
                json.dumps(sidecar, indent=2, sort_keys=True).encode("utf-8")))
        except BaseException:
            wav_path.unlink(missing_ok=True)
            raise
        return wav_path

    def discard(self, wav_path: Path) -> None:
        """Remove a saved clip (sidecar first: a sidecar never outlives its WAV)."""
        wav_path.with_suffix(".json").unlink(missing_ok=True)
        wav_path.unlink(missing_ok=True)
