"""One generation as data (``SampleRequest``) and the one function that runs it on a model.

``generate_batch(model, requests, progress)`` is what every server calls, so a model decodes a
request the same way wherever it runs: the bridge's generator process (bridge/renderer.py, one
request at a time through ``generate_samples``) and the Triton Python-backend model
(export/triton_python_model.py, several at once) both call it. Audio in and out is numpy
float32 [N, C]; the result is at the model's sample rate.

Requests share one decoding loop (one batch row each) only when they have the same
``batch_key``: every row then gets the clip it gets alone, since each row samples from its own
seeded generator (engine/decoding/sampling.py) and reads text conditions of its own length.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Sequence

import numpy as np
import torch

from engine.tempo import Tempo, duration_for

EXTEND_STRIDE = 0.6   # a window past the model's max_duration adds this fraction of it
Progress = Callable[[float], None]


@dataclass(frozen=True)
class SampleRequest:
    """What to generate.

    ``params``: ``set_generation_params`` keywords (engine/decoding/options.py ``api_params``),
    without ``duration``. ``samples`` at ``sample_rate``: how much audio the result must hold
    from its start once resampled to that rate. ``tempo``: its ``start_beat`` is that of the
    first frame the model reads (the prompt's, when continuing). ``prompt`` [P, C] at
    ``prompt_rate``: audio to continue (the result starts with the model's rendering of it).
    ``melody`` [M, C] at ``melody_rate``: the chroma source of a melody model.
    """

    description: str
    params: dict[str, Any]
    samples: int
    sample_rate: int
    tempo: Tempo
    prompt: np.ndarray | None = None
    prompt_rate: int | None = None
    melody: np.ndarray | None = None
    melody_rate: int | None = None


def _to_numpy(wav: torch.Tensor) -> np.ndarray:
    return wav.detach().to(torch.float32).cpu().numpy().T.copy()  # [C, N] -> [N, C]


def _audio_tensor(audio: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(audio.T, dtype=np.float32))[None]  # [1, C, N]


def batch_key(model: Any, request: SampleRequest) -> Hashable | None:
    """What must be equal for requests to share one decoding loop without changing each
    other's clips; None for a request that runs alone (a continuation or a melody: their audio
    is per row and its length shapes the loop).

    Equal: every generation parameter but the seed, the length asked for, the tempo, whether
    there is text (it decides classifier-free guidance) and the text's length in the LM's
    condition (padded positions take part in cross-attention, as in audiocraft, so padding a
    row would change its clip).
    """
    if request.prompt is not None or request.melody is not None:
        return None
    shape = sorted((k, repr(v)) for k, v in request.params.items() if k != "seed")
    return (tuple(shape), request.samples, request.sample_rate, request.tempo,
            bool(request.description), model.text_length(request.description))


def generate_samples(model: Any, request: SampleRequest, progress: Progress) -> np.ndarray:
    """``generate_batch`` of one request: its audio [N, C]."""
    return generate_batch(model, [request], progress)[0]


def generate_batch(model: Any, requests: Sequence[SampleRequest],
                   progress: Progress) -> list[np.ndarray]:
    """Audio [N, C] at the model's rate for each request, in one decoding loop: each holds,
    resampled to its ``sample_rate``, at least its ``samples`` samples from its start (the
    prompt's rendering first, when there is one).

    More than one request: they must share a ``batch_key`` (ValueError otherwise); each row is
    seeded by its own request's seed, so each gets the clip it gets alone. Past
    ``model.max_duration`` the model extends window by window (audiocraft's
    ``extend_stride``). ``progress(fraction)`` is called at every decoding step and may raise
    to cancel. ValueError for parameters the model refuses.
    """
    request = requests[0]
    if len(requests) > 1:
        keys = {batch_key(model, r) for r in requests}
        if None in keys or len(keys) > 1:
            raise ValueError("these requests cannot share one decoding loop: they differ in "
                             "more than description and seed (batch_key)")
    params = dict(request.params)
    if len(requests) > 1:
        params["seed"] = tuple(r.params.get("seed") for r in requests)
    model.set_generation_params(**params)   # the mode's own frame multiple for the length
    prompt = request.prompt
    prompt_frames = (0 if prompt is None
                     else math.ceil(prompt.shape[0] * model.frame_rate / request.prompt_rate))
    duration = duration_for(request.samples, request.sample_rate, model,
                            min_frames=prompt_frames + 1)
    if duration > model.max_duration:
        params["extend_stride"] = EXTEND_STRIDE * model.max_duration

    def cb(done: int, total: int) -> None:
        progress(min(1.0, done / max(total, 1)))

    model.set_generation_params(duration=duration, **params)
    descriptions, tempo = [r.description for r in requests], request.tempo
    if request.melody is not None:
        wav = model.generate_with_chroma(descriptions, _audio_tensor(request.melody),
                                         request.melody_rate, progress_callback=cb, tempo=tempo)
    elif prompt is None:
        wav = model.generate(descriptions, progress_callback=cb, tempo=tempo)
    else:
        wav = model.generate_continuation(_audio_tensor(prompt), request.prompt_rate,
                                          descriptions, progress_callback=cb, tempo=tempo)
    return [_to_numpy(row) for row in wav]
