"""Next-token selection, shared by every decoding loop: one ``sample`` and one ``cfg_mix``.

``sample`` follows audiocraft's chain (models/lm.py ``_sample_next_token``): greedy argmax when
sampling is off or the temperature is 0; otherwise softmax(logits / temperature), restricted
to the nucleus when ``top_p > 0`` (which then overrides ``top_k``), else to the ``top_k`` most
likely tokens when ``top_k > 0``, else the full distribution. Randomness comes only from the
explicit ``torch.Generator`` passed in, so a seed fixes the result.
"""
from __future__ import annotations

from typing import Protocol

import torch


class SamplingParams(Protocol):
    """What ``sample`` reads; ``ARParams`` and the masked loops' params satisfy it."""

    temperature: float
    top_k: int
    top_p: float
    use_sampling: bool


def cfg_mix(cond: torch.Tensor, uncond: torch.Tensor, coef: float) -> torch.Tensor:
    """Classifier-free guidance on raw logits: ``uncond + (cond - uncond) * coef``.

    Same operation order as audiocraft and transformers (so greedy decoding matches them bit for
    bit); one output allocation.
    """
    out = torch.sub(cond, uncond)
    out.mul_(coef)
    return out.add_(uncond)


def _multinomial(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One draw per row of probs [..., n] -> [...] (torch.multinomial wants 2-D input)."""
    flat = probs.reshape(-1, probs.shape[-1])
    drawn = torch.multinomial(flat, num_samples=1, generator=generator)  # [R, 1]
    return drawn.reshape(probs.shape[:-1])


def sample(logits: torch.Tensor, params: SamplingParams,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """Pick one token per row of ``logits`` [..., card] -> int64 tokens [...].

    ``generator`` must live on ``logits.device``; None uses torch's global generator.
    """
    if not params.use_sampling or params.temperature == 0.0:
        return logits.argmax(dim=-1)
    scaled = logits.float() / params.temperature
    if params.top_p > 0.0:
        probs = torch.softmax(scaled, dim=-1)
        sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
        mass_before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs
        # keep the smallest prefix whose mass reaches top_p (the first token always stays)
        sorted_probs.masked_fill_(mass_before > params.top_p, 0.0)
        picked = _multinomial(sorted_probs, generator)  # multinomial renormalises
        return order.gather(-1, picked.unsqueeze(-1)).squeeze(-1)
    if 0 < params.top_k < logits.shape[-1]:
        values, indices = torch.topk(scaled, params.top_k, dim=-1)  # [..., top_k]
        picked = _multinomial(torch.softmax(values, dim=-1), generator)
        return indices.gather(-1, picked.unsqueeze(-1)).squeeze(-1)
    return _multinomial(torch.softmax(scaled, dim=-1), generator)


class SeededGenerator:
    """A ``torch.Generator`` made on first use on the logits' device; None when unseeded."""

    def __init__(self, seed: int | None) -> None:
        self.seed = seed
        self._generator: torch.Generator | None = None

    def on(self, device: torch.device) -> torch.Generator | None:
        if self.seed is None:
            return None
        if self._generator is None or self._generator.device != device:
            self._generator = torch.Generator(device).manual_seed(self.seed)
        return self._generator
