"""What every training objective shares: devices and DDP, AdamW with warm-up + cosine,
gradient clipping, per-step seeding, resumable checkpoints and the progress bar.

Determinism: every step reseeds torch from (seed, step, rank), so data sampling, masking and
condition dropout depend only on the step, and a run resumed from a checkpoint continues
bit-exactly. Checkpoints (weights + optimizer + scheduler) live in ``<out>.train/``, outside
the shipped folder ``<out>/``, which only ever receives safetensors weights and JSON.

Multi-process: launch with ``torchrun --nproc_per_node N -m engine.cli train ...``; gloo on
CPU, nccl on CUDA. Each rank draws its own batch; gradients are averaged by DDP.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
import torch.distributed as torch_dist
from torch import nn


@dataclass(frozen=True)
class Dist:
    """This process's place in the job: rank, world size and its device."""

    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def setup_distributed(device: str = "cpu") -> Dist:
    """Join the torchrun job if ``WORLD_SIZE`` > 1 (gloo on CPU, nccl on CUDA), else run alone."""
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"--device must be cpu, cuda or cuda:N, got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available on this machine")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if device.startswith("cuda") and world > 1:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = torch.device(device)
    if world > 1 and not torch_dist.is_initialized():
        torch_dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return Dist(rank, world, dev)


def wrap_ddp(module: nn.Module, dist: Dist, find_unused: bool = False) -> nn.Module:
    """``module`` inside DistributedDataParallel when the job has several processes."""
    if not dist.enabled:
        return module
    ids = [dist.device.index] if dist.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=ids, broadcast_buffers=False,
                                               find_unused_parameters=find_unused)


def all_gather_cat(x: torch.Tensor, dist: Dist) -> torch.Tensor:
    """Concatenate ``x`` from every rank along dim 0 (``x`` itself when alone)."""
    if not dist.enabled:
        return x
    parts = [torch.empty_like(x) for _ in range(dist.world)]
    torch_dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


def make_optimizer(params, lr: float, weight_decay: float = 0.01,
                   betas: tuple[float, float] = (0.9, 0.95)) -> torch.optim.AdamW:
    """AdamW; no weight decay on biases, norms and embeddings (1-D tensors and ``emb``)."""
    params = [(n, p) for n, p in params if p.requires_grad]
    decay = [p for n, p in params if p.dim() >= 2 and ".emb." not in f".{n}"]
    no_decay = [p for n, p in params if not (p.dim() >= 2 and ".emb." not in f".{n}")]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=betas)


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup: int, total: int,
                  final_ratio: float = 0.1) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup`` steps, then cosine decay to ``final_ratio`` x lr at ``total``."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        t = min(1.0, (step - warmup) / max(1, total - warmup))
        return final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * t))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def clip_and_step(module: nn.Module, optimizer: torch.optim.Optimizer,
                  scheduler: torch.optim.lr_scheduler.LRScheduler | None, max_norm: float) -> float:
    """Clip gradients to ``max_norm`` (0: no clipping), step optimizer and schedule; returns the norm."""
    params = [p for p in module.parameters() if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else float("inf"))
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if scheduler is not None:
        scheduler.step()
    return float(norm)


def step_seed(seed: int, step: int, rank: int) -> int:
    """The RNG seed of one step on one rank (a pure function: resumed runs redraw the same)."""
    return (seed * 1_000_003 + step * 7919 + rank * 104_729) % (2 ** 63 - 1)


class Task(Protocol):
    """One training objective, as ``run_training`` drives it."""

    def state(self) -> dict[str, object]:
        """Everything that has a ``state_dict``: modules, optimizers, schedulers."""
        ...

    def train_step(self, step: int) -> dict[str, float]:
        """Draw a batch, compute the losses, update the weights; returns scalars to log."""
        ...

    def export(self, out_dir: Path, step: int, losses: dict[str, float]) -> None:
        """Write the shipped weights (safetensors + JSON) into ``out_dir``."""
        ...


def checkpoint_dir(out_dir: str | Path) -> Path:
    """Where the training state of ``out_dir`` lives: the sibling ``<out>.train``."""
    out = Path(out_dir)
    return out.with_name(out.name + ".train")


def save_checkpoint(path: Path, task: Task, step: int) -> None:
    """Weights, optimizer and scheduler state after ``step`` completed steps (atomic rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"step": step, "state": {k: v.state_dict() for k, v in task.state().items()}}
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def load_checkpoint(path: Path, task: Task, device: torch.device) -> int:
    """Restore ``task`` from ``path``; returns the number of steps already done."""
    if not path.is_file():
        raise FileNotFoundError(f"--resume: no checkpoint at {path}")
    payload = torch.load(path, map_location=device, weights_only=True)
    states = task.state()
    missing = sorted(set(states) - set(payload["state"]))
    if missing:
        raise ValueError(f"{path}: checkpoint lacks {missing}; it was written by another objective")
    for name, obj in states.items():
        obj.load_state_dict(payload["state"][name])
    return int(payload["step"])


@dataclass
class LoopOptions:
    """The loop's own flags (``train`` shares them across objectives)."""

    steps: int
    out: Path
    seed: int = 0
    resume: bool = False
    checkpoint_every: int = 500
    log_every: int = 10
    progress: bool = True
    training_state: bool = True     # False: checkpoints export the weights only (no --resume)


def run_training(task: Task, opts: LoopOptions, dist: Dist) -> dict[str, float]:
    """Run ``task`` from its last checkpoint (with ``resume``) to ``opts.steps``; returns the
    mean of each logged loss over the last ``log_every`` steps."""
    from tqdm import tqdm

    if opts.resume and not opts.training_state:
        raise ValueError("--resume needs the optimizer state that --weights-only does not keep: "
                         "continue from the weights with --init-from")
    ckpt = checkpoint_dir(opts.out) / "checkpoint.pt"
    start = load_checkpoint(ckpt, task, dist.device) if opts.resume else 0
    bar = tqdm(total=opts.steps, initial=start, disable=not (opts.progress and dist.main),
               dynamic_ncols=True, unit="step")
    window: dict[str, list[float]] = {}
    t0 = time.perf_counter()
    for step in range(start, opts.steps):
        torch.manual_seed(step_seed(opts.seed, step, dist.rank))
        losses = task.train_step(step)
        for k, v in losses.items():
            window.setdefault(k, []).append(v)
            window[k] = window[k][-opts.log_every:]
        bar.update(1)
        if (step + 1) % opts.log_every == 0 or step + 1 == opts.steps:
            bar.set_postfix({k: f"{sum(v) / len(v):.3f}" for k, v in window.items()}, refresh=False)
        done = step + 1
        if dist.main and (done % opts.checkpoint_every == 0 or done == opts.steps):
            if opts.training_state:
                save_checkpoint(ckpt, task, done)
            task.export(opts.out, done, {k: sum(v) / len(v) for k, v in window.items()})
    bar.close()
    if dist.enabled:
        torch_dist.barrier()
    means = {k: sum(v) / len(v) for k, v in window.items()}
    means["seconds"] = time.perf_counter() - t0
    return means


def save_trained(out_dir: str | Path, name: str, model: nn.Module, meta: dict) -> None:
    """A run's result: ``{name}.safetensors`` (weights) + ``{name}.json`` (config and history)."""
    import json

    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    save_file(state, str(out_dir / f"{name}.safetensors"), metadata={"format": "barforge"})
    (out_dir / f"{name}.json").write_text(json.dumps(meta, indent=1))


def read_trained(directory: str | Path, name: str, command: str) -> tuple[dict, dict]:
    """(weights, meta) that :func:`save_trained` wrote; ``command`` names the run in errors."""
    import json

    from safetensors.torch import load_file

    directory = Path(directory)
    if not (directory / f"{name}.json").is_file():
        raise FileNotFoundError(f"{directory}: no {name}.json (is it a `barforge {command} --out` "
                                "folder?)")
    meta = json.loads((directory / f"{name}.json").read_text())
    return load_file(str(directory / f"{name}.safetensors")), meta
