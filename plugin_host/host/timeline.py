"""What plays when: clips placed on session frames, each looping until the next one starts."""
from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np

from plugin_host.host.transport import Transport
from plugin_host.shm import Clip


@dataclass(frozen=True)
class Placement:
    start_frame: int  # session frame at which the clip takes over
    origin_frame: int  # session frame of the clip's own frame 0 (loops repeat from here)
    clip: Clip


class Timeline:
    """Clips placed on the session's frame grid. A clip plays from its start frame, looping,
    until the next placement's start frame; its audio at session frame n is
    clip.audio[(n - origin) % frames], so a loop stays on the bar grid whenever it starts."""

    def __init__(self, transport: Transport, channels: int = 2) -> None:
        self.transport = transport
        self.channels = channels
        self._placements: list[Placement] = []

    @property
    def placements(self) -> list[Placement]:
        return list(self._placements)

    def place(self, clip: Clip, start_frame: int, origin_frame: int | None = None) -> Placement:
        """Play `clip` from `start_frame`; `origin_frame` (default: start_frame) is where its
        frame 0 falls. A clip at a sample rate other than the session's is refused."""
        if clip.sample_rate != self.transport.sample_rate:
            raise ValueError(f"clip {clip.job_id!r} is at {clip.sample_rate} Hz; the session runs at "
                             f"{self.transport.sample_rate} Hz")
        if clip.frames < 1:
            raise ValueError(f"clip {clip.job_id!r} is empty")
        p = Placement(start_frame, start_frame if origin_frame is None else origin_frame, clip)
        # copy on write: the audio callback renders from whichever list it picked up
        placements = list(self._placements)
        i = bisect.bisect_right([q.start_frame for q in placements], start_frame)
        placements.insert(i, p)
        self._placements = placements
        return p

    def place_at_bar(self, clip: Clip, bar: int) -> Placement:
        return self.place(clip, self.transport.bar_frame(bar))

    def place_at_beat(self, clip: Clip, beat: float) -> Placement:
        """A continuation: it starts at session beat `beat` (its start_beat)."""
        return self.place(clip, self.transport.frame_at_beat(beat))

    def render(self, start: int, frames: int) -> np.ndarray:
        """Session frames [start, start + frames) -> [frames, channels] float32."""
        out = np.zeros((frames, self.channels), dtype=np.float32)
        end = start + frames
        placements = self._placements
        for i, p in enumerate(placements):
            stop = placements[i + 1].start_frame if i + 1 < len(placements) else end
            lo, hi = max(start, p.start_frame), min(end, stop)
            if lo >= hi:
                continue
            idx = (np.arange(lo, hi) - p.origin_frame) % p.clip.frames
            audio = p.clip.audio[idx]  # [hi - lo, clip channels]
            if audio.shape[1] == 1:
                audio = np.repeat(audio, self.channels, axis=1)
            out[lo - start: hi - start] = audio[:, : self.channels]
        return out
