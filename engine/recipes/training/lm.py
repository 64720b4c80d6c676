"""Training the autoregressive LM (MusicGen): cross-entropy over the delay pattern.

Codes [B, K, T] become the delayed sequence [B, K, T + K] (step 0 all special); the LM reads
steps 0..S-2 and predicts steps 1..S-1, and the loss counts only real tokens (the special token
fills the delay corners). With probability ``cond_dropout`` a row's text condition is replaced
by the null condition (all-zero mask), which is what classifier-free guidance subtracts at
generation time. ``LMTask`` also carries what the MAGNeT objective shares (engine/recipes/training/magnet.py).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from engine.decoding.delay_pattern import DelayPattern
from engine.models.lm import LMConfig, LMModel
from engine.recipes.training.common import (Dist, clip_and_step, make_optimizer, read_trained, save_trained,
                                            warmup_cosine, wrap_ddp)


class ConditionedLM(nn.Module):
    """``LMModel`` with its text projection inside ``forward``, so DDP sees one forward pass."""

    def __init__(self, lm: LMModel):
        super().__init__()
        self.lm = lm

    def forward(self, tokens: torch.Tensor, hidden: torch.Tensor, mask: torch.Tensor,
                beat: torch.Tensor, key: torch.Tensor, **kwargs) -> torch.Tensor:
        cond = self.lm.project_condition(hidden, mask, key)               # [B, L (+1), D]
        return self.lm(tokens, self.lm.cross_kv(cond), beat=beat, **kwargs)


def drop_condition(hidden: torch.Tensor, mask: torch.Tensor, beat: torch.Tensor,
                   key: torch.Tensor, p: float) -> tuple[torch.Tensor, ...]:
    """Rows replaced by the null condition (text zeros, mask 0, no tempo, no key) with
    probability ``p`` each: all drop together, as audiocraft drops all conditions, so CFG
    pushes them all."""
    if p <= 0:
        return hidden, mask, beat, key
    drop = torch.rand(hidden.shape[0], device=hidden.device) < p           # [B]
    return (hidden.masked_fill(drop[:, None, None], 0.0), mask.masked_fill(drop[:, None], 0),
            beat.masked_fill(drop[:, None], 0.0), key.masked_fill(drop, 0))


class LMTask:
    """The AR objective for ``run_training``; subclasses change ``compute_loss``."""

    kind = "ar"
    causal = True
    find_unused = False

    def __init__(self, config: LMConfig, data, dist: Dist, *, batch_size: int, lr: float,
                 steps: int, warmup: int = 500, grad_clip: float = 1.0, weight_decay: float = 0.1,
                 cond_dropout: float = 0.1, seed: int = 0, extra_meta: dict | None = None,
                 init_state: dict[str, torch.Tensor] | None = None):
        """``init_state``: weights to start from (a trained LM of the same shape); a beat
        projection it lacks starts at zero, so the model begins exactly as that LM; a key
        embedding it lacks starts small (normal, std 0.02)."""
        if config.causal != self.causal:
            raise ValueError(f"the {self.kind} objective needs LMConfig(causal={self.causal})")
        self.config, self.data, self.dist = config, data, dist
        self.batch_size, self.grad_clip, self.cond_dropout = batch_size, grad_clip, cond_dropout
        self.extra_meta = extra_meta or {}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)                     # same initial weights on every rank
            self.model = LMModel(config).to(dist.device)
            _init_weights(self.model)
        if init_state is not None:
            _load_init(self.model, init_state)
        self.ddp = wrap_ddp(ConditionedLM(self.model), dist, find_unused=self.find_unused)
        self.opt = make_optimizer(self.model.named_parameters(), lr, weight_decay)
        self.sched = warmup_cosine(self.opt, warmup, steps)
        self.pattern = DelayPattern.for_codebooks(config.n_q)

    def state(self) -> dict[str, object]:
        return {"model": self.model, "opt": self.opt, "sched": self.sched}

    def compute_loss(self, codes: torch.Tensor, *cond: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of the real tokens of the delayed sequence of ``codes`` [B, K, T]
        under ``cond`` (hidden, mask, beat, key)."""
        special = self.model.special_token_id
        seq = self.pattern.build(codes, special)                           # [B, K, T + K]
        inputs, targets = seq[..., :-1], seq[..., 1:]                      # [B, K, S]
        logits = self.ddp(inputs, *cond)                                   # [B, K, S, card]
        valid = targets != special
        return F.cross_entropy(logits[valid], targets[valid])

    def batch(self) -> tuple[torch.Tensor, ...]:
        return tuple(t.to(self.dist.device) for t in self.data.sample(self.batch_size))

    @torch.no_grad()
    def eval_loss(self, batch: tuple[torch.Tensor, ...]) -> float:
        """The loss on ``batch`` (codes, hidden, mask, beat, key) with the full condition, no
        update."""
        self.model.eval()
        return float(self.compute_loss(*(t.to(self.dist.device) for t in batch)))

    def train_step(self, step: int) -> dict[str, float]:
        return self.update(self.batch())

    def update(self, batch: tuple[torch.Tensor, ...]) -> dict[str, float]:
        """One optimisation step on ``batch`` (codes [B, K, T], hidden [B, L, C], mask [B, L],
        beat [B, 3], key [B])."""
        codes, *cond = (t.to(self.dist.device) for t in batch)
        self.model.train()
        loss = self.compute_loss(codes, *drop_condition(*cond, p=self.cond_dropout))
        loss.backward()
        norm = clip_and_step(self.model, self.opt, self.sched, self.grad_clip)
        return {"ce": float(loss.detach()), "grad": norm}

    def export(self, out_dir: Path, step: int, losses: dict[str, float]) -> None:
        """``lm.safetensors`` + ``lm.json`` (config, objective, steps, last losses)."""
        save_trained(out_dir, "lm", self.model, {
            "lm": self.config.to_dict(), "objective": self.kind, "steps": step, "losses": losses,
            "batch_size": self.batch_size, "world": self.dist.world,
            "cond_dropout": self.cond_dropout, **self.extra_meta})


def _init_weights(model: LMModel, std: float = 0.02) -> None:
    """GPT-style init: normal(0, 0.02) for linears and embeddings, zero biases."""
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, std)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
            if getattr(m, "padding_idx", None) is not None:   # "no key" stays the zero vector
                with torch.no_grad():
                    m.weight[m.padding_idx].zero_()


def _load_init(model: LMModel, state: dict[str, torch.Tensor]) -> None:
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:
        raise ValueError(f"--init-from: the weights do not fit this LM's shape ({e})") from e
    if unexpected or set(missing) - {"beat_proj.weight", "key_emb.weight"}:
        raise ValueError(f"--init-from: the weights do not fit this LM (missing {sorted(missing)}, "
                         f"unexpected {sorted(unexpected)})")
    if "beat_proj.weight" in missing:
        nn.init.zeros_(model.beat_proj.weight)
    # a new key embedding keeps _init_weights' small init (normal, std 0.02; row 0 zero)


def load_trained_lm(directory: str | Path) -> tuple[LMModel, dict]:
    """The LM a ``train lm`` / ``train magnet`` run wrote into ``directory``, and its lm.json."""
    state, meta = read_trained(directory, "lm", "train lm|magnet")
    model = LMModel(LMConfig.from_dict(meta["lm"]))
    model.load_state_dict(state)
    return model.eval(), meta
