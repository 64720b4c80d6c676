"""Clips persisted as WAV + JSON sidecar, each written to a temporary name and renamed.

File names are made here (a timestamp, the server's pid and a counter); nothing from a
request becomes part of a path. A crash leaves at most ``*.part`` files, which the next server
start removes; a ``*.wav`` in the render dir is always complete.
"""
from __future__ import annotations

import itertools
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

PART_SUFFIX = ".part"


def _write_atomically(path: Path, write: Any) -> None:
    tmp = path.with_name(f".{path.name}{PART_SUFFIX}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class ClipStore:
    """The render dir: ``save(audio, sample_rate, metadata) -> absolute WAV path``."""

    def __init__(self, render_dir: str | Path) -> None:
        self.dir = Path(render_dir).expanduser().resolve()
        self.dir.mkdir(parents=True, exist_ok=True)
        for stale in self.dir.glob(f".*{PART_SUFFIX}"):  # left by a killed server
            stale.unlink(missing_ok=True)
        self._counter = itertools.count(1)
        self._lock = threading.Lock()

    def _new_name(self) -> str:
        with self._lock:
            n = next(self._counter)
        return f"clip-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{n:05d}"

    def save(self, audio: np.ndarray, sample_rate: int, metadata: dict[str, Any]) -> Path:
        """Write [N, C] float32 audio as a 32-bit float WAV and its sidecar; both complete on return.

        The sidecar is renamed into place first, so a WAV never exists without its sidecar.
        """
        stem = self._new_name()
        wav_path, json_path = self.dir / f"{stem}.wav", self.dir / f"{stem}.json"
        sidecar = {**metadata, "wav": wav_path.name, "sample_rate": sample_rate,
                   "frames": int(audio.shape[0]), "channels": int(audio.shape[1])}
        _write_atomically(json_path, lambda f: f.write(
            json.dumps(sidecar, indent=2, sort_keys=True).encode("utf-8")))
        try:
            _write_atomically(wav_path, lambda f: sf.write(f, audio, sample_rate, format="WAV",
                                                         subtype="FLOAT"))
        except BaseException:
            json_path.unlink(missing_ok=True)
            raise
        return wav_path
