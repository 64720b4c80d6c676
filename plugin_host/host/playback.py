"""Rendering a timeline block by block into the capture ring, offline or through sounddevice."""
from __future__ import annotations

import threading

import numpy as np

from plugin_host.host.timeline import Timeline
from plugin_host.shm import HostSegment


class BlockRenderer:
    """Renders the timeline in session order; every block also goes into the capture ring
    (when a segment is given), with the session beat at its end, so the server can continue
    whatever the host plays."""

    def __init__(self, timeline: Timeline, segment: HostSegment | None = None) -> None:
        self.timeline = timeline
        self.segment = segment
        self.position = 0  # the next session frame

    def next_block(self, frames: int) -> np.ndarray:
        block = self.timeline.render(self.position, frames)  # [frames, channels]
        self.position += frames
        if self.segment is not None:
            beat = self.timeline.transport.beat_at_frame(self.position)
            self.segment.write_capture(block, float(beat))
        return block

    def render_until(self, end_frame: int, block: int = 4096) -> np.ndarray:
        """Offline: every frame up to end_frame, as one array."""
        parts = []
        while self.position < end_frame:
            parts.append(self.next_block(min(block, end_frame - self.position)))
        if not parts:
            return np.zeros((0, self.timeline.channels), np.float32)
        return np.concatenate(parts)


class SoundDevicePlayer:
    """Plays a BlockRenderer through a PortAudio output stream (sounddevice)."""

    def __init__(self, renderer: BlockRenderer, device=None, blocksize: int = 512) -> None:
        import sounddevice as sd

        self.renderer = renderer
        self.blocks = 0
        self.underflows = 0
        self.finished = threading.Event()
        t = renderer.timeline
        self.stream = sd.OutputStream(samplerate=t.transport.sample_rate, channels=t.channels,
                                      dtype="float32", blocksize=blocksize, device=device,
                                      callback=self._callback, finished_callback=self.finished.set)

    def _callback(self, outdata, frames, time_info, status) -> None:
        if status.output_underflow:
            self.underflows += 1
        outdata[:] = self.renderer.next_block(frames)
        self.blocks += 1

    def start(self) -> None:
        self.stream.start()

    def stop(self) -> None:
        self.stream.stop()
        self.stream.close()
