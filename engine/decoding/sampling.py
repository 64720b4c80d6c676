"""Next-token selection, shared by every decoding loop: one ``sample`` and one ``cfg_mix``.

``sample`` follows audiocraft's chain (models/lm.py ``_sample_next_token``): greedy argmax when
sampling is off or the temperature is 0; otherwise softmax(logits / temperature), restricted
to the nucleus when ``top_p > 0`` (which then overrides ``top_k``), else to the ``top_k`` most
likely tokens when ``top_k > 0``, else the full distribution. Randomness comes only from the
explicit ``torch.Generator`` passed in, so a seed fixes the result.

Per-row streams (``RowGenerators``): every row of a batch draws from its own generator, seeded
by its own seed, and its tokens are picked from its own logits alone, so a row's tokens are
those it gets decoded alone (given the same logits): requests batched together do not change
each other's draws.
"""
from __future__ import annotations

from typing import Protocol, Sequence

import torch

from engine.config_dict import Seed


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
           generator: torch.Generator | Sequence[torch.Generator | None] | None = None
           ) -> torch.Tensor:
    """Pick one token per row of ``logits`` [..., card] -> int64 tokens [...].

    ``generator`` must live on ``logits.device``; None uses torch's global generator. A
    sequence holds one generator per entry of the first dimension (a batch row): each row's
    tokens are then drawn from its own logits with its own generator.
    """
    if not params.use_sampling or params.temperature == 0.0:
        return logits.argmax(dim=-1)
    if isinstance(generator, Sequence):
        if len(generator) != logits.shape[0]:
            raise ValueError(f"{len(generator)} generators for {logits.shape[0]} rows")
        return torch.stack([_draw(row, params, g) for row, g in zip(logits, generator)])
    return _draw(logits, params, generator)


def _draw(logits: torch.Tensor, params: SamplingParams,
          generator: torch.Generator | None) -> torch.Tensor:
    """``sample``'s draw for one generator (sampling on)."""
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


def row_seeds(seed: Seed, batch: int) -> list[int | None]:
    """The seed of every row: a tuple as given (one per row), an int ``s`` as ``s + row`` (a
    batch of one keeps ``s``), None as None (torch's global generator)."""
    if isinstance(seed, tuple):
        if len(seed) != batch:
            raise ValueError(f"seed has {len(seed)} entries, one per row of a batch of {batch} "
                             "expected")
        return list(seed)
    return [None if seed is None else seed + row for row in range(batch)]


def advance_seed(seed: Seed, by: int) -> Seed:
    """``seed`` moved on by ``by`` (every row's), None staying None: a later window's draws."""
    if isinstance(seed, tuple):
        return tuple(None if s is None else s + by for s in seed)
    return None if seed is None else seed + by


class RowGenerators:
    """One ``torch.Generator`` per batch row (``row_seeds``), made on first use on the logits'
    device; a row without a seed gets None (torch's global generator)."""

    def __init__(self, seed: Seed, batch: int) -> None:
        self.seeds = row_seeds(seed, batch)
        self._generators: list[torch.Generator | None] | None = None

    def on(self, device: torch.device) -> list[torch.Generator | None]:
        """The rows' generators on ``device`` (made there, seeded, the first time)."""
        gens = self._generators
        if gens is None or any(g is not None and g.device != device for g in gens):
            gens = [None if s is None else torch.Generator(device).manual_seed(s)
                    for s in self.seeds]
            self._generators = gens
        return gens
