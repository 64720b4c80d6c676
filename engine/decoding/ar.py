"""The autoregressive (MusicGen) decoding loop over a ``StepBackend``.

One window: the delayed sequence [B, K, S] is allocated once; the prompt's steps (step 0 and
every step up to the first one holding an unprompted frame) go through one ``step`` call, then
one step per call with the KV cache passed explicitly. With CFG the backend runs the
conditional and null rows as one batch [cond; null] and ``cfg_mix`` combines the last
position's logits. Long form (duration past the model's window) follows audiocraft's
extend_stride scheme: each new window is prompted with the frames of the previous window after
its first ``stride`` frames, with positions restarting at 0.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from engine.backends.base import ConditionTensors, StepBackend
from engine.decoding.delay_pattern import DelayPattern
from engine.decoding.ar_params import ARParams
from engine.decoding.progress import ProgressCallback
from engine.decoding.sampling import RowGenerators, cfg_mix, sample

# conditions for the window starting at a frame offset; 2B rows [cond; null] when CFG is on
ConditionSource = Callable[[int], ConditionTensors]


@dataclass(frozen=True)
class Window:
    """One model window: absolute ``offset`` frame, ``prompt_frames`` given, ``n_frames`` in all."""

    offset: int
    prompt_frames: int
    n_frames: int


def plan_windows(total_frames: int, prompt_frames: int, window_frames: int,
                 stride_frames: int) -> list[Window]:
    """The windows audiocraft's ``_generate_tokens`` runs to reach ``total_frames``."""
    if total_frames < 1:
        raise ValueError(f"total_frames must be >= 1, got {total_frames}")
    if not 0 <= prompt_frames < min(total_frames, window_frames):
        raise ValueError(f"the prompt ({prompt_frames} frames) must be shorter than the duration "
                         f"({total_frames} frames) and the model window ({window_frames} frames)")
    if total_frames <= window_frames:
        return [Window(0, prompt_frames, total_frames)]
    if not 0 < stride_frames < window_frames:
        raise ValueError(f"extend_stride ({stride_frames} frames) must be > 0 and shorter than "
                         f"the model window ({window_frames} frames)")
    windows: list[Window] = []
    offset, prompt_len = 0, prompt_frames
    while offset + prompt_len < total_frames:
        n = min(total_frames - offset, window_frames)
        windows.append(Window(offset, prompt_len, n))
        prompt_len = n - stride_frames  # the window's frames after the stride prompt the next
        offset += stride_frames
    return windows


class ARDecoder:
    """Runs windows of delayed-pattern decoding on one backend."""

    def __init__(self, backend: StepBackend, pattern: DelayPattern) -> None:
        if pattern.n_q != backend.n_q:
            raise ValueError(f"the delay pattern has {pattern.n_q} codebooks, the LM {backend.n_q}")
        self.backend = backend
        self.pattern = pattern

    def steps_in(self, window: Window) -> int:
        """Forward passes a window takes: every step after the prompt's."""
        return self.pattern.num_steps(window.n_frames) - self.pattern.first_step_of_frame(
            window.prompt_frames)

    def decode_window(self, ctx: Any, batch: int, cfg: bool, n_frames: int,
                      params: ARParams, prompt: torch.Tensor | None, rng: RowGenerators,
                      on_step: Callable[[], None]) -> torch.Tensor:
        """Codes [B, K, n_frames] whose first frames are ``prompt`` [B, K, Tp] unchanged."""
        K, special = self.backend.n_q, self.backend.special_token_id
        S = self.pattern.num_steps(n_frames)
        codes = torch.full((batch, K, n_frames), special, dtype=torch.long)
        prompt_frames = 0
        if prompt is not None:
            prompt_frames = prompt.shape[-1]
            codes[..., :prompt_frames] = prompt
        seq = self.pattern.build(codes, special)  # [B, K, S]
        frame = self.pattern.frame_index(S)
        to_generate = self.pattern.valid_mask(n_frames) & (frame >= prompt_frames)  # [K, S]
        if cfg:
            seq = seq.repeat(2, 1, 1)  # [2B, K, S]: the null rows read the same tokens
        start = self.pattern.first_step_of_frame(prompt_frames)
        cache = self.backend.new_cache(ctx, S - 1)
        # prefill: step 0 and every step the prompt fills, in one call
        logits, cache = self.backend.step(seq[:, :, :start].contiguous(), cache, ctx)
        seq, to_generate = seq.to(logits.device), to_generate.to(logits.device)
        generator = rng.on(logits.device)
        step_in = torch.empty_like(seq[:, :, :1])  # [rows, K, 1], reused every step
        for s in range(start, S):
            if s > start:
                logits, cache = self.backend.step(step_in, cache, ctx)  # [rows, K, 1, card]
            last = logits[:, :, -1]  # [rows, K, card]
            if cfg:
                last = cfg_mix(last[:batch], last[batch:], params.cfg_coef)  # [B, K, card]
            tokens = sample(last, params, generator)  # [B, K]
            column = seq[:batch, :, s]
            column.copy_(torch.where(to_generate[:, s], tokens, column))
            if cfg:
                seq[batch:, :, s] = column
            step_in.copy_(seq[:, :, s:s + 1])
            on_step()
        out, valid = self.pattern.revert(seq[:batch], special)
        assert bool(valid[:, :n_frames].all())
        return out[..., :n_frames].cpu()


def generate_ar(backend: StepBackend, conditions: ConditionSource, params: ARParams, *,
                batch: int, cfg: bool, total_frames: int, window_frames: int,
                stride_frames: int, prompt: torch.Tensor | None = None,
                progress_callback: ProgressCallback | None = None,
                pattern: DelayPattern | None = None) -> torch.Tensor:
    """Codes [B, K, total_frames] (the prompt [B, K, Tp] first, unchanged).

    ``conditions(offset)`` gives the window's condition rows ([cond; null], 2B rows, when
    ``cfg``); a window reuses the previous window's prepared context when it gets the same
    object back. Every row samples from its own generator, seeded by ``params.seed``
    (``row_seeds``: one per row, or an int moved on by the row; global RNG when None), so a
    row's codes do not depend on what else is in the batch (given the same logits).
    ``progress_callback(done, total)`` runs after every forward pass; an exception
    from it propagates out unchanged (that is how a job is cancelled). ``pattern``: the
    model's delays (default: MusicGen mono, [0..K-1]).
    """
    prompt_frames = 0 if prompt is None else prompt.shape[-1]
    if prompt is not None and (prompt.dim() != 3 or prompt.shape[:2] != (batch, backend.n_q)):
        raise ValueError(f"prompt codes must be [{batch}, {backend.n_q}, T], "
                         f"got {list(prompt.shape)}")
    windows = plan_windows(total_frames, prompt_frames, window_frames, stride_frames)
    decoder = ARDecoder(backend, pattern or DelayPattern.for_codebooks(backend.n_q))
    rng = RowGenerators(params.seed, batch)
    total_steps = sum(decoder.steps_in(w) for w in windows)
    done = 0

    def on_step() -> None:
        nonlocal done
        done += 1
        if progress_callback is not None:
            progress_callback(done, total_steps)

    pieces = [] if prompt is None else [prompt.long().cpu()]
    window_prompt = pieces[0] if pieces else None
    last_cond: ConditionTensors | None = None
    ctx: Any = None
    for window in windows:
        cond = conditions(window.offset)
        if cond is not last_cond:
            expected = 2 * batch if cfg else batch
            if cond.batch != expected:
                raise ValueError(f"conditions have {cond.batch} rows, expected {expected}")
            ctx, last_cond = backend.prepare(cond), cond
        codes = decoder.decode_window(ctx, batch, cfg, window.n_frames, params,
                                      window_prompt, rng, on_step)
        pieces.append(codes[..., window.prompt_frames:])
        stride = stride_frames if len(windows) > 1 else window.n_frames
        window_prompt = codes[..., stride:]
    return torch.cat(pieces, dim=-1)
