"""One generation as data (``SampleRequest``) and the one function that runs it on a model.

``generate_samples(model, request, progress)`` is what every server calls, so a model decodes a
request the same way wherever it runs: the bridge's generator process (bridge/renderer.py) and
the Triton Python-backend model (export/triton_model.py) both call it. Audio in and out is
numpy float32 [N, C]; the result is at the model's sample rate.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

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
    return wav[0].detach().to(torch.float32).cpu().numpy().T.copy()  # [C, N] -> [N, C]


def _audio_tensor(audio: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(audio.T, dtype=np.float32))[None]  # [1, C, N]


def generate_samples(model: Any, request: SampleRequest, progress: Progress) -> np.ndarray:
    """Audio [N, C] at the model's rate that holds, resampled to ``request.sample_rate``, at
    least ``request.samples`` samples from its start (the prompt's rendering first, when there
    is one).

    Past ``model.max_duration`` the model extends window by window (audiocraft's
    ``extend_stride``). ``progress(fraction)`` is called at every decoding step and may raise
    to cancel. ValueError for parameters the model refuses.
    """
    params = dict(request.params)
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
    descriptions, tempo = [request.description], request.tempo
    if request.melody is not None:
        return _to_numpy(model.generate_with_chroma(descriptions, _audio_tensor(request.melody),
                                                    request.melody_rate, progress_callback=cb,
                                                    tempo=tempo))
    if prompt is None:
        return _to_numpy(model.generate(descriptions, progress_callback=cb, tempo=tempo))
    return _to_numpy(model.generate_continuation(_audio_tensor(prompt), request.prompt_rate,
                                                 descriptions, progress_callback=cb, tempo=tempo))
