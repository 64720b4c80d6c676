"""MusicGen's delay pattern (audiocraft's DelayedPatternProvider with an empty first step).

Mono models delay codebook k by k steps (delays [0, 1, ..., K-1]); stereo models, whose
codebooks interleave left and right (L0, R0, L1, R1, ...), delay both codebooks of a level
alike ([0, 0, 1, 1, 2, 2, 3, 3], audiocraft's stereo configs and transformers'
``build_delay_pattern_mask``). With d = max delay, T frames take S = T + d + 1 sequence steps;
step 0 holds only special tokens; codebook k at step s holds frame s - 1 - delays[k] where that
is in [0, T), the special token elsewhere. The LM and the backends only ever see sequences;
only this object knows the delays.
"""
from __future__ import annotations

from typing import Sequence

import torch


class DelayPattern:
    """Build and revert the delayed layout for one delay per codebook (masks cached by length)."""

    def __init__(self, delays: Sequence[int]) -> None:
        delays = [int(d) for d in delays]
        if not delays or delays[0] != 0 or any(b < a for a, b in zip(delays, delays[1:])):
            raise ValueError(f"delays must start at 0 and never decrease, got {delays}")
        self.n_q = len(delays)
        self.delays = delays
        self.max_delay = delays[-1]
        self._valid_cache: dict[int, torch.Tensor] = {}

    @classmethod
    def for_codebooks(cls, n_q: int, stereo: bool = False) -> "DelayPattern":
        """MusicGen's pattern: delays [0..K-1], or [0, 0, 1, 1, ...] for interleaved stereo."""
        if n_q < 1 or (stereo and n_q % 2):
            raise ValueError(f"n_q must be >= 1 (and even for stereo), got {n_q}")
        return cls([k // 2 for k in range(n_q)] if stereo else list(range(n_q)))

    def num_steps(self, n_frames: int) -> int:
        """S, the sequence steps that hold ``n_frames`` frames."""
        return n_frames + self.max_delay + 1

    def first_step_of_frame(self, frame: int) -> int:
        """The first step holding any token of ``frame`` (codebook 0's token)."""
        return frame + 1

    def frame_index(self, n_steps: int) -> torch.Tensor:
        """frame[k, s] = s - 1 - k, the frame codebook k holds at step s (may be out of range)."""
        steps = torch.arange(n_steps)
        delays = torch.tensor(self.delays).unsqueeze(1)
        return steps.unsqueeze(0) - 1 - delays  # [K, S]

    def valid_mask(self, n_frames: int) -> torch.Tensor:
        """valid[k, s] (bool [K, S]): step s of codebook k holds a real token of n_frames frames."""
        mask = self._valid_cache.get(n_frames)
        if mask is None:
            frame = self.frame_index(self.num_steps(n_frames))
            mask = (frame >= 0) & (frame < n_frames)
            self._valid_cache[n_frames] = mask
        return mask

    def build(self, codes: torch.Tensor, special: int) -> torch.Tensor:
        """codes [B, K, T] -> sequence [B, K, T + K], ``special`` where no frame is held."""
        B, K, T = codes.shape
        if K != self.n_q:
            raise ValueError(f"codes have {K} codebooks, the pattern expects {self.n_q}")
        seq = codes.new_full((B, K, self.num_steps(T)), special)
        for k, delay in enumerate(self.delays):
            seq[:, k, 1 + delay:1 + delay + T] = codes[:, k]
        return seq

    def revert(self, seq: torch.Tensor, special: int) -> tuple[torch.Tensor, torch.Tensor]:
        """sequence [B, K, S] -> (codes [B, K, S - 1], valid bool [K, S - 1]).

        ``valid`` marks the positions the sequence holds; the others (past the end for delayed
        codebooks) hold ``special``. A full sequence of T frames gives its T frames back as
        ``codes[..., :T]``.
        """
        B, K, S = seq.shape
        if K != self.n_q:
            raise ValueError(f"sequence has {K} codebooks, the pattern expects {self.n_q}")
        if S < 1:
            raise ValueError("a delayed sequence has at least one (empty) step")
        T = S - 1
        codes = seq.new_full((B, K, T), special)
        valid = torch.zeros((K, T), dtype=torch.bool)
        for k, delay in enumerate(self.delays):
            held = max(0, T - delay)  # frames 0..held-1 of codebook k are in the sequence
            codes[:, k, :held] = seq[:, k, 1 + delay:1 + delay + held]
            valid[k, :held] = True
        return codes, valid
