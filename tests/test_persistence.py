"""The render dir (bridge/persistence.py): WAV before sidecar, leftovers of dead servers
removed at start, temporary files never opened through a planted link (issue 15, 11 and 12)."""
import os
import subprocess
import time

import numpy as np
import pytest

from bridge import persistence
from bridge.persistence import ClipStore

AUDIO = np.zeros((480, 2), np.float32)


def dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_the_wav_is_in_place_before_its_sidecar(tmp_path, monkeypatch):
    store = ClipStore(tmp_path)
    order, real_replace = [], os.replace

    def replace(src, dst):
        order.append(os.path.basename(dst))
        return real_replace(src, dst)

    monkeypatch.setattr(persistence.os, "replace", replace)
    wav = store.save(AUDIO, 48000, {"job": "a"})
    assert [n.rsplit(".", 1)[1] for n in order] == ["wav", "json"]
    assert wav.exists() and wav.with_suffix(".json").exists()


def test_start_removes_what_dead_servers_left_half_done(tmp_path):
    dead, live = dead_pid(), os.getppid()
    stem = lambda pid, n: f"clip-20260101-120000-{pid}-{n:05d}"  # noqa: E731
    files = {
        f"{stem(dead, 1)}.json": False,           # sidecar whose WAV was never renamed in
        f"{stem(dead, 2)}.wav": False,            # WAV whose sidecar was never written
        f".{stem(dead, 3)}.wav.0123abcd.part": False,
        f".{stem(dead, 4)}.wav.part": False,      # the old temporary name
        f"{stem(dead, 5)}.wav": True, f"{stem(dead, 5)}.json": True,   # a complete clip
        f"{stem(live, 6)}.json": True,            # a running server's clip being written
        f".{stem(live, 7)}.wav.0123abcd.part": True,
        "my-own-notes.json": True, "loop.wav": True,
    }
    for n in files:
        (tmp_path / n).write_bytes(b"x")
    ClipStore(tmp_path)
    assert {n for n in files if (tmp_path / n).exists()} == {n for n, keep in files.items() if keep}


def test_a_link_planted_at_a_temporary_name_is_never_followed(tmp_path, monkeypatch):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    render = tmp_path / "r"
    store = ClipStore(render)
    now = time.time()
    for dt in range(0, 4):  # every name the next save could pick, old scheme and new
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now + dt))
        for suffix in ("wav", "json"):
            stem = f"clip-{stamp}-{os.getpid()}-00001"
            (render / f".{stem}.{suffix}.part").symlink_to(victim)
            (render / f".{stem}.{suffix}.aaaaaaaaaaaaaaaa.part").symlink_to(victim)
    tokens = iter(["aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb", "aaaaaaaaaaaaaaaa", "cccccccccccccccc"])
    monkeypatch.setattr("secrets.token_hex", lambda n: next(tokens))
    wav = store.save(AUDIO, 48000, {"job": "a"})
    assert victim.read_text() == "precious"
    assert wav.exists() and not wav.is_symlink() and wav.stat().st_size > 44


def test_every_temporary_name_taken_is_an_error_not_an_overwrite(tmp_path, monkeypatch):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    store = ClipStore(tmp_path / "r")
    monkeypatch.setattr("secrets.token_hex", lambda n: "a" * 16)
    monkeypatch.setattr(store, "_new_name", lambda: "clip-20260101-120000-1-00001")
    (store.dir / ".clip-20260101-120000-1-00001.wav.aaaaaaaaaaaaaaaa.part").symlink_to(victim)
    with pytest.raises(FileExistsError, match="temporary names"):
        store.save(AUDIO, 48000, {"job": "a"})
    assert victim.read_text() == "precious" and not list(store.dir.glob("clip-*"))
