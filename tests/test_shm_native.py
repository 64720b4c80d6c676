"""The C shared-memory library through its Python wrappers: layout, attach errors, capture
ring wrap, and the seqlock under a concurrent writer (C reader in another process)."""
from __future__ import annotations

import os
import struct
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest

from plugin_host.native import HERE as NATIVE_DIR
from plugin_host.shm import CaptureWindow, HostSegment, SegmentError, ServerSegment


@pytest.fixture
def name(request):
    n = f"bft{os.getpid()}{request.node.name[-8:]}".replace("[", "").replace("]", "")[:30]
    yield n
    if os.path.exists(f"/dev/shm/{n}"):
        os.unlink(f"/dev/shm/{n}")


def align64(x: int) -> int:
    return (x + 63) // 64 * 64


def test_layout_follows_the_protocol_formulas(name):
    with ServerSegment.create(name, 5, 1001, 2, 3 * 8192 + 7) as seg:
        L = seg.layout
        assert L.slot_capacity_frames == 1008 and L.slot_capacity_frames >= 1001
        assert L.slot_table_offset == 256
        assert L.slot_data_offset == align64(256 + 5 * 128)
        assert L.slot_stride_bytes == L.slot_capacity_frames * 2 * 4
        assert L.capture_offset == align64(L.slot_data_offset + 5 * L.slot_stride_bytes)
        assert L.total_bytes >= L.capture_offset + 64 + (3 * 8192 + 7) * 2 * 4
        for off in (L.slot_table_offset, L.slot_data_offset, L.capture_offset,
                    *(L.slot_data_offset + i * L.slot_stride_bytes for i in range(5))):
            assert off % 64 == 0
        raw = Path(f"/dev/shm/{name}").read_bytes()
        assert os.stat(f"/dev/shm/{name}").st_mode & 0o777 == 0o600
        assert len(raw) == L.total_bytes
        assert raw[:8] == b"BARFORGE"
        assert struct.unpack_from("<5I", raw, 8) == (1, 256, 5, L.slot_capacity_frames, 2)
        assert struct.unpack_from("<3Q", raw, 32) == (L.slot_table_offset, L.slot_data_offset,
                                                      L.capture_offset)
        assert struct.unpack_from("<Q", raw, 64)[0] == L.total_bytes
        assert struct.unpack_from("<2I", raw, L.capture_offset + 16) == (3 * 8192 + 7, 2)


def test_published_clip_reads_back_with_its_metadata_at_the_protocol_offsets(name):
    with ServerSegment.create(name, 3, 500, 2, 10000) as srv, HostSegment.attach(name) as host:
        assert host.read_slot(0) is None and host.newest_slot() is None
        clips = [np.random.default_rng(i).standard_normal((100 + i, 1 + i % 2)).astype(np.float32)
                 for i in range(4)]
        slots = [srv.publish(c, sample_rate=44100, bars=2, bpm=97.5, beats_per_bar=3,
                             start_beat=8.0, flags=1, job_id=f"job-{i}") for i, c in enumerate(clips)]
        assert slots == [0, 1, 2, 0]  # least recently published slot is reused
        assert host.publish_count() == 4 and host.newest_slot() == 0
        clip = host.read_slot(0)
        assert clip.job_id == "job-3" and clip.frames == 103 and clip.channels == 2
        assert (clip.sample_rate, clip.bars, clip.bpm, clip.beats_per_bar) == (44100, 2, 97.5, 3)
        assert (clip.flags, clip.start_beat) == (1, 8.0)
        np.testing.assert_array_equal(clip.audio, clips[3])
        raw = Path(f"/dev/shm/{name}").read_bytes()
        entry = srv.layout.slot_table_offset + 128 * 2
        assert struct.unpack_from("<Q4Id2Id", raw, entry) == (2, 102, 44100, 1, 2, 97.5, 3, 1, 8.0)
        assert raw[entry + 48: entry + 112].rstrip(b"\0") == b"job-2"
        off = srv.layout.slot_data_offset + 2 * srv.layout.slot_stride_bytes
        np.testing.assert_array_equal(np.frombuffer(raw, "<f4", 102, off)[:, None], clips[2])
        with pytest.raises(ValueError, match="does not fit"):
            srv.publish(np.zeros((srv.layout.slot_capacity_frames + 1, 1), np.float32),
                        sample_rate=8000, bars=1, bpm=120, beats_per_bar=4, start_beat=-1,
                        flags=0, job_id="big")


def test_heartbeat_is_monotonic_clock_nanoseconds(name):
    from plugin_host.shm import now_ns

    with ServerSegment.create(name, 1, 16, 1, 9000) as srv, HostSegment.attach(name) as host:
        before = now_ns()
        srv.beat_heartbeat()
        assert before <= host.heartbeat_ns() <= now_ns()


def test_attach_to_missing_segment_names_it(name):
    with pytest.raises(FileNotFoundError, match=name):
        HostSegment.attach(name)


def _write_segment(name: str, data: bytes) -> None:
    fd = os.open(f"/dev/shm/{name}", os.O_RDWR | os.O_CREAT, 0o600)
    os.write(fd, data)
    os.close(fd)


@pytest.mark.parametrize("corrupt, message", [
    (lambda b: b"NOTFORGE" + b[8:], "magic"),
    (lambda b: b[:8] + struct.pack("<I", 2) + b[12:], "version"),
    (lambda b: b[: len(b) // 2], "smaller than its header says"),
    (lambda b: b[:100], "smaller than its header says"),
    (lambda b: b[:32] + struct.pack("<Q", 7) + b[40:], "inconsistent"),
])
def test_attach_to_a_bad_segment_is_a_clear_error(name, corrupt, message):
    with ServerSegment.create(name, 2, 64, 2, 9000) as srv:
        good = Path(f"/dev/shm/{name}").read_bytes()
        srv.close(unlink=True)
    _write_segment(name, corrupt(good))
    with pytest.raises(SegmentError, match=message):
        HostSegment.attach(name)


def test_create_replaces_a_stale_segment(name):
    _write_segment(name, b"junk" * 100)
    with ServerSegment.create(name, 1, 16, 1, 9000):
        with HostSegment.attach(name) as host:
            assert host.layout.n_slots == 1


def test_host_notices_a_replaced_segment(name):
    srv = ServerSegment.create(name, 1, 16, 1, 9000)
    host = HostSegment.attach(name)
    assert host.same_segment()
    srv.close()
    assert not host.same_segment()
    srv = ServerSegment.create(name, 1, 16, 1, 9000)
    assert not host.same_segment()
    host.close()
    srv.close()


@pytest.mark.parametrize("capacity, block", [(8192 + 1, 7), (8192 + 333, 1000), (20011, 8193)])
def test_capture_ring_wraps_with_awkward_sizes(name, capacity, block):
    with ServerSegment.create(name, 1, 16, 2, capacity) as srv, HostSegment.attach(name) as host:
        assert srv.read_capture(10) is None
        srv.reset_capture(44100)
        total = 0
        for k in range(40):  # frame n holds (n, -n): any misplaced frame shows
            n = np.arange(total, total + block, dtype=np.float32)
            host.write_capture(np.stack([n, -n], axis=1), beat_at_end=(total + block) / 100)
            total += block
            want = min(capacity - 8192, total, 5000)
            win = srv.read_capture(5000)
            assert isinstance(win, CaptureWindow)
            assert win.end_frame == total and win.sample_rate == 44100
            assert win.beat_at_end == pytest.approx(total / 100)
            expect = np.arange(total - want, total, dtype=np.float32)
            np.testing.assert_array_equal(win.audio, np.stack([expect, -expect], axis=1))
        srv.reset_capture(48000)
        assert srv.read_capture(10) is None and srv.capture_state().sample_rate == 48000


def test_mono_capture_fills_every_ring_channel(name):
    with ServerSegment.create(name, 1, 16, 2, 9000) as srv, HostSegment.attach(name) as host:
        srv.reset_capture(8000)
        host.write_capture(np.arange(10, dtype=np.float32), beat_at_end=1.0)
        np.testing.assert_array_equal(srv.read_capture(10).audio, np.arange(10)[:, None].repeat(2, 1))


READER_C = r"""
#include "barforge_shm.h"
#include <stdio.h>
#include <stdlib.h>
/* Reads slots round-robin N times; a clip "c<k>" holds frames 64 + k % 200 of 2 channels
 * with sample j = (k * 31 + j) % 1000: any mix of two clips breaks it. */
int main(int argc, char **argv) {
    bf_segment seg;
    if (bf_attach(&seg, argv[1]) != BF_OK) return 2;
    long n = atol(argv[2]), ok = 0, busy = 0, torn = 0, empty = 0, last = -1, changes = 0;
    static float buf[1 << 16];
    bf_clip_meta m;
    for (long r = 0; r < n; ++r) {
        int rc = bf_slot_read(&seg, (uint32_t)(r % seg.layout.n_slots), &m, buf, 1 << 16);
        if (rc == BF_EBUSY) { ++busy; continue; }
        if (rc == BF_EEMPTY) { ++empty; continue; }
        if (rc != BF_OK) return 3;
        long k = atol(m.job_id + 1);
        int bad = m.frames != 64 + k % 200 || m.channels != 2 || m.bars != (uint32_t)k;
        for (uint32_t j = 0; !bad && j < m.frames * 2; ++j)
            bad = buf[j] != (float)((k * 31 + j) % 1000);
        torn += bad; ++ok;
        if (k != last) { ++changes; last = k; }
    }
    printf("%ld %ld %ld %ld %ld\n", ok, busy, torn, empty, changes);
    return 0;
}
"""


def test_no_torn_reads_by_a_c_reader_in_another_process(name, tmp_path):
    exe = tmp_path / "reader"
    (tmp_path / "reader.c").write_text(READER_C)
    subprocess.run(["cc", "-std=c11", "-O2", f"-I{NATIVE_DIR}", str(tmp_path / "reader.c"),
                    str(NATIVE_DIR / "barforge_shm.c"), "-o", str(exe), "-lrt"], check=True)
    clips = []
    for k in range(1, 401):
        frames = 64 + k % 200
        j = np.arange(frames * 2)
        clips.append(((k * 31 + j) % 1000).astype(np.float32).reshape(frames, 2))
    with ServerSegment.create(name, 2, 300, 2, 9000) as srv:
        stop = threading.Event()

        def writer():
            k = 0
            while not stop.is_set():
                srv.publish(clips[k % 400], sample_rate=8000, bars=k % 400 + 1, bpm=120,
                            beats_per_bar=4, start_beat=-1, flags=0, job_id=f"c{k % 400 + 1}")
                k += 1

        t = threading.Thread(target=writer)
        t.start()
        try:
            out = subprocess.run([str(exe), name, "1000000"], capture_output=True, text=True,
                                 timeout=120)
        finally:
            stop.set()
            t.join()
        assert out.returncode == 0, out.stderr
        ok, busy, torn, empty, changes = map(int, out.stdout.split())
        assert ok + busy + empty == 1_000_000
        assert torn == 0
        assert ok > 100_000 and changes > 100  # the reads really overlapped many publishes


# ---- issue 15: hostile headers, live segments, one writer per capture field ---------------

U64_TOP = 2**64 - 64  # aligned, and any size added to it wraps round to a small number


def _patched(good: bytes, offset: int, fmt: str, value: int) -> bytes:
    b = bytearray(good)
    struct.pack_into(fmt, b, offset, value)
    return bytes(b)


def _hostile_headers(good: bytes) -> dict[str, bytes]:
    cap = struct.unpack_from("<Q", good, 48)[0]
    return {
        "slot_table_offset near 2^64": _patched(good, 32, "<Q", U64_TOP),
        "slot_data_offset near 2^64": _patched(good, 40, "<Q", U64_TOP),
        "capture_offset near 2^64": _patched(good, 48, "<Q", U64_TOP),
        "capture_offset wraps with the slots": _patched(good, 48, "<Q", 2**64 - 2**20),
        "total_bytes 2^64 - 1": _patched(good, 64, "<Q", 2**64 - 1),
        "n_slots 2^20": _patched(good, 16, "<I", 2**20),
        "slot capacity 2^32 - 1": _patched(good, 20, "<I", 2**32 - 1),
        "capture capacity 2^32 - 1": _patched(good, cap + 16, "<I", 2**32 - 1),
        "capture capacity below one block": _patched(good, cap + 16, "<I", 100),
        "capture channels 64": _patched(good, cap + 20, "<I", 64),
    }


HOSTILE_PROBE = r"""
import sys
from plugin_host.shm import HostSegment, SegmentError
for name in sys.argv[1:]:
    try:
        seg = HostSegment.attach(name)
    except SegmentError as e:
        print(name, "refused", e, flush=True)
        continue
    for i in range(seg.layout.n_slots):  # what a segfault would show
        seg.read_slot(i)
    seg.capture_state()
    seg.write_capture(__import__("numpy").zeros((10, 2), "float32"), 1.0)
    print(name, "attached", flush=True)
"""


def test_hostile_headers_are_refused_without_a_crash(name):
    with ServerSegment.create(name, 2, 64, 2, 9000) as srv:
        good = Path(f"/dev/shm/{name}").read_bytes()
        srv.close(unlink=True)
    cases = _hostile_headers(good)
    names = [f"{name[:24]}h{i}" for i in range(len(cases))]
    try:
        for n, data in zip(names, cases.values()):
            _write_segment(n, data)
        proc = subprocess.run([os.sys.executable, "-c", HOSTILE_PROBE, *names], capture_output=True,
                              text=True, timeout=120, cwd=NATIVE_DIR.parents[1])
    finally:
        for n in names:
            Path(f"/dev/shm/{n}").unlink(missing_ok=True)
    assert proc.returncode == 0, f"the probe died ({proc.returncode}): {proc.stderr[-1000:]}"
    outcome = dict(line.split(" ", 2)[:2] for line in proc.stdout.splitlines())
    assert outcome == {n: "refused" for n in names}, dict(zip(cases, outcome.values()))


def _poke(name: str, offset: int, fmt: str, value: int) -> None:
    fd = os.open(f"/dev/shm/{name}", os.O_RDWR)
    os.pwrite(fd, struct.pack(fmt, value), offset)
    os.close(fd)


def test_a_live_segment_is_never_replaced(name):
    from plugin_host.shm import SegmentInUse, now_ns
    srv = ServerSegment.create(name, 1, 16, 1, 9000)
    host = HostSegment.attach(name)
    assert host.server_pid() == os.getpid()
    with pytest.raises(SegmentInUse, match="running server"):
        ServerSegment.create(name, 1, 16, 1, 9000)
    assert host.same_segment()  # not removed, not replaced
    dead = subprocess.Popen(["true"])
    dead.wait()
    _poke(name, 84, "<I", dead.pid)           # fresh heartbeat, but its server is gone
    _poke(name, 56, "<Q", now_ns())
    second = ServerSegment.create(name, 1, 16, 1, 9000)
    assert not host.same_segment()
    host.close()
    host = HostSegment.attach(name)
    _poke(name, 56, "<Q", now_ns() - 10**10)  # a live pid, but no heartbeat for 10 s
    third = ServerSegment.create(name, 1, 16, 1, 9000)
    assert not host.same_segment()
    host.close()
    host = HostSegment.attach(name)
    srv.close()      # both stale and replaced: closing them must not remove the live one
    second.close()
    assert host.same_segment()
    host.close()
    third.close()
    assert not os.path.exists(f"/dev/shm/{name}")


def test_capture_reset_never_stores_to_the_writers_fields(name):
    with ServerSegment.create(name, 1, 16, 2, 20000) as srv, HostSegment.attach(name) as host:
        srv.reset_capture(44100)
        host.write_capture(np.ones((1000, 2), np.float32), beat_at_end=2.0)
        srv.reset_capture(48000)
        raw = Path(f"/dev/shm/{name}").read_bytes()
        cap = srv.layout.capture_offset
        assert struct.unpack_from("<Q", raw, cap + 8)[0] == 1000   # the writer's write_frames
        assert struct.unpack_from("<Q", raw, cap + 40)[0] == 1000  # reset_frames: the mark
        state = srv.capture_state()
        assert (state.write_frames, state.sample_rate) == (0, 48000)
        assert srv.read_capture(10) is None
        host.write_capture(np.full((10, 2), 7, np.float32), beat_at_end=3.0)
        win = srv.read_capture(100)
        assert win.end_frame == 10 and win.audio.shape == (10, 2) and (win.audio == 7).all()


def test_resets_racing_the_writer_lose_no_frame_of_its_count(name):
    with ServerSegment.create(name, 1, 16, 2, 20000) as srv, HostSegment.attach(name) as host:
        done = threading.Event()
        written = 0

        def writer():
            nonlocal written
            block = np.zeros((64, 2), np.float32)
            for k in range(3000):
                host.write_capture(block, beat_at_end=float(k))
                written += 64
            done.set()

        t = threading.Thread(target=writer)
        t.start()
        while not done.is_set():
            srv.reset_capture(48000)
        t.join()
        raw = Path(f"/dev/shm/{name}").read_bytes()
        assert struct.unpack_from("<Q", raw, srv.layout.capture_offset + 8)[0] == written
