"""The masked non-autoregressive (MAGNeT) decoding loop over a ``StepBackend``.

audiocraft's ``MagnetLMModel._generate_magnet``, written against the backend protocol: the K
codebooks sit in parallel (no delays) over a fixed segment whose length is a multiple of the
span length. Codebook k is decoded in ``decoding_steps[k]`` iterations while codebooks > k hold
the mask token and codebooks < k stay fixed. Each iteration masks the least confident spans
(engine/decoding/masking.py), runs ONE non-causal forward of the [cond; null] rows with logits
for codebook k only, mixes them with the annealed CFG coefficient, and resamples only the masked
positions. Stage 0 attends over the whole segment; stages >= 1 only within ``attn_band`` frames
(MAGNeT's restricted context). Cross-attention keys/values are prepared once per generation.

Optional rescoring (MAGNeT paper, section 3): an external AR model's log-probabilities of the
freshly sampled tokens are mixed into their confidences, ``(1 - w) * log p_magnet + w * log
p_ar``, so the spans the AR model finds unlikely are the ones masked again.

Shape letters: B batch, K codebooks, T frames, M masked positions, card codebook size.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch

from engine.backends.base import ConditionTensors, StepBackend
from engine.decoding.delay_pattern import DelayPattern
from engine.decoding.magnet_params import MagnetParams
from engine.decoding.masking import (FROZEN_SCORE, annealed_cfg_coef, annealed_temperature,
                                     choose_spans_nonoverlap, choose_spans_stride1, freeze,
                                     mask_probability, num_masked, span_scores_max,
                                     span_scores_prod, spans_to_token_mask)
from engine.decoding.progress import ProgressCallback
from engine.decoding.sampling import RowGenerators, advance_seed, cfg_mix, sample

DEFAULT_ATTN_BAND = 5  # frames either side (~100 ms at 50 Hz): audiocraft's subcodes_context


@dataclass(frozen=True)
class StepSampling:
    """What ``sample`` reads for one iteration (the temperature annealed for that step)."""

    temperature: float
    top_k: int
    top_p: float
    use_sampling: bool


def segment_frames(n_frames: int, span_len: int) -> int:
    """The segment MAGNeT decodes: ``n_frames`` trimmed down to a multiple of ``span_len``."""
    trimmed = (n_frames // span_len) * span_len
    if trimmed < 1:
        raise ValueError(f"{n_frames} frames hold no span of {span_len} frames: ask for a longer "
                         "duration")
    return trimmed


def _check_condition(cond: ConditionTensors, batch: int, cfg: bool) -> None:
    expected = 2 * batch if cfg else batch
    if cond.batch != expected:
        raise ValueError(f"conditions have {cond.batch} rows, expected {expected} "
                         f"({'[cond; null] ' if cfg else ''}for a batch of {batch})")


class ARRescorer:
    """Log-probabilities of MAGNeT's candidate tokens under an autoregressive LM.

    One causal pass over the current codes laid out in the AR model's delay ``pattern``
    (default MusicGen mono); with ``cfg`` the [cond; null] rows run as one batch mixed by
    ``cfg_coef``. ``cond`` is prepared once.
    """

    def __init__(self, backend: StepBackend, cond: ConditionTensors, *, batch: int, cfg: bool,
                 cfg_coef: float = 3.0, pattern: DelayPattern | None = None) -> None:
        _check_condition(cond, batch, cfg)
        self.backend, self.batch, self.cfg, self.cfg_coef = backend, batch, cfg, cfg_coef
        self.pattern = pattern or DelayPattern.for_codebooks(backend.n_q)
        if self.pattern.n_q != backend.n_q:
            raise ValueError(f"the delay pattern has {self.pattern.n_q} codebooks, the AR LM "
                             f"{backend.n_q}")
        self.ctx = backend.prepare(cond)

    def log_probs(self, codes: torch.Tensor, codebook: int) -> torch.Tensor:
        """codes [B, K, T] -> [B, T]: log p_ar(codes[:, codebook, t] | everything before it)."""
        B, K, T = codes.shape
        special = self.backend.special_token_id
        seq = self.pattern.build(codes.cpu(), special)[..., :-1]  # [B, K, T + K - 1]
        if self.cfg:
            seq = seq.repeat(2, 1, 1)  # [2B, K, T + K - 1]
        cache = self.backend.new_cache(self.ctx, seq.shape[-1])
        logits, _ = self.backend.step(seq.contiguous(), cache, self.ctx)  # [rows, K, S, card]
        # codebook k of frame t sits at step t + 1 + delay_k: the logits one step before predict it
        delay = self.pattern.delays[codebook]
        logits = logits[:, codebook, delay:delay + T]  # [rows, T, card]
        if self.cfg:
            logits = cfg_mix(logits[:B], logits[B:], self.cfg_coef)  # [B, T, card]
        log_p = torch.log_softmax(logits.float(), dim=-1)
        target = codes[:, codebook].to(log_p.device).clamp(max=log_p.shape[-1] - 1)
        return log_p.gather(-1, target.unsqueeze(-1)).squeeze(-1)  # [B, T]


class MagnetDecoder:
    """One generation's state: the codes, the prepared context, the rows' seeded generators."""

    def __init__(self, backend: StepBackend, ctx: Any, params: MagnetParams, batch: int,
                 cfg: bool, attn_band: int | None, rescorer: ARRescorer | None,
                 rng: RowGenerators, on_step: Any) -> None:
        self.backend, self.ctx, self.params = backend, ctx, params
        self.batch, self.cfg, self.attn_band = batch, cfg, attn_band
        self.rescorer, self.rng, self.on_step = rescorer, rng, on_step
        self.mask_id = backend.special_token_id

    def _resample(self, codes: torch.Tensor, stage: int, step: int, n_steps: int,
                  mask_p: float) -> tuple[torch.Tensor, torch.Tensor]:
        """One forward; fill the masked positions of ``codes[:, stage]`` in place.

        As audiocraft, the model picks a token at every frame (argmax when greedy) and only the
        masked ones are kept. Returns ``active`` (bool [B, T], the positions resampled) and the
        probabilities [B, T] (temperature-scaled) of the picked token at every frame: a span
        that holds prompt frames is scored with the model's own choice there.
        """
        p, B = self.params, self.batch
        rows = codes.repeat(2, 1, 1) if self.cfg else codes  # [rows, K, T]
        band = None if stage == 0 else self.attn_band
        logits = self.backend.full(rows, self.ctx, band, codebook=stage)  # [rows, T, card]
        codes_dev = codes.to(logits.device)
        active = codes_dev[:, stage] == self.mask_id  # [B, T]
        if self.cfg:
            coef = annealed_cfg_coef(mask_p, p.max_cfg_coef, p.min_cfg_coef)
            logits = cfg_mix(logits[:B], logits[B:], coef)  # [B, T, card]
        t = annealed_temperature(p.temperature, step, n_steps, p.anneal_temperature)
        step_params = StepSampling(t, p.top_k, p.top_p, p.use_sampling)
        tokens = sample(logits, step_params, self.rng.on(logits.device))  # [B, T]
        probs = torch.softmax(logits.float() / t, dim=-1)
        probs = probs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)  # [B, T]
        codes_dev[:, stage] = torch.where(active, tokens, codes_dev[:, stage])
        if codes_dev is not codes:
            codes.copy_(codes_dev.to(codes.device))
        if self.rescorer is not None and p.rescore_weight > 0.0:
            ar = self.rescorer.log_probs(codes, stage).to(probs.device)  # [B, T]
            mixed = ((1.0 - p.rescore_weight) * probs.log() + p.rescore_weight * ar).exp()
            probs = torch.where(active, mixed, probs)
        return active.to(codes.device), probs.to(codes.device)

    def decode_stage(self, codes: torch.Tensor, stage: int, n_steps: int,
                     prompt_frames: int) -> None:
        """Decode codebook ``stage`` of ``codes`` [B, K, T] in place in ``n_steps`` iterations.

        Spans wholly inside the prompt are frozen from the start; a span the prompt covers only
        in part takes part in masking (its prompt frames are restored after each mask) and is
        scored over all its frames, as audiocraft's ``_generate_stage``.
        """
        p, B, T = self.params, codes.shape[0], codes.shape[-1]
        span = p.span_len
        nonoverlap = p.span_arrangement == "nonoverlap" and span > 1
        if nonoverlap:
            n_spans = T // span
            n_prompt_spans = prompt_frames // span
            scores = torch.zeros(B, n_spans)
            scores[:, :n_prompt_spans] = FROZEN_SCORE
            to_generate = n_spans - n_prompt_spans
        else:
            scores = torch.zeros(B, T)
            scores[:, :prompt_frames] = FROZEN_SCORE
            to_generate = T - prompt_frames
        for step in range(n_steps):
            mask_p = mask_probability(step, n_steps)
            count = num_masked(mask_p, to_generate)
            if nonoverlap:
                span_mask = choose_spans_nonoverlap(scores, count)  # [B, N]
                token_mask = spans_to_token_mask(span_mask, span)  # [B, T]
            elif span > 1:
                token_mask = choose_spans_stride1(scores, count, span)  # [B, T]
            else:  # spans of one frame: the least confident tokens themselves
                token_mask = choose_spans_nonoverlap(scores, count)
            token_mask[:, :prompt_frames] = False  # prompt frames are never resampled
            codes[:, stage][token_mask] = self.mask_id
            active, probs = self._resample(codes, stage, step, n_steps, mask_p)
            if nonoverlap:
                scores = (span_scores_max(probs, span) if p.scoring == "max"
                          else span_scores_prod(probs, span))
                scores = freeze(scores, span_mask)
            else:
                scores = freeze(-probs.log(), active)
            self.on_step()


def generate_magnet(backend: StepBackend, cond: ConditionTensors, params: MagnetParams, *,
                    batch: int, cfg: bool, n_frames: int, attn_band: int | None = DEFAULT_ATTN_BAND,
                    prompt: torch.Tensor | None = None, rescorer: ARRescorer | None = None,
                    progress_callback: ProgressCallback | None = None) -> torch.Tensor:
    """Codes [B, K, T] with T = ``n_frames`` trimmed to a multiple of ``params.span_len``.

    ``cond``: [cond; null] rows (2B) when ``cfg``, else B rows; prepared once here.
    ``prompt`` [B, K, Tp] (Tp < T): frames kept unchanged at the start (continuation, or the
    hybrid mode's AR prefix). ``attn_band``: the restricted context of stages >= 1 (None:
    unrestricted). ``rescorer``: used when ``params.rescore_weight > 0``.
    ``progress_callback(done, total)`` runs after each of the ``sum(decoding_steps)`` forward
    passes; an exception from it propagates out unchanged (cancellation).
    """
    K = backend.n_q
    if len(params.decoding_steps) != K:
        raise ValueError(f"decoding_steps has {len(params.decoding_steps)} entries, the model has "
                         f"{K} codebooks: give one number of steps per codebook")
    if params.rescore_weight > 0.0 and rescorer is None:
        raise ValueError("rescore_weight > 0 needs an AR rescorer (a model that ships an AR LM)")
    if attn_band is not None and (isinstance(attn_band, bool) or not isinstance(attn_band, int)
                                  or attn_band < 0):
        raise ValueError(f"attn_band must be None or an integer >= 0, got {attn_band!r}")
    T = segment_frames(n_frames, params.span_len)
    prompt_frames = 0 if prompt is None else prompt.shape[-1]
    if prompt is not None and (prompt.dim() != 3 or prompt.shape[:2] != (batch, K)):
        raise ValueError(f"prompt codes must be [{batch}, {K}, T], got {list(prompt.shape)}")
    if not 0 <= prompt_frames < T:
        raise ValueError(f"the prompt ({prompt_frames} frames) must be shorter than the segment "
                         f"({T} frames)")
    _check_condition(cond, batch, cfg)
    ctx = backend.prepare(cond)
    codes = torch.full((batch, K, T), backend.special_token_id, dtype=torch.long)
    if prompt is not None:
        codes[..., :prompt_frames] = prompt.long().cpu()
    total, done = params.total_steps, 0

    def on_step() -> None:
        nonlocal done
        done += 1
        if progress_callback is not None:
            progress_callback(done, total)

    decoder = MagnetDecoder(backend, ctx, params, batch, cfg, attn_band, rescorer,
                            RowGenerators(params.seed, batch), on_step)
    for stage, n_steps in enumerate(params.decoding_steps):
        decoder.decode_stage(codes, stage, n_steps, prompt_frames)
    assert not bool((codes == backend.special_token_id).any()), "a masked position was left"
    return codes


def generate_magnet_windows(backend: StepBackend, cond: ConditionTensors, params: MagnetParams, *,
                            batch: int, cfg: bool, n_frames: int, window_frames: int,
                            stride_frames: int, attn_band: int | None = DEFAULT_ATTN_BAND,
                            prompt: torch.Tensor | None = None, rescorer: ARRescorer | None = None,
                            progress_callback: ProgressCallback | None = None) -> torch.Tensor:
    """Codes [B, K, T] (T = ``n_frames`` trimmed to whole spans) of any length: one
    :func:`generate_magnet` segment when T fits ``window_frames``, else MusicGen's extend scheme
    on the masked loop. Each next window starts ``stride_frames`` after the previous one and
    keeps its last ``window - stride`` frames as a frozen prompt (with the beat phase moved on
    and the seed advanced, so windows do not repeat each other's draws); the last window ends
    at the last whole span the piece needs. A ``prompt`` longer
    than that overlap is context only through its last overlap frames; the result still starts
    with all of it. Rescoring is per segment: it is refused past one window.
    """
    span = params.span_len
    T = segment_frames(n_frames, span)
    W = segment_frames(window_frames, span)
    if T <= W:
        return generate_magnet(backend, cond, params, batch=batch, cfg=cfg, n_frames=T,
                               attn_band=attn_band, prompt=prompt, rescorer=rescorer,
                               progress_callback=progress_callback)
    if not 0 < stride_frames < W:
        raise ValueError(f"the window stride ({stride_frames} frames) must be > 0 and shorter "
                         f"than the segment ({W} frames)")
    if rescorer is not None:
        raise ValueError("AR rescoring works within one segment: ask for at most "
                         f"{W} frames, or rescore_weight=0")
    overlap = W - stride_frames
    prompt_frames = 0 if prompt is None else prompt.shape[-1]
    if prompt_frames >= T:
        raise ValueError(f"the prompt ({prompt_frames} frames) must be shorter than the piece "
                         f"({T} frames)")
    length, windows = (prompt_frames, 0) if prompt_frames > overlap else (W, 1)
    while length < T:
        length, windows = length + stride_frames, windows + 1
    total, done = windows * params.total_steps, 0

    def progress(step: int, _: int) -> None:
        if progress_callback is not None:
            progress_callback(done + step, total)

    if prompt_frames > overlap:
        codes = prompt.long().cpu()
    else:
        codes = generate_magnet(backend, cond, params, batch=batch, cfg=cfg, n_frames=W,
                                attn_band=attn_band, prompt=prompt, progress_callback=progress)
        done += params.total_steps
    index = 1
    while codes.shape[-1] < T:
        start = codes.shape[-1] - overlap
        seed = advance_seed(params.seed, index)
        # the last window is only as long as it must be (as the AR loop's last window): every
        # pass costs its length, and at 90 BPM 4 bars pass one 10 s segment by 0.67 s
        n = min(W, -(-(T - start) // span) * span)
        window = generate_magnet(backend, cond.at_frame(start), replace(params, seed=seed),
                                 batch=batch, cfg=cfg, n_frames=n, attn_band=attn_band,
                                 prompt=codes[..., start:], progress_callback=progress)
        codes = torch.cat([codes, window[..., overlap:]], dim=-1)
        done += params.total_steps
        index += 1
    return codes[..., :T]
