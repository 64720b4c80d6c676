"""Python wrappers over the C shared-memory library (plugin_host/native/barforge_shm.c).

Both sides of the bridge protocol's shared memory (docs/PROTOCOL.md): `ServerSegment` creates
the segment, publishes clips, refreshes the heartbeat and reads the capture ring (the bridge);
`HostSegment` attaches, reads clips and writes the capture ring (a host). Every fenced load and
store happens in C; Python only moves numpy arrays in and out. The segment is a POSIX
shared-memory object opened by the C library, so Python's multiprocessing resource tracker
never sees it.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass

import numpy as np

from plugin_host.native import load_native

ffi, lib = load_native()

_NAME_RE = re.compile(r"^[^/\x00]{1,30}$")
_RETRY_S = 1.0  # a seqlock write lasts microseconds to milliseconds; 1 s means something is wrong


class SegmentError(ValueError):
    """A segment exists under the name but cannot be used (magic, version, size, layout)."""


class SegmentInUse(SegmentError):
    """A running server owns a segment of that name (fresh heartbeat, live pid)."""


class CaptureOverrun(RuntimeError):
    """The capture writer kept coming round over the window being copied."""


@dataclass(frozen=True)
class Layout:
    """Byte offsets and sizes of a segment (PROTOCOL.md's formulas)."""

    n_slots: int
    slot_capacity_frames: int
    max_channels: int
    capture_capacity_frames: int
    slot_table_offset: int
    slot_data_offset: int
    slot_stride_bytes: int
    capture_offset: int
    total_bytes: int

    @property
    def capture_readable_frames(self) -> int:
        """Frames of the capture ring a read may take: the block being written
        (BF_CAPTURE_MAX_BLOCK, barforge_shm.h) is left alone."""
        return self.capture_capacity_frames - lib.BF_CAPTURE_MAX_BLOCK


@dataclass(frozen=True)
class Clip:
    """A slot's metadata and a copy of its audio [frames, channels] float32."""

    slot: int
    frames: int
    sample_rate: int
    channels: int
    bars: int
    bpm: float
    beats_per_bar: int
    flags: int
    start_beat: float
    job_id: str
    audio: np.ndarray


@dataclass(frozen=True)
class CaptureState:
    """The capture ring's header."""

    write_frames: int
    capacity_frames: int
    channels: int
    sample_rate: int
    beat_at_write: float


@dataclass(frozen=True)
class CaptureWindow:
    """The last frames of the capture ring: audio [frames, channels] ending at end_frame
    (= write_frames) and at session beat beat_at_end (= beat_at_write)."""

    audio: np.ndarray
    end_frame: int
    beat_at_end: float
    sample_rate: int


def _check_name(name: str) -> bytes:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(f"segment name {name!r}: expected 1 to 30 characters without '/'")
    return name.encode()


def _raise_for(rc: int, what: str) -> None:
    msg = f"{what}: {ffi.string(lib.bf_strerror(rc)).decode()}"
    if rc == lib.BF_ENOENT:
        raise FileNotFoundError(msg)
    if rc == lib.BF_ESYS:
        raise OSError(ffi.errno, f"{msg} ({ffi.errno})")
    if rc == lib.BF_ELIVE:
        raise SegmentInUse(msg)
    if rc in (lib.BF_EMAGIC, lib.BF_EVERSION, lib.BF_ESIZE, lib.BF_ELAYOUT):
        raise SegmentError(msg)
    raise ValueError(msg)


def _retry(call):
    """Run a seqlock read until it is not overlapped by a write (non-real-time callers)."""
    deadline = time.monotonic() + _RETRY_S
    while True:
        rc = call()
        if rc not in (lib.BF_EBUSY, lib.BF_EOVERRUN) or time.monotonic() > deadline:
            return rc
        time.sleep(0)


class _Segment:
    """What both sides do: read slots, counters, heartbeat and the capture ring's header."""

    def __init__(self, name: str, seg) -> None:
        self.name = name
        self._seg = seg
        L = seg.layout
        self.layout = Layout(L.n_slots, L.slot_capacity_frames, L.max_channels,
                             L.capture_capacity_frames, L.slot_table_offset, L.slot_data_offset,
                             L.slot_stride_bytes, L.capture_offset, L.total_bytes)
        self._buf = np.empty(L.slot_capacity_frames * L.max_channels, dtype=np.float32)
        self._meta = ffi.new("bf_clip_meta *")

    def _live(self):
        if self._seg is None:
            raise ValueError(f"segment {self.name!r} is closed")
        return self._seg

    def read_slot(self, i: int) -> Clip | None:
        """A consistent copy of slot i, or None when it never held a clip."""
        seg = self._live()
        if not 0 <= i < self.layout.n_slots:
            raise ValueError(f"slot {i}: expected 0..{self.layout.n_slots - 1}")
        buf = ffi.cast("float *", ffi.from_buffer(self._buf))
        rc = _retry(lambda: lib.bf_slot_read(seg, i, self._meta, buf, self._buf.size))
        if rc == lib.BF_EEMPTY:
            return None
        if rc != lib.BF_OK:
            _raise_for(rc, f"read slot {i} of {self.name!r}")
        m = self._meta
        audio = self._buf[: m.frames * m.channels].reshape(m.frames, m.channels).copy()
        return Clip(i, m.frames, m.sample_rate, m.channels, m.bars, m.bpm, m.beats_per_bar,
                    m.flags, m.start_beat, ffi.string(m.job_id).decode(errors="replace"), audio)

    def newest_slot(self) -> int | None:
        """The slot published last, or None before the first publish."""
        seg = self._live()
        return lib.bf_newest_slot(seg) if lib.bf_publish_count(seg) else None

    def publish_count(self) -> int:
        return lib.bf_publish_count(self._live())

    def server_pid(self) -> int:
        """The pid of the server that created the segment (0 when it did not record one)."""
        return lib.bf_server_pid(self._live())

    def heartbeat_ns(self) -> int:
        """The server's last heartbeat, CLOCK_MONOTONIC nanoseconds (compare with now_ns())."""
        return lib.bf_heartbeat_read(self._live())

    def capture_state(self) -> CaptureState:
        seg = self._live()
        st = ffi.new("bf_capture_state *")
        rc = _retry(lambda: lib.bf_capture_state_read(seg, st))
        if rc != lib.BF_OK:
            _raise_for(rc, f"capture ring of {self.name!r}")
        return CaptureState(st.write_frames, st.capacity_frames, st.channels, st.sample_rate,
                            st.beat_at_write)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ServerSegment(_Segment):
    """The server's side: create, publish, heartbeat, capture reset and read."""

    @classmethod
    def create(cls, name: str, n_slots: int, slot_capacity_frames: int, max_channels: int,
               capture_capacity_frames: int) -> ServerSegment:
        """Create segment `name` (mode 0600, replacing a stale one), sized once for good;
        SegmentInUse when a running server owns the name (nothing is touched then).
        slot_capacity_frames is rounded up to a multiple of 16 (see `layout`);
        capture_capacity_frames must exceed 8192 (the largest block a capture write commits)."""
        raw = _check_name(name)
        if min(n_slots, slot_capacity_frames, max_channels) < 1 or max_channels > 64:
            raise ValueError(f"n_slots {n_slots}, slot_capacity_frames {slot_capacity_frames}, "
                             f"max_channels {max_channels}: expected >= 1 (channels <= 64)")
        if capture_capacity_frames <= lib.BF_CAPTURE_MAX_BLOCK:
            raise ValueError(f"capture_capacity_frames {capture_capacity_frames}: expected more "
                             f"than {lib.BF_CAPTURE_MAX_BLOCK}")
        seg = ffi.new("bf_segment *")
        rc = lib.bf_create(seg, raw, n_slots, slot_capacity_frames, max_channels,
                           capture_capacity_frames)
        if rc != lib.BF_OK:
            _raise_for(rc, f"create segment {name!r}")
        return cls(name, seg)

    @classmethod
    def open(cls, name: str) -> ServerSegment:
        """Map the segment `name` that this server created, from another of its processes
        (the one that publishes clips and reads the capture ring). Close it with
        unlink=False: the creator removes the name."""
        raw = _check_name(name)
        seg = ffi.new("bf_segment *")
        rc = lib.bf_attach(seg, raw)
        if rc != lib.BF_OK:
            _raise_for(rc, f"open shared-memory segment {name!r}")
        return cls(name, seg)

    def publish(self, audio: np.ndarray, *, sample_rate: int, bars: int, bpm: float,
                beats_per_bar: int, start_beat: float, flags: int, job_id: str) -> int:
        """Write a clip [frames, channels] into the least recently published slot and publish
        it; returns the slot index. ValueError when it does not fit a slot."""
        seg = self._live()
        audio = np.ascontiguousarray(audio, dtype=np.float32)
        if audio.ndim != 2 or audio.shape[1] < 1:
            raise ValueError(f"audio shape {audio.shape}: expected [frames, channels]")
        frames, channels = audio.shape
        if frames > self.layout.slot_capacity_frames or channels > self.layout.max_channels:
            raise ValueError(f"clip of {frames} frames x {channels} channels does not fit a slot "
                             f"of {self.layout.slot_capacity_frames} x {self.layout.max_channels}")
        job = job_id.encode()
        if not 1 <= len(job) <= lib.BF_JOB_ID_BYTES:
            raise ValueError(f"job_id {job_id!r}: expected 1 to 64 bytes")
        m = self._meta
        m.frames, m.sample_rate, m.channels, m.bars = frames, sample_rate, channels, bars
        m.bpm, m.beats_per_bar, m.flags, m.start_beat = bpm, beats_per_bar, flags, start_beat
        m.job_id = job
        rc = lib.bf_publish(seg, m, ffi.cast("float *", ffi.from_buffer(audio)))
        if rc < 0:
            _raise_for(rc, f"publish {job_id!r}")
        return rc

    def beat_heartbeat(self) -> None:
        """Refresh the heartbeat (call at least once a second)."""
        lib.bf_heartbeat_write(self._live(), lib.bf_now_ns())

    def reset_capture(self, sample_rate: int) -> None:
        """Empty the capture ring and set its sample rate (`/barforge/capture`)."""
        lib.bf_capture_reset(self._live(), sample_rate)

    def read_capture(self, frames: int) -> CaptureWindow | None:
        """The last `frames` frames of the capture ring (fewer when fewer were written, and at
        most capacity - 8192); None when nothing was captured since the last reset. A copy that
        the writer overran is retried for up to a second, then raises CaptureOverrun."""
        seg = self._live()
        n = max(0, min(frames, self.layout.capture_readable_frames))
        out = np.empty((n, self.layout.max_channels), dtype=np.float32)
        st = ffi.new("bf_capture_state *")
        ptr = ffi.cast("float *", ffi.from_buffer(out))
        rc = _retry(lambda: lib.bf_capture_read(seg, ptr, n, st))
        if rc == lib.BF_EEMPTY:
            return None
        if rc == lib.BF_EOVERRUN:
            raise CaptureOverrun(f"capture ring of {self.name!r} overran the copy for 1 s")
        if rc < 0:
            _raise_for(rc, f"read capture of {self.name!r}")
        return CaptureWindow(out[:rc, : st.channels], st.write_frames, st.beat_at_write,
                             st.sample_rate)

    def close(self, unlink: bool = True) -> None:
        """Unmap; remove the name too unless unlink=False, or unless the name now belongs to
        another server's segment (ours went stale and was replaced)."""
        if self._seg is not None:
            ours = bool(lib.bf_same_segment(self._seg, self.name.encode()))
            lib.bf_detach(self._seg)
            if unlink and ours:
                lib.bf_unlink(self.name.encode())
            self._seg = None


class HostSegment(_Segment):
    """A host's side: attach, read clips, write the capture ring."""

    @classmethod
    def attach(cls, name: str) -> HostSegment:
        """Map segment `name` and validate its header. FileNotFoundError when it does not
        exist; SegmentError for a wrong magic, a wrong version or a truncated segment."""
        raw = _check_name(name)
        seg = ffi.new("bf_segment *")
        rc = lib.bf_attach(seg, raw)
        if rc != lib.BF_OK:
            _raise_for(rc, f"attach to shared-memory segment {name!r}")
        return cls(name, seg)

    def write_capture(self, audio: np.ndarray, beat_at_end: float) -> None:
        """Append audio [frames, channels] (or mono [frames]) to the capture ring; beat_at_end
        is the session beat just after its last frame."""
        seg = self._live()
        audio = np.ascontiguousarray(audio, dtype=np.float32)
        if audio.ndim == 1:
            audio = audio[:, None]
        if audio.ndim != 2 or audio.shape[1] < 1:
            raise ValueError(f"audio shape {audio.shape}: expected [frames, channels]")
        frames, channels = audio.shape
        base = ffi.cast("float *", ffi.from_buffer(audio))
        planes = ffi.new("float *[]", [base + c for c in range(channels)])
        rc = lib.bf_capture_write(seg, planes, channels, channels, frames, beat_at_end)
        if rc != lib.BF_OK:
            _raise_for(rc, f"write capture of {self.name!r}")

    def same_segment(self) -> bool:
        """False once the server removed or replaced the segment (time to re-attach)."""
        return bool(lib.bf_same_segment(self._live(), self.name.encode()))

    def close(self) -> None:
        if self._seg is not None:
            lib.bf_detach(self._seg)
            self._seg = None


def now_ns() -> int:
    """CLOCK_MONOTONIC nanoseconds, the heartbeat's clock."""
    return lib.bf_now_ns()
