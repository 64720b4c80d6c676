"""How far a player's output is from its clip laid on the bar grid, in samples, block by block.

The clip is a ramp (left channel i / frames, right the negative), so every output sample says
which clip position was played: the offset of a frame is that position minus the position the
bar grid puts there. Frames within two samples of the loop seam (where the player interpolates
from the clip's last frame to its first) say nothing and are left out.
"""
from __future__ import annotations

import numpy as np

RATE = 48000


def loop_frames(bars: int, bpm: float, beats_per_bar: int, rate: int = RATE) -> float:
    """The loop's exact length in frames on the bar grid (not a whole number at 97 BPM)."""
    return bars * beats_per_bar * 60.0 * rate / bpm


def ramp_clip(bars: int, bpm: float, beats_per_bar: int, offset: float = 0.0) -> np.ndarray:
    """A clip of `bars` bars whose samples say their frame; offset tells clips apart."""
    frames = int(np.ceil(loop_frames(bars, bpm, beats_per_bar)))
    left = offset + np.arange(frames, dtype=np.float64) / frames
    return np.stack([left, -left], axis=1).astype(np.float32)


def block_offsets(out: np.ndarray, clip_frames: int, loop: float, offset: float = 0.0,
                  block: int = 1024) -> np.ndarray:
    """The largest |offset| in samples of each block of out ([frames, 2]); NaN for a block with
    no usable frame. Raises if the right channel is not the left's negative (not our clip)."""
    f = np.arange(len(out), dtype=np.float64)
    expect = np.mod(f, loop)
    played = (out[:, 0].astype(np.float64) - offset) * clip_frames
    np.testing.assert_allclose(out[:, 1], -out[:, 0], rtol=0, atol=1e-6)
    diff = played - expect
    diff -= np.round(diff / loop) * loop  # a position one loop away is the same position
    usable = (expect > 2.0) & (expect < clip_frames - 3.0) & (expect < loop - 3.0)
    n_blocks = -(-len(out) // block)
    worst = np.full(n_blocks, np.nan)
    for b in range(n_blocks):
        sl = slice(b * block, (b + 1) * block)
        d = np.abs(diff[sl][usable[sl]])
        if d.size:
            worst[b] = d.max()
    return worst
